"""Baseline-relative features on data where the answer is known.

Simulated clients differ in their normal level (of contact, of tone, of discounting), and the
ones that will leave change against their own normal by a known amount. A level feature then
cannot tell them apart from clients that were always quiet, cool or discounted; the feature
measured against the client's own baseline can. Plus a few hand-built accounts whose values
can be checked by eye.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churn.settings import SnapshotSettings
from features.catalog import FEATURES
from features.snapshots import build_snapshots
from tests.support.signal_tables import make_tables

AS_OF = pd.Timestamp("2024-07-01")
N = 240


def _simulated(seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """``N`` clients over 15 months before ``AS_OF``: each with its own normal pace of calls
    (2 to 40 a month, log-uniform), tone (-0.2 to +0.7) and discount share (0 or 10 %); a
    random half change in the last 90 days (calls at 40 % of their pace, tone 0.3 lower,
    discount 8 points higher), the others carry on. Returns the snapshot at ``AS_OF`` and
    which clients changed."""
    rng = np.random.default_rng(seed)
    ids = [f"C{i:03d}" for i in range(N)]
    pace = np.exp(rng.uniform(np.log(2), np.log(40), N))  # calls a month
    tone = rng.uniform(-0.2, 0.7, N)
    discount = np.where(rng.random(N) < 0.5, 0.0, 0.10)
    changed = rng.random(N) < 0.5
    start = AS_OF - pd.Timedelta(days=455)
    interactions, invoices = [], []
    for i, account in enumerate(ids):
        for month in range(15):
            recent = month >= 12  # the last three months: the recent 90 days
            shift = changed[i] and recent
            calls = rng.poisson(pace[i] * (0.4 if shift else 1.0))
            for _ in range(calls):
                when = start + pd.Timedelta(days=month * 30 + int(rng.integers(0, 30)))
                sentiment = tone[i] - (0.3 if shift else 0.0) + rng.normal(0, 0.1)
                interactions.append(
                    {
                        "account_id": account,
                        "occurred_at": when,
                        "channel": "call",
                        "status": "held",
                        "sentiment": float(np.clip(sentiment, -1, 1)),
                    }
                )
            share = discount[i] + (0.08 if shift else 0.0)
            issued = start + pd.Timedelta(days=month * 30 + 1)
            invoices.append(
                {
                    "account_id": account,
                    "issued_at": issued,
                    "due_at": issued + pd.Timedelta(days=30),
                    "amount": 10_000 * (1 - share),
                    "discount": 10_000 * share,
                }
            )
    accounts = [{"account_id": a, "started_at": "2020-01-01"} for a in ids]
    tables = make_tables(accounts=accounts, interactions=interactions, invoices=invoices)
    frame = build_snapshots(tables, [AS_OF.date()], SnapshotSettings(), with_health=False)
    frame = frame.set_index("account_id").loc[ids]
    return frame, changed


@pytest.mark.parametrize(
    ("level", "baseline"),
    [
        ("interactions_90d", "interactions_vs_usual"),
        ("sentiment_90d", "sentiment_vs_usual"),
        ("discount_share_90d", "discount_share_vs_usual"),
    ],
)
def test_a_change_against_the_clients_own_normal_is_found_where_the_level_hides_it(level, baseline):
    frame, changed = _simulated(seed=11)
    risk = 1 if FEATURES[baseline].direction == "higher" else -1
    known = frame[[level, baseline]].notna().all(axis=1).to_numpy()
    assert known.mean() > 0.95  # a client without a call in the last 90 days has no tone
    by_level = roc_auc_score(changed[known], risk * frame[level].to_numpy(float)[known])
    by_baseline = roc_auc_score(changed[known], risk * frame[baseline].to_numpy(float)[known])
    # The level mixes the change with each client's own normal; the baseline feature sees the
    # change alone (only the Poisson and tone noise blur it).
    assert by_baseline >= 0.9, (baseline, by_baseline)
    assert by_baseline - by_level >= 0.15, (level, by_level, baseline, by_baseline)


def test_the_simulated_change_is_recovered_in_size():
    frame, changed = _simulated(seed=12)
    # calls at 40 % of their pace: -60 % against the usual; tone 0.3 lower; discount +8 points
    assert frame.loc[changed, "interactions_vs_usual"].median() == pytest.approx(-0.6, abs=0.1)
    assert frame.loc[~changed, "interactions_vs_usual"].median() == pytest.approx(0.0, abs=0.1)
    assert frame.loc[changed, "sentiment_vs_usual"].median() == pytest.approx(-0.3, abs=0.05)
    assert frame.loc[changed, "discount_share_vs_usual"].median() == pytest.approx(0.08, abs=0.01)
    assert frame.loc[~changed, "discount_share_vs_usual"].abs().max() < 1e-9


def _call(when: str) -> dict:
    return {"account_id": "A", "occurred_at": when, "channel": "call", "status": "held"}


def _one(tables, as_of: date = date(2024, 7, 1)) -> pd.Series:
    frame = build_snapshots(tables, [as_of], SnapshotSettings(), with_health=False)
    return frame.set_index("account_id").loc["A"]


def test_the_usual_pace_counts_only_the_days_the_client_existed():
    # won 2024-01-02: a baseline of 2024-01-02 to 2024-04-02 (91 days) holding 3 calls, so the
    # usual is 3 calls a quarter; 3 calls in the last 90 days are the usual pace. Calls before
    # the start (pre-sales) are not the client's usual.
    calls = ["2023-10-05", "2023-11-05", "2024-01-10", "2024-02-10", "2024-03-10"]
    calls += ["2024-04-15", "2024-05-15", "2024-06-15"]
    tables = make_tables(
        accounts=[{"account_id": "A", "started_at": "2024-01-02"}],
        interactions=[_call(day) for day in calls],
    )
    assert _one(tables)["interactions_vs_usual"] == pytest.approx((3 - 3 * 90 / 91) / (3 * 90 / 91))


def test_a_client_younger_than_its_recent_window_and_30_days_has_no_usual():
    # won 2024-03-15: 18 days of baseline before the last 90 days, and no client a year ago
    contact = {"account_id": "A", "contact_id": "c1", "side": "client", "seniority": "senior"}
    tables = make_tables(
        accounts=[{"account_id": "A", "started_at": "2024-03-15"}],
        interactions=[_call("2024-03-20"), _call("2024-05-01")],
        contacts=[{**contact, "started_at": "2024-03-15"}],
    )
    got = _one(tables)
    assert np.isnan(got["interactions_vs_usual"]) and np.isnan(got["client_contacts_vs_year_ago"])
    assert got["interactions_90d"] == 1 and got["client_contacts_active"] == 1


def test_a_sparse_client_changes_by_at_most_the_floor():
    # no call in the baseline year, one in the last 90 days: +100 % (a usual of at least 1)
    tables = make_tables(interactions=[_call("2024-06-01")])
    assert _one(tables)["interactions_vs_usual"] == 1.0
    assert FEATURES["interactions_vs_usual"].sentence(1.0) == (
        "Interactions 100% above this client's usual pace"
    )


def test_a_payment_delay_counts_when_it_is_paid():
    # paid 20 days late in 2023 (baseline), paid early in January 2024 though due in March
    invoices = [
        {"account_id": "A", "issued_at": "2023-06-01", "due_at": "2023-07-01",
         "paid_at": "2023-07-21", "amount": 100.0},
        {"account_id": "A", "issued_at": "2024-01-01", "due_at": "2024-03-31",
         "paid_at": "2024-01-10", "amount": 100.0},
    ]  # fmt: skip
    got = _one(make_tables(invoices=invoices), as_of=date(2024, 2, 15))
    assert got["days_late_vs_usual"] == -20.0  # 0 days late now against 20 usually
