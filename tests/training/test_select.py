"""Feature selection (training/select.py): the config's exclusions by feature name, family and
basis, resolved in catalogue order, with unknown entries and empty results refused; pruning on
simulated data, where the pure-noise features are dropped and the informative ones (and a
near-copy of one, grouped with it) kept, decided on the validation period alone: test rows and
labels replaced by anything give the same pruned list and the same refitted model; and a real
training run records the selection (TrainResult, summary, MLflow, model card) and exports a
bundle that holds only the kept features.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.bundle import load_bundle
from churn.engine import LocalEngine
from churn.errors import ConfigError
from features.catalog import BASES, CATALOG, FAMILIES, MODEL_FEATURES, Feature, family_features
from tests.support.cli import isolated_settings
from training.config import RunPlan, TrainConfig, load_train_config, plan_run
from training.progress import SILENT
from training.select import (
    Selection,
    feature_groups,
    keep_features,
    prune_and_refit,
    resolve_features,
)
from training.split import PeriodRows, SplitParts, split_by_time

# ----------------------------------------------------------------------------- exclusion


def _feature(name: str, family: str, basis: str, model: bool = True) -> Feature:
    return Feature(
        name=name,
        family=family,  # type: ignore[arg-type]
        description=name,
        unit="count",
        template="{value}",
        model=model,
        basis=basis,  # type: ignore[arg-type]
    )


SMALL_CATALOG = (
    _feature("meetings_90d", "behavioural", "level"),
    _feature("meetings_vs_usual", "behavioural", "baseline"),
    _feature("sentiment_90d", "relationship", "level"),
    _feature("sentiment_vs_usual", "relationship", "baseline"),
    _feature("segment_label", "lifecycle", "level", model=False),
    _feature("tenure_months", "lifecycle", "level"),
)


def test_no_exclusion_is_every_model_feature_in_catalogue_order():
    assert resolve_features([]) == tuple(MODEL_FEATURES)


def test_exclusion_by_name_and_family_keeps_the_catalogue_order():
    name, family = MODEL_FEATURES[3], "financial"
    kept = resolve_features([name, family])
    in_family = {f.name for f in family_features(family)}
    assert kept == tuple(f for f in MODEL_FEATURES if f != name and f not in in_family)
    assert in_family and name not in kept


def test_exclusion_by_basis_drops_the_features_of_that_basis_only():
    assert resolve_features(["baseline"], SMALL_CATALOG) == (
        "meetings_90d",
        "sentiment_90d",
        "tenure_months",
    )
    assert resolve_features(["level"], SMALL_CATALOG) == ("meetings_vs_usual", "sentiment_vs_usual")
    assert resolve_features(["level", "meetings_vs_usual"], SMALL_CATALOG) == (
        "sentiment_vs_usual",
    )
    # On the real catalogue: a basis drops exactly its model features.
    for basis in BASES:
        of_basis = {f.name for f in CATALOG if f.basis == basis}
        if of_basis >= set(MODEL_FEATURES):
            continue  # every feature: refused, below
        assert set(resolve_features([basis])) == set(MODEL_FEATURES) - of_basis


@pytest.mark.parametrize(
    ("exclude", "catalog"),
    [(list(BASES), None), (list(FAMILIES), None), (["level", "baseline"], SMALL_CATALOG)],
)
def test_exclusions_that_leave_no_feature_are_refused(exclude, catalog):
    with pytest.raises(ConfigError, match="leaves the model no feature") as caught:
        resolve_features(exclude, catalog)
    assert "baseline" in str(caught.value) and "behavioural" in str(caught.value)


@pytest.mark.parametrize(
    "entry", ["meetigns_90d", "segment_label", "financials", "Level", "nonsense"]
)
def test_an_unknown_entry_is_refused_naming_it_and_the_valid_kinds(entry):
    with pytest.raises(ConfigError) as caught:
        resolve_features(["meetings_90d", entry], SMALL_CATALOG)
    message = str(caught.value)
    assert f"unknown entry {entry!r}" in message
    # A descriptive (non-model) feature is not an entry either.
    for kind in ("feature's name", "family", "basis", *FAMILIES, *BASES):
        assert kind in message
    assert caught.value.hint


def test_a_near_miss_is_answered_with_the_entry_meant():
    with pytest.raises(ConfigError, match="did you mean 'meetings_90d'"):
        resolve_features(["meetigns_90d"], SMALL_CATALOG)


def test_the_config_file_refuses_a_bad_entry_and_plan_run_applies_good_ones(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("features:\n  exclude: [financial, no_such_thing]\n")
    with pytest.raises(ConfigError, match=r"features\.exclude.*'no_such_thing'") as caught:
        load_train_config(bad)
    assert str(bad) in str(caught.value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("features:\n  exclude: [level, baseline]\n")
    with pytest.raises(ConfigError, match="leaves the model no feature") as caught:
        load_train_config(empty)
    assert str(caught.value).count("features.exclude") == 1, caught.value
    good = tmp_path / "good.yaml"
    good.write_text(f"features:\n  exclude: [financial, {MODEL_FEATURES[0]}]\n")
    plan = plan_run(isolated_settings(tmp_path / "store"), config_path=good)
    assert plan.features == resolve_features(["financial", MODEL_FEATURES[0]])
    shipped = load_train_config(Path(__file__).parents[2] / "configs" / "train.yaml")
    assert shipped.features.exclude == [] and not shipped.features.prune.enabled


# --------------------------------------------------------------------- simulated pruning

INFORMATIVE = ["signal_strong", "signal_copy", "signal_medium", "signal_step"]
NOISE = ["noise_1", "noise_2", "noise_3", "noise_4", "noise_5", "noise_constant"]
SIM_FEATURES = [
    "noise_1",
    "signal_strong",
    "noise_2",
    "signal_copy",
    "noise_3",
    "signal_medium",
    "noise_4",
    "signal_step",
    "noise_5",
    "noise_constant",
]
SIM_CONFIG = {
    "split": {"test_months": 4, "validation_months": 4, "gap_days": 0, "min_train_months": 6},
    "lightgbm": {
        "num_boost_round": 400,
        "early_stopping_rounds": 30,
        "params": {"learning_rate": 0.1, "num_leaves": 4, "min_data_in_leaf": 40},
    },
    # Three standard errors: over seeds 1 to 20 of this simulation, no noise feature was kept
    # and no signal dropped (at two, a used noise feature clears the bar about 1 time in 40:
    # two seeds in twenty kept one).
    "features": {"prune": {"enabled": True, "repeats": 4, "standard_errors": 3}},
}


def _simulated_frame(seed: int, accounts: int = 400, months: int = 18) -> pd.DataFrame:
    """Monthly rows of ``accounts`` accounts: churn depends on three signals (one of them
    also present as a near-copy) and not at all on five noise columns and a constant."""
    rng = np.random.default_rng(seed)
    n = accounts * months
    strong, medium, step = rng.normal(size=(3, n))
    logit = -2.2 + 1.4 * strong + 0.9 * medium + 1.5 * (step > 0.5)
    frame = pd.DataFrame(
        {
            "account_id": np.tile([f"A{i:04d}" for i in range(accounts)], months),
            "as_of": np.repeat(pd.date_range("2024-01-31", periods=months, freq="ME"), accounts),
            "churned": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float),
            "signal_strong": strong,
            "signal_copy": strong + rng.normal(scale=0.05, size=n),
            "signal_medium": medium,
            "signal_step": step,
            "noise_constant": np.full(n, 3.0),
        }
    )
    for name in NOISE[:-1]:
        frame[name] = rng.normal(size=n)
    frame["label_window_end"] = frame["as_of"] + pd.Timedelta(days=1)
    return frame


def _simulated_plan(base: RunPlan, seed: int, **prune: object) -> RunPlan:
    data = json.loads(json.dumps(SIM_CONFIG))
    data["features"]["prune"].update(prune)
    return dataclasses.replace(
        base, config=TrainConfig.model_validate(data), seed=seed, features=tuple(SIM_FEATURES)
    )


@pytest.fixture(scope="module")
def base_plan(tmp_path_factory) -> RunPlan:
    return plan_run(isolated_settings(tmp_path_factory.mktemp("store")))


def _parts(frame: pd.DataFrame, plan: RunPlan) -> SplitParts:
    return split_by_time(frame, plan.config.split, 1, plan.features)


def _pruned(plan: RunPlan, parts: SplitParts):
    from training.fit import fit_model

    engine = LocalEngine()
    model = fit_model(engine, None, parts, plan)  # type: ignore[arg-type]
    return model, *prune_and_refit(engine, None, parts, plan, model, SILENT)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pruning_drops_the_noise_and_keeps_the_signals(base_plan, seed):
    plan = _simulated_plan(base_plan, seed)
    parts = _parts(_simulated_frame(seed), plan)
    first, model, kept_parts, selection = _pruned(plan, parts)
    assert set(selection.pruned) == set(NOISE)
    assert selection.kept == tuple(f for f in SIM_FEATURES if f in INFORMATIVE)
    # The near-copy moves with its original: one group, one importance, both kept.
    by_name = {i.feature: i for i in selection.importances}
    assert set(by_name["signal_copy"].group) == {"signal_strong", "signal_copy"}
    assert by_name["signal_copy"].importance == by_name["signal_strong"].importance
    assert by_name["noise_constant"].importance == 0 and by_name["noise_constant"].spread == 0
    for name in INFORMATIVE:
        assert by_name[name].importance > 3 * by_name[name].standard_error > 0
    assert [i.importance for i in selection.importances] == sorted(
        (i.importance for i in selection.importances), reverse=True
    )
    # The refit and the parts the rest of the run uses hold the kept features only.
    assert model.booster.feature_name() == list(selection.kept)
    assert kept_parts.features == selection.kept
    for period in ("train", "validation", "test"):
        rows = getattr(kept_parts, period)
        assert rows.x.shape == (len(getattr(parts, period).y), len(selection.kept))
    assert model.params == first.params and model.model_text != first.model_text
    record = selection.to_dict()
    assert record["prune"]["period"] == "validation" and record["prune"]["standard_errors"] == 3
    assert record["validation"]["rows"] == len(parts.validation.y)


def test_the_test_period_plays_no_part_in_the_pruning(base_plan):
    plan = _simulated_plan(base_plan, 5)
    parts = _parts(_simulated_frame(5), plan)
    _, model, _, selection = _pruned(plan, parts)
    rng = np.random.default_rng(99)
    test = parts.test
    scrambled = PeriodRows(
        test.frame.assign(churned=1 - test.frame["churned"]),
        rng.normal(scale=5, size=test.x.shape),
        1 - test.y,
    )
    _, model_again, _, again = _pruned(plan, dataclasses.replace(parts, test=scrambled))
    assert again.pruned == selection.pruned and again.importances == selection.importances
    assert model_again.model_text == model.model_text
    # Changing the validation period does change it: the check above can fail.
    shifted = PeriodRows(parts.validation.frame, parts.validation.x[:, ::-1], parts.validation.y)
    _, _, _, other = _pruned(plan, dataclasses.replace(parts, validation=shifted))
    assert other.importances != selection.importances


def test_pruning_off_returns_the_first_model_and_parts(base_plan):
    plan = _simulated_plan(base_plan, 1, enabled=False)
    parts = _parts(_simulated_frame(1), plan)
    first, model, same_parts, selection = _pruned(plan, parts)
    assert model is first and same_parts is parts
    assert selection.pruned == () and selection.kept == tuple(SIM_FEATURES)
    assert selection.to_dict()["importances"] == [] and not selection.enabled


def test_nothing_above_min_gain_keeps_every_feature_with_a_note(base_plan):
    plan = _simulated_plan(base_plan, 1, min_gain=1.0)
    parts = _parts(_simulated_frame(1), plan)
    first, model, _, selection = _pruned(plan, parts)
    assert selection.pruned == () and selection.kept == tuple(SIM_FEATURES)
    assert "all were kept" in selection.note and model is first


def test_a_refit_worse_on_validation_is_undone_and_every_feature_stays(base_plan):
    # A bar above two of the signals' importances drops them with the noise; the refit
    # without them loses on the validation period, so the first model stays.
    plan = _simulated_plan(base_plan, 1, min_gain=0.1, standard_errors=0)
    parts = _parts(_simulated_frame(1), plan)
    first, model, same_parts, selection = _pruned(plan, parts)
    assert model is first and same_parts is parts
    assert selection.pruned == () and selection.kept == tuple(SIM_FEATURES)
    assert {"signal_step", "signal_medium"} <= set(selection.validation["refit_dropped"])
    assert selection.validation["refit_log_loss"] > selection.validation["log_loss"]
    assert "higher validation log loss" in selection.note


def test_feature_groups_join_correlated_columns_transitively():
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    b = a + rng.normal(scale=0.1, size=500)
    c = b + rng.normal(scale=0.1, size=500)
    x = np.column_stack([rng.normal(size=500), a, np.ones(500), c, b])
    x[::7, 1] = np.nan  # pairwise-complete rows
    assert feature_groups(x, 0.95) == [[0], [1, 3, 4], [2]]
    assert feature_groups(x, None) == [[0], [1], [2], [3], [4]]


def test_keep_features_takes_the_columns_of_the_kept_features(base_plan):
    plan = _simulated_plan(base_plan, 1)
    parts = _parts(_simulated_frame(1), plan)
    kept = keep_features(parts, ["signal_step", "noise_1"])
    assert kept.features == ("signal_step", "noise_1")
    assert np.array_equal(kept.test.x, parts.test.frame[["signal_step", "noise_1"]].to_numpy())


# --------------------------------------------------------------------- a real training run

# standard_errors 0: on this small demo (about 40 validation churners) no single feature's
# rise clears two standard errors, and pruning keeps everything (tested above); with 0 the
# rule is "any rise of the validation log loss", which drops the features that add none.
PRUNE_RUN_CONFIG = """
features:
  exclude: [lifecycle]
  prune:
    enabled: true
    standard_errors: 0
"""


@pytest.mark.slow
def test_a_pruned_run_is_recorded_and_its_bundle_holds_only_the_kept_features(
    demo_source, tmp_path
):
    import mlflow
    from mlflow import MlflowClient

    from training.pipeline import train

    settings = isolated_settings(tmp_path / "store")
    config = tmp_path / "train.yaml"
    config.write_text(PRUNE_RUN_CONFIG)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = train(str(demo_source), settings, config_path=config, progress=False)
    planned = resolve_features(["lifecycle"])
    assert result.pruned and set(result.pruned) < set(planned)
    kept = [f for f in planned if f not in result.pruned]
    assert result.feature_names == kept
    summary = result.summary()["run"]
    assert summary["pruned"] == result.pruned and summary["features"] == len(kept)

    bundle = load_bundle(result.bundle_path)
    assert bundle.feature_names == kept
    catalog = json.loads((result.bundle_path / "catalog.json").read_text())
    assert [r["name"] for r in catalog] == kept
    card = (result.bundle_path / "model_card.md").read_text()
    assert f"uses {len(kept)} of the catalogue's {len(MODEL_FEATURES)} model inputs" in card
    assert "pruned on the validation period" in card and result.pruned[0] in card

    mlflow.set_tracking_uri(settings.tracking_uri())
    client = MlflowClient(settings.tracking_uri())
    run = client.get_run(result.run_id)
    params = run.data.params
    assert params["features.pruned"] == str(len(result.pruned))
    assert params["features.count"] == str(len(kept))
    assert params["features.exclude"] == "lifecycle" and params["features.prune"] == "True"
    path = mlflow.artifacts.download_artifacts(
        run_id=result.run_id, artifact_path="feature_selection.json"
    )
    record = json.loads(Path(path).read_text())
    assert record["kept"] == kept and record["pruned"] == result.pruned
    assert record["excluded"] == [f.name for f in family_features("lifecycle") if f.model]
    scored = {r["feature"]: r for r in record["importances"]}
    assert set(scored) == set(planned)

    def clears(row: dict) -> bool:
        return row["importance"] > 0

    assert not any(clears(scored[f]) for f in result.pruned)
    assert all(clears(scored[f]) and scored[f]["spread"] >= 0 for f in kept)
    info = mlflow.models.get_model_info("models:/churn-model@champion")
    assert info.signature is not None
    assert [c.name for c in info.signature.inputs.inputs] == kept


def test_selection_card_line_without_pruning_names_the_exclusions():
    line = Selection(excluded=("a", "b"), exclude_entries=("financial",), kept=("c",)).card_line()
    assert line == (
        "The model uses 1 of the catalogue's 3 model inputs; excluded by the training config "
        "(financial): 2."
    )


def test_the_clustered_standard_error_counts_an_account_once_however_many_rows_it_has():
    from training.select import clustered_standard_error

    values = np.random.default_rng(4).normal(size=50)
    alone = clustered_standard_error(values, np.arange(50))
    assert alone == pytest.approx(values.std(ddof=1) / np.sqrt(50))
    # Three identical rows per account: no more information than one row each.
    tripled = clustered_standard_error(np.repeat(values, 3), np.repeat(np.arange(50), 3))
    assert tripled == pytest.approx(alone)
    assert clustered_standard_error(values, np.zeros(50)) == 0.0


def test_a_run_that_neither_excludes_nor_prunes_adds_no_card_line():
    assert Selection(excluded=(), exclude_entries=(), kept=("a", "b")).card_lines() == []
    pruned = Selection(
        excluded=(),
        exclude_entries=(),
        kept=("a",),
        pruned=("b",),
        enabled=True,
        settings={"min_gain": 0.0},
    )
    (line,) = pruned.card_lines()
    assert line.startswith("The model uses 1 of the catalogue's 2 model inputs; pruned on the")
    assert ": b. Early stopping, calibration and this selection all used the validation" in line


@pytest.mark.slow
def test_pruning_on_the_dask_engine_refits_on_the_cluster_with_the_kept_features(
    demo_source, tmp_path
):
    from churn.engine import DaskEngine, dask_client
    from training.fit import fit_model
    from training.frame import build_training_frame, load_source

    settings = isolated_settings(tmp_path)
    plan = plan_run(settings)
    config = plan.config.model_copy(
        update={
            "features": TrainConfig.model_validate(
                {"features": {"prune": {"enabled": True, "standard_errors": 0}}}
            ).features
        }
    )
    plan = dataclasses.replace(plan, config=config)
    with dask_client(n_workers=2, threads_per_worker=1) as client:
        engine = DaskEngine(client)
        data = build_training_frame(load_source(str(demo_source), settings, plan), plan, engine)
        parts = split_by_time(
            data.frame, plan.config.split, plan.snapshots.horizon_days, plan.features
        )
        first = fit_model(engine, data.snapshots, parts, plan)
        model, kept_parts, selection = prune_and_refit(
            engine, data.snapshots, parts, plan, first, SILENT
        )
    assert selection.pruned and kept_parts.features == selection.kept
    assert model.booster.feature_name() == list(selection.kept)
    assert model.model_text != first.model_text
    assert model.booster.predict(kept_parts.test.x).shape == (len(parts.test.y),)
