"""The model card states what this training actually did (its own settings, not defaults)."""

from __future__ import annotations

import pandas as pd

from training.evaluate import METRICS, SCORERS
from training.model_card import CardInputs, render_model_card


def _card(**overrides) -> CardInputs:
    period = {
        "start": "2025-01-01",
        "end": "2025-03-01",
        "as_of_dates": 3,
        "rows": 300,
        "positives": 12,
    }
    values = {
        "model_version": "churn-model/7",
        "trained_at": "2026-11-30T10:00:00+00:00",
        "source": "data/demo",
        "label_mode": "events",
        "horizon_days": 90,
        "periods": {
            "train": period,
            "validation": period,
            "test": period,
            "gap_days": 90,
            "purged_rows": 4,
        },
        "metrics": {s: dict.fromkeys(METRICS, 0.5) for s in SCORERS},
        "drivers": pd.DataFrame(
            {
                "feature": ["days_since_last_contact"],
                "mean_abs_shap": [0.2],
                "direction": ["higher raises risk"],
            }
        ),
        "calibration_note": "isotonic on 300 validation rows",
        "best_iteration": 120,
        "tables_present": ["accounts", "invoices"],
        "absent_families": {},
        "snapshot_hash": "abc123",
        "run_id": "r1",
    }
    return CardInputs(**{**values, **overrides})


def test_the_card_names_the_calibration_bins_the_run_used():
    assert "ECE uses 15 equal-frequency bins" in render_model_card(_card(ece_bins=15))
    assert "ECE uses 10 equal-frequency bins" in render_model_card(_card())


def test_the_card_states_what_each_operating_point_catches_and_at_what_precision():
    figures = {
        "recall": 0.25,
        "precision": 0.12,
        "lift": 3.4,
        "workload": 0.07,
        "flagged": 70.0,
        "churners_caught": 8.0,
    }
    points = {
        "act_now": 0.123,
        "watch": 0.05,
        "source": "validation",
        "rule": "act_now: the lowest threshold ...; watch: ...",
        "figures": {
            "act_now": {"validation": figures, "test": {**figures, "recall": 0.3}},
            "watch": {"validation": figures, "test": {**figures, "recall": 0.55}},
        },
    }
    card = render_model_card(_card(operating_points=points))
    assert "## Operating points" in card
    assert "| `act_now` | 0.123 | test | 30.0% | 12.0% | 3.4x | 7.0% |" in card
    assert "`act_now` catches 30.0% of the churners at a precision of 12.0%" in card
    assert "`watch` and above catch 55.0% at 12.0%" in card
    assert "Rule: act_now: the lowest threshold" in card
    assert "## Operating points" not in render_model_card(_card())


def test_the_card_names_version_horizon_and_test_period():
    card = render_model_card(_card())
    assert card.startswith("# Model card: churn-model/7")
    assert "within 90 days" in card
    assert "| test | 2025-01-01 | 2025-03-01 | 3 | 300 | 12 | 4.0% |" in card


def test_the_card_reports_the_health_rules_backtest_when_the_run_has_one():
    side = {
        "roc_auc": 0.63,
        "pr_auc": 0.08,
        "churners_in_healthy_band": 0.8,
        "recall_at_equal_workload": 0.2,
    }
    band = {"rows": 10, "share_of_rows": 0.5, "share_of_churners": 0.25, "churn_rate": 0.02}
    bands = {b: band for b in ("healthy", "at_risk", "critical")}
    backtest = {
        "current": side,
        "suggested": {**side, "roc_auc": 0.70, "recall_at_equal_workload": 0.3},
        "interval": {"low": 0.03, "high": 0.11, "resamples": 1000, "accounts": 900},
        "roc_auc_gain": 0.07,
        "method": "steps",
        "version": {"current": 1, "suggested": 2},
        "workload_share": 0.066,
        "bands": {"current": bands, "suggested": bands},
        "weights": {
            "engagement": 12.0,
            "engagement.recency": 9.0,
            "engagement.interactions_vs_usual": 3.0,
        },
        "current_weights": {
            "engagement": 30.0,
            "engagement.recency": 20.0,
            "engagement.meetings": 10.0,
        },
        "validation_roc_auc": {"current": 0.669, "suggested": 0.676},
        "validation": {
            "current": {**side, "workload_share": 0.071, "recall_at_equal_workload": 0.154},
            "suggested": {**side, "workload_share": 0.071, "recall_at_equal_workload": 0.246},
        },
        "band_fit": {
            "target": 1.5,
            "below_60": {
                "current_train": 0.086,
                "suggested_train": 0.125,
                "current_validation": 0.071,
                "suggested_validation": 0.092,
            },
        },
    }
    assert "## Health rules backtest" not in render_model_card(_card())
    text = render_model_card(_card(health_backtest=backtest))
    assert "## Health rules backtest" in text
    assert "| ROC AUC of 100 - score | 0.630 | 0.700 |" in text
    assert "| recall at equal workload (6.6 % of rows) | 20.0 % | 30.0 % |" in text
    assert "95 % bootstrap interval +0.030 to +0.110 (1000 resamples" in text
    assert "engagement 30 -> 12" in text
    assert "From the reserve (points today 0): `engagement.interactions_vs_usual`." in text
    assert "To the reserve: `engagement.meetings`." in text
    assert "| healthy (60+) | 50.0 % -> 50.0 % | 25.0 % -> 25.0 % | 2.0 % -> 2.0 % |" in text
    assert "below 60: training 8.6 % -> 12.5 %, validation 7.1 % -> 9.2 %" in text
    # chosen without the test period, and the validation period's figures say so
    assert "chosen without the test period" in text
    assert (
        "| ROC AUC on the validation period (chosen there; suggested: fitted on training) | "
        "0.669 | 0.676 |"
    ) in text
    assert (
        "| recall at equal workload on the validation period (7.1 % of rows) | 15.4 % | 24.6 % |"
    ) in text
