"""Financial signals: trailing revenue, quarter-over-quarter spend change, payment
lateness, what is overdue now, discounts, the next renewal and renewal with flat spend; and
the invoice evidence of the escalations (:func:`invoice_evidence`: not model features).

Sources: ``invoices`` (known from ``issued_at``; paid only when ``paid_at`` is before as_of) and
the static ``accounts`` attributes ``contract_value`` and ``renewal_at``.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import pandas as pd

from features.contract import Tables
from features.signals.timeline import (
    DAY,
    NAT,
    NEVER,
    Grid,
    Timeline,
    baseline_days,
    baseline_window,
    column,
    day_of,
    first_reaching,
    first_reaching_index,
    flag,
    floats,
    not_before,
    ratio,
    recorded,
    seconds,
    usual_pace,
)

LATENESS_WINDOW_DAYS = 365
RENEWAL_SOON_DAYS = 90
FLAT_SPEND = 0.05

# The invoice evidence columns of a snapshot (docs/domain.md#escalations): the unpaid invoice
# that most recently became ``late_days`` or more days late (and is not yet stale), and the
# invoices unpaid ``stale_days`` or more days past due (count, and the oldest of them).
INVOICE_EVIDENCE: tuple[str, ...] = (
    "late_invoice_id",
    "late_invoice_amount",
    "late_invoice_days_late",
    "stale_invoices",
    "stale_invoice_id",
    "stale_invoice_amount",
    "stale_invoice_days_late",
)


def compute(tables: Tables, grid: Grid) -> dict[str, np.ndarray]:
    """Financial features per grid row; missing invoices leave their features out (NaN)."""
    out = _account_terms(grid)
    if tables.invoices is not None:
        out |= _invoices(tables, grid)
        flat = (out["spend_change_qoq"] <= FLAT_SPEND) | (
            (out["revenue_90d"] == 0) & (out["_revenue_previous_90d"] == 0)
        )
        days = out["days_to_renewal"]
        out["renewal_flat_spend"] = np.where(
            np.isnan(days), np.nan, flag((days <= RENEWAL_SOON_DAYS) & flat)
        )
    out.pop("_revenue_previous_90d", None)
    return out


def next_renewal_days(renewal: pd.Series, as_of: pd.Series) -> np.ndarray:
    """Days from as_of to the renewal date rolled forward by whole years to on or after as_of
    (29 February falls on 28 February in other years); NaN without a renewal date."""
    renewal = pd.to_datetime(renewal).reset_index(drop=True)
    as_of = pd.to_datetime(as_of).reset_index(drop=True)
    years = (as_of.dt.year - renewal.dt.year).clip(lower=0)
    shifted = _add_years(renewal, years)
    behind = shifted < as_of
    shifted = shifted.where(~behind, _add_years(renewal, years + 1))
    return cast(np.ndarray, ((shifted - as_of).dt.days).to_numpy(dtype=np.float64, na_value=np.nan))


def _add_years(dates: pd.Series, years: pd.Series) -> pd.Series:
    year = dates.dt.year + years
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    day = dates.dt.day.where(~((dates.dt.month == 2) & (dates.dt.day == 29) & ~leap), 28)
    parts = pd.DataFrame({"year": year, "month": dates.dt.month, "day": day})
    return pd.to_datetime(parts.where(dates.notna()), errors="coerce")


def _account_terms(grid: Grid) -> dict[str, np.ndarray]:
    as_of = pd.Series(grid.t.view("datetime64[s]")).astype("datetime64[ns]")
    renewal = grid.account_values("renewal_at")
    return {
        "contract_value": floats(grid.account_values("contract_value")),
        "days_to_renewal": next_renewal_days(renewal.astype("datetime64[ns]"), as_of),
    }


def _invoices(tables: Tables, grid: Grid) -> dict[str, np.ndarray]:
    frame = tables.invoices
    assert frame is not None
    acc = grid.code(frame["account_id"])
    issued = seconds(frame["issued_at"])
    due = not_before(seconds(frame["due_at"]), issued)
    paid = seconds(column(frame, "paid_at", "datetime64[ns]"))
    # settled: the later of payment and due date (paying early never makes an invoice late)
    settled = np.where(paid == NAT, NEVER, np.maximum(not_before(paid, issued), due))
    amount = floats(frame["amount"])
    discount = floats(column(frame, "discount"))
    billed = Timeline(acc, issued, {"amount": amount, "discount": discount})
    a, t = grid.acc, grid.t
    out: dict[str, np.ndarray] = {}
    recent = billed.total("amount", a, grid.ago(90), t)
    previous = billed.total("amount", a, grid.ago(180), grid.ago(90))
    out["revenue_90d"] = recent
    out["revenue_365d"] = billed.total("amount", a, grid.ago(365), t)
    out["spend_change_qoq"] = ratio(recent - previous, previous)
    out["_revenue_previous_90d"] = previous
    out["avg_days_late_365d"] = _mean_days_late(acc, due, settled, grid)
    out |= _overdue(acc, due, settled, amount, grid)
    out |= _against_usual(billed, acc, due, not_before(paid, issued), settled, grid)

    def discount_share(start: np.ndarray, end: np.ndarray) -> np.ndarray:
        given = billed.total("discount", a, start, end)
        return ratio(given, billed.total("amount", a, start, end) + given)

    if recorded(tables, "invoices", "discount"):
        out["discount_share_365d"] = discount_share(grid.ago(365), t)
        out["discount_share_90d"] = discount_share(grid.ago(90), t)
        out["discount_share_vs_usual"] = out["discount_share_90d"] - discount_share(
            *baseline_window(grid)
        )
    return out


def _against_usual(
    billed: Timeline,
    acc: np.ndarray,
    due: np.ndarray,
    paid: np.ndarray,
    settled: np.ndarray,
    grid: Grid,
) -> dict[str, np.ndarray]:
    """Spend, invoice size and payment delay of the last 90 days against the account's own
    year before them. A payment's delay (days from due date to payment, 0 when on time) is
    known once it is paid, so delays are stamped at the payment (``paid``, never before the
    invoice's issue)."""
    a, t, quarter = grid.acc, grid.t, grid.ago(90)
    start, end = baseline_window(grid)
    usual_spend = usual_pace(billed.total("amount", a, start, end), baseline_days(grid))
    recent_spend = billed.total("amount", a, quarter, t)
    on_paid = (paid != NAT) & (due != NAT)
    delays = Timeline(
        acc[on_paid],
        paid[on_paid],
        {"late": (settled[on_paid] - due[on_paid]) / DAY},
    )
    return {
        "spend_vs_usual": ratio(recent_spend - usual_spend, usual_spend),
        "invoice_amount_vs_usual": ratio(
            billed.mean("amount", a, quarter, t), billed.mean("amount", a, start, end)
        )
        - 1.0,
        "days_late_vs_usual": delays.mean("late", a, quarter, t)
        - delays.mean("late", a, start, end),
    }


def _mean_days_late(
    acc: np.ndarray, due: np.ndarray, settled: np.ndarray, grid: Grid
) -> np.ndarray:
    """Mean over invoices due in [as_of - 365 days, as_of) of min(settled, as_of) - due.

    Each invoice's lateness is piecewise linear in as_of: it grows with slope 1 from its due
    date, stops growing once settled, and leaves the window 365 days after its due date. Those
    three moments are events carrying (count, slope, intercept) changes, so the sum at every
    row is slope * as_of + intercept from prefix sums: no pairing of invoices with dates.
    """
    window = LATENESS_WINDOW_DAYS * DAY
    ok = due != NAT
    acc, due, settled = acc[ok], due[ok], settled[ok]
    expire = due + window
    stops = settled <= expire  # settled while still in the window
    frames = [
        (acc, due, np.ones(len(due)), np.ones(len(due)), -due.astype(np.float64)),
        (
            acc[stops],
            settled[stops],
            np.zeros(stops.sum()),
            -np.ones(stops.sum()),
            settled[stops].astype(np.float64),
        ),
        (
            acc,
            expire,
            -np.ones(len(due)),
            np.where(stops, 0.0, -1.0),
            np.where(stops, -(settled - due), due).astype(np.float64),
        ),
    ]
    events = Timeline(
        np.concatenate([f[0] for f in frames]),
        np.concatenate([f[1] for f in frames]),
        {
            "n": np.concatenate([f[2] for f in frames]),
            "slope": np.concatenate([f[3] for f in frames]),
            "intercept": np.concatenate([f[4] for f in frames]),
        },
    )
    a, t = grid.acc, grid.t
    n = events.total("n", a, None, t)
    late_seconds = events.total("slope", a, None, t) * t + events.total("intercept", a, None, t)
    return ratio(late_seconds / DAY, n)


def _overdue(
    acc: np.ndarray, due: np.ndarray, settled: np.ndarray, amount: np.ndarray, grid: Grid
) -> dict[str, np.ndarray]:
    """What is past due and not paid before as_of: amount (to the cent) and days of the oldest."""
    cents = np.round(np.nan_to_num(amount) * 100)  # whole cents add up exactly
    ok = due != NAT
    paid = ok & (settled != NEVER)
    events = Timeline(
        np.concatenate([acc[ok], acc[paid]]),
        np.concatenate([due[ok], settled[paid]]),
        {"cents": np.concatenate([cents[ok], -cents[paid]])},
    )
    a, t = grid.acc, grid.t
    oldest, found = first_reaching(acc, due, settled, a, t)
    days = np.where(found, day_of(t) - day_of(oldest), 0.0)
    return {
        "overdue_amount": events.total("cents", a, None, t) / 100,
        "overdue_days": days,
        "overdue_30d": flag(days >= 30),
    }


def invoice_evidence(
    tables: Tables, grid: Grid, late_days: float, stale_days: float
) -> dict[str, np.ndarray]:
    """The :data:`INVOICE_EVIDENCE` columns per grid row (all missing without invoices).

    An invoice is late at as_of when its due date is before as_of and it is not paid before
    as_of (as for ``overdue_days``); its days late are whole days from the due date to as_of.
    ``late_invoice_*``: of the late invoices with ``late_days <= days late < stale_days``, the
    one with the fewest days late (the latest due date; ties: the smallest invoice id), so an
    invoice that crossed ``late_days`` since any earlier date is this one or a later-crossing
    one. ``stale_invoices`` counts late invoices with ``days late >= stale_days`` and
    ``stale_invoice_*`` describes the oldest of them.

    Cost: the invoices due in the ``stale_days`` before each row are paired with it (an
    account's invoices of one year per row); older invoices are counted by prefix counts.
    """
    n = len(grid)
    out: dict[str, np.ndarray] = {
        "late_invoice_id": np.full(n, None, dtype=object),
        "late_invoice_amount": np.full(n, np.nan),
        "late_invoice_days_late": np.full(n, np.nan),
        "stale_invoices": np.full(n, np.nan),
        "stale_invoice_id": np.full(n, None, dtype=object),
        "stale_invoice_amount": np.full(n, np.nan),
        "stale_invoice_days_late": np.full(n, np.nan),
    }
    frame = tables.invoices
    if frame is None:
        return out
    acc = grid.code(frame["account_id"])
    issued = seconds(frame["issued_at"])
    due = not_before(seconds(frame["due_at"]), issued)
    paid = seconds(column(frame, "paid_at", "datetime64[ns]"))
    settled = np.where(paid == NAT, NEVER, np.maximum(not_before(paid, issued), due))
    ids = frame["invoice_id"].astype("string").to_numpy(dtype=object, na_value=None)
    amount = floats(frame["amount"])
    ok = (acc >= 0) & (due != NAT)
    id_rank = np.zeros(len(frame), dtype=np.float64)
    if ok.any():
        # ties on the due date go to the smallest invoice id: a rank that sorts like the ids
        named = pd.Series(ids[ok], dtype="string").fillna("")
        id_rank[ok] = named.rank(method="first").to_numpy()
    position = np.arange(len(frame), dtype=np.float64)
    dues = Timeline(acc[ok], due[ok], {"row": position[ok]}, tiebreak=-id_rank[ok])
    settles = Timeline(acc[ok & (settled != NEVER)], settled[ok & (settled != NEVER)])

    a, t = grid.acc, grid.t
    today = t // DAY
    stale_from = (today - int(stale_days) + 1) * DAY  # due on or after: fewer than stale_days
    lo, hi = dues.window(a, stale_from, t)
    # pair each row with its account's invoices due in [stale_from, as_of)
    counts = hi - lo
    row = np.repeat(np.arange(n), counts)
    starts = np.repeat(lo - np.cumsum(np.concatenate([[0], counts[:-1]])), counts)
    event = starts + np.arange(len(row))
    src = dues.values["row"][event].astype(np.int64) if len(event) else event
    unpaid = settled[src] >= t[row]
    days_late = (today[row] - due[src] // DAY).astype(np.float64)
    # paid before as_of among them: corrects the prefix counts of the stale invoices below
    paid_recent = np.bincount(row[~unpaid], minlength=n).astype(np.float64)
    late = unpaid & (days_late >= late_days)
    # events are sorted by (account, due, -id rank): the last late one of a row is the pick
    pick = np.full(n, -1, dtype=np.int64)
    late_rows, late_src = row[late], src[late]
    last = np.append(late_rows[1:] != late_rows[:-1], len(late_rows) > 0)[: len(late_rows)]
    pick[late_rows[last]] = late_src[last]
    found = pick >= 0
    out["late_invoice_id"][found] = ids[pick[found]]
    out["late_invoice_amount"][found] = amount[pick[found]]
    out["late_invoice_days_late"][found] = (today[found] - due[pick[found]] // DAY).astype(float)

    # unpaid and due before stale_from = due before stale_from - settled before as_of
    # + settled before as_of yet due on or after stale_from (those are among the pairs)
    older = dues.count(a, None, stale_from)
    settled_before = settles.count(a, None, t)
    out["stale_invoices"] = older - settled_before + paid_recent
    if not ok.any():
        return out
    index, oldest = first_reaching_index(acc[ok], due[ok], settled[ok], a, t)
    src_oldest = np.flatnonzero(ok)[np.clip(index, 0, None)]
    stale_days_late = np.where(oldest, today - due[ok][np.clip(index, 0, None)] // DAY, 0)
    stale = oldest & (stale_days_late >= stale_days)
    out["stale_invoice_id"][stale] = ids[src_oldest[stale]]
    out["stale_invoice_amount"][stale] = amount[src_oldest[stale]]
    out["stale_invoice_days_late"][stale] = stale_days_late[stale].astype(float)
    return out
