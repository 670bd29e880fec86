"""Labels in both modes on hand-built accounts: churn exactly at as_of, on the
horizon's last day and one day after; the purchase-cycle rule; unlabeled near the data's end."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from churn.settings import SnapshotSettings
from features.snapshots import build_snapshots
from tests.support.signal_tables import make_tables

AS_OF = date(2024, 1, 1)  # horizon 90 days: the label window is (2024-01-01, 2024-03-31]


def labels(tables, as_of=AS_OF, **cfg) -> pd.DataFrame:
    frame = build_snapshots(tables, [as_of], SnapshotSettings(**cfg), with_health=False)
    return frame.set_index("account_id")[["churned", "label_window_end"]]


def events_tables():
    accounts = [{"account_id": a, "started_at": "2022-01-01"} for a in "ABCDE"]
    return make_tables(
        accounts=accounts,
        churn_events=[
            {"account_id": "A", "churned_at": "2024-01-01"},  # exactly at as_of
            {"account_id": "B", "churned_at": "2024-03-31"},  # the horizon's last day
            {"account_id": "C", "churned_at": "2024-04-01"},  # one day after
            {"account_id": "D", "churned_at": "2023-12-31"},  # before as_of: gone
        ],
        surveys=[{"account_id": "E", "answered_at": "2024-12-31", "score": 8.0}],  # data end
    )


def test_events_mode_label_window_is_open_at_as_of_and_closed_at_the_horizon():
    got = labels(events_tables())
    assert "D" not in got.index  # churned before as_of: not active
    assert got.loc["A", "churned"] == 0.0  # active at as_of, churn not in (as_of, as_of + 90]
    assert got.loc["B", "churned"] == 1.0
    assert got.loc["C", "churned"] == 0.0
    assert got.loc["E", "churned"] == 0.0
    assert (got["label_window_end"] == pd.Timestamp("2024-03-31")).all()


def test_events_mode_account_churned_at_as_of_is_gone_the_day_after():
    got = labels(events_tables(), as_of=date(2024, 1, 2))
    assert "A" not in got.index and got.loc["B", "churned"] == 1.0


def test_events_mode_horizon_is_configurable():
    got = labels(events_tables(), horizon_days=91)
    assert got.loc["C", "churned"] == 1.0  # 2024-04-01 is now the last day


def test_unlabeled_when_the_window_runs_past_the_data():
    tables = events_tables()
    on_edge = labels(tables, as_of=date(2024, 10, 2))  # window ends 2024-12-31: the data's end
    past = labels(tables, as_of=date(2024, 10, 3))  # window ends 2025-01-01: after it
    assert on_edge.loc["E", "churned"] == 0.0
    assert np.isnan(past.loc["E", "churned"])
    assert past.loc["E", "label_window_end"] == pd.Timestamp("2025-01-01")


def test_events_mode_without_churn_events_is_unlabeled():
    tables = make_tables(surveys=[{"account_id": "A", "answered_at": "2024-12-31", "score": 9.0}])
    assert np.isnan(labels(tables).loc["A", "churned"])


# ------------------------------------------------------------------------------- inactivity

EVERY_40_DAYS = ["2023-09-02", "2023-10-12", "2023-11-21", "2023-12-31"]


def inactivity_tables():
    """X, Y, Z buy every 40 days (N = 3 x 40 = 120 days, window to 2024-04-30)."""

    def invoices(account, days):
        return [
            dict(account_id=account, invoice_id=f"{account}{i}", issued_at=d, due_at=d,
                 amount=100.0)
            for i, d in enumerate(days)
        ]  # fmt: skip

    def touch(account, when):
        return dict(account_id=account, occurred_at=when, channel="email", status="held")

    accounts = [{"account_id": a, "started_at": "2022-01-01"} for a in "XYZWQRS"]
    return make_tables(
        accounts=accounts,
        invoices=[
            *invoices("X", [*EVERY_40_DAYS, "2024-04-30"]),  # back on the window's last day
            *invoices("Y", [*EVERY_40_DAYS, "2024-05-01"]),  # one day too late
            *invoices("Z", [*EVERY_40_DAYS, "2024-01-01"]),  # dated exactly as_of
            *invoices("W", [*EVERY_40_DAYS]),
            *invoices("Q", ["2023-09-01"]),  # one invoice: N is the 90-day floor
            *invoices("R", ["2023-12-01"]),
        ],
        interactions=[
            touch("W", "2024-01-01 10:00"),  # later on the as_of day: after as_of
            touch("R", "2024-03-31 23:00"),  # on the last day of R's 90-day window
            *[touch("S", f"2024-{m:02d}-15 09:00") for m in range(1, 13)],
            touch("S", "2024-12-31 09:00"),  # the data's end
        ],
    )


def test_inactivity_mode_purchase_cycle_window_and_its_edges():
    got = labels(inactivity_tables(), label_mode="inactivity")
    assert "Q" not in got.index  # nothing in the 90 days before as_of: not active
    window_end = pd.Timestamp("2024-04-30")  # as_of + max(90, 3 x 40)
    assert got.loc["X", "label_window_end"] == window_end
    assert got.loc["X", "churned"] == 0.0  # back on the window's last day
    assert got.loc["Y", "churned"] == 1.0  # back one day after it
    assert got.loc["Z", "churned"] == 1.0  # an invoice dated as_of is in neither window
    assert got.loc["W", "churned"] == 0.0  # an interaction at 10:00 on as_of is after as_of
    assert got.loc["R", "label_window_end"] == pd.Timestamp("2024-03-31")
    assert got.loc["R", "churned"] == 0.0  # the last day counts whole


def test_inactivity_mode_long_purchase_cycles_keep_an_account_active():
    tables = inactivity_tables()
    # W buys every 40 days, so its silence window is N = 120 days, not the 90-day floor
    may = labels(tables, as_of=date(2024, 5, 1), label_mode="inactivity")
    assert "X" in may.index  # its invoice of 2024-04-30
    assert "W" not in may.index  # 2023-12-31 and the 2024-01-01 touch are > 120 days back
    floor_only = labels(tables, as_of=date(2024, 4, 15), label_mode="inactivity")
    w_cycles = labels(tables, as_of=date(2024, 4, 15), label_mode="inactivity", purchase_cycles=1)
    assert "W" in floor_only.index  # 2024-01-01 is within N = 120 days
    assert "W" not in w_cycles.index  # with one cycle N is the 90-day floor


def test_inactivity_mode_unlabeled_near_the_data_end():
    tables = inactivity_tables()
    september = labels(tables, as_of=date(2024, 9, 1), label_mode="inactivity")
    november = labels(tables, as_of=date(2024, 11, 1), label_mode="inactivity")
    assert september.loc["S", "churned"] == 0.0
    assert np.isnan(november.loc["S", "churned"])
