"""The promotion gate (refuses a worse model, accepts a better one, --force, tolerance) and the
MLflow registry plumbing it relies on (versions, the champion alias, champion bundles)."""

from __future__ import annotations

from pathlib import Path

import pytest

from churn.bundle import load_bundle
from churn.errors import ChurnError
from churn.settings import load_settings
from tests.support.bundle_factory import make_bundle
from training.config import PromotionConfig
from training.registry import (
    BUNDLE_ARTIFACT_DIR,
    champion_version,
    configure,
    decide_promotion,
    load_version_bundle,
    register_version,
    set_champion,
)

CFG = PromotionConfig(metric="pr_auc", ece_tolerance=0.01)


def gate(new, champion, **kw):
    return decide_promotion(
        new, champion, CFG, new_version="churn-model/2", champion_version="churn-model/1", **kw
    )


def test_a_better_model_is_promoted():
    d = gate({"pr_auc": 0.40, "ece": 0.02}, {"pr_auc": 0.35, "ece": 0.02})
    assert d.promoted and d.champion == "churn-model/2"
    assert "at least as good" in d.reason and "0.4000 vs 0.3500" in d.reason


def test_an_equal_model_is_promoted():
    assert gate({"pr_auc": 0.35, "ece": 0.02}, {"pr_auc": 0.35, "ece": 0.02}).promoted


def test_a_model_with_lower_pr_auc_is_refused():
    d = gate({"pr_auc": 0.30, "ece": 0.01}, {"pr_auc": 0.35, "ece": 0.02})
    assert not d.promoted and d.champion == "churn-model/1"
    assert "lower pr_auc" in d.reason and "--force" not in d.reason


def test_worse_calibration_beyond_the_tolerance_is_refused():
    d = gate({"pr_auc": 0.40, "ece": 0.05}, {"pr_auc": 0.35, "ece": 0.02})
    assert not d.promoted and "worse calibration" in d.reason
    # Within the tolerance it passes.
    assert gate({"pr_auc": 0.40, "ece": 0.029}, {"pr_auc": 0.35, "ece": 0.02}).promoted


def test_force_promotes_a_worse_model_and_says_so():
    d = gate({"pr_auc": 0.10, "ece": 0.2}, {"pr_auc": 0.35, "ece": 0.02}, force=True)
    assert d.promoted and d.forced and d.reason.startswith("forced despite")


def test_first_model_is_promoted():
    d = decide_promotion({"pr_auc": 0.1, "ece": 0.3}, None, CFG, new_version="churn-model/1")
    assert d.promoted and "no champion yet" in d.reason


def test_a_champion_that_cannot_be_scored_blocks_promotion_unless_forced():
    d = gate({"pr_auc": 0.5, "ece": 0.01}, None)
    assert not d.promoted and "--force" in d.reason
    assert gate({"pr_auc": 0.5, "ece": 0.01}, None, force=True).promoted


def test_roc_auc_can_be_the_promotion_metric():
    cfg = PromotionConfig(metric="roc_auc")
    new = {"roc_auc": 0.70, "pr_auc": 0.9, "ece": 0.01}
    old = {"roc_auc": 0.75, "pr_auc": 0.1, "ece": 0.01}
    assert not decide_promotion(new, old, cfg, new_version="m/2", champion_version="m/1").promoted


# --------------------------------------------------------------------- MLflow registry


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings(
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        mlflow_artifacts_dir=tmp_path / "artifacts",
        models_dir=tmp_path / "models",
    )
    client, experiment = configure(settings, "test")
    return settings, client, experiment


def _log_version(client, experiment: str, bundle: Path, name: str = "churn-model") -> object:
    import lightgbm as lgb
    import mlflow

    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.lightgbm.log_model(
            lgb.Booster(model_file=str(bundle / "model.txt")),
            name="model",
            pip_requirements=["lightgbm"],
        )
        mlflow.log_artifacts(str(bundle), BUNDLE_ARTIFACT_DIR)
    number = register_version(client, name, info.model_id, run.info.run_id)
    return client.get_model_version(name, str(number))


def test_experiment_artifacts_go_to_the_configured_folder(store, tmp_path):
    _, client, experiment = store
    location = client.get_experiment(experiment).artifact_location
    assert location.startswith((tmp_path / "artifacts").as_uri())


def test_champion_alias_follows_set_champion(store, tmp_path):
    _, client, experiment = store
    assert champion_version(client, "churn-model") is None
    v1 = _log_version(client, experiment, make_bundle(tmp_path / "b1", "churn-model/1"))
    v2 = _log_version(client, experiment, make_bundle(tmp_path / "b2", "churn-model/2", seed=1))
    assert (int(v1.version), int(v2.version)) == (1, 2)
    set_champion(client, "churn-model", 1)
    assert int(champion_version(client, "churn-model").version) == 1
    set_champion(client, "churn-model", 2)
    assert int(champion_version(client, "churn-model").version) == 2


def test_champion_bundle_comes_from_the_run_when_the_models_folder_lost_it(store, tmp_path):
    settings, client, experiment = store
    version = _log_version(client, experiment, make_bundle(tmp_path / "b1", "churn-model/1"))
    bundle = load_version_bundle(client, version, settings.models_dir, "churn-model-v1")
    assert bundle.version == "churn-model/1"
    # A local folder holding another version is not mistaken for it.
    make_bundle(settings.models_dir / "churn-model-v1", "churn-model/9")
    assert load_version_bundle(client, version, settings.models_dir, "churn-model-v1").version == (
        "churn-model/1"
    )
    # The local folder, when it holds the version, is used as it is.
    local = make_bundle(settings.models_dir / "churn-model-v1", "churn-model/1")
    loaded = load_version_bundle(client, version, settings.models_dir, "churn-model-v1")
    assert loaded.path == load_bundle(local).path


def test_a_champion_without_any_bundle_is_a_clear_error(store, tmp_path):
    import lightgbm as lgb
    import mlflow

    settings, client, experiment = store
    bundle = make_bundle(tmp_path / "b1", "churn-model/1")
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.lightgbm.log_model(
            lgb.Booster(model_file=str(bundle / "model.txt")), name="model", pip_requirements=[]
        )
    number = register_version(client, "churn-model", info.model_id, run.info.run_id)
    version = client.get_model_version("churn-model", str(number))
    with pytest.raises(ChurnError, match="cannot load churn-model/1") as err:
        load_version_bundle(client, version, settings.models_dir, "churn-model-v1")
    assert "--force" in err.value.hint
