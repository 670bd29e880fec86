"""Test-period metrics on hand-checkable examples, and the baselines' inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.evaluate import (
    METRICS,
    evaluate,
    expected_calibration_error,
    feature_matrix,
    fit_logistic,
    health_baseline,
    predict_logistic,
    revenue_of,
    top_weights,
)


def test_perfect_ranking_reaches_the_ceiling():
    # 100 rows, 5 churners scored highest: all of them are in the top decile.
    y = np.zeros(100)
    y[:5] = 1
    p = np.linspace(1, 0, 100)
    m = evaluate(y, p)
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0
    assert m["recall_top_decile"] == 1.0
    assert m["lift_top_decile"] == pytest.approx((5 / 10) / (5 / 100))  # 10x
    assert set(m) == set(METRICS)


def test_a_constant_score_has_no_lift():
    # Every row tied: the top decile is a pro-rata tenth of everything, whatever the order.
    y = np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0] * 10, dtype=float)
    m = evaluate(y, np.full(100, 0.3))
    assert m["lift_top_decile"] == pytest.approx(1.0)
    assert m["recall_top_decile"] == pytest.approx(0.1)
    assert m["roc_auc"] == pytest.approx(0.5)


def test_ties_at_the_cut_off_share_the_remaining_places():
    score = np.array([0.9, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    w = top_weights(score, 0.2)  # two places: one for 0.9, one shared by three 0.5s
    assert w.tolist() == pytest.approx([1, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0, 0, 0])
    assert w.sum() == pytest.approx(2.0)


def test_revenue_captured_weights_churners_by_revenue():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    p = np.array([0.9, 0.1, 0.8, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2])
    revenue = np.array([300.0, 100.0, 50, 0, 0, 0, 0, 0, 0, np.nan])
    m = evaluate(y, p, revenue)
    # The top decile (1 row) holds the churner worth 300 of the 400 at risk.
    assert m["revenue_captured_top_decile"] == pytest.approx(0.75)
    assert m["recall_top_decile"] == pytest.approx(0.5)


def test_revenue_captured_is_nan_without_revenue():
    y = np.array([1, 0, 0, 1], dtype=float)
    m = evaluate(y, np.array([0.9, 0.2, 0.1, 0.4]))
    assert np.isnan(m["revenue_captured_top_decile"])


def test_ece_is_zero_when_each_bin_matches_its_rate_and_large_when_it_does_not():
    # Two bins of 50 rows: predicted 0.1 with 5 churners, predicted 0.6 with 30 churners.
    p = np.r_[np.full(50, 0.1), np.full(50, 0.6)]
    y = np.r_[np.ones(5), np.zeros(45), np.ones(30), np.zeros(20)]
    assert expected_calibration_error(y, p, bins=10) == pytest.approx(0.0)
    assert expected_calibration_error(y, p + 0.2, bins=10) == pytest.approx(0.2)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000))
def test_metrics_do_not_depend_on_row_order(seed):
    rng = np.random.default_rng(seed)
    n = 60
    y = (rng.random(n) < 0.2).astype(float)
    y[:2] = [0, 1]
    p = rng.integers(0, 5, n) / 5  # many ties, like the health score
    revenue = rng.integers(0, 1000, n).astype(float)
    order = rng.permutation(n)
    a, b = evaluate(y, p, revenue), evaluate(y[order], p[order], revenue[order])
    for name in METRICS:
        assert a[name] == pytest.approx(b[name], nan_ok=True), name


def test_evaluation_needs_both_classes():
    with pytest.raises(ValueError, match="both"):
        evaluate(np.zeros(5), np.linspace(0, 1, 5))


def test_health_baseline_scores_low_health_as_high_risk():
    frame = pd.DataFrame({"health_score": [90.0, 35.0, np.nan]})
    assert health_baseline(frame).tolist() == pytest.approx([0.10, 0.65, 0.5])


def test_revenue_falls_back_to_contract_value():
    frame = pd.DataFrame({"revenue_365d": [100.0, np.nan], "contract_value": [5.0, 70.0]})
    assert revenue_of(frame).tolist() == [100.0, 70.0]


def test_feature_matrix_keeps_order_and_marks_missing_and_infinite_as_nan():
    frame = pd.DataFrame({"b": [1.0, np.inf], "a": [2.0, 3.0]})
    x = feature_matrix(frame, ["a", "b", "absent"])
    assert x[:, 0].tolist() == [2.0, 3.0]
    assert x[0, 1] == 1.0 and np.isnan(x[1, 1])
    assert np.isnan(x[:, 2]).all()


def test_logistic_baseline_learns_and_survives_an_all_missing_column():
    rng = np.random.default_rng(0)
    n = 400
    signal = rng.normal(size=n)
    y = (signal + rng.normal(scale=0.5, size=n) > 1).astype(float)
    x = np.column_stack([signal, np.full(n, np.nan), rng.normal(size=n)])
    x[rng.random(n) < 0.1, 0] = np.nan
    model = fit_logistic(x, y)
    p = predict_logistic(model, x)
    assert p.shape == (n,)
    assert evaluate(y, p)["roc_auc"] > 0.8


# -- operating points -------------------------------------------------------------------------


def _points_cfg(**kw):
    from training.config import OperatingPointsConfig

    return OperatingPointsConfig(**{"act_now_lift": 3.0, "watch_recall": 0.5, "min_rows": 5, **kw})


def test_operating_points_on_data_whose_answer_is_known():
    from training.evaluate import choose_operating_points, threshold_figures

    # 100 rows, 10 churners (rate 10 %). Scores 0.99..0.00 in steps of 0.01; churners at the
    # ranks 1-4 (all in the top 5) and 11, 21, 31, 41, 51, 61.
    p = np.round(np.linspace(0.99, 0.0, 100), 2)
    y = np.zeros(100)
    y[[0, 1, 2, 3, 10, 20, 30, 40, 50, 60]] = 1
    points = choose_operating_points(y, p, _points_cfg(watch_recall=0.7))
    # Precision >= 30 % with at least 5 rows: the top 13 rows hold 5 churners (38 %), the
    # top 14 5/14 = 36 %, ..., the top 16 5/16 = 31 %, the top 17 5/17 = 29 %: stop at 16.
    assert points.act_now == pytest.approx(p[15])
    # 70 % of the churners (7) are first caught with the row of rank 31.
    assert points.watch == pytest.approx(p[30])
    assert points.source == "validation" and "3 x the validation churn rate" in points.rule

    # Half of the churners are caught from rank 11, above act_now: watch is act_now's.
    clamped = choose_operating_points(y, p, _points_cfg(watch_recall=0.5))
    assert clamped.watch == clamped.act_now == points.act_now
    assert "above act_now" in clamped.rule

    at = threshold_figures(y, p, points.act_now)
    assert at["flagged"] == 16 and at["churners_caught"] == 5
    assert at["recall"] == pytest.approx(0.5) and at["precision"] == pytest.approx(5 / 16)
    assert at["lift"] == pytest.approx(5 / 16 / 0.1) and at["workload"] == pytest.approx(0.16)


def test_watch_never_exceeds_act_now_and_an_unreachable_lift_takes_the_best_precision():
    from training.evaluate import choose_operating_points

    # Churn rate 50 %: a lift of 3 would need a precision of 150 %; the best precision
    # (100 %, the top 2 rows, min_rows 2) sets act_now; 50 % recall is reached there too.
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    y = np.array([1, 1, 0, 1, 0, 1, 0, 0], dtype=float)
    points = choose_operating_points(y, p, _points_cfg(min_rows=2, watch_recall=0.5))
    assert points.act_now == pytest.approx(0.8)
    assert points.watch == pytest.approx(0.8)
    assert "no threshold" in points.rule
    low = choose_operating_points(y, p, _points_cfg(min_rows=2, watch_recall=1.0))
    assert low.watch == pytest.approx(0.4)  # every churner: down to 0.4


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), lift=st.floats(1.5, 5), recall=st.floats(0.1, 1.0))
def test_chosen_points_meet_their_targets_on_the_data_they_were_chosen_on(seed, lift, recall):
    from training.evaluate import choose_operating_points, threshold_figures

    rng = np.random.default_rng(seed)
    p = rng.random(400)
    y = (rng.random(400) < p**3).astype(float)
    if y.sum() in (0, len(y)):
        return
    points = choose_operating_points(y, p, _points_cfg(act_now_lift=lift, watch_recall=recall))
    assert 0 <= points.watch <= points.act_now <= 1
    act = threshold_figures(y, p, points.act_now)
    assert act["flagged"] >= 5
    if "no threshold" not in points.rule:
        assert act["precision"] >= lift * y.mean() - 1e-12
    if points.watch < points.act_now:
        assert threshold_figures(y, p, points.watch)["recall"] >= recall - 1e-12


def test_operating_points_need_both_classes():
    from training.evaluate import choose_operating_points

    with pytest.raises(ValueError, match="both churned and retained"):
        choose_operating_points(np.zeros(10), np.linspace(0, 1, 10), _points_cfg())
