"""The exported bundle: loads with LightGBM and JSON only, reproduces its test predictions,
refuses to publish a broken bundle, and ``models/champion`` moves atomically."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from churn.bundle import (
    CHAMPION_DIR,
    METRICS_FILE,
    TEST_PREDICTIONS_FILE,
    Calibration,
    load_bundle,
    write_manifest,
)
from churn.errors import BundleIntegrityError
from features.catalog import MODEL_FEATURES, catalog_records
from tests.support.bundle_factory import synthetic_features
from training.export import (
    PREDICTION_COLUMNS,
    check_reproduces,
    folder_name,
    json_safe,
    predictions_frame,
    promote_folder,
    write_bundle,
)


def _model(seed: int = 0) -> tuple[str, np.ndarray, np.ndarray]:
    import lightgbm as lgb

    x = synthetic_features(400, seed)
    days = np.nan_to_num(x[:, MODEL_FEATURES.index("days_since_last_contact")], nan=0)
    y = (days > 120).astype(float)
    params = {"objective": "binary", "num_leaves": 4, "verbose": -1, "seed": seed, "num_threads": 1}
    data = lgb.Dataset(x, y, feature_name=list(MODEL_FEATURES))
    booster = lgb.train(params, data, num_boost_round=10)
    return booster.model_to_string(), x, y


def _export(models, version: int = 1, seed: int = 0, model_text: str | None = None):
    import lightgbm as lgb

    text, x, y = _model(seed)
    text = model_text or text
    cal = Calibration("platt", a=0.8, b=-0.2)
    probability = cal.apply(lgb.Booster(model_str=text).predict(x))
    test = pd.DataFrame(
        {
            "account_id": [f"A-{i}" for i in range(len(x))],
            "as_of": pd.Timestamp("2024-01-01"),
            "churned": y,
            "health_score": np.linspace(0, 100, len(x)),
        }
    )
    folder = write_bundle(
        models,
        folder_name("churn-model", version),
        model_text=text,
        calibration=cal,
        metadata={
            "model_version": f"churn-model/{version}",
            "feature_names": list(MODEL_FEATURES),
            "base_rate": float("nan"),
        },
        catalog=[r for r in catalog_records() if r["name"] in MODEL_FEATURES],
        metrics={"model": {"roc_auc": 0.9, "revenue_captured_top_decile": float("nan")}},
        model_card="# card\n",
        test_predictions=predictions_frame(test, probability),
    )
    return folder, x


def test_bundle_loads_without_unpickling_and_reproduces_its_test_predictions(tmp_path, monkeypatch):
    folder, x = _export(tmp_path / "models")

    def refuse(*args, **kwargs):
        raise AssertionError("the bundle must not be unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    bundle = load_bundle(folder)
    stored = pd.read_parquet(folder / TEST_PREDICTIONS_FILE)
    assert list(stored.columns) == list(PREDICTION_COLUMNS)
    assert np.array_equal(bundle.predict(x), stored["churn_probability"].to_numpy())
    check_reproduces(bundle, x)


def test_metrics_json_is_strict_json_with_nan_as_null(tmp_path):
    folder, _ = _export(tmp_path / "models")
    text = (folder / METRICS_FILE).read_text()
    assert json.loads(text)["model"]["revenue_captured_top_decile"] is None
    assert "NaN" not in text
    assert json_safe({"a": [np.float64(np.inf), np.int64(3)]}) == {"a": [None, 3]}


def test_tampered_predictions_are_detected(tmp_path):
    folder, x = _export(tmp_path / "models")
    preds = pd.read_parquet(folder / TEST_PREDICTIONS_FILE)
    preds.loc[0, "churn_probability"] += 1e-9
    preds.to_parquet(folder / TEST_PREDICTIONS_FILE, index=False)
    write_manifest(folder)  # even with a consistent manifest, the numbers must match the model
    with pytest.raises(BundleIntegrityError, match="does not reproduce"):
        check_reproduces(folder, x)


def test_a_bundle_serving_could_not_load_is_never_published(tmp_path):
    models = tmp_path / "models"
    text, _, _ = _model()
    broken = text.replace("feature_names=interactions_30d", "feature_names=renamed_feature", 1)
    with pytest.raises(BundleIntegrityError):
        _export(models, model_text=broken)
    assert not (models / folder_name("churn-model", 1)).exists()
    assert [p.name for p in models.iterdir()] == []  # no temporary folder left behind


def test_champion_link_moves_atomically_between_versions(tmp_path):
    models = tmp_path / "models"
    _export(models, 1, seed=0)
    _export(models, 2, seed=1)
    link = promote_folder(models, folder_name("churn-model", 1))
    assert link == models / CHAMPION_DIR and link.is_symlink()
    assert load_bundle(link).version == "churn-model/1"
    promote_folder(models, folder_name("churn-model", 2))
    assert load_bundle(models / CHAMPION_DIR).version == "churn-model/2"
    # The versions stay; only the link moved, and no temporary link is left.
    assert sorted(p.name for p in models.iterdir()) == [
        "champion",
        "churn-model-v1",
        "churn-model-v2",
    ]


def test_a_hand_copied_champion_folder_is_replaced(tmp_path):
    import shutil

    models = tmp_path / "models"
    v1, _ = _export(models, 1)
    _export(models, 2, seed=1)
    shutil.copytree(v1, models / CHAMPION_DIR)
    promote_folder(models, folder_name("churn-model", 2))
    assert (models / CHAMPION_DIR).is_symlink()
    assert load_bundle(models / CHAMPION_DIR).version == "churn-model/2"
    assert not [p for p in models.iterdir() if p.name.startswith(".")]


def test_exporting_a_version_again_replaces_its_folder(tmp_path):
    models = tmp_path / "models"
    _export(models, 1, seed=0)
    folder, x = _export(models, 1, seed=5)
    check_reproduces(folder, x)
