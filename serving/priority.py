"""One priority per scored account: ``act_now``, ``watch`` or ``ok`` (docs/metrics.md#priority).

The priority combines the model's churn probability, read against the bundle's operating
points (``churn.bundle.OperatingPoints``, chosen by training on the validation period), with
the rule-based escalations and health band:

- ``act_now``: the probability is at or above the ``act_now`` point, or a severe escalation
  fired (:data:`SEVERE_ESCALATIONS`: health below 40, an invoice 30+ days late), or the
  health band is critical;
- ``watch``: otherwise, the probability is at or above the ``watch`` point, or any other
  escalation fired (health below 60, a 15-point drop in 30 days), or the health band is
  at risk;
- ``ok``: everything else.

Without a probability (no model loaded, or a feature matrix the model could not score) only
the escalations and the health band decide. The API's few accounts and the batch's whole
portfolio both go through :func:`priorities`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from churn.bundle import OperatingPoints
from features.health import ESCALATION_CODES

#: The priorities, most urgent first (the order the action queue sorts by).
PRIORITIES: tuple[str, ...] = ("act_now", "watch", "ok")
PRIORITY_LABELS: Mapping[str, str] = {"act_now": "Act now", "watch": "Watch", "ok": "OK"}
#: The health bands as people read them.
BAND_LABELS: Mapping[str, str] = {
    "critical": "Critical",
    "at_risk": "At risk",
    "healthy": "Healthy",
}
#: Escalations that make an account ``act_now`` whatever the model says.
SEVERE_ESCALATIONS: tuple[str, ...] = ("esc_below_40", "esc_invoice_30d_late")
#: Every other escalation makes it at least ``watch``.
WATCH_ESCALATIONS: tuple[str, ...] = tuple(
    c for c in ESCALATION_CODES if c not in SEVERE_ESCALATIONS
)
#: Health bands that make an account ``act_now`` / at least ``watch``.
ACT_NOW_BANDS: tuple[str, ...] = ("critical",)
WATCH_BANDS: tuple[str, ...] = ("at_risk",)


def floats(values: Any) -> np.ndarray:
    """A Series, array or list as floats; NaN where unknown (None, NaN, not a number)."""
    if isinstance(values, pd.Series):
        numeric: np.ndarray = pd.to_numeric(values, errors="coerce").to_numpy(
            dtype=float, na_value=np.nan
        )
        return numeric
    return np.asarray([np.nan if v is None else v for v in values], dtype=float)


def _any(fired: Mapping[str, Any], codes: Sequence[str], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    for code in codes:
        if code in fired:
            values = fired[code]
            if isinstance(values, pd.Series):
                values = values.to_numpy(dtype=object, na_value=False)
            out |= np.asarray(values, dtype=object).astype(bool)
    return out


def one_of(values: np.ndarray, choices: Sequence[str]) -> np.ndarray:
    """Where an object array equals one of ``choices`` (``np.isin`` sorts object arrays: a
    few comparisons are cheaper for the API's few rows)."""
    out = np.zeros(len(values), dtype=bool)
    for choice in choices:
        out |= values == choice
    return out


def fired_matrix(codes_per_row: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """Per escalation code, whether it fired for each row (from each row's list of codes)."""
    return {
        code: np.fromiter((code in codes for codes in codes_per_row), bool, len(codes_per_row))
        for code in ESCALATION_CODES
    }


def priorities(
    probability: Sequence[float | None] | np.ndarray | pd.Series,
    health_band: Sequence[object] | np.ndarray | pd.Series,
    fired: Mapping[str, Any],
    points: OperatingPoints,
) -> np.ndarray:
    """Each row's priority (an object array of str), as the module docstring defines it.

    ``probability``: calibrated churn probability, None or NaN where unknown; ``fired``: per
    escalation code (``features.health.ESCALATION_CODES``) a boolean per row (a missing code
    never fired; see :func:`fired_matrix`); ``points``: the bundle's operating points.
    """
    p = floats(probability)
    n = len(p)
    band = np.asarray(
        health_band.to_numpy(dtype=object, na_value="")
        if isinstance(health_band, pd.Series)
        else [("" if b is None else b) for b in health_band],
        dtype=object,
    )
    with np.errstate(invalid="ignore"):
        act_now = (p >= points.act_now) | _any(fired, SEVERE_ESCALATIONS, n)
        watch = (p >= points.watch) | _any(fired, WATCH_ESCALATIONS, n)
    act_now |= one_of(band, ACT_NOW_BANDS)
    watch |= one_of(band, WATCH_BANDS)
    out = np.full(n, "ok", dtype=object)
    out[watch] = "watch"
    out[act_now] = "act_now"
    return out
