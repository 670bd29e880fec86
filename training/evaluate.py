"""Test-period metrics and the two baselines they are compared with (docs/metrics.md).

Every metric is a pure function of labels ``y`` (0/1), scores ``p`` (higher = more risk) and,
for the revenue metric, each row's revenue:

* ``roc_auc``, ``pr_auc`` (average precision), ``brier`` (mean squared error of ``p``);
* ``ece``: expected calibration error over equal-frequency bins: edges at the quantiles of
  ``p``, tied scores always in one bin (so the result does not depend on row order);
  ``sum_b n_b / n * |mean(y_b) - mean(p_b)|``;
* top decile (the 10 % of rows with the highest score; rows tied with the cut-off score share
  the remaining places pro rata, so ties are never broken by row order):
  ``lift_top_decile`` = churn rate in it / overall churn rate, ``recall_top_decile`` = share of
  all churners in it, ``revenue_captured_top_decile`` = revenue of the churners in it / revenue
  of all churners (revenue at risk that a team working the top decile would reach).

Operating points (docs/metrics.md#operating-points): the churn-probability thresholds of the
priorities ``act_now`` and ``watch``, chosen on the validation period's calibrated
probabilities by :func:`choose_operating_points` and measured on validation and test by
:func:`threshold_figures` (a threshold ``t`` flags the rows with ``p >= t``).

Baselines on the same rows: ``health_score`` scores (100 - health score) / 100; ``logistic``
is a scikit-learn logistic regression on the same model features (median imputation with
missing-value indicators, standardisation), fitted on the training period. In inactivity mode
two purchase baselines join them (:data:`PURCHASE_SCORERS`, :mod:`training.btyd`):
``recency`` (days since the last invoice) and ``bgnbd`` (the BG/NBD probability of no
purchase in the row's label window); recency is a ranking in days, so its Brier score and
calibration error are NaN.

Every metric of every scorer also gets a bootstrap interval by account on the same rows
(:func:`metric_intervals`, :mod:`training.bootstrap`; docs/metrics.md#intervals).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline

from churn.bundle import OperatingPoints
from churn.model_terms import annual_revenue

if TYPE_CHECKING:
    from training.bootstrap import IntervalNote
    from training.calibrate import CalibrationFit
    from training.config import OperatingPointsConfig, RunPlan, TrainConfig
    from training.fit import FittedModel
    from training.frame import TrainingFrame
    from training.split import SplitParts

METRICS: tuple[str, ...] = (
    "roc_auc",
    "pr_auc",
    "brier",
    "ece",
    "lift_top_decile",
    "recall_top_decile",
    "revenue_captured_top_decile",
)
METRIC_LABELS: dict[str, str] = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "brier": "Brier score",
    "ece": "Expected calibration error",
    "lift_top_decile": "Lift, top decile",
    "recall_top_decile": "Recall, top decile",
    "revenue_captured_top_decile": "Revenue at risk captured, top decile",
}
# Which way is better, for the comparison table.
HIGHER_IS_BETTER: dict[str, bool] = {m: m not in ("brier", "ece") for m in METRICS}
TOP_FRACTION = 0.1
SCORERS: tuple[str, ...] = ("model", "health_score", "logistic")
#: The purchase baselines, scored in inactivity mode only (training.btyd).
PURCHASE_SCORERS: tuple[str, ...] = ("recency", "bgnbd")
#: Every scorer in display order; a run's metrics hold SCORERS and, in inactivity mode, these.
ALL_SCORERS: tuple[str, ...] = SCORERS + PURCHASE_SCORERS
#: Scorers whose scores are rankings on another scale, not probabilities: their Brier score
#: and calibration error are not computed (NaN).
NOT_PROBABILITIES: frozenset[str] = frozenset({"recency"})


def _arrays(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {p.shape} must be 1-d of equal length")
    if np.isnan(p).any() or np.isnan(y).any():
        raise ValueError("labels and scores must not contain NaN")
    return y, p


def equal_frequency_bins(p: np.ndarray, bins: int = 10) -> np.ndarray:
    """Bin index of each score: edges at the quantiles of ``p``; equal scores share a bin."""
    p = np.asarray(p, dtype=float)
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1))[1:-1])
    return np.searchsorted(edges, p, side="left")


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Per equal-frequency bin: rows, mean predicted probability and observed churn rate."""
    y, p = _arrays(y, p)
    frame = pd.DataFrame({"bin": equal_frequency_bins(p, bins), "y": y, "p": p})
    table = frame.groupby("bin").agg(
        rows=("y", "size"), predicted=("p", "mean"), observed=("y", "mean")
    )
    return table.reset_index(drop=True)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-frequency bins (see the module docstring)."""
    table = calibration_table(y, p, bins)
    weights = table["rows"] / table["rows"].sum()
    return float((weights * (table["observed"] - table["predicted"]).abs()).sum())


def top_weights(score: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Each row's share of membership in the top ``fraction`` of rows by score (0..1).

    Rows above the cut-off score count fully; rows tied at it share the remaining places
    equally. The weights add up to ``fraction * n``.
    """
    score = np.asarray(score, dtype=float)
    n = len(score)
    k = fraction * n
    if n == 0:
        return np.zeros(0)
    order = np.sort(score)[::-1]
    cutoff = order[min(int(np.ceil(k)) - 1, n - 1)] if k > 0 else np.inf
    above = score > cutoff
    tied = score == cutoff
    left = k - above.sum()
    weights = above.astype(float)
    if tied.any():
        weights[tied] = left / tied.sum()
    return weights


def gains_curve(y: np.ndarray, score: np.ndarray, points: int = 101) -> pd.DataFrame:
    """Cumulative gains: share of churners captured (``captured``) when working the top
    ``share`` of rows by score, with ties shared pro rata; ``lift`` = captured / share."""
    y, score = _arrays(y, score)
    shares = np.linspace(0, 1, points)[1:]
    positives = y.sum()
    captured = [float((top_weights(score, s) * y).sum() / positives) for s in shares]
    frame = pd.DataFrame({"share": shares, "captured": captured})
    frame["lift"] = frame["captured"] / frame["share"]
    return frame


def evaluate(
    y: np.ndarray, p: np.ndarray, revenue: np.ndarray | None = None, *, bins: int = 10
) -> dict[str, float]:
    """Every metric of :data:`METRICS` for labels ``y`` and scores ``p`` (probabilities for
    the calibration metrics). ``revenue`` (NaN = 0) weights the revenue-captured metric; it
    is NaN when absent or when the churners have no revenue."""
    y, p = _arrays(y, p)
    if y.min() == y.max():
        raise ValueError("evaluation needs both churned and retained rows")
    top = top_weights(p, TOP_FRACTION)
    positives = y.sum()
    churn_rate = positives / len(y)  # of these rows; not the model's base rate
    captured = float((top * y).sum())
    out = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, np.clip(p, 0, 1))),
        "ece": expected_calibration_error(y, p, bins),
        "lift_top_decile": float(captured / top.sum() / churn_rate),
        "recall_top_decile": float(captured / positives),
        "revenue_captured_top_decile": float("nan"),
    }
    if revenue is not None:
        rev = np.nan_to_num(np.asarray(revenue, dtype=float), nan=0.0).clip(min=0)
        at_risk = (rev * y).sum()
        if at_risk > 0:
            out["revenue_captured_top_decile"] = float((top * rev * y).sum() / at_risk)
    return out


# -- operating points ----------------------------------------------------------------------

#: The figures of one operating point on one period (docs/metrics.md#operating-points).
OPERATING_FIGURES: tuple[str, ...] = (
    "recall",
    "precision",
    "lift",
    "workload",
    "flagged",
    "churners_caught",
)
OPERATING_POINT_NAMES: tuple[str, ...] = ("act_now", "watch")


def threshold_figures(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """What flagging the rows with ``p >= threshold`` catches: ``recall`` (share of the
    churners flagged), ``precision`` (churn rate of the flagged rows; NaN when none),
    ``lift`` (precision / churn rate), ``workload`` (share of rows flagged), ``flagged`` and
    ``churners_caught`` (counts)."""
    y, p = _arrays(y, p)
    flagged = p >= threshold
    n_flagged = int(flagged.sum())
    caught = float(y[flagged].sum())
    positives = float(y.sum())
    rate = positives / len(y) if len(y) else float("nan")
    precision = caught / n_flagged if n_flagged else float("nan")
    return {
        "recall": caught / positives if positives else float("nan"),
        "precision": precision,
        "lift": precision / rate if rate else float("nan"),
        "workload": n_flagged / len(y) if len(y) else float("nan"),
        "flagged": float(n_flagged),
        "churners_caught": caught,
    }


def _threshold_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every distinct score as a threshold, highest first, with the rows and churners it
    flags (all rows scoring at or above it)."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    last = np.r_[ps[1:] != ps[:-1], True]  # the last row of each run of equal scores
    flagged = np.arange(1, len(ps) + 1)[last]
    caught = np.cumsum(ys)[last]
    return ps[last], flagged.astype(float), caught


def choose_operating_points(
    y: np.ndarray, p: np.ndarray, cfg: OperatingPointsConfig
) -> OperatingPoints:
    """The ``act_now`` and ``watch`` thresholds for labels ``y`` and calibrated probabilities
    ``p`` of the validation period (docs/metrics.md#operating-points): each the highest
    threshold catching at least its share of the churners (``cfg.act_now_recall``,
    ``cfg.watch_recall``) among those flagging at least ``cfg.min_rows`` rows (all rows when
    there are fewer). ``watch_recall >= act_now_recall``, so ``watch <= act_now``.

    Figures are left empty (:func:`measure_operating_points` adds them).
    """
    y, p = _arrays(y, p)
    positives = float(y.sum())
    if positives == 0 or positives == len(y):
        raise ValueError("choosing operating points needs both churned and retained rows")
    thresholds, flagged, caught = _threshold_curve(y, p)
    enough = flagged >= min(cfg.min_rows, len(y))
    recall = caught / positives

    def highest(share: float) -> float:
        # The lowest threshold flags every row (recall 1), so one always qualifies.
        return float(thresholds[enough & (recall >= share - 1e-12)].max())

    rule = (
        f"the highest threshold catching at least {cfg.act_now_recall:.0%} (act_now) and "
        f"{cfg.watch_recall:.0%} (watch) of the validation period's churners, flagging at "
        f"least {cfg.min_rows} rows"
    )
    return OperatingPoints(
        act_now=highest(cfg.act_now_recall),
        watch=highest(cfg.watch_recall),
        source="validation",
        rule=rule,
    )


def measure_operating_points(
    points: OperatingPoints, periods: dict[str, tuple[np.ndarray, np.ndarray]]
) -> OperatingPoints:
    """``points`` with their figures (:func:`threshold_figures`) on each period, given as
    ``{period: (y, p)}``: ``figures[point][period][figure]``."""
    figures = {
        name: {
            period: threshold_figures(y, p, getattr(points, name))
            for period, (y, p) in periods.items()
        }
        for name in OPERATING_POINT_NAMES
    }
    return OperatingPoints(points.act_now, points.watch, points.source, points.rule, figures)


def revenue_of(frame: pd.DataFrame) -> np.ndarray:
    """Revenue weight of each row: its annual revenue (``churn.model_terms.annual_revenue``:
    revenue_365d, else contract_value; NaN when neither is known)."""
    return annual_revenue(frame, len(frame))


def health_baseline(frame: pd.DataFrame) -> np.ndarray:
    """The rule-based baseline's score: (100 - health score) / 100 (a missing score: 0.5)."""
    health = pd.to_numeric(frame["health_score"], errors="coerce").to_numpy(float, na_value=np.nan)
    return np.clip((100.0 - np.nan_to_num(health, nan=50.0)) / 100.0, 0.0, 1.0)


def feature_matrix(frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    """The model input matrix in ``features`` order (missing columns and infinities: NaN)."""
    cols = [
        pd.to_numeric(frame[f], errors="coerce").to_numpy(float, na_value=np.nan)
        if f in frame
        else np.full(len(frame), np.nan)
        for f in features
    ]
    x = np.column_stack(cols) if cols else np.empty((len(frame), 0))
    x[~np.isfinite(x)] = np.nan
    return x


def fit_logistic(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Pipeline:
    """The logistic-regression baseline, fitted on the training rows."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    model = Pipeline(
        [
            # keep_empty_features: a column whose table is missing stays (as 0 after scaling)
            # so the pipeline accepts the same matrix shape at predict time.
            (
                "impute",
                SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            ),
            ("scale", StandardScaler()),
            ("model", LogisticRegression(max_iter=5000, random_state=seed)),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on nearly separable toy data
        model.fit(x, np.asarray(y, dtype=int))
    return model


def predict_logistic(model: Pipeline, x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.predict_proba(x)[:, 1]


# ------------------------------------------------------------- the pipeline's evaluation step


@dataclass(frozen=True)
class Evaluation:
    """The calibrated model and its baselines on the test period: the calibration fitted on
    the validation period, each scorer's test scores and metrics (:data:`SCORERS`), the
    model's SHAP contributions on the test rows (last column: the bias), the rows' revenue
    weights, the test frame (identity, model features, label, health score,
    ``churn_probability``) and the operating points chosen on the validation period with
    their figures on validation and test; ``intervals`` holds each scorer's metric intervals
    (``{scorer: {metric: (low, high)}}``, :mod:`training.bootstrap`; empty when
    ``evaluation.bootstrap_samples`` is 0) and ``interval_note`` how they were made."""

    calibration: CalibrationFit
    scores: dict[str, np.ndarray]
    metrics: dict[str, dict[str, float]]
    contributions: np.ndarray
    revenue: np.ndarray
    test_frame: pd.DataFrame
    operating_points: OperatingPoints
    intervals: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    interval_note: IntervalNote | None = None


def calibrate_and_evaluate(
    model: FittedModel,
    parts: SplitParts,
    cfg: TrainConfig,
    seed: int,
    *,
    purchases: pd.DataFrame | None = None,
) -> Evaluation:
    """Calibrate ``model`` on the validation period and choose its operating points there,
    then score the test period with it, the health-score baseline and the logistic baseline
    (fitted on the training period, ``seed``), compute every metric of each on the same rows
    and measure the operating points on both periods.

    ``purchases`` (the source's invoices; the pipeline passes them in inactivity mode) adds
    the purchase baselines :data:`PURCHASE_SCORERS`, each row scored from the invoices issued
    before its ``as_of`` (:func:`training.btyd.purchase_baselines`)."""
    from training.btyd import purchase_baselines
    from training.calibrate import fit_calibration

    booster, test = model.booster, parts.test
    raw_validation = np.asarray(booster.predict(parts.validation.x), dtype=float)
    calibration = fit_calibration(raw_validation, parts.validation.y, cfg.calibration)
    probability = calibration.calibration.apply(np.asarray(booster.predict(test.x), dtype=float))
    validation_probability = calibration.calibration.apply(raw_validation)
    points = measure_operating_points(
        choose_operating_points(parts.validation.y, validation_probability, cfg.operating_points),
        {
            "validation": (parts.validation.y, validation_probability),
            "test": (test.y, probability),
        },
    )
    logistic = fit_logistic(parts.train.x, parts.train.y, seed)
    scores = {
        "model": probability,
        "health_score": health_baseline(test.frame),
        "logistic": predict_logistic(logistic, test.x),
        **purchase_baselines(purchases, test.frame),
    }
    revenue = revenue_of(test.frame)
    bins = cfg.evaluation.ece_bins
    metrics = {name: evaluate(test.y, s, revenue, bins=bins) for name, s in scores.items()}
    for name in NOT_PROBABILITIES & set(metrics):
        metrics[name] |= {"brier": float("nan"), "ece": float("nan")}
    intervals, note = metric_intervals(test.y, scores, test.frame, revenue, cfg, seed)
    contributions = np.asarray(booster.predict(test.x, pred_contrib=True), dtype=float)
    test_frame = test.frame[
        [c for c in ("account_id", "as_of", "account_manager") if c in test.frame]
        + list(parts.features)
        + ["churned", "health_score"]
    ].copy()
    test_frame["churn_probability"] = probability
    return Evaluation(
        calibration=calibration,
        scores=scores,
        metrics=metrics,
        contributions=contributions,
        revenue=revenue,
        test_frame=test_frame,
        operating_points=points,
        intervals=intervals,
        interval_note=note,
    )


def metric_intervals(
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    frame: pd.DataFrame,
    revenue: np.ndarray,
    cfg: TrainConfig,
    seed: int,
) -> tuple[dict[str, dict[str, tuple[float, float]]], IntervalNote | None]:
    """Each scorer's metric intervals on the test rows, resampling the accounts of
    ``frame`` (``cfg.evaluation``: resamples, level; seeded by the run's ``seed``), and how
    they were made; nothing when ``bootstrap_samples`` is 0 or the rows have no account."""
    import logging

    from training.bootstrap import IntervalNote, bootstrap_metrics

    ev = cfg.evaluation
    if ev.bootstrap_samples == 0 or "account_id" not in frame:
        return {}, None
    boot = bootstrap_metrics(
        y,
        scores,
        frame["account_id"].to_numpy(),
        revenue,
        samples=ev.bootstrap_samples,
        seed=seed,
        bins=ev.ece_bins,
    )
    note = IntervalNote(ev.bootstrap_samples, ev.interval_level, boot.accounts, boot.skipped)
    if boot.skipped:
        logging.getLogger(__name__).warning(
            "%d of %d bootstrap resamples held one class only and were left out",
            boot.skipped,
            boot.samples,
        )
    return boot.intervals(ev.interval_level), note


class RunOutputs(NamedTuple):
    """What a run has produced before it is tracked and exported: its plan, the labeled frame
    and its lineage, the time split, the fitted model and its evaluation. The logging and
    export steps read it (a named tuple: a step unpacks what it reads, typed, in one line)."""

    plan: RunPlan
    data: TrainingFrame
    lineage: dict[str, Any]
    parts: SplitParts
    model: FittedModel
    report: Evaluation
