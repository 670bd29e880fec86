"""The snapshot builder: as_of grid, the agreed columns, absent tables, per-partition results,
the 30-day health history and the output files."""

from __future__ import annotations

import logging
from datetime import date

import numpy as np
import pandas as pd
import pytest

from churn.errors import ChurnError, ConfigError
from churn.settings import SnapshotSettings
from features.catalog import CATALOG, FEATURES
from features.contract import Tables
from features.health import ESCALATION_COLUMNS, HEALTH_COLUMNS
from features.snapshots import (
    IDENTITY,
    INVOICE_EVIDENCE,
    LABELS,
    absent_families,
    as_of_grid,
    build_features,
    build_snapshots,
    observed_end,
    output_format,
    write_frame,
)
from tests.support.signal_tables import make_tables, random_tables

CFG = SnapshotSettings()


@pytest.fixture(scope="module")
def tables() -> Tables:
    return random_tables(20, seed=11)


@pytest.fixture(scope="module")
def monthly(tables: Tables) -> pd.DataFrame:
    return build_snapshots(tables, as_of_grid(tables, CFG), CFG)


def test_grid_is_month_starts_from_six_months_of_history_to_the_data_end():
    tables = make_tables(
        surveys=[
            {"account_id": "A", "answered_at": "2021-03-15", "score": 7.0},
            {"account_id": "A", "answered_at": "2022-02-10", "score": 7.0},
        ],
        accounts=[{"account_id": "A", "started_at": "2015-01-01", "renewal_at": "2030-01-01"}],
    )
    grid = as_of_grid(tables, CFG.model_copy(update={"history_months": 6}))
    assert grid[0] == date(2021, 10, 1) and grid[-1] == date(2022, 2, 1)
    assert len(grid) == 5
    # a renewal planned for 2030 is no observation: the data ends with the last record
    assert observed_end(tables) == pd.Timestamp("2022-02-10")
    weekly = as_of_grid(tables, SnapshotSettings(frequency="W-MON"), start=date(2022, 1, 1))
    assert weekly[0] == date(2022, 1, 3) and all(d.weekday() == 0 for d in weekly)
    with pytest.raises(ConfigError, match="frequency"):
        as_of_grid(tables, SnapshotSettings(frequency="fortnightly"))


def test_snapshot_has_exactly_the_agreed_columns(monthly: pd.DataFrame):
    expected = [
        *IDENTITY,
        *FEATURES,
        *INVOICE_EVIDENCE,
        *LABELS,
        *HEALTH_COLUMNS,
        "health_score_30d_ago",
        *ESCALATION_COLUMNS,
    ]
    assert list(monthly.columns) == expected
    assert not monthly.duplicated(["account_id", "as_of"]).any()
    assert (monthly["as_of"] == monthly["as_of"].dt.normalize()).all()
    assert monthly["health_score"].between(0, 100).all()
    assert monthly["revenue_segment"].isin(["A", "B", "C"]).all()


def test_features_only_frame_leaves_out_the_scores(tables: Tables):
    frame = build_snapshots(tables, [date(2022, 1, 1)], CFG, with_health=False)
    assert list(frame.columns) == [*IDENTITY, *FEATURES, *LABELS]


def test_missing_tables_give_absent_features_not_zeros(caplog):
    tables = make_tables(
        accounts=[
            {
                "account_id": "A",
                "started_at": "2020-01-01",
                "contract_value": 10.0,
                "renewal_at": "2021-03-01",
            }
        ],
        churn_events=[],
    )
    with caplog.at_level(logging.WARNING, logger="features.snapshots"):
        got = build_snapshots(tables, [date(2024, 1, 1)], CFG).iloc[0]
    for feature in CATALOG:
        if set(feature.tables) <= {"accounts"}:
            assert not pd.isna(got[feature.name]), feature.name
        else:
            assert pd.isna(got[feature.name]), feature.name
    assert 0 <= got.health_score <= 100
    assert absent_families(tables) == {
        "behavioural": ["interactions", "projects"],
        "relationship": ["interactions", "contacts"],
        "financial": ["invoices"],
        "satisfaction": ["surveys", "tickets"],
        "purchase": ["invoices"],
    }
    missing = [r.getMessage() for r in caplog.records if "is missing" in r.getMessage()]
    assert len(missing) == 6  # once per missing table
    assert any(m.startswith("table invoices is missing") and "overdue_days" in m for m in missing)


@pytest.mark.parametrize("mode", ["events", "inactivity"])
def test_subset_of_accounts_gives_the_same_rows(tables: Tables, mode: str):
    dates = pd.date_range("2020-06-01", "2022-12-01", freq="MS").date.tolist()
    end = observed_end(tables)
    cfg = SnapshotSettings(label_mode=mode)
    whole = build_features(tables, dates, cfg, data_end=end)
    keep = set(tables.accounts["account_id"].iloc[::3])
    part = Tables(
        **{
            name: (None if frame is None else frame[frame["account_id"].isin(keep)])
            for name, frame in ((n, tables.get(n)) for n in tables.present + tables.missing)
        }
    )
    subset = build_features(part, dates, cfg, data_end=end)
    expected = whole[whole["account_id"].isin(keep)].reset_index(drop=True)
    assert len(subset) > 0
    pd.testing.assert_frame_equal(subset, expected)


def test_health_30d_ago_is_the_score_of_the_same_account_30_days_earlier(
    tables: Tables, monthly: pd.DataFrame
):
    as_of = pd.Timestamp("2022-03-01")
    earlier = build_snapshots(tables, [as_of - pd.Timedelta(days=30)], CFG)
    now = monthly[monthly["as_of"] == as_of].set_index("account_id")
    before = earlier.set_index("account_id")["health_score"]
    both = now.index.intersection(before.index)
    assert len(both) > 0
    assert (now.loc[both, "health_score_30d_ago"] == before.loc[both]).all()
    assert now.loc[now.index.difference(before.index), "health_score_30d_ago"].isna().all()
    drop = now["health_score_30d_ago"] - now["health_score"]
    assert np.allclose(now["health_drop_30d"], drop, equal_nan=True)
    assert (now["esc_health_drop"] == (now["health_drop_30d"] >= 15)).all()
    # a snapshot knows no scoring before it: an invoice that became 30+ days late within the
    # rule's lookback (30 days) fires
    late = now["late_invoice_days_late"]
    assert (now["esc_invoice_30d_late"] == ((late >= 30) & (late < 60))).all()


def test_new_account_has_no_score_30_days_ago():
    tables = make_tables(accounts=[{"account_id": "A", "started_at": "2023-12-15"}])
    got = build_snapshots(tables, [date(2024, 1, 1)], CFG).iloc[0]
    assert np.isnan(got.health_score_30d_ago) and not got.esc_health_drop


def test_no_dates_or_no_active_accounts_give_an_empty_frame_with_the_columns(tables: Tables):
    empty = build_snapshots(tables, [], CFG)
    full = build_snapshots(tables, [date(2022, 1, 1)], CFG)
    assert empty.empty and list(empty.columns) == list(full.columns)
    before_anyone = build_snapshots(tables, [date(1990, 1, 1)], CFG)
    assert before_anyone.empty and list(before_anyone.columns) == list(full.columns)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_write_frame_by_extension(tmp_path, monthly: pd.DataFrame, suffix: str):
    path = tmp_path / "out" / f"snapshot{suffix}"
    write_frame(monthly, path)
    back = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    assert list(back.columns) == list(monthly.columns) and len(back) == len(monthly)
    if suffix == ".parquet":
        pd.testing.assert_frame_equal(back, monthly, check_dtype=False)


def test_write_frame_refuses_unknown_extensions(tmp_path, monthly: pd.DataFrame):
    with pytest.raises(ChurnError, match=r"\.xlsx"):
        write_frame(monthly, tmp_path / "snapshot.xlsx")
    with pytest.raises(ChurnError, match="none"):
        output_format(tmp_path / "snapshot")
    assert output_format(tmp_path / "s.PARQUET") == "parquet"


def test_bad_as_of_is_a_clear_error(tables: Tables):
    with pytest.raises(ChurnError, match="not a date"):
        build_snapshots(tables, ["someday"], CFG)  # type: ignore[list-item]


def test_optional_columns_the_source_lacks_give_absent_features():
    tickets = [{"account_id": "A", "opened_at": "2023-12-01 10:00", "severity": "low"}]
    recorded = make_tables(tickets=tickets)
    lacking = make_tables(tickets=tickets)
    lacking.meta["absent_columns"] = {"tickets": ["is_complaint", "closed_at"]}
    got = build_snapshots(recorded, [date(2024, 1, 1)], CFG, with_health=False).iloc[0]
    assert got.complaints_90d == 0  # recorded but empty on this ticket: not a complaint
    got = build_snapshots(lacking, [date(2024, 1, 1)], CFG, with_health=False).iloc[0]
    assert np.isnan(got.complaints_90d)
    assert got.tickets_90d == 1 and got.open_tickets == 1
