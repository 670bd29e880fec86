"""`churn score` and `churn report`: batch scoring into the store, and the retention report."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from churn.console import console, err_console
from churn.engine import open_engine, resolve_engine
from churn_cli.options import DataOption, EngineOption, SchedulerOption, StoreOption


def _parse_day(value: str | None, option: str) -> date | None:
    from churn.errors import ChurnError

    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ChurnError(f"{option} {value!r} is not a date", hint="use YYYY-MM-DD") from exc


def score(
    data: DataOption = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Score date YYYY-MM-DD (records strictly before it count). "
            "Default: the last day of the data, so every complete day is used.",
        ),
    ] = None,
    history_months: Annotated[
        int,
        typer.Option(
            "--history-months",
            min=0,
            max=120,
            help="Also score the N dates one month apart before --as-of (trends, 15-point drops).",
        ),
    ] = 0,
    store_url: StoreOption = None,
    engine: EngineOption = None,
    scheduler: SchedulerOption = None,
) -> None:
    """Score and explain every active account into the store; re-running a date replaces it."""
    from churn.console import step
    from churn.settings import get_settings
    from features.validate import load_validated
    from serving.batch import default_as_of, history_dates, load_champion, score_batches
    from serving.priority import PRIORITIES
    from serving.retention import RetentionBase
    from serving.store import Store

    settings = resolve_engine(get_settings(), engine, scheduler)  # --engine dask: docs/cluster.md
    store = Store(store_url or settings.store_url)
    store.ensure_schema()  # an unreachable store fails now, not after the scoring
    result = load_validated(data or settings.data, settings)
    tables = result.tables
    day = _parse_day(as_of, "--as-of") or default_as_of(tables)
    bundle = load_champion(settings)
    if bundle is None:
        err_console.print(
            f"[yellow]no model bundle in {settings.models_dir}/champion[/]: storing rule-based "
            "scores only (churn probability unavailable); run `churn train` first for a model"
        )
    dates = history_dates(day, history_months)
    # the stored scores the dates compare with (15-point drop, days since the last scoring)
    previous = store.scores_before(dates)
    with step(f"scoring {len(dates)} date(s) up to {day}"), open_engine(settings) as compute:
        batches = score_batches(tables, dates, bundle, settings, engine=compute, previous=previous)
        base = RetentionBase.from_tables(tables, silence_days=settings.snapshots.min_silence_days)
    # One transaction for every date: a run killed half-way leaves the store as it was.
    with step(f"writing {len(batches)} date(s) to {store.display}"):
        store.write_batches(batches, base=base)
    latest = batches[-1].scores
    at_risk = int((latest["health_band"] == "at_risk").sum())
    critical = int((latest["health_band"] == "critical").sum())
    escalated = batches[-1].escalations["account_id"].nunique()
    priority = latest["priority"].value_counts()
    console.print(
        f"scored {len(latest):,} active accounts on {day} "
        f"({at_risk} at risk, {critical} critical, {escalated} with escalations)"
        + (f"; model {bundle.version}" if bundle is not None else "; no model")
        + (f"; back-filled {len(batches) - 1} earlier date(s)" if len(batches) > 1 else "")
    )
    console.print(
        "priority: "
        + ", ".join(f"{int(priority.get(p, 0))} {p.replace('_', ' ')}" for p in PRIORITIES)
    )
    console.print(f"store: {store.display}")


def report(
    out: Annotated[Path, typer.Option("--out", help="HTML file to write (self-contained).")],
    manager: Annotated[
        str | None,
        typer.Option(
            "--manager", help="Only this account manager's clients (default: all accounts)."
        ),
    ] = None,
    store_url: StoreOption = None,
) -> None:
    """Write the retention page (metrics of the latest scored date) as one HTML file."""
    from churn.errors import ChurnError
    from churn.files import write_private_text
    from churn.settings import get_settings
    from serving.report import render_report
    from serving.store import Store

    settings = get_settings()
    html = render_report(Store(store_url or settings.store_url), manager=manager)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_private_text(out, html)  # client names and revenue: created 0600
    except OSError as exc:
        raise ChurnError(
            f"cannot write {out}: {exc.strerror}", hint="choose a writable path"
        ) from exc
    console.print(f"wrote the retention report to {out} ({len(html) / 1024:.0f} KiB)")


def register(app: typer.Typer) -> None:
    app.command("score")(score)
    app.command("report")(report)
