"""The priority of an account: the model's probability against the bundle's operating points,
combined with the escalations and the health band (docs/metrics.md#priority)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from churn.bundle import DEFAULT_OPERATING_POINTS, OperatingPoints
from features.health import ESCALATION_CODES, HEALTH_BANDS
from serving.priority import PRIORITIES, fired_matrix, priorities

POINTS = OperatingPoints(act_now=0.40, watch=0.20, source="validation")


def _one(p: float | None, band: str, codes: tuple[str, ...] = ()) -> str:
    return str(priorities([p], [band], fired_matrix([codes]), POINTS)[0])


@pytest.mark.parametrize(
    ("p", "band", "codes", "expected"),
    [
        (0.05, "healthy", (), "ok"),
        (0.19999, "healthy", (), "ok"),
        (0.20, "healthy", (), "watch"),  # at the watch point: watch
        (0.39, "healthy", (), "watch"),
        (0.40, "healthy", (), "act_now"),  # at the act_now point: act now
        (0.90, "healthy", (), "act_now"),
        (0.05, "at_risk", ("esc_below_60",), "watch"),
        (0.05, "healthy", ("esc_health_drop",), "watch"),
        (0.05, "healthy", ("esc_invoice_30d_late",), "act_now"),
        (0.05, "critical", ("esc_below_40", "esc_below_60"), "act_now"),
        (0.05, "critical", (), "act_now"),  # the band alone, whatever the escalation config
        (0.05, "at_risk", (), "watch"),
        (0.30, "at_risk", ("esc_below_60",), "watch"),
        (0.50, "at_risk", ("esc_below_60",), "act_now"),
        (None, "healthy", (), "ok"),  # no model: rules only
        (None, "at_risk", ("esc_below_60",), "watch"),
        (None, "healthy", ("esc_invoice_30d_late",), "act_now"),
        (math.nan, "critical", ("esc_below_40",), "act_now"),
    ],
)
def test_the_priority_of_each_combination(p, band, codes, expected):
    assert _one(p, band, codes) == expected


_RANK = {name: i for i, name in enumerate(reversed(PRIORITIES))}  # ok 0, watch 1, act_now 2


@given(
    p=st.one_of(st.none(), st.floats(0, 1)),
    q=st.floats(0, 1),
    band=st.sampled_from(HEALTH_BANDS),
    codes=st.sets(st.sampled_from(ESCALATION_CODES)),
    extra=st.sampled_from(ESCALATION_CODES),
)
def test_more_risk_never_lowers_the_priority(p, q, band, codes, extra):
    base = _one(p, band, tuple(codes))
    assert base in PRIORITIES
    assert _RANK[_one(p, band, (*codes, extra))] >= _RANK[base]  # one more escalation
    if p is not None:
        assert _RANK[_one(max(p, q), band, tuple(codes))] >= _RANK[base]  # a higher probability
        assert _RANK[base] >= _RANK[_one(None, band, tuple(codes))]  # the model only adds


def test_vectors_of_rows_and_pandas_columns_give_the_same_answer():
    import pandas as pd

    p = [0.5, None, 0.1, 0.25]
    bands = ["healthy", "critical", "healthy", None]
    codes = [(), ("esc_below_40",), ("esc_health_drop",), ()]
    from_lists = priorities(p, bands, fired_matrix(codes), POINTS)
    frame = pd.DataFrame({"p": p, "band": bands, **fired_matrix(codes)})
    from_frame = priorities(
        frame["p"], frame["band"], {c: frame[c] for c in ESCALATION_CODES}, POINTS
    )
    assert from_lists.tolist() == from_frame.tolist() == ["act_now", "act_now", "watch", "watch"]
    assert priorities([], [], fired_matrix([]), POINTS).tolist() == []


def test_operating_points_are_checked_and_default_to_the_risk_bands_bounds():
    assert (DEFAULT_OPERATING_POINTS.act_now, DEFAULT_OPERATING_POINTS.watch) == (0.30, 0.15)
    assert DEFAULT_OPERATING_POINTS.source == "default"
    for act_now, watch in ((0.1, 0.2), (1.5, 0.2), (0.3, -0.1), (np.nan, 0.1)):
        with pytest.raises(ValueError, match="operating points"):
            OperatingPoints(act_now=act_now, watch=watch)
    again = OperatingPoints.from_dict(POINTS.to_dict())
    assert again == POINTS


def test_a_bundle_carries_its_operating_points_and_an_older_one_falls_back(tmp_path):
    from churn.bundle import load_bundle
    from churn.errors import BundleIntegrityError
    from serving.model_holder import load_model
    from serving.scoring import AccountInput, load_rules, score_accounts
    from tests.support.bundle_factory import make_bundle

    older = load_bundle(make_bundle(tmp_path / "older", "older"))
    assert older.operating_points == DEFAULT_OPERATING_POINTS

    # Points at zero: every account the model scores is act_now, whatever its rules say.
    zero = {"act_now": 0.0, "watch": 0.0, "source": "validation", "rule": "test"}
    folder = make_bundle(tmp_path / "zero", "zero", operating_points=zero)
    assert load_bundle(folder).operating_points == OperatingPoints(0.0, 0.0, "validation", "test")
    quiet = AccountInput("A-1", {"days_since_last_contact": 3.0, "meetings_180d": 4.0})
    rules = load_rules()
    (scored,) = score_accounts([quiet], load_model(folder), rules)
    assert scored["priority"] == "act_now"
    (scored,) = score_accounts([quiet], load_model(make_bundle(tmp_path / "o2", "o2")), rules)
    codes = tuple(e["code"] for e in scored["escalations"])
    expected = priorities(
        [scored["churn_probability"]],
        [scored["health_band"]],
        fired_matrix([codes]),
        DEFAULT_OPERATING_POINTS,
    )
    assert scored["priority"] == expected[0]

    with pytest.raises(BundleIntegrityError, match="operating_points"):
        make_bundle(tmp_path / "bad", "bad", operating_points={"act_now": 0.1, "watch": 0.5})
