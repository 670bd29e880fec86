"""Retention metrics on a hand-built firm whose every figure is worked out by hand."""

from __future__ import annotations

from datetime import date

import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings

from features.contract import Tables
from serving.retention import (
    RetentionBase,
    churn_rate_by,
    churn_reasons,
    last_twelve_months,
    logo_retention,
    priority_counts,
    quarterly_retention,
    quarters_before,
    retention_summary,
    revenue_retention,
    risk_counts,
    risk_drivers,
)

# Eight clients; the period is calendar 2024, the previous period calendar 2023.
#   id  started     churned     reason            tenure at 2024-01-01    2023 rev  2024 rev
#   A1  2020-01-01  -           -                 48 months (long_term)   100       150
#   A2  2022-06-01  2024-05-10  competitor        19 months (established) 200        50
#   A3  2023-06-01  -           -                  7 months (new)          80        40
#   A4  2023-03-01  2024-11-20  budget_cut        10 months (new)          60        60
#   A5  2024-03-01  -           -                 joins in 2024             -       500
#   A6  2024-04-01  2024-09-01  (none)            joins and leaves in 2024  -        30
#   A7  2019-01-01  2023-08-01  other             left before 2024         70         -
#   A8  2020-06-01  2024-01-01  service_quality   43 months (long_term)    40         0
ACCOUNTS = pd.DataFrame(
    {
        "account_id": [f"A{i}" for i in range(1, 9)],
        "name": [f"Client {i}" for i in range(1, 9)],
        "account_manager": ["Ann", "Ann", "Bob", "Bob", "Ann", "Bob", "Ann", "Bob"],
        "started_at": pd.to_datetime(
            [
                "2020-01-01",
                "2022-06-01",
                "2023-06-01",
                "2023-03-01",
                "2024-03-01",
                "2024-04-01",
                "2019-01-01",
                "2020-06-01",
            ]
        ),
    }
)
CHURN_EVENTS = pd.DataFrame(
    {
        "account_id": ["A2", "A4", "A6", "A7", "A8"],
        "churned_at": pd.to_datetime(
            ["2024-05-10", "2024-11-20", "2024-09-01", "2023-08-01", "2024-01-01"]
        ),
        "reason": pd.array(
            ["competitor", "budget_cut", None, "other", "service_quality"], dtype="string"
        ),
    }
)
_INVOICES = [
    ("A1", "2023-01-15", 100.0),
    ("A1", "2024-02-10", 100.0),
    ("A1", "2024-08-10", 50.0),
    ("A2", "2023-05-01", 200.0),
    ("A2", "2024-02-01", 50.0),
    ("A3", "2023-07-01", 80.0),
    ("A3", "2024-10-01", 40.0),
    ("A4", "2023-04-01", 30.0),
    ("A4", "2023-10-01", 30.0),
    ("A4", "2024-06-01", 60.0),
    ("A5", "2024-03-15", 500.0),
    ("A6", "2024-05-01", 30.0),
    ("A7", "2023-01-10", 70.0),
    ("A8", "2023-12-01", 40.0),
]
INVOICES = pd.DataFrame(
    {
        "account_id": [a for a, _, _ in _INVOICES],
        "invoice_id": [f"I{i}" for i in range(len(_INVOICES))],
        "issued_at": pd.to_datetime([d for _, d, _ in _INVOICES]),
        "due_at": pd.to_datetime([d for _, d, _ in _INVOICES]) + pd.Timedelta(days=30),
        "amount": [v for _, _, v in _INVOICES],
    }
)
YEAR = (date(2024, 1, 1), date(2025, 1, 1))


@pytest.fixture
def base() -> RetentionBase:
    tables = Tables(accounts=ACCOUNTS, churn_events=CHURN_EVENTS, invoices=INVOICES)
    return RetentionBase.from_tables(tables)


def test_logo_retention_is_clients_at_end_minus_new_over_clients_at_start(base):
    logo = logo_retention(base, *YEAR)
    # At start: A1 A2 A3 A4 A8 (A7 left before; A8 leaves on the first day, so it is there).
    assert logo.clients_at_start == 5
    # At end: A1 A3 A5. New clients among them: A5 (A6 joined and left: in neither count).
    assert logo.clients_at_end == 3
    assert logo.new_clients == 1
    assert logo.churned == 3  # A2, A4, A8
    assert logo.rate == pytest.approx((3 - 1) / 5)


def test_net_and_gross_revenue_retention_of_the_clients_at_start(base):
    rev = revenue_retention(base, *YEAR)
    assert rev.clients == 5
    # 2023 revenue of A1 A2 A3 A4 A8: 100 + 200 + 80 + 60 + 40 = 480
    assert rev.previous_revenue == pytest.approx(480.0)
    # 2024 revenue of the same clients: 150 + 50 + 40 + 60 + 0 = 300 (A5's 500 is not theirs)
    assert rev.revenue == pytest.approx(300.0)
    assert rev.nrr == pytest.approx(300 / 480)
    # Capped at 2023: min(150,100) + min(50,200) + min(40,80) + min(60,60) + min(0,40) = 250
    assert rev.grr == pytest.approx(250 / 480)


def test_churn_rate_by_lifecycle_stage_at_the_start_of_the_period(base):
    frame = churn_rate_by(base, *YEAR, by="lifecycle_stage").set_index("group")
    # new: A3 stays, A4 leaves; established: A2 leaves; long_term: A1 stays, A8 leaves
    assert frame["clients"].to_dict() == {"new": 2, "established": 1, "long_term": 2}
    assert frame["churned"].to_dict() == {"new": 1, "established": 1, "long_term": 1}
    assert frame["churn_rate"].to_dict() == pytest.approx(
        {"new": 0.5, "established": 1.0, "long_term": 0.5}
    )


def test_churn_rate_by_revenue_segment_of_the_year_before(base):
    frame = churn_rate_by(base, *YEAR, by="revenue_segment").set_index("group")
    # 2023 revenue ranks: A8 40 < A4 60 < A3 80 < A1 100 < A2 200 -> A: A2, C: A8, B: the rest
    assert frame["clients"].to_dict() == {"A": 1, "B": 3, "C": 1}
    assert frame["churn_rate"].to_dict() == pytest.approx({"A": 1.0, "B": 1 / 3, "C": 1.0})


def test_churn_reasons_count_every_client_who_left_in_the_period(base):
    frame = churn_reasons(base, *YEAR)
    assert frame["reason"].tolist() == ["budget_cut", "competitor", "service_quality", "unknown"]
    assert frame["clients"].tolist() == [1, 1, 1, 1]
    assert frame["share"].tolist() == pytest.approx([0.25] * 4)
    assert frame["label"].iloc[-1] == "Not recorded"


def test_quarters_are_the_complete_calendar_quarters_before_the_scored_date(base):
    assert quarters_before(date(2025, 1, 1), 2) == [
        (date(2024, 7, 1), date(2024, 10, 1)),
        (date(2024, 10, 1), date(2025, 1, 1)),
    ]
    assert quarters_before(date(2025, 2, 14), 1) == [(date(2024, 10, 1), date(2025, 1, 1))]
    assert last_twelve_months(date(2025, 1, 20)) == YEAR

    q = quarterly_retention(base, date(2025, 1, 1), 4).set_index("quarter")
    # Q1 2024: start A1 A2 A3 A4 A8; end A1 A2 A3 A4 A5 (A6 starts on the end day); new A5
    assert q.loc["2024 Q1", ["clients_at_start", "clients_at_end", "new_clients"]].tolist() == [
        5,
        5,
        1,
    ]
    assert q.loc["2024 Q1", "logo_retention"] == pytest.approx(4 / 5)
    # Q1 2024 revenue of those five: A1 100 + A2 50 = 150; in Q4 2023: A4 30 + A8 40 = 70
    assert q.loc["2024 Q1", "nrr"] == pytest.approx(150 / 70)
    assert q.loc["2024 Q1", "grr"] == pytest.approx(0.0)


def test_a_manager_sees_the_metrics_of_their_own_clients(base):
    ann = base.for_manager("Ann")
    assert sorted(ann.accounts["account_id"]) == ["A1", "A2", "A5", "A7"]
    logo = logo_retention(ann, *YEAR)
    assert (logo.clients_at_start, logo.clients_at_end, logo.new_clients) == (2, 2, 1)
    assert logo.rate == pytest.approx(0.5)
    assert revenue_retention(ann, *YEAR).nrr == pytest.approx((150 + 50) / (100 + 200))


def test_without_churn_events_a_long_silence_counts_as_churn():
    accounts = ACCOUNTS[ACCOUNTS["account_id"].isin(["A1", "A7"])].reset_index(drop=True)
    invoices = INVOICES[INVOICES["account_id"].isin(["A1", "A7"])].reset_index(drop=True)
    base = RetentionBase.from_tables(Tables(accounts=accounts, invoices=invoices))
    churned = dict(zip(base.accounts["account_id"], base.accounts["churned_at"], strict=True))
    # A7's last invoice 2023-01-10 + 90 days; A1's last (2024-08-10) + 90 is past the data's end
    assert churned["A7"] == pd.Timestamp("2023-04-10")
    assert pd.isna(churned["A1"])


def test_risk_counts_and_drivers_from_stored_scores_and_reasons():
    scores = pd.DataFrame(
        {
            "health_band": ["critical", "critical", "at_risk", "healthy"],
            "revenue_at_risk": [50.0, 30.0, 10.0, 1.0],
            "revenue_365d": [100.0, 60.0, 40.0, 20.0],
        }
    )
    counts = risk_counts(scores).set_index("band")
    assert counts["accounts"].to_dict() == {"critical": 2, "at_risk": 1, "healthy": 1}
    assert counts.loc["critical", "revenue_at_risk"] == 80.0

    reasons = pd.DataFrame(
        {
            "account_id": ["A", "A", "B", "B", "C"],
            "feature": ["silent_60d", "overdue_days", "silent_60d", "overdue_days", "silent_60d"],
            "family": ["behavioural", "financial", "behavioural", "financial", "behavioural"],
            "impact_pts": [8.0, 3.0, 6.0, -2.0, 4.0],
        }
    )
    drivers = risk_drivers(reasons, {"silent_60d": "No contact for 60 days"})
    assert drivers["feature"].tolist() == ["silent_60d", "overdue_days"]
    assert drivers["accounts"].tolist() == [3, 1]  # B's overdue_days lowers risk
    assert drivers["mean_impact_pts"].tolist() == pytest.approx([6.0, 3.0])
    assert drivers["label"].tolist() == ["No contact for 60 days", "overdue days"]


def test_priority_counts_count_every_priority_in_order_with_its_revenue_at_risk():
    scores = pd.DataFrame(
        {
            "health_band": ["healthy", "critical", "at_risk", "healthy", "healthy"],
            "priority": ["act_now", "act_now", "watch", "ok", None],  # None: stored before
            "revenue_at_risk": [50.0, 30.0, 10.0, 1.0, 2.0],
            "revenue_365d": [100.0, 60.0, 40.0, 20.0, 10.0],
        }
    )
    counts = priority_counts(scores)
    assert counts["priority"].tolist() == ["act_now", "watch", "ok"]
    assert counts["label"].tolist() == ["Act now", "Watch", "OK"]
    assert counts["accounts"].tolist() == [2, 1, 1]
    assert counts["revenue_at_risk"].tolist() == [80.0, 10.0, 1.0]
    assert counts["css"].tolist() == ["critical", "at_risk", "healthy"]
    # The same accounts by health band: the priority puts a healthy one among act now.
    assert risk_counts(scores).set_index("band")["accounts"].to_dict() == {
        "critical": 1,
        "at_risk": 1,
        "healthy": 3,
    }
    empty = priority_counts(pd.DataFrame(columns=["health_band"]))
    assert empty["accounts"].tolist() == [0, 0, 0] and empty["revenue_at_risk"].isna().all()


def test_summary_gathers_every_metric_for_the_scored_date(base):
    summary = retention_summary(base, date(2025, 1, 1), quarters=4)
    assert summary.window == YEAR
    assert summary.logo_12m.rate == pytest.approx(0.4)
    assert summary.revenue_12m.grr == pytest.approx(250 / 480)
    assert len(summary.quarterly) == 4
    assert summary.revenue_at_risk is None and summary.accounts_scored == 0
    assert summary.priority_counts["accounts"].tolist() == [0, 0, 0]


@st.composite
def _firms(draw):
    n = draw(st.integers(1, 25))
    start_days = draw(st.lists(st.integers(0, 1500), min_size=n, max_size=n))
    stays = draw(st.lists(st.one_of(st.none(), st.integers(1, 900)), min_size=n, max_size=n))
    origin = pd.Timestamp("2020-01-01")
    started = [origin + pd.Timedelta(days=d) for d in start_days]
    churned = [
        None if s is None else t + pd.Timedelta(days=s) for t, s in zip(started, stays, strict=True)
    ]
    accounts = pd.DataFrame(
        {
            "account_id": [f"A{i}" for i in range(n)],
            "account_manager": "M",
            "started_at": pd.to_datetime(started),
            "churned_at": pd.to_datetime(churned),
            "churn_reason": pd.array([None] * n, dtype="string"),
        }
    )
    months = pd.date_range("2020-01-01", "2024-12-01", freq="MS")
    amounts = draw(
        st.lists(st.floats(0, 1000, allow_nan=False), min_size=len(months), max_size=len(months))
    )
    revenue = pd.DataFrame(
        {
            "account_id": [f"A{i % n}" for i in range(len(months))],
            "month": months,
            "amount": amounts,
        }
    )
    return RetentionBase(accounts, revenue)


@settings(max_examples=60, deadline=None)
@given(firm=_firms(), start_month=st.integers(0, 47))
def test_retention_rates_stay_within_their_bounds(firm, start_month):
    start = (pd.Timestamp("2020-01-01") + pd.DateOffset(months=start_month)).date()
    end = (pd.Timestamp(start) + pd.DateOffset(months=12)).date()
    logo = logo_retention(firm, start, end)
    if logo.rate is not None:
        assert 0.0 <= logo.rate <= 1.0
        assert logo.clients_at_start - logo.churned == logo.clients_at_end - logo.new_clients
    rev = revenue_retention(firm, start, end)
    if rev.grr is not None:
        assert 0.0 <= rev.grr <= 1.0 + 1e-12
        assert rev.grr <= rev.nrr + 1e-12
    for by in ("lifecycle_stage", "revenue_segment"):
        rates = churn_rate_by(firm, start, end, by)["churn_rate"].dropna()
        assert ((rates >= 0) & (rates <= 1)).all()
        assert churn_rate_by(firm, start, end, by)["clients"].sum() == logo.clients_at_start
    assert np.isfinite(churn_reasons(firm, start, end)["clients"]).all()
