"""MLflow tracking and registry: the store, the ``champion`` alias and the promotion gate.

Store: ``Settings.tracking_uri()`` (``MLFLOW_TRACKING_URI``, then the setting, then a SQLite
file under ``mlruns/``). For a local store (SQLite or file) the experiment's artifacts go to
``settings.mlflow_artifacts_dir``; a remote server keeps its own artifact root.

Promotion: the new version takes the ``champion`` alias only if, scored on the same
test rows as the new model, it is at least as good as the current champion: the promotion
metric (PR AUC by default) no lower, and the expected calibration error no more than the
champion's plus a tolerance. With no champion, or with ``--force``, it is promoted. The
champion is re-scored from its own bundle (LightGBM text + calibration JSON), never from
metrics logged on a different test period.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from churn.errors import ChurnError
from features.sources import mask_url
from training.config import PromotionConfig

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from churn.bundle import Bundle
    from churn.settings import Settings
    from training.config import RunPlan
    from training.evaluate import Evaluation, RunOutputs
    from training.fit import FittedModel
    from training.health_backtest import Backtest
    from training.select import Selection
    from training.split import SplitParts

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
BUNDLE_ARTIFACT_DIR = "bundle"
_NOISY_LOGGERS = ("mlflow", "alembic", "sqlalchemy", "urllib3", "git", "optuna")


def quiet_mlflow() -> None:
    """Silence MLflow's per-run chatter (migrations, registry notices, run links)."""
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # No usage telemetry leaves the machine from a training run.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def no_warnings() -> Iterator[None]:
    """Drop library warnings (MLflow schema hints, pydantic notices) and MLflow's own event
    lines ("Created version '3' ...", printed past the logging system) inside the block."""
    from mlflow.utils import logging_utils

    stream = logging_utils.MLFLOW_LOGGING_STREAM
    was_enabled = stream.enabled
    stream.enabled = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        stream.enabled = was_enabled


def _is_local(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def configure(settings: Settings, experiment: str) -> tuple[MlflowClient, str]:
    """Point MLflow at the settings' tracking store and return a client and the experiment id
    (created on first use; local stores put artifacts in ``settings.mlflow_artifacts_dir``)."""
    quiet_mlflow()
    import mlflow
    from mlflow import MlflowClient

    uri = settings.tracking_uri()
    # MLflow copies the URI into MLFLOW_TRACKING_URI; undo that, so the next Settings in this
    # process (a notebook training on another store) still decides its own store.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        with no_warnings():
            existing = client.get_experiment_by_name(experiment)
            if existing is not None:
                return client, existing.experiment_id
            location = None
            if _is_local(uri):
                folder = Path(settings.mlflow_artifacts_dir).resolve() / experiment
                folder.mkdir(parents=True, exist_ok=True)
                location = folder.as_uri()
            return client, client.create_experiment(experiment, artifact_location=location)
    except Exception as exc:  # MLflow raises many types for an unreachable or broken store
        raise ChurnError(
            f"cannot use the MLflow tracking store {mask_url(uri)}: {type(exc).__name__}",
            hint="check MLFLOW_TRACKING_URI / the mlflow_tracking_uri setting",
        ) from exc


def check_tracking_server(settings: Settings, timeout: float = 5.0) -> None:
    """Fail at once when the tracking store is an MLflow server that does not answer.

    MLflow's own client retries for minutes; a training run only talks to the store at its
    end, so without this check a wrong URL would cost the whole training and then a long wait.
    Local and database stores are checked when they are opened (:func:`configure`).
    """
    import httpx

    uri = settings.tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    try:
        response = httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError as exc:
        raise ChurnError(
            f"the MLflow tracking server {mask_url(uri)} does not answer ({type(exc).__name__})",
            hint="start it (make mlflow-server) or check MLFLOW_TRACKING_URI",
        ) from exc
    if response.status_code != 200:
        raise ChurnError(
            f"the MLflow tracking server {mask_url(uri)} answered /health with "
            f"HTTP {response.status_code}",
            hint="check that MLFLOW_TRACKING_URI names an MLflow server",
        )


# ------------------------------------------------------------------------------- promotion


@dataclass(frozen=True)
class Promotion:
    """The gate's decision, the reason in one sentence, and the numbers it compared."""

    promoted: bool
    reason: str
    new_version: str
    previous_champion: str | None = None
    champion: str | None = None
    metric: str = "pr_auc"
    new: dict[str, float] = field(default_factory=dict)
    previous: dict[str, float] = field(default_factory=dict)
    forced: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(
    new: dict[str, float],
    champion: dict[str, float] | None,
    cfg: PromotionConfig,
    *,
    new_version: str,
    champion_version: str | None = None,
    force: bool = False,
    note: str = "",
) -> Promotion:
    """The promotion gate on metrics computed on the same test rows (see the module
    docstring). ``champion`` None means there is no comparable champion."""
    metric, tol = cfg.metric, cfg.ece_tolerance
    picked = {metric: new[metric], "ece": new["ece"]}
    before = {metric: champion[metric], "ece": champion["ece"]} if champion else {}
    suffix = f" ({note})" if note else ""

    def result(promoted: bool, reason: str) -> Promotion:
        return Promotion(
            promoted=promoted,
            reason=reason + suffix,
            new_version=new_version,
            previous_champion=champion_version,
            champion=new_version if promoted else champion_version,
            metric=metric,
            new=picked,
            previous=before,
            forced=force,
        )

    if champion is None:
        if champion_version is None:
            return result(True, f"no champion yet: {new_version} becomes champion")
        if force:
            return result(True, f"forced: champion {champion_version} could not be compared")
        return result(
            False,
            f"champion {champion_version} could not be compared on this test period; "
            f"use --force to promote {new_version} anyway",
        )
    better_metric = new[metric] >= champion[metric]
    ece_ok = new["ece"] <= champion["ece"] + tol
    comparison = (
        f"{metric} {new[metric]:.4f} vs {champion[metric]:.4f}, "
        f"ECE {new['ece']:.4f} vs {champion['ece']:.4f} (tolerance {tol:g})"
    )
    if better_metric and ece_ok:
        return result(
            True, f"{new_version} is at least as good as {champion_version}: {comparison}"
        )
    problems = []
    if not better_metric:
        problems.append(f"lower {metric}")
    if not ece_ok:
        problems.append("worse calibration")
    if force:
        return result(True, f"forced despite {' and '.join(problems)}: {comparison}")
    return result(
        False,
        f"{new_version} kept out: {' and '.join(problems)} than champion {champion_version}: "
        f"{comparison}",
    )


def champion_version(client: MlflowClient, name: str) -> Any | None:
    """The registry's current champion ModelVersion, or None."""
    from mlflow.exceptions import MlflowException

    try:
        with no_warnings():
            return client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        return None


def load_version_bundle(
    client: MlflowClient, version: Any, models_dir: Path, folder_name: str
) -> Bundle:
    """The bundle of a registered version: ``models_dir/folder_name`` if it holds that version,
    else the copy logged with its MLflow run. Raises ChurnError when neither loads."""
    from churn.bundle import load_bundle

    wanted = f"{version.name}/{version.version}"
    local = Path(models_dir) / folder_name
    problems = []
    if local.is_dir():
        try:
            bundle = load_bundle(local)
            if bundle.version == wanted:
                return bundle
            problems.append(f"{local} holds {bundle.version}, not {wanted}")
        except ChurnError as exc:
            problems.append(str(exc))
    try:
        import mlflow

        # The booster is read into memory, so the downloaded copy can go at once.
        with tempfile.TemporaryDirectory(prefix="churn-champion-") as target, no_warnings():
            path = mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=BUNDLE_ARTIFACT_DIR, dst_path=target
            )
            return load_bundle(path)
    except Exception as exc:  # a missing artifact surfaces as one of several MLflow errors
        problems.append(f"run {version.run_id} bundle: {exc}")
    raise ChurnError(
        f"cannot load {wanted}: " + "; ".join(problems),
        hint="the champion's bundle is gone; retrain with --force to replace it",
    )


def register_version(client: MlflowClient, name: str, model_id: str, run_id: str) -> int:
    """Register a logged model as a new version of ``name`` (created on first use).

    The client API rather than ``log_model(registered_model_name=...)``, which prints its
    notices straight to stderr."""
    from mlflow.exceptions import MlflowException

    with no_warnings():
        try:
            client.create_registered_model(
                name, description="Client churn within the horizon (LightGBM, calibrated)."
            )
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        version = client.create_model_version(
            name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id
        )
    return int(version.version)


def set_champion(client: MlflowClient, name: str, version: int | str) -> None:
    with no_warnings():
        client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version))


def export_champion(client: MlflowClient, name: str, models_dir: Path) -> tuple[Any, Path]:
    """Fetch the registry champion's bundle (logged with its MLflow run) into
    ``models_dir/<name>-v<N>`` and point ``models_dir/champion`` at it; returns the champion
    ModelVersion and the ``champion`` link. A folder already holding that version (manifest
    verified) is kept as it is. Raises ChurnError with a hint when there is no champion, the
    store cannot be read or the downloaded bundle does not load."""
    import shutil

    from mlflow.exceptions import MlflowException

    from churn.bundle import load_bundle
    from training.export import folder_name, promote_folder

    uri = mask_url(client.tracking_uri)
    try:
        with no_warnings():
            current = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ChurnError(
                f"the MLflow registry at {uri} has no {name}@{CHAMPION_ALIAS}",
                hint="train a model against this tracking store (churn train), or point "
                "MLFLOW_TRACKING_URI at the team server",
            ) from exc
        first = mask_url(
            str(exc.message).strip().splitlines()[0] if str(exc.message).strip() else ""
        )
        raise ChurnError(
            f"cannot read {name}@{CHAMPION_ALIAS} from the MLflow registry at {uri}: {first}",
            hint="check MLFLOW_TRACKING_URI / the mlflow_tracking_uri setting and that the "
            "server is up",
        ) from exc
    wanted = f"{name}/{current.version}"
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    folder = folder_name(name, current.version)
    target = models_dir / folder
    if target.is_dir() and not target.is_symlink():
        try:
            if load_bundle(target).version == wanted:
                return current, promote_folder(models_dir, folder)
        except ChurnError:
            pass  # damaged or another store's version: replaced below
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=models_dir))
    try:
        try:
            with no_warnings():
                # a version registered by training always has a run; were it missing, the
                # download fails and is reported below like any other
                run_id = cast(str, current.run_id)
                path = Path(client.download_artifacts(run_id, BUNDLE_ARTIFACT_DIR, str(tmp)))
        except Exception as exc:  # a missing artifact surfaces as one of several MLflow errors
            detail = mask_url(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            raise ChurnError(
                f"cannot download the bundle of {wanted} (run {current.run_id}) from {uri}: "
                f"{type(exc).__name__}: {detail}",
                hint="check that the server serves artifacts (--serve-artifacts); if the run "
                "has no bundle/ artifact, retrain with --force to replace the champion",
            ) from exc
        got = load_bundle(path).version
        if got != wanted:
            raise ChurnError(
                f"the bundle logged with run {current.run_id} is {got}, not {wanted}",
                hint="the registry and its runs disagree; retrain with --force",
            )
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        os.replace(path, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return current, promote_folder(models_dir, folder)


def promote_version(
    client: MlflowClient, name: str, version: int, models_dir: Path
) -> tuple[str | None, Any, Path]:
    """Make registered ``version`` the champion by hand (a roll back or forward): move the
    alias, fetch its bundle into ``models_dir`` and point ``models/champion`` at it. If the
    bundle cannot be fetched the alias goes back where it was. Returns (previous champion
    version or None, the new champion ModelVersion, the ``champion`` link)."""
    from mlflow.exceptions import MlflowException

    uri = mask_url(client.tracking_uri)
    try:
        with no_warnings():
            client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise ChurnError(
            f"the MLflow registry at {uri} has no version {version} of {name}",
            hint="list the versions in the MLflow UI or with MlflowClient().search_model_versions",
        ) from exc
    previous = champion_version(client, name)
    before = None if previous is None else str(previous.version)
    set_champion(client, name, version)
    try:
        current, link = export_champion(client, name, models_dir)
    except ChurnError:
        if before is None:
            client.delete_registered_model_alias(name, CHAMPION_ALIAS)
        else:
            set_champion(client, name, before)
        raise
    return before, current, link


def restore_champion(client: MlflowClient, name: str, models_dir: Path) -> Path | None:
    """Re-export the registry champion's bundle (from its MLflow run) into ``models_dir`` and
    point ``champion`` at it; None when there is no champion or its bundle cannot be found."""
    if champion_version(client, name) is None:
        return None
    try:
        return export_champion(client, name, models_dir)[1]
    except Exception as exc:  # a lost champion must not fail the training run that noticed it
        log.warning("could not restore the champion of %s: %s", name, exc)
        return None


# -------------------------------------------------------- the pipeline's tracking steps


@dataclass(frozen=True)
class TrackedRun:
    """The MLflow run a training run is logged in: its id, the client of its store, and the
    time it started (the bundle's ``trained_at``)."""

    run_id: str
    client: MlflowClient
    trained_at: str


@dataclass(frozen=True)
class Candidate:
    """A registered version waiting for export: its registered model and version, the run it
    came from, and the promotion gate's decision."""

    registered_model: str
    version: int
    run_id: str
    trained_at: str
    promotion: Promotion

    @property
    def model_version(self) -> str:
        """``churn-model/3``: the version's name everywhere (bundle, API, store)."""
        return f"{self.registered_model}/{self.version}"


@contextmanager
def tracking_run(settings: Settings, experiment: str) -> Iterator[TrackedRun]:
    """An MLflow run in the settings' store, under ``experiment`` (library warnings dropped
    inside it)."""
    from datetime import UTC, datetime

    quiet_mlflow()  # before MLflow's first import: telemetry and log levels
    import mlflow

    client, experiment_id = configure(settings, experiment)
    trained_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    with (
        no_warnings(),
        mlflow.start_run(experiment_id=experiment_id, run_name=f"train {trained_at[:16]}") as run,
    ):
        yield TrackedRun(run_id=run.info.run_id, client=client, trained_at=trained_at)


def _flat_params(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in sorted(values.items())}


def log_run(run: RunOutputs, health_backtest: Backtest | None = None) -> str:
    """Log the active run's parameters, data lineage, test metrics, plots and model (with its
    signature and an input example), and the health rules backtest when given (metrics
    ``health_backtest.*``, ``health_backtest.json`` and the suggested rules); returns the
    logged model's id for the registry."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature

    from training.export import json_safe

    plan, data, lineage, parts, model, report = run
    cfg = plan.config
    mlflow.log_params(
        {
            **_flat_params("lgb.", model.params),
            "num_boost_round": cfg.lightgbm.num_boost_round,
            "early_stopping_rounds": cfg.lightgbm.early_stopping_rounds,
            "best_iteration": model.best_iteration,
            "label_mode": plan.snapshots.label_mode,
            "horizon_days": plan.snapshots.horizon_days,
            "snapshot_frequency": plan.snapshots.frequency,
            "seed": plan.seed,
            "search_trials": plan.trials,
            "calibration_method": report.calibration.method,
            "ece_bins": cfg.evaluation.ece_bins,
            "bootstrap_samples": cfg.evaluation.bootstrap_samples,
            "interval_level": cfg.evaluation.interval_level,
            "train_config_version": cfg.version,
            "health_config_version": plan.health.version,
            **_flat_params("split.", cfg.split.model_dump()),
            "split.chosen": lineage["split"]["kind"],
            "data.source": lineage["source"],
            "data.snapshot_hash": lineage["snapshot_hash"],
            "data.snapshot_rows": lineage["snapshot_rows"],
            "data.labeled_rows": lineage["labeled_rows"],
            "data.as_of_first": lineage["as_of_first"],
            "data.as_of_last": lineage["as_of_last"],
            "data.tables_missing": ",".join(data.loaded.tables.missing) or "none",
            "data.absent_families": ",".join(data.absent) or "none",
            **{
                f"data.{p}_{k}": v
                for p, period in lineage["split"].items()
                if isinstance(period, dict)
                for k, v in period.items()
            },
        }
    )
    mlflow.set_tags({"calibration": report.calibration.note, "data.source": lineage["source"]})
    mlflow.set_tag("split", lineage["split"]["description"])
    mlflow.log_dict(json_safe(lineage), "lineage.json")
    flat_metrics = {
        f"{scorer}.{metric}": value
        for scorer, values in report.metrics.items()
        for metric, value in values.items()
        if np.isfinite(value)
    }
    flat_metrics |= _interval_metrics(report.intervals)
    points = report.operating_points
    flat_metrics.update(
        {
            "operating_points.act_now": points.act_now,
            "operating_points.watch": points.watch,
            **{
                f"operating_points.{name}.{period}.{figure}": value
                for name, periods in points.figures.items()
                for period, figures in periods.items()
                for figure, value in figures.items()
                if np.isfinite(value)
            },
        }
    )
    mlflow.log_dict(json_safe(points.to_dict()), "operating_points.json")
    if model.search_score is not None:
        flat_metrics["search.best_validation_pr_auc"] = model.search_score
    if health_backtest is not None:
        from training.health_backtest import config_yaml

        flat_metrics |= {f"health_backtest.{k}": v for k, v in health_backtest.metrics().items()}
        mlflow.log_dict(json_safe(health_backtest.summary()), "health_backtest.json")
        mlflow.log_text(config_yaml(health_backtest), "health_backtest/suggested_health.yaml")
    mlflow.log_metrics(flat_metrics)
    with tempfile.TemporaryDirectory() as tmp:
        for path in _plots(plan, model, report, parts, Path(tmp)):
            mlflow.log_artifact(str(path), "plots")

    x_test = parts.test.x
    example = pd.DataFrame(x_test[:5], columns=list(parts.features))
    signature = infer_signature(example, model.booster.predict(x_test[:5]))
    info = mlflow.lightgbm.log_model(
        model.booster,
        name="model",
        signature=signature,
        input_example=example,
        # Stated, not inferred: inference runs a subprocess that costs seconds.
        pip_requirements=mlflow.lightgbm.get_default_pip_requirements(),
    )
    return str(info.model_id)


def log_feature_selection(selection: Selection) -> None:
    """Log the run's feature selection (:mod:`training.select`): parameters with the feature
    counts (``features.count``, ``features.excluded``, ``features.pruned``) and whether
    pruning ran, and ``feature_selection.json`` (kept, pruned and excluded features, each
    feature's validation importance with its spread)."""
    import mlflow

    from training.export import json_safe

    mlflow.log_params(
        {
            "features.count": len(selection.kept),
            "features.excluded": len(selection.excluded),
            # Entries, not the features they name (those are in the JSON); capped for MLflow.
            "features.exclude": (",".join(selection.exclude_entries) or "none")[:500],
            "features.prune": selection.enabled,
            "features.pruned": len(selection.pruned),
        }
    )
    mlflow.log_dict(json_safe(selection.to_dict()), "feature_selection.json")


def _interval_metrics(intervals: dict[str, dict[str, tuple[float, float]]]) -> dict[str, float]:
    """The metric intervals as MLflow metrics beside their point figures:
    ``<scorer>.<metric>_low`` and ``<scorer>.<metric>_high`` (undefined bounds left out)."""
    return {
        f"{scorer}.{metric}_{side}": float(bound)
        for scorer, values in intervals.items()
        for metric, bounds in values.items()
        for side, bound in zip(("low", "high"), bounds, strict=True)
        if math.isfinite(bound)
    }


def _plots(
    plan: RunPlan, model: FittedModel, report: Evaluation, parts: SplitParts, folder: Path
) -> list[Path]:
    import pandas as pd

    from training import plots

    features = list(parts.features)
    importance = pd.Series(
        model.booster.feature_importance(importance_type="gain"), index=features, dtype=float
    )
    test = parts.test
    health = pd.to_numeric(test.frame["health_score"]).to_numpy(float)
    scores = report.scores
    return [
        plots.calibration_plot(
            test.y,
            {k: scores[k] for k in ("model", "logistic", "bgnbd") if k in scores},
            folder / "calibration_curve.png",
            plan.config.evaluation.ece_bins,
        ),
        plots.gains_plot(test.y, scores, folder / "cumulative_gains_lift.png"),
        plots.shap_summary_plot(
            report.contributions[:, :-1], test.x, features, folder / "shap_summary.png"
        ),
        plots.importance_plot(importance, folder / "feature_importance.png"),
        plots.health_vs_probability_plot(
            health, scores["model"], test.y, folder / "health_vs_probability.png"
        ),
    ]


def register(
    tracked: TrackedRun,
    model_id: str,
    settings: Settings,
    plan: RunPlan,
    parts: SplitParts,
    report: Evaluation,
    *,
    force: bool = False,
) -> Candidate:
    """Register the run's logged model as a new version and decide, with the promotion gate,
    whether it may replace the champion (scored on the same test rows)."""
    name = settings.registered_model_name
    version = register_version(tracked.client, name, model_id, tracked.run_id)
    champion, label, note = _champion_metrics(tracked.client, name, settings, plan, parts, report)
    promotion = decide_promotion(
        report.metrics["model"],
        champion,
        plan.config.promotion,
        new_version=f"{name}/{version}",
        champion_version=label,
        force=force,
        note=note,
    )
    return Candidate(
        registered_model=name,
        version=version,
        run_id=tracked.run_id,
        trained_at=tracked.trained_at,
        promotion=promotion,
    )


def _champion_metrics(
    client: MlflowClient,
    name: str,
    settings: Settings,
    plan: RunPlan,
    parts: SplitParts,
    report: Evaluation,
) -> tuple[dict[str, float] | None, str | None, str]:
    """The current champion's metrics on this run's test rows (None when it cannot be
    scored), its version label, and a note for the decision."""
    from training.evaluate import evaluate, feature_matrix
    from training.export import folder_name

    current = champion_version(client, name)
    if current is None:
        return None, None, ""
    label = f"{name}/{current.version}"
    try:
        bundle = load_version_bundle(
            client, current, settings.models_dir, folder_name(name, current.version)
        )
    except ChurnError as exc:
        return None, label, str(exc)
    meta = bundle.metadata
    snap = plan.snapshots
    if meta.get("horizon_days") not in (None, snap.horizon_days) or meta.get("label_mode") not in (
        None,
        snap.label_mode,
    ):
        # Another target is another product answer: switching it is a decision, not a score.
        return (
            None,
            label,
            f"it predicts {meta.get('label_mode')} churn within {meta.get('horizon_days')} "
            f"days, this run {snap.label_mode} churn within {snap.horizon_days} days",
        )
    test = parts.test
    p = bundle.predict(feature_matrix(test.frame, bundle.feature_names))
    notes = []
    test_start = parts.split.periods["test"].start.date().isoformat()
    champ_train_end = (meta.get("periods") or {}).get("train", {}).get("end")
    if champ_train_end and champ_train_end >= test_start:
        notes.append("the champion was trained on data from this test period, which favours it")
    return (
        evaluate(test.y, p, report.revenue, bins=plan.config.evaluation.ece_bins),
        label,
        "; ".join(notes),
    )


def promote(tracked: TrackedRun, candidate: Candidate, bundle: Path) -> Path | None:
    """Log the exported bundle and the gate's decision with the run; on promotion move the
    ``champion`` alias and ``models/champion`` to the candidate. Returns the champion folder
    serving loads (None when there is none)."""
    import mlflow

    from churn.bundle import CHAMPION_DIR
    from training.export import json_safe, promote_folder

    mlflow.log_artifacts(str(bundle), BUNDLE_ARTIFACT_DIR)
    promotion = candidate.promotion
    decision = "promoted" if promotion.promoted else "not promoted"
    mlflow.log_param("promotion", decision)
    mlflow.set_tags({"promotion.decision": decision, "promotion.reason": promotion.reason})
    mlflow.log_dict(json_safe(promotion.to_dict()), "promotion.json")
    client, name, version = tracked.client, candidate.registered_model, candidate.version
    client.set_model_version_tag(name, str(version), "promotion", f"{decision}: {promotion.reason}")
    models_dir = bundle.parent
    if promotion.promoted:
        set_champion(client, name, version)
        return promote_folder(models_dir, bundle.name)
    if (models_dir / CHAMPION_DIR).exists():
        return models_dir / CHAMPION_DIR
    # models/ lost the champion (cleaned by hand): bring its bundle back from its run so
    # serving keeps the registry's champion rather than no model at all.
    return restore_champion(client, name, models_dir)
