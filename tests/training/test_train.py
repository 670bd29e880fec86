"""End-to-end training on small generated demo data: the bundle reproduces its logged test
predictions, a second run gives the same metrics, the promotion gate refuses a worse model
(and --force overrides it), a source with only accounts and invoices trains in inactivity
mode and names the absent feature families, and MLflow holds the run.

Every run uses its own SQLite tracking store, artifact folder and models folder under
pytest's tmp_path (never the project's mlruns/ or models/).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.bundle import CHAMPION_DIR, TEST_PREDICTIONS_FILE, load_bundle
from churn.errors import ChurnError, ConfigError
from churn.settings import Settings
from tests.support.cli import isolated_env, isolated_settings, run_churn
from training.config import load_train_config
from training.evaluate import METRICS, feature_matrix
from training.pipeline import TrainResult, train

pytestmark = pytest.mark.slow

BAD_CONFIG = """
lightgbm:
  num_boost_round: 30
  early_stopping_rounds: 5
  params:
    num_leaves: 4
    min_data_in_leaf: 100000000   # no split is possible: a constant model
"""


store_settings = isolated_settings


@pytest.fixture(scope="module")
def first_run(demo_source, tmp_path_factory) -> tuple[TrainResult, Settings, dict[str, object]]:
    """One training run into a fresh store, and the champion state right after it."""
    settings = store_settings(tmp_path_factory.mktemp("store"))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = train(str(demo_source), settings, progress=False)
    link = Path(settings.models_dir) / CHAMPION_DIR
    state = {"champion_target": os.readlink(link), "champion_version": load_bundle(link).version}
    return result, settings, state


def test_first_model_becomes_champion_with_a_bundle_under_models(first_run):
    result, settings, state = first_run
    assert result.promotion.promoted and "no champion yet" in result.promotion.reason
    assert result.model_version == "churn-model/1"
    assert result.bundle_path == Path(settings.models_dir) / "churn-model-v1"
    assert state == {"champion_target": "churn-model-v1", "champion_version": "churn-model/1"}
    assert set(result.metrics) == {"model", "health_score", "logistic"}
    for scores in result.metrics.values():
        assert set(scores) == set(METRICS)


def test_bundle_loads_and_reproduces_the_logged_test_predictions_exactly(first_run):
    import mlflow

    result, settings, _ = first_run
    mlflow.set_tracking_uri(settings.tracking_uri())
    bundle = load_bundle(result.bundle_path)
    stored = pd.read_parquet(result.bundle_path / TEST_PREDICTIONS_FILE)
    x = feature_matrix(result.test_frame, bundle.feature_names)
    assert len(stored) == result.split.periods["test"].rows
    assert np.array_equal(bundle.predict(x), stored["churn_probability"].to_numpy())
    assert stored["label"].tolist() == result.test_frame["churned"].astype(int).tolist()
    # The copy logged with the MLflow run is the same file.
    logged = mlflow.artifacts.download_artifacts(
        run_id=result.run_id, artifact_path=f"bundle/{TEST_PREDICTIONS_FILE}"
    )
    pd.testing.assert_frame_equal(pd.read_parquet(logged), stored)
    meta = bundle.metadata
    assert meta["model_version"] == "churn-model/1" and meta["mlflow_run_id"] == result.run_id
    assert meta["snapshot_hash"] == result.snapshot_hash
    assert 0 < meta["base_rate"] < 1
    assert meta["periods"]["test"]["start"] == str(result.split.periods["test"].start.date())


def test_mlflow_run_holds_params_lineage_metrics_plots_and_the_registered_model(first_run):
    import mlflow
    from mlflow import MlflowClient

    result, settings, _ = first_run
    mlflow.set_tracking_uri(settings.tracking_uri())
    client = MlflowClient(settings.tracking_uri())
    run = client.get_run(result.run_id)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["data.snapshot_hash"] == result.snapshot_hash
    assert params["data.test_rows"] == str(result.split.periods["test"].rows)
    assert params["lgb.deterministic"] == "True" and params["promotion"] == "promoted"
    assert metrics["model.pr_auc"] == pytest.approx(result.metrics["model"]["pr_auc"])
    assert metrics["health_score.roc_auc"] == pytest.approx(
        result.metrics["health_score"]["roc_auc"]
    )
    assert tags["promotion.reason"] == result.promotion.reason
    points = json.loads((result.bundle_path / "metadata.json").read_text())["operating_points"]
    assert metrics["operating_points.act_now"] == pytest.approx(points["act_now"])
    assert metrics["operating_points.watch.test.recall"] == pytest.approx(
        points["figures"]["watch"]["test"]["recall"]
    )
    assert "operating_points.json" in {
        Path(a.path).name for a in client.list_artifacts(run.info.run_id)
    }
    plots = {Path(a.path).name for a in client.list_artifacts(result.run_id, "plots")}
    assert plots == {
        "calibration_curve.png",
        "cumulative_gains_lift.png",
        "shap_summary.png",
        "feature_importance.png",
        "health_vs_probability.png",
    }
    info = mlflow.models.get_model_info("models:/churn-model@champion")
    assert info.signature is not None and info.saved_input_example_info is not None
    assert [c.name for c in info.signature.inputs.inputs] == result.feature_names
    # Artifacts live in the configured folder, not in the working directory.
    assert Path(settings.mlflow_artifacts_dir, "churn").is_dir()


def test_every_test_metric_has_an_interval_in_the_summary_mlflow_and_the_card(first_run):
    from mlflow import MlflowClient

    result, settings, _ = first_run
    note = result.summary()["run"]["intervals"]
    assert note["samples"] == 200 and note["level"] == 0.95
    assert note["accounts"] == result.test_frame["account_id"].nunique()
    intervals = result.summary()["intervals"]
    assert set(intervals) == set(result.metrics) == {"model", "health_score", "logistic"}
    for scorer, metrics in intervals.items():
        assert set(metrics) == set(METRICS), scorer
        for metric, (low, high) in metrics.items():
            # A percentile interval of a metric's resampled values; it holds a typical value,
            # though not always the whole period's (the ECE's resampled values run higher).
            assert low < high, (scorer, metric)
            if metric in ("roc_auc", "pr_auc", "recall_top_decile", "lift_top_decile"):
                assert low <= result.metrics[scorer][metric] <= high, (scorer, metric)
    logged = MlflowClient(settings.tracking_uri()).get_run(result.run_id).data
    assert logged.metrics["model.roc_auc_low"] == pytest.approx(intervals["model"]["roc_auc"][0])
    assert logged.metrics["logistic.ece_high"] == pytest.approx(intervals["logistic"]["ece"][1])
    assert logged.params["bootstrap_samples"] == "200"
    card = (result.bundle_path / "model_card.md").read_text()
    low, high = intervals["model"]["pr_auc"]
    assert f"| {result.metrics['model']['pr_auc']:.3f} [{low:.3f}-{high:.3f}] |" in card
    accounts = f"{note['accounts']:,}"
    assert f"95 % bootstrap intervals by account, from 200 resamples of the {accounts} test" in card


def test_the_run_logs_the_health_rules_backtest_and_its_card_reports_it(first_run):
    from mlflow import MlflowClient

    result, settings, _ = first_run
    backtest = result.health_backtest
    assert set(backtest["current"]) >= {"roc_auc", "recall_at_equal_workload"}
    assert backtest["current"]["roc_auc"] == pytest.approx(
        result.metrics["health_score"]["roc_auc"]
    )
    client = MlflowClient(settings.tracking_uri())
    metrics = client.get_run(result.run_id).data.metrics
    assert metrics["health_backtest.current_roc_auc"] == pytest.approx(
        backtest["current"]["roc_auc"]
    )
    assert "health_backtest.suggested_roc_auc" in metrics
    assert "health_backtest.roc_auc_gain_low" in metrics
    logged = {a.path for a in client.list_artifacts(result.run_id)}
    assert "health_backtest.json" in logged
    card = (result.bundle_path / "model_card.md").read_text()
    assert "## Health rules backtest" in card


def test_second_run_on_the_same_data_gives_the_same_metrics(first_run, demo_source, tmp_path):
    """Through the command line, with --json: the last stdout line is the metrics object."""
    result, _, _ = first_run
    env = isolated_env(tmp_path)
    done = run_churn(["train", "--data", str(demo_source), "--json"], env, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    summary = json.loads(last)
    for scorer in ("model", "health_score", "logistic"):
        assert summary[scorer] == json.loads(json.dumps(result.metrics[scorer])), scorer
    assert summary["promotion"]["promoted"] is True
    assert summary["run"]["snapshot_hash"] == result.snapshot_hash
    # The intervals are seeded by the run's seed: the same run, the same intervals.
    assert summary["intervals"] == json.loads(json.dumps(result.intervals))
    # The human report went to stderr: the comparison table, the intervals and the decision.
    assert "PR AUC" in done.stderr and "promoted to champion" in done.stderr
    low, high = result.intervals["model"]["roc_auc"]
    point = result.metrics["model"]["roc_auc"]
    assert f"{point:.3f}" in done.stderr and f"[{low:.3f}-{high:.3f}]" in done.stderr
    assert "Second line of each figure: 95 % bootstrap intervals by account" in done.stderr


def test_promotion_refuses_a_worse_model_and_force_overrides(first_run, demo_source, tmp_path):
    from mlflow import MlflowClient

    _, settings, _ = first_run
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_CONFIG)
    client = MlflowClient(settings.tracking_uri())
    link = Path(settings.models_dir) / CHAMPION_DIR
    before = int(client.get_model_version_by_alias("churn-model", "champion").version)
    before_link = os.readlink(link)
    # Someone cleaned models/: the champion's bundle comes back from its MLflow run.
    shutil.rmtree(link.parent / before_link)
    link.unlink()

    worse = train(str(demo_source), settings, config_path=bad, progress=False)
    assert not worse.promotion.promoted
    assert "lower pr_auc" in worse.promotion.reason
    assert worse.metrics["model"]["roc_auc"] == pytest.approx(0.5)
    assert int(client.get_model_version_by_alias("churn-model", "champion").version) == before
    assert os.readlink(link) == before_link  # serving keeps the champion
    assert load_bundle(link).version == f"churn-model/{before}"
    assert worse.bundle_path.is_dir()  # the version is still exported, for inspection
    run = client.get_run(worse.run_id)
    assert run.data.tags["promotion.decision"] == "not promoted"

    forced = train(str(demo_source), settings, config_path=bad, force=True, progress=False)
    assert forced.promotion.promoted and forced.promotion.forced
    assert forced.promotion.reason.startswith("forced despite lower pr_auc")
    champion = int(client.get_model_version_by_alias("churn-model", "champion").version)
    assert champion == forced.registered_version
    assert load_bundle(link).version == forced.model_version


def test_a_model_of_another_label_mode_needs_force_to_become_champion(first_run, demo_source):
    from mlflow import MlflowClient

    _, settings, _ = first_run
    client = MlflowClient(settings.tracking_uri())
    before = client.get_model_version_by_alias("churn-model", "champion").version
    other = train(str(demo_source), settings, label_mode="inactivity", progress=False)
    assert not other.promotion.promoted
    reason = other.promotion.reason
    assert "use --force" in reason and "events churn within 90 days" in reason
    assert "this run inactivity churn" in reason
    assert client.get_model_version_by_alias("churn-model", "champion").version == before


def test_an_operator_rolls_the_champion_back_to_an_earlier_version(first_run, demo_source):
    from mlflow import MlflowClient

    from training.registry import promote_version

    first, settings, _ = first_run
    client = MlflowClient(settings.tracking_uri())
    latest = train(str(demo_source), settings, force=True, progress=False)
    assert latest.registered_version != first.registered_version

    before, current, link = promote_version(
        client, "churn-model", first.registered_version, settings.models_dir
    )
    assert before == str(latest.registered_version)
    assert str(current.version) == str(first.registered_version)
    champion = client.get_model_version_by_alias("churn-model", "champion")
    assert str(champion.version) == str(first.registered_version)
    assert load_bundle(link).version == first.model_version  # what serving loads next

    with pytest.raises(ChurnError, match="no version 999 of churn-model"):
        promote_version(client, "churn-model", 999, settings.models_dir)
    assert load_bundle(link).version == first.model_version


def test_accounts_and_invoices_only_train_in_inactivity_mode_and_name_absent_families(
    demo_source, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    source = tmp_path / "billing_only"
    source.mkdir()
    for table in ("accounts", "invoices"):
        shutil.copy(demo_source / f"{table}.csv", source / f"{table}.csv")
    settings = store_settings(tmp_path / "store")
    with pytest.raises(ChurnError, match="no churn_events") as err:
        train(str(source), settings, progress=False)
    assert "--label-mode inactivity" in err.value.hint

    result = train(str(source), settings, label_mode="inactivity", trials=2, progress=False)
    assert set(result.absent_families) == {"behavioural", "relationship", "satisfaction"}
    assert result.absent_families["satisfaction"] == ["surveys", "tickets"]
    bundle = load_bundle(result.bundle_path)
    assert bundle.metadata["label_mode"] == "inactivity"
    assert bundle.metadata["absent_families"] == result.absent_families
    card = (result.bundle_path / "model_card.md").read_text()
    assert "Feature families with absent features" in card and "2 Optuna trials" in card
    assert result.summary()["run"]["absent_families"] == result.absent_families


def test_shipped_config_is_valid_and_bad_configs_name_the_key(tmp_path):
    cfg = load_train_config(Path(__file__).parents[2] / "configs" / "train.yaml")
    assert cfg.search.trials == 0 and cfg.calibration.method == "isotonic"
    params = cfg.lgb_params(seed=7)
    assert params["seed"] == 7 and params["deterministic"] is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("split:\n  test_months: 0\n")
    with pytest.raises(ConfigError, match="split.test_months"):
        load_train_config(bad)
    bad.write_text("lightgbm:\n  params:\n    seed: 3\n")
    with pytest.raises(ConfigError, match="set by the trainer"):
        load_train_config(bad)
    bad.write_text("calibrate: {}\n")
    with pytest.raises(ConfigError, match="calibrate: unknown key"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")


def test_the_train_report_states_the_operating_points_and_the_health_backtest(first_run):
    from rich.console import Console

    from churn_cli.train import _report

    result, _, _ = first_run
    out = Console(record=True, width=400)
    _report(result, out)
    text = out.export_text()
    points = json.loads((result.bundle_path / "metadata.json").read_text())["operating_points"]
    act = points["figures"]["act_now"]
    assert (
        f"priority act now: churn probability >= {points['act_now']:.1%} catches "
        f"{act['validation']['recall']:.0%} of the validation churners at "
        f"{act['validation']['precision']:.0%} precision (test: {act['test']['recall']:.0%} at "
        f"{act['test']['precision']:.0%})"
    ) in text
    assert f"priority watch: churn probability >= {points['watch']:.1%}" in text
    backtest = result.health_backtest
    assert (
        f"health rules: test ROC AUC {backtest['current']['roc_auc']:.3f}; suggested points "
        f"{backtest['suggested']['roc_auc']:.3f}"
    ) in text
