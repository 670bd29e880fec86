"""Explanations: each feature's signed impact on an account's churn probability.

LightGBM's TreeSHAP (``predict(pred_contrib=True)``) splits each account's raw score (log-odds)
into per-feature contributions ``phi_i`` plus a bias that is the same for every account. The
probability is ``p = calibration(sigmoid(bias + sum(phi)))`` and the starting point is the
*base rate* ``b = calibration(sigmoid(bias))`` (``churn.model_terms.base_rate``): the calibrated
probability of an account whose features are all at the model's average. The impacts rescale
the contributions so they add up exactly in probability space::

    impact_i = phi_i * (p - b) / sum(phi)        (all zero when sum(phi) == 0, then p == b)
    b + sum(impact_i) == p

Calibration is monotone, so rescaling keeps every sign. Impacts are reported in probability
points (``impact_pts``: +9.0 means +9 percentage points). Everything here is vectorised over
rows; the API and batch scoring share it.

A feature whose value is unknown has an impact too (the model routes missing values down a
branch of its own), but it is never given as a reason: the reasons are the largest impacts
among the *known* values, and the unknown ones count in ``other_impact_pts`` with the rest, so
the sums stay exact. Playbook actions follow the reasons, so no action rests on an unknown.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from churn.bundle import Bundle
from churn.errors import BundleIntegrityError
from churn.model_terms import base_rate, sigmoid
from features.catalog import FEATURES, Feature

# One row at a time LightGBM's OpenMP start-up costs ~8 ms; one thread answers in ~0.4 ms, and
# concurrent API requests get their parallelism from the thread pool. A batch (churn score,
# large requests) has rows enough to pay for the start-up: it uses every core.
_PARALLEL_ROWS = 2000


def _threads(rows: int) -> int:
    return (os.cpu_count() or 1) if rows >= _PARALLEL_ROWS else 1


def format_pts(impact_pts: float) -> str:
    """``+9 pts``, ``-3 pts``; one decimal under one point (``+0.4 pts``); ``0 pts``."""
    if abs(impact_pts) >= 0.95:
        return f"{impact_pts:+.0f} pts"
    if abs(impact_pts) < 0.05:
        return "0 pts"
    return f"{impact_pts:+.1f} pts"


def format_pts_array(impacts_pts: np.ndarray) -> np.ndarray:
    """:func:`format_pts` of every value (an object array of str), with one Python call per
    distinct rounded value rather than per value (batch scoring formats ~200k impacts).

    ``np.rint`` rounds half to even on the exact binary value, as ``format`` does, so whole
    points round identically; a tenth whose computed ``10 x`` lies within 1e-6 of a tie (where
    the product's own rounding could tip it) and any non-finite value go through
    :func:`format_pts` itself.
    """
    pts = np.asarray(impacts_pts, dtype=float)
    out = np.full(pts.shape, "0 pts", dtype=object)
    size = np.abs(pts)
    finite = np.isfinite(pts)
    whole = finite & (size >= 0.95)
    tenth = finite & (size >= 0.05) & ~whole
    scaled = np.where(tenth, pts, 0.0) * 10.0  # only tenths: no overflow, no inf - inf
    near_tie = tenth & (np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6)
    slow = ~finite | near_tie
    fast = (whole | tenth) & ~slow
    rounded = np.where(whole, np.rint(pts), np.rint(scaled) / 10.0)[fast]
    distinct, inverse = np.unique(rounded, return_inverse=True)
    texts = np.array([format_pts(v) for v in distinct.tolist()], dtype=object)
    out[fast] = texts[inverse.reshape(-1)]
    out[slow] = [format_pts(v) for v in pts[slow].tolist()]
    return out


@dataclass(frozen=True)
class Explanation:
    """Probabilities and impacts for ``n`` rows of ``F`` features.

    ``impacts`` are in probability units (fractions); ``impacts.sum(1) + base_rate ==
    probability``. ``values`` are the rows as given (NaN = unknown).
    """

    feature_names: tuple[str, ...]
    values: np.ndarray
    probability: np.ndarray
    impacts: np.ndarray
    base_rate: float

    def impacts_pts(self) -> np.ndarray:
        return self.impacts * 100.0


class Explainer:
    """Scores and explains rows with one loaded bundle; immutable, shared between threads."""

    def __init__(self, bundle: Bundle) -> None:
        names = bundle.feature_names
        unknown = [n for n in names if n not in FEATURES or FEATURES[n].kind == "category"]
        if unknown:
            raise BundleIntegrityError(
                f"model bundle {bundle.path} uses features the catalogue does not define as "
                f"numeric inputs: {unknown}",
                hint="export the bundle with this version of the feature catalogue",
            )
        self.bundle = bundle
        self.version = bundle.version
        self.feature_names: tuple[str, ...] = tuple(names)
        self.index: dict[str, int] = {n: i for i, n in enumerate(names)}
        self.features: tuple[Feature, ...] = tuple(FEATURES[n] for n in names)
        # Each feature's median over the training accounts (NaN where the bundle has none).
        typical = bundle.feature_typical
        self.typical = np.array([typical.get(n, np.nan) for n in names], dtype=float)
        self.calibration = bundle.calibration
        bias = self._contributions(np.full((1, len(names)), np.nan))[0, -1]
        self.bias = float(bias)
        self.base_rate = base_rate(self.bias, self.calibration.apply)

    def _contributions(self, x: np.ndarray) -> np.ndarray:
        out = self.bundle.booster.predict(x, pred_contrib=True, num_threads=_threads(len(x)))
        return np.asarray(out, dtype=float)

    def empty_rows(self, n: int) -> np.ndarray:
        """An ``(n, F)`` matrix of unknowns to fill with the accounts' values."""
        return np.full((n, len(self.feature_names)), np.nan)

    def explain(self, x: np.ndarray) -> Explanation:
        """Calibrated probability and per-feature impacts for rows of ``x`` (feature order)."""
        x = np.ascontiguousarray(x, dtype=float)
        contrib = self._contributions(x)
        phi = contrib[:, :-1]
        raw = contrib.sum(axis=1)
        probability = self.calibration.apply(sigmoid(raw))
        total = phi.sum(axis=1)
        shift = probability - self.base_rate
        # Where the contributions cancel out the probability equals the base rate: no impact.
        safe = np.abs(total) > 1e-12
        scale = np.divide(shift, total, out=np.zeros_like(total), where=safe)
        impacts = phi * scale[:, None]
        return Explanation(self.feature_names, x, probability, impacts, self.base_rate)

    def self_test(self) -> None:
        """Refuse a bundle whose predictions are unusable (run before it starts serving)."""
        rng = np.random.default_rng(0)
        x = self.empty_rows(4)
        x[1] = 0.0
        x[2:] = rng.integers(0, 100, size=(2, x.shape[1]))
        exp = self.explain(x)
        expected = self.calibration.apply(
            np.asarray(self.bundle.booster.predict(x, num_threads=1), dtype=float)
        )
        if not np.all(np.isfinite(exp.probability)) or np.any(
            (exp.probability < 0) | (exp.probability > 1)
        ):
            raise BundleIntegrityError(
                f"model bundle {self.bundle.path}: test prediction is not a probability"
            )
        if not np.allclose(exp.probability, expected, atol=1e-9):
            raise BundleIntegrityError(
                f"model bundle {self.bundle.path}: the model is not a binary logistic model "
                "(its contributions do not reproduce its probabilities)",
                hint="train with objective=binary",
            )
        added = exp.impacts.sum(axis=1) + exp.base_rate
        if not np.allclose(added, exp.probability, atol=1e-9):
            raise BundleIntegrityError(
                f"model bundle {self.bundle.path}: explanations do not add up to the probability"
            )


def top_factors(explanation: Explanation, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` largest impacts by size among its known values,
    largest first; where a row has fewer than ``k`` known values, its unknown ones follow
    (:func:`listed` tells them apart: they are never reasons).

    Ties keep catalogue order (stable sort), so the answer is deterministic.
    """
    k = max(0, min(k, explanation.impacts.shape[1]))
    if k == 0:
        return np.empty((explanation.impacts.shape[0], 0), dtype=np.intp)
    size = np.abs(explanation.impacts)
    key = np.where(np.isnan(explanation.values), np.inf, -size)
    order = np.argsort(key, axis=1, kind="stable")
    return order[:, :k]


def listed(explanation: Explanation, columns: np.ndarray) -> np.ndarray:
    """True where ``columns`` (from :func:`top_factors`) names a known value: a reason."""
    rows = np.arange(len(columns))[:, None]
    known: np.ndarray = ~np.isnan(explanation.values[rows, columns])
    return known


def reasons_for_row(
    explanation: Explanation,
    row: int,
    columns: np.ndarray,
    features: tuple[Feature, ...],
    typical: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """The reasons of one row: feature, family, value, impact_pts and its sentence.

    The sentence is the catalogue's for the value (with the typical value where it explains
    a risk, ``typical`` in feature order) plus the impact: "No contact for 74 days (+9 pts)".
    A column whose value is unknown is skipped: an unknown is never a reason.
    """
    out = []
    values = explanation.values[row]
    impacts = explanation.impacts[row]
    for j in columns.tolist():
        feature = features[j]
        value = float(values[j])
        if math.isnan(value):
            continue
        pts = float(impacts[j]) * 100.0
        usual = None if typical is None else float(typical[j])
        sentence = feature.sentence(value, typical=usual, impact=pts)
        out.append(
            {
                "feature": feature.name,
                "family": feature.family,
                "value": value,
                "impact_pts": pts,
                "sentence": f"{sentence} ({format_pts(pts)})",
            }
        )
    return out
