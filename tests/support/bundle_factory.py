"""Tiny, real model bundles for tests: a LightGBM booster trained in well under a second.

The synthetic accounts churn when contact goes quiet, invoices run late, complaints pile up
or the relationship is single-threaded, so explanations point at features a reader expects.
The calibration is fitted by ``training.calibrate`` and the bundle written and promoted by
``training.export``, exactly as a training run writes one (no second bundle writer here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from churn import model_terms
from churn.bundle import Calibration
from features.catalog import FEATURES, MODEL_FEATURES, catalog_records
from training.calibrate import fit_isotonic, fit_platt
from training.export import feature_typical, write_bundle
from training.export import promote_folder as promote

CalibrationKind = Literal["isotonic", "platt", "none"]


def synthetic_features(n: int, seed: int = 0, missing_share: float = 0.1) -> np.ndarray:
    """An ``(n, len(MODEL_FEATURES))`` float matrix of plausible feature values within the
    catalogue's valid ranges, some NaN."""
    rng = np.random.default_rng(seed)
    cols = []
    for name in MODEL_FEATURES:
        kind = FEATURES[name].kind
        low, high = FEATURES[name].valid_range
        if kind == "flag":
            col = rng.integers(0, 2, n).astype(float)
        elif low is not None and high is not None and high - low <= 2:  # shares, sentiment
            col = rng.uniform(low, high, n)
        elif low is not None and high is not None:  # survey scores, seniority levels
            col = rng.integers(int(low), int(high) + 1, n).astype(float)
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
        return fit_isotonic(raw, y)
    if kind == "platt":
        return fit_platt(raw, y)
    return Calibration("none")


def make_bundle(
    folder: Path,
    version: str = "test-v1",
    *,
    seed: int = 0,
    rows: int = 600,
    trees: int = 25,
    calibration: CalibrationKind = "isotonic",
    operating_points: dict[str, object] | None = None,
    typical: bool = True,
) -> Path:
    """Train a small booster on synthetic accounts and write a complete, verified bundle
    (without operating points unless given: serving then uses the defaults; without
    ``typical``: one exported before bundles carried the features' typical values)."""
    import lightgbm as lgb

    folder = Path(folder)
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
    cal = _calibration(calibration, booster.predict(x), y)
    metadata = {
        "model_version": version,
        "trained_at": "2024-06-01T12:00:00+00:00",
        "feature_names": list(MODEL_FEATURES),
        "base_rate": model_terms.base_rate(
            float(booster.predict(x[:1], pred_contrib=True)[0, -1]), cal.apply
        ),
        "horizon_days": 90,
        "label_mode": "events",
    }
    if operating_points is not None:
        metadata["operating_points"] = operating_points
    if typical:
        metadata["feature_typical"] = feature_typical(x, list(MODEL_FEATURES))
    predictions = pd.DataFrame(
        {
            "account_id": [f"A-{i}" for i in range(rows)],
            "as_of": pd.Timestamp("2024-06-01"),
            "label": y.astype("int64"),
            "churn_probability": cal.apply(booster.predict(x)),
            "health_score": np.nan,
        }
    )
    return write_bundle(
        folder.parent,
        folder.name,
        model_text=booster.model_to_string(),
        calibration=cal,
        metadata=metadata,
        catalog=[r for r in catalog_records() if r["name"] in MODEL_FEATURES],
        metrics={"model": {"roc_auc": 0.8, "pr_auc": 0.5, "brier": 0.1}},
        model_card=f"# Model {version}\n\nSynthetic test model.\n",
        test_predictions=predictions,
    )


def make_models_dir(root: Path, version: str = "test-v1", **kw: object) -> Path:
    """A ``models/`` folder whose ``champion`` is a symlink to ``models/<version>``.

    Returns the models folder. :func:`promote` (training's own ``promote_folder``) swaps the
    symlink atomically.
    """
    models = Path(root)
    make_bundle(models / version, version, **kw)  # type: ignore[arg-type]
    promote(models, version)
    return models
