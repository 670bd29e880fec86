"""The lapsed clients list of ``GET /v1/lapsed`` and the dashboard's lapsed page.

The service reads what the retention page reads: the facts ``churn score`` keeps in the score
store with every full run (``Store.retention_base``), here the daily activity (invoiced amount,
invoices and interactions per account and day). ``features.lapsed`` computes the list on the
tables rebuilt from it (``RetentionBase.activity_tables``), which answer exactly as the
source's own tables would. The date listed is the latest scored date by default (``churn
score`` scores the last day of the data unless told otherwise), or any earlier date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd

from churn.settings import SnapshotSettings
from features.lapsed import LAPSED_COLUMNS, lapsed_accounts
from serving.store import RunCache, Store

_LISTS = RunCache()


@dataclass(frozen=True)
class LapsedList:
    """The clients lapsed at ``as_of`` that one viewer may see, most revenue lost first.

    ``as_of`` is None when nothing is stored; ``recorded`` is False when the store holds no
    daily activity (written before it was kept: ``churn score`` again fills it)."""

    as_of: date | None
    latest: date | None
    recorded: bool
    rows: pd.DataFrame

    @property
    def revenue_lost(self) -> float:
        return round(float(self.rows["revenue_lost"].sum()), 2) if len(self.rows) else 0.0


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in LAPSED_COLUMNS})


def lapsed_list(
    store: Store,
    snapshots: SnapshotSettings,
    *,
    manager: str | None = None,
    as_of: date | None = None,
) -> LapsedList:
    """The lapsed clients at ``as_of`` (default: the latest scored date), of one manager or
    all. An ``as_of`` after the latest scored date lists nothing (``latest`` says which date
    that is: the caller refuses such a date)."""
    with store.reading():
        latest = store.latest_as_of()
        if latest is None:
            return LapsedList(None, None, False, _empty())
        day = as_of or latest
        if day > latest:
            return LapsedList(day, latest, True, _empty())
        window = (snapshots.min_silence_days, snapshots.purchase_cycles)
        # The list changes only when a score run writes: cache it per store, run and question.
        key = RunCache.key(store, manager, day, window)
        cached: pd.DataFrame | None = _LISTS.get(key)
        if cached is not None:
            return LapsedList(day, latest, True, cached)
        base = store.retention_base(manager=manager)
    tables = None if base is None else base.activity_tables()
    if tables is None:
        return LapsedList(day, latest, base is None, _empty())
    rows = lapsed_accounts(tables, day, snapshots)
    _LISTS.put(key, rows)
    return LapsedList(day, latest, True, rows)


def lapse_sentence(row: dict[str, Any]) -> str:
    """Why the client is on the list, in words: "No purchase or contact for 286 days, past its
    30-day window (usual cycle 10 days)"."""
    cycle = row.get("usual_cycle_days")
    usual = (
        f"usual cycle {float(cycle):g} days"
        if cycle is not None and not pd.isna(cycle)
        else "fewer than two purchase days, so the shortest window"
    )
    return (
        f"No purchase or contact for {int(row['days_silent'])} days, past its "
        f"{int(row['silence_days'])}-day window ({usual})"
    )
