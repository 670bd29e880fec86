"""Explanations: impacts in probability points that add up, with the base rate, to the
probability; readable reasons; risk bands; bundles whose explanations cannot be trusted are
refused before they serve."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churn.bundle import METADATA_FILE, MODEL_FILE, load_bundle, write_manifest
from churn.errors import BundleIntegrityError
from churn.model_terms import risk_bands
from features.catalog import MODEL_FEATURES, feature_sentence
from serving.explain import Explainer, format_pts, listed, reasons_for_row, top_factors
from tests.support.bundle_factory import make_bundle, synthetic_features

CALIBRATIONS = ("isotonic", "platt", "none")


@pytest.fixture(scope="module")
def explainers(tmp_path_factory) -> dict[str, Explainer]:
    root = tmp_path_factory.mktemp("bundles")
    return {
        kind: Explainer(load_bundle(make_bundle(root / kind, f"v-{kind}", calibration=kind)))
        for kind in CALIBRATIONS
    }


values = st.one_of(
    st.just(float("nan")),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.integers(0, 400).map(float),
)
rows = st.lists(values, min_size=len(MODEL_FEATURES), max_size=len(MODEL_FEATURES))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(rows, min_size=1, max_size=8), kind=st.sampled_from(CALIBRATIONS))
def test_impacts_add_up_to_the_probability_through_the_base_rate(explainers, batch, kind):
    explainer = explainers[kind]
    exp = explainer.explain(np.array(batch, dtype=float))
    added = exp.base_rate + exp.impacts_pts().sum(axis=1) / 100
    assert np.allclose(added, exp.probability, atol=1e-6, rtol=0)
    assert np.all((exp.probability >= 0) & (exp.probability <= 1))


def test_calibration_keeps_the_sign_of_every_contribution(explainers):
    explainer = explainers["isotonic"]
    x = synthetic_features(200, seed=7)
    exp = explainer.explain(x)
    phi = explainer.bundle.booster.predict(x, pred_contrib=True)[:, :-1]
    nonzero = np.abs(exp.impacts) > 1e-12
    assert np.all(np.sign(exp.impacts[nonzero]) == np.sign(phi[nonzero]))


def test_an_average_account_sits_at_the_base_rate_with_no_impacts(explainers):
    explainer = explainers["platt"]
    exp = explainer.explain(explainer.empty_rows(1))
    # All features unknown is not "average" in general; the bias alone is:
    raw = explainer.bias
    expected = explainer.calibration.apply(np.array([1 / (1 + np.exp(-raw))]))[0]
    assert explainer.base_rate == pytest.approx(expected)
    assert exp.base_rate == explainer.base_rate


def test_top_factors_are_the_largest_impacts_and_name_the_value(explainers):
    explainer = explainers["isotonic"]
    x = np.nanmedian(synthetic_features(400, seed=1), axis=0)[None, :]
    x[0, explainer.index["days_since_last_contact"]] = 170
    exp = explainer.explain(x)
    cols = top_factors(exp, 5)[0]
    sizes = np.abs(exp.impacts[0, cols])
    assert np.all(np.diff(sizes) <= 0)
    assert np.abs(exp.impacts[0]).max() == sizes[0]
    reasons = reasons_for_row(exp, 0, cols, explainer.features)
    top = reasons[0]
    assert top["feature"] == "days_since_last_contact"
    assert top["value"] == 170
    assert "170" in top["sentence"]
    assert top["sentence"].startswith("No contact for 170 days (+")
    for reason in reasons:
        assert reason["sentence"].startswith(feature_sentence(reason["feature"], reason["value"]))
        assert reason["sentence"].endswith(f"({format_pts(reason['impact_pts'])})")


def test_an_unknown_value_is_never_a_reason(explainers):
    explainer = explainers["isotonic"]
    exp = explainer.explain(explainer.empty_rows(1))
    assert reasons_for_row(exp, 0, top_factors(exp, 3)[0], explainer.features) == []
    assert not listed(exp, top_factors(exp, 3)).any()


sparse_rows = st.lists(
    st.one_of(st.just(float("nan")), st.integers(0, 200).map(float)),
    min_size=len(MODEL_FEATURES),
    max_size=len(MODEL_FEATURES),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(sparse_rows, min_size=1, max_size=6), k=st.integers(0, 12))
def test_reasons_are_the_largest_known_impacts_and_unknowns_go_to_the_rest(explainers, batch, k):
    explainer = explainers["isotonic"]
    x = np.array(batch, dtype=float)
    exp = explainer.explain(x)
    columns = top_factors(exp, k)
    for i in range(len(x)):
        reasons = reasons_for_row(exp, i, columns[i], explainer.features, explainer.typical)
        known = np.flatnonzero(~np.isnan(x[i]))
        assert len(reasons) == min(k, len(known))
        assert all(r["value"] is not None and "unknown" not in r["sentence"] for r in reasons)
        names = {r["feature"] for r in reasons}
        assert names <= {explainer.feature_names[j] for j in known}
        # No known value left out has a larger impact than the smallest listed one.
        if reasons:
            smallest = min(abs(r["impact_pts"]) for r in reasons)
            rest = [
                abs(exp.impacts[i, j]) * 100
                for j in known
                if explainer.feature_names[j] not in names
            ]
            assert all(v <= smallest + 1e-9 for v in rest)
        shown = sum(r["impact_pts"] for r in reasons)
        other = exp.impacts[i].sum() * 100 - shown
        assert abs(exp.base_rate + (shown + other) / 100 - exp.probability[i]) <= 1e-9


def test_sentences_compare_with_the_typical_value_of_the_training_accounts(explainers):
    explainer = explainers["isotonic"]
    typical = explainer.bundle.feature_typical
    assert set(typical) <= set(MODEL_FEATURES) and typical
    j = explainer.index["days_since_last_contact"]
    assert explainer.typical[j] == typical["days_since_last_contact"]
    x = np.nanmedian(synthetic_features(400, seed=1), axis=0)[None, :]
    x[0, j] = 170
    exp = explainer.explain(x)
    (top,) = reasons_for_row(exp, 0, top_factors(exp, 1)[0], explainer.features, explainer.typical)
    usual = f"{typical['days_since_last_contact']:.0f}"
    assert top["sentence"].startswith(f"No contact for 170 days, above the {usual} typical of")


def test_a_bundle_without_typical_values_loads_and_leaves_the_comparison_out(tmp_path):
    explainer = Explainer(load_bundle(make_bundle(tmp_path / "old", "v-old", typical=False)))
    assert explainer.bundle.feature_typical == {}
    assert np.isnan(explainer.typical).all()
    x = np.nanmedian(synthetic_features(400, seed=1), axis=0)[None, :]
    x[0, explainer.index["days_since_last_contact"]] = 170
    exp = explainer.explain(x)
    reasons = reasons_for_row(exp, 0, top_factors(exp, 5)[0], explainer.features, explainer.typical)
    assert reasons[0]["sentence"].startswith("No contact for 170 days (+")
    assert not any("typical" in r["sentence"] for r in reasons)


@pytest.mark.parametrize(
    ("pts", "text"),
    [(9.2, "+9 pts"), (-3.4, "-3 pts"), (0.42, "+0.4 pts"), (-0.42, "-0.4 pts"), (0.01, "0 pts")],
)
def test_impacts_read_as_signed_points(pts, text):
    assert format_pts(pts) == text


RISK_BAND_CASES = [
    (0.30, "healthy", "high"),
    (0.2999, "critical", "medium"),
    (0.15, None, "medium"),
    (0.1499, "critical", "low"),
    (0.0, None, "low"),
    (None, "critical", "high"),
    (None, "at_risk", "medium"),
    (None, "healthy", "low"),
    (None, None, None),
]


@pytest.mark.parametrize(("probability", "health_band", "band"), RISK_BAND_CASES)
def test_risk_band_follows_the_probability_else_the_health_band(probability, health_band, band):
    assert risk_bands([probability], [health_band]).tolist() == [band]


def test_risk_bands_of_a_whole_column_equal_those_of_each_row():
    import pandas as pd

    probability = np.array([np.nan if p is None else p for p, _, _ in RISK_BAND_CASES])
    health = pd.Series([h for _, h, _ in RISK_BAND_CASES], dtype="string")
    assert risk_bands(probability, health).tolist() == [b for _, _, b in RISK_BAND_CASES]


def test_a_bundle_with_features_outside_the_catalogue_is_refused(tmp_path):
    import lightgbm as lgb

    folder = make_bundle(tmp_path / "b", "v-odd")
    names = [*MODEL_FEATURES[:-1], "mystery_signal"]
    x = synthetic_features(200)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1},
        lgb.Dataset(x, (x[:, 0] > 5).astype(float), feature_name=names),
        num_boost_round=3,
    )
    booster.save_model(str(folder / MODEL_FILE))
    meta = json.loads((folder / METADATA_FILE).read_text())
    meta["feature_names"] = names
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    write_manifest(folder)
    with pytest.raises(BundleIntegrityError, match="mystery_signal"):
        Explainer(load_bundle(folder))


def test_a_regression_model_fails_the_self_test(tmp_path):
    import lightgbm as lgb

    folder = make_bundle(tmp_path / "b", "v-regression", calibration="none")
    x = synthetic_features(200)
    # Outputs inside [0, 1], so only the link function gives the regression away.
    y = np.where(np.nan_to_num(x[:, 0]) > 5, 0.8, 0.2)
    booster = lgb.train(
        {"objective": "regression", "verbose": -1},
        lgb.Dataset(x, y, feature_name=list(MODEL_FEATURES)),
        num_boost_round=5,
    )
    booster.save_model(str(folder / MODEL_FILE))
    write_manifest(folder)
    # Loading refuses it already (its objective); past that check, the self-test catches it.
    with pytest.raises(BundleIntegrityError, match="not a binary classifier"):
        load_bundle(folder)
    explainer = Explainer(load_bundle(folder, verify=False))
    with pytest.raises(BundleIntegrityError, match="not a binary logistic model"):
        explainer.self_test()
