"""The purchase-cycle features read literally from their definitions (features/CATALOG.md,
features/signals/purchase.py), one account and date at a time (slow on purpose): the reference
the vectorised engine is compared with."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

DAYS_PER_MONTH = 30.4375
RECENT = 3


def purchase_reference(invoices: pd.DataFrame, t: pd.Timestamp) -> dict[str, float]:
    """The purchase features of the account whose invoices are given, at as_of ``t`` (midnight).

    ``invoices`` may hold any invoices of that one account: only those issued before ``t``
    count."""
    inv = invoices[invoices.issued_at < t]
    days = sorted(set(inv.issued_at.dt.normalize()))
    o: dict[str, float] = {"purchases_to_date": float(len(days))}
    gaps = np.array([(b - a).days for a, b in itertools.pairwise(days)], dtype=float)
    since = (t.normalize() - days[-1]).days if days else np.nan
    o["days_since_last_purchase"] = since
    o["purchase_gap_days"] = float(np.median(gaps)) if len(gaps) else np.nan
    o["purchase_cycles_since_last"] = since / o["purchase_gap_days"]
    o["purchase_gap_variation"] = gaps.std() / gaps.mean() if len(gaps) >= 2 else np.nan
    o["months_since_first_purchase"] = (
        (t.normalize() - days[0]).days / DAYS_PER_MONTH if days else np.nan
    )
    valued = inv[inv.amount.notna()].sort_values(["issued_at", "amount"])
    amounts = valued.amount.to_numpy(dtype=float)
    o["avg_invoice_value"] = amounts.mean() if len(amounts) else np.nan
    o["invoice_value_trend"] = np.nan
    if len(amounts) >= 2 * RECENT:
        recent, earlier = amounts[-RECENT:].mean(), amounts[:-RECENT].mean()
        o["invoice_value_trend"] = (recent - earlier) / earlier if earlier else np.nan
    return o
