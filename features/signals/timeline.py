"""The vectorised point-in-time engine every feature family uses.

A :class:`Timeline` holds the events of one kind sorted by (account, instant), each with optional
numeric values, and answers questions for whole arrays of (account, as_of) rows at once with
``np.searchsorted`` on one composite int64 key ``account * SPAN + seconds``: how many events, or
what sum of a value, fell in ``[start, end)``; which event was the last before an instant. Cost is
O((events + rows) log events): linear in both, never a loop over accounts or dates.

Sums use prefix sums restarted at each account, so a row's answer depends only on that account's
own events strictly before the query instant — adding or changing later events, or other
accounts' events, cannot change it, not even in the last bit (point-in-time and per-partition
results are exact).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.contract import Tables

DAY = 86_400
"""Seconds in a day: the engine works in whole seconds."""
NAT = np.iinfo(np.int64).min
"""A missing instant (NaT) in the int64-seconds representation."""
_LO = -2_208_988_800  # 1900-01-01: instants are clipped into [_LO, _HI]
_HI = 10_000_000_000  # 2286-11-20
_SPAN = _HI - _LO + 2  # room for one offset past _HI, the "never" instant
NEVER = _HI + 1
"""An instant after every real one (an invoice never paid is settled at NEVER)."""


def seconds(values: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """Instants as int64 seconds since 1970 (timezone-aware values in UTC); NaT -> ``NAT``."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    elif not pd.api.types.is_datetime64_dtype(series.dtype):
        series = pd.to_datetime(series)
    return cast(np.ndarray, series.to_numpy(dtype="datetime64[s]").view(np.int64).copy())


def to_datetime(secs: np.ndarray) -> np.ndarray:
    """int64 seconds back to ``datetime64[ns]`` (``NAT`` -> NaT)."""
    out = np.asarray(secs, dtype=np.int64).view("datetime64[s]").astype("datetime64[ns]")
    return out


def day_of(secs: np.ndarray) -> np.ndarray:
    """Calendar day number (days since 1970) of each instant; NaN where missing."""
    secs = np.asarray(secs, dtype=np.int64)
    return np.where(secs == NAT, np.nan, (secs // DAY).astype(np.float64))


def _offset(secs: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(secs, dtype=np.int64), _LO, NEVER) - _LO


def not_before(secs: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """``secs`` moved up to ``floor`` where earlier (missing stays missing): a record's later
    date never makes it known before its own stamp."""
    secs = np.asarray(secs, dtype=np.int64)
    return np.where(secs == NAT, NAT, np.maximum(secs, np.asarray(floor, dtype=np.int64)))


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 or NaN."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    ok = np.isfinite(den) & (den != 0)
    return cast(np.ndarray, np.divide(num, den, out=np.full(num.shape, np.nan), where=ok))


RECENT_DAYS = 90
"""The recent window of a baseline-relative feature: the last 90 days."""
BASELINE_DAYS = 365
"""The account's own baseline: the 365 days before the recent window."""
MIN_BASELINE_DAYS = 30
"""A pace needs at least this many days of the account's baseline window (after its start)."""


def baseline_window(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Each row's baseline window: the account's own trailing year before the recent 90 days,
    ``[as_of - 455 days, as_of - 90 days)``, from its ``started_at`` when that is later (a
    client won six months ago has a usual over those months, not over a year it was not a
    client; records from before the start, such as pre-sales contact, are not its usual).
    Empty (start = end) when the account started after it."""
    start, end = grid.ago(RECENT_DAYS + BASELINE_DAYS), grid.ago(RECENT_DAYS)
    start = np.where(grid.started == NAT, start, np.clip(grid.started, start, end))
    return start, end


def baseline_days(grid: Grid) -> np.ndarray:
    """Days of each row's :func:`baseline_window`."""
    start, end = baseline_window(grid)
    days: np.ndarray = (end - start) / DAY
    return days


def usual_pace(earlier: np.ndarray, days: np.ndarray) -> np.ndarray:
    """A total of the baseline window (``days`` long) scaled to the recent window's length:
    the account's usual for 90 days; NaN where the baseline is shorter than
    :data:`MIN_BASELINE_DAYS`."""
    enough = days >= MIN_BASELINE_DAYS
    usual: np.ndarray = np.where(
        enough,
        np.asarray(earlier, dtype=np.float64) * RECENT_DAYS / np.where(enough, days, 1.0),
        np.nan,
    )
    return usual


def pace_change(recent: np.ndarray, usual: np.ndarray, floor: float = 1.0) -> np.ndarray:
    """A count against its usual: ``(recent - usual) / max(usual, floor)`` (NaN where the usual
    is unknown). The floor keeps a sparse account's change finite and modest: one event against
    a usual of none is +100 %, not infinite."""
    usual = np.asarray(usual, dtype=np.float64)
    change: np.ndarray = (np.asarray(recent, dtype=np.float64) - usual) / np.maximum(usual, floor)
    return change


def flag(condition: np.ndarray) -> np.ndarray:
    """A boolean array as 1.0 / 0.0 floats."""
    return np.asarray(condition, dtype=np.float64)


def column(frame: pd.DataFrame, name: str, dtype: str = "float64") -> pd.Series:
    """A column of a table, or an all-missing one when the source does not have it."""
    if name in frame.columns:
        return frame[name]
    return pd.Series(pd.NA if dtype != "float64" else np.nan, index=frame.index, dtype=dtype)


def recorded(tables: Tables, table: str, name: str) -> bool:
    """Whether the source has an optional column at all. Features read from a column the source
    lacks are absent (NaN). A column the loader filled with nulls for lack of it is listed in
    ``tables.meta["absent_columns"][table]``. Emptiness of present columns is not judged here:
    it could hinge on records after as_of; an empty value counts as "no" / 0 instead."""
    frame = tables.get(table)
    absent = tables.meta.get("absent_columns", {})
    missing = absent.get(table, ()) if isinstance(absent, dict) else ()
    return frame is not None and name in frame.columns and name not in missing


def floats(series: pd.Series) -> np.ndarray:
    """A numeric or boolean column as float64 with NaN for missing values."""
    return cast(
        np.ndarray,
        pd.to_numeric(series, errors="coerce").astype("float64").to_numpy(na_value=np.nan),
    )


def mask(series: pd.Series) -> np.ndarray:
    """A boolean condition on a column as a plain numpy bool array (missing -> False)."""
    return cast(np.ndarray, series.fillna(False).to_numpy(dtype=bool))


@dataclass
class Grid:
    """The (account, as_of) rows to compute features for.

    ``acc`` are account codes (positions in ``accounts``), ``t`` the as_of instants in int64
    seconds. ``accounts`` is the accounts table, positional by code.
    """

    acc: np.ndarray
    t: np.ndarray
    accounts: pd.DataFrame
    _ids: pd.Index = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.acc = np.asarray(self.acc, dtype=np.int64)
        self.t = np.asarray(self.t, dtype=np.int64)
        self._ids = pd.Index(self.accounts["account_id"].astype("string"))

    def __len__(self) -> int:
        return len(self.acc)

    def code(self, account_id: pd.Series) -> np.ndarray:
        """Account codes of a table's ``account_id`` column (-1 for unknown accounts)."""
        return cast(np.ndarray, self._ids.get_indexer(account_id.astype("string")).astype(np.int64))

    def ago(self, days: float) -> np.ndarray:
        """The instant ``days`` before each row's as_of."""
        return self.t - np.int64(round(days * DAY))

    @cached_property
    def started(self) -> np.ndarray:
        """Each row's account ``started_at`` in int64 seconds (``NAT`` where unknown), read once
        per grid: tenure, the baseline window and contacts a year ago all need it."""
        return seconds(self.account_values("started_at").astype("datetime64[ns]"))

    def account_values(self, name: str) -> pd.Series:
        """An accounts column, one value per grid row."""
        return column(self.accounts, name).iloc[self.acc].reset_index(drop=True)


class Timeline:
    """Events sorted by (account, instant), with per-account prefix sums of their values.

    ``acc`` account codes (rows with code < 0 or a missing instant are dropped), ``when``
    int64 seconds, ``values`` named numeric arrays (NaN = not recorded), ``tiebreak`` an
    optional array ordering events of the same instant (so "last before" is deterministic).
    """

    def __init__(
        self,
        acc: np.ndarray,
        when: np.ndarray,
        values: Mapping[str, npt.ArrayLike] | None = None,
        tiebreak: np.ndarray | None = None,
    ) -> None:
        acc = np.asarray(acc, dtype=np.int64)
        when = np.asarray(when, dtype=np.int64)
        keep = (acc >= 0) & (when != NAT)
        key = acc[keep] * _SPAN + _offset(when[keep])
        if tiebreak is not None:
            tb = np.asarray(tiebreak, dtype=np.float64)[keep]
            order = np.lexsort((np.nan_to_num(tb, nan=-np.inf), key))
        else:
            order = np.argsort(key, kind="stable")
        self.key = key[order]
        self.acc = acc[keep][order]
        self.when = when[keep][order]
        self.values = {
            name: np.asarray(v, dtype=np.float64)[keep][order] for name, v in (values or {}).items()
        }
        self._prefix: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.key)

    def _pos(self, acc: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Global index of the first event of ``acc`` at or after ``t``."""
        query = np.asarray(acc, dtype=np.int64) * _SPAN + _offset(t)
        return cast(np.ndarray, np.searchsorted(self.key, query, side="left"))

    def _start(self, acc: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.key, np.asarray(acc, dtype=np.int64) * _SPAN, side="left")

    def _bounds(
        self, acc: np.ndarray, start: np.ndarray | None, end: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        lo = self._start(acc) if start is None else self._pos(acc, start)
        hi = self._pos(acc, end)
        return lo, np.maximum(hi, lo)

    def count(self, acc: np.ndarray, start: np.ndarray | None, end: np.ndarray) -> np.ndarray:
        """Events of each row's account with ``start <= when < end`` (``start=None``: from the
        first)."""
        lo, hi = self._bounds(acc, start, end)
        return cast(np.ndarray, (hi - lo).astype(np.float64))

    def _inclusive_prefix(self, name: str) -> np.ndarray:
        if name not in self._prefix:
            vals = np.nan_to_num(self.values[name], nan=0.0)
            # restarted per account: an account's sums never see other accounts' values
            self._prefix[name] = (
                pd.Series(vals).groupby(self.acc, sort=False).cumsum().to_numpy(np.float64)
            )
        return self._prefix[name]

    def _sum_before(self, name: str, acc: np.ndarray, pos: np.ndarray) -> np.ndarray:
        if not len(self):
            return np.zeros(len(pos))
        prev = np.clip(pos - 1, 0, None)
        own = (pos >= 1) & (self.acc[prev] == acc)
        return np.where(own, self._inclusive_prefix(name)[prev], 0.0)

    def total(
        self, name: str, acc: np.ndarray, start: np.ndarray | None, end: np.ndarray
    ) -> np.ndarray:
        """Sum of a value over the events counted by :meth:`count` (missing values add 0)."""
        acc = np.asarray(acc, dtype=np.int64)
        lo, hi = self._bounds(acc, start, end)
        # equal bounds give exactly 0, not a rounding residue
        return np.where(
            hi > lo, self._sum_before(name, acc, hi) - self._sum_before(name, acc, lo), 0.0
        )

    def known(
        self, name: str, acc: np.ndarray, start: np.ndarray | None, end: np.ndarray
    ) -> np.ndarray:
        """How many of those events record the value."""
        key = f"{name}?"
        if key not in self.values:
            self.values[key] = np.isfinite(self.values[name]).astype(np.float64)
        return self.total(key, acc, start, end)

    def mean(
        self, name: str, acc: np.ndarray, start: np.ndarray | None, end: np.ndarray
    ) -> np.ndarray:
        """Mean of the recorded values in the window; NaN when none."""
        return ratio(self.total(name, acc, start, end), self.known(name, acc, start, end))

    def window(
        self, acc: np.ndarray, start: np.ndarray, end: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions ``[lo, hi)`` (into this timeline's sorted events) of each row's account's
        events with ``start <= when < end``."""
        return self._bounds(np.asarray(acc, dtype=np.int64), start, end)

    def last(self, acc: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Index of each row's account's last event strictly before ``t``; -1 if none."""
        acc = np.asarray(acc, dtype=np.int64)
        return self.previous(self._pos(acc, t), acc)

    def previous(self, pos: np.ndarray, acc: np.ndarray) -> np.ndarray:
        """Index of the event just before ``pos`` if it belongs to ``acc``; -1 otherwise."""
        prev = np.asarray(pos) - 1
        if not len(self):
            return np.full(len(prev), -1)
        safe = np.clip(prev, 0, None)
        return np.where((prev >= 0) & (self.acc[safe] == acc), prev, -1)

    def value_at(self, name: str, idx: np.ndarray) -> np.ndarray:
        """A value of the events at ``idx`` (NaN where idx is -1)."""
        if not len(self):
            return np.full(len(idx), np.nan)
        return np.where(idx >= 0, self.values[name][np.clip(idx, 0, None)], np.nan)

    def when_at(self, idx: np.ndarray) -> np.ndarray:
        """The instants of the events at ``idx`` (``NAT`` where idx is -1)."""
        if not len(self):
            return np.full(len(idx), NAT, dtype=np.int64)
        return np.where(idx >= 0, self.when[np.clip(idx, 0, None)], NAT)


def first_reaching(
    acc: np.ndarray, when: np.ndarray, reach: np.ndarray, q_acc: np.ndarray, q_t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For events ``[when, reach)`` (e.g. an invoice from its due date until it is settled),
    the earliest ``when`` among those of the row's account with ``when < t <= reach``, and a
    mask of rows that have one.

    Events of an account sorted by ``when`` with the running maximum R of ``reach``: the first
    event with ``reach >= t`` is the first with ``R >= t``, and R is sorted, so one
    ``searchsorted`` answers every row.
    """
    index, found = first_reaching_index(acc, when, reach, q_acc, q_t)
    when = np.asarray(when, dtype=np.int64)
    got = when[np.clip(index, 0, None)] if len(when) else np.full(len(index), NAT)
    return np.where(found, got, NAT), found


def first_reaching_index(
    acc: np.ndarray, when: np.ndarray, reach: np.ndarray, q_acc: np.ndarray, q_t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`first_reaching`'s event as its position in the given arrays (-1 where none),
    and the mask of rows that have one. Of events with the same ``when``, the one with the
    smallest ``reach`` that still reaches ``t``, then the first given."""
    acc = np.asarray(acc, dtype=np.int64)
    keep = np.flatnonzero((acc >= 0) & (np.asarray(when) != NAT))
    reach = np.where(np.asarray(reach) == NAT, NEVER, reach)
    acc, when, reach = acc[keep], np.asarray(when)[keep], np.asarray(reach)[keep]
    order = np.lexsort((reach, when, acc))
    acc, when, reach, keep = acc[order], when[order], reach[order], keep[order]
    # accounts sorted ascending: a global running max of the composite key is per account
    run = np.maximum.accumulate(acc * _SPAN + _offset(reach)) if len(acc) else acc
    q_acc = np.asarray(q_acc, dtype=np.int64)
    i = np.searchsorted(run, q_acc * _SPAN + _offset(q_t), side="left")
    safe = np.clip(i, 0, max(len(acc) - 1, 0))
    found = (i < len(acc)) & (acc[safe] == q_acc) & (when[safe] < q_t) if len(acc) else i < 0
    return np.where(found, keep[safe] if len(acc) else -1, -1), found
