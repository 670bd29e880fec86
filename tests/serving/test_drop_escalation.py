"""The 15-point-drop escalation reads the same stored scores the dashboard shows: on generated
stored scores, every displayed drop of 15+ since the scoring a month earlier has its
escalation, and every such escalation has its displayed drop, whatever the spacing of the
scoring dates and however the dates were split between runs."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.health import DROP_COMPARE_DAYS, load_health_config
from serving.batch import escalations_frame, history_dates, with_history
from serving.store import Store, compare_date
from tests.support.store_rows import make_batch

HEALTH = load_health_config()
ACCOUNTS = ("A", "B", "C")
SCORES = [20.0, 44.9, 59.9, 60.0, 60.1, 74.9, 75.0, 75.1, 90.0, 100.0]


@st.composite
def stored_history(draw):
    gaps = draw(
        st.lists(st.sampled_from([1, 7, 27, 28, 29, 30, 31, 32, 60]), min_size=1, max_size=4)
    )
    start = date(2024, 1, 31)
    dates = [start + timedelta(days=int(d)) for d in np.cumsum([0, *gaps])]
    health = {
        (account, day): draw(st.none() | st.sampled_from(SCORES))
        for account in ACCOUNTS
        for day in dates
    }
    first_run = draw(st.integers(1, len(dates)))
    return dates, health, first_run


def _snapshot(dates: list[date], health: dict) -> pd.DataFrame:
    rows = [
        {"as_of": pd.Timestamp(day), "account_id": account, "health_score": score}
        for (account, day), score in health.items()
        if day in dates and score is not None
    ]
    frame = pd.DataFrame(rows, columns=["as_of", "account_id", "health_score"])
    return frame.assign(overdue_days=0.0, late_invoice_days_late=np.nan)


def _run(store: Store, dates: list[date], health: dict) -> None:
    """One `churn score` run of ``dates``: compared with what the store holds, then written."""
    scored = with_history(_snapshot(dates, health), dates, store.scores_before(dates), HEALTH)
    fired = escalations_frame(scored, HEALTH)
    batches = []
    for day in dates:
        accounts = {
            a: ("Mia", s, None) for (a, d), s in health.items() if d == day and s is not None
        }
        batch = make_batch(day, accounts)
        batch.escalations = fired[fired["as_of"] == pd.Timestamp(day)].drop(columns="as_of")
        batches.append(batch)
    store.write_batches(batches)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(stored_history())
def test_every_displayed_drop_of_15_has_its_escalation(tmp_path_factory, case):
    dates, health, first_run = case
    store = Store(str(tmp_path_factory.mktemp("drops") / "store.duckdb"))
    _run(store, dates[:first_run], health)
    if first_run < len(dates):
        _run(store, dates[first_run:], health)
    threshold = HEALTH.escalations.esc_health_drop.threshold
    for day in dates:
        shown = store.portfolio(day)
        # the page shows the change rounded; a drop of 15 shows as "▼ 15"
        drop = -np.round(shown["health_change"].to_numpy(dtype=float), 6)
        displayed = set(shown.loc[drop >= threshold, "account_id"])
        escalations = store.escalations(day)
        drops = escalations[escalations["code"] == "esc_health_drop"]
        assert set(drops["account_id"]) == displayed, (day, shown, drops)
        previous = store.previous_as_of(day)
        for row in drops.itertuples():
            before = health[(row.account_id, previous)]
            assert row.previous_score == before
            assert row.previous_as_of.date() == previous
            assert row.score_drop == np.round(before - health[(row.account_id, day)], 6)


def test_monthly_history_dates_always_have_a_date_to_compare_with():
    low, high = DROP_COMPARE_DAYS
    for as_of in (date(2026, 9, 30), date(2026, 8, 31), date(2024, 3, 31), date(2025, 1, 15)):
        dates = history_dates(as_of, 12)
        for k, day in enumerate(dates[1:], start=1):
            assert low <= (day - dates[k - 1]).days <= high
            assert compare_date(day, dates) == dates[k - 1]
    assert compare_date(date(2024, 3, 1), [date(2024, 1, 1)]) is None  # two months back
    assert compare_date(date(2024, 3, 1), [date(2024, 2, 20)]) is None  # only 10 days back
