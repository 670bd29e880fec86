"""The model card (``model_card.md`` of the bundle): data, periods, metrics against the
baselines, top drivers and limitations, in Markdown a reviewer reads without the code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import FEATURES
from training.evaluate import ALL_SCORERS, HIGHER_IS_BETTER, METRIC_LABELS, METRICS

_SCORER_NAMES = {
    "model": "LightGBM (calibrated)",
    "health_score": "Health score baseline",
    "logistic": "Logistic regression baseline",
    "recency": "Recency baseline",
    "bgnbd": "BG/NBD baseline",
}


@dataclass
class CardInputs:
    """Everything the card shows; plain values so it can be rendered from a test too."""

    model_version: str
    trained_at: str
    source: str
    label_mode: str
    horizon_days: int
    periods: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    drivers: pd.DataFrame  # feature, mean_abs_shap, direction (sign of correlation)
    calibration_note: str
    best_iteration: int
    tables_present: list[str]
    absent_families: dict[str, list[str]]
    snapshot_hash: str
    run_id: str
    # The bundle's operating points (``OperatingPoints.to_dict()``); None: not chosen.
    operating_points: dict[str, Any] | None = None
    promotion: str = ""
    seed: int = 0
    search_trials: int = 0
    ece_bins: int = 10
    extra_limitations: list[str] = field(default_factory=list)
    # ``Backtest.summary()`` of the health rules on the same split (training.health_backtest)
    health_backtest: dict[str, Any] | None = None
    # Each scorer's metric intervals, {scorer: {metric: (low, high)}}, and how they were made
    # (``IntervalNote.to_dict()``: samples, level, accounts, skipped); None: no intervals.
    intervals: dict[str, dict[str, tuple[float, float]]] | None = None
    interval_note: dict[str, Any] | None = None


def mean_abs_drivers(
    contrib: np.ndarray, x: np.ndarray, features: list[str], top: int = 10
) -> pd.DataFrame:
    """The ``top`` features by mean |SHAP| on the test rows, with the direction in which a
    higher value moves the risk (sign of the correlation of value and contribution)."""
    strength = np.abs(contrib).mean(axis=0)
    rows = []
    for i in np.argsort(-strength)[:top]:
        known = ~np.isnan(x[:, i])
        direction = ""
        if known.sum() > 2 and np.std(x[known, i]) > 0 and np.std(contrib[known, i]) > 0:
            corr = np.corrcoef(x[known, i], contrib[known, i])[0, 1]
            direction = "higher raises risk" if corr > 0 else "higher lowers risk"
        rows.append(
            {"feature": features[i], "mean_abs_shap": float(strength[i]), "direction": direction}
        )
    return pd.DataFrame(rows, columns=["feature", "mean_abs_shap", "direction"])


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.3f}"


_POINT_TEXT = {
    "act_now": "`act_now`",
    "watch": "`watch` (includes the act_now rows)",
}


def _share(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{float(value):.1%}"


def _operating_points(points: dict[str, Any] | None) -> list[str]:
    """The "Operating points" section: each threshold and what it catches, by period."""
    if not points:
        return []
    figures = points.get("figures") or {}
    lines = [
        "",
        "## Operating points",
        "",
        "The churn-probability thresholds of the priorities (an account at or above a point "
        "gets that priority; severe escalations and the health band can raise it further), "
        "chosen on the validation period and measured on the untouched test period. "
        "Recall = share of the period's churners at or above the point; precision = churn "
        "rate among those accounts; workload = share of the period's rows at or above it.",
        "",
        "| point | threshold | period | recall | precision | lift | workload |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for name, text in _POINT_TEXT.items():
        for period in ("validation", "test"):
            f = figures.get(name, {}).get(period)
            if not f:
                continue
            lift = f.get("lift")
            lift_text = "n/a" if lift is None or not np.isfinite(lift) else f"{lift:.1f}x"
            lines.append(
                f"| {text} | {points[name]:.3f} | {period} | {_share(f.get('recall'))} | "
                f"{_share(f.get('precision'))} | {lift_text} | {_share(f.get('workload'))} |"
            )
    test = figures.get("act_now", {}).get("test")
    watch = figures.get("watch", {}).get("test")
    if test and watch:
        lines += [
            "",
            f"On the test period, `act_now` catches {_share(test.get('recall'))} of the churners "
            f"at a precision of {_share(test.get('precision'))}; `watch` and above catch "
            f"{_share(watch.get('recall'))} at {_share(watch.get('precision'))}.",
        ]
    if points.get("rule"):
        lines += ["", f"Rule: {points['rule']}."]
    return lines


def _cell(value: float | None, bounds: tuple[float, float] | None) -> str:
    """A metric with its interval, ``0.803 [0.781-0.824]`` (the value alone without one)."""
    text = _fmt(value)
    if text == "n/a" or bounds is None or not all(np.isfinite(b) for b in bounds):
        return text
    return f"{text} [{_fmt(bounds[0])}-{_fmt(bounds[1])}]"


def _metrics_table(
    metrics: dict[str, dict[str, float]],
    intervals: dict[str, dict[str, tuple[float, float]]] | None = None,
) -> list[str]:
    scorers = [s for s in ALL_SCORERS if s in metrics]
    intervals = intervals or {}
    lines = [
        "| metric | " + " | ".join(_SCORER_NAMES[s] for s in scorers) + " |",
        "|---|" + "---:|" * len(scorers),
    ]
    for m in METRICS:
        arrow = "higher is better" if HIGHER_IS_BETTER[m] else "lower is better"
        cells = [_cell(metrics[s].get(m), intervals.get(s, {}).get(m)) for s in scorers]
        lines.append(f"| {METRIC_LABELS[m]} ({arrow}) | " + " | ".join(cells) + " |")
    return lines


def _intervals_note(note: dict[str, Any] | None) -> list[str]:
    """What the bracketed intervals of the metrics table are."""
    if not note:
        return []
    level = f"{100 * note['level']:g} %"
    skipped = (
        f" ({note['skipped']} resamples holding one class only were left out)"
        if note.get("skipped")
        else ""
    )
    return [
        "",
        f"In brackets: {level} bootstrap intervals by account, from {note['samples']} "
        f"resamples of the {note['accounts']:,} test accounts{skipped}. Each resample draws "
        "the accounts with replacement and takes every row of a drawn account with it (rows "
        "of one account are correlated, so resampling rows would make the intervals too "
        f"narrow); every column is measured on the same resamples; an interval holds the "
        f"central {level} of the resampled values (docs/metrics.md#intervals).",
    ]


def _purchase_baselines_note(metrics: dict[str, dict[str, float]]) -> list[str]:
    """A paragraph on the purchase baselines, when the run scored them (inactivity mode)."""
    if "recency" not in metrics and "bgnbd" not in metrics:
        return []
    return [
        "",
        "The purchase baselines read only the invoices issued before each row's date: the "
        "recency baseline ranks by days since the last invoice (a ranking in days, so no Brier "
        "score or calibration error); the BG/NBD baseline is the buy-till-you-die model's "
        "probability of no purchase in the row's label window, the model fitted on every "
        "account's purchase history before that date (Fader, Hardie and Lee 2005). A model "
        "that cannot beat them has learned little beyond how long a client has been quiet.",
    ]


def _period_line(name: str, p: dict[str, Any]) -> str:
    return (
        f"| {name} | {p['start']} | {p['end']} | {p['as_of_dates']} | {p['rows']} | "
        f"{p['positives']} | {p['positives'] / max(p['rows'], 1):.1%} |"
    )


def _pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{100 * value:.1f} %"


def _validation_row(bt: dict[str, Any]) -> list[str]:
    valid = bt.get("validation_roc_auc") or {}
    if not valid:
        return []
    rows = [
        f"| ROC AUC on the validation period (chosen there; suggested: fitted on training) | "
        f"{_fmt(valid.get('current'))} | {_fmt(valid.get('suggested'))} |"
    ]
    report = bt.get("validation") or {}
    if report:
        cur, sug = report["current"], report["suggested"]
        rows.append(
            "| recall at equal workload on the validation period "
            f"({_pct(cur['workload_share'])} of rows) | {_pct(cur['recall_at_equal_workload'])} "
            f"| {_pct(sug['recall_at_equal_workload'])} |"
        )
    return rows


def health_backtest_section(bt: dict[str, Any]) -> list[str]:
    """The "Health rules backtest" section: the current rules and the suggested points (chosen
    on the validation period, refitted on training + validation), on the test period
    (docs/health-backtest.md)."""
    cur, sug, ci = bt["current"], bt["suggested"], bt["interval"]
    lines = [
        "## Health rules backtest",
        "",
        "The rule-based health score (version "
        f"{bt['version']['current']}) on the same test rows, against suggested points "
        f"(version {bt['version']['suggested']}, non-negative, summing to 100, bands "
        "unchanged: below 60 intervene, below 40 critical). How to fit them was chosen "
        "without the test period: candidates fitted on the training period, the one ranking "
        f"the validation period best with the bands kept (`{bt['method']}`) refitted on the "
        "training and validation periods; the test period only reports. The suggestion is "
        "not applied: "
        "`churn health backtest` writes it to a file and `churn health apply FILE` activates it.",
        "",
        "| metric | current rules | suggested points |",
        "|---|---:|---:|",
        f"| ROC AUC of 100 - score | {_fmt(cur['roc_auc'])} | {_fmt(sug['roc_auc'])} |",
        f"| PR AUC | {_fmt(cur['pr_auc'])} | {_fmt(sug['pr_auc'])} |",
        f"| recall at equal workload ({_pct(bt['workload_share'])} of rows) | "
        f"{_pct(cur['recall_at_equal_workload'])} | {_pct(sug['recall_at_equal_workload'])} |",
        f"| churners in the healthy band | {_pct(cur['churners_in_healthy_band'])} | "
        f"{_pct(sug['churners_in_healthy_band'])} |",
        *_validation_row(bt),
        "",
        f"ROC AUC gain {bt['roc_auc_gain']:+.3f}, 95 % bootstrap interval "
        f"{ci['low']:+.3f} to {ci['high']:+.3f} ({ci['resamples']} resamples of the "
        f"{ci['accounts']} test accounts).",
        "",
        "Per health band, current -> suggested rules (a row is one account on one monthly date):",
        "",
        "| band | share of rows | share of churners | churn rate |",
        "|---|---:|---:|---:|",
    ]
    labels = {
        "healthy": "healthy (60+)",
        "at_risk": "at risk (40 to < 60)",
        "critical": "critical (< 40)",
    }
    for band, label in labels.items():
        now, new = bt["bands"]["current"][band], bt["bands"]["suggested"][band]
        cells = [
            f"{_pct(now[key])} -> {_pct(new[key])}"
            for key in ("share_of_rows", "share_of_churners", "churn_rate")
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    fit = bt.get("band_fit") or {}
    if fit:
        below = fit["below_60"]
        lines += [
            "",
            f"The bands keep their workload: the fit put {fit['target']:g} times the current "
            "rules' share of its rows below 60 and below 40 (below 60: training "
            f"{_pct(below['current_train'])} -> {_pct(below['suggested_train'])}, validation "
            f"{_pct(below['current_validation'])} -> {_pct(below['suggested_validation'])}).",
        ]
    maxima = ", ".join(
        f"{name} {bt['current_weights'].get(name, 0):g} -> {points:g}"
        for name, points in bt["weights"].items()
        if "." not in name
    )
    lines += ["", f"Suggested component maxima: {maxima}."]
    now, new = bt["current_weights"], bt["weights"]
    moved = {
        "From the reserve (points today 0)": [k for k in new if "." in k and k not in now],
        "To the reserve": [k for k in now if "." in k and k not in new],
    }
    for label, keys in moved.items():
        if keys:
            lines.append(f"{label}: " + ", ".join(f"`{k}`" for k in keys) + ".")
    return [*lines, ""]


def render_model_card(card: CardInputs) -> str:
    """The model card as Markdown."""
    periods = card.periods
    lines = [
        f"# Model card: {card.model_version}",
        "",
        f"LightGBM binary classifier of client churn within {card.horizon_days} days of a "
        f"snapshot date, with calibrated probabilities. Trained {card.trained_at} "
        f"(MLflow run `{card.run_id}`).",
        "",
        "## Data",
        "",
        f"- Source: `{card.source}`; tables used: {', '.join(card.tables_present)}.",
        f"- Labels: `{card.label_mode}` mode, horizon {card.horizon_days} days "
        + (
            "(a churn event in the horizon)."
            if card.label_mode == "events"
            else "(no invoice or interaction in the longer of the horizon and the account's "
            "silence window)."
        ),
        f"- Snapshot table hash (sha256): `{card.snapshot_hash}`.",
    ]
    if card.absent_families:
        absent = "; ".join(
            f"{fam} (missing {', '.join(t)})" for fam, t in card.absent_families.items()
        )
        lines.append(f"- Feature families with absent features (NaN, not zero): {absent}.")
    else:
        lines.append("- Every feature family had its source tables.")
    lines += [
        "",
        "## Periods (time-based split)",
        "",
        *([f"Split: {periods['description']}.", ""] if periods.get("description") else []),
        "| period | first as_of | last as_of | dates | rows | churned | churn rate |",
        "|---|---|---|---:|---:|---:|---:|",
        *(_period_line(n, periods[n]) for n in ("train", "validation", "test")),
        "",
        f"A gap of {periods['gap_days']} days separates the periods, and rows whose label "
        f"window reaches into the next period are left out ({periods['purged_rows']} rows), so "
        "no label overlaps the next period and no account-date is on two sides.",
        "",
        "## Test-period metrics against the baselines (same rows)",
        "",
        *_metrics_table(card.metrics, card.intervals),
        *_intervals_note(card.interval_note if card.intervals else None),
        "",
        "The health score baseline ranks by 100 minus the rule-based health score; its "
        "probability-scale metrics (Brier, calibration error) are shown for completeness, "
        f"it is not meant as a probability. ECE uses {card.ece_bins} equal-frequency bins. "
        "Revenue at risk "
        "captured = revenue (last 365 days, else contract value) of the churners in the top "
        "decile / that of all churners.",
        *_purchase_baselines_note(card.metrics),
        *_operating_points(card.operating_points),
        "",
        "## Training",
        "",
        f"- Trees: {card.best_iteration} (early stopping on the validation period's log loss); "
        f"seed {card.seed}; hyperparameter search: "
        + (f"{card.search_trials} Optuna trials." if card.search_trials else "off.")
        + "",
        f"- Calibration: {card.calibration_note}.",
    ]
    if card.promotion:
        lines.append(f"- Promotion: {card.promotion}")
    if card.health_backtest:
        lines += ["", *health_backtest_section(card.health_backtest)]
    lines += ["", "## Top drivers (mean absolute SHAP value on the test period, log-odds)", ""]
    lines += [
        "| feature | family | mean abs SHAP | direction | description |",
        "|---|---|---:|---|---|",
    ]
    for row in card.drivers.itertuples():
        feat = FEATURES.get(row.feature)
        family = feat.family if feat else ""
        desc = feat.description if feat else ""
        lines.append(
            f"| `{row.feature}` | {family} | {row.mean_abs_shap:.3f} | {row.direction} | {desc} |"
        )
    lines += [
        "",
        "## Limitations",
        "",
        "- Early stopping and calibration both use the validation period. Early stopping picks "
        "a single number (the tree count), so the calibration it sees is only slightly "
        "optimistic; the test period, untouched by either, is what the metrics above report."
        + (
            " The hyperparameter search also scored its trials there, which adds to it."
            if card.search_trials
            else ""
        ),
        "- The model learns from the firm's own history: a change in how clients are served, "
        "priced or recorded after the training period can shift its probabilities; watch the "
        "calibration on new periods and retrain.",
        "- Rows are monthly snapshots of the same accounts, so the test rows are not independent; "
        "metric differences of a few thousandths are noise"
        + (
            ", and the intervals above resample accounts, not rows. They are of each figure "
            "alone, not of the difference between two columns."
            if card.intervals
            else "."
        ),
        "- Churn reasons are not predicted; the drivers are associations, not causes: use them to "
        "start a conversation, not as a diagnosis.",
    ]
    if card.label_mode == "inactivity":
        lines.append(
            "- Inactivity labels treat a long silence as churn: seasonal clients and slow "
            "purchase cycles can be labelled churned and come back."
        )
    if card.absent_families:
        lines.append(
            "- Features of the absent families are unknown for every account, so the model "
            "cannot use them; a source that adds those tables needs a retrained model."
        )
    lines += [f"- {text}" for text in card.extra_limitations]
    return "\n".join(lines) + "\n"
