"""Health rules backtest and suggested points (docs/health-backtest.md).

The rule-based health score is scored over the same labeled point-in-time snapshots and the
same time split as a training run, and compared with what happened: ROC AUC and PR AUC of the
risk (100 - score) and of every component and sub-rule, each band's share of rows, share of
churners and churn rate, the lift below the bands' cut-offs, and the recall at equal workload.

It then suggests new points, choosing everything without the test period. Each sub-rule keeps
its step shape ``f_r`` (the points it awards as a share of its maximum, in 0..1; a missing
value earns the missing share) and gets non-negative points from a logistic regression with
bounds (``logit P(churn) = a - sum_r beta_r f_r``, ``beta_r >= 0``): one weight per sub-rule
(``weights``), one increment per step (``steps``), or steps pulled toward today's proportions
by an L2 penalty (``combined``). The points are scaled to sum to 100, a component's maximum
is the sum of its sub-rules' points, and the bands stay where they are; an unknown value's
share of a sub-rule's points is fitted too, and the fit keeps the bands' meaning (a smooth
constraint on the share of rows below 60 and 40, so that the points cannot all go to rare
warning signs that lift nearly every account into Healthy).

The candidates (method, penalty strength, band target) are fitted on the training period; the
one ranking the validation period best with the bands kept is chosen (bagging too, if it
helps there), refitted on the training and validation periods together, and only then scored
on the test period, with an account-level bootstrap interval on the gain in ROC AUC.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from features.health import expected_cadence, float_column, step_points
from training.evaluate import top_weights

if TYPE_CHECKING:
    from features.health import HealthConfig, SubRule

# The bootstrap of the test-period gain: resamples of accounts and its seed.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20240613
# Smallest points a suggested sub-rule keeps; below it the sub-rule goes to the reserve.
MIN_RULE_POINTS = 0.5
# Ridge penalty of the constrained fit (per row, on the weights in log-odds).
_L2 = 1e-4
# The bands keep their meaning: on the validation period the suggested points put this range
# of multiples of the current rules' share of rows below 60 there (the team reviews at least
# as many accounts as today, at most twice as many); the fit aims at a multiple of the
# current share of its own rows below each cut-off (BAND_TARGETS, below).
BAND_SHARE_RANGE = (1.0, 2.0)
# Width (points) of the smooth count of rows below a cut-off in the fit.
BAND_SMOOTHING = 2.0
# Fitted shares of a sub-rule's points for an unknown value are rounded to this grid.
MISSING_SHARE_GRID = 0.05


# --------------------------------------------------------------------------- sub-rule shapes


def rule_key(component: str, rule: str) -> str:
    """The name of a sub-rule in tables and JSON: ``component.rule``."""
    return f"{component}.{rule}"


def _shape(values: np.ndarray, rule: SubRule, missing_share: float) -> np.ndarray:
    """The share of its points ``rule`` awards to each value (the missing share if unknown)."""
    return step_points(values, rule, missing_share) / rule.points


def rule_shapes(frame: pd.DataFrame, cfg: HealthConfig) -> pd.DataFrame:
    """One column per sub-rule and reserve sub-rule (``component.rule``): the share 0..1 of its
    points each row earns under ``cfg``, so that ``sum_r points_r * shape_r`` over the
    sub-rules is the (unrounded) score (a reserve sub-rule's column is what it would award)."""
    return _shapes_and_known(frame, cfg)[0]


def rule_pool(cfg: HealthConfig) -> list[tuple[str, SubRule]]:
    """``(component.rule, sub-rule)`` for every sub-rule and then every reserve sub-rule of
    ``cfg``: what the fit chooses points for."""
    return [
        (rule_key(name, rule.name), rule)
        for name, component in cfg.components.items()
        for rule in component.pool()
    ]


def _shapes_and_known(
    frame: pd.DataFrame, cfg: HealthConfig
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """:func:`rule_shapes` and, per pooled sub-rule, where its value is known: each feature
    read once (over the segment's cadence where the rule says so)."""
    expected = expected_cadence(frame, cfg.cadence)
    shapes: dict[str, np.ndarray] = {}
    known: dict[str, np.ndarray] = {}
    for key, rule in rule_pool(cfg):
        values = float_column(frame, rule.feature)
        if rule.relative_to_cadence:
            values = values / expected
        shapes[key] = _shape(values, rule, cfg.missing_share_of(rule))
        known[key] = np.isfinite(values)
    return pd.DataFrame(shapes, index=frame.index), known


def rule_points(cfg: HealthConfig) -> dict[str, float]:
    """Each sub-rule's maximum points under ``cfg``."""
    return {
        rule_key(name, rule.name): float(rule.points)
        for name, component in cfg.components.items()
        for rule in component.rules
    }


def rule_missing_shares(cfg: HealthConfig) -> dict[str, float]:
    """The share of its points each sub-rule (and reserve sub-rule) gives an unknown value."""
    return {key: cfg.missing_share_of(rule) for key, rule in rule_pool(cfg)}


def component_of(key: str) -> str:
    return key.split(".", 1)[0]


# ------------------------------------------------------------------------------------ metrics


def _ranking_metric(fn: Any, y: np.ndarray, risk: np.ndarray) -> float:
    if len(np.unique(y)) < 2 or len(np.unique(risk)) < 2:
        return 0.5 if fn is roc_auc_score else float(np.mean(y)) if len(y) else math.nan
    return float(fn(y, risk))


def roc_auc(y: np.ndarray, risk: np.ndarray) -> float:
    """ROC AUC of ``risk`` (higher = more risk); 0.5 when it cannot rank (one class or value)."""
    return _ranking_metric(roc_auc_score, y, risk)


def pr_auc(y: np.ndarray, risk: np.ndarray) -> float:
    """Average precision of ``risk``; the churn rate when it cannot rank."""
    return _ranking_metric(average_precision_score, y, risk)


def recall_at_share(y: np.ndarray, risk: np.ndarray, share: float) -> float:
    """Share of the churners among the ``share`` of rows highest by ``risk``; rows tied with
    the cut-off share the remaining places pro rata (expected value over tie orders)."""
    positives = float(y.sum())
    if len(y) == 0 or positives == 0:
        return math.nan
    return float((top_weights(risk, share) * y).sum() / positives)


def band_table(y: np.ndarray, score: np.ndarray, cfg: HealthConfig) -> dict[str, dict[str, float]]:
    """Per band (healthy, at_risk, critical): share of rows, share of churners, churn rate."""
    bands = cfg.bands
    band = np.where(
        score >= bands.healthy, "healthy", np.where(score >= bands.at_risk, "at_risk", "critical")
    )
    n, positives = len(y), float(y.sum())
    out: dict[str, dict[str, float]] = {}
    for name in ("healthy", "at_risk", "critical"):
        mask = band == name
        rows = int(mask.sum())
        churned = float(y[mask].sum())
        out[name] = {
            "rows": rows,
            "share_of_rows": rows / n if n else math.nan,
            "share_of_churners": churned / positives if positives else math.nan,
            "churn_rate": churned / rows if rows else math.nan,
        }
    return out


def lift_below(y: np.ndarray, score: np.ndarray, cutoff: float) -> float:
    """Churn rate of the rows scoring below ``cutoff`` / the overall churn rate."""
    below = score < cutoff
    rate = float(y.mean()) if len(y) else math.nan
    if not below.any() or not rate:
        return math.nan
    return float(y[below].mean()) / rate


@dataclass
class ScoreReport:
    """How one rule set's score ranks one period's rows."""

    roc_auc: float
    pr_auc: float
    churners_in_healthy_band: float
    recall_at_equal_workload: float
    workload_share: float
    lift_below_60: float
    lift_below_40: float
    bands: dict[str, dict[str, float]]

    def summary(self) -> dict[str, float]:
        """The four headline figures of the ``--json`` object."""
        return {
            "roc_auc": self.roc_auc,
            "pr_auc": self.pr_auc,
            "churners_in_healthy_band": self.churners_in_healthy_band,
            "recall_at_equal_workload": self.recall_at_equal_workload,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "workload_share": self.workload_share,
            "lift_below_60": self.lift_below_60,
            "lift_below_40": self.lift_below_40,
            "bands": self.bands,
        }


def score_report(
    y: np.ndarray, score: np.ndarray, cfg: HealthConfig, workload_share: float
) -> ScoreReport:
    """The metrics of a health score on labeled rows; ``workload_share`` is the share of rows
    the recall at equal workload takes (lowest score first)."""
    risk = 100.0 - score
    bands = band_table(y, score, cfg)
    return ScoreReport(
        roc_auc=roc_auc(y, risk),
        pr_auc=pr_auc(y, risk),
        churners_in_healthy_band=bands["healthy"]["share_of_churners"],
        recall_at_equal_workload=recall_at_share(y, risk, workload_share),
        workload_share=workload_share,
        lift_below_60=lift_below(y, score, cfg.bands.healthy),
        lift_below_40=lift_below(y, score, cfg.bands.at_risk),
        bands=bands,
    )


def rule_metrics(
    y: np.ndarray, shapes: pd.DataFrame, points: dict[str, float]
) -> dict[str, dict[str, float]]:
    """ROC AUC and PR AUC of every component and sub-rule (risk = its maximum - its points)."""
    out: dict[str, dict[str, float]] = {}
    components: dict[str, np.ndarray] = {}
    for key in shapes.columns:
        pts = shapes[key].to_numpy() * points.get(key, 0.0)
        comp = component_of(key)
        components[comp] = components.get(comp, np.zeros(len(y))) + pts
    for comp, pts in components.items():
        out[comp] = {"roc_auc": roc_auc(y, -pts), "pr_auc": pr_auc(y, -pts)}
        for key in shapes.columns:
            if component_of(key) == comp:
                risk = -shapes[key].to_numpy()
                out[key] = {"roc_auc": roc_auc(y, risk), "pr_auc": pr_auc(y, risk)}
    return out


# ------------------------------------------------------------------------ weighted bootstrap


def bootstrap_auc_gain(
    y: np.ndarray,
    risk_before: np.ndarray,
    risk_after: np.ndarray,
    groups: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, float]:
    """Percentile interval (95 %) of ROC AUC(after) - ROC AUC(before), resampling the
    ``groups`` (accounts) with replacement: all rows of a drawn account come along."""
    _, group_idx = np.unique(groups, return_inverse=True)
    n_groups = int(group_idx.max()) + 1 if len(group_idx) else 0
    rng = np.random.default_rng(seed)
    gains = np.empty(resamples)
    chunk = 100
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=size)
        weights = counts[:, group_idx].astype(float)
        gains[start : start + size] = _weighted_auc(y, risk_after, weights) - _weighted_auc(
            y, risk_before, weights
        )
    finite = gains[np.isfinite(gains)]
    low, high = np.percentile(finite, [2.5, 97.5]) if len(finite) else (math.nan, math.nan)
    return {
        "low": float(low),
        "high": float(high),
        "resamples": resamples,
        "seed": seed,
        "accounts": n_groups,
    }


def _weighted_auc(y: np.ndarray, risk: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of ``risk`` under each row of ``weights`` (resamples x rows), ties counted 1/2."""
    order = np.argsort(risk, kind="stable")
    r, yy, w = risk[order], y[order].astype(bool), weights[:, order]
    # Tie groups of equal risk: each positive counts the negatives below it, and half the tied.
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    neg = np.where(yy, 0.0, w)
    pos = np.where(yy, w, 0.0)
    neg_by_group = np.add.reduceat(neg, starts, axis=1)
    pos_by_group = np.add.reduceat(pos, starts, axis=1)
    neg_below = np.cumsum(neg_by_group, axis=1) - neg_by_group
    pairs = (pos_by_group * (neg_below + 0.5 * neg_by_group)).sum(axis=1)
    total = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, pairs / total, np.nan)


# ------------------------------------------------------------------------------- the fit


@dataclass
class WeightFit:
    """A logistic fit of sub-rule weights: log-odds per unit share (beta >= 0). Columns named
    ``<key>@missing`` are a sub-rule's points for an unknown value, not part of its maximum."""

    intercept: float
    beta: dict[str, float]

    def points(self, total: float = 100.0) -> dict[str, float]:
        """The weights scaled so that the maxima sum to ``total`` (all equal when every beta is
        0); a missing-value column is scaled alike but does not count in the sum."""
        main = [b for k, b in self.beta.items() if not k.endswith(MISSING_SUFFIX)]
        s = sum(main)
        if s <= 0:
            return {k: total / len(main) for k in self.beta if not k.endswith(MISSING_SUFFIX)}
        return {k: total * b / s for k, b in self.beta.items()}


# A design column holding a sub-rule's "value unknown" indicator ends in this.
MISSING_SUFFIX = "@missing"


def _rule_of(column: str) -> str:
    return column.split("@", 1)[0]


def _one_blas_thread() -> Any:
    """A context limiting BLAS to one thread: the fit's products are small, and several threads
    competing for the cores make it ten times slower."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    return threadpool_limits(1)


def fit_weights(
    shapes: pd.DataFrame,
    y: np.ndarray,
    l2: float = _L2,
    band_shares: Mapping[float, float] | None = None,
    tau: float = BAND_SMOOTHING,
    shape_penalty: tuple[float, np.ndarray] | None = None,
) -> WeightFit:
    """Maximum likelihood of ``logit P(churn) = a - shapes @ beta`` with ``beta >= 0`` and a
    small ridge on beta.

    Without ``band_shares`` and without missing-value columns: L-BFGS-B with bounds. Otherwise
    (SLSQP) the fit is written ``beta = s * w`` with the maxima's ``w`` summing to 1, so that
    ``score = 100 * shapes @ w`` is the health score the points give, and

    - ``band_shares`` ``{cut-off: share}``: at least ``share`` of the rows score below the
      cut-off, counted smoothly (``mean(sigmoid((cut-off - score) / tau))``, ``tau`` points);
    - a ``<key>@missing`` column's weight is at most its sub-rule's maximum (an unknown value
      earns at most all of the points);
    - ``shape_penalty`` ``(strength, D)``: ``strength * |D @ w|^2`` is added to the mean
      log-loss (:func:`shape_deviation`: how far the step points are from the current
      proportions, in shares of the 100 points)."""
    from scipy.optimize import minimize
    from scipy.special import expit

    x = shapes.to_numpy(dtype=float)
    yy = np.asarray(y, dtype=float)
    n, k = x.shape
    columns = list(shapes.columns)
    missing = [i for i, c in enumerate(columns) if c.endswith(MISSING_SUFFIX)]
    rate = float(np.clip(yy.mean(), 1e-6, 1 - 1e-6))
    base = math.log(rate / (1 - rate))

    if not band_shares and not missing and shape_penalty is None:

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            a, beta = theta[0], theta[1:]
            z = a - x @ beta
            # log(1 + e^z) - y z, stably
            value = np.logaddexp(0.0, z).sum() - (yy * z).sum()
            resid = expit(z) - yy
            grad = np.empty(k + 1)
            grad[0] = resid.sum()
            grad[1:] = -(x.T @ resid)
            value = value / n + l2 * float(beta @ beta)
            grad = grad / n
            grad[1:] += 2 * l2 * beta
            return float(value), grad

        with _one_blas_thread():
            result = minimize(
                loss,
                np.r_[base, np.zeros(k)],
                jac=True,
                method="L-BFGS-B",
                bounds=[(None, None)] + [(0.0, None)] * k,
                options={"maxiter": 500},
            )
        theta = result.x
        beta = theta[1:]
    else:
        theta = _fit_scaled(
            x, yy, columns, missing, l2, band_shares or {}, tau, base, shape_penalty
        )
        beta = theta[1] * theta[2:]
    return WeightFit(
        intercept=float(theta[0]),
        beta={col: float(max(b, 0.0)) for col, b in zip(columns, beta, strict=True)},
    )


def _fit_scaled(
    x: np.ndarray,
    y: np.ndarray,
    columns: list[str],
    missing: list[int],
    l2: float,
    band_shares: Mapping[float, float],
    tau: float,
    base: float,
    shape_penalty: tuple[float, np.ndarray] | None = None,
) -> np.ndarray:
    """:func:`fit_weights`' constrained fit: ``theta = (a, s, w)``, ``logit = a - s x @ w``."""
    from scipy.optimize import minimize
    from scipy.special import expit

    n, k = x.shape
    main = np.ones(k)
    main[missing] = 0.0
    strength, dev = shape_penalty if shape_penalty is not None else (0.0, np.zeros((0, k)))
    gram = strength * (dev.T @ dev)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, s, w = theta[0], theta[1], theta[2:]
        score = x @ w
        z = a - s * score
        value = np.logaddexp(0.0, z).sum() - (y * z).sum()
        resid = expit(z) - y
        grad = np.empty(k + 2)
        grad[0] = resid.sum()
        grad[1] = -(resid @ score)
        grad[2:] = -s * (x.T @ resid)
        beta = s * w
        value = value / n + l2 * float(beta @ beta)
        grad /= n
        grad[1] += 2 * l2 * float(beta @ w)
        grad[2:] += 2 * l2 * s * beta
        if strength:
            value += float(w @ gram @ w)
            grad[2:] += 2 * (gram @ w)
        return float(value), grad

    def below(cutoff: float, share: float) -> dict[str, Any]:
        def fun(theta: np.ndarray) -> float:
            return float(expit((cutoff - 100 * (x @ theta[2:])) / tau).mean()) - share

        def jac(theta: np.ndarray) -> np.ndarray:
            p = expit((cutoff - 100 * (x @ theta[2:])) / tau)
            d = -(p * (1 - p)) * (100 / tau) / n
            return np.r_[0.0, 0.0, x.T @ d]

        return {"type": "ineq", "fun": fun, "jac": jac}

    total = np.r_[0.0, 0.0, main]
    constraints: list[dict[str, Any]] = [
        {"type": "eq", "fun": lambda t: float(total @ t) - 1.0, "jac": lambda t: total}
    ]
    if missing:
        # each sub-rule's maximum minus its missing-value points >= 0
        rows = []
        for i in missing:
            row = np.zeros(k + 2)
            key = _rule_of(columns[i])
            for j, col in enumerate(columns):
                if j not in missing and _rule_of(col) == key:
                    row[2 + j] = 1.0
            row[2 + i] = -1.0
            rows.append(row)
        cap = np.array(rows)
        constraints.append({"type": "ineq", "fun": lambda t: cap @ t, "jac": lambda t: cap})
    constraints += [below(cutoff, share) for cutoff, share in band_shares.items()]
    start = np.r_[base + 2.0, 2.0, main / main.sum()]
    with _one_blas_thread():
        result = minimize(
            loss,
            start,
            jac=True,
            method="SLSQP",
            bounds=[(None, None)] + [(0.0, None)] * (k + 1),
            constraints=constraints,
            options={"maxiter": 1000, "ftol": 1e-10},
        )
    theta: np.ndarray = result.x
    return theta


# ----------------------------------------------------------------- suggested points from a fit


@dataclass(frozen=True)
class RuleLevels:
    """A sub-rule's distinct awarded shares (``below`` and the steps'), lowest first."""

    key: str
    levels: tuple[float, ...]
    missing_share: float


def rule_levels(cfg: HealthConfig) -> list[RuleLevels]:
    """The levels of every sub-rule and reserve sub-rule (:func:`rule_pool`)."""
    out = []
    for key, rule in rule_pool(cfg):
        awarded = {p / rule.points for _, p in rule.steps} | {rule.below / rule.points}
        share = cfg.missing_share_of(rule)
        out.append(RuleLevels(key, tuple(sorted(awarded)), share))
    return out


# The layout's level index of a sub-rule's "value unknown" column.
MISSING_LEVEL = -2


def design_matrix(
    frame: pd.DataFrame, cfg: HealthConfig, method: str, fit_missing: bool = False
) -> tuple[pd.DataFrame, list[tuple[str, int]]]:
    """The fit's inputs and what each column is (sub-rule key, level index).

    ``weights``: one column per sub-rule, its shape (a weight per sub-rule keeps the steps'
    shape). ``steps``: per sub-rule one column per level above the lowest, 1 where the rule
    awards at least that level (the points of a level are then the sum of non-negative
    increments: monotone in the original order). An unknown value is the missing share in
    every column of its sub-rule, so it earns the missing share of the refitted points; with
    ``fit_missing`` it is 0 there instead and a ``<key>@missing`` column (level
    :data:`MISSING_LEVEL`), 1 where the value is unknown, lets the fit give an unknown value
    its own points, for each sub-rule whose value is unknown on some row.
    """
    if method not in FIT_METHODS:
        raise ValueError(f"unknown fit method {method!r}")
    shapes, known = _shapes_and_known(frame, cfg)
    columns: dict[str, np.ndarray] = {}
    layout: list[tuple[str, int]] = []
    for rule in rule_levels(cfg):
        shape = shapes[rule.key].to_numpy()
        unknown = rule.missing_share if not fit_missing else 0.0
        if method == "weights":
            columns[rule.key] = np.where(known[rule.key], shape, unknown)
            layout.append((rule.key, -1))
        else:
            for j, level in enumerate(rule.levels[1:], start=1):
                hit = (shape >= level - 1e-9).astype(float)
                columns[f"{rule.key}@{j}"] = np.where(known[rule.key], hit, unknown)
                layout.append((rule.key, j))
    if fit_missing:
        for rule in rule_levels(cfg):
            if not known[rule.key].all():
                columns[rule.key + MISSING_SUFFIX] = (~known[rule.key]).astype(float)
                layout.append((rule.key, MISSING_LEVEL))
    return pd.DataFrame(columns, index=frame.index), layout


def fitted_levels(
    fit: WeightFit, layout: list[tuple[str, int]], cfg: HealthConfig
) -> dict[str, list[float]]:
    """Each sub-rule's new level for each of its original levels (log-odds units)."""
    out: dict[str, list[float]] = {}
    betas = list(fit.beta.values())
    for rule in rule_levels(cfg):
        cols = [
            (j, b)
            for (key, j), b in zip(layout, betas, strict=True)
            if key == rule.key and j != MISSING_LEVEL
        ]
        if cols and cols[0][0] == -1:  # weights: the shape scaled
            out[rule.key] = [cols[0][1] * level for level in rule.levels]
        else:  # steps: cumulative increments from 0 at the lowest level
            increments = dict(cols)
            total, levels = 0.0, [0.0]
            for j in range(1, len(rule.levels)):
                total += increments.get(j, 0.0)
                levels.append(total)
            out[rule.key] = levels
    return out


def fitted_missing_shares(
    fit: WeightFit, layout: list[tuple[str, int]], grid: float = MISSING_SHARE_GRID
) -> dict[str, float]:
    """The share of its maximum a sub-rule gives an unknown value, for each sub-rule with a
    fitted ``@missing`` column (rounded to ``grid``, within 0..1)."""
    betas = list(fit.beta.values())
    top: dict[str, float] = {}
    unknown: dict[str, float] = {}
    for (key, j), b in zip(layout, betas, strict=True):
        if j == MISSING_LEVEL:
            unknown[key] = b
        else:
            top[key] = top.get(key, 0.0) + b
    out = {}
    for key, b in unknown.items():
        share = b / top[key] if top.get(key, 0.0) > 0 else 0.5
        out[key] = min(1.0, max(0.0, round(share / grid) * grid))
    return out


def suggested_points(
    levels: dict[str, list[float]], cfg: HealthConfig, step: float = 0.5
) -> dict[str, list[float]]:
    """The levels scaled so that the sub-rules' maxima add up to 100 on a ``step`` grid
    (largest remainders); sub-rules below :data:`MIN_RULE_POINTS` are dropped, except that each
    component keeps its strongest sub-rule. Levels are rounded to 0.1 within each sub-rule."""
    maxima = {k: max(v) for k, v in levels.items()}
    keep = {k for k, v in maxima.items() if v > 0}
    total = sum(maxima[k] for k in keep) or 1.0
    scaled = {k: 100.0 * maxima[k] / total for k in keep}
    keep = {k for k in keep if scaled[k] >= MIN_RULE_POINTS}
    for name, component in cfg.components.items():
        keys = [rule_key(name, r.name) for r in component.pool()]
        if not any(k in keep for k in keys):
            keep.add(max(keys, key=lambda k: maxima[k]))
    base = {k: max(maxima[k], 1e-9) for k in keep}
    total = sum(base.values())
    units = {k: v * 100.0 / total / step for k, v in base.items()}
    floors = {k: max(math.floor(v), 1) for k, v in units.items()}
    left = round(100.0 / step) - sum(floors.values())
    order = sorted(units, key=lambda k: floors[k] - units[k])
    i = 0
    while left != 0 and order:
        key = order[i % len(order)]
        if left > 0:
            floors[key] += 1
            left -= 1
        elif floors[key] > 1:
            floors[key] -= 1
            left += 1
        i += 1
    out = {}
    for key in keep:
        points = floors[key] * step
        top = max(levels[key])
        if top > 0:
            out[key] = [round(points * v / top, 1) for v in levels[key]]
        else:  # a kept sub-rule with no fitted effect keeps its original shape
            original = next(r for r in rule_levels(cfg) if r.key == key).levels
            out[key] = [round(points * v, 1) for v in original]
        out[key][-1] = points
    return out


def suggested_config(
    cfg: HealthConfig,
    points: dict[str, list[float]],
    missing_shares: Mapping[str, float] | None = None,
) -> HealthConfig:
    """``cfg`` with each kept sub-rule's levels replaced by ``points`` (its new points for each
    original level, lowest first; the highest is its maximum) and its ``missing_share`` by
    ``missing_shares`` where given, component maxima the sums, bands unchanged, version one
    higher; validated on build. A kept reserve sub-rule becomes a sub-rule (after the others);
    a dropped sub-rule goes to the reserve with its old points, so that a later backtest can
    bring it back."""
    from features.health import HealthConfig

    by_key = {r.key: r for r in rule_levels(cfg)}
    data = cfg.model_dump(mode="python")
    for name, component in data["components"].items():
        rules, reserve = [], []
        for rule in [*component["rules"], *component["reserve"]]:
            key = rule_key(name, rule["name"])
            if key not in points:
                reserve.append(rule)
                continue
            levels, new = by_key[key].levels, points[key]
            old = float(rule["points"])
            rule["steps"] = [[t, new[_nearest(levels, p / old)]] for t, p in rule["steps"]]
            rule["below"] = new[_nearest(levels, rule["below"] / old)]
            rule["points"] = new[-1]
            if missing_shares and key in missing_shares:
                rule["missing_share"] = round(missing_shares[key], 6)
            rules.append(rule)
        component["rules"], component["reserve"] = rules, reserve
        component["max_points"] = round(sum(r["points"] for r in rules), 6)
    data["version"] = cfg.version + 1
    return HealthConfig.model_validate(data)


def _nearest(levels: tuple[float, ...], value: float) -> int:
    return int(np.argmin([abs(v - value) for v in levels]))


# ------------------------------------------------------------------------------ the backtest


FIT_METHODS = ("weights", "steps", "combined")


@dataclass
class Backtest:
    """Everything ``churn health backtest`` reports and writes."""

    periods: dict[str, Any]
    current: ScoreReport
    suggested: ScoreReport
    current_train: ScoreReport
    rules: dict[str, dict[str, float]]
    gain: float
    interval: dict[str, float]
    method: str
    validation_roc_auc: dict[str, float]
    config: HealthConfig
    current_config: HealthConfig
    band_fit: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    # the validation period: current rules against the chosen candidate's training-period fit
    validation: dict[str, Any] = field(default_factory=dict)
    segments: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def weights(self) -> dict[str, float]:
        """The suggested points: each sub-rule's and each component's maximum."""
        out: dict[str, float] = {}
        for name, component in self.config.components.items():
            out[name] = float(component.max_points)
            for rule in component.rules:
                out[rule_key(name, rule.name)] = float(rule.points)
        return out

    def summary(self) -> dict[str, Any]:
        """The ``--json`` object (and the MLflow artifact)."""
        return {
            "current": self.current.summary(),
            "suggested": self.suggested.summary(),
            "weights": self.weights,
            "current_weights": {
                **self.current_config.components.maxima(),
                **rule_points(self.current_config),
            },
            "roc_auc_gain": self.gain,
            "interval": self.interval,
            "method": self.method,
            "validation_roc_auc": self.validation_roc_auc,
            "band_fit": self.band_fit,
            "selection": self.selection,
            "validation": self.validation,
            "missing_shares": {
                "current": rule_missing_shares(self.current_config),
                "suggested": rule_missing_shares(self.config),
            },
            "workload_share": self.current.workload_share,
            "bands": {"current": self.current.bands, "suggested": self.suggested.bands},
            "lift": {
                "current": {
                    "below_60": self.current.lift_below_60,
                    "below_40": self.current.lift_below_40,
                },
                "suggested": {
                    "below_60": self.suggested.lift_below_60,
                    "below_40": self.suggested.lift_below_40,
                },
            },
            "rules": self.rules,
            "segments": self.segments,
            "periods": self.periods,
            "version": {"current": self.current_config.version, "suggested": self.config.version},
        }

    def metrics(self) -> dict[str, float]:
        """Flat figures for MLflow (``health_backtest_`` prefix is added by the caller)."""
        out = {}
        for side, report in (("current", self.current), ("suggested", self.suggested)):
            for key, value in report.summary().items():
                out[f"{side}_{key}"] = value
            critical = report.bands["critical"]["share_of_rows"]
            out[f"{side}_share_below_60"] = report.bands["at_risk"]["share_of_rows"] + critical
            out[f"{side}_share_below_40"] = critical
        out["roc_auc_gain"] = self.gain
        out["roc_auc_gain_low"] = self.interval["low"]
        out["roc_auc_gain_high"] = self.interval["high"]
        return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


def shape_deviation(layout: list[tuple[str, int]], cfg: HealthConfig) -> np.ndarray:
    """The matrix ``D`` of the combined fit's penalty: for every step column of the steps
    layout, its increment minus the increment the current rules' proportions give the same
    sub-rule total (``w_rj - d_rj * sum_j w_rj``); zero rows for unknown-value columns. With
    ``D @ w = 0`` the steps fit is the weights fit (every sub-rule keeps its proportions)."""
    k = len(layout)
    dev = np.zeros((k, k))
    increments: dict[str, list[float]] = {}
    for rule in rule_levels(cfg):
        span = rule.levels[-1] - rule.levels[0]
        increments[rule.key] = [
            (b - a) / span if span > 0 else 0.0
            for a, b in zip(rule.levels[:-1], rule.levels[1:], strict=True)
        ]
    for i, (key, j) in enumerate(layout):
        if j < 1:
            continue
        share = increments[key][j - 1]
        for m, (other, level) in enumerate(layout):
            if other == key and level >= 1:
                dev[i, m] -= share
        dev[i, i] += 1.0
    return dev


@dataclass(frozen=True)
class Candidate:
    """One way of fitting the points: the method, the multiple of the current rules' share of
    rows below each cut-off the fit must put there (``None``: level free), and for
    ``combined`` the strength of the pull toward the current step proportions."""

    method: str = "weights"
    band_target: float | None = 1.25
    strength: float = 0.0

    def label(self) -> str:
        parts = [self.method]
        if self.method == "combined":
            parts.append(f"shape penalty {self.strength:g}")
        parts.append(
            "level free" if self.band_target is None else f"band target {self.band_target:g}x"
        )
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "band_target": self.band_target, "strength": self.strength}


def band_shares_for(
    rows: pd.DataFrame, cfg: HealthConfig, target: float | None
) -> dict[float, float] | None:
    """``{cut-off: share}`` for the fit: ``target`` times the share of ``rows`` the current
    rules put below 60 and below 40 (``None`` when ``target`` is)."""
    if target is None:
        return None
    return band_shares(_health_score(rows, cfg), cfg, target)


def band_shares(current: np.ndarray, cfg: HealthConfig, target: float) -> dict[float, float]:
    """:func:`band_shares_for` from the rows' current health scores (scored once by a caller
    that asks for several targets)."""
    return {
        cut: min(target * q, 1.0)
        for cut in (cfg.bands.healthy, cfg.bands.at_risk)
        if (q := _below(current, cut)) > 0
    }


def _fit_once(
    rows: pd.DataFrame,
    cfg: HealthConfig,
    candidate: Candidate,
    band_shares: Mapping[float, float] | None,
    fit_missing: bool,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Fitted levels (sub-rule maxima summing to 1) and unrounded unknown-value shares."""
    design = "steps" if candidate.method == "combined" else candidate.method
    x, layout = design_matrix(rows, cfg, design, fit_missing)
    penalty = None
    if candidate.method == "combined":
        penalty = (candidate.strength, shape_deviation(layout, cfg))
    fit = fit_weights(
        x, rows["churned"].to_numpy(float), band_shares=band_shares, shape_penalty=penalty
    )
    levels = fitted_levels(fit, layout, cfg)
    total = sum(max(v) for v in levels.values()) or 1.0
    scaled = {k: [v / total for v in vals] for k, vals in levels.items()}
    return scaled, fitted_missing_shares(fit, layout, grid=1e-9)


def fit_suggestion(
    train: pd.DataFrame,
    cfg: HealthConfig,
    method: str | Candidate = "weights",
    band_shares: Mapping[float, float] | None = None,
    fit_missing: bool = True,
    bags: int = 0,
    seed: int = BOOTSTRAP_SEED,
) -> HealthConfig:
    """The suggested config fitted on ``train`` rows (labels in ``churned``) by ``method`` (a
    method name or a :class:`Candidate`); ``band_shares`` ``{cut-off: share}``: at least that
    share of the training rows below each cut-off (:func:`fit_weights`); ``fit_missing``:
    each sub-rule's share for an unknown value is fitted too (:func:`design_matrix`);
    ``bags`` > 0: the points are the average of that many fits on bootstrap resamples of the
    accounts (bagging: steadier points), each with the same ``band_shares``."""
    candidate = method if isinstance(method, Candidate) else Candidate(method, None)
    if candidate.method not in FIT_METHODS:
        raise ValueError(f"unknown fit method {candidate.method!r}")
    if bags <= 0:
        levels, missing = _fit_once(train, cfg, candidate, band_shares, fit_missing)
    else:
        accounts = train["account_id"].to_numpy()
        ids, idx = np.unique(accounts, return_inverse=True)
        rows_of = [np.flatnonzero(idx == g) for g in range(len(ids))]
        rng = np.random.default_rng(seed)
        levels, missing = {}, {}
        sums: dict[str, np.ndarray] = {}
        missing_sums: dict[str, float] = {}
        for _ in range(bags):
            drawn = rng.integers(0, len(ids), len(ids))
            sample = train.iloc[np.concatenate([rows_of[g] for g in drawn])]
            got, unknown = _fit_once(sample, cfg, candidate, band_shares, fit_missing)
            for key, vals in got.items():
                sums[key] = sums.get(key, 0.0) + np.asarray(vals)
            for key, share in unknown.items():
                missing_sums[key] = missing_sums.get(key, 0.0) + share
        levels = {k: list(v / bags) for k, v in sums.items()}
        missing = {k: v / bags for k, v in missing_sums.items()}
    grid = MISSING_SHARE_GRID
    rounded = {k: min(1.0, max(0.0, round(v / grid) * grid)) for k, v in missing.items()}
    points = suggested_points(levels, cfg)
    return suggested_config(cfg, points, rounded)


def _health_score(frame: pd.DataFrame, cfg: HealthConfig) -> np.ndarray:
    from features.health import score_health

    return score_health(frame, cfg)["health_score"].to_numpy(dtype=float)


def _below(score: np.ndarray, cutoff: float) -> float:
    return float((score < cutoff).mean()) if len(score) else math.nan


# The candidates the validation period chooses from: the combined fit's strengths of the pull
# toward the current step proportions, and the band targets tried (smallest first).
CANDIDATE_STRENGTHS = (0.01, 0.1, 1.0)
BAND_TARGETS = (1.25, 1.5, 2.0)
# Bootstrap refits averaged when bagging (whether to bag is chosen on the validation period).
BAGS = 10


def candidate_grid(method: str = "auto") -> list[tuple[str, float]]:
    """The (method, strength) pairs to choose from: all of them for ``auto``, else those of
    ``method`` (``combined`` still chooses its strength)."""
    grid = [("weights", 0.0), ("steps", 0.0)] + [("combined", s) for s in CANDIDATE_STRENGTHS]
    if method == "auto":
        return grid
    if method not in FIT_METHODS:
        raise ValueError(f"unknown fit method {method!r} (one of auto, {', '.join(FIT_METHODS)})")
    return [pair for pair in grid if pair[0] == method]


def select_candidate(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    cfg: HealthConfig,
    method: str = "auto",
    keep_bands: bool = True,
) -> tuple[Candidate, dict[str, Any]]:
    """Choose how to fit the points, on the training and validation periods only.

    Every (method, strength) of :func:`candidate_grid` is fitted on the training period. With
    ``keep_bands`` its band target is the smallest of :data:`BAND_TARGETS` whose fit puts
    :data:`BAND_SHARE_RANGE` times the current rules' validation share of rows below 60
    there, and some rows below 40 (the bands keep their meaning); a candidate no target
    brings into range is not eligible. The chosen candidate has the highest validation ROC
    AUC among the eligible ones (among all when none is). Returns it and the table of
    candidates (``{"candidates": [...], "chosen": label, "chosen_config": its training-period
    fit, "current_roc_auc": ...}``)."""
    y_valid = validation["churned"].to_numpy(float)
    now_train = _health_score(train, cfg)
    now_valid = _health_score(validation, cfg)
    valid_base = _below(now_valid, cfg.bands.healthy)
    low, high = BAND_SHARE_RANGE
    targets: tuple[float | None, ...] = BAND_TARGETS if keep_bands else (None,)
    rows: list[dict[str, Any]] = []
    for name, strength in candidate_grid(method):
        for target in targets:
            candidate = Candidate(name, target, strength)
            shares = None if target is None else band_shares(now_train, cfg, target)
            fitted = fit_suggestion(train, cfg, candidate, shares)
            score = _health_score(validation, fitted)
            below = _below(score, cfg.bands.healthy)
            ratio = below / valid_base if valid_base > 0 else 1.0
            eligible = target is None or (
                low <= ratio <= high and _below(score, cfg.bands.at_risk) > 0
            )
            row = {
                "candidate": candidate,
                "config": fitted,
                "label": candidate.label(),
                **candidate.to_dict(),
                "validation_roc_auc": roc_auc(y_valid, 100.0 - score),
                "validation_below_60": below,
                "validation_below_60_ratio": ratio,
                "eligible": eligible,
            }
            if eligible or ratio > high or target == targets[-1]:
                rows.append(row)
                break
    pool = [r for r in rows if r["eligible"]] or rows
    best = max(pool, key=lambda r: r["validation_roc_auc"])
    info = {
        "candidates": [
            {k: v for k, v in r.items() if k not in ("candidate", "config")} for r in rows
        ],
        "chosen": best["label"],
        "chosen_config": best["config"],
        "chosen_validation_roc_auc": best["validation_roc_auc"],
        "current_roc_auc": roc_auc(y_valid, 100.0 - now_valid),
        "current_validation_below_60": valid_base,
        "any_eligible": any(r["eligible"] for r in rows),
    }
    chosen: Candidate = best["candidate"]
    return chosen, info


def _bagging_helps(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    cfg: HealthConfig,
    candidate: Candidate,
    selection: dict[str, Any],
    bags: int,
    seed: int,
) -> bool:
    """Whether the average of ``bags`` bootstrap fits of ``candidate`` on the training period
    ranks the validation period better than its single fit, the bands kept as in
    :func:`select_candidate`; recorded in ``selection["bagging"]``."""
    fitted = fit_suggestion(
        train,
        cfg,
        candidate,
        band_shares_for(train, cfg, candidate.band_target),
        bags=bags,
        seed=seed,
    )
    score = _health_score(validation, fitted)
    auc = roc_auc(validation["churned"].to_numpy(float), 100.0 - score)
    base = selection["current_validation_below_60"]
    ratio = _below(score, cfg.bands.healthy) / base if base > 0 else 1.0
    low, high = BAND_SHARE_RANGE
    kept = candidate.band_target is None or (
        low <= ratio <= high and _below(score, cfg.bands.at_risk) > 0
    )
    helps = kept and auc > selection["chosen_validation_roc_auc"]
    if helps:
        selection["chosen_config"] = fitted
    selection["bagging"] = {
        "bags": bags,
        "validation_roc_auc": auc,
        "validation_below_60_ratio": ratio,
        "used": helps,
    }
    if helps:
        selection["chosen_validation_roc_auc"] = auc
    return helps


def _validation_report(
    validation: pd.DataFrame,
    cfg: HealthConfig,
    fitted: HealthConfig,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """The validation period's figures, current rules against ``fitted`` (the chosen
    candidate fitted on the training period, not the refit, which has seen these rows), at
    the current rules' validation workload, with the bootstrap interval of the gain."""
    y = validation["churned"].to_numpy(float)
    now, new = _health_score(validation, cfg), _health_score(validation, fitted)
    workload = _below(now, cfg.bands.healthy)
    current = score_report(y, now, cfg, workload)
    suggested = score_report(y, new, fitted, workload)
    return {
        "current": current.to_dict(),
        "suggested": suggested.to_dict(),
        "roc_auc_gain": suggested.roc_auc - current.roc_auc,
        "interval": bootstrap_auc_gain(
            y,
            100.0 - now,
            100.0 - new,
            validation["account_id"].to_numpy(),
            resamples=resamples,
            seed=seed,
        ),
    }


def run_backtest(
    frame: pd.DataFrame,
    split: Any,
    cfg: HealthConfig,
    *,
    method: str = "auto",
    keep_bands: bool = True,
    by_segment: bool = False,
    bags: int = BAGS,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Backtest:
    """The backtest of ``cfg`` over the periods of ``split`` (a :class:`training.split.
    TimeSplit` of ``frame``) and the suggested points, chosen without the test period:
    candidates are fitted on the training period and one is chosen on the validation period
    (:func:`select_candidate`); it is refitted on the training and validation periods
    together and only then scored on the test period. With ``bags`` > 0 the chosen candidate
    is also fitted on the training period as the average of ``bags`` bootstrap fits; if that
    ranks the validation period better (the bands still kept), the refit is bagged too.
    ``method``: ``auto`` (choose among all) or one fit method; ``keep_bands`` (the default):
    the bands keep their meaning and workload, without it the points only rank
    (most accounts then score higher than today)."""
    import time

    if method != "auto" and method not in FIT_METHODS:
        raise ValueError(f"unknown fit method {method!r} (one of auto, {', '.join(FIT_METHODS)})")
    started = time.perf_counter()
    train, validation, test = split.frames(frame)
    y_test = test["churned"].to_numpy(float)
    current_test = _health_score(test, cfg)
    workload = _below(current_test, cfg.bands.healthy)

    y_train = train["churned"].to_numpy(float)
    train_score = _health_score(train, cfg)
    chosen_candidate, selection = select_candidate(train, validation, cfg, method, keep_bands)
    if bags > 0:
        bags = (
            bags
            if _bagging_helps(train, validation, cfg, chosen_candidate, selection, bags, seed)
            else 0
        )
    known = pd.concat([train, validation])
    chosen = fit_suggestion(
        known,
        cfg,
        chosen_candidate,
        band_shares_for(known, cfg, chosen_candidate.band_target),
        bags=bags,
        seed=seed,
    )
    selection["refit"] = {"rows": len(known), "bags": bags}
    validation_report = _validation_report(
        validation, cfg, selection.pop("chosen_config"), resamples, seed
    )
    band_fit: dict[str, Any] = {}
    if keep_bands:
        band_fit = {"target": chosen_candidate.band_target}
        cuts = {"below_60": cfg.bands.healthy, "below_40": cfg.bands.at_risk}
        scores = {
            period: (_health_score(rows, cfg), _health_score(rows, chosen))
            for period, rows in (("train", train), ("validation", validation))
        }
        for name, cut in cuts.items():
            band_fit[name] = {
                f"{side}_{period}": _below(pair[i], cut)
                for period, pair in scores.items()
                for i, side in enumerate(("current", "suggested"))
            }
    valid_auc = {
        "current": selection["current_roc_auc"],
        "suggested": selection["chosen_validation_roc_auc"],
    }
    suggested_test = _health_score(test, chosen)

    current = score_report(y_test, current_test, cfg, workload)
    suggested = score_report(y_test, suggested_test, chosen, workload)
    current_train = score_report(y_train, train_score, cfg, _below(train_score, cfg.bands.healthy))
    interval = bootstrap_auc_gain(
        y_test,
        100.0 - current_test,
        100.0 - suggested_test,
        test["account_id"].to_numpy(),
        resamples=resamples,
        seed=seed,
    )
    segments: dict[str, Any] = {}
    if by_segment:
        segments = _by_segment(known, test, cfg, chosen_candidate, workload, chosen)
    label = chosen_candidate.label()
    return Backtest(
        periods=split.to_dict(),
        current=current,
        suggested=suggested,
        current_train=current_train,
        rules=rule_metrics(y_test, rule_shapes(test, cfg), rule_points(cfg)),
        gain=suggested.roc_auc - current.roc_auc,
        interval=interval,
        method=label + (f", {bags} bagged refits" if bags else ""),
        validation_roc_auc=valid_auc,
        config=chosen,
        current_config=cfg,
        band_fit=band_fit,
        selection=selection,
        validation=validation_report,
        segments=segments,
        seconds=time.perf_counter() - started,
    )


def _by_segment(
    known: pd.DataFrame,
    test: pd.DataFrame,
    cfg: HealthConfig,
    candidate: Candidate,
    workload: float,
    pooled: HealthConfig,
) -> dict[str, Any]:
    """A report only (the written file holds one set of points): the chosen candidate refitted
    per revenue segment on the training and validation periods (band target on the segment's
    own shares); test metrics of scoring each segment with its own points."""
    column = cfg.cadence.segment_feature
    segments = sorted(str(s) for s in test[column].dropna().unique()) if column in test else []
    score = _health_score(test, pooled).copy()
    out: dict[str, Any] = {}
    for seg in segments:
        rows = known[known[column].astype(str) == seg]
        mask = (test[column].astype(str) == seg).to_numpy()
        if rows["churned"].nunique() < 2 or not mask.any():
            continue
        shares = band_shares_for(rows, cfg, candidate.band_target)
        seg_cfg = fit_suggestion(rows, cfg, candidate, shares)
        score[mask] = _health_score(test[mask], seg_cfg)
        y_seg = test.loc[mask, "churned"].to_numpy(float)
        out[seg] = {
            "train_rows": len(rows),
            "test_rows": int(mask.sum()),
            "roc_auc": roc_auc(y_seg, 100.0 - score[mask]),
            "weights": {
                **seg_cfg.components.maxima(),
                **rule_points(seg_cfg),
            },
        }
    y = test["churned"].to_numpy(float)
    out["combined"] = score_report(y, score, cfg, workload).summary()
    return out


# ------------------------------------------------------------------------- source -> backtest


def backtest_source(
    source: str,
    settings: Any,
    *,
    health_config: Any = None,
    method: str = "auto",
    keep_bands: bool = True,
    by_segment: bool = False,
    bags: int = BAGS,
    resamples: int = BOOTSTRAP_RESAMPLES,
    progress: Any = None,
) -> Backtest:
    """Build the labeled snapshots of ``source`` as ``churn train`` does (same settings, same
    time split) and backtest the health rules on them."""
    from churn.engine import open_engine
    from features.catalog import FEATURES
    from features.health import load_health_config
    from training.config import plan_run
    from training.frame import build_training_frame, load_source
    from training.progress import SILENT
    from training.split import split_by_time

    ui = progress or SILENT
    with open_engine(settings) as engine:
        plan = plan_run(settings)
        loaded = load_source(source, settings, plan)
        with ui.step("building labeled snapshots"):
            data = build_training_frame(loaded, plan, engine)
    cfg = (
        plan.health
        if health_config is None
        else load_health_config(health_config, known_features=FEATURES)
    )
    with ui.step("splitting by time"):
        parts = split_by_time(
            data.frame, plan.config.split, plan.snapshots.horizon_days, plan.features
        )
    with ui.step("scoring the rules, fitting new points, bootstrapping the gain"):
        return run_backtest(
            data.frame,
            parts.split,
            cfg,
            method=method,
            keep_bands=keep_bands,
            by_segment=by_segment,
            bags=bags,
            resamples=resamples,
        )


# ------------------------------------------------------------------------------- the file


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f} %"


def config_header(bt: Backtest) -> list[str]:
    """The suggested file's header comment: what was measured before and after."""
    test = bt.periods.get("test", {})
    ci = bt.interval
    train, valid = bt.periods.get("train", {}), bt.periods.get("validation", {})
    sel = bt.selection
    lines = [
        f"Suggested health rules, version {bt.config.version} (from version "
        f"{bt.current_config.version}), by `churn health backtest`; not active until "
        "`churn health apply FILE`.",
        "How they were fitted (the test period chose nothing):",
        f"  1. candidates fitted on the training period ({train.get('start')} to "
        f"{train.get('end')}): {len(sel.get('candidates', []))} candidates (fit method, penalty, "
        "smallest band target keeping the bands);",
        f"  2. chosen on the validation period ({valid.get('start')} to {valid.get('end')}): "
        f"{sel.get('chosen', bt.method)}, the highest validation ROC AUC with the bands kept "
        f"({sel.get('chosen_validation_roc_auc', math.nan):.3f}; current rules "
        f"{sel.get('current_roc_auc', math.nan):.3f});",
        "  3. refitted on the training and validation periods together"
        + (f" (average of {sel['refit']['bags']} bootstrap refits)" if _bagged(bt) else "")
        + ", then scored on the test period:",
        f"Test period {test.get('start')} to {test.get('end')} ({test.get('rows')} rows, "
        f"{test.get('positives')} churned):",
        f"  ROC AUC {bt.current.roc_auc:.3f} -> {bt.suggested.roc_auc:.3f} "
        f"(gain {bt.gain:+.3f}, 95 % bootstrap interval {ci['low']:+.3f} to {ci['high']:+.3f}, "
        f"{ci['resamples']} resamples of {ci['accounts']} accounts)",
        f"  PR AUC {bt.current.pr_auc:.3f} -> {bt.suggested.pr_auc:.3f}",
        f"  recall at equal workload ({_pct(bt.current.workload_share)} of rows): "
        f"{_pct(bt.current.recall_at_equal_workload)} -> "
        f"{_pct(bt.suggested.recall_at_equal_workload)}",
        "  per band: share of rows, share of churners, churn rate (current -> suggested)",
    ]
    for band in ("healthy", "at_risk", "critical"):
        a, b = bt.current.bands[band], bt.suggested.bands[band]
        lines.append(
            f"    {band:<8} rows {_pct(a['share_of_rows'])} -> {_pct(b['share_of_rows'])}, "
            f"churners {_pct(a['share_of_churners'])} -> {_pct(b['share_of_churners'])}, "
            f"churn rate {_pct(a['churn_rate'])} -> {_pct(b['churn_rate'])}"
        )
    fit = bt.band_fit
    if fit:
        below = fit["below_60"]
        lines += [
            f"  the bands keep their workload: the fit put {fit['target']:g}x the current "
            "rules' share of its rows below 60 and 40;",
            f"  below 60 on training {_pct(below['current_train'])} -> "
            f"{_pct(below['suggested_train'])}, validation "
            f"{_pct(below['current_validation'])} -> {_pct(below['suggested_validation'])}",
        ]
    else:
        lines.append("  fitted for ranking only: the bands' workload is not kept")
    return lines


def _bagged(bt: Backtest) -> bool:
    return bool(bt.selection.get("refit", {}).get("bags"))


def config_yaml(bt: Backtest) -> str:
    """The suggested config as YAML, with :func:`config_header` as its comment."""
    import yaml

    data = bt.config.model_dump(mode="json", exclude_none=True)
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    import textwrap

    header = ""
    for line in config_header(bt):
        indent = " " * (len(line) - len(line.lstrip()))
        for part in textwrap.wrap(line, width=96, subsequent_indent=indent + "   "):
            header += f"# {part}\n"
    return header + "#\n# Layout and meaning of every key: see configs/health.yaml.\n\n" + body


# ------------------------------------------------------------------------------- apply


@dataclass(frozen=True)
class Applied:
    """What ``churn health apply`` did."""

    target: Path
    backup: Path
    old_version: int
    new_version: int
    changes: list[str]


def describe_changes(old: HealthConfig, new: HealthConfig) -> list[str]:
    """One line per component whose points changed: its maximum and its sub-rules' points,
    which sub-rules come from or go to the reserve, are new or are removed, and the share of
    its points an unknown value earns where that changed or the sub-rule is new to scoring."""
    lines = []
    before, after = rule_points(old), rule_points(new)
    reserve_before, reserve_after = _reserve_keys(old), _reserve_keys(new)
    was_unknown, now_unknown = rule_missing_shares(old), rule_missing_shares(new)
    for name, component in new.components.items():
        was = old.components.maxima()[name]
        parts = []
        keys = [k for k in dict.fromkeys([*before, *after]) if component_of(k) == name]
        for key in keys:
            a, b = before.get(key), after.get(key)
            short = key.split(".", 1)[1]
            if a is None:
                origin = "from the reserve" if key in reserve_before else "new"
                parts.append(
                    f"{short} {origin} {b:g} (an unknown value earns "
                    f"{100 * now_unknown[key]:g} % of its points)"
                )
            elif b is None:
                where = "to the reserve" if key in reserve_after else "removed"
                parts.append(f"{short} {a:g} -> {where}")
            elif a != b:
                parts.append(f"{short} {a:g} -> {b:g}")
            if a is not None and b is not None and was_unknown[key] != now_unknown[key]:
                parts.append(
                    f"{short} unknown value earns {100 * was_unknown[key]:g} % -> "
                    f"{100 * now_unknown[key]:g} % of its points"
                )
        if parts or was != component.max_points:
            lines.append(
                f"{name} {was:g} -> {component.max_points:g} points: "
                + ("; ".join(parts) if parts else "same sub-rule points")
            )
    if old.bands != new.bands:
        lines.append(
            f"bands {old.bands.healthy:g}/{old.bands.at_risk:g} -> "
            f"{new.bands.healthy:g}/{new.bands.at_risk:g}"
        )
    return lines or ["no points changed"]


def _reserve_keys(cfg: HealthConfig) -> set[str]:
    return {rule_key(name, r.name) for name, c in cfg.components.items() for r in c.reserve}


def apply_config(file: Path | str, target: Path | str) -> Applied:
    """Validate ``file`` as health rules and make it ``target`` (the active config), keeping
    the old ``target`` next to it as ``<name>.v<version>.bak.yaml``. Nothing is replaced when
    the file is not valid rules, names an unknown feature, or does not raise the version."""
    import os
    import shutil

    from churn.errors import ConfigError
    from features.catalog import FEATURES
    from features.health import load_health_config

    file, target = Path(file), Path(target)
    if not file.is_file():
        raise ConfigError(
            f"{file} does not exist", hint="pass the file `churn health backtest` wrote"
        )
    new = load_health_config(file, known_features=FEATURES)
    old = load_health_config(target)
    if file.resolve() == target.resolve():
        raise ConfigError(f"{file} is already the active health config", hint="nothing to apply")
    if new.version <= old.version:
        raise ConfigError(
            f"{file}: version {new.version} is not above the active rules' version "
            f"{old.version} ({target})",
            hint="every change of the rules gets a higher version (it is stored with each "
            "score); raise `version` in the file",
        )
    backup = target.with_name(f"{target.stem}.v{old.version}.bak{target.suffix}")
    shutil.copy2(target, backup)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(file, tmp)
    os.replace(tmp, target)
    return Applied(target, backup, old.version, new.version, describe_changes(old, new))
