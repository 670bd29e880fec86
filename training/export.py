"""Export a trained model as a serving bundle (``churn.bundle``) and move ``champion``.

Each registered version gets ``models/<name>-v<N>/``; the folder is written under a temporary
name inside ``models/``, checked with ``churn.bundle.load_bundle`` (LightGBM + JSON only, its
manifest verified) and renamed into place. ``models/champion`` is a relative symlink to the
champion's folder, swapped with one ``os.replace`` of a new link over the old, so a reader
(the server's reload) sees either the old champion or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churn import model_terms
from churn.bundle import (
    CALIBRATION_FILE,
    CATALOG_FILE,
    CHAMPION_DIR,
    METADATA_FILE,
    METRICS_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    TEST_PREDICTIONS_FILE,
    Bundle,
    Calibration,
    load_bundle,
    write_manifest,
)
from churn.errors import BundleIntegrityError

if TYPE_CHECKING:
    from training.evaluate import Evaluation, RunOutputs
    from training.registry import Candidate
    from training.select import Selection

PREDICTION_COLUMNS = ("account_id", "as_of", "label", "churn_probability", "health_score")


def folder_name(registered_name: str, version: int | str) -> str:
    """The bundle folder of a registered version: ``churn-model-v3``."""
    return f"{registered_name}-v{version}"


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any) -> str:
    return json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n"


def predictions_frame(
    test: pd.DataFrame, probability: np.ndarray, label_column: str = "churned"
) -> pd.DataFrame:
    """The ``test_predictions.parquet`` table: one row per test account-date."""
    return pd.DataFrame(
        {
            "account_id": test["account_id"].astype("string").to_numpy(),
            "as_of": pd.to_datetime(test["as_of"]).to_numpy(),
            "label": test[label_column].astype("int64").to_numpy(),
            "churn_probability": np.asarray(probability, dtype="float64"),
            "health_score": pd.to_numeric(test["health_score"]).astype("float64").to_numpy(),
        }
    )


def write_bundle(
    models_dir: Path,
    name: str,
    *,
    model_text: str,
    calibration: Calibration,
    metadata: dict[str, Any],
    catalog: list[dict[str, Any]],
    metrics: dict[str, Any],
    model_card: str,
    test_predictions: pd.DataFrame,
) -> Path:
    """Write, verify and move into place the bundle folder ``models_dir/name``; returns it.

    An existing folder of that name (a store that was reset re-uses version numbers) is
    replaced.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=models_dir))
    try:
        (tmp / MODEL_FILE).write_text(model_text)
        (tmp / CALIBRATION_FILE).write_text(dumps(calibration.to_dict()))
        (tmp / METADATA_FILE).write_text(dumps(metadata))
        (tmp / CATALOG_FILE).write_text(dumps(catalog))
        (tmp / METRICS_FILE).write_text(dumps(metrics))
        (tmp / MODEL_CARD_FILE).write_text(model_card)
        test_predictions.loc[:, list(PREDICTION_COLUMNS)].to_parquet(
            tmp / TEST_PREDICTIONS_FILE, index=False
        )
        write_manifest(tmp)
        load_bundle(tmp)  # refuse to publish anything serving could not load
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the bundle from a server user
        target = models_dir / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def check_reproduces(bundle: Bundle | Path, x_test: np.ndarray) -> None:
    """Raise BundleIntegrityError unless the bundle, loaded from disk, predicts exactly the
    ``churn_probability`` it stores in ``test_predictions.parquet`` for ``x_test``."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    stored = pd.read_parquet(bundle.path / TEST_PREDICTIONS_FILE)["churn_probability"].to_numpy()
    again = bundle.predict(x_test)
    if stored.shape != again.shape or not np.array_equal(stored, again):
        worst = float(np.max(np.abs(stored - again))) if stored.shape == again.shape else math.inf
        raise BundleIntegrityError(
            f"model bundle {bundle.path} does not reproduce its test predictions "
            f"(largest difference {worst:.3g})",
            hint="the bundle's files do not match the trained model; retrain",
        )


def promote_folder(models_dir: Path, name: str) -> Path:
    """Point ``models_dir/champion`` at ``models_dir/name`` atomically; returns the link.

    A ``champion`` that is a real folder (copied in by hand) is moved aside first and removed
    once the link is in place.
    """
    models_dir = Path(models_dir)
    if not (models_dir / name).is_dir():
        raise BundleIntegrityError(f"cannot promote {name}: {models_dir / name} does not exist")
    link = models_dir / CHAMPION_DIR
    tmp = models_dir / f".{CHAMPION_DIR}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(name, target_is_directory=True)
    aside = None
    if link.is_dir() and not link.is_symlink():
        aside = models_dir / f".{CHAMPION_DIR}.{os.getpid()}.old"
        os.replace(link, aside)
    os.replace(tmp, link)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return link


# ------------------------------------------------------------- the pipeline's export step


def bundle_base_rate(report: Evaluation) -> float:
    """The bundle's ``base_rate`` (:func:`churn.model_terms.base_rate`) from the test rows'
    SHAP bias, the same for every row (0 without test rows)."""
    contributions = report.contributions
    bias = float(contributions[:, -1][0]) if len(contributions) else 0.0
    return model_terms.base_rate(bias, report.calibration.calibration.apply)


def feature_typical(x: np.ndarray, features: list[str]) -> dict[str, float | None]:
    """Each feature's median over the rows of ``x`` (the training accounts), None where every
    value is unknown: the "typical of your clients" that reasons compare a value with."""
    x = np.asarray(x, dtype=float).reshape(-1, len(features))
    out: dict[str, float | None] = {}
    for j, name in enumerate(features):
        column = x[:, j][~np.isnan(x[:, j])]
        out[name] = float(np.median(column)) if len(column) else None
    return out


def export_bundle(
    models_dir: Path,
    candidate: Candidate,
    run: RunOutputs,
    health_backtest: dict[str, Any] | None = None,
    selection: Selection | None = None,
) -> Path:
    """Write the candidate's serving bundle (model, calibration, metadata, catalogue, metrics,
    model card, test predictions) to ``models_dir/<name>-v<N>``, verified to load and to
    reproduce its test predictions; returns the folder. Needs no tracking store.
    ``health_backtest`` (``Backtest.summary()``) adds its section to the model card;
    ``selection`` (:mod:`training.select`) adds the features' line to it."""
    from features.catalog import catalog_records
    from training.model_card import CardInputs, mean_abs_drivers, render_model_card

    plan, data, lineage, parts, model, report = run
    cfg, snap, features = plan.config, plan.snapshots, list(parts.features)
    periods: dict[str, Any] = parts.split.to_dict()
    promotion = candidate.promotion
    metadata = {
        "model_version": candidate.model_version,
        "registered_model": candidate.registered_model,
        "registered_version": candidate.version,
        "trained_at": candidate.trained_at,
        "feature_names": features,
        "feature_typical": feature_typical(parts.train.x, features),
        "horizon_days": snap.horizon_days,
        "label_mode": snap.label_mode,
        "base_rate": bundle_base_rate(report),
        "base_rate_definition": model_terms.BASE_RATE_DEFINITION,
        "calibration": report.calibration.note,
        "operating_points": report.operating_points.to_dict(),
        "best_iteration": model.best_iteration,
        "lightgbm_params": model.params,
        "seed": plan.seed,
        "periods": periods,
        "rows": {p: periods[p]["rows"] for p in ("train", "validation", "test")},
        "source": lineage["source"],
        "snapshot_hash": lineage["snapshot_hash"],
        "tables_missing": data.loaded.tables.missing,
        "absent_families": data.absent,
        "train_config_version": cfg.version,
        "health_config_version": plan.health.version,
        "mlflow_run_id": candidate.run_id,
    }
    metrics = {
        **report.metrics,
        "test": {
            "start": periods["test"]["start"],
            "end": periods["test"]["end"],
            "rows": periods["test"]["rows"],
            "churned": periods["test"]["positives"],
            "churn_rate": float(parts.test.y.mean()),
        },
        "definitions": {
            "ece": f"expected calibration error, {cfg.evaluation.ece_bins} equal-frequency bins",
            "health_score": "baseline score (100 - health_score) / 100",
            "logistic": "logistic regression on the same features, fitted on the train period",
            "top_decile": "10 % of test rows with the highest score, ties shared pro rata",
        },
    }
    card = render_model_card(
        CardInputs(
            model_version=candidate.model_version,
            trained_at=candidate.trained_at,
            source=lineage["source"],
            label_mode=snap.label_mode,
            horizon_days=snap.horizon_days,
            periods=periods,
            metrics=report.metrics,
            drivers=mean_abs_drivers(report.contributions[:, :-1], parts.test.x, features),
            calibration_note=report.calibration.note,
            operating_points=json_safe(report.operating_points.to_dict()),
            best_iteration=model.best_iteration,
            tables_present=data.loaded.tables.present,
            absent_families=data.absent,
            snapshot_hash=lineage["snapshot_hash"],
            run_id=candidate.run_id,
            promotion=("promoted to champion: " if promotion.promoted else "not promoted: ")
            + promotion.reason,
            seed=plan.seed,
            search_trials=plan.trials,
            ece_bins=cfg.evaluation.ece_bins,
            health_backtest=health_backtest,
            extra_limitations=selection.card_lines() if selection else [],
            intervals=report.intervals,
            interval_note=report.interval_note.to_dict() if report.interval_note else None,
        )
    )
    test_frame = report.test_frame
    bundle = write_bundle(
        Path(models_dir),
        folder_name(candidate.registered_model, candidate.version),
        model_text=model.model_text,
        calibration=report.calibration.calibration,
        metadata=metadata,
        catalog=[r for r in catalog_records() if r["name"] in set(features)],
        metrics=metrics,
        model_card=card,
        test_predictions=predictions_frame(test_frame, test_frame["churn_probability"]),
    )
    check_reproduces(bundle, parts.test.x)
    return bundle
