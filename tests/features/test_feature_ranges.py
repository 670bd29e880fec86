"""Every feature declares its valid range; snapshots built from valid data stay within it, and
sentences never print a value it does not have."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churn.settings import load_settings
from features.catalog import CATALOG, FEATURES, MODEL_FEATURES, data_completeness, feature_sentence
from features.snapshots import build_snapshots
from tests.support.signal_tables import random_tables


def test_every_numeric_feature_declares_a_range_that_reads_as_words():
    for feature in CATALOG:
        low, high = feature.valid_range
        if feature.kind == "category":
            continue
        assert low is None or high is None or low < high, feature.name
        assert feature.range_text().startswith(("between", "at least", "at most", "any")), feature
    expected = {
        "last_survey_score": (0, 10),
        "days_since_last_contact": (0, None),
        "complaints_90d": (0, None),
        "overdue_amount": (0, None),
        "sentiment_90d": (-1, 1),
        "most_senior_client_level": (0, 3),
        "discount_share_365d": (0, 1),
        "tenure_months": (0, None),
        "spend_change_qoq": (-1, None),
        "silent_60d": (0, 1),
    }
    for name, bounds in expected.items():
        assert FEATURES[name].valid_range == bounds, name


def _assert_within_ranges(frame) -> None:
    for name in MODEL_FEATURES:
        if name not in frame:
            continue
        values = frame[name].to_numpy(dtype=float, na_value=np.nan)
        low, high = FEATURES[name].valid_range
        known = values[~np.isnan(values)]
        assert np.isfinite(known).all(), name
        if low is not None:
            assert (known >= low - 1e-9).all(), (name, known.min())
        if high is not None:
            assert (known <= high + 1e-9).all(), (name, known.max())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(3, 12),
    day=st.dates(date(2020, 3, 1), date(2023, 6, 1)),
)
def test_snapshots_built_from_valid_tables_stay_within_the_catalogue_ranges(seed, n, day):
    cfg = load_settings().snapshots
    snapshot = build_snapshots(random_tables(n, seed), [day], cfg, with_health=False)
    _assert_within_ranges(snapshot)


def test_the_demo_snapshot_stays_within_the_catalogue_ranges(demo_source):
    from serving.batch import default_as_of
    from tests.support.demo_read import read_demo

    tables = read_demo(demo_source).tables
    snapshot = build_snapshots(tables, [default_as_of(tables)], load_settings().snapshots)
    assert len(snapshot) > 100
    _assert_within_ranges(snapshot)


@pytest.mark.parametrize(
    ("name", "value", "sentence"),
    [
        ("discount_share_365d", 0.005, "Discounts 0.5% of billed value in the last year"),
        ("discount_share_365d", 0.0, "No discounts in the last year"),
        ("discount_share_365d", 0.03, "Discounts 3% of billed value in the last year"),
        (
            "cancellation_rate_90d",
            0.996,
            "99.6% of interactions in the last 90 days cancelled, rescheduled or missed",
        ),
        ("last_survey_score", 9.97, "Last survey score 9.97 out of 10"),
        ("last_survey_score", 10.0, "Last survey score 10.0 out of 10"),
        ("spend_change_qoq", -0.998, "Spend down 99.8% quarter over quarter"),
        ("interactions_90d", 1.0, "1 interaction in the last 90 days"),
        ("tenure_months", 0.4, "Client for 0.4 months"),
        ("sentiment_90d", 0.001, "Sentiment +0.001 in the last 90 days"),
        ("sentiment_90d", -0.35, "Sentiment -0.35 in the last 90 days"),
    ],
)
def test_numbers_are_rounded_honestly(name, value, sentence):
    assert feature_sentence(name, value) == sentence


def test_a_value_outside_its_range_is_never_read_as_a_fact():
    text = feature_sentence("tenure_months", -3.0)
    assert "Client for" not in text
    assert (
        text
        == "Months since the client relationship started: -3 (outside its valid range, at least 0)"
    )


@pytest.mark.parametrize(
    ("name", "value", "typical", "impact", "clause"),
    [
        ("sentiment_90d", 0.12, 0.35, 2.0, ", below the +0.35 typical of your clients"),
        ("days_since_last_contact", 74, 21, 5.0, ", above the 21 typical of your clients"),
        ("meetings_90d", 0, 2, 1.0, ", below the 2 typical of your clients"),
        ("spend_change_qoq", 0.01, 0.08, 1.0, ", below the +8% typical of your clients"),
        ("spend_change_qoq", 0.0, 0.08, 1.0, ", below the +8% typical of your clients"),
        ("response_time_trend", -2, -9, 1.0, ", above the -9 typical of your clients"),
        # A signed measure on the risky side of zero reads as a risk on its own.
        ("spend_change_qoq", -0.12, 0.03, 1.0, ""),
        ("sentiment_90d", -0.2, 0.35, 2.0, ""),
        ("response_time_trend", 5, 1, 1.0, ""),
        # Not on the risky side of the typical value, or not raising the risk: no comparison.
        ("sentiment_90d", 0.5, 0.35, 2.0, ""),
        ("sentiment_90d", 0.12, 0.35, -2.0, ""),
        ("sentiment_90d", 0.12, None, 2.0, ""),
        ("single_threaded", 1, 0, 3.0, ""),  # flags have no typical value to compare
        ("most_senior_client_level", 0, 2, 3.0, ""),  # nor do named levels
        ("sentiment_90d", 0.349, 0.35, 2.0, ""),  # indistinguishable once printed
        ("complaints_90d", 1, 0, 2.0, ""),  # typical at the end of the range
        ("discount_share_365d", 0.05, 0.0, 2.0, ""),
        ("discount_share_365d", 0.05, 0.01, 2.0, ", above the 1% typical of your clients"),
    ],
)
def test_a_risk_on_the_wrong_side_of_the_typical_value_says_so(
    name, value, typical, impact, clause
):
    feature = FEATURES[name]
    text = feature.sentence(value, typical=typical, impact=impact)
    assert text == feature.sentence(value) + clause


def test_data_completeness_counts_known_features_and_names_missing_sources():
    names = MODEL_FEATURES
    known = np.ones((3, len(names)), dtype=bool)
    surveys = [i for i, n in enumerate(names) if FEATURES[n].tables == ("surveys",)]
    tickets = [i for i, n in enumerate(names) if FEATURES[n].tables == ("tickets",)]
    known[1, surveys] = False
    known[2, surveys + tickets] = False
    known[2, names.index("sentiment_90d")] = False  # one interaction feature: not a source
    share, missing = data_completeness(known, names)
    assert missing == ["", "surveys", "surveys, tickets"]
    assert share[0] == 1.0
    assert math.isclose(share[1], 1 - len(surveys) / len(names))
    assert math.isclose(share[2], 1 - (len(surveys) + len(tickets) + 1) / len(names))
