"""Validation: structural problems stop the run with one line; bad rows go to rejects with their
reason and are counted (loaded + rejected == rows); a reject threshold fails untrustworthy runs."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from churn.errors import ChurnError, DataContractError, RejectThresholdExceeded
from churn.settings import Settings
from features.contract import TABLES, pandas_dtype
from features.sources import RawSource, read_source, write_source
from features.validate import (
    REJECT_COLUMNS,
    load_validated,
    render_summary,
    validate_tables,
)
from tests.support.tables import make_tables

# The console script's entry point (churn_cli.main:main), run as a user would, in a fresh process.
CHURN = [
    sys.executable,
    "-c",
    "import sys; from churn_cli.main import main; sys.argv[0] = 'churn'; main()",
]

ACCOUNTS_CSV = (
    "account_id,name,account_manager,started_at,contract_value\n"
    "A-1,Acme,ann,2020-01-01,1000\n"
    "A-2,Beta,bob,2020-13-01,500\n"  # 1: impossible month
    "A-3,Gamma,bob,2021-02-03,-5\n"  # 2: below the minimum
    "A-1,Acme again,ann,2020-01-01,\n"  # 3: duplicate key
    ",Nobody,ann,2020-01-01,\n"  # 4: no id
    "A-4,Delta,cid,2022-07-01,\n"
)
INVOICES_CSV = (
    "account_id,invoice_id,issued_at,due_at,paid_at,amount\n"
    "A-1,I-1,2024-01-01,2024-01-31,2024-02-10,100\n"
    "A-1,I-2,2024-02-01,2024-03-02,2024-01-15,100\n"  # 1: paid before issued
    "A-9,I-3,2024-02-01,2024-03-02,,100\n"  # 2: unknown account
    "A-2,I-4,2024-02-01,2024-03-02,,100\n"  # 3: account row rejected
    "A-4,I-1,2024-02-01,2024-03-02,,100\n"  # 4: duplicate invoice id
    "A-4,I-5,2024-02-01,2024-03-02,,lots\n"  # 5: not a number
    "A-4,I-6,2024-02-01,2024-03-02,,\n"  # 6: amount required
    "A-4,I-7,2024-02-01,2024-03-02,,250.5\n"
)


def write_csvs(folder: Path, **tables: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        (folder / f"{name}.csv").write_text(text)
    return folder


def test_a_missing_required_column_stops_with_one_line_naming_table_and_column(tmp_path):
    write_csvs(
        tmp_path,
        accounts=ACCOUNTS_CSV,
        interactions="account_id,channel,status\nA-1,call,held\n",
    )
    with pytest.raises(DataContractError) as info:
        validate_tables(read_source(tmp_path))
    assert str(info.value) == (
        "table 'interactions' lacks required column 'occurred_at' (expected timestamp)"
    )
    assert "interactions.csv has columns: account_id, channel, status" in info.value.hint


def test_the_hint_points_at_a_near_miss_or_a_mapping_that_found_nothing(tmp_path):
    write_csvs(tmp_path, accounts=ACCOUNTS_CSV.replace("started_at", "Started_At"))
    with pytest.raises(DataContractError, match="'started_at'") as info:
        validate_tables(read_source(tmp_path))
    assert "has 'Started_At'" in info.value.hint

    from churn.settings import TableMapping

    mapping = {"accounts": TableMapping(columns={"Since": "started_at"})}
    with pytest.raises(DataContractError) as info:
        validate_tables(read_source(tmp_path, mapping))
    assert "mapping.accounts.columns names ['Since']" in info.value.hint


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    env["CHURN_REJECTS_DIR"] = str(tmp_path / "rejects")
    env["COLUMNS"] = "300"  # rich wraps at 80 columns when stderr is not a terminal
    return env


def test_cli_validate_prints_the_one_line_and_no_traceback(tmp_path):
    data = write_csvs(
        tmp_path / "data",
        accounts=ACCOUNTS_CSV,
        interactions="account_id,channel,status\nA-1,call,held\n",
    )
    run = subprocess.run(
        [*CHURN, "validate", "--data", str(data)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(tmp_path),
        timeout=120,
    )
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: table 'interactions' lacks required column 'occurred_at' (expected timestamp)"
    ]
    assert "Traceback" not in run.stderr + run.stdout


def test_bad_rows_go_to_rejects_with_reasons_and_the_counts_add_up(tmp_path):
    data = write_csvs(tmp_path / "data", accounts=ACCOUNTS_CSV, invoices=INVOICES_CSV)
    result = validate_tables(read_source(data), reject_threshold=1.0)

    found = {
        (r.table, r.row, r.column, r.value, r.reason)
        for r in result.rejects.itertuples(index=False)
    }
    assert found == {
        ("accounts", 1, "started_at", "2020-13-01", "not a date (expected YYYY-MM-DD)"),
        ("accounts", 2, "contract_value", "-5", "below the minimum 0"),
        (
            "accounts",
            3,
            "account_id",
            "A-1",
            "duplicate key (account_id); the first occurrence was kept",
        ),
        ("accounts", 4, "account_id", "", "empty (a value is required)"),
        ("invoices", 1, "paid_at", "2024-01-15", "paid_at is before issued_at"),
        ("invoices", 2, "account_id", "A-9", "account_id not in accounts"),
        ("invoices", 3, "account_id", "A-2", "account_id's row in accounts was rejected"),
        (
            "invoices",
            4,
            "invoice_id",
            "I-1",
            "duplicate key (invoice_id); the first occurrence was kept",
        ),
        ("invoices", 5, "amount", "lots", "not a number"),
        ("invoices", 6, "amount", "", "empty (a value is required)"),
    }
    assert list(result.rejects.columns) == list(REJECT_COLUMNS)

    summary = result.summary.set_index("table")
    assert summary.loc["accounts", ["rows", "loaded", "rejected"]].tolist() == [6, 2, 4]
    assert summary.loc["invoices", ["rows", "loaded", "rejected"]].tolist() == [8, 2, 6]
    present = summary[summary["status"] == "present"]
    assert (present["loaded"] + present["rejected"] == present["rows"]).all()
    assert result.tables.accounts["account_id"].tolist() == ["A-1", "A-4"]
    assert result.tables.invoices["invoice_id"].tolist() == ["I-1", "I-7"]
    assert summary.loc["surveys", "status"] == "missing"


def test_a_row_with_several_problems_has_a_line_for_each_and_counts_once(tmp_path):
    data = write_csvs(
        tmp_path,
        accounts=ACCOUNTS_CSV,
        surveys="account_id,answered_at,score,kind\nA-1,someday,11,poll\nA-1,2024-01-01,7,NPS\n",
    )
    result = validate_tables(read_source(data), reject_threshold=1.0)
    surveys = result.rejects[result.rejects["table"] == "surveys"]
    assert surveys["row"].tolist() == [0, 0, 0]
    assert surveys["column"].tolist() == ["answered_at", "score", "kind"]
    assert result.summary.set_index("table").loc["surveys", "rejected"] == 1
    assert result.tables.surveys["kind"].tolist() == ["nps"]


def test_a_broken_first_copy_does_not_take_a_good_duplicate_down(tmp_path):
    data = write_csvs(
        tmp_path,
        accounts="account_id,name,account_manager,started_at\nA-1,X,am,never\nA-1,X,am,2020-01-01\n",
    )
    result = validate_tables(read_source(data), reject_threshold=1.0)
    assert result.rejects["reason"].tolist() == ["not a date (expected YYYY-MM-DD)"]
    assert result.tables.accounts["started_at"].tolist() == [pd.Timestamp("2020-01-01")]


def test_accepted_spellings_are_typed_per_contract(tmp_path):
    data = write_csvs(
        tmp_path,
        accounts="account_id,name,account_manager,started_at,renewal_at,contract_value,notes\n"
        " A-1 ,Acme,ann,2020-01-01 13:45:00,,1e3,x\n"
        "A-2,Beta,bob,2020-02-29,NULL,n/a,y\n",
        interactions="account_id,occurred_at,channel,status,competitor_mentioned,sentiment\n"
        "A-1,2024-01-01T10:00:00+02:00,Meeting,HELD,Yes,-1\n"
        "A-1,2024-01-02 10:00:00,call,held,0,1\n"
        "A-2,2024-01-03,email,held,FALSE,\n"
        "A-2,2024-01-04 23:59:59,check_in,held,t,\n"
        "A-2,2024-01-05 00:00,check_in,held,,NaN\n",
    )
    result = validate_tables(read_source(data), reject_threshold=0.0)
    accounts, interactions = result.tables.accounts, result.tables.interactions
    for name, frame in result.tables:
        assert list(frame.columns) == TABLES[name].column_names
        for col in TABLES[name].columns:
            assert str(frame[col.name].dtype) == pandas_dtype(col.kind), (name, col.name)
    assert accounts["account_id"].tolist() == ["A-1", "A-2"]
    assert accounts["started_at"].tolist() == [
        pd.Timestamp("2020-01-01"),
        pd.Timestamp("2020-02-29"),
    ]
    assert accounts["renewal_at"].isna().all()
    assert accounts["contract_value"].tolist()[0] == 1000.0 and np.isnan(
        accounts["contract_value"][1]
    )
    assert interactions["occurred_at"][0] == pd.Timestamp("2024-01-01 08:00:00")  # to UTC
    assert interactions["channel"][0] == "meeting" and interactions["status"][0] == "held"
    assert interactions["competitor_mentioned"].tolist() == [True, False, False, True, pd.NA]
    assert result.summary.set_index("table").loc["accounts", "ignored_columns"] == "notes"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("31/12/2023", "not a date (expected YYYY-MM-DD)"),
        ("2023", "not a date (expected YYYY-MM-DD)"),
        ("9999-12-31", "outside the supported dates (1678-01-01 to 2262-04-10)"),
    ],
)
def test_ambiguous_partial_and_overflowing_dates_are_rejects_not_guesses(tmp_path, value, reason):
    data = write_csvs(
        tmp_path,
        accounts=f"account_id,name,account_manager,started_at\nA-1,X,am,2020-01-01\nA-2,Y,am,{value}\n",
    )
    result = validate_tables(read_source(data), reject_threshold=1.0)
    assert result.rejects[["row", "column", "value", "reason"]].values.tolist() == [
        [1, "started_at", value, reason]
    ]


def test_native_types_from_parquet_are_checked_too(tmp_path):
    accounts = pd.DataFrame(
        {
            "account_id": [7.0, 8.0, 9.0],  # numeric ids with a gap: read as "7", not "7.0"
            "name": ["X", "Y", "Z"],
            "account_manager": ["am", "am", "am"],
            "started_at": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"]).tz_localize(
                "Europe/Paris"
            ),
            "contract_value": [1.0, np.inf, 3.0],
        }
    )
    write_source({"accounts": accounts}, tmp_path, fmt="parquet")
    result = validate_tables(read_source(tmp_path), reject_threshold=1.0)
    assert result.tables.accounts["account_id"].tolist() == ["7", "9"]
    assert result.tables.accounts["started_at"][0] == pd.Timestamp("2019-12-31")  # UTC date
    assert result.rejects["reason"].tolist() == ["not a finite number"]


def test_rejected_share_above_the_threshold_fails_the_run_naming_table_and_share(tmp_path):
    data = write_csvs(tmp_path / "data", accounts=ACCOUNTS_CSV, invoices=INVOICES_CSV)
    raw = read_source(data)
    with pytest.raises(RejectThresholdExceeded) as info:
        validate_tables(raw)
    message = str(info.value)
    assert "table 'accounts' has 66.67% of its rows rejected (4 of 6)" in message
    assert "table 'invoices' has 75.00% of its rows rejected (6 of 8)" in message
    assert "above the reject threshold of 1.00%" in message
    assert "CHURN_REJECT_THRESHOLD" in info.value.hint

    result = validate_tables(raw, reject_threshold=0.75)
    assert result.summary["rejected"].sum() == 10


def test_a_small_share_of_rejects_passes_the_default_threshold(tmp_path):
    rows = "\n".join(f"A-{i},X,am,2020-01-01" for i in range(200))
    data = write_csvs(
        tmp_path,
        accounts=f"account_id,name,account_manager,started_at\n{rows}\nA-0,X,am,2020-01-01\n",
    )
    result = validate_tables(read_source(data))
    assert result.summary.set_index("table").loc[
        "accounts", ["rows", "loaded", "rejected"]
    ].tolist() == [
        201,
        200,
        1,
    ]


def test_load_validated_writes_rejects_before_failing_and_logs_missing_tables_once(
    tmp_path, caplog
):
    data = write_csvs(tmp_path / "data", accounts=ACCOUNTS_CSV, invoices=INVOICES_CSV)
    settings = Settings(rejects_dir=tmp_path / "rejects")
    with caplog.at_level(logging.INFO), pytest.raises(RejectThresholdExceeded) as info:
        load_validated(str(data), settings)
    written = pd.read_csv(tmp_path / "rejects" / "rejects.csv", keep_default_na=False)
    assert list(written.columns) == list(REJECT_COLUMNS)
    assert len(written) == 10
    assert str(tmp_path / "rejects" / "rejects.csv") in info.value.hint

    missing = [r.getMessage() for r in caplog.records if "is missing" in r.getMessage()]
    assert (
        "table 'surveys' is missing: satisfaction features that need it will be absent" in missing
    )
    assert len(missing) == len(set(missing)) == 6
    assert not any(name in caplog.text for name in ("Acme", "Beta", "Gamma", "Nobody"))


def test_a_clean_load_leaves_an_empty_rejects_file_not_a_stale_one(tmp_path):
    settings = Settings(rejects_dir=tmp_path / "rejects")
    (tmp_path / "rejects").mkdir()
    (tmp_path / "rejects" / "rejects.csv").write_text("stale\n")
    data = write_csvs(
        tmp_path / "data",
        accounts="account_id,name,account_manager,started_at\nA-1,X,am,2020-01-01\n",
    )
    result = load_validated(data, settings)
    assert (tmp_path / "rejects" / "rejects.csv").read_text().strip() == ",".join(REJECT_COLUMNS)
    assert result.rejects_path == tmp_path / "rejects" / "rejects.csv"


def test_an_unwritable_rejects_dir_is_a_clear_error(tmp_path):
    data = write_csvs(tmp_path / "data", accounts=ACCOUNTS_CSV)
    (tmp_path / "file").write_text("")
    settings = Settings(rejects_dir=tmp_path / "file" / "rejects", reject_threshold=1.0)
    with pytest.raises(ChurnError, match="cannot write rejects to .*rejects.csv") as info:
        load_validated(data, settings)
    assert "CHURN_REJECTS_DIR" in info.value.hint


def test_a_full_disk_while_writing_rejects_says_so(tmp_path, monkeypatch):
    data = write_csvs(tmp_path / "data", accounts=ACCOUNTS_CSV)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    settings = Settings(rejects_dir=tmp_path / "rejects", reject_threshold=1.0)
    with pytest.raises(ChurnError, match="rejects.csv: No space left on device"):
        load_validated(data, settings)
    assert list((tmp_path / "rejects").iterdir()) == []  # no half-written file left


def test_the_summary_shows_counts_missing_tables_and_top_reasons(tmp_path):
    data = write_csvs(tmp_path / "data", accounts=ACCOUNTS_CSV, invoices=INVOICES_CSV)
    settings = Settings(rejects_dir=tmp_path / "rejects", reject_threshold=1.0)
    result = load_validated(data, settings)
    console = Console(record=True, width=160)
    console.print(render_summary(result))
    text = console.export_text()
    assert "invoices" in text and "75.00%" in text
    assert "missing: satisfaction features that need it will be absent" in text
    assert "paid_at is before issued_at" in text
    assert "10 rejected rows" in text and "rejects.csv" in text


# --- property: whatever cells are broken, rows are either loaded or rejected, and every loaded
# row keeps the contract ---------------------------------------------------------------------

GARBAGE = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "NULL",
            "nan",
            "inf",
            "-1",
            "11",
            "2",
            "1e400",
            "0x1F",
            "2024-02-30",
            "2024-13-01",
            "31/12/2024",
            "9999-01-01",
            "yes",
            "maybe",
            "MEETING",
            "held",
            "A-1",
            "A-404",
            "2024-06-01 10:00:00",
            '"',
            ",",
            "\n",
        ]
    ),
    st.text(
        alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8
    ),
)


def _valid_source(n_accounts: int = 6, n_interactions: int = 20) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    ids = [f"A-{i}" for i in range(n_accounts)]
    accounts = pd.DataFrame(
        {
            "account_id": ids,
            "name": [f"Client {i}" for i in ids],
            "account_manager": "am",
            "started_at": "2020-01-01",
            "contract_value": "1000",
        }
    )
    interactions = pd.DataFrame(
        {
            "account_id": rng.choice(ids, n_interactions),
            "occurred_at": [
                f"2024-01-{d:02d} 10:00:00" for d in rng.integers(1, 28, n_interactions)
            ],
            "channel": rng.choice(["meeting", "call"], n_interactions),
            "status": rng.choice(["held", "cancelled"], n_interactions),
            "sentiment": rng.uniform(-1, 1, n_interactions).round(2).astype(str),
            "competitor_mentioned": rng.choice(["true", "false", ""], n_interactions),
        }
    )
    return {"accounts": accounts, "interactions": interactions}


def _assert_keeps_contract(tables) -> None:
    ids = tables.accounts["account_id"]
    assert ids.notna().all() and ids.is_unique
    for name, frame in tables:
        for col in TABLES[name].columns:
            values = frame[col.name]
            assert str(values.dtype) == pandas_dtype(col.kind)
            if not col.nullable:
                assert values.notna().all(), (name, col.name)
            present = values.dropna()
            if col.enum:
                assert present.isin(col.enum).all()
            if col.min is not None:
                assert (present >= col.min).all()
            if col.max is not None:
                assert (present <= col.max).all()
            if col.kind == "float":
                assert np.isfinite(present).all()
            if col.kind == "date":
                assert (present == present.dt.normalize()).all()
        if TABLES[name].references_accounts:
            assert frame["account_id"].isin(ids).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_corrupted_cells_are_loaded_or_rejected_and_loaded_rows_keep_the_contract(data):
    source = _valid_source()
    corrupted: dict[str, set[int]] = {"accounts": set(), "interactions": set()}
    for name, frame in source.items():
        columns = [c for c in frame.columns if not (name == "accounts" and c == "account_id")]
        n_cells = data.draw(st.integers(0, 6), label=f"{name} cells")
        for _ in range(n_cells):
            row = data.draw(st.integers(0, len(frame) - 1))
            column = data.draw(st.sampled_from(columns))
            frame.loc[row, column] = data.draw(GARBAGE)
            corrupted[name].add(row)
    with tempfile.TemporaryDirectory() as folder:
        write_source(source, folder)
        result = validate_tables(read_source(folder), reject_threshold=1.0)

    summary = result.summary.set_index("table")
    for name, frame in source.items():
        rows, loaded, rejected = summary.loc[name, ["rows", "loaded", "rejected"]]
        assert rows == len(frame) and loaded + rejected == rows
        assert result.rejects.loc[result.rejects["table"] == name, "row"].nunique() == rejected
    _assert_keeps_contract(result.tables)
    # No false alarms: untouched accounts load, and so do untouched rows of loaded accounts.
    rejected = {
        name: set(result.rejects.loc[result.rejects["table"] == name, "row"]) for name in source
    }
    assert not rejected["accounts"] - corrupted["accounts"]
    loaded_ids = set(result.tables.accounts["account_id"])
    interactions = source["interactions"]
    must_load = set(interactions.index[interactions["account_id"].isin(loaded_ids)])
    assert not (must_load - corrupted["interactions"]) & rejected["interactions"]


def test_validate_tables_accepts_a_hand_built_raw_source():
    raw = RawSource(
        kind="folder",
        location="memory",
        frames={"accounts": make_tables(["A-1"]).accounts},
        missing=[n for n in TABLES if n != "accounts"],
    )
    result = validate_tables(raw)
    assert result.tables.accounts["account_id"].tolist() == ["A-1"]
    assert result.tables.missing == [n for n in TABLES if n != "accounts"]
