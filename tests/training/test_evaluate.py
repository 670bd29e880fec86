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

    values = {"act_now_recall": 0.25, "watch_recall": 0.5, "min_rows": 5, **kw}
    return OperatingPointsConfig(**values)


def test_operating_points_on_data_whose_answer_is_known():
    from training.evaluate import choose_operating_points, threshold_figures

    # 100 rows, 8 churners (rate 8 %). Scores 0.99..0.00 in steps of 0.01; churners at the
    # ranks 1, 2, 5, 11, 21, 31, 41, 51.
    p = np.round(np.linspace(0.99, 0.0, 100), 2)
    y = np.zeros(100)
    y[[0, 1, 4, 10, 20, 30, 40, 50]] = 1
    points = choose_operating_points(y, p, _points_cfg())
    # A quarter of the churners (2) are caught by the top 2 rows, but a threshold must flag
    # 5 rows: the top 5 (3 churners). Half (4) are first caught with the row of rank 11.
    assert points.act_now == pytest.approx(p[4])
    assert points.watch == pytest.approx(p[10])
    assert points.source == "validation" and "25% (act_now) and 50% (watch)" in points.rule

    at = threshold_figures(y, p, points.act_now)
    assert at["flagged"] == 5 and at["churners_caught"] == 3
    assert at["recall"] == pytest.approx(3 / 8) and at["precision"] == pytest.approx(3 / 5)
    assert at["lift"] == pytest.approx(3 / 5 / 0.08) and at["workload"] == pytest.approx(0.05)
    watch = threshold_figures(y, p, points.watch)
    assert watch["flagged"] == 11 and watch["recall"] == pytest.approx(0.5)


def test_tied_scores_are_flagged_together():
    from training.evaluate import choose_operating_points, threshold_figures

    p = np.array([0.5, 0.5, 0.5, 0.5, 0.2, 0.2, 0.1, 0.1])
    y = np.array([1, 0, 0, 0, 1, 0, 1, 1], dtype=float)
    points = choose_operating_points(y, p, _points_cfg(min_rows=1))
    assert points.act_now == 0.5  # the four rows at 0.5 together: one churner of four
    assert threshold_figures(y, p, points.act_now)["flagged"] == 4
    assert points.watch == 0.2  # 2 of 4 churners


def test_a_watch_target_below_the_act_now_target_is_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="watch_recall"):
        _points_cfg(act_now_recall=0.6, watch_recall=0.5)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    act=st.floats(0.05, 1.0),
    extra=st.floats(0, 1),
    min_rows=st.integers(1, 50),
)
def test_chosen_points_meet_their_targets_on_the_data_they_were_chosen_on(
    seed, act, extra, min_rows
):
    from training.evaluate import choose_operating_points, threshold_figures

    rng = np.random.default_rng(seed)
    p = np.round(rng.random(300), 2)  # ties included
    y = (rng.random(300) < p**3).astype(float)
    if y.sum() in (0, len(y)):
        return
    watch = act + (1 - act) * extra
    cfg = _points_cfg(act_now_recall=act, watch_recall=watch, min_rows=min_rows)
    points = choose_operating_points(y, p, cfg)
    assert 0 <= points.watch <= points.act_now <= 1
    for threshold, target in ((points.act_now, act), (points.watch, watch)):
        figures = threshold_figures(y, p, threshold)
        assert figures["recall"] >= target - 1e-9 and figures["flagged"] >= min_rows
        # The next higher distinct score would miss the target or flag too few rows.
        higher = p[p > threshold]
        if len(higher):
            tighter = threshold_figures(y, p, higher.min())
            assert tighter["recall"] < target - 1e-9 or tighter["flagged"] < min_rows


def test_operating_points_need_both_classes():
    from training.evaluate import choose_operating_points

    with pytest.raises(ValueError, match="both churned and retained"):
        choose_operating_points(np.zeros(10), np.linspace(0, 1, 10), _points_cfg())
