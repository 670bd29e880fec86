"""The training pipeline's steps run on their own, with no tracking store: on a small generated
demo, the frame, split, fit, calibration and evaluation, and export steps give a bundle that
loads and reproduces its test predictions, with MLflow unimportable the whole time; the local
engine's fit is the in-process LightGBM fit, row for row.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from churn.bundle import METADATA_FILE, TEST_PREDICTIONS_FILE, load_bundle
from churn.engine import LocalEngine
from churn.settings import Settings
from tests.support.cli import isolated_settings
from training.config import RunPlan, plan_run
from training.evaluate import METRICS, SCORERS, Evaluation, RunOutputs, calibrate_and_evaluate
from training.export import export_bundle
from training.fit import FittedModel, fit_booster, fit_model
from training.frame import TrainingFrame, build_training_frame, data_lineage, load_source
from training.registry import Candidate, Promotion
from training.split import SplitParts, split_by_time


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    # Its MLflow store is one the steps must never open: a test checks it is never created.
    return isolated_settings(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def steps(
    demo_source, settings
) -> tuple[RunPlan, TrainingFrame, SplitParts, FittedModel, Evaluation]:
    """The steps up to the evaluation, with MLflow unimportable."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
        engine = LocalEngine()
        plan = plan_run(settings)
        data = build_training_frame(load_source(str(demo_source), settings, plan), plan, engine)
        parts = split_by_time(
            data.frame, plan.config.split, plan.snapshots.horizon_days, plan.features
        )
        model = fit_model(engine, data.snapshots, parts, plan)
        report = calibrate_and_evaluate(model, parts, plan.config, plan.seed)
    return plan, data, parts, model, report


def test_split_gives_each_period_its_rows_inputs_and_labels(steps):
    plan, data, parts, _, _ = steps
    periods = parts.split.periods
    for name in ("train", "validation", "test"):
        rows = getattr(parts, name)
        assert len(rows.frame) == periods[name].rows
        assert rows.x.shape == (periods[name].rows, len(plan.features))
        assert rows.y.sum() == periods[name].positives
    # The periods follow each other in time.
    assert periods["train"].end < periods["validation"].start < periods["test"].start
    assert len(data.frame) >= sum(p.rows for p in periods.values())


def test_local_engine_fit_is_the_in_process_lightgbm_fit(steps):
    plan, _, parts, model, _ = steps
    again = fit_booster(
        model.params,
        (parts.train.x, parts.train.y),
        (parts.validation.x, parts.validation.y),
        list(parts.features),
        plan.config.lightgbm,
    )
    assert again.model_to_string(num_iteration=model.best_iteration) == model.model_text
    assert 1 <= model.best_iteration <= plan.config.lightgbm.num_boost_round
    assert model.search_score is None  # the shipped config searches nothing


def test_evaluation_scores_the_model_and_both_baselines_on_the_test_rows(steps):
    _, _, parts, _, report = steps
    assert set(report.metrics) == set(SCORERS)
    for scorer in SCORERS:
        assert set(report.metrics[scorer]) == set(METRICS)
        assert len(report.scores[scorer]) == len(parts.test.y)
    assert report.metrics["model"]["roc_auc"] > report.metrics["health_score"]["roc_auc"]
    probability = report.test_frame["churn_probability"].to_numpy()
    assert np.array_equal(probability, report.scores["model"])
    assert ((probability >= 0) & (probability <= 1)).all()
    # One SHAP column per feature, and the bias.
    assert report.contributions.shape == (len(parts.test.y), len(parts.features) + 1)


def test_operating_points_are_chosen_on_validation_and_measured_on_both_periods(steps):
    plan, _, parts, _, report = steps
    points = report.operating_points
    assert points.source == "validation" and 0 < points.watch <= points.act_now < 1
    target = plan.config.operating_points
    validation = {name: points.figures[name]["validation"] for name in ("act_now", "watch")}
    assert validation["act_now"]["flagged"] >= target.min_rows
    assert validation["act_now"]["recall"] >= target.act_now_recall
    assert validation["watch"]["recall"] >= target.watch_recall
    watch = points.figures["watch"]
    test = report.test_frame["churn_probability"].to_numpy()
    flagged = test >= points.act_now
    assert points.figures["act_now"]["test"]["workload"] == pytest.approx(flagged.mean())
    caught = parts.test.y[flagged].sum() / parts.test.y.sum()
    assert points.figures["act_now"]["test"]["recall"] == pytest.approx(caught)
    assert watch["test"]["recall"] >= points.figures["act_now"]["test"]["recall"]


def test_export_writes_a_bundle_that_reproduces_its_test_predictions_without_mlflow(
    steps, settings, tmp_path, monkeypatch
):
    plan, data, parts, model, report = steps
    monkeypatch.setitem(sys.modules, "mlflow", None)
    candidate = Candidate(
        registered_model="churn-model",
        version=7,
        run_id="no-run",
        trained_at="2026-01-01T00:00:00+00:00",
        promotion=Promotion(promoted=True, reason="a test", new_version="churn-model/7"),
    )
    lineage = data_lineage(data, parts.split)
    folder = export_bundle(
        tmp_path, candidate, RunOutputs(plan, data, lineage, parts, model, report)
    )

    assert folder == tmp_path / "churn-model-v7"
    bundle = load_bundle(folder)
    assert bundle.version == "churn-model/7"
    assert np.array_equal(bundle.predict(parts.test.x), report.scores["model"])
    stored = json.loads((folder / METADATA_FILE).read_text())
    assert stored["snapshot_hash"] == data.snapshot_hash == lineage["snapshot_hash"]
    assert 0 < stored["base_rate"] < 1
    assert stored["best_iteration"] == model.best_iteration
    assert (folder / TEST_PREDICTIONS_FILE).is_file()
    assert "promoted to champion: a test" in (folder / "model_card.md").read_text()
    chosen, stored_points = report.operating_points, bundle.operating_points
    assert (stored_points.act_now, stored_points.watch) == (chosen.act_now, chosen.watch)
    assert stored_points.rule == chosen.rule and stored_points.source == "validation"
    assert "## Operating points" in (folder / "model_card.md").read_text()
    # No step opened the tracking store.
    assert not Path(settings.tracking_uri().removeprefix("sqlite:///")).exists()
