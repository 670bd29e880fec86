"""The training pipeline: source -> labeled snapshots -> time split ->
LightGBM with early stopping (optionally an Optuna search) -> calibration on the validation
period -> test metrics against the two baselines -> MLflow run, registered version and
promotion gate -> serving bundle under ``models/``.

:func:`train` is the one entry point (``churn train``, tests, notebooks). Everything that
decides the model is seeded and single-order (LightGBM ``deterministic``, fixed threads,
row-wise histograms; a seeded TPE sampler), so the same data, configuration and seed give
the same model and metrics.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churn.errors import ChurnError, ConfigError
from training.calibrate import CalibrationFit, fit_calibration
from training.config import LightGBMConfig, TrainConfig, load_train_config
from training.evaluate import (
    evaluate,
    feature_matrix,
    fit_logistic,
    health_baseline,
    predict_logistic,
    revenue_of,
)
from training.registry import Promotion
from training.split import TimeSplit, time_split

if TYPE_CHECKING:
    import lightgbm as lgb

    from churn.settings import Settings, SnapshotSettings
    from features.validate import LoadResult

log = logging.getLogger(__name__)

# Columns hashed for the run's data lineage: what the model saw, in a fixed order.
_HASH_ID_COLUMNS = ("account_id", "as_of", "churned", "label_window_end", "health_score")


# --------------------------------------------------------------------------- progress display


class _Ui:
    """Progress on stderr (``churn.console``), or nothing when ``enabled`` is False."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def step(self, description: str) -> AbstractContextManager[None]:
        if not self.enabled:
            return nullcontext()
        from churn.console import step

        return step(description)

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[Any]:
        """Yields ``advance(n=1)``; the bar closes (and says done) on exit."""
        if not self.enabled:
            yield lambda n=1: None
            return
        from churn.console import progress

        with progress() as display:
            task = display.add_task(description, total=total)
            yield lambda n=1: display.advance(task, n)
            display.update(task, total=display.tasks[0].completed)


# ------------------------------------------------------------------------------ the result


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

    def summary(self) -> dict[str, Any]:
        """The ``--json`` object: per-scorer metrics, the promotion, and the run's facts."""
        from training.export import json_safe

        return json_safe(
            {
                **self.metrics,
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
                    "periods": self.split.to_dict(),
                    "snapshot_hash": self.snapshot_hash,
                    "seconds": round(self.seconds, 1),
                },
            }
        )


# ------------------------------------------------------------------------------- the steps


def snapshot_hash(frame: pd.DataFrame, features: list[str]) -> str:
    """sha256 of the snapshot table the run used (identity, label, health score, features)."""
    columns = [c for c in (*_HASH_ID_COLUMNS, *features) if c in frame]
    rows = pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()
    digest = hashlib.sha256(rows.tobytes())
    digest.update("\x1f".join(columns).encode())
    return digest.hexdigest()


def _labels(frame: pd.DataFrame) -> np.ndarray:
    return frame["churned"].to_numpy(dtype=float)


def _dataset(
    x: np.ndarray, y: np.ndarray, features: list[str], reference: Any = None
) -> lgb.Dataset:
    import lightgbm as lgb

    return lgb.Dataset(x, y, feature_name=features, reference=reference, free_raw_data=False)


def fit_booster(
    params: dict[str, Any],
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    features: list[str],
    cfg: LightGBMConfig,
    advance: Any = None,
) -> lgb.Booster:
    """LightGBM with early stopping on the validation rows' log loss; ``advance`` (if given)
    is called once per boosting round for a progress display."""
    import lightgbm as lgb

    dtrain = _dataset(*train, features)
    dvalid = _dataset(*valid, features, reference=dtrain)
    callbacks = [
        lgb.early_stopping(cfg.early_stopping_rounds, first_metric_only=True, verbose=False)
    ]
    if advance is not None:
        callbacks.append(lambda env: advance())
    return lgb.train(
        params,
        dtrain,
        num_boost_round=cfg.num_boost_round,
        valid_sets=[dvalid],
        valid_names=["validation"],
        callbacks=callbacks,
    )


def search_params(
    params: dict[str, Any],
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    features: list[str],
    cfg: TrainConfig,
    trials: int,
    seed: int,
    ui: _Ui,
) -> tuple[dict[str, Any], float]:
    """Optuna TPE search (seeded) over the main LightGBM knobs; each trial trains with early
    stopping and is scored by PR AUC on the validation rows. Returns the best parameters and
    their score."""
    import optuna
    from sklearn.metrics import average_precision_score

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        trial_params = {
            **params,
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.1, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 63, log=True),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 20, 400, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
            "bagging_freq": 1,
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 50.0, log=True),
        }
        booster = fit_booster(trial_params, train, valid, features, cfg.lightgbm)
        return float(average_precision_score(valid[1], booster.predict(valid[0])))

    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    with ui.bar(f"hyperparameter search ({trials} trials)", trials) as advance:
        study.optimize(
            objective,
            n_trials=trials,
            timeout=cfg.search.timeout_seconds,
            callbacks=[lambda study, trial: advance()],
        )
    best = {**params, **study.best_params, "bagging_freq": 1}
    return best, float(study.best_value)


def _snapshot_settings(
    settings: Settings, label_mode: str | None, horizon_days: int | None
) -> SnapshotSettings:
    from pydantic import ValidationError

    from churn.settings import SnapshotSettings

    data = settings.snapshots.model_dump()
    if label_mode is not None:
        data["label_mode"] = label_mode
    if horizon_days is not None:
        data["horizon_days"] = horizon_days
    try:
        return SnapshotSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(
            f"invalid {'.'.join(map(str, first['loc']))}: {first['msg']}",
            hint="--label-mode is events or inactivity; --horizon-days is 1 to 730",
        ) from exc


def _lineage(
    loaded: LoadResult, frame: pd.DataFrame, split: TimeSplit, digest: str
) -> dict[str, Any]:
    summary = loaded.summary
    tables = {
        row.table: {
            "status": row.status,
            "rows": int(row.rows),
            "loaded": int(row.loaded),
            "rejected": int(row.rejected),
        }
        for row in summary.itertuples()
    }
    as_of = pd.to_datetime(frame["as_of"])
    return {
        "source": loaded.source,
        "tables": tables,
        "snapshot_rows": len(frame),
        "labeled_rows": int(frame["churned"].notna().sum()),
        "as_of_first": as_of.min().date().isoformat(),
        "as_of_last": as_of.max().date().isoformat(),
        "as_of_dates": int(as_of.nunique()),
        "snapshot_hash": digest,
        "split": split.to_dict(),
    }


def _flat_params(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in sorted(values.items())}


# ------------------------------------------------------------------------------ the pipeline


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
    overrides the config's search budget; ``seed`` overrides ``settings.seed``."""
    # Engine (docs/cluster.md): with settings.engine "dask" the snapshots are built and the booster
    # fitted on a Dask cluster held for the whole run (training.distributed); every other
    # step is the code of _train, on the client.
    from churn.engine import engine_client
    from training.registry import check_tracking_server

    check_tracking_server(settings)  # a dead server fails now, not after the training
    with engine_client(settings) as client:
        return _train(
            source,
            settings,
            client,
            label_mode=label_mode,
            horizon_days=horizon_days,
            config_path=config_path,
            force=force,
            trials=trials,
            seed=seed,
            progress=progress,
        )


def _train(
    source: str,
    settings: Settings,
    client: Any,
    *,
    label_mode: str | None,
    horizon_days: int | None,
    config_path: Path | str | None,
    force: bool,
    trials: int | None,
    seed: int | None,
    progress: bool,
) -> TrainResult:
    """The pipeline of :func:`train`; ``client`` is a Dask client (engine dask) or None."""
    import lightgbm as lgb

    from features.catalog import MODEL_FEATURES
    from features.health import load_health_config
    from features.snapshots import absent_families, as_of_grid, build_snapshots
    from features.validate import load_validated

    started = time.perf_counter()
    ui = _Ui(progress)
    cfg = load_train_config(config_path or settings.train_config)
    snap = _snapshot_settings(settings, label_mode, horizon_days)
    seed = settings.seed if seed is None else int(seed)
    n_trials = cfg.search.trials if trials is None else int(trials)
    if n_trials < 0:
        raise ConfigError(f"--trials must be 0 or more, got {n_trials}")
    features = list(MODEL_FEATURES)

    loaded = load_validated(source, settings)
    tables = loaded.tables
    absent = absent_families(tables)
    if snap.label_mode == "events" and tables.churn_events is None:
        raise ChurnError(
            f"{loaded.source} has no churn_events table, so events labels cannot be built",
            hint="train with --label-mode inactivity (churn = a long silence in invoices and "
            "interactions)",
        )
    with ui.step("building labeled snapshots"):
        health = load_health_config(settings.health_config)
        if client is None:
            frame = build_snapshots(tables, as_of_grid(tables, snap), snap, health=health)
        else:  # engine dask: the same frame, built per partition of accounts
            from features.distributed import snapshot_partitions

            parted = snapshot_partitions(client, tables, as_of_grid(tables, snap), snap, health)
            frame = parted.gather()
    with ui.step("splitting by time"):
        split = time_split(frame, cfg.split, snap.horizon_days)
        train_df, valid_df, test_df = split.frames(frame)
        digest = snapshot_hash(frame, features)
    lineage = _lineage(loaded, frame, split, digest)
    del frame  # the three periods are all that is needed from here on
    x_tr, y_tr = feature_matrix(train_df, features), _labels(train_df)
    x_va, y_va = feature_matrix(valid_df, features), _labels(valid_df)
    x_te, y_te = feature_matrix(test_df, features), _labels(test_df)

    params = cfg.lgb_params(seed)
    search_score = None
    if n_trials > 0:
        params, search_score = search_params(
            params, (x_tr, y_tr), (x_va, y_va), features, cfg, n_trials, seed, ui
        )
    if client is None:
        with ui.bar("training LightGBM (early stopping)", cfg.lightgbm.num_boost_round) as adv:
            fitted = fit_booster(params, (x_tr, y_tr), (x_va, y_va), features, cfg.lightgbm, adv)
    else:  # engine dask: lightgbm.dask on the partitioned snapshots
        from training.distributed import fit_booster as fit_on_cluster

        with ui.step("training LightGBM on the Dask cluster (early stopping)"):
            fitted = fit_on_cluster(
                client, parted, split.train, (x_va, y_va), params, features, cfg.lightgbm
            )
    best_iteration = int(fitted.best_iteration or fitted.current_iteration())
    # Re-read the text exactly as the bundle will hold it, so every prediction below is the
    # bundle's own.
    model_text = fitted.model_to_string(num_iteration=best_iteration)
    booster = lgb.Booster(model_str=model_text)

    with ui.step("calibrating and evaluating against the baselines"):
        calibration = fit_calibration(booster.predict(x_va), y_va, cfg.calibration)
        probability = calibration.calibration.apply(booster.predict(x_te))
        logistic = fit_logistic(x_tr, y_tr, seed)
        scores = {
            "model": probability,
            "health_score": health_baseline(test_df),
            "logistic": predict_logistic(logistic, x_te),
        }
        revenue = revenue_of(test_df)
        bins = cfg.evaluation.ece_bins
        metrics = {name: evaluate(y_te, s, revenue, bins=bins) for name, s in scores.items()}
        contrib = np.asarray(booster.predict(x_te, pred_contrib=True), dtype=float)

    test_frame = test_df[
        [c for c in ("account_id", "as_of", "account_manager") if c in test_df]
        + features
        + ["churned", "health_score"]
    ].copy()
    test_frame["churn_probability"] = probability
    context = _RunContext(
        settings=settings,
        cfg=cfg,
        snap=snap,
        seed=seed,
        n_trials=n_trials,
        search_score=search_score,
        loaded=loaded,
        absent=absent,
        split=split,
        lineage=lineage,
        features=features,
        params=params,
        booster=booster,
        model_text=model_text,
        best_iteration=best_iteration,
        calibration=calibration,
        metrics=metrics,
        scores=scores,
        contrib=contrib,
        x_te=x_te,
        y_te=y_te,
        revenue=revenue,
        test_df=test_df,
        force=force,
        ui=ui,
    )
    outcome = _track_register_export(context, test_frame)
    return TrainResult(
        metrics=metrics,
        promotion=outcome["promotion"],
        model_version=outcome["model_version"],
        registered_version=outcome["version"],
        run_id=outcome["run_id"],
        bundle_path=outcome["bundle"],
        champion_path=outcome["champion"],
        absent_families=absent,
        calibration_note=calibration.note,
        split=split,
        test_frame=test_frame,
        feature_names=features,
        snapshot_hash=digest,
        best_iteration=best_iteration,
        params=params,
        seconds=time.perf_counter() - started,
        lineage=lineage,
    )


@dataclass
class _RunContext:
    settings: Settings
    cfg: TrainConfig
    snap: SnapshotSettings
    seed: int
    n_trials: int
    search_score: float | None
    loaded: LoadResult
    absent: dict[str, list[str]]
    split: TimeSplit
    lineage: dict[str, Any]
    features: list[str]
    params: dict[str, Any]
    booster: Any
    model_text: str
    best_iteration: int
    calibration: CalibrationFit
    metrics: dict[str, dict[str, float]]
    scores: dict[str, np.ndarray]
    contrib: np.ndarray
    x_te: np.ndarray
    y_te: np.ndarray
    revenue: np.ndarray
    test_df: pd.DataFrame
    force: bool
    ui: _Ui


def _log_plots(ctx: _RunContext, folder: Path) -> list[Path]:
    from training import plots

    importance = pd.Series(
        ctx.booster.feature_importance(importance_type="gain"), index=ctx.features, dtype=float
    )
    health = pd.to_numeric(ctx.test_df["health_score"]).to_numpy(float)
    return [
        plots.calibration_plot(
            ctx.y_te,
            {"model": ctx.scores["model"], "logistic": ctx.scores["logistic"]},
            folder / "calibration_curve.png",
            ctx.cfg.evaluation.ece_bins,
        ),
        plots.gains_plot(ctx.y_te, ctx.scores, folder / "cumulative_gains_lift.png"),
        plots.shap_summary_plot(
            ctx.contrib[:, :-1], ctx.x_te, ctx.features, folder / "shap_summary.png"
        ),
        plots.importance_plot(importance, folder / "feature_importance.png"),
        plots.health_vs_probability_plot(
            health, ctx.scores["model"], ctx.y_te, folder / "health_vs_probability.png"
        ),
    ]


def _champion_metrics(
    ctx: _RunContext, client: Any, name: str
) -> tuple[dict[str, float] | None, str | None, str]:
    """The current champion's metrics on this run's test rows (None when it cannot be
    scored), its version label, and a note for the decision."""
    from training.export import folder_name
    from training.registry import champion_version, load_version_bundle

    current = champion_version(client, name)
    if current is None:
        return None, None, ""
    label = f"{name}/{current.version}"
    try:
        bundle = load_version_bundle(
            client, current, ctx.settings.models_dir, folder_name(name, current.version)
        )
    except ChurnError as exc:
        return None, label, str(exc)
    meta = bundle.metadata
    if meta.get("horizon_days") not in (None, ctx.snap.horizon_days) or meta.get(
        "label_mode"
    ) not in (None, ctx.snap.label_mode):
        # Another target is another product answer: switching it is a decision, not a score.
        return (
            None,
            label,
            f"it predicts {meta.get('label_mode')} churn within {meta.get('horizon_days')} "
            f"days, this run {ctx.snap.label_mode} churn within {ctx.snap.horizon_days} days",
        )
    p = bundle.predict(feature_matrix(ctx.test_df, bundle.feature_names))
    notes = []
    test_start = ctx.split.periods["test"].start.date().isoformat()
    champ_train_end = (meta.get("periods") or {}).get("train", {}).get("end")
    if champ_train_end and champ_train_end >= test_start:
        notes.append("the champion was trained on data from this test period, which favours it")
    return (
        evaluate(ctx.y_te, p, ctx.revenue, bins=ctx.cfg.evaluation.ece_bins),
        label,
        "; ".join(notes),
    )


def _track_register_export(ctx: _RunContext, test_frame: pd.DataFrame) -> dict[str, Any]:
    """The MLflow run: params, lineage, metrics, plots, the model (registered), the promotion
    decision, and the exported bundle; moves the champion alias and ``models/champion``."""
    from training import export, registry

    registry.quiet_mlflow()  # before MLflow's first import: telemetry and log levels
    import mlflow
    from mlflow.models import infer_signature

    from churn.bundle import CHAMPION_DIR
    from features.catalog import catalog_records
    from features.health import load_health_config
    from training.model_card import CardInputs, mean_abs_drivers, render_model_card

    settings, cfg, name = ctx.settings, ctx.cfg, ctx.settings.registered_model_name
    models_dir = Path(settings.models_dir)
    client, experiment_id = registry.configure(settings, cfg.mlflow.experiment)
    trained_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    health_version = load_health_config(settings.health_config).version
    lineage = ctx.lineage

    with (
        ctx.ui.step("logging to MLflow, registering, exporting the bundle"),
        registry.no_warnings(),
        mlflow.start_run(experiment_id=experiment_id, run_name=f"train {trained_at[:16]}") as run,
    ):
        run_id = run.info.run_id
        mlflow.log_params(
            {
                **_flat_params("lgb.", ctx.params),
                "num_boost_round": cfg.lightgbm.num_boost_round,
                "early_stopping_rounds": cfg.lightgbm.early_stopping_rounds,
                "best_iteration": ctx.best_iteration,
                "label_mode": ctx.snap.label_mode,
                "horizon_days": ctx.snap.horizon_days,
                "snapshot_frequency": ctx.snap.frequency,
                "seed": ctx.seed,
                "search_trials": ctx.n_trials,
                "calibration_method": ctx.calibration.method,
                "ece_bins": cfg.evaluation.ece_bins,
                "train_config_version": cfg.version,
                "health_config_version": health_version,
                **_flat_params("split.", cfg.split.model_dump()),
                "data.source": lineage["source"],
                "data.snapshot_hash": lineage["snapshot_hash"],
                "data.snapshot_rows": lineage["snapshot_rows"],
                "data.labeled_rows": lineage["labeled_rows"],
                "data.as_of_first": lineage["as_of_first"],
                "data.as_of_last": lineage["as_of_last"],
                "data.tables_missing": ",".join(ctx.loaded.tables.missing) or "none",
                "data.absent_families": ",".join(ctx.absent) or "none",
                **{
                    f"data.{p}_{k}": v
                    for p, period in lineage["split"].items()
                    if isinstance(period, dict)
                    for k, v in period.items()
                },
            }
        )
        mlflow.set_tags({"calibration": ctx.calibration.note, "data.source": lineage["source"]})
        mlflow.log_dict(export.json_safe(lineage), "lineage.json")
        flat_metrics = {
            f"{scorer}.{metric}": value
            for scorer, values in ctx.metrics.items()
            for metric, value in values.items()
            if np.isfinite(value)
        }
        if ctx.search_score is not None:
            flat_metrics["search.best_validation_pr_auc"] = ctx.search_score
        mlflow.log_metrics(flat_metrics)
        with tempfile.TemporaryDirectory() as tmp:
            for path in _log_plots(ctx, Path(tmp)):
                mlflow.log_artifact(str(path), "plots")

        example = pd.DataFrame(ctx.x_te[:5], columns=ctx.features)
        signature = infer_signature(example, ctx.booster.predict(ctx.x_te[:5]))
        info = mlflow.lightgbm.log_model(
            ctx.booster,
            name="model",
            signature=signature,
            input_example=example,
            # Stated, not inferred: inference runs a subprocess that costs seconds.
            pip_requirements=mlflow.lightgbm.get_default_pip_requirements(),
        )
        version = registry.register_version(client, name, info.model_id, run_id)
        model_version = f"{name}/{version}"

        champ_metrics, champ_label, note = _champion_metrics(ctx, client, name)
        promotion = registry.decide_promotion(
            ctx.metrics["model"],
            champ_metrics,
            cfg.promotion,
            new_version=model_version,
            champion_version=champ_label,
            force=ctx.force,
            note=note,
        )

        folder = export.folder_name(name, version)
        drivers = mean_abs_drivers(ctx.contrib[:, :-1], ctx.x_te, ctx.features)
        bias = float(ctx.contrib[:, -1][0]) if len(ctx.contrib) else 0.0
        base_rate = float(ctx.calibration.calibration.apply(np.array([1 / (1 + np.exp(-bias))]))[0])
        periods = ctx.split.to_dict()
        metadata = {
            "model_version": model_version,
            "registered_model": name,
            "registered_version": version,
            "trained_at": trained_at,
            "feature_names": ctx.features,
            "horizon_days": ctx.snap.horizon_days,
            "label_mode": ctx.snap.label_mode,
            "base_rate": base_rate,
            "base_rate_definition": "calibrated probability at the model's expected raw score "
            "(LightGBM's SHAP bias, the mean log-odds over the training rows): "
            "calibration(sigmoid(bias))",
            "calibration": ctx.calibration.note,
            "best_iteration": ctx.best_iteration,
            "lightgbm_params": ctx.params,
            "seed": ctx.seed,
            "periods": periods,
            "rows": {p: periods[p]["rows"] for p in ("train", "validation", "test")},
            "source": lineage["source"],
            "snapshot_hash": lineage["snapshot_hash"],
            "tables_missing": ctx.loaded.tables.missing,
            "absent_families": ctx.absent,
            "train_config_version": cfg.version,
            "health_config_version": health_version,
            "mlflow_run_id": run_id,
        }
        metrics_doc = {
            **ctx.metrics,
            "test": {
                "start": periods["test"]["start"],
                "end": periods["test"]["end"],
                "rows": periods["test"]["rows"],
                "churned": periods["test"]["positives"],
                "churn_rate": float(ctx.y_te.mean()),
            },
            "definitions": {
                "ece": f"expected calibration error, {cfg.evaluation.ece_bins} "
                "equal-frequency bins",
                "health_score": "baseline score (100 - health_score) / 100",
                "logistic": "logistic regression on the same features, fitted on the train period",
                "top_decile": "10 % of test rows with the highest score, ties shared pro rata",
            },
        }
        card = render_model_card(
            CardInputs(
                model_version=model_version,
                trained_at=trained_at,
                source=lineage["source"],
                label_mode=ctx.snap.label_mode,
                horizon_days=ctx.snap.horizon_days,
                periods=periods,
                metrics=ctx.metrics,
                drivers=drivers,
                calibration_note=ctx.calibration.note,
                best_iteration=ctx.best_iteration,
                tables_present=ctx.loaded.tables.present,
                absent_families=ctx.absent,
                snapshot_hash=lineage["snapshot_hash"],
                run_id=run_id,
                promotion=("promoted to champion: " if promotion.promoted else "not promoted: ")
                + promotion.reason,
                seed=ctx.seed,
                search_trials=ctx.n_trials,
                ece_bins=ctx.cfg.evaluation.ece_bins,
            )
        )
        bundle = export.write_bundle(
            models_dir,
            folder,
            model_text=ctx.model_text,
            calibration=ctx.calibration.calibration,
            metadata=metadata,
            catalog=[r for r in catalog_records() if r["name"] in set(ctx.features)],
            metrics=metrics_doc,
            model_card=card,
            test_predictions=export.predictions_frame(test_frame, test_frame["churn_probability"]),
        )
        export.check_reproduces(bundle, ctx.x_te)
        mlflow.log_artifacts(str(bundle), registry.BUNDLE_ARTIFACT_DIR)

        decision = "promoted" if promotion.promoted else "not promoted"
        mlflow.log_param("promotion", decision)
        mlflow.set_tags({"promotion.decision": decision, "promotion.reason": promotion.reason})
        mlflow.log_dict(export.json_safe(promotion.to_dict()), "promotion.json")
        client.set_model_version_tag(
            name, str(version), "promotion", f"{decision}: {promotion.reason}"
        )
        champion_path = None
        if promotion.promoted:
            registry.set_champion(client, name, version)
            champion_path = export.promote_folder(models_dir, folder)
        elif (models_dir / CHAMPION_DIR).exists():
            champion_path = models_dir / CHAMPION_DIR
        else:
            # models/ lost the champion (cleaned by hand): bring its bundle back from its run
            # so serving keeps the registry's champion rather than no model at all.
            champion_path = registry.restore_champion(client, name, models_dir)
    return {
        "promotion": promotion,
        "model_version": model_version,
        "version": version,
        "run_id": run_id,
        "bundle": bundle,
        "champion": champion_path,
    }
