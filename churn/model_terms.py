"""Terms derived from the churn model that training and serving both use: the base rate, the
risk bands and the revenue a churn probability puts at risk.

Training and serving never import each other, so these definitions live in the core. Plain
numpy and pandas on column names; see ``docs/metrics.md`` for the definitions in words.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

# -- the base rate ---------------------------------------------------------------------------

#: What ``base_rate`` means wherever the name is used (bundle metadata, API, model card).
BASE_RATE_DEFINITION = (
    "calibrated probability at the model's expected raw score "
    "(LightGBM's SHAP bias, the mean log-odds over the training rows): "
    "calibration(sigmoid(bias))"
)


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    """The logistic function: log-odds to probability."""
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def base_rate(bias: float, calibrate: Callable[[np.ndarray], np.ndarray]) -> float:
    """The model's base rate: the calibrated probability of an account whose features all sit
    at the model's average, ``calibrate(sigmoid(bias))``.

    ``bias`` is LightGBM's SHAP expected value (the last column of ``predict(...,
    pred_contrib=True)``, the same for every row); ``calibrate`` maps raw probabilities to
    calibrated ones (the bundle's calibration). Each account's impacts add up from it to its
    probability. Not the churn rate of any data set: that is a ``churn_rate``.
    """
    return float(calibrate(sigmoid(np.array([float(bias)])))[0])


# -- risk bands ------------------------------------------------------------------------------

# Risk bands of the calibrated churn probability, highest first, each with its lower bound: a
# 0.30 means about three in ten such clients leave within the horizon: high.
RISK_BANDS: tuple[tuple[str, float], ...] = (("high", 0.30), ("medium", 0.15), ("low", 0.0))
RISK_BAND_NAMES: tuple[str, ...] = tuple(band for band, _ in RISK_BANDS)
#: Without a probability the risk band follows the health band.
HEALTH_TO_RISK: Mapping[str, str] = {"critical": "high", "at_risk": "medium", "healthy": "low"}


def risk_bands(
    probability: Sequence[float | None] | np.ndarray | pd.Series,
    health_band: Sequence[object] | np.ndarray | pd.Series,
) -> np.ndarray:
    """Each row's risk band (an object array of str): ``high`` when the probability is at
    least 0.30, ``medium`` at least 0.15, else ``low``; where the probability is unknown
    (None or NaN), from the health band (critical -> high, at_risk -> medium, healthy -> low),
    and None when that is unknown too.

    The API's few accounts and the batch's whole portfolio both go through here.
    """
    if isinstance(probability, list | tuple):
        probability = [math.nan if v is None else v for v in probability]
    p = np.asarray(probability, dtype=float)
    health = np.asarray(health_band, dtype=object)
    health = np.where(pd.isna(health), "", health)  # NA compares as no band
    out = np.full(len(p), None, dtype=object)
    for band, risk in HEALTH_TO_RISK.items():
        out[health == band] = risk
    # Lowest band first, each higher one overwrites; NaN meets no bound and keeps the above.
    for band, lower in reversed(RISK_BANDS):
        out[p >= lower] = band
    return out


# -- the revenue at risk ---------------------------------------------------------------------

#: The annual revenue of an account: the first of these columns that is known. Revenue
#: invoiced in the last 365 days, else the contract value (sources without invoices).
REVENUE_BASIS: tuple[str, ...] = ("revenue_365d", "contract_value")


def _floats(values: Any, rows: int) -> np.ndarray:
    if isinstance(values, pd.Series):
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return np.fromiter((_float(v) for v in values), float, rows)


def _float(value: object) -> float:
    if isinstance(value, float | int | np.number):
        return float(value)
    return math.nan


def annual_revenue(columns: Mapping[str, Any], rows: int) -> np.ndarray:
    """Each row's annual revenue (:data:`REVENUE_BASIS`): ``revenue_365d``, else
    ``contract_value``; NaN when neither is known.

    ``columns`` maps column names to values: a DataFrame, or a dict of sequences (anything
    not a number is unknown). An absent column is unknown for every row.
    """
    out = np.full(rows, np.nan)
    for name in REVENUE_BASIS:
        if name in columns:
            values = _floats(columns[name], rows)
            out = np.where(np.isnan(out), values, out)
    return out
