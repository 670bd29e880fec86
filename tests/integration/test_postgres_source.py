"""PostgreSQL as a source (integration, real server): the same data loaded from a CSV folder, a
Parquet folder, a DuckDB file and a PostgreSQL schema gives identical tables and rejects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.errors import ChurnError, DataContractError
from churn.settings import TableMapping
from features.contract import TABLE_NAMES, Tables
from features.sources import read_source, write_source
from features.validate import validate_tables
from tests.support.tables import make_tables, typed_frame

pytestmark = pytest.mark.postgres


def generated_tables(accounts: int = 120, seed: int = 1, years: int = 2) -> Tables:
    """Every contract table for ``accounts`` accounts over ``years`` years, with nulls in the
    optional columns, plus three well-typed rows that break row rules: an interaction of an
    unknown account, a repeated invoice and a survey score above 10."""
    rng = np.random.default_rng(seed)
    end = pd.Timestamp("2025-01-01")
    start = end - pd.DateOffset(years=years)
    span = (end - start).days

    def pick(values, n, null_share=0.0):
        out = rng.choice(np.array(values, dtype=object), n)
        out[rng.random(n) < null_share] = None
        return out

    def days(n, lo=0, hi=span):
        return pd.to_timedelta(rng.integers(lo, hi, n), unit="D")

    ids = np.array([f"A-{i:04d}" for i in range(accounts)])
    acc = pd.DataFrame(
        {
            "account_id": ids,
            "name": [f"Client {i}" for i in range(accounts)],
            "account_manager": pick([f"am-{k}" for k in range(5)], accounts),
            "industry": pick(["legal", "consulting", "accounting"], accounts, 0.2),
            "started_at": start - days(accounts, 0, 5 * 365),
            "renewal_at": (end + days(accounts, 0, 365)).where(rng.random(accounts) < 0.7),
            "contract_value": np.where(
                rng.random(accounts) < 0.8, rng.uniform(1e4, 5e5, accounts).round(2), np.nan
            ),
        }
    )

    def per_account(k):
        n = accounts * k
        return n, rng.choice(ids, n)

    n, who = per_account(1)
    churn = pd.DataFrame({"account_id": who, "churned_at": start + days(n)}).drop_duplicates(
        "account_id"
    )
    churn = churn[rng.random(len(churn)) < 0.15].assign(
        reason=lambda f: pick(["competitor", "budget_cut", "other"], len(f), 0.3)
    )

    n, who = per_account(20)
    occurred = start + days(n) + pd.to_timedelta(rng.integers(0, 86400, n), unit="s")
    interactions = pd.DataFrame(
        {
            "account_id": who,
            "occurred_at": occurred,
            "channel": pick(["meeting", "call", "email", "business_review", "check_in"], n),
            "status": pick(["held", "cancelled", "rescheduled", "no_show"], n),
            "initiated_by": pick(["client", "firm"], n, 0.3),
            "client_seniority": pick(["junior", "middle", "senior", "executive"], n, 0.3),
            "response_hours": np.where(
                rng.random(n) < 0.7, rng.exponential(12, n).round(1), np.nan
            ),
            "sentiment": np.where(rng.random(n) < 0.6, rng.uniform(-1, 1, n), np.nan),
            "competitor_mentioned": pick([True, False], n, 0.4),
        }
    )

    n, who = per_account(3)
    began = start + days(n)
    contacts = pd.DataFrame(
        {
            "account_id": who,
            "contact_id": [f"C-{i}" for i in range(n)],
            "side": pick(["client", "firm"], n),
            "seniority": pick(["junior", "middle", "senior", "executive"], n),
            "role": pick(["sponsor", "decision_maker", "procurement", "technical"], n, 0.2),
            "started_at": began,
            "ended_at": (began + days(n, 30, 400)).where(rng.random(n) < 0.3),
        }
    )

    n, who = per_account(8)
    issued = start + days(n)
    invoices = pd.DataFrame(
        {
            "account_id": who,
            "invoice_id": [f"I-{i}" for i in range(n)],
            "issued_at": issued,
            "due_at": issued + pd.Timedelta(days=30),
            "paid_at": (issued + days(n, 5, 90)).where(rng.random(n) < 0.85),
            "amount": rng.uniform(500, 50_000, n).round(2),
            "discount": np.where(rng.random(n) < 0.2, rng.uniform(0, 500, n).round(2), np.nan),
        }
    )

    n, who = per_account(2)
    began = start + days(n)
    projects = pd.DataFrame(
        {
            "account_id": who,
            "project_id": [f"P-{i}" for i in range(n)],
            "started_at": began,
            "planned_end_at": began + days(n, 30, 200),
            "ended_at": (began + days(n, 20, 300)).where(rng.random(n) < 0.6),
            "budget": rng.uniform(1e4, 2e5, n).round(0),
            "actual_cost": np.where(
                rng.random(n) < 0.6, rng.uniform(1e4, 2.5e5, n).round(0), np.nan
            ),
            "kind": pick(["strategic", "tactical"], n, 0.1),
        }
    )

    n, who = per_account(2)
    surveys = pd.DataFrame(
        {
            "account_id": who,
            "answered_at": start + days(n),
            "score": rng.integers(0, 11, n).astype(float),
            "kind": pick(["nps", "csat"], n, 0.2),
        }
    )

    n, who = per_account(1)
    opened = start + days(n) + pd.to_timedelta(rng.integers(0, 86400, n), unit="s")
    tickets = pd.DataFrame(
        {
            "account_id": who,
            "opened_at": opened,
            "closed_at": (opened + pd.to_timedelta(rng.integers(1, 500, n), unit="h")).where(
                rng.random(n) < 0.8
            ),
            "severity": pick(["low", "medium", "high", "critical"], n),
            "is_complaint": pick([True, False], n, 0.2),
        }
    )

    # Rows that keep their types but break row rules: each kind of source must reject them.
    interactions.loc[len(interactions)] = interactions.iloc[0].to_dict() | {"account_id": "A-NONE"}
    invoices.loc[len(invoices)] = invoices.iloc[0].to_dict()  # same whichever copy is kept
    surveys.loc[len(surveys)] = surveys.iloc[0].to_dict() | {"score": 11.0}

    frames = {
        "churn_events": churn,
        "interactions": interactions,
        "contacts": contacts,
        "invoices": invoices,
        "projects": projects,
        "surveys": surveys,
        "tickets": tickets,
    }
    return make_tables(typed_frame("accounts", acc), **frames)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns), na_position="first").reset_index(drop=True)


def _reject_set(rejects: pd.DataFrame) -> set[tuple[str, str, str, str]]:
    return set(rejects[["table", "column", "value", "reason"]].itertuples(index=False, name=None))


def test_csv_parquet_duckdb_and_postgresql_load_the_same_data_identically(tmp_path, pg_schema_url):
    tables = generated_tables(accounts=120, seed=1, years=2)
    locations = {
        "csv": tmp_path / "csv",
        "parquet": tmp_path / "parquet",
        "duckdb": tmp_path / "data.duckdb",
        "postgresql": pg_schema_url,
    }
    for kind, location in locations.items():
        write_source(tables, location, fmt="parquet" if kind == "parquet" else "csv")

    results = {
        kind: validate_tables(read_source(location), reject_threshold=0.01)
        for kind, location in locations.items()
    }

    folder = results["csv"]
    assert _reject_set(folder.rejects) == {
        ("interactions", "account_id", "A-NONE", "account_id not in accounts"),
        (
            "invoices",
            "invoice_id",
            "I-0",
            "duplicate key (invoice_id); the first occurrence was kept",
        ),
        ("surveys", "score", "11.0", "above the maximum 10"),
    }
    assert folder.tables.present == list(TABLE_NAMES)
    for kind, result in results.items():
        assert result.tables.present == folder.tables.present, kind
        for name, frame in folder.tables:
            pd.testing.assert_frame_equal(
                _sorted(result.tables.get(name)),
                _sorted(frame),
                check_exact=True,
                obj=f"{kind} {name}",
            )
        pd.testing.assert_frame_equal(
            result.summary.drop(columns="ignored_columns"),
            folder.summary.drop(columns="ignored_columns"),
        )
        assert _reject_set(result.rejects) == _reject_set(folder.rejects), kind


def test_tables_written_through_a_schema_url_stay_in_that_schema(
    postgres_url, pg_schema_url, pg_schema
):
    import sqlalchemy as sa

    write_source(make_tables(["A-1"]), pg_schema_url)
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        where = (
            conn.execute(
                sa.text(
                    "select table_schema from information_schema.tables "
                    "where table_name = 'accounts'"
                )
            )
            .scalars()
            .all()
        )
    engine.dispose()
    assert pg_schema in where and "public" not in where
    assert read_source(pg_schema_url).frames["accounts"]["account_id"].tolist() == ["A-1"]


def test_a_mapped_postgresql_table_loads_like_the_contract_one(pg_schema_url):
    tables = make_tables(["A-1", "A-2"])
    own = tables.accounts.rename(columns={"account_id": "ClientID", "account_manager": "Owner"})
    write_source({"CRM_Clients": own}, pg_schema_url)
    mapping = {
        "accounts": TableMapping(
            table="CRM_Clients", columns={"ClientID": "account_id", "Owner": "account_manager"}
        )
    }
    result = validate_tables(read_source(pg_schema_url, mapping), reject_threshold=0.0)
    pd.testing.assert_frame_equal(result.tables.accounts, tables.accounts)


def test_a_postgresql_table_lacking_a_required_column_stops_with_one_line(pg_schema_url):
    write_source(
        {
            "accounts": make_tables(["A-1"]).accounts,
            "invoices": pd.DataFrame({"account_id": ["A-1"], "invoice_id": ["I-1"]}),
        },
        pg_schema_url,
    )
    with pytest.raises(DataContractError) as info:
        validate_tables(read_source(pg_schema_url))
    assert str(info.value) == "table 'invoices' lacks required column 'issued_at' (expected date)"


def test_a_database_that_does_not_exist_is_named_without_the_password(postgres_url):
    from sqlalchemy import make_url

    url = (
        make_url(postgres_url)
        .set(password="s3cret", database="no_such_database_here")
        .render_as_string(hide_password=False)
    )
    with pytest.raises(ChurnError, match="cannot reach database") as info:
        read_source(url)
    assert "s3cret" not in str(info.value) and "no_such_database_here" in str(info.value)


def test_writing_into_a_schema_that_does_not_exist_is_a_clear_error(postgres_url):
    url = f"{postgres_url}?options=-csearch_path%3Dno_such_schema_here"
    with pytest.raises(ChurnError, match="cannot write tables to .*no schema has been selected"):
        write_source(make_tables(["A-1"]), url)
