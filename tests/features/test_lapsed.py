"""Lapsed clients and win-backs (features/lapsed.py) on a hand-built set of invoices whose every
figure is worked out below, and against the inactivity label of the snapshots on a simulated
firm: lapsed at a date = bought before it, started before it, and not active by the label's
rule there."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from churn.settings import SnapshotSettings
from features.lapsed import (
    activity_tables,
    daily_activity,
    lapse_episodes,
    lapsed_accounts,
    winbacks_by_period,
)
from features.snapshots import build_features
from tests.support.firms import small_firm
from tests.support.lapsed_firm import AS_OF, CFG, hand_built
from tests.support.tables import make_tables


def test_the_lapsed_list_equals_the_hand_computed_one():
    out = lapsed_accounts(hand_built(), AS_OF, CFG)
    assert list(out["account_id"]) == ["E", "A"]  # most revenue lost first
    e, a = out.iloc[0], out.iloc[1]
    assert (e["account_manager"], e["name"]) == ("Bob", "Epsilon")
    assert e["last_purchase"] == e["last_activity"] == pd.Timestamp("2024-06-15")
    assert np.isnan(e["usual_cycle_days"]) and e["silence_days"] == 30
    assert e["lapsed_on"] == pd.Timestamp("2024-07-16") and e["days_silent"] == 200
    assert e["revenue_lost"] == 5000 and e["lifetime_revenue"] == 5000
    assert (a["account_manager"], a["name"]) == ("Ann", "Alpha")
    assert a["last_purchase"] == a["last_activity"] == pd.Timestamp("2024-03-21")
    assert a["usual_cycle_days"] == 10 and a["silence_days"] == 30
    assert a["lapsed_on"] == pd.Timestamp("2024-04-21") and a["days_silent"] == 286
    assert a["revenue_lost"] == 600 and a["lifetime_revenue"] == 1600


def test_a_purchase_on_the_date_itself_counts_from_the_next_day():
    # A's invoice of 2025-01-01 is not known on 2025-01-01 (records strictly before count)...
    assert "A" in set(lapsed_accounts(hand_built(), "2025-01-01", CFG)["account_id"])
    # ... and has won A back the day after.
    out = lapsed_accounts(hand_built(), "2025-01-02", CFG)
    assert list(out["account_id"]) == ["E"] and out["days_silent"].iloc[0] == 201


def test_the_lapse_starts_the_day_after_the_window_runs_out():
    tables = hand_built()
    # E: last activity 2024-06-15, N = 30: still active on 07-15, lapsed from 07-16.
    assert "E" not in set(lapsed_accounts(tables, "2024-07-15", CFG)["account_id"])
    assert "E" in set(lapsed_accounts(tables, "2024-07-16", CFG)["account_id"])


def test_the_lapses_and_win_backs_equal_the_hand_computed_ones():
    episodes = lapse_episodes(hand_built(), AS_OF, CFG)
    got = [
        (
            r.account_id,
            r.lapsed_on.date().isoformat(),
            None if pd.isna(r.back_on) else r.back_on.date().isoformat(),
            bool(r.won_back),
        )
        for r in episodes.itertuples()
    ]
    assert got == [
        ("A", "2022-02-01", "2024-03-01", True),
        ("A", "2024-04-21", None, False),
        ("B", "2024-02-01", "2024-04-01", True),
        ("C", "2024-06-01", "2024-08-01", False),
        ("C", "2024-09-01", "2024-10-15", True),
        ("E", "2024-07-16", None, False),
    ]


def test_win_backs_per_quarter_equal_the_hand_computed_counts():
    """Lapsed on some day of the quarter / won back in it (docstring of hand_built):
    Q1: A (lapsed since 2022, back 03-01: won), B (lapsed 02-01, back 04-01)  -> 2, 1
    Q2: B (back 04-01: won), A (lapsed 04-21), C (lapsed 06-01)              -> 3, 1
    Q3: A, C (back by a call 08-01, lapsed again 09-01), E (lapsed 07-16)    -> 3, 0
    Q4: A, C (back 10-15: won), E                                           -> 3, 1
    """
    quarters = [
        (date(2024, 1, 1), date(2024, 4, 1)),
        (date(2024, 4, 1), date(2024, 7, 1)),
        (date(2024, 7, 1), date(2024, 10, 1)),
        (date(2024, 10, 1), date(2025, 1, 1)),
    ]
    out = winbacks_by_period(lapse_episodes(hand_built(), AS_OF, CFG), quarters)
    assert list(out["lapsed"]) == [2, 3, 3, 3]
    assert list(out["won_back"]) == [1, 1, 0, 1]
    assert out["win_back_rate"].tolist() == pytest.approx([1 / 2, 1 / 3, 0.0, 1 / 3])


def test_nothing_lapsed_gives_an_empty_list_and_a_missing_rate():
    tables = make_tables(["A"])
    assert lapsed_accounts(tables, AS_OF, CFG).empty
    out = winbacks_by_period(
        lapse_episodes(tables, AS_OF, CFG), [(date(2024, 1, 1), date(2024, 4, 1))]
    )
    assert out["lapsed"].tolist() == [0] and np.isnan(out["win_back_rate"].iloc[0])


def test_the_daily_activity_gives_the_same_answers_as_the_tables():
    tables = small_firm(40, seed=3)
    rebuilt = activity_tables(tables.accounts, daily_activity(tables))
    for day in ("2023-06-01", "2024-01-15", tables.data_end().date()):
        pd.testing.assert_frame_equal(
            lapsed_accounts(rebuilt, day, CFG), lapsed_accounts(tables, day, CFG)
        )
        pd.testing.assert_frame_equal(
            lapse_episodes(rebuilt, day, CFG), lapse_episodes(tables, day, CFG)
        )


@pytest.fixture(scope="module")
def firm():
    return small_firm(40, seed=3)


@settings(max_examples=15, deadline=None)
@given(
    st.dates(date(2022, 3, 1), date(2024, 12, 1)),
    st.integers(20, 120),
    st.integers(1, 4),
)
def test_lapsed_means_bought_started_and_not_active_by_the_inactivity_label(
    firm, as_of, floor, cycles
):
    cfg = SnapshotSettings(min_silence_days=floor, purchase_cycles=cycles, label_mode="inactivity")
    lapsed = set(lapsed_accounts(firm, as_of, cfg)["account_id"])
    active = set(build_features(firm, [as_of], cfg)["account_id"])
    stamp = pd.Timestamp(as_of)
    inv = firm.invoices
    bought = set(inv.loc[inv["issued_at"] < stamp, "account_id"])
    started = set(firm.accounts.loc[firm.accounts["started_at"] < stamp, "account_id"])
    assert lapsed == (bought & started) - active


@settings(max_examples=15, deadline=None)
@given(st.dates(date(2023, 1, 1), date(2024, 6, 1)), st.integers(1, 400))
def test_quarter_counts_never_read_records_after_the_quarters(firm, as_of, later_days):
    """Counts of quarters that ended by ``as_of`` are the same whatever comes after it."""
    start = pd.Timestamp(as_of).to_period("Q").start_time
    quarters = [
        (
            (start - pd.DateOffset(months=3 * (k + 1))).date(),
            (start - pd.DateOffset(months=3 * k)).date(),
        )
        for k in range(4)
    ]
    now = winbacks_by_period(lapse_episodes(firm, as_of, CFG), quarters)
    later = pd.Timestamp(as_of) + pd.Timedelta(days=later_days)
    pd.testing.assert_frame_equal(
        now, winbacks_by_period(lapse_episodes(firm, later, CFG), quarters)
    )


def test_revenue_sums_are_whole_cents_without_float_residue():
    rng = np.random.default_rng(3)
    days = pd.date_range("2023-01-02", periods=60, freq="5D")
    amounts = np.round(rng.uniform(10, 50_000, len(days)), 2)
    invoices = [
        {
            "account_id": "Z",
            "invoice_id": f"Z-{i}",
            "issued_at": day,
            "due_at": day,
            "amount": amount,
        }
        for i, (day, amount) in enumerate(zip(days.strftime("%Y-%m-%d"), amounts, strict=True))
    ]
    tables = make_tables([{"account_id": "Z", "account_manager": "Ann"}], invoices=invoices)
    (row,) = lapsed_accounts(tables, AS_OF, CFG).itertuples()
    # Both sums are amounts in cents: exactly what rounding to the cent gives.
    assert row.lifetime_revenue == round(row.lifetime_revenue, 2)
    assert row.revenue_lost == round(row.revenue_lost, 2)
    assert row.lifetime_revenue == pytest.approx(amounts.sum(), abs=0.005)
