"""Tiny, real model bundles for tests: a LightGBM booster trained in well under a second.

The synthetic accounts churn when contact goes quiet, invoices run late, complaints pile up
or the relationship is single-threaded, so explanations point at features a reader expects.
Everything is written with ``churn.bundle``'s own file names and manifest, exactly as the
serving path loads it (no pickle).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np

from churn.bundle import (
    CALIBRATION_FILE,
    CATALOG_FILE,
    CHAMPION_DIR,
    METADATA_FILE,
    METRICS_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    Calibration,
    write_manifest,
)
from features.catalog import FEATURES, MODEL_FEATURES, catalog_records

CalibrationKind = Literal["isotonic", "platt", "none"]


def synthetic_features(n: int, seed: int = 0, missing_share: float = 0.1) -> np.ndarray:
    """An ``(n, len(MODEL_FEATURES))`` float matrix of plausible feature values, some NaN."""
    rng = np.random.default_rng(seed)
    cols = []
    for name in MODEL_FEATURES:
        kind = FEATURES[name].kind
        if kind == "flag":
            col = rng.integers(0, 2, n).astype(float)
        elif name == "days_since_last_contact":
            col = rng.integers(0, 180, n).astype(float)
        elif name.startswith(("revenue", "contract", "overdue_amount")):
            col = rng.lognormal(10, 1, n)
        else:
            col = rng.integers(0, 12, n).astype(float)
        col[rng.random(n) < missing_share] = np.nan
        cols.append(col)
    return np.column_stack(cols)


def _labels(x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    idx = {name: i for i, name in enumerate(MODEL_FEATURES)}

    def col(name: str) -> np.ndarray:
        return np.nan_to_num(x[:, idx[name]], nan=0.0)

    logit = (
        -6.0
        + 0.025 * col("days_since_last_contact")
        + 0.3 * col("overdue_days") / 4
        + 0.35 * col("complaints_90d")
        + 1.0 * col("single_threaded")
        - 0.15 * col("meetings_180d")
    )
    return (rng.random(len(x)) < 1 / (1 + np.exp(-logit))).astype(float)


def _calibration(kind: CalibrationKind, raw: np.ndarray, y: np.ndarray) -> Calibration:
    if kind == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(raw, y)
        x = np.asarray(iso.X_thresholds_, dtype=float)
        # Half raw, half isotonic: strictly increasing, so no flat step hides the impacts.
        return Calibration(
            "isotonic",
            x=tuple(map(float, x)),
            y=tuple(map(float, 0.5 * np.asarray(iso.y_thresholds_) + 0.5 * x)),
        )
    if kind == "platt":
        return Calibration("platt", a=0.9, b=-0.1)
    return Calibration("none")


def make_bundle(
    folder: Path,
    version: str = "test-v1",
    *,
    seed: int = 0,
    rows: int = 600,
    trees: int = 25,
    calibration: CalibrationKind = "isotonic",
) -> Path:
    """Train a small booster on synthetic accounts and write a complete, verified bundle."""
    import lightgbm as lgb

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x = synthetic_features(rows, seed)
    y = _labels(x, seed)
    params = {
        "objective": "binary",
        "num_leaves": 8,
        "min_data_in_leaf": 10,
        "learning_rate": 0.15,
        "verbose": -1,
        "seed": seed,
        "deterministic": True,
        "num_threads": 1,
    }
    data = lgb.Dataset(x, y, feature_name=list(MODEL_FEATURES), free_raw_data=False)
    booster = lgb.train(params, data, num_boost_round=trees)
    booster.save_model(str(folder / MODEL_FILE))
    cal = _calibration(calibration, booster.predict(x), y)
    (folder / CALIBRATION_FILE).write_text(json.dumps(cal.to_dict()))
    metadata = {
        "model_version": version,
        "trained_at": "2024-06-01T12:00:00+00:00",
        "feature_names": list(MODEL_FEATURES),
        "base_rate": float(y.mean()),
        "horizon_days": 90,
        "label_mode": "events",
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    records = [r for r in catalog_records() if r["name"] in MODEL_FEATURES]
    (folder / CATALOG_FILE).write_text(json.dumps(records))
    metrics = {"model": {"roc_auc": 0.8, "pr_auc": 0.5, "brier": 0.1}}
    (folder / METRICS_FILE).write_text(json.dumps(metrics))
    (folder / MODEL_CARD_FILE).write_text(f"# Model {version}\n\nSynthetic test model.\n")
    write_manifest(folder)
    return folder


def make_models_dir(root: Path, version: str = "test-v1", **kw: object) -> Path:
    """A ``models/`` folder whose ``champion`` is a symlink to ``models/<version>``.

    Returns the models folder. :func:`promote` swaps the symlink atomically.
    """
    models = Path(root)
    make_bundle(models / version, version, **kw)  # type: ignore[arg-type]
    promote(models, version)
    return models


def promote(models: Path, version: str) -> None:
    """Point ``models/champion`` at ``models/<version>`` in one atomic rename."""
    tmp = models / f".{CHAMPION_DIR}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(version, target_is_directory=True)
    os.replace(tmp, models / CHAMPION_DIR)
