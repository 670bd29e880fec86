"""Probability calibration fitted on the validation period, stored as ``churn.bundle.Calibration``.

Isotonic calibration is *centred* (Oron and Flournoy's centred isotonic regression): the
pool-adjacent-violators fit gives blocks of constant probability; each block becomes one
point (mean raw probability of its rows, the block's churn rate), with (0, 0) and (1, 1) as
end points, and ``Calibration.apply`` interpolates linearly between them. Unlike the step
function this is strictly increasing wherever the blocks' rates rise, so it keeps the model's
ranking (ROC and PR AUC, the top decile) while correcting the level. With fewer churners in
the validation period than ``min_positives_isotonic`` the isotonic fit is too coarse, and
Platt scaling (a logistic fit on the raw log-odds, two parameters) is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from churn.bundle import Calibration
from training.config import CalibrationConfig


@dataclass(frozen=True)
class CalibrationFit:
    """The fitted calibration and a sentence saying which method was used and why."""

    calibration: Calibration
    note: str

    @property
    def method(self) -> str:
        return self.calibration.method


def fit_isotonic(raw: np.ndarray, y: np.ndarray) -> Calibration:
    """Centred isotonic calibration of raw probabilities (see the module docstring)."""
    from sklearn.isotonic import IsotonicRegression

    raw = np.asarray(raw, dtype=float)
    y = np.asarray(y, dtype=float)
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit_transform(raw, y)
    # Blocks are runs of equal fitted value; PAVA makes successive blocks' values increase.
    values, block = np.unique(fitted, return_inverse=True)
    centres = np.bincount(block, weights=raw) / np.bincount(block)
    x = np.concatenate([[0.0], centres, [1.0]])
    ys = np.concatenate([[0.0], values, [1.0]])
    # Keep x strictly increasing (a block centred at 0 or 1 replaces the end point).
    keep = np.concatenate([[True], np.diff(x) > 0])
    x, ys = x[keep], ys[keep]
    return Calibration("isotonic", x=tuple(map(float, x)), y=tuple(map(float, np.clip(ys, 0, 1))))


def fit_platt(raw: np.ndarray, y: np.ndarray) -> Calibration:
    """Platt scaling: ``p = sigmoid(a * logit(raw) + b)`` fitted by maximum likelihood."""
    from sklearn.linear_model import LogisticRegression

    q = np.clip(np.asarray(raw, dtype=float), 1e-12, 1 - 1e-12)
    logit = np.log(q / (1 - q)).reshape(-1, 1)
    model = LogisticRegression(C=np.inf, max_iter=1000).fit(logit, np.asarray(y, dtype=int))
    return Calibration("platt", a=float(model.coef_[0, 0]), b=float(model.intercept_[0]))


def fit_calibration(raw: np.ndarray, y: np.ndarray, cfg: CalibrationConfig) -> CalibrationFit:
    """Fit the configured calibration on validation rows (raw model probabilities, labels)."""
    y = np.asarray(y, dtype=float)
    positives = int(y.sum())
    if cfg.method == "none":
        return CalibrationFit(Calibration("none"), "none (raw LightGBM probabilities)")
    if cfg.method == "isotonic" and positives >= cfg.min_positives_isotonic:
        return CalibrationFit(
            fit_isotonic(raw, y),
            f"isotonic (centred) on {len(y)} validation rows with {positives} churned",
        )
    if cfg.method == "isotonic":
        note = (
            f"platt: the validation period has {positives} churned rows, fewer than the "
            f"{cfg.min_positives_isotonic} isotonic needs (calibration.min_positives_isotonic)"
        )
    else:
        note = f"platt on {len(y)} validation rows with {positives} churned"
    return CalibrationFit(fit_platt(raw, y), note)
