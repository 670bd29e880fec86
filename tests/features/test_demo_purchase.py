"""The purchase demo (``churn demo-data --business purchase``): a project-by-project
business's transaction log, accounts and invoices only, that validates whole; one-time,
repeat, lapsed and returning clients in the designed shares; and the known effects of the
generator's docstring present in the data (measured with intervals)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from scipy import stats

from churn.errors import ChurnError
from features import demo_purchase as dp
from features.contract import TABLE_NAMES
from features.demo_purchase import PurchaseSummary, generate_purchase_demo, simulate_purchases
from features.sources import read_source
from features.validate import validate_tables

SMALL = {"accounts": 150, "months": 12, "seed": 5}
Z = 3.0  # intervals of +-3 standard errors: a false alarm about once in 370 runs per check


@pytest.fixture(scope="module")
def default() -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The default size (8,000 accounts, 18 months), in memory, with the simulation's truth."""
    return simulate_purchases()


@pytest.fixture(scope="module")
def long_run() -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Ten years: whole purchase runs fit in the window, so their last gaps are seen."""
    return simulate_purchases(accounts=8000, months=120, seed=11)


def _invoice_counts(frames: dict[str, pd.DataFrame]) -> pd.Series:
    accounts = frames["accounts"]["account_id"]
    counts = frames["invoices"].groupby("account_id").size()
    return counts.reindex(accounts, fill_value=0)


def _share_interval(hits: pd.Series) -> tuple[float, float]:
    p, n = float(hits.mean()), len(hits)
    half = Z * np.sqrt(p * (1 - p) / n)
    return p - half, p + half


def _difference_interval(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """Interval of mean(a) - mean(b)."""
    diff = float(a.mean() - b.mean())
    half = Z * np.sqrt(a.var() / len(a) + b.var() / len(b))
    return diff - half, diff + half


# --- files, contract, determinism ------------------------------------------------------------


def test_only_accounts_and_invoices_are_written_and_they_validate_whole(tmp_path: Path) -> None:
    (tmp_path / "churn_events.csv").write_text("account_id,churned_at\n")  # a stale table
    summary = generate_purchase_demo(tmp_path, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accounts.csv", "invoices.csv"]
    result = validate_tables(read_source(tmp_path))
    assert result.rejects.empty
    assert sorted(result.missing) == sorted(set(TABLE_NAMES) - {"accounts", "invoices"})
    assert len(result.tables.accounts) == SMALL["accounts"] == summary.accounts
    assert len(result.tables.invoices) == summary.rows["invoices"]
    assert summary.one_time + summary.repeat == SMALL["accounts"]
    # no contracts in a purchase log: the contract-only columns are left out
    assert set(result.tables.accounts.columns) >= {"account_id", "account_manager", "started_at"}
    header = (tmp_path / "accounts.csv").read_text().splitlines()[0].split(",")
    assert "contract_value" not in header and "renewal_at" not in header


def test_started_at_is_the_first_invoice_and_every_account_has_one(tmp_path: Path) -> None:
    generate_purchase_demo(tmp_path, **SMALL)
    tables = validate_tables(read_source(tmp_path)).tables
    first = tables.invoices.groupby("account_id")["issued_at"].min()
    started = tables.accounts.set_index("account_id")["started_at"]
    assert first.index.sort_values().equals(started.index.sort_values())
    assert (first.reindex(started.index) == started).all()
    inv = tables.invoices
    assert (inv["issued_at"].dt.dayofweek < 5).all()  # business days only
    assert (inv["due_at"] > inv["issued_at"]).all()
    assert (inv["paid_at"].dropna() > inv.loc[inv["paid_at"].notna(), "issued_at"]).all()
    assert (inv["discount"] >= 0).all() and (inv["amount"] > 0).all()


def test_same_seed_writes_the_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    generate_purchase_demo(tmp_path / "a", **SMALL)
    generate_purchase_demo(tmp_path / "b", **SMALL)
    generate_purchase_demo(tmp_path / "c", **{**SMALL, "seed": 6})
    for name in ("accounts", "invoices"):
        a = (tmp_path / "a" / f"{name}.csv").read_bytes()
        assert a == (tmp_path / "b" / f"{name}.csv").read_bytes(), name
        assert a != (tmp_path / "c" / f"{name}.csv").read_bytes(), name


@pytest.mark.parametrize("months", [6, 18, 30])
def test_months_set_the_span_of_the_log(tmp_path: Path, months: int) -> None:
    end = date(2026, 9, 30)
    summary = generate_purchase_demo(tmp_path, accounts=300, months=months, seed=2, end=end)
    first = (pd.Timestamp(end) + pd.Timedelta(days=1) - pd.DateOffset(months=months)).date()
    assert (summary.period_start, summary.period_end) == (first, end)
    issued = validate_tables(read_source(tmp_path)).tables.invoices["issued_at"]
    assert issued.min().date() >= first and issued.max().date() <= end
    # the log is used from its first weeks to its last ones
    assert (issued.min().date() - first).days <= 14
    assert (end - issued.max().date()).days <= 14


def test_parquet_holds_the_same_data_as_csv(tmp_path: Path) -> None:
    generate_purchase_demo(tmp_path / "csv", **SMALL)
    generate_purchase_demo(tmp_path / "pq", **SMALL, fmt="parquet")
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == [
        "accounts.parquet",
        "invoices.parquet",
    ]
    a = validate_tables(read_source(tmp_path / "csv")).tables
    b = validate_tables(read_source(tmp_path / "pq")).tables
    for name in ("accounts", "invoices"):
        pd.testing.assert_frame_equal(a.get(name), b.get(name), check_dtype=False)


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    accounts=st.integers(1, 60),
    months=st.integers(3, 40),
    chunk_size=st.integers(3, 50),
)
def test_any_seed_size_and_span_gives_contract_clean_data(
    tmp_path_factory: pytest.TempPathFactory, seed: int, accounts: int, months: int, chunk_size: int
) -> None:
    out = tmp_path_factory.mktemp("purchase_any")
    summary = generate_purchase_demo(
        out, accounts=accounts, seed=seed, months=months, chunk_size=chunk_size
    )
    result = validate_tables(read_source(out))
    assert result.rejects.empty
    assert len(result.tables.accounts) == accounts
    assert result.tables.accounts["account_id"].is_unique
    issued = result.tables.invoices["issued_at"]
    assert issued.min().date() >= summary.period_start
    assert issued.max().date() <= summary.period_end


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"fmt": "xlsx"}, "format"),
        ({"accounts": 0}, "accounts"),
        ({"months": 2}, "months"),
        ({"months": 500}, "months"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_arguments_name_what_is_wrong(tmp_path: Path, kwargs: dict, words: str) -> None:
    with pytest.raises(ChurnError, match=words):
        generate_purchase_demo(tmp_path, **kwargs)


def test_the_summary_renders_the_clients_make_up(tmp_path: Path) -> None:
    summary = generate_purchase_demo(tmp_path, **SMALL)
    console = Console(width=200, record=True)
    console.print(summary.render())
    text = " ".join(console.export_text().split())
    assert isinstance(summary, PurchaseSummary)
    assert f"{summary.one_time} one-time buyers" in text
    assert f"{summary.rows['invoices']:,}" in text


# --- the clients' make-up at the default size ------------------------------------------------


def test_most_clients_buy_once_and_a_minority_again(default) -> None:
    frames, truth = default
    counts = _invoice_counts(frames)
    assert len(counts) == dp.DEFAULT_ACCOUNTS and (counts >= 1).all()
    lo, hi = _share_interval(counts == 1)
    assert lo > 0.5 and hi < 0.62, (lo, hi)
    repeat = counts[counts >= 2]
    assert 0.38 < len(repeat) / len(counts) < 0.5
    assert repeat.quantile(0.9) >= 4  # a tail of frequent buyers
    # the truth agrees with the data
    assert (truth.set_index("account_id")["purchases"].reindex(counts.index) == counts).all()


def test_purchase_rates_and_regularity_differ_between_clients(default) -> None:
    frames, truth = default
    inv = frames["invoices"].sort_values(["account_id", "issued_at"], kind="stable")
    day = inv["issued_at"].to_numpy().astype("datetime64[D]").astype(np.float64)
    gap = pd.Series(np.diff(day, prepend=np.nan), index=inv.index)
    gap[inv["account_id"].ne(inv["account_id"].shift())] = np.nan
    per = pd.DataFrame({"account_id": inv["account_id"], "gap": gap}).dropna()
    gaps = per.groupby("account_id")["gap"].agg(mean_gap="mean", sd_gap="std", gaps="size")
    gaps = gaps[gaps["gaps"] >= 3].join(truth.set_index("account_id"))
    # heterogeneous rates: typical gaps range over several times
    assert gaps["mean_gap"].quantile(0.9) > 3 * gaps["mean_gap"].quantile(0.1)
    cv = gaps["sd_gap"] / gaps["mean_gap"]
    lo, _ = _difference_interval(cv[gaps["regularity"] == 1], cv[gaps["regularity"] == 4])
    assert lo > 0.15, lo  # irregular clients' gaps vary more than steady clients'


def test_some_clients_lapse_and_a_few_come_back(default) -> None:
    frames, truth = default
    repeat = truth[truth["purchases"] >= 2]
    lo, hi = _share_interval(repeat["lapsed"])
    assert lo > 0.25 and hi < 0.5, (lo, hi)
    lo, hi = _share_interval(truth["returned"])
    assert lo > 0.02 and hi < 0.08, (lo, hi)
    # a comeback follows a long silence in the data
    inv = frames["invoices"][
        frames["invoices"]["account_id"].isin(truth["account_id"][truth["returned"]])
    ]
    longest = (
        inv.sort_values("issued_at")
        .groupby("account_id")["issued_at"]
        .apply(lambda s: s.diff().dt.days.max())
    )
    assert len(longest) == truth["returned"].sum()
    assert (longest >= dp.SILENCE_MIN - 4).all()  # weekends may move either end by two days


def test_lapsed_clients_come_back_at_the_designed_rate(default) -> None:
    _, truth = default
    end = pd.Timestamp(date(2026, 9, 30))
    ended = truth[truth["first_run_end"] <= end]
    room = (end - ended["first_run_end"]).dt.days.to_numpy()
    # P(comeback inside the window) = rate x P(silence <= the days left)
    reach = stats.gamma.cdf(room - dp.SILENCE_MIN, dp.SILENCE_SHAPE, scale=dp.SILENCE_SCALE)
    rate = np.where(ended["first_run"] == 1, dp.RETURN_ONE_TIME, dp.RETURN_REPEAT)
    expected = rate * reach
    observed = ended["returned"].to_numpy()
    for group in (ended["first_run"] == 1, ended["first_run"] >= 2):
        g = group.to_numpy()
        z = (observed[g].sum() - expected[g].sum()) / np.sqrt(
            (expected[g] * (1 - expected[g])).sum()
        )
        assert abs(z) < 4, (g.sum(), observed[g].sum(), expected[g].sum())


# --- the known effects -----------------------------------------------------------------------


def _last_against_earlier(frames: dict[str, pd.DataFrame], truth: pd.DataFrame) -> pd.DataFrame:
    """Per client with four invoices or more: log of the last invoice's value over the median
    of its earlier ones, and of the last gap over the median of its earlier gaps."""
    many = truth[truth["purchases"] >= 4].set_index("account_id")
    inv = frames["invoices"][frames["invoices"]["account_id"].isin(many.index)]
    inv = inv.sort_values(["account_id", "issued_at"], kind="stable")
    log_value = np.log(inv["amount"] + inv["discount"])
    day = inv["issued_at"].to_numpy().astype("datetime64[D]").astype(np.float64)
    frame = pd.DataFrame({"account_id": inv["account_id"], "v": log_value, "d": day})
    frame["gap"] = frame.groupby("account_id")["d"].diff()
    last = frame.groupby("account_id").tail(1).set_index("account_id")
    earlier = frame.drop(frame.groupby("account_id").tail(1).index)
    med = earlier.groupby("account_id").agg(v=("v", "median"), gap=("gap", "median"))
    out = pd.DataFrame({"value": last["v"] - med["v"], "gap": np.log(last["gap"] / med["gap"])})
    return out.join(many)


def test_a_lapsing_client_s_last_invoices_fall_in_value(default) -> None:
    frames, truth = default
    ratios = _last_against_earlier(frames, truth)
    announced = ratios[ratios["lapsed"] & ratios["announced"]]["value"]
    staying = ratios[~ratios["lapsed"]]["value"]
    quiet = ratios[ratios["lapsed"] & ~ratios["announced"]]["value"]
    # design: the last invoice at 0.55 of the usual value (log -0.6) against the two before
    lo, hi = _difference_interval(announced, staying)
    assert lo > -0.75 and hi < -0.25, (lo, hi)
    lo, hi = _difference_interval(quiet, staying)
    assert lo > -0.2 and hi < 0.2, (lo, hi)  # quiet lapsers give no warning


def test_a_lapsing_client_s_gaps_lengthen_before_it_stops(long_run) -> None:
    frames, truth = long_run
    ratios = _last_against_earlier(frames, truth)
    lapsed = ratios[ratios["lapsed"]]
    lo, hi = _difference_interval(
        lapsed[lapsed["announced"]]["gap"], lapsed[~lapsed["announced"]]["gap"]
    )
    assert lo > 0.1 and hi < 1.0, (lo, hi)  # design: last gap x1.8 (log 0.59) at most


def test_late_payers_discount_takers_and_small_clients_stop_more_often(default) -> None:
    frames, truth = default
    won = truth[~truth["on_book"]]
    started = frames["accounts"].set_index("account_id")["started_at"].reindex(won["account_id"])
    won = won[(started < pd.Timestamp("2026-03-31")).to_numpy()]  # six months to buy again
    once = won["purchases"] == 1
    for flag in ("late_payer", "discount_taker"):
        lo, _ = _difference_interval(once[won[flag]], once[~won[flag]])
        assert lo > 0, (flag, lo)
    lo, _ = _difference_interval(once[won["size"] == "small"], once[won["size"] == "large"])
    assert lo > 0.05, lo


def test_attributes_show_in_the_invoices(default) -> None:
    frames, truth = default
    inv = frames["invoices"].merge(truth[["account_id", "late_payer", "size"]], on="account_id")
    paid = inv.dropna(subset=["paid_at"])
    late = (paid["paid_at"] - paid["due_at"]).dt.days
    lo, _ = _difference_interval(late[paid["late_payer"]], late[~paid["late_payer"]])
    assert lo > 10, lo
    value = np.log(inv["amount"])
    lo, _ = _difference_interval(value[inv["size"] == "large"], value[inv["size"] == "small"])
    assert lo > 2, lo
