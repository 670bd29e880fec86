"""`churn train`: a thin wrapper over :func:`training.pipeline.train`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from churn.engine import resolve_engine
from churn_cli.options import DataOption, EngineOption, SchedulerOption

if TYPE_CHECKING:
    from rich.table import Table

    from churn.bundle import OperatingPoints
    from training.pipeline import TrainResult


def comparison_table(
    metrics: dict[str, dict[str, float]],
    intervals: dict[str, dict[str, tuple[float, float]]] | None = None,
) -> Table:
    """Rows: metrics; columns: the model and the baselines; the best of each row in bold.
    With ``intervals`` (``{scorer: {metric: (low, high)}}``) each figure has its interval on
    a second line, ``[0.775-0.867]``."""
    import math

    from rich.markup import escape
    from rich.table import Table

    from training.evaluate import ALL_SCORERS, HIGHER_IS_BETTER, METRIC_LABELS, METRICS

    names = {
        "model": "model",
        "health_score": "health baseline",
        "logistic": "logistic baseline",
        "recency": "recency baseline",
        "bgnbd": "BG/NBD baseline",
    }

    def finite(v: float | None) -> bool:
        return v is not None and math.isfinite(v)

    scorers = [s for s in ALL_SCORERS if s in metrics]
    table = Table(title="Test period: model against the baselines (same rows)")
    table.add_column("metric")
    for scorer in scorers:
        table.add_column(names[scorer], justify="right")
    for metric in METRICS:
        values = [metrics[s].get(metric, math.nan) for s in scorers]
        known = [v for v in values if finite(v)]
        best = (max if HIGHER_IS_BETTER[metric] else min)(known) if known else None
        cells = []
        for scorer, v in zip(scorers, values, strict=True):
            if not finite(v):
                cells.append("n/a")
                continue
            cell = f"[bold]{v:.3f}[/]" if v == best else f"{v:.3f}"
            low, high = (intervals or {}).get(scorer, {}).get(metric, (math.nan, math.nan))
            if finite(low) and finite(high):
                cell += "\n" + escape(f"[{low:.3f}-{high:.3f}]")  # brackets as text
            cells.append(cell)
        arrow = "↑" if HIGHER_IS_BETTER[metric] else "↓"
        table.add_row(f"{METRIC_LABELS[metric]} {arrow}", *cells)
    return table


def _report(result: TrainResult, out: Any) -> None:
    from churn.bundle import CHAMPION_DIR

    periods = result.split.periods
    out.print(f"split: {result.split.description}")
    out.print(comparison_table(result.metrics, result.intervals))
    if result.interval_note is not None and result.intervals:
        out.print(f"Second line of each figure: {result.interval_note.describe()}.")
    test = periods["test"]
    out.print(
        f"test period {test.start.date()} to {test.end.date()}: {test.rows} account-dates, "
        f"{test.positives} churned; calibration: {result.calibration_note}"
    )
    for line in _operating_point_lines(result.operating_points):
        out.print(line)
    backtest = result.health_backtest
    if backtest:
        ci = backtest["interval"]
        out.print(
            f"health rules: test ROC AUC {backtest['current']['roc_auc']:.3f}; suggested points "
            f"{backtest['suggested']['roc_auc']:.3f} (gain {backtest['roc_auc_gain']:+.3f}, 95 % "
            f"interval {ci['low']:+.3f} to {ci['high']:+.3f}); "
            "`churn health backtest` writes the proposal"
        )
    if result.absent_families:
        for family, tables in result.absent_families.items():
            out.print(
                f"[yellow]absent feature family[/] {family}: source has no {', '.join(tables)}"
            )
    else:
        out.print("every feature family was present")
    colour = "green" if result.promotion.promoted else "yellow"
    verdict = "promoted to champion" if result.promotion.promoted else "not promoted"
    out.print(f"[{colour}]{result.model_version} {verdict}[/]: {result.promotion.reason}")
    out.print(f"bundle: {result.bundle_path}")
    if result.champion_path is not None:
        out.print(f"serving champion: {Path(result.champion_path).parent / CHAMPION_DIR}")
    out.print(f"MLflow run {result.run_id} ({result.seconds:.0f} s)")


def _operating_point_lines(points: OperatingPoints | None) -> list[str]:
    """The priorities' operating points: threshold, and the share of churners caught and the
    precision on the validation (chosen) and test periods."""
    figures = points.figures if points is not None else {}
    lines = []
    for name, label in (("act_now", "act now"), ("watch", "watch")):
        got = figures.get(name) or {}
        val, test = got.get("validation"), got.get("test")
        if points is None or not val or not test:
            continue
        lines.append(
            f"priority {label}: churn probability >= {getattr(points, name):.1%} catches "
            f"{val['recall']:.0%} of the validation churners at {val['precision']:.0%} precision "
            f"(test: {test['recall']:.0%} at {test['precision']:.0%})"
        )
    return lines


def train(
    data: DataOption = None,
    label_mode: Annotated[
        str | None,
        typer.Option(
            "--label-mode",
            help="events (churn_events table) or inactivity (a long silence in invoices and "
            "interactions). Default: the snapshots.label_mode setting.",
        ),
    ] = None,
    horizon_days: Annotated[
        int | None,
        typer.Option(
            "--horizon-days", help="Label horizon: churn within N days of a snapshot date."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Training config YAML (default configs/train.yaml)."),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the test metrics, promotion and run facts as one JSON object on the "
            "last line of stdout (the human report goes to stderr).",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Make the new version champion even if it is worse.")
    ] = False,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed (default: the seed setting).")
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials",
            min=0,
            help="Hyperparameter search trials (Optuna); 0 = off. Default: the config's.",
        ),
    ] = None,
    engine: EngineOption = None,
    scheduler: SchedulerOption = None,
) -> None:
    """Train, evaluate against the baselines, register in MLflow, promote and export a model."""
    from churn.console import console, err_console
    from churn.settings import get_settings
    from training.pipeline import train as run_training

    settings = resolve_engine(get_settings(), engine, scheduler)  # --engine dask: docs/cluster.md
    result = run_training(
        data or settings.data,
        settings,
        label_mode=label_mode,
        horizon_days=horizon_days,
        config_path=config,
        force=force,
        trials=trials,
        seed=seed,
        progress=True,
    )
    _report(result, err_console if as_json else console)
    if as_json:
        typer.echo(json.dumps(result.summary(), allow_nan=False))


TRAIN_HELP = (
    "Train, evaluate against the baselines, register in MLflow, promote and export a model.\n\n"
    "Builds labeled monthly snapshots and splits them by time: train on older dates, validate "
    "on the next, test on the latest, with a one-horizon gap between periods (on a short "
    "source: shorter periods, else accounts held out of training for validation; the report "
    "says which split it chose). Trains LightGBM "
    "with early stopping, calibrates on the validation period, and compares the model with "
    "the health score and a logistic regression on the same test rows (in inactivity mode "
    "also with days since the last invoice and a BG/NBD buy-till-you-die model).\n\n"
    "The new version becomes `champion` only if it is at least as good as the current one on "
    "those rows (or with --force); its bundle is written to models/."
)


def export_champion() -> None:
    """Fetch the registry's champion bundle into models/ and point models/champion at it."""
    from churn.console import console
    from churn.settings import get_settings
    from training import registry

    settings = get_settings()
    registry.quiet_mlflow()  # before MLflow's first import: telemetry and log levels
    from mlflow import MlflowClient

    uri = settings.tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version, link = registry.export_champion(
        client, settings.registered_model_name, Path(settings.models_dir)
    )
    console.print(
        f"[green]{version.name}/{version.version}[/] (run {version.run_id}) exported: "
        f"{link} -> {link.resolve().name}"
    )


EXPORT_CHAMPION_HELP = (
    "Fetch the champion bundle from the MLflow registry into models/ (for serving hosts).\n\n"
    "Reads the registered model's `champion` alias from the tracking store "
    "(MLFLOW_TRACKING_URI, else the mlflow_tracking_uri setting), downloads the bundle logged "
    "with its run, verifies it and points models/champion at it; a running `churn serve` "
    "picks it up at its next reload check. Nothing is unpickled."
)


def promote(
    version: Annotated[int, typer.Argument(min=1, help="The registered version to make champion.")],
) -> None:
    """Make a registered version the champion (roll back or forward) and export its bundle.

    Moves the `champion` alias, fetches the version's bundle into models/ and points
    models/champion at it; a running `churn serve` picks it up at its next reload check (or
    POST /v1/admin/reload). The promotion gate is not consulted: this is an operator's call.
    """
    from churn.console import console
    from churn.settings import get_settings
    from training import registry

    settings = get_settings()
    registry.quiet_mlflow()
    from mlflow import MlflowClient

    uri = settings.tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = settings.registered_model_name
    before, current, link = registry.promote_version(
        client, name, version, Path(settings.models_dir)
    )
    was = f"was {name}/{before}" if before else "there was none"
    console.print(
        f"[green]{name}/{current.version}[/] is champion ({was}); {link} -> {link.resolve().name}"
    )


def register(app: typer.Typer) -> None:
    app.command("train", help=TRAIN_HELP)(train)
    app.command("export-champion", help=EXPORT_CHAMPION_HELP)(export_champion)
    app.command("promote")(promote)
