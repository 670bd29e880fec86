"""The BG/NBD baseline (training/btyd.py): the fit reproduces the paper's published estimates
on the CDNOW sample, recovers known parameters from simulated customers within its intervals,
its probability of no purchase matches what simulated customers do, and the baselines of a
training run's rows read only the invoices issued before each row's date."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.btyd import (
    NO_PURCHASE_DAYS,
    PARAMS,
    BGNBDParams,
    fit_bgnbd,
    log_likelihood,
    p_alive,
    p_no_purchase,
    purchase_baselines,
    purchase_summary,
    simulate_bgnbd,
)

CDNOW = Path(__file__).parent / "data" / "cdnow_customers.csv"
# Fader, Hardie and Lee (2005), the BG/NBD estimates on the CDNOW sample (weeks).
PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_LOG_LIKELIHOOD = -9582.4


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return pd.read_csv(CDNOW)


def test_the_cdnow_sample_is_the_papers_2357_customers(cdnow):
    assert len(cdnow) == 2357
    # The paper's description of the calibration period: 1,411 customers made no repeat
    # purchase, 2,457 repeat purchases in all.
    assert (cdnow["x"] == 0).sum() == 1411
    assert cdnow["x"].sum() == 2457
    assert (cdnow["t_x"] <= cdnow["T"]).all()


def test_fit_reproduces_the_published_cdnow_estimates(cdnow):
    fit = fit_bgnbd(cdnow["x"], cdnow["t_x"], cdnow["T"])
    got = {name: round(getattr(fit.params, name), 3) for name in PARAMS}
    assert got == PUBLISHED
    assert round(fit.log_likelihood, 1) == PUBLISHED_LOG_LIKELIHOOD
    assert fit.converged and fit.customers == 2357
    # The likelihood at the published (rounded) estimates is no higher than at the fit.
    at_published = log_likelihood(BGNBDParams(**PUBLISHED), cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert at_published.sum() <= fit.log_likelihood + 1e-6


def test_weights_count_as_repeated_customers(cdnow):
    sample = cdnow.iloc[:400]
    weights = np.arange(400) % 3 + 1
    weighted = fit_bgnbd(sample["x"], sample["t_x"], sample["T"], weights=weights)
    repeated = sample.loc[sample.index.repeat(weights)]
    expanded = fit_bgnbd(repeated["x"], repeated["t_x"], repeated["T"])
    np.testing.assert_allclose(weighted.params.as_array(), expanded.params.as_array(), rtol=1e-4)
    assert weighted.log_likelihood == pytest.approx(expanded.log_likelihood, rel=1e-8)


def test_the_time_unit_only_rescales_alpha(cdnow):
    weeks = fit_bgnbd(cdnow["x"], cdnow["t_x"], cdnow["T"])
    days = fit_bgnbd(cdnow["x"], cdnow["t_x"] * 7, cdnow["T"] * 7)
    assert days.params.alpha == pytest.approx(7 * weeks.params.alpha, rel=1e-4)
    for name in ("r", "a", "b"):
        assert getattr(days.params, name) == pytest.approx(getattr(weeks.params, name), rel=1e-4)


def test_fit_recovers_known_parameters_within_its_intervals():
    truth = BGNBDParams(r=0.6, alpha=20.0, a=0.7, b=3.0)  # days: ~ a purchase a month
    rng = np.random.default_rng(20050101)
    customers = simulate_bgnbd(truth, rng.uniform(200, 400, 4000), rng)
    fit = fit_bgnbd(customers["x"], customers["t_x"], customers["T"])
    intervals = fit.interval(z=2.576)  # 99 %
    for name in PARAMS:
        low, high = intervals[name]
        assert low < getattr(truth, name) < high, (name, intervals[name])
    # The intervals are informative, not merely wide: every log standard error below 0.25.
    assert np.all(fit.log_std_errors < 0.25), fit.log_std_errors


def test_no_purchase_probability_matches_simulated_customers():
    truth = BGNBDParams(r=0.8, alpha=15.0, a=0.6, b=2.5)
    rng = np.random.default_rng(7)
    window = 90.0
    customers = simulate_bgnbd(truth, rng.uniform(100, 500, 20000), rng, horizon=window)
    predicted = p_no_purchase(truth, customers["x"], customers["t_x"], customers["T"], window)
    observed = (~customers["bought_after"]).to_numpy(float)
    groups = pd.cut(customers["x"], [-1, 0, 1, 3, np.inf], labels=False)
    for group in np.unique(groups):
        rows = (groups == group).to_numpy()
        sd = np.sqrt((predicted[rows] * (1 - predicted[rows])).sum()) / rows.sum()
        gap = observed[rows].mean() - predicted[rows].mean()
        assert abs(gap) < 4 * sd, (group, rows.sum(), gap, sd)


def test_p_alive_and_no_purchase_edge_cases():
    params = BGNBDParams(r=0.5, alpha=10.0, a=0.8, b=2.0)
    x, t_x, T = np.array([0.0, 3.0, 3.0]), np.array([0.0, 50.0, 99.0]), np.array([100.0] * 3)
    alive = p_alive(params, x, t_x, T)
    assert alive[0] == 1.0  # no repeat purchase: no chance to drop out yet
    assert alive[2] > alive[1]  # a recent last purchase: more likely alive
    assert np.all(p_no_purchase(params, x, t_x, T, 0.0) == 1.0)
    # A brand-new customer: the prior's chance of no purchase in t, (alpha / (alpha + t))^r.
    new = p_no_purchase(params, np.zeros(1), np.zeros(1), np.zeros(1), 30.0)
    assert new[0] == pytest.approx((10.0 / 40.0) ** 0.5)


@settings(max_examples=60, deadline=None)
@given(
    x=st.integers(0, 40),
    share=st.floats(0, 1),
    T=st.floats(1, 1000),
    t=st.floats(0, 500),
    more=st.floats(0, 500),
)
def test_no_purchase_is_a_probability_falling_with_the_window(x, share, T, t, more):
    params = BGNBDParams(r=0.4, alpha=12.0, a=0.9, b=2.2)
    args = (np.array([float(x)]), np.array([share * T if x else 0.0]), np.array([T]))
    short = p_no_purchase(params, *args, t)[0]
    long = p_no_purchase(params, *args, t + more)[0]
    assert 0.0 <= long <= short <= 1.0
    assert long >= 1 - p_alive(params, *args)[0] - 1e-12


def test_fit_refuses_impossible_summaries():
    with pytest.raises(ValueError, match="t_x <= T"):
        fit_bgnbd(np.array([1.0]), np.array([5.0]), np.array([3.0]))
    with pytest.raises(ValueError, match="at least one customer"):
        fit_bgnbd(np.array([]), np.array([]), np.array([]))


# ------------------------------------------------------------ baselines of a training run


def _invoices(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": [a for a, _ in rows],
            "invoice_id": [f"I{i}" for i in range(len(rows))],
            "issued_at": pd.to_datetime([d for _, d in rows]),
        }
    )


def test_purchase_summary_counts_distinct_invoice_days_before_as_of():
    invoices = _invoices(
        [
            ("A", "2024-01-01"),
            ("A", "2024-01-01"),  # same day: one purchase
            ("A", "2024-02-10"),
            ("A", "2024-03-01"),  # on as_of: not before it
            ("B", "2024-02-20"),
            ("C", "2024-03-05"),  # after as_of
        ]
    )
    summary = purchase_summary(invoices, pd.Timestamp("2024-03-01"))
    assert list(summary.index) == ["A", "B"]
    assert summary.loc["A", ["x", "t_x", "T"]].tolist() == [1.0, 40.0, 60.0]
    assert summary.loc["B", ["x", "t_x", "T"]].tolist() == [0.0, 0.0, 10.0]


def test_baselines_score_recency_and_bgnbd_per_row_with_fallbacks():
    rng = np.random.default_rng(3)
    rows_inv = [
        (f"A{i}", str(pd.Timestamp("2023-01-01") + pd.Timedelta(days=int(d))))
        for i in range(40)
        for d in np.sort(rng.choice(400, size=rng.integers(1, 8), replace=False))
    ]
    invoices = _invoices(rows_inv)
    as_of = pd.Timestamp("2024-03-01")
    rows = pd.DataFrame(
        {
            "account_id": ["A0", "A1", "NEW"],
            "as_of": [as_of] * 3,
            "label_window_end": [as_of + pd.Timedelta(days=d) for d in (90, 120, 90)],
        }
    )
    scores = purchase_baselines(invoices, rows)
    summary = purchase_summary(invoices, as_of)
    assert scores["recency"][0] == -summary.loc["A0", "last_day"]
    assert scores["recency"][2] == NO_PURCHASE_DAYS
    fit = fit_bgnbd(summary["x"], summary["t_x"], summary["T"])
    expected = p_no_purchase(
        fit.params,
        summary.loc[["A0", "A1"], "x"],
        summary.loc[["A0", "A1"], "t_x"],
        summary.loc[["A0", "A1"], "T"],
        np.array([90.0, 120.0]),
    )
    np.testing.assert_allclose(scores["bgnbd"][:2], expected)
    new = (fit.params.alpha / (fit.params.alpha + 90.0)) ** fit.params.r
    assert scores["bgnbd"][2] == pytest.approx(new)
    assert purchase_baselines(None, rows) == {}


_ACCOUNTS = ["A", "B", "C", "D", "E"]
_START = pd.Timestamp("2023-01-01")


@st.composite
def _history(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp, pd.DataFrame]:
    """Invoices over two years, test rows at two month starts, a cut-off date and invoices
    stamped on or after the cut-off."""
    days = st.integers(0, 729)
    invoices = _invoices(
        [
            (draw(st.sampled_from(_ACCOUNTS)), str(_START + pd.Timedelta(days=d)))
            for d in draw(st.lists(days, min_size=8, max_size=40))
        ]
    )
    dates = [pd.Timestamp("2024-06-01"), pd.Timestamp("2024-09-01")]
    rows = pd.DataFrame(
        [
            {"account_id": a, "as_of": d, "label_window_end": d + pd.Timedelta(days=w)}
            for d in dates
            for a in _ACCOUNTS
            for w in [draw(st.sampled_from([90, 150]))]
        ]
    )
    cut = dates[0] + pd.Timedelta(days=draw(st.integers(0, 120)))
    later = _invoices(
        [
            (draw(st.sampled_from([*_ACCOUNTS, "Z"])), str(cut + pd.Timedelta(days=d)))
            for d in draw(st.lists(st.integers(0, 300), min_size=1, max_size=10))
        ]
    )
    return invoices, rows, cut, later


# Each example fits the model four times (two dates, before and after): few examples.
@settings(max_examples=10, deadline=None)
@given(history=_history())
def test_invoices_on_or_after_as_of_never_change_a_rows_baselines(history):
    invoices, rows, cut, later = history
    before = purchase_baselines(invoices, rows)
    after = purchase_baselines(pd.concat([invoices, later], ignore_index=True), rows)
    untouched = (rows["as_of"] <= cut).to_numpy()
    assert untouched.any()
    for name in ("recency", "bgnbd"):
        np.testing.assert_array_equal(before[name][untouched], after[name][untouched])


def test_a_date_without_two_buyers_scores_its_rows_half_and_rows_need_their_window():
    invoices = _invoices([("A", "2024-01-05"), ("B", "2024-05-01")])
    as_of = pd.Timestamp("2024-03-01")
    rows = pd.DataFrame(
        {
            "account_id": ["A", "B"],
            "as_of": [as_of] * 2,
            "label_window_end": [as_of + pd.Timedelta(days=90)] * 2,
        }
    )
    scores = purchase_baselines(invoices, rows)
    assert scores["bgnbd"].tolist() == [0.5, 0.5]  # only A bought before as_of: no fit
    assert scores["recency"].tolist() == [56.0, NO_PURCHASE_DAYS]
    with pytest.raises(ValueError, match="label_window_end"):
        purchase_baselines(invoices, rows.drop(columns="label_window_end"))
