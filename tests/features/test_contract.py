"""The data contract is defined once; its documentation is generated from it."""

from __future__ import annotations

from pathlib import Path

from features.contract import TABLES, Tables, contract_markdown, empty_table, pandas_dtype

DOC = Path(__file__).resolve().parents[2] / "docs" / "data-contract.md"


def test_documented_contract_is_generated_from_the_code():
    assert DOC.read_text() == contract_markdown(), "run: python -m features.contract > " + str(DOC)


def test_only_accounts_is_required_and_every_other_table_references_it():
    assert [t.name for t in TABLES.values() if t.required] == ["accounts"]
    for table in TABLES.values():
        if table.name != "accounts":
            assert table.references_accounts and "account_id" in table.column_names


def test_empty_tables_carry_the_typed_schema():
    for name, table in TABLES.items():
        frame = empty_table(name)
        assert list(frame.columns) == table.column_names
        for col in table.columns:
            assert str(frame[col.name].dtype) == str(pandas_dtype(col.kind)) or (
                col.kind == "str" and frame[col.name].dtype.name.startswith("string")
            )


def test_tables_report_present_and_missing_and_the_end_of_the_data():
    accounts = empty_table("accounts")
    accounts.loc[0, ["account_id", "started_at"]] = ["A-1", "2024-01-01"]
    accounts["started_at"] = accounts["started_at"].astype("datetime64[ns]")
    surveys = empty_table("surveys")
    surveys.loc[0, ["account_id", "answered_at", "score"]] = ["A-1", "2024-06-30", 9.0]
    surveys["answered_at"] = surveys["answered_at"].astype("datetime64[ns]")
    tables = Tables(accounts=accounts, surveys=surveys)
    assert tables.present == ["accounts", "surveys"]
    assert "invoices" in tables.missing and "accounts" not in tables.missing
    assert str(tables.data_end().date()) == "2024-06-30"


def test_the_end_of_the_data_ignores_dates_planned_in_the_future():
    accounts = empty_table("accounts")
    accounts.loc[0, ["account_id", "started_at"]] = ["A-1", "2024-01-01"]
    accounts["started_at"] = accounts["started_at"].astype("datetime64[ns]")
    invoices = empty_table("invoices")
    invoices.loc[0, ["account_id", "invoice_id", "issued_at", "due_at"]] = [
        "A-1",
        "I-1",
        "2024-03-31",
        "2024-05-30",
    ]
    for col in ("issued_at", "due_at"):
        invoices[col] = invoices[col].astype("datetime64[ns]")
    tables = Tables(accounts=accounts, invoices=invoices)
    # the invoice was issued on the last observed day; its due date lies after the extract
    assert str(tables.data_end().date()) == "2024-03-31"
