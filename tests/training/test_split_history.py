"""The history before the first as_of: a quarter of the data's span between 1 and 6 months
unless ``snapshots.history_months`` sets it, settable from the environment."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from churn.settings import SnapshotSettings, load_settings
from features.snapshots import as_of_grid, history_months
from tests.support.tables import make_tables


def _invoices_between(first: str, last: str):
    rows = [
        {"account_id": "A", "invoice_id": f"I-{i}", "issued_at": d, "due_at": d, "amount": 10.0}
        for i, d in enumerate((first, last))
    ]
    return make_tables(accounts=[{"account_id": "A", "started_at": first}], invoices=rows)


@pytest.mark.parametrize(
    ("first", "last", "months", "grid_start"),
    [
        ("2021-01-01", "2024-12-31", 6, date(2021, 7, 1)),  # four years: six, as always
        ("2023-01-01", "2024-12-31", 5, date(2023, 6, 1)),  # 23 whole months
        ("2023-01-01", "2025-01-01", 6, date(2023, 7, 1)),  # two years
        ("2024-01-01", "2025-06-30", 4, date(2024, 5, 1)),  # 18 months of invoices
        ("2024-01-15", "2024-06-10", 1, date(2024, 3, 1)),  # under half a year: one month
    ],
)
def test_the_default_history_is_a_quarter_of_the_span(first, last, months, grid_start):
    tables = _invoices_between(first, last)
    assert history_months(tables, SnapshotSettings()) == months
    assert as_of_grid(tables, SnapshotSettings())[0] == grid_start


def test_a_set_history_wins_over_the_rule():
    tables = _invoices_between("2024-01-01", "2025-06-30")
    cfg = SnapshotSettings(history_months=2)
    assert history_months(tables, cfg) == 2
    assert as_of_grid(tables, cfg)[0] == date(2024, 3, 1)
    assert as_of_grid(tables, SnapshotSettings(history_months=0))[0] == date(2024, 1, 1)


def test_the_history_is_a_setting_of_the_environment(monkeypatch):
    monkeypatch.setenv("CHURN_SNAPSHOTS__HISTORY_MONTHS", "3")
    assert load_settings().snapshots.history_months == 3
    monkeypatch.delenv("CHURN_SNAPSHOTS__HISTORY_MONTHS")
    assert load_settings().snapshots.history_months is None


@settings(max_examples=50, deadline=None)
@given(first=st.dates(date(2015, 1, 1), date(2025, 1, 1)), days=st.integers(0, 3000))
def test_the_default_history_grows_with_the_span_and_stays_between_1_and_6(first, days):
    last = pd.Timestamp(first) + pd.Timedelta(days=days)
    tables = _invoices_between(str(first), str(last.date()))
    months = history_months(tables, SnapshotSettings())
    assert 1 <= months <= 6
    longer = _invoices_between(str(first), str((last + pd.Timedelta(days=40)).date()))
    assert history_months(longer, SnapshotSettings()) >= months
    # Whenever the span holds at least four times six months, the history is six.
    if last >= pd.Timestamp(first) + pd.DateOffset(months=24):
        assert months == 6
