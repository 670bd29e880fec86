"""`churn demo-data`, `churn validate` and `churn features`: thin wrappers over the package."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import typer

from churn.console import console
from churn.engine import engine_option, open_engine, resolve_engine, scheduler_option
from churn.options import data_option


def demo_data(
    out: Path = typer.Option(Path("data/demo"), "--out", help="Folder to write the CSV tables to."),
    accounts: int = typer.Option(1500, "--accounts", min=10, help="Number of client accounts."),
    seed: int = typer.Option(42, "--seed", help="Random seed: the same seed gives the same data."),
    years: int = typer.Option(4, "--years", min=1, max=10, help="Years of history."),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    chunk_size: int = typer.Option(
        500,
        "--chunk-size",
        min=1,
        help="Accounts generated and written at a time (memory stays flat at any --accounts; "
        "the data depends on it).",
    ),
) -> None:
    """Generate a simulated professional-services firm's CRM, billing, survey and ticket data."""
    from features.demo import generate_demo

    summary = generate_demo(
        out, accounts=accounts, seed=seed, years=years, fmt=fmt, chunk_size=chunk_size
    )
    console.print(summary.render())


def validate(
    data: str = data_option(),
    profile: bool = typer.Option(
        True, "--profile/--no-profile", help="Also print churn by stage, reasons, concentration."
    ),
) -> None:
    """Load and validate a source: per-table loaded, rejected and missing counts."""
    from churn.settings import get_settings
    from features.validate import load_validated, render_summary

    settings = get_settings()
    result = load_validated(data or settings.data, settings)
    console.print(render_summary(result))
    if profile:
        from features.profile import render_profile

        console.print(render_profile(result.tables))


def features(
    data: str = data_option(),
    as_of: str = typer.Option(None, "--as-of", help="Snapshot date YYYY-MM-DD."),
    out: Path = typer.Option(None, "--out", help="Output file: .parquet or .csv."),
    catalog: bool = typer.Option(False, "--catalog", help="Print the feature catalogue and exit."),
    engine: str = engine_option(),
    scheduler: str = scheduler_option(),
) -> None:
    """Write one point-in-time snapshot: features, health and service scores per active account."""
    from churn.errors import ChurnError
    from features.catalog import catalog_markdown

    if catalog:
        console.print(catalog_markdown(), markup=False, highlight=False)
        return
    if as_of is None or out is None:
        raise ChurnError("--as-of and --out are required", hint="churn features --help")
    try:
        as_of_date = date.fromisoformat(as_of)
    except ValueError as exc:
        raise ChurnError(f"--as-of {as_of!r} is not a date", hint="use YYYY-MM-DD") from exc
    from churn.settings import get_settings
    from features.distributed import build_snapshots
    from features.health import load_health_config
    from features.snapshots import output_format, write_frame
    from features.validate import load_validated

    output_format(out)  # a wrong extension fails now, not after the snapshot is built
    settings = resolve_engine(get_settings(), engine, scheduler)  # --engine dask: issue 7
    health = load_health_config(settings.health_config)
    result = load_validated(data or settings.data, settings)
    with open_engine(settings) as engine:
        frame = build_snapshots(
            engine, result.tables, [as_of_date], settings.snapshots, health=health
        )
    write_frame(frame, out)
    console.print(f"wrote {len(frame)} accounts x {frame.shape[1]} columns to {out}")


def register(app: typer.Typer) -> None:
    app.command("demo-data")(demo_data)
    app.command("validate")(validate)
    app.command("features")(features)
