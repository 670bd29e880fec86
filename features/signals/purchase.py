"""Purchase-cycle signals: when and how often the client buys, read from its invoices.

A *purchase* is a distinct calendar day (UTC) with at least one invoice; it is known from its
first invoice of that day, and like every invoice only when issued strictly before as_of. The
gaps are the whole days between an account's consecutive purchases. From them, per row:

* ``days_since_last_purchase``: whole days from the last purchase's day to as_of's day;
* ``purchases_to_date``: purchases so far in the data (0 with invoices but none yet);
* ``purchase_gap_days``: the median gap (NaN below two purchases): the same typical gap the
  ``inactivity`` label mode scales its silence window by;
* ``purchase_cycles_since_last``: ``days_since_last_purchase / purchase_gap_days``;
* ``months_since_first_purchase``: months (of 30.4375 days) since the first purchase's day;
* ``purchase_gap_variation``: the coefficient of variation of the gaps, their standard
  deviation (over all gaps, not a sample estimate) over their mean (NaN below three purchases);
* ``avg_invoice_value``: the mean amount of the invoices so far;
* ``invoice_value_trend``: the mean of the last :data:`RECENT_INVOICES` invoices against the
  mean of the earlier ones, as a relative change (NaN unless there are at least
  :data:`RECENT_INVOICES` earlier ones, or when they average 0). Invoices of the same instant
  are ordered by amount, so the value does not hang on the order of the source's rows.

Every value is read from the account's last purchase or invoice before as_of, whose running
values (prefix counts, sums and the running median) depend only on that account's earlier
invoices: later invoices or other accounts cannot change them. Without an ``invoices`` table
all of them are absent (NaN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import Tables
from features.signals.lifecycle import DAYS_PER_MONTH
from features.signals.timeline import DAY, NAT, Grid, Timeline, day_of, floats, ratio, seconds

RECENT_INVOICES = 3
"""Invoices in the recent side of ``invoice_value_trend`` (and at least as many earlier)."""


def compute(tables: Tables, grid: Grid) -> dict[str, np.ndarray]:
    """Purchase-cycle features per grid row; without invoices, none (all NaN)."""
    if tables.invoices is None:
        return {}
    frame = tables.invoices
    acc = grid.code(frame["account_id"])
    issued = seconds(frame["issued_at"])
    keep = (acc >= 0) & (issued != NAT)
    out = _purchases(acc[keep], issued[keep], grid)
    out |= _invoice_values(acc[keep], issued[keep], floats(frame["amount"])[keep], grid)
    return out


def purchase_days(acc: np.ndarray, issued: np.ndarray) -> pd.DataFrame:
    """One row per purchase (an account's distinct invoice day), sorted by account and day:
    ``acc``, ``day`` (days since the epoch), ``first`` (the instant of the day's first invoice,
    when the purchase is known), ``gap`` (days since the account's previous purchase, NaN for
    its first) and ``median`` (the running median of its gaps so far, NaN before a second
    purchase). The inactivity label's usual cycle reads the same ``median``."""
    days = pd.DataFrame({"acc": acc, "day": issued // DAY, "first": issued})
    # one event per purchase, known from the first invoice of its day
    days = days.groupby(["acc", "day"], sort=True, as_index=False)["first"].min()
    same = days["acc"].eq(days["acc"].shift())
    days["gap"] = days["day"].diff().where(same)
    median = days["gap"].groupby(days["acc"], sort=True).expanding().median()
    days["median"] = median.reset_index(level=0, drop=True).sort_index()
    return days


def _purchases(acc: np.ndarray, issued: np.ndarray, grid: Grid) -> dict[str, np.ndarray]:
    """Recency, count, typical gap, regularity and age of the purchases (distinct days)."""
    days = purchase_days(acc, issued)
    gap = days["gap"]
    by_acc = gap.groupby(days["acc"], sort=False)
    values = {
        "day": days["day"].astype(np.float64),
        "first_day": days.groupby("acc", sort=False)["day"].transform("min").astype(np.float64),
        "n": days.groupby("acc", sort=False).cumcount().astype(np.float64) + 1,
        "median": days["median"],
        # whole days: these sums are exact integers in float64
        "gap_sum": by_acc.cumsum(),
        "gap_squares": (gap * gap).groupby(days["acc"], sort=False).cumsum(),
    }
    events = Timeline(days["acc"].to_numpy(), days["first"].to_numpy(), values)
    a, t = grid.acc, grid.t
    last = events.last(a, t)
    today = day_of(t)
    since = today - events.value_at("day", last)
    typical = events.value_at("median", last)
    n = np.where(last >= 0, events.value_at("n", last), 0.0)
    gaps = n - 1
    total = events.value_at("gap_sum", last)
    spread = np.sqrt(np.maximum(gaps * events.value_at("gap_squares", last) - total * total, 0.0))
    return {
        "days_since_last_purchase": since,
        "purchases_to_date": n,
        "purchase_gap_days": typical,
        "purchase_cycles_since_last": ratio(since, typical),
        "months_since_first_purchase": (today - events.value_at("first_day", last))
        / DAYS_PER_MONTH,
        "purchase_gap_variation": np.where(gaps >= 2, ratio(spread, total), np.nan),
    }


def _invoice_values(
    acc: np.ndarray, issued: np.ndarray, amount: np.ndarray, grid: Grid
) -> dict[str, np.ndarray]:
    """Mean invoice amount so far and the trend of the last invoices against the earlier."""
    ok = np.isfinite(amount)
    acc, issued, amount = acc[ok], issued[ok], amount[ok]
    order = np.lexsort((amount, issued, acc))  # the order the timeline keeps
    acc, issued, amount = acc[order], issued[order], amount[order]
    values = pd.Series(amount)
    group = values.groupby(acc, sort=False)
    cumulative = group.cumsum()
    recent = sum(group.shift(k) for k in range(RECENT_INVOICES))  # the last ones, in order
    # the earlier invoices' exact prefix sum, not the total minus the recent ones
    earlier = cumulative.groupby(acc, sort=False).shift(RECENT_INVOICES)
    events = Timeline(
        acc,
        issued,
        {
            "n": group.cumcount().to_numpy(np.float64) + 1,
            "sum": cumulative,
            "recent": recent,
            "earlier": earlier,
        },
        tiebreak=amount,
    )
    a, t = grid.acc, grid.t
    last = events.last(a, t)
    n = events.value_at("n", last)
    before = n - RECENT_INVOICES
    recent_mean = events.value_at("recent", last) / RECENT_INVOICES
    earlier_mean = ratio(events.value_at("earlier", last), before)
    trend = ratio(recent_mean - earlier_mean, earlier_mean)
    return {
        "avg_invoice_value": ratio(events.value_at("sum", last), n),
        "invoice_value_trend": np.where(before >= RECENT_INVOICES, trend, np.nan),
    }
