"""Evaluation plots of a training run (PNG files, logged to MLflow): calibration curve,
cumulative gains and lift, SHAP summary, feature importance (gain), and the health score
against the predicted probability. Matplotlib's Agg backend: no display needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.evaluate import calibration_table, gains_curve

_COLOURS = {"model": "#1f77b4", "health_score": "#d62728", "logistic": "#2ca02c"}
_NAMES = {
    "model": "LightGBM (calibrated)",
    "health_score": "100 - health score",
    "logistic": "Logistic regression",
}


def _pyplot() -> Any:  # matplotlib.pyplot, imported late to keep the Agg backend
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def calibration_plot(
    y: np.ndarray, scores: dict[str, np.ndarray], path: Path, bins: int = 10
) -> Path:
    """Observed churn rate against mean predicted probability per equal-frequency bin."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    top = 0.0
    for name, p in scores.items():
        table = calibration_table(y, p, bins)
        ax.plot(
            table["predicted"],
            table["observed"],
            "o-",
            color=_COLOURS.get(name),
            label=_NAMES.get(name, name),
        )
        top = max(top, float(table["predicted"].max()), float(table["observed"].max()))
    top = min(1.0, top * 1.05 + 0.01)
    ax.plot([0, top], [0, top], "--", color="grey", label="perfectly calibrated")
    ax.set(
        xlim=(0, top),
        ylim=(0, top),
        xlabel="mean predicted probability",
        ylabel="observed churn rate",
    )
    ax.set_title(f"Calibration on the test period ({bins} equal-frequency bins)")
    ax.legend(loc="upper left")
    return _save(fig, path)


def gains_plot(y: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> Path:
    """Cumulative gains (share of churners reached) and lift, by share of accounts worked."""
    plt = _pyplot()
    fig, (gain_ax, lift_ax) = plt.subplots(1, 2, figsize=(11, 5))
    for name, p in scores.items():
        curve = gains_curve(y, p)
        kw = {"color": _COLOURS.get(name), "label": _NAMES.get(name, name)}
        gain_ax.plot(np.r_[0, curve["share"]], np.r_[0, curve["captured"]], **kw)
        lift_ax.plot(curve["share"], curve["lift"], **kw)
    gain_ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    lift_ax.axhline(1.0, ls="--", color="grey")
    lift_ax.axvline(0.1, ls=":", color="black", lw=0.8)
    gain_ax.axvline(0.1, ls=":", color="black", lw=0.8)
    gain_ax.set(
        xlabel="share of accounts, highest risk first",
        ylabel="share of churners captured",
        title="Cumulative gains",
    )
    lift_ax.set(xlabel="share of accounts, highest risk first", ylabel="lift", title="Lift")
    gain_ax.legend(loc="lower right")
    return _save(fig, path)


def shap_summary_plot(
    contrib: np.ndarray, x: np.ndarray, features: list[str], path: Path, max_display: int = 20
) -> Path:
    """SHAP beeswarm of LightGBM's exact tree contributions (log-odds), ``contrib`` without
    the bias column."""
    import shap

    plt = _pyplot()
    shap.summary_plot(
        contrib, x, feature_names=features, max_display=max_display, show=False, plot_size=(9, 8)
    )
    fig = plt.gcf()
    fig.suptitle("SHAP summary (contribution to log-odds, test period)")
    return _save(fig, path)


def importance_plot(importance: pd.Series, path: Path, top: int = 20) -> Path:
    """Total split gain per feature, largest first."""
    plt = _pyplot()
    shown = importance.sort_values(ascending=False).head(top)[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(shown) + 1.5))
    ax.barh(shown.index, shown.to_numpy(), color=_COLOURS["model"])
    ax.set(xlabel="total gain", title="Feature importance (gain)")
    return _save(fig, path)


def health_vs_probability_plot(
    health: np.ndarray, probability: np.ndarray, y: np.ndarray, path: Path
) -> Path:
    """Each test row's health score against its predicted churn probability, churners marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    y = np.asarray(y, dtype=float)
    retained, churned = y == 0, y == 1
    ax.scatter(
        health[retained], probability[retained], s=6, alpha=0.3, color="#7f7f7f", label="retained"
    )
    ax.scatter(
        health[churned],
        probability[churned],
        s=12,
        alpha=0.8,
        color=_COLOURS["health_score"],
        label="churned",
    )
    for edge in (40, 60):
        ax.axvline(edge, ls=":", color="black", lw=0.8)
    ax.set(
        xlabel="health score (0-100)",
        ylabel="predicted churn probability",
        title="Health score against predicted probability (test period)",
    )
    ax.legend(loc="upper right")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
