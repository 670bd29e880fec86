"""The health rules backtest: the sub-rule shapes add up to the score the rules give, the fit
recovers weights from data simulated with them, the suggested config is valid rules (points
summing to 100, bands unchanged, version one higher), the metrics count ties fairly, and on
the default demo the suggestion meets its targets on the test period."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from churn.engine import LocalEngine
from features.health import DEFAULT_HEALTH_CONFIG, load_health_config, score_health
from tests.support.cli import isolated_settings
from training import health_backtest as hb
from training.config import plan_run
from training.frame import build_training_frame, load_source
from training.split import time_split


@pytest.fixture(scope="module")
def demo_frame(demo_source, tmp_path_factory):
    """The small demo's labeled snapshots and their time split, as training builds them."""
    settings_ = isolated_settings(tmp_path_factory.mktemp("backtest"))
    plan = plan_run(settings_)
    data = build_training_frame(load_source(str(demo_source), settings_, plan), plan, LocalEngine())
    split = time_split(data.frame, plan.config.split, plan.snapshots.horizon_days)
    return data.frame, split, plan.health


# ------------------------------------------------------------------------------ the shapes


def test_sub_rule_shapes_times_points_give_the_components_the_rules_score(demo_frame):
    frame, _, cfg = demo_frame
    shapes = hb.rule_shapes(frame, cfg)
    assert ((shapes >= 0) & (shapes <= 1)).all().all()
    points = hb.rule_points(cfg)
    scored = score_health(frame, cfg)
    for name in cfg.components.maxima():
        keys = [k for k in points if hb.component_of(k) == name]
        total = sum(shapes[k] * points[k] for k in keys)
        np.testing.assert_allclose(total.round(1), scored[f"health_{name}"], atol=1e-9)
    # the reserve has a column too (what it would award), but no points today
    reserve = {hb.rule_key(n, r.name) for n, c in cfg.components.items() for r in c.reserve}
    assert reserve and reserve <= set(shapes.columns)
    assert not reserve & set(points)


# --------------------------------------------------------------------------------- the fit


def test_the_fit_recovers_the_weights_the_labels_were_simulated_with():
    """Five sub-rule shapes, labels from ``logit p = a - shapes @ beta`` with known beta (one
    of them 0): the fitted points (scaled to 100) are within 3 points of the true ones."""
    rng = np.random.default_rng(7)
    n = 40_000
    true_beta = np.array([2.0, 0.0, 1.0, 1.5, 0.5])
    shapes = pd.DataFrame(
        {
            "a.steps": rng.integers(0, 4, n) / 3,  # a four-step rule
            "a.noise": rng.random(n),
            "b.binary": rng.integers(0, 2, n).astype(float),
            "b.smooth": rng.random(n),
            "c.rare": (rng.random(n) > 0.1).astype(float),  # full points for 90 %
        }
    )
    logit = 0.5 - shapes.to_numpy() @ true_beta
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    fit = hb.fit_weights(shapes, y)
    got = fit.points()
    want = dict(zip(shapes.columns, 100 * true_beta / true_beta.sum(), strict=True))
    for key in shapes.columns:
        assert got[key] == pytest.approx(want[key], abs=3.0), (key, got, want)
    assert fit.intercept == pytest.approx(0.5, abs=0.15)


def test_a_reserve_sub_rule_with_a_known_effect_is_brought_in_with_its_weight():
    """Simulated accounts where churn follows two sub-rules, with known weights 3 : 1.5: the
    engagement rule `recency` and the reserve rule `sentiment_vs_usual` (today 0 points);
    every other feature is noise. The suggestion gives the reserve rule its place among the
    sub-rules with about twice the points of recency, the two hold nearly all the points, and
    every sub-rule is still there, in the rules or in the reserve."""
    cfg = load_health_config()
    rng = np.random.default_rng(5)
    n = 60_000
    columns: dict[str, np.ndarray] = {}
    for _, rule in hb.rule_pool(cfg):
        thresholds = [t for t, _ in rule.steps]
        span = max(thresholds[-1] - thresholds[0], 1.0)
        columns[rule.feature] = rng.uniform(thresholds[0] - span / 2, thresholds[-1] + span / 2, n)
    frame = pd.DataFrame(columns)
    frame["revenue_segment"] = rng.choice(["A", "B", "C"], n)
    frame["account_id"] = np.arange(n)
    shapes = hb.rule_shapes(frame, cfg)
    logit = (
        -1.0 - 3.0 * shapes["relationship.sentiment_vs_usual"] - 1.5 * shapes["engagement.recency"]
    )
    frame["churned"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)

    new = hb.fit_suggestion(frame, cfg, hb.Candidate("weights", None))
    points = hb.rule_points(new)
    assert "relationship.sentiment_vs_usual" not in hb.rule_points(cfg)
    assert sum(points.values()) == pytest.approx(100.0)
    sentiment, recency = points["relationship.sentiment_vs_usual"], points["engagement.recency"]
    assert sentiment / recency == pytest.approx(3 / 1.5, abs=0.35), points
    # the noise keeps little: each component's strongest rule and half-point floors
    assert 100 - sentiment - recency <= 12, points
    for name, component in new.components.items():
        before = {r.name for r in getattr(cfg.components, name).pool()}
        assert {r.name for r in component.pool()} == before, name
    # a sub-rule gone to the reserve keeps its old points and steps for a later backtest
    old_rules = {r.name: r for r in cfg.components.engagement.rules}
    demoted = [r for r in new.components.engagement.reserve if r.name in old_rules]
    assert demoted  # the noise rules of engagement went to the reserve
    for rule in demoted:
        assert rule == old_rules[rule.name]


def test_every_fitted_weight_is_non_negative_even_for_a_rule_that_raises_risk():
    rng = np.random.default_rng(1)
    n = 5000
    shapes = pd.DataFrame({"x.good": rng.random(n), "x.bad": rng.random(n)})
    # more "bad" shape = more churn: its unconstrained weight would be negative
    logit = -1 - 2 * shapes["x.good"].to_numpy() + 2 * shapes["x.bad"].to_numpy()
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    fit = hb.fit_weights(shapes, y)
    assert fit.beta["x.bad"] == 0.0
    assert fit.beta["x.good"] > 1.0


def test_the_suggested_config_is_valid_rules_summing_to_100_with_the_bands_kept(demo_frame):
    frame, split, cfg = demo_frame
    train, _, _ = split.frames(frame)
    for method in hb.FIT_METHODS:
        new = hb.fit_suggestion(train, cfg, method)
        assert new.version == cfg.version + 1
        assert sum(new.components.maxima().values()) == pytest.approx(100.0)
        assert all(v >= 0 for v in new.components.maxima().values())
        assert new.bands == cfg.bands
        for _, component in new.components.items():
            assert sum(r.points for r in component.rules) == pytest.approx(component.max_points)
            for rule in component.rules:
                assert rule.points >= hb.MIN_RULE_POINTS


def test_the_written_suggestion_loads_back_as_the_same_rules(demo_frame, tmp_path):
    frame, split, cfg = demo_frame
    bt = hb.run_backtest(frame, split, cfg, resamples=20, bags=2)
    path = tmp_path / "suggested.yaml"
    path.write_text(hb.config_yaml(bt), encoding="utf-8")
    assert load_health_config(path) == bt.config
    assert path.read_text().startswith(f"# Suggested health rules, version {cfg.version + 1}")


def test_the_chosen_fit_keeps_the_bands_workload(demo_frame):
    """Fitted for ranking only, the points lift most accounts above 60; the chosen candidate
    puts 1-2x the current rules' share of validation rows below 60, and it has the highest
    validation ROC AUC of the candidates that do."""
    frame, split, cfg = demo_frame
    train, validation, _ = split.frames(frame)
    chosen, info = hb.select_candidate(train, validation, cfg)
    rows = {r["label"]: r for r in info["candidates"]}
    assert info["chosen"] == chosen.label()
    best = rows[chosen.label()]
    assert best["eligible"]
    assert 1.0 <= best["validation_below_60_ratio"] <= 2.0
    assert best["validation_roc_auc"] == max(
        r["validation_roc_auc"] for r in info["candidates"] if r["eligible"]
    )
    assert {r["method"] for r in info["candidates"]} == set(hb.FIT_METHODS)
    fitted = hb.fit_suggestion(
        train, cfg, chosen, hb.band_shares_for(train, cfg, chosen.band_target)
    )
    score = score_health(validation, fitted)["health_score"].to_numpy()
    assert (score < 60).mean() == pytest.approx(best["validation_below_60"])
    assert fitted.bands == cfg.bands


def test_the_suggestion_does_not_depend_on_the_test_periods_labels(demo_frame):
    """Everything is chosen and fitted on the training and validation periods: flipping every
    label of the test period changes the reported figures, never the suggested rules."""
    frame, split, cfg = demo_frame
    test_rows = np.asarray(split.test)
    flipped = frame.copy()
    flipped.loc[test_rows, "churned"] = 1 - flipped.loc[test_rows, "churned"]
    one = hb.run_backtest(frame, split, cfg, resamples=10, bags=2)
    two = hb.run_backtest(flipped, split, cfg, resamples=10, bags=2)
    assert one.config == two.config
    assert one.selection["candidates"] == two.selection["candidates"]
    assert one.suggested.roc_auc != pytest.approx(two.suggested.roc_auc)


def test_the_combined_fit_runs_from_steps_to_todays_proportions(demo_frame):
    """Without the pull the combined fit is the steps fit; with a strong pull every sub-rule
    keeps today's proportions between its steps (its lowest level is 0, as in every steps
    fit: a constant does not rank)."""
    frame, split, cfg = demo_frame
    train, _, _ = split.frames(frame)
    shares = hb.band_shares_for(train, cfg, 1.25)
    loose = hb.fit_suggestion(train, cfg, hb.Candidate("combined", 1.25, 0.0), shares)
    steps = hb.fit_suggestion(train, cfg, hb.Candidate("steps", 1.25), shares)
    assert loose == steps
    tight = hb.fit_suggestion(train, cfg, hb.Candidate("combined", 1.25, 100.0), shares)
    old = {hb.rule_key(n, r.name): r for n, c in cfg.components.items() for r in c.pool()}
    for name, component in tight.components.items():
        for rule in component.rules:
            if rule.points < 2:  # next to nothing fitted: its proportions are rounding
                continue
            was = old[hb.rule_key(name, rule.name)]
            low_new = min([rule.below] + [p for _, p in rule.steps])
            low_old = min([was.below] + [p for _, p in was.steps])
            for (_, p_new), (_, p_old) in zip(rule.steps, was.steps, strict=True):
                # the step points are rounded to 0.1
                got = (p_new - low_new) / (rule.points - low_new)
                want = (p_old - low_old) / (was.points - low_old)
                assert got == pytest.approx(want, abs=0.1 / rule.points + 0.01), rule.name


def test_bagged_points_are_valid_rules_and_reproducible_from_their_seed(demo_frame):
    frame, split, cfg = demo_frame
    train, _, _ = split.frames(frame)
    bagged = hb.fit_suggestion(train, cfg, "weights", bags=5, seed=1)
    again = hb.fit_suggestion(train, cfg, "weights", bags=5, seed=1)
    assert bagged == again
    assert sum(bagged.components.maxima().values()) == pytest.approx(100.0)
    assert bagged.version == cfg.version + 1


def test_the_band_constraint_puts_the_asked_share_of_rows_below_a_cut_off():
    """Simulated shapes where likelihood alone puts nearly every row above 60: asked for 20 %
    of rows below 60, the fitted points put about that many there, and still rank."""
    rng = np.random.default_rng(3)
    n = 20_000
    shapes = pd.DataFrame(
        {
            "a.rare": (rng.random(n) > 0.03).astype(float),  # a warning sign on 3 % of rows
            "a.common": rng.random(n),
            "b.noise": rng.random(n),
        }
    )
    logit = 1.0 - shapes.to_numpy() @ np.array([4.0, 1.0, 0.0])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)

    def share_below(fit: hb.WeightFit, cut: float) -> float:
        points = fit.points()
        score = sum(shapes[k].to_numpy() * points[k] for k in shapes.columns)
        return float((score < cut).mean())

    free = hb.fit_weights(shapes, y)
    assert share_below(free, 60) < 0.05
    kept = hb.fit_weights(shapes, y, band_shares={60.0: 0.2})
    assert share_below(kept, 60) == pytest.approx(0.2, abs=0.03)
    assert all(b >= 0 for b in kept.beta.values())
    points = kept.points()
    assert sum(points.values()) == pytest.approx(100.0)
    assert points["a.rare"] > points["b.noise"]


def test_the_fit_recovers_the_share_of_points_an_unknown_value_earns():
    """A sub-rule whose value is unknown on 30 % of rows; the labels are simulated with the
    unknown value earning a quarter of its points: the fitted missing share is about 0.25,
    and never above the rule's maximum."""
    rng = np.random.default_rng(11)
    n = 40_000
    known = rng.random(n) > 0.3
    shape = rng.integers(0, 3, n) / 2
    other = rng.random(n)
    earned = np.where(known, shape, 0.25)
    logit = 0.5 - 3.0 * earned - 1.0 * other
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    shapes = pd.DataFrame(
        {
            "a.rule": np.where(known, shape, 0.0),
            "a.rule" + hb.MISSING_SUFFIX: (~known).astype(float),
            "b.other": other,
        }
    )
    fit = hb.fit_weights(shapes, y)
    layout = [("a.rule", -1), ("a.rule", hb.MISSING_LEVEL), ("b.other", -1)]
    share = hb.fitted_missing_shares(fit, layout)["a.rule"]
    assert share == pytest.approx(0.25, abs=0.1)
    assert fit.beta["a.rule" + hb.MISSING_SUFFIX] <= fit.beta["a.rule"] + 1e-9
    assert sum(fit.points().values()) - fit.points()["a.rule" + hb.MISSING_SUFFIX] == (
        pytest.approx(100.0)
    )


def test_steps_refit_keeps_each_rule_monotone_in_its_original_order(demo_frame):
    frame, split, cfg = demo_frame
    train, _, _ = split.frames(frame)
    new = hb.fit_suggestion(train, cfg, "steps")
    old_rules = {hb.rule_key(n, r.name): r for n, c in cfg.components.items() for r in c.pool()}
    for name, component in new.components.items():
        for rule in component.rules:
            old = old_rules[hb.rule_key(name, rule.name)]
            pairs = sorted(
                zip(
                    [p for _, p in old.steps] + [old.below],
                    [p for _, p in rule.steps] + [rule.below],
                    strict=True,
                )
            )
            news = [b for _, b in pairs]
            assert news == sorted(news), (rule.name, pairs)


def test_apply_describes_a_changed_share_for_unknown_values():
    old = load_health_config()
    data = old.model_dump(mode="python")
    data["version"] = 2
    data["components"]["satisfaction"]["rules"][0]["missing_share"] = 0.0
    new = type(old).model_validate(data)
    lines = hb.describe_changes(old, new)
    assert lines == [
        "satisfaction 20 -> 20 points: survey_score unknown value earns 50 % -> 0 % of its points"
    ]


def test_apply_tells_a_reserve_move_from_a_new_or_removed_sub_rule():
    """A sub-rule taken out of the file is "removed", one written by hand is "new"; only a
    move between the rules and the reserve is said as such."""
    old = load_health_config()
    data = old.model_dump(mode="python")
    satisfaction = data["components"]["satisfaction"]
    tickets = satisfaction["rules"].pop()  # high_severity_tickets, 3 points
    survey = satisfaction["rules"][0]
    satisfaction["rules"].append(
        {**survey, "name": "survey_again", "points": 3.0, "steps": [[0, 0], [9, 3]]}
    )
    satisfaction["reserve"] = []
    lines = hb.describe_changes(old, type(old).model_validate(data))
    assert lines == [
        "satisfaction 20 -> 20 points: high_severity_tickets 3 -> removed; survey_again new 3 "
        "(an unknown value earns 50 % of its points)"
    ]
    assert tickets["name"] == "high_severity_tickets"


# ----------------------------------------------------------------------------- the metrics


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 5)), min_size=4, max_size=60),
    st.integers(0, 2**31 - 1),
)
def test_the_bootstrap_auc_with_unit_weights_is_sklearns_roc_auc(rows, seed):
    y = np.array([r[0] for r in rows], dtype=float)
    risk = np.array([r[1] for r in rows], dtype=float)
    if len(set(y)) < 2:
        return
    weights = np.ones((1, len(y)))
    assert hb._weighted_auc(y, risk, weights)[0] == pytest.approx(roc_auc_score(y, risk))
    # a resample's weights are row multiplicities: the AUC of the repeated rows
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 3, len(y))
    rep = np.repeat(np.arange(len(y)), counts)
    if len(set(y[rep])) == 2:
        got = hb._weighted_auc(y, risk, counts[None, :].astype(float))[0]
        assert got == pytest.approx(roc_auc_score(y[rep], risk[rep]))


def test_recall_at_a_share_splits_the_tied_rows_pro_rata():
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    risk = np.array([9, 5, 5, 5, 5, 1, 1, 1, 1, 1], dtype=float)
    # top 30 %: the 9 (a churner) and 2 of the 4 tied at 5 (one churner among them)
    assert hb.recall_at_share(y, risk, 0.3) == pytest.approx((1 + 2 / 4) / 2)
    assert hb.recall_at_share(y, risk, 0.1) == pytest.approx(0.5)
    assert hb.recall_at_share(y, risk, 1.0) == pytest.approx(1.0)


def test_the_band_table_counts_rows_churners_and_rates():
    cfg = load_health_config()
    y = np.array([1, 0, 0, 1, 1, 0], dtype=float)
    score = np.array([80, 70, 65, 50, 30, 45], dtype=float)
    bands = hb.band_table(y, score, cfg)
    assert bands["healthy"] == {
        "rows": 3,
        "share_of_rows": 0.5,
        "share_of_churners": pytest.approx(1 / 3),
        "churn_rate": pytest.approx(1 / 3),
    }
    assert bands["critical"]["churn_rate"] == 1.0
    assert hb.lift_below(y, score, 60) == pytest.approx((2 / 3) / 0.5)


def test_the_backtest_reports_both_rule_sets_and_an_interval_around_the_gain(demo_frame):
    frame, split, cfg = demo_frame
    bt = hb.run_backtest(frame, split, cfg, resamples=50, by_segment=True, bags=0)
    summary = bt.summary()
    for side in ("current", "suggested"):
        assert set(summary[side]) == {
            "roc_auc",
            "pr_auc",
            "churners_in_healthy_band",
            "recall_at_equal_workload",
        }
        assert 0 <= summary[side]["churners_in_healthy_band"] <= 1
    assert summary["interval"]["low"] <= bt.gain <= summary["interval"]["high"] or math.isnan(
        bt.gain
    )
    assert sum(v for k, v in bt.weights.items() if "." not in k) == pytest.approx(100.0)
    assert set(summary["rules"]) >= set(cfg.components.maxima())
    assert "combined" in summary["segments"]
    # the validation period: the current rules against the chosen candidate's training fit
    valid = summary["validation"]
    assert valid["suggested"]["roc_auc"] == pytest.approx(
        summary["validation_roc_auc"]["suggested"]
    )
    assert valid["current"]["roc_auc"] == pytest.approx(summary["validation_roc_auc"]["current"])
    assert valid["interval"]["low"] <= valid["roc_auc_gain"] <= valid["interval"]["high"]
    # the current rules' recall at their own workload is their recall below 60
    test = split.frames(frame)[2]
    y = test["churned"].to_numpy(float)
    below = score_health(test, cfg)["health_score"].to_numpy() < cfg.bands.healthy
    assert bt.current.recall_at_equal_workload == pytest.approx(y[below].sum() / y.sum())
    # the lift below each cut-off: the churn rate there over the period's churn rate
    for side, rules in (("current", cfg), ("suggested", bt.config)):
        score = score_health(test, rules)["health_score"].to_numpy()
        for name, cut in (("below_60", 60), ("below_40", 40)):
            got = summary["lift"][side][name]
            if (score < cut).any():
                assert got == pytest.approx(y[score < cut].mean() / y.mean()), (side, name)
    # every component, sub-rule and reserve sub-rule ranks the test period on its own
    shapes = hb.rule_shapes(test, cfg)
    assert set(summary["rules"]) == set(shapes.columns) | set(cfg.components.maxima())
    for key in shapes.columns:
        assert summary["rules"][key]["roc_auc"] == pytest.approx(
            roc_auc_score(y, -shapes[key]) if shapes[key].nunique() > 1 else 0.5
        ), key
        assert 0 <= summary["rules"][key]["pr_auc"] <= 1


# ------------------------------------------------------------------------- the default demo


@pytest.fixture(scope="module")
def default_demo_backtest(tmp_path_factory):
    """`churn health backtest --json` on the default `churn demo-data` source: the summary
    and the printed tables."""
    from tests.support.cli import isolated_env, run_churn

    tmp_path = tmp_path_factory.mktemp("default-demo")
    env = isolated_env(tmp_path, CHURN_HEALTH_CONFIG=str(tmp_path / "health.yaml"))
    (tmp_path / "health.yaml").write_bytes(DEFAULT_HEALTH_CONFIG.read_bytes())
    assert run_churn(["demo-data", "--out", "demo"], env, tmp_path).returncode == 0
    result = run_churn(["health", "backtest", "--data", "demo", "--json"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.mark.slow
def test_on_the_default_demo_the_honest_suggestion_ranks_better_and_keeps_the_bands(
    default_demo_backtest,
):
    """Chosen on the validation period, refitted on training + validation, measured on the
    test period: the suggested points rank the validation period better than the current
    rules, raise the test ROC AUC by at least 0.05 with a bootstrap interval above 0, catch
    more of the test churners at the current rules' workload, and the bands keep their
    meaning (as many rows below 60 as today or more, fewer churners in Healthy)."""
    summary, stderr = default_demo_backtest
    current, suggested = summary["current"], summary["suggested"]
    assert current["roc_auc"] == pytest.approx(0.63, abs=0.01)
    valid = summary["validation_roc_auc"]
    assert valid["suggested"] > valid["current"], valid
    assert summary["selection"]["any_eligible"], summary["selection"]
    assert suggested["roc_auc"] >= current["roc_auc"] + 0.05, summary
    assert summary["interval"]["low"] > 0, summary["interval"]
    assert "95 % bootstrap interval" in stderr
    assert suggested["recall_at_equal_workload"] > current["recall_at_equal_workload"], summary
    # the bands keep their meaning: at least as many test rows below 60 as today (at most
    # twice as many), some below 40, and fewer of the churners left in the healthy band
    bands = summary["bands"]
    below_60 = {
        side: bands[side]["at_risk"]["share_of_rows"] + bands[side]["critical"]["share_of_rows"]
        for side in ("current", "suggested")
    }
    assert below_60["current"] <= below_60["suggested"] <= 2 * below_60["current"], bands
    assert bands["suggested"]["critical"]["rows"] > 0, bands
    assert suggested["churners_in_healthy_band"] < current["churners_in_healthy_band"], summary
    assert "at risk (40 to under 60)" in stderr
    assert "Choosing the fit on the validation period" in stderr


@pytest.mark.slow
def test_on_the_default_demo_the_suggestion_catches_28_percent_at_equal_workload(
    default_demo_backtest,
):
    """The target: at the current rules' workload the suggested points catch at least 28 % of
    the test period's churners (and raise the test ROC AUC by at least 0.05)."""
    summary, _ = default_demo_backtest
    assert summary["suggested"]["roc_auc"] >= summary["current"]["roc_auc"] + 0.05, summary
    assert summary["suggested"]["recall_at_equal_workload"] >= 0.28, summary
