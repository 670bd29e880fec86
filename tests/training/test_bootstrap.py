"""Intervals by account (training.bootstrap): each resample's figure is the table's metric on
the resampled rows, the intervals cover a known population value, resampling accounts widens
them where rows of an account are correlated, a scorer against itself gains exactly nothing,
the same seed gives the same intervals, and a resample with one class only is left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from training.bootstrap import (
    IntervalNote,
    account_bootstrap,
    bootstrap_metrics,
    draw_accounts,
    paired_gain_interval,
    percentile_interval,
)
from training.evaluate import METRICS, evaluate
from training.model_card import _intervals_note, _metrics_table


@st.composite
def scored_accounts(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    """A few accounts with one to six rows each: labels, tied scores, revenue with gaps."""
    sizes = draw(st.lists(st.integers(1, 6), min_size=2, max_size=12))
    n = sum(sizes)
    accounts = np.repeat([f"a{i}" for i in range(len(sizes))], sizes)
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=float)
    # Few distinct values, so ties (in ROC AUC, the bins and the top decile) are common.
    p = np.array(
        draw(st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0]), min_size=n, max_size=n))
    )
    revenue = np.array(
        draw(st.lists(st.one_of(st.just(np.nan), st.floats(0, 1000)), min_size=n, max_size=n))
    )
    return y, p, revenue, accounts


@settings(max_examples=60, deadline=None)
@given(data=scored_accounts(), seed=st.integers(0, 2**32 - 1), bins=st.integers(2, 12))
def test_each_resample_is_the_evaluated_metric_of_its_rows_repeated_by_their_draws(
    data, seed, bins
):
    y, p, revenue, accounts = data
    samples = 8
    boot = bootstrap_metrics(y, {"s": p}, accounts, revenue, samples=samples, seed=seed, bins=bins)
    account_of, counts = draw_accounts(accounts, samples, seed)
    skipped = 0
    for i in range(samples):
        rows = np.repeat(np.arange(len(y)), counts[i, account_of])
        if y[rows].min() == y[rows].max():
            skipped += 1
            assert all(np.isnan(boot.values["s"][m][i]) for m in METRICS)
            continue
        expected = evaluate(y[rows], p[rows], revenue[rows], bins=bins)
        for metric in METRICS:
            assert boot.values["s"][metric][i] == pytest.approx(
                expected[metric], abs=1e-12, nan_ok=True
            ), metric
    assert boot.skipped == skipped and boot.used == samples - skipped


def _simulated(
    seed: int, accounts: int, rows_each: int, separation: float, shared: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accounts with ``rows_each`` rows: a label per account (churners 20 %), and a score per
    row of ``separation`` (churners) or 0 plus noise; ``shared`` of the noise variance is
    the account's own (constant over its rows), the rest the row's."""
    rng = np.random.default_rng(seed)
    churned = rng.random(accounts) < 0.2
    own = rng.normal(size=accounts) * np.sqrt(shared)
    account_of = np.repeat(np.arange(accounts), rows_each)
    noise = own[account_of] + rng.normal(size=len(account_of)) * np.sqrt(1 - shared)
    y = churned[account_of].astype(float)
    return y, separation * y + noise, account_of


def test_the_interval_covers_the_population_auc_in_most_samples():
    """Scores N(0, 1) for the retained and N(d, 1) for churners: the population ROC AUC is
    Phi(d / sqrt 2). A 90 % interval must cover it in most of 20 independent samples (the
    chance that a true 90 % interval covers it 14 times or fewer is below 1 %), and it must
    not be so wide that it always covers a clearly wrong value."""
    separation = 1.0
    truth = norm.cdf(separation / np.sqrt(2))  # 0.760
    covered = wrong = 0
    for seed in range(20):
        y, score, account_of = _simulated(seed, 300, 4, separation, shared=0.5)
        low, high = account_bootstrap(
            y, {"s": score}, account_of, None, samples=200, level=0.9, seed=seed
        )["s"]["roc_auc"]
        covered += low <= truth <= high
        wrong += low <= truth - 0.1 <= high
    assert covered >= 15
    assert wrong <= 2


def test_accounts_with_correlated_rows_give_a_wider_interval_than_a_row_bootstrap():
    """Twelve rows an account, most of the noise the account's own: the rows of an account
    are nearly copies, so resampling rows (each row its own account) understates the spread."""
    y, score, account_of = _simulated(7, 150, 12, 1.0, shared=0.9)
    rows = np.arange(len(y))
    by_account = account_bootstrap(
        y, {"s": score}, account_of, None, samples=300, level=0.95, seed=1
    )["s"]
    by_row = account_bootstrap(y, {"s": score}, rows, None, samples=300, level=0.95, seed=1)["s"]
    for metric in ("roc_auc", "pr_auc", "recall_top_decile"):
        width_account = by_account[metric][1] - by_account[metric][0]
        width_row = by_row[metric][1] - by_row[metric][0]
        assert width_account > 1.8 * width_row, metric


def test_a_scorer_against_itself_gains_exactly_nothing():
    y, score, account_of = _simulated(3, 120, 3, 0.8, shared=0.3)
    for metric in ("roc_auc", "pr_auc", "brier", "ece", "lift_top_decile"):
        assert paired_gain_interval(
            y, score, score.copy(), account_of, metric=metric, samples=50, level=0.95, seed=4
        ) == (0.0, 0.0, 0.0)


def test_a_better_scorer_gains_and_its_paired_interval_is_narrower_than_the_two_apart():
    y, base, account_of = _simulated(5, 400, 3, 0.5, shared=0.3)
    better = base + 1.0 * y  # the same noise, a wider gap between the classes
    gain, low, high = paired_gain_interval(
        y, base, better, account_of, metric="roc_auc", samples=200, level=0.95, seed=2
    )
    assert gain == pytest.approx(evaluate(y, better)["roc_auc"] - evaluate(y, base)["roc_auc"])
    assert 0 < low <= gain <= high
    each = account_bootstrap(
        y, {"base": base, "new": better}, account_of, None, samples=200, level=0.95, seed=2
    )
    widths = [each[s]["roc_auc"][1] - each[s]["roc_auc"][0] for s in ("base", "new")]
    assert high - low < sum(widths)


def test_the_same_seed_gives_the_same_intervals_and_another_seed_other_ones():
    y, score, account_of = _simulated(11, 100, 3, 1.0, shared=0.5)
    scores = {"model": score, "other": -score}
    revenue = np.linspace(0, 1000, len(y))

    def run(seed: int, order: np.ndarray) -> dict:
        return account_bootstrap(
            y[order],
            {k: v[order] for k, v in scores.items()},
            account_of[order],
            revenue[order],
            samples=60,
            level=0.95,
            seed=seed,
        )

    rows = np.arange(len(y))
    first = run(42, rows)
    assert run(42, rows) == first
    # Accounts are drawn in sorted order, not in the order of the rows.
    shuffled = run(42, np.random.default_rng(0).permutation(rows))
    for scorer, metrics in first.items():
        for metric, bounds in metrics.items():
            assert shuffled[scorer][metric] == pytest.approx(bounds, abs=1e-12)
    assert run(43, rows) != first
    assert set(first) == {"model", "other"} and all(set(m) == set(METRICS) for m in first.values())


def test_resamples_with_one_class_are_left_out_and_counted():
    """One churner among four accounts: a resample without that account has no ROC AUC."""
    accounts = np.array(["a", "a", "b", "c", "d", "d"])
    y = np.array([0, 1, 0, 0, 0, 0], dtype=float)
    p = np.array([0.2, 0.9, 0.1, 0.3, 0.4, 0.2])
    boot = bootstrap_metrics(y, {"s": p}, accounts, samples=400, seed=0)
    # P(account a not drawn in 4 draws) = (3/4)^4 = 0.32: about 127 of 400.
    assert 90 <= boot.skipped <= 170
    assert np.isnan(boot.values["s"]["roc_auc"]).sum() == boot.skipped
    low, high = boot.interval("s", "roc_auc", 0.95)
    assert 0 <= low <= high <= 1
    note = IntervalNote(400, 0.95, boot.accounts, boot.skipped)
    assert note.describe() == (
        f"95 % bootstrap intervals by account (400 resamples of the 4 test accounts; "
        f"{boot.skipped} with one class only left out)"
    )


def test_every_resample_with_one_class_gives_no_interval():
    accounts = np.array(["a", "b", "c"])
    boot = bootstrap_metrics(
        np.zeros(3), {"s": np.array([0.1, 0.2, 0.3])}, accounts, samples=20, seed=0
    )
    assert boot.skipped == 20
    assert all(np.isnan(v) for v in boot.interval("s", "roc_auc", 0.95))


def test_undefined_metrics_have_no_interval():
    """Recency is not a probability (no Brier score or ECE); without revenue there is no
    revenue captured: as in the point figures."""
    y, score, account_of = _simulated(2, 60, 2, 1.0, shared=0.5)
    out = account_bootstrap(
        y,
        {"recency": score, "model": 1 / (1 + np.exp(-score))},
        account_of,
        None,
        samples=30,
        level=0.9,
        seed=0,
    )
    for metric in ("brier", "ece", "revenue_captured_top_decile"):
        assert all(np.isnan(out["recency"][metric]))
    assert all(np.isnan(out["model"]["revenue_captured_top_decile"]))
    assert all(np.isfinite(out["model"]["brier"]) & np.isfinite(out["recency"]["roc_auc"]))


def test_the_percentile_interval_holds_the_central_level_of_the_finite_values():
    values = np.r_[np.arange(101.0), np.nan]
    assert percentile_interval(values, 0.9) == (5.0, 95.0)
    assert percentile_interval(values, 0.5) == (25.0, 75.0)
    assert all(np.isnan(percentile_interval(np.array([np.nan, np.inf]), 0.9)))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        bootstrap_metrics(
            np.array([0, 2.0]), {"s": np.zeros(2)}, np.array([1, 2]), samples=5, seed=0
        )
    with pytest.raises(ValueError, match="1 account ids for 2 rows"):
        bootstrap_metrics(np.array([0, 1.0]), {"s": np.zeros(2)}, np.array([1]), samples=5, seed=0)
    with pytest.raises(ValueError, match="paired gain of 'revenue"):
        paired_gain_interval(
            np.array([0, 1.0]),
            np.zeros(2),
            np.zeros(2),
            np.array([1, 2]),
            metric="revenue_captured_top_decile",
            samples=5,
            level=0.9,
            seed=0,
        )


def test_the_card_shows_each_figure_with_its_interval_and_says_what_they_are():
    metrics = {"model": dict.fromkeys(METRICS, 0.5), "recency": dict.fromkeys(METRICS, 0.6)}
    metrics["recency"]["brier"] = float("nan")
    intervals = {
        "model": dict.fromkeys(METRICS, (0.41, 0.58)),
        "recency": {**dict.fromkeys(METRICS, (0.52, 0.7)), "brier": (np.nan, np.nan)},
    }
    table = "\n".join(_metrics_table(metrics, intervals))
    assert "| ROC AUC (higher is better) | 0.500 [0.410-0.580] | 0.600 [0.520-0.700] |" in table
    assert "| Brier score (lower is better) | 0.500 [0.410-0.580] | n/a |" in table
    note = " ".join(
        _intervals_note({"samples": 200, "level": 0.95, "accounts": 1234, "skipped": 0})
    )
    assert "95 % bootstrap intervals by account, from 200 resamples of the 1,234 test" in note
    assert "left out" not in note


def test_the_run_config_sets_the_resamples_and_level_and_zero_turns_intervals_off(tmp_path):
    from churn.errors import ConfigError
    from training.config import TrainConfig, load_train_config
    from training.evaluate import metric_intervals

    y, score, account_of = _simulated(9, 80, 3, 1.0, shared=0.5)
    frame = pd.DataFrame({"account_id": [f"acc-{a}" for a in account_of]})
    shipped = load_train_config(Path(__file__).resolve().parents[2] / "configs" / "train.yaml")
    assert shipped.evaluation.bootstrap_samples == 200
    assert shipped.evaluation.interval_level == 0.95
    narrow = TrainConfig.model_validate(
        {"evaluation": {"bootstrap_samples": 150, "interval_level": 0.5}}
    )
    intervals, note = metric_intervals(y, {"model": score}, frame, np.zeros(len(y)), narrow, 3)
    assert note == IntervalNote(150, 0.5, 80, 0)
    boot = bootstrap_metrics(y, {"model": score}, frame["account_id"], samples=150, seed=3)
    assert intervals["model"]["roc_auc"] == boot.interval("model", "roc_auc", 0.5)
    off = TrainConfig.model_validate({"evaluation": {"bootstrap_samples": 0}})
    assert metric_intervals(y, {"model": score}, frame, np.zeros(len(y)), off, 3) == ({}, None)
    bad = tmp_path / "bad.yaml"
    bad.write_text("evaluation:\n  interval_level: 1.0\n")
    with pytest.raises(ConfigError, match="interval_level"):
        load_train_config(bad)
