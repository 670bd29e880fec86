"""`churn demo-data`, `churn validate` and `churn features`: thin calls into `features`."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from churn.console import console
from churn.engine import open_engine, resolve_engine
from churn_cli.options import DataOption, EngineOption, SchedulerOption

if TYPE_CHECKING:
    import pandas as pd


def demo_data(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the CSV tables to.")] = Path(
        "data/demo"
    ),
    business: Annotated[
        str,
        typer.Option(
            "--business",
            help="retainer: a firm with retainers and every table (four years); purchase: a "
            "project-by-project business's transaction log, accounts and invoices only.",
        ),
    ] = "retainer",
    accounts: Annotated[
        int | None,
        typer.Option(
            "--accounts", min=10, help="Number of client accounts (1500 retainer, 8000 purchase)."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed: the same seed gives the same data.")
    ] = 42,
    years: Annotated[
        int | None,
        typer.Option("--years", min=1, max=10, help="Years of history (retainer; default 4)."),
    ] = None,
    months: Annotated[
        int | None,
        typer.Option("--months", min=3, max=120, help="Months of history (purchase; default 18)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    chunk_size: Annotated[
        int,
        typer.Option(
            "--chunk-size",
            min=1,
            help="Accounts generated and written at a time (memory stays flat at any "
            "--accounts; the data depends on it).",
        ),
    ] = 500,
) -> None:
    """Generate demo data: a simulated professional-services firm's CRM, billing, survey and
    ticket data, or (--business purchase) a project-by-project business's purchase log."""
    from churn.errors import ChurnError

    if business == "purchase":
        if years is not None:
            raise ChurnError(
                "--years is for --business retainer", hint="use --months with --business purchase"
            )
        from features.demo_purchase import generate_purchase_demo

        sized = _given(accounts=accounts, months=months)
        bought = generate_purchase_demo(out, seed=seed, fmt=fmt, chunk_size=chunk_size, **sized)
        console.print(bought.render())
        return
    if business != "retainer":
        from features.demo_purchase import BUSINESSES

        raise ChurnError(f"unknown --business {business!r}", hint=f"use {' or '.join(BUSINESSES)}")
    if months is not None:
        raise ChurnError(
            "--months is for --business purchase", hint="use --years with --business retainer"
        )
    from features.demo import generate_demo

    sized = _given(accounts=accounts, years=years)
    summary = generate_demo(out, seed=seed, fmt=fmt, chunk_size=chunk_size, **sized)
    console.print(summary.render())


def _given(**options: int | None) -> dict[str, Any]:
    """The options given on the command line; the generator's defaults stand for the rest."""
    return {name: value for name, value in options.items() if value is not None}


def validate(
    data: DataOption = None,
    profile: Annotated[
        bool,
        typer.Option(
            "--profile/--no-profile", help="Also print churn by stage, reasons, concentration."
        ),
    ] = True,
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
    data: DataOption = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Snapshot date YYYY-MM-DD.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output file: .parquet or .csv.")
    ] = None,
    catalog: Annotated[
        bool, typer.Option("--catalog", help="Print the feature catalogue and exit.")
    ] = False,
    engine: EngineOption = None,
    scheduler: SchedulerOption = None,
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
    from features.snapshots import output_format
    from features.validate import load_validated

    output_format(out)  # a wrong extension fails now, not after the snapshot is built
    settings = resolve_engine(get_settings(), engine, scheduler)  # --engine dask: docs/cluster.md
    health = load_health_config(settings.health_config)
    result = load_validated(data or settings.data, settings)
    with open_engine(settings) as compute:
        frame = build_snapshots(
            compute, result.tables, [as_of_date], settings.snapshots, health=health
        )
    _write_features(frame, out)
    console.print(f"wrote {len(frame)} accounts x {frame.shape[1]} columns to {out}")


def _write_features(frame: pd.DataFrame, out: Path) -> None:
    """Write the snapshot: client data, so a new file is created with mode 0600, and a CSV's
    text cells never start a spreadsheet formula (``churn.text.csv_frame``)."""
    from churn.errors import ChurnError
    from churn.files import private_file
    from churn.text import csv_frame
    from features.snapshots import output_format, write_frame

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with private_file(out, "wb"):
            pass  # created 0600 here; write_frame then replaces its content
        write_frame(csv_frame(frame) if output_format(out) == "csv" else frame, out)
    except OSError as exc:
        raise ChurnError(
            f"cannot write {out}: {exc.strerror or exc}", hint="choose a writable path"
        ) from exc


def register(app: typer.Typer) -> None:
    app.command("demo-data")(demo_data)
    app.command("validate")(validate)
    app.command("features")(features)
