"""The training pipeline behind ``churn train``: :func:`run` wires the steps in order.

source -> labeled snapshots (:mod:`training.frame`) -> time split (:mod:`training.split`) ->
LightGBM with early stopping, optionally after an Optuna search (:mod:`training.fit`) ->
optional feature pruning on the validation period and a refit (:mod:`training.select`) ->
calibration on the validation period and test metrics against the two baselines
(:mod:`training.evaluate`) -> MLflow run, registered version and promotion gate
(:mod:`training.registry`) -> serving bundle under ``models/`` (:mod:`training.export`).

Each step is a function of typed values and returns one; only the logging, registering and
promoting steps need a tracking store. :func:`train` is the entry point (``churn train``,
tests, notebooks, the bench): it checks the tracking store, opens the engine the settings
name (one process or Dask, :mod:`churn.engine`) and runs the pipeline on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from churn.bundle import OperatingPoints
    from churn.engine import Engine
    from churn.settings import Settings
    from training.bootstrap import IntervalNote
    from training.config import RunPlan
    from training.health_backtest import Backtest
    from training.progress import Progress
    from training.registry import Promotion
    from training.split import TimeSplit


@dataclass
class TrainResult:
    """What one training run produced: metrics of the model and both baselines on the test
    rows, the promotion decision, the registered version, the bundle, and the test frame
    (identity, model features, label, health score, ``churn_probability``)."""

    metrics: dict[str, dict[str, float]]
    promotion: Promotion
    model_version: str
    registered_version: int
    run_id: str
    bundle_path: Path
    champion_path: Path | None
    absent_families: dict[str, list[str]]
    calibration_note: str
    split: TimeSplit
    test_frame: pd.DataFrame
    feature_names: list[str]
    snapshot_hash: str
    best_iteration: int
    params: dict[str, Any]
    seconds: float
    lineage: dict[str, Any] = field(default_factory=dict)
    # The health rules backtest on the same split (training.health_backtest; empty if the
    # split cannot rank the rules, e.g. a period with one class only).
    health_backtest: dict[str, Any] = field(default_factory=dict)
    # The priorities' thresholds chosen on validation, with their figures (as in the bundle).
    operating_points: OperatingPoints | None = None
    # Features dropped by pruning on the validation period (training.select; empty when off).
    pruned: list[str] = field(default_factory=list)
    # Each scorer's metric intervals, {scorer: {metric: (low, high)}}, and how they were made
    # (training.bootstrap; empty and None when evaluation.bootstrap_samples is 0).
    intervals: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    interval_note: IntervalNote | None = None

    def summary(self) -> dict[str, Any]:
        """The ``--json`` object: per-scorer metrics, their intervals
        (``{scorer: {metric: [low, high]}}``), the promotion, and the run's facts."""
        from training.export import json_safe

        return json_safe(
            {
                **self.metrics,
                "intervals": {
                    scorer: {m: list(bounds) for m, bounds in values.items()}
                    for scorer, values in self.intervals.items()
                },
                "promotion": self.promotion.to_dict(),
                "run": {
                    "model_version": self.model_version,
                    "registered_version": self.registered_version,
                    "mlflow_run_id": self.run_id,
                    "bundle": str(self.bundle_path),
                    "champion": str(self.champion_path) if self.champion_path else None,
                    "absent_families": self.absent_families,
                    "calibration": self.calibration_note,
                    "best_iteration": self.best_iteration,
                    "features": len(self.feature_names),
                    "pruned": self.pruned,
                    "periods": self.split.to_dict(),
                    "snapshot_hash": self.snapshot_hash,
                    "seconds": round(self.seconds, 1),
                    "intervals": self.interval_note.to_dict() if self.interval_note else None,
                },
            }
        )


def train(
    source: str,
    settings: Settings,
    *,
    label_mode: str | None = None,
    horizon_days: int | None = None,
    config_path: Path | str | None = None,
    force: bool = False,
    trials: int | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train, evaluate, register, gate and export one model from ``source`` (see the module
    docstring). ``label_mode``/``horizon_days`` override ``settings.snapshots``; ``trials``
    overrides the config's search budget; ``seed`` overrides ``settings.seed``; ``force``
    promotes the new version whatever the gate says."""
    from churn.engine import open_engine
    from training.config import plan_run
    from training.progress import Progress
    from training.registry import check_tracking_server

    check_tracking_server(settings)  # a dead server fails now, not after the training
    with open_engine(settings) as engine:
        plan = plan_run(
            settings,
            label_mode=label_mode,
            horizon_days=horizon_days,
            config_path=config_path,
            trials=trials,
            seed=seed,
        )
        return run(source, settings, plan, engine, force=force, progress=Progress(progress))


def run(
    source: str,
    settings: Settings,
    plan: RunPlan,
    engine: Engine,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> TrainResult:
    """The pipeline: each step in order, on ``engine``."""
    from training import export, registry
    from training.evaluate import RunOutputs, calibrate_and_evaluate
    from training.fit import fit_model
    from training.frame import build_training_frame, data_lineage, load_source
    from training.progress import SILENT
    from training.select import prune_and_refit
    from training.split import split_by_time

    started = time.perf_counter()
    ui = progress or SILENT
    loaded = load_source(source, settings, plan)
    with ui.step("building labeled snapshots"):
        data = build_training_frame(loaded, plan, engine)
    with ui.step("splitting by time"):
        parts = split_by_time(
            data.frame, plan.config.split, plan.snapshots.horizon_days, plan.features
        )
    lineage = data_lineage(data, parts.split)
    with ui.step("backtesting the health rules"):
        backtest = _backtest_health(data.frame, parts.split, plan)
        backtest_summary = backtest.summary() if backtest else {}
    model = fit_model(engine, data.snapshots, parts, plan, ui)
    # Pruning reads the validation period only; the parts after it hold only the kept features.
    model, parts, selection = prune_and_refit(engine, data.snapshots, parts, plan, model, ui)
    with ui.step("calibrating and evaluating against the baselines"):
        # Inactivity mode adds the purchase baselines, scored from the source's invoices.
        purchases = loaded.tables.invoices if plan.snapshots.label_mode == "inactivity" else None
        report = calibrate_and_evaluate(model, parts, plan.config, plan.seed, purchases=purchases)
    with (
        ui.step("logging to MLflow, registering, exporting the bundle"),
        registry.tracking_run(settings, plan.config.mlflow.experiment) as tracked,
    ):
        outputs = RunOutputs(plan, data, lineage, parts, model, report)
        model_id = registry.log_run(outputs, health_backtest=backtest)
        registry.log_feature_selection(selection)
        candidate = registry.register(tracked, model_id, settings, plan, parts, report, force=force)
        bundle = export.export_bundle(
            Path(settings.models_dir),
            candidate,
            outputs,
            health_backtest=backtest_summary or None,
            selection=selection,
        )
        champion = registry.promote(tracked, candidate, bundle)
    return TrainResult(
        metrics=report.metrics,
        promotion=candidate.promotion,
        model_version=candidate.model_version,
        registered_version=candidate.version,
        run_id=candidate.run_id,
        bundle_path=bundle,
        champion_path=champion,
        absent_families=data.absent,
        calibration_note=report.calibration.note,
        split=parts.split,
        test_frame=report.test_frame,
        feature_names=list(parts.features),
        snapshot_hash=data.snapshot_hash,
        best_iteration=model.best_iteration,
        params=model.params,
        seconds=time.perf_counter() - started,
        lineage=lineage,
        health_backtest=backtest_summary,
        operating_points=report.operating_points,
        pruned=list(selection.pruned),
        intervals=report.intervals,
        interval_note=report.interval_note,
    )


def _backtest_health(frame: pd.DataFrame, split: TimeSplit, plan: RunPlan) -> Backtest | None:
    """The health rules' backtest and suggested points on the run's split (about fifteen
    seconds on the default demo); None, with a warning, when the periods cannot rank the
    rules."""
    import logging

    from training.health_backtest import run_backtest

    try:
        return run_backtest(frame, split, plan.health)
    except ValueError as exc:
        logging.getLogger(__name__).warning("health rules backtest skipped: %s", exc)
        return None
