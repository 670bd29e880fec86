"""Sources: a folder of CSV or Parquet files and a DuckDB file give the same typed tables; the
configured mapping renames a firm's own tables and columns; unreadable sources stop clearly."""

from __future__ import annotations

import pandas as pd
import pytest

from churn.errors import ChurnError, DataContractError
from churn.settings import TableMapping
from features.sources import mask_url, read_source, source_kind, sqlalchemy_url, write_source
from features.validate import validate_tables
from tests.support.tables import make_tables


def sample_tables():
    """Every table and every column kind, with nulls, and text that CSV must quote."""
    return make_tables(
        accounts=[
            {
                "account_id": "A-1",
                # A line break in a name is a reject (a control character), so not here.
                "name": 'Smith, Jones & "Partners", LLP',
                "industry": "legal",
                "renewal_at": "2025-03-01",
                "contract_value": 120000.5,
            },
            {"account_id": "007", "name": "Café Ørsted", "started_at": "2019-06-30"},
        ],
        churn_events=[{"account_id": "007", "churned_at": "2024-05-01", "reason": "competitor"}],
        interactions=[
            {
                "account_id": "A-1",
                "occurred_at": "2024-01-02 09:30:15",
                "channel": "business_review",
                "status": "held",
                "initiated_by": "client",
                "client_seniority": "executive",
                "response_hours": 1.25,
                "sentiment": -0.3333333333333333,
                "competitor_mentioned": True,
            },
            {
                "account_id": "007",
                "occurred_at": "2024-02-01 00:00:00",
                "channel": "call",
                "status": "no_show",
                "competitor_mentioned": False,
            },
            {
                "account_id": "007",
                "occurred_at": "2024-02-03",
                "channel": "email",
                "status": "held",
            },
        ],
        contacts=[
            {
                "account_id": "A-1",
                "contact_id": "C-1",
                "side": "client",
                "seniority": "senior",
                "role": "sponsor",
                "started_at": "2021-01-01",
                "ended_at": "2023-12-31",
            }
        ],
        invoices=[
            {
                "account_id": "A-1",
                "invoice_id": "I-1",
                "issued_at": "2024-01-01",
                "due_at": "2024-01-31",
                "paid_at": "2024-02-15",
                "amount": 1e6 / 3,
                "discount": 0.0,
            },
            {
                "account_id": "A-1",
                "invoice_id": "I-2",
                "issued_at": "2024-02-01",
                "due_at": "2024-03-02",
                "amount": 900.0,
            },
        ],
        projects=[
            {
                "account_id": "A-1",
                "project_id": "P-1",
                "started_at": "2023-05-01",
                "planned_end_at": "2023-09-30",
                "budget": 50000.0,
                "kind": "strategic",
            }
        ],
        surveys=[{"account_id": "A-1", "answered_at": "2024-03-01", "score": 9.0, "kind": "nps"}],
        tickets=[
            {
                "account_id": "007",
                "opened_at": "2024-01-05 12:00:00",
                "closed_at": "2024-01-06 08:15:00",
                "severity": "high",
                "is_complaint": True,
            }
        ],
    )


def assert_same_tables(left, right) -> None:
    assert left.present == right.present
    for name, frame in left:
        pd.testing.assert_frame_equal(frame, right.get(name), check_exact=True, obj=name)


@pytest.mark.parametrize(
    ("target", "fmt"),
    [("folder", "csv"), ("folder", "parquet"), ("data.duckdb", "csv")],
    ids=["csv", "parquet", "duckdb"],
)
def test_each_source_kind_round_trips_the_typed_tables_exactly(tmp_path, target, fmt):
    tables = sample_tables()
    location = tmp_path / target
    write_source(tables, location, fmt=fmt)

    result = validate_tables(read_source(location), reject_threshold=0.0)

    assert result.rejects.empty
    assert_same_tables(tables, result.tables)


def test_csv_cells_reach_validation_as_written_not_coerced(tmp_path):
    (tmp_path / "accounts.csv").write_text(
        "account_id,name,account_manager,started_at,contract_value\n"
        "007,X,am,2020-01-01,1e3\n"
        "0x1F,Y,am,2020-01-01,\n"
    )
    raw = read_source(tmp_path)
    accounts = raw.frames["accounts"]
    assert accounts["account_id"].tolist() == ["007", "0x1F"]
    assert accounts["contract_value"].tolist() == ["1e3", ""]
    assert all(pd.api.types.is_string_dtype(accounts[c]) for c in accounts)


def test_a_semicolon_separated_export_with_byte_order_mark_is_read(tmp_path):
    content = "account_id;name;account_manager;started_at\nA-1;Acme, Inc;am;2020-01-01\n"
    (tmp_path / "accounts.csv").write_bytes(b"\xef\xbb\xbf" + content.encode())
    accounts = validate_tables(read_source(tmp_path)).tables.accounts
    assert accounts["account_id"].tolist() == ["A-1"]
    assert accounts["name"].tolist() == ["Acme, Inc"]


def test_mapping_renames_a_firms_own_table_and_column_names(tmp_path):
    tables = sample_tables()
    own = {
        "crm_clients": tables.accounts.rename(
            columns={"account_id": "ClientID", "account_manager": "Owner", "name": "Client"}
        ),
        "activity": tables.interactions.rename(columns={"occurred_at": "When"}),
    }
    mapping = {
        "accounts": TableMapping(
            table="crm_clients",
            columns={"ClientID": "account_id", "Owner": "account_manager", "Client": "name"},
        ),
        "interactions": TableMapping(table="activity", columns={"When": "occurred_at"}),
    }
    for location in (tmp_path / "folder", tmp_path / "own.duckdb"):
        write_source(own, location)
        raw = read_source(location, mapping)
        assert raw.origins["accounts"] in ("crm_clients.csv", "crm_clients")
        result = validate_tables(raw, reject_threshold=0.0)
        expected = make_tables(tables.accounts, interactions=tables.interactions)
        assert_same_tables(expected, result.tables)


def test_table_names_match_ignoring_case(tmp_path):
    write_source({"Accounts": sample_tables().accounts}, tmp_path)
    assert read_source(tmp_path).origins == {"accounts": "Accounts.csv"}


def test_a_mapped_table_the_source_lacks_stops_the_run_instead_of_dropping_a_family(tmp_path):
    write_source(sample_tables(), tmp_path)
    with pytest.raises(DataContractError, match="mapping.surveys.table names 'nps_answers'"):
        read_source(tmp_path, {"surveys": TableMapping(table="nps_answers")})


def test_a_mapping_onto_an_unknown_contract_column_is_refused(tmp_path):
    write_source(sample_tables(), tmp_path)
    mapping = {"interactions": TableMapping(columns={"When": "occured_at"})}
    with pytest.raises(DataContractError, match="'occured_at', which is not a column"):
        read_source(tmp_path, mapping)


def test_two_columns_mapped_to_one_name_are_refused(tmp_path):
    tables = sample_tables()
    write_source({"accounts": tables.accounts.assign(ClientID="x")}, tmp_path)
    mapping = {"accounts": TableMapping(columns={"ClientID": "account_id"})}
    with pytest.raises(DataContractError, match="both give column 'account_id'"):
        read_source(tmp_path, mapping)


def test_a_source_without_accounts_is_a_contract_error(tmp_path):
    write_source({"interactions": sample_tables().interactions}, tmp_path)
    with pytest.raises(DataContractError, match="no 'accounts' table"):
        read_source(tmp_path)


def test_missing_tables_are_listed_not_invented(tmp_path):
    write_source({"accounts": sample_tables().accounts}, tmp_path, fmt="parquet")
    raw = read_source(tmp_path)
    assert list(raw.frames) == ["accounts"]
    assert "surveys" in raw.missing and "accounts" not in raw.missing


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: (p / "x.duckdb").write_text("not a database"), "cannot open"),
    ],
    ids=["no-folder", "not-duckdb"],
)
def test_a_source_that_is_not_there_or_not_a_database_is_named(tmp_path, setup, message):
    setup(tmp_path)
    target = tmp_path / "missing" if message == "does not exist" else tmp_path / "x.duckdb"
    with pytest.raises(DataContractError, match=message):
        read_source(target)


def test_one_table_in_two_formats_is_ambiguous(tmp_path):
    write_source({"accounts": sample_tables().accounts}, tmp_path, fmt="csv")
    (tmp_path / "ACCOUNTS.parquet").write_bytes(b"")
    with pytest.raises(DataContractError, match="table 'accounts' is in .* twice"):
        read_source(tmp_path)


def test_write_source_replaces_a_table_written_in_the_other_format(tmp_path):
    write_source({"accounts": sample_tables().accounts}, tmp_path, fmt="csv")
    write_source({"accounts": sample_tables().accounts}, tmp_path, fmt="parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accounts.parquet"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"accounts.csv is empty \(no header line\)"),
        (
            b"account_id,name,account_manager,started_at\nA-1,X,am,2020-01-01\nA-2,Y,Z,am,2020\n",
            r"table 'accounts': line 3 of accounts.csv has 5 fields where the header has 4",
        ),
        (b"account_id,name\nA-1,Caf\xe9\n", r"accounts.csv is not UTF-8 text"),
        (b"account_id,name,name\nA-1,X,Y\n", r"column 'name' appears more than once"),
    ],
    ids=["empty", "ragged", "latin-1", "duplicate-header"],
)
def test_an_unreadable_csv_stops_with_the_table_and_file_named(tmp_path, content, message):
    (tmp_path / "accounts.csv").write_bytes(content)
    with pytest.raises(DataContractError, match=message) as info:
        read_source(tmp_path)
    assert "\n" not in str(info.value)
    assert "Caf" not in str(info.value) and "Y,Z" not in str(info.value)  # no row content


def test_a_corrupt_parquet_file_names_table_and_file(tmp_path):
    write_source({"accounts": sample_tables().accounts}, tmp_path)
    (tmp_path / "surveys.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(DataContractError, match=r"table 'surveys': cannot read .*surveys.parquet"):
        read_source(tmp_path)


def test_source_kinds_and_urls():
    assert source_kind("data/demo") == "folder"
    assert source_kind("data/firm.DuckDB") == "duckdb"
    assert source_kind("postgresql://u@h/db") == "sql"
    assert sqlalchemy_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert sqlalchemy_url("sqlite:///x.db") == "sqlite:///x.db"
    assert mask_url("postgresql://u:s3cr%40t@h:5432/db?x=1") == "postgresql://u:***@h:5432/db?x=1"
    assert mask_url("postgresql://u:p@ss@h/db") == "postgresql://u:***@h/db"
    assert mask_url("mssql://h/db?user=u&Password=x1") == "mssql://h/db?user=u&Password=***"


def test_an_unreachable_database_is_named_without_its_password():
    with pytest.raises(ChurnError, match="cannot reach database") as info:
        read_source("postgresql://churn:hunter2@127.0.0.1:1/crm")
    assert "hunter2" not in str(info.value)
    assert "postgresql://churn:***@127.0.0.1:1/crm" in str(info.value)


def test_a_sqlite_url_works_like_any_sql_source(tmp_path):
    tables = sample_tables()
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    write_source(tables, url)
    result = validate_tables(read_source(url), reject_threshold=0.0)
    assert_same_tables(tables, result.tables)
