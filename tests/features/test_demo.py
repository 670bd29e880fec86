"""The demo data generator: every contract table and column, deterministic, a few messy rows,
and a firm whose churn has the designed mix, concentration and observable precursors.

The tests read the CSVs with a small typed reader of their own (``read_demo``) that sets aside
the rows breaking the contract, so they do not depend on features.validate.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from churn.errors import ChurnError
from features.contract import TABLE_NAMES, TABLES, Tables
from features.demo import REASON_MIX, DemoSummary, generate_demo
from tests.support.demo_read import DemoRead, read_demo

SMALL = {"accounts": 120, "years": 2, "seed": 5}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoSummary, DemoRead]:
    out = tmp_path_factory.mktemp("demo_small")
    summary = generate_demo(out, **SMALL)
    return summary, read_demo(out)


@pytest.fixture(scope="module")
def firm(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoSummary, Tables]:
    """The default size: 1,500 accounts over four years."""
    out = tmp_path_factory.mktemp("demo_default")
    summary = generate_demo(out)
    return summary, read_demo(out).tables


# --- files, determinism, contract ------------------------------------------------------------


def test_same_seed_writes_the_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    first = generate_demo(tmp_path / "a", **SMALL)
    generate_demo(tmp_path / "b", **SMALL)
    generate_demo(tmp_path / "c", **{**SMALL, "seed": 6})
    for name in TABLE_NAMES:
        a = (tmp_path / "a" / f"{name}.csv").read_bytes()
        assert a == (tmp_path / "b" / f"{name}.csv").read_bytes(), name
        assert a != (tmp_path / "c" / f"{name}.csv").read_bytes(), name
    assert first.rows["accounts"] >= SMALL["accounts"]


def test_every_contract_table_and_column_is_filled(small: tuple[DemoSummary, DemoRead]) -> None:
    _, read = small
    for name in TABLE_NAMES:
        frame = read.tables.get(name)
        assert frame is not None and len(frame) > 0, name
        for col in TABLES[name].columns:
            filled = frame[col.name].notna().mean()
            # optional columns mostly filled, with realistic gaps; an empty end date means
            # the person is still involved, so most contacts have none
            least = 0.1 if (name, col.name) == ("contacts", "ended_at") else 0.5
            assert filled > least, f"{name}.{col.name} is only {filled:.0%} filled"
            if col.enum:
                assert set(frame[col.name].dropna()) <= set(col.enum), f"{name}.{col.name}"
    accounts = read.tables.accounts
    assert accounts["account_id"].is_unique
    assert len(accounts) == SMALL["accounts"]
    assert accounts["name"].str.len().between(3, 60).all()
    assert accounts["account_manager"].nunique() > 5


def test_clean_rows_respect_the_contracts_order_rules(small: tuple[DemoSummary, DemoRead]) -> None:
    _, read = small
    for name, frame in read.tables:
        for first, second in TABLES[name].order:
            both = frame[[first, second]].dropna()
            assert (both[first] <= both[second]).all(), f"{name}: {first} after {second}"


def test_csv_cells_use_iso_dates_and_true_false(small: tuple[DemoSummary, DemoRead]) -> None:
    summary, _ = small
    interactions = pd.read_csv(summary.out / "interactions.csv", dtype=str, nrows=50)
    assert interactions["occurred_at"].str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d").all()
    assert set(interactions["competitor_mentioned"].dropna()) <= {"true", "false"}
    invoices = pd.read_csv(summary.out / "invoices.csv", dtype=str, nrows=50)
    assert invoices["issued_at"].str.fullmatch(r"\d{4}-\d\d-\d\d").all()


def test_messy_rows_stay_under_one_percent_and_are_counted(
    small: tuple[DemoSummary, DemoRead], firm: tuple[DemoSummary, Tables], tmp_path: Path
) -> None:
    summary, read = small
    assert summary.messy_rows == read.messy
    assert summary.rows == read.rows
    for name in TABLE_NAMES:
        assert read.messy[name] <= 0.008 * read.rows[name], name
    big, _ = firm
    for name in TABLE_NAMES:
        assert big.messy_rows[name] <= 0.008 * big.rows[name], name
    # the big tables carry every kind of problem for validation to find
    assert big.messy_rows["interactions"] > 0.002 * big.rows["interactions"]
    assert sum(big.messy_rows.values()) > 100


def test_the_summary_renders_a_table_for_the_cli(small: tuple[DemoSummary, DemoRead]) -> None:
    summary, _ = small
    console = Console(record=True, width=120)
    console.print(summary.render())
    text = console.export_text()
    for name in TABLE_NAMES:
        assert name in text
    assert f"{summary.churned} churned" in text


def test_parquet_holds_the_same_clean_data_and_replaces_the_csv(tmp_path: Path) -> None:
    generate_demo(tmp_path, **SMALL)
    csv_accounts = read_demo(tmp_path).tables.accounts
    summary = generate_demo(tmp_path, fmt="parquet", **SMALL)
    assert not list(tmp_path.glob("*.csv"))
    accounts = pd.read_parquet(tmp_path / "accounts.parquet")
    assert len(accounts) == summary.rows["accounts"]
    clean = accounts[accounts["started_at"].notna()].drop_duplicates("account_id")
    assert clean["account_id"].tolist() == csv_accounts["account_id"].tolist()
    assert clean["contract_value"].fillna(-1).tolist() == (
        csv_accounts["contract_value"].fillna(-1).tolist()
    )


def test_chunks_keep_ids_unique_and_the_account_count_exact(tmp_path: Path) -> None:
    summary = generate_demo(tmp_path, accounts=130, years=1, seed=3, chunk_size=40)
    read = read_demo(tmp_path)
    assert summary.rows["accounts"] - summary.messy_rows["accounts"] == 130
    assert read.tables.accounts["account_id"].is_unique
    assert read.tables.invoices["invoice_id"].is_unique
    assert read.tables.projects["project_id"].is_unique
    assert not read.tables.contacts.duplicated(["account_id", "contact_id"]).any()


def test_records_fall_in_the_period_ending_on_the_given_end_date(tmp_path: Path) -> None:
    summary = generate_demo(tmp_path, accounts=60, years=1, seed=1, end=date(2021, 3, 31))
    assert (summary.period_start, summary.period_end) == (date(2020, 4, 1), date(2021, 3, 31))
    tables = read_demo(tmp_path).tables
    for name, frame in tables:
        stamp = TABLES[name].stamp
        if stamp is not None:
            assert frame[stamp].max() <= pd.Timestamp("2021-03-31 23:59:59"), name
            assert frame[stamp].min() >= pd.Timestamp("2020-04-01"), name


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    accounts=st.integers(1, 40),
    years=st.integers(1, 3),
    chunk_size=st.integers(4, 40),
)
def test_any_seed_and_size_gives_contract_clean_data(
    tmp_path_factory: pytest.TempPathFactory, seed: int, accounts: int, years: int, chunk_size: int
) -> None:
    out = tmp_path_factory.mktemp("demo_any")
    summary = generate_demo(out, accounts=accounts, seed=seed, years=years, chunk_size=chunk_size)
    read = read_demo(out)
    assert len(read.tables.accounts) == accounts
    assert read.messy == summary.messy_rows
    for name, frame in read.tables:
        assert read.messy[name] <= 0.008 * read.rows[name], name
        for first, second in TABLES[name].order:
            both = frame[[first, second]].dropna()
            assert (both[first] <= both[second]).all(), f"{name}: {first} after {second}"
    assert not _after_churn(read.tables, "interactions", "occurred_at").any()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"fmt": "xlsx"}, "format"), ({"accounts": 0}, "accounts"), ({"years": 0}, "years")],
)
def test_bad_arguments_name_what_is_wrong(tmp_path: Path, kwargs: dict, words: str) -> None:
    with pytest.raises(ChurnError, match=words):
        generate_demo(tmp_path, **kwargs)


# --- the simulated firm ----------------------------------------------------------------------


def _after_churn(tables: Tables, name: str, stamp: str, strictly: bool = False) -> pd.Series:
    """Per row of a table: stamped on (or, strictly, after) its account's churn date."""
    frame = tables.get(name)
    churned_at = frame[["account_id"]].merge(
        tables.churn_events[["account_id", "churned_at"]], on="account_id", how="left"
    )["churned_at"]
    after = frame[stamp].to_numpy() > churned_at.to_numpy()
    if not strictly:
        after |= frame[stamp].to_numpy() == churned_at.to_numpy()
    return pd.Series(after, index=frame.index)


def _churn(tables: Tables) -> pd.DataFrame:
    accounts = tables.accounts[["account_id", "started_at"]]
    events = tables.churn_events[["account_id", "churned_at", "reason"]]
    return accounts.merge(events, on="account_id", how="left")


def test_reason_mix_matches_the_design(firm: tuple[DemoSummary, Tables]) -> None:
    _, tables = firm
    shares = tables.churn_events["reason"].value_counts(normalize=True)
    for reason, design in REASON_MIX.items():
        assert abs(shares[reason] - design) < 0.03, reason
    assert 0 < shares.get("other", 0) < 0.05


def test_about_a_fifth_of_clients_bring_four_fifths_of_revenue(
    firm: tuple[DemoSummary, Tables],
) -> None:
    _, tables = firm
    invoices = tables.invoices
    recent = invoices[invoices["issued_at"] > pd.Timestamp("2025-09-30")]
    revenue = recent.groupby("account_id")["amount"].sum().sort_values(ascending=False)
    top = revenue.iloc[: round(0.2 * len(revenue))].sum() / revenue.sum()
    assert 0.74 < top < 0.88


def test_churn_is_about_a_tenth_a_year_and_higher_in_the_first_year(
    firm: tuple[DemoSummary, Tables],
) -> None:
    summary, tables = firm
    from features.profile import profile

    p = profile(tables)
    assert 0.10 <= p.annual_churn_rate <= 0.15
    rates = {s.stage: s.annual_rate for s in p.by_stage}
    assert rates["new"] > 1.5 * max(rates["established"], rates["long_term"])
    assert summary.churned == len(tables.churn_events)


def test_tenures_span_new_to_long_term_with_clients_won_every_year(
    firm: tuple[DemoSummary, Tables],
) -> None:
    _, tables = firm
    started = tables.accounts["started_at"]
    tenure_years = (pd.Timestamp("2026-09-30") - started).dt.days / 365.25
    assert tenure_years.min() < 0.5 and tenure_years.max() > 10
    won = started[started >= pd.Timestamp("2022-10-01")].dt.year.value_counts()
    assert all(won.get(year, 0) > 20 for year in (2023, 2024, 2025, 2026))


def test_tier_cadence_a_clients_meet_far_more_often_than_c_clients(
    firm: tuple[DemoSummary, Tables],
) -> None:
    _, tables = firm
    value = tables.accounts.set_index("account_id")["contract_value"].dropna()
    top, bottom = value[value >= value.quantile(0.8)].index, value[value <= value.quantile(0.2)]
    held = tables.interactions[tables.interactions["status"] == "held"]
    per_account = held.groupby("account_id").size()
    reviews = held[held["channel"] == "business_review"].groupby("account_id").size()
    assert (
        per_account.reindex(top, fill_value=0).mean()
        > 5 * per_account.reindex(bottom.index, fill_value=0).mean()
    )
    assert (
        reviews.reindex(top, fill_value=0).mean()
        > 4 * reviews.reindex(bottom.index, fill_value=0).mean()
    )


def _window_counts(
    events: pd.DataFrame, stamp: str, refs: pd.DataFrame, days: int, value: str | None = None
) -> pd.Series:
    """Per reference row (account_id, ref): count (or sum of ``value``) of events stamped in
    [ref - days, ref)."""
    merged = refs.reset_index(names="row").merge(events, on="account_id")
    inside = (merged[stamp] >= merged["ref"] - pd.Timedelta(days=days)) & (
        merged[stamp] < merged["ref"]
    )
    picked = merged[inside]
    result = picked.groupby("row")[value].sum() if value else picked.groupby("row").size()
    return result.reindex(refs.index, fill_value=0)


@pytest.fixture(scope="module")
def refs(firm: tuple[DemoSummary, Tables]) -> pd.DataFrame:
    """One reference date per account with a year of history before it: the churn date for
    churners, for the others a churn date of the pool drawn at random (comparable windows)."""
    _, tables = firm
    frame = _churn(tables)
    rng = np.random.default_rng(0)
    pool = frame["churned_at"].dropna().to_numpy()
    frame["ref"] = frame["churned_at"].fillna(
        pd.Series(rng.choice(pool, len(frame)), index=frame.index)
    )
    old_enough = frame["ref"] - frame["started_at"] >= pd.Timedelta(days=365)
    in_data = frame["ref"] >= pd.Timestamp("2023-10-01")
    frame = frame[old_enough & in_data].reset_index(drop=True)
    frame["churner"] = frame["churned_at"].notna()
    frame["reason"] = frame["reason"].fillna("").astype(object)
    return frame


def test_churners_interact_less_in_the_90_days_before_churn(
    firm: tuple[DemoSummary, Tables], refs: pd.DataFrame
) -> None:
    _, tables = firm
    held = tables.interactions[tables.interactions["status"] == "held"]
    recent = _window_counts(held, "occurred_at", refs, 90)
    year = _window_counts(held, "occurred_at", refs, 360)
    previous = (year - recent) / 3  # the three quarters before, per quarter
    churner = refs["churner"]
    assert recent[churner].mean() < 0.85 * recent[~churner].mean()
    # relative to their own past the decay is clearest for relationships taken for granted
    ratio = recent / previous.clip(lower=1)
    granted = refs["reason"] == "taken_for_granted"
    assert ratio[granted].median() < 0.7 * ratio[~churner].median()


def test_service_quality_churners_complain_before_they_leave(
    firm: tuple[DemoSummary, Tables], refs: pd.DataFrame
) -> None:
    _, tables = firm
    tickets = tables.tickets
    complaints = _window_counts(
        tickets[tickets["is_complaint"].fillna(False)], "opened_at", refs, 90
    )
    service = refs["reason"] == "service_quality"
    assert complaints[service].mean() > 3 * complaints[~refs["churner"]].mean()
    assert complaints[service].mean() > 2 * complaints[refs["churner"] & ~service].mean()


def test_competitor_churners_mention_competitors(
    firm: tuple[DemoSummary, Tables], refs: pd.DataFrame
) -> None:
    _, tables = firm
    inter = tables.interactions
    mentions = _window_counts(
        inter[inter["competitor_mentioned"].fillna(False)], "occurred_at", refs, 90
    )
    competitor = refs["reason"] == "competitor"
    assert mentions[competitor].mean() > 3 * mentions[~refs["churner"]].mean()


def test_budget_cut_churners_spend_less_and_pay_later(
    firm: tuple[DemoSummary, Tables], refs: pd.DataFrame
) -> None:
    _, tables = firm
    invoices = tables.invoices
    recent = _window_counts(invoices, "issued_at", refs, 90, "amount")
    half = _window_counts(invoices, "issued_at", refs, 180, "amount")
    change = recent / (half - recent).where(half - recent > 0)
    budget = refs["reason"] == "budget_cut"
    assert change[budget].median() < change[~refs["churner"]].median() - 0.1
    late = invoices.assign(days_late=(invoices["paid_at"] - invoices["due_at"]).dt.days)
    late_90 = _window_counts(late.dropna(subset=["days_late"]), "due_at", refs, 90, "days_late")
    n_90 = _window_counts(late.dropna(subset=["days_late"]), "due_at", refs, 90)
    mean_late = late_90 / n_90.where(n_90 > 0)
    assert mean_late[budget].mean() > mean_late[~refs["churner"]].mean() + 5


def test_key_contact_churners_lose_a_sponsor_or_decision_maker(
    firm: tuple[DemoSummary, Tables], refs: pd.DataFrame
) -> None:
    _, tables = firm
    contacts = tables.contacts
    key = contacts[
        (contacts["side"] == "client") & contacts["role"].isin(["sponsor", "decision_maker"])
    ].dropna(subset=["ended_at"])
    left = _window_counts(key, "ended_at", refs, 200) > 0
    kcl = refs["reason"] == "key_contact_left"
    assert left[kcl].mean() > 0.6
    assert left[kcl].mean() > 3 * left[~refs["churner"]].mean()


def test_nothing_happens_after_churn_but_a_final_invoice(firm: tuple[DemoSummary, Tables]) -> None:
    _, tables = firm
    assert not _after_churn(tables, "interactions", "occurred_at").any()
    billed_after = _after_churn(tables, "invoices", "issued_at", strictly=True)
    assert billed_after.any()
    assert billed_after.groupby(tables.invoices["account_id"]).sum().max() <= 1


def test_some_churners_stay_quiet_and_some_healthy_clients_dip(
    firm: tuple[DemoSummary, Tables], refs: pd.DataFrame
) -> None:
    """No signal is perfect: a share of churners show no decline before leaving and a share of
    staying clients have a quarter as quiet as a typical churner's."""
    _, tables = firm
    held = tables.interactions[tables.interactions["status"] == "held"]
    recent = _window_counts(held, "occurred_at", refs, 90)
    previous = (_window_counts(held, "occurred_at", refs, 360) - recent) / 3
    ratio = recent / previous.clip(lower=1)
    churner = refs["churner"]
    assert (ratio[churner] >= 1).mean() > 0.1
    assert (ratio[~churner] <= ratio[churner].median()).mean() > 0.1
