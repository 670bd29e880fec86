"""The few-records path of the health scores (plain floats, for the API's one-account
requests) gives exactly the numpy path's values, rounding and types included."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.health import (
    ESCALATION_CODES,
    escalations,
    fired_escalations,
    load_health_config,
    score_health_records,
)

CFG = load_health_config()
FEATURES = CFG.features()
SEGMENT = CFG.cadence.segment_feature

_value = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-5, 400).map(float),
    st.integers(0, 200).map(lambda v: v / 10),  # ties and step edges at one decimal
    st.sampled_from(["7", "n/a", "", "inf"]),
)
_record = st.fixed_dictionaries(
    {},
    optional={
        **{name: _value for name in FEATURES if name != SEGMENT},
        SEGMENT: st.sampled_from(["A", "B", "C", "Z", None]),
    },
)


def _vector(records: list[dict]) -> list[dict]:
    """The numpy path: enough copies to pass its threshold, then the first ones back."""
    padded = records * 20
    return score_health_records(padded, CFG)[: len(records)]


@settings(max_examples=150, deadline=None)
@given(st.lists(_record, min_size=1, max_size=3))
def test_few_records_score_exactly_as_the_vectorised_path(records):
    fast = score_health_records(records, CFG)
    slow = _vector(records)
    # Same JSON: same keys in the same order, same types, same float bits.
    assert json.dumps(fast) == json.dumps(slow)
    for f, s in zip(fast, slow, strict=True):
        assert [type(v) for v in f.values()] == [type(v) for v in s.values()]


@settings(max_examples=150, deadline=None)
@given(
    now=st.floats(0, 100).map(lambda v: round(v, 1)) | st.just(math.nan),
    drop=st.floats(-30, 30).map(lambda v: round(v, 1)) | st.just(math.nan),
    overdue=st.floats(0, 120) | st.just(math.nan),
)
def test_fired_escalations_match_the_vectorised_flags(now, drop, overdue):
    ago = now + drop
    row = {"health_score": now, "health_score_30d_ago": ago, "overdue_days": overdue}
    flags = escalations(pd.Series([now]), pd.Series([ago]), pd.Series([overdue]), CFG)
    expected = [c for c in ESCALATION_CODES if bool(np.asarray(flags[c])[0])]
    assert fired_escalations(row, CFG) == expected


def test_a_fifteen_point_drop_at_one_decimal_fires_despite_float_noise():
    # 75.1 - 60.1 is 14.999999999999993 in floats; rounded to 6 places it is the 15 it means.
    row = {"health_score": 60.1, "health_score_30d_ago": 75.1, "overdue_days": None}
    assert "esc_health_drop" in fired_escalations(row, CFG)
