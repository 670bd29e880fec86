"""The data profile of `churn validate`: churn per account-year overall and by lifecycle stage,
reason mix, revenue concentration, and what it says when a table is missing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from features.contract import Tables
from features.demo import generate_demo
from features.profile import profile, render_profile
from tests.support.demo_read import read_demo
from tests.support.tables import make_tables

YEAR = 365.25


def _text(tables: Tables) -> str:
    console = Console(record=True, width=160)
    console.print(render_profile(tables))
    return console.export_text()


def _firm(**overrides: object) -> Tables:
    """Five clients observed through 2023 (interactions on its first and last day):
    A-2 is new and leaves after 182 days, A-3 is established and leaves after 273 days,
    A-1, A-4 and A-5 are long-term clients who stay."""
    tables: dict[str, object] = {
        "interactions": [
            {"account_id": "A-1", "occurred_at": "2023-01-01 09:00:00", "channel": "call",
             "status": "held"},
            {"account_id": "A-1", "occurred_at": "2023-12-31 09:00:00", "channel": "call",
             "status": "held"},
        ],
        "churn_events": [
            {"account_id": "A-2", "churned_at": "2023-07-02", "reason": "service_quality"},
            {"account_id": "A-3", "churned_at": "2023-10-01"},
        ],
        "invoices": [
            {"account_id": a, "invoice_id": f"I-{a}", "issued_at": "2023-03-01",
             "due_at": "2023-03-31", "amount": amount}
            for a, amount in (("A-1", 800.0), ("A-2", 100.0), ("A-3", 50.0), ("A-4", 30.0),
                              ("A-5", 20.0))
        ],
    }  # fmt: skip
    tables.update(overrides)
    accounts = [
        {"account_id": "A-1", "started_at": "2015-01-01", "contract_value": 10.0},
        {"account_id": "A-2", "started_at": "2023-01-01", "contract_value": 20.0},
        {"account_id": "A-3", "started_at": "2021-07-02", "contract_value": 30.0},
        {"account_id": "A-4", "started_at": "2015-01-01", "contract_value": 40.0},
        {"account_id": "A-5", "started_at": "2015-01-01", "contract_value": 100.0},
    ]
    return make_tables(accounts, **{k: v for k, v in tables.items() if v is not None})


def test_churn_rates_are_churns_per_account_year_in_each_stage() -> None:
    p = profile(_firm())
    assert p.period_years == pytest.approx(365 / YEAR)
    stages = {s.stage: s for s in p.by_stage}
    assert stages["new"].churned == 1
    assert stages["new"].account_years == pytest.approx(182 / YEAR)
    assert stages["new"].annual_rate == pytest.approx(YEAR / 182)
    assert stages["established"].churned == 1
    assert stages["established"].annual_rate == pytest.approx(YEAR / 273)
    assert stages["long_term"].churned == 0
    assert stages["long_term"].account_years == pytest.approx(3 * 365 / YEAR)
    assert p.annual_churn_rate == pytest.approx(2 / ((182 + 273 + 3 * 365) / YEAR))


def test_an_account_crossing_a_stage_boundary_splits_its_time() -> None:
    tables = _firm(churn_events=[])
    tables.accounts.loc[0, "started_at"] = pd.Timestamp("2022-07-01")
    stages = {s.stage: s for s in profile(tables).by_stage}
    # A-1 started 2022-07-01: new until 365.25 days later, established for the rest of 2023;
    # A-2 is new and A-3 established all year
    assert stages["new"].account_years == pytest.approx((365.25 - 184 + 365) / YEAR)
    assert stages["established"].account_years == pytest.approx((365 - 181.25 + 365) / YEAR)


def test_reason_mix_counts_an_empty_reason_as_unknown() -> None:
    p = profile(_firm())
    assert p.reason_mix == {"service_quality": 0.5, "unknown": 0.5}


def test_revenue_share_of_the_top_fifth_uses_the_trailing_twelve_months() -> None:
    invoices = [
        {"account_id": a, "invoice_id": f"I-{a}", "issued_at": day, "due_at": day, "amount": x}
        for a, day, x in (
            ("A-5", "2022-06-01", 9000.0),  # more than a year before the last record
            ("A-1", "2023-03-01", 800.0),
            ("A-2", "2023-03-01", 100.0),
            ("A-3", "2023-03-01", 50.0),
            ("A-4", "2023-03-01", 30.0),
            ("A-5", "2023-03-01", 20.0),
        )
    ]
    p = profile(_firm(invoices=invoices))
    assert p.revenue_top20_share == pytest.approx(0.8)
    assert "2023-01-01 to 2023-12-31 (trailing 12 months)" in p.revenue_basis


def test_without_churn_events_it_says_churn_cannot_be_computed() -> None:
    tables = _firm(churn_events=None)
    p = profile(tables)
    assert p.by_stage == [] and p.reason_mix == {}
    assert p.annual_churn_rate != p.annual_churn_rate  # NaN
    assert any("churn_events is missing" in note for note in p.notes)
    assert "churn_events is missing" in _text(tables)


def test_without_invoices_concentration_falls_back_to_contract_value() -> None:
    tables = _firm(invoices=None)
    p = profile(tables)
    assert p.revenue_top20_share == pytest.approx(100 / 200)
    assert "contract_value" in p.revenue_basis
    assert "invoices is missing" in _text(tables)


def test_accounts_alone_still_profile_and_explain_what_is_missing() -> None:
    tables = make_tables(["A-1", "A-2"])
    p = profile(tables)
    assert p.accounts == 2
    assert p.period_start is None
    text = _text(tables)
    assert "no dated records" in text
    assert "2" in text


def test_profile_of_the_demo_data(tmp_path: Path) -> None:
    generate_demo(tmp_path, accounts=120, years=2, seed=5)
    tables = read_demo(tmp_path).tables
    p = profile(tables)
    assert sum(p.reason_mix.values()) == pytest.approx(1.0)
    assert [s.stage for s in p.by_stage] == ["new", "established", "long_term"]
    assert sum(s.churned for s in p.by_stage) == len(tables.churn_events)
    assert 0 < p.annual_churn_rate < 0.4
    assert 0.5 < p.revenue_top20_share < 1
    text = _text(tables)
    for words in ("Churn by lifecycle stage", "Churn reasons", "annual churn rate", "top 20 %"):
        assert words in text
