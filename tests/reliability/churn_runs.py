"""`churn` commands in their own processes on small demo data, and the score store's content.

- :func:`demo_workdir` writes demo data (200 accounts, 2 years) and a test model bundle.
- :func:`churn_env` is the environment a command runs with (everything under one folder).
- :class:`ChurnRun` starts a command and reads its output as it comes, so a test can act at a
  given moment (``wait_for("✓ scoring")``) and then kill it or let it finish.
- :func:`snapshot` reads every table of a store (DuckDB file or PostgreSQL URL) into rows,
  :func:`copy_store` copies a DuckDB store into PostgreSQL;
  :func:`compare` says what a fault did to it: rows lost, dates left half written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.store import STORE_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
CLI = "from churn_cli.main import main; main()"

# Columns that differ between two runs writing the same scores.
VOLATILE = {"run_id", "scored_at", "started_at", "finished_at"}
DATED = ("scores", "reasons", "escalations", "actions", "flags")


def demo_workdir(root: Path) -> Path:
    """``root/data`` (demo data) and ``root/models`` (a champion test bundle); returns root."""
    from features.demo import generate_demo
    from tests.support.bundle_factory import make_models_dir

    root.mkdir(parents=True, exist_ok=True)
    generate_demo(root / "data", accounts=200, years=2)
    make_models_dir(root / "models", "v1")
    return root


def churn_env(root: Path, **overrides: str) -> dict[str, str]:
    """The environment of a `churn` command reading ``root/data`` with ``root/models``."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CHURN_DATA": str(root / "data"),
        "CHURN_MODELS_DIR": str(root / "models"),
        "CHURN_STORE_URL": str(root / "store.duckdb"),
        "CHURN_REJECTS_DIR": str(root / "rejects"),
        "CHURN_KEYS_FILE": str(root / "keys.json"),
        "COLUMNS": "200",
        **overrides,
    }
    env.pop("CHURN_CONFIG", None)
    return env


def churn_argv(args: Sequence[str]) -> list[str]:
    """The command line of ``churn <args>`` with this interpreter."""
    return [sys.executable, "-c", CLI, *args]


def run_churn(
    args: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run a `churn` command to its end."""
    return subprocess.run(
        churn_argv(args),
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ChurnRun:
    """A `churn` command running in its own process, its output collected line by line."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 120) -> bool:
        """Wait until ``text`` appears in stderr; False when the process ended without it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(text in line for line in self.err):
                if self.process.poll() is not None and not any(r.is_alive() for r in self._readers):
                    return False
                if time.monotonic() > deadline:
                    return False
                self._changed.wait(0.05)
        return True

    def running(self) -> bool:
        return self.process.poll() is None

    def finish(self, timeout: float = 300) -> int:
        """Wait for the end; returns the exit code (negative: the signal that ended it)."""
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)

    @property
    def stdout(self) -> str:
        return "\n".join(self.out)


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux /proc)."""
    target = str(path.resolve())
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


def clear_error(stderr: str) -> str | None:
    """None when ``stderr`` ends with exactly one ``error:`` line followed by one ``hint:``
    line and holds no traceback; else what is wrong with it."""
    if "Traceback" in stderr:
        return "a traceback was printed"
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    if len(errors) != 1:
        return f"{len(errors)} 'error:' lines instead of one"
    i = errors[0]
    if i + 2 != len(lines) or not lines[i + 1].startswith("hint:"):
        return "the error line is not followed by exactly one 'hint:' line"
    return None


# -- the store's content --------------------------------------------------------------------

Snapshot = dict[str, tuple[list[str], list[tuple[Any, ...]]]]


def snapshot(url: str) -> Snapshot:
    """Every table of the store: (column names, rows). NaN is spelled 'NaN' to compare."""
    if "://" in url:
        import psycopg

        with psycopg.connect(url) as con:
            return {t: _rows(con.execute(f"SELECT * FROM {t}")) for t in STORE_SCHEMA}
    import duckdb

    con = duckdb.connect(url, read_only=True)
    try:
        return {t: _rows(con.execute(f"SELECT * FROM {t}")) for t in STORE_SCHEMA}
    finally:
        con.close()


def copy_store(source: Path, url: str) -> None:
    """Copy every row of the DuckDB store ``source`` into the PostgreSQL store ``url``."""
    import psycopg

    from serving.store import Store

    store = Store(url)
    store.ensure_schema()
    store.close()
    with psycopg.connect(url) as con, con.cursor() as cur:
        for table, (columns, rows) in snapshot(str(source)).items():
            if table == "store_meta":
                continue
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)


def _rows(cursor: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    columns = [d[0] for d in cursor.description]
    rows = [tuple("NaN" if v != v else v for v in row) for row in cursor.fetchall()]
    return columns, rows


@dataclass
class Comparison:
    """What a fault did to a store: ``as_before`` (every row identical), ``whole_run`` (the
    interrupted run's dates all committed, nothing else changed), rows lost, half dates."""

    as_before: bool
    whole_run: bool
    records_lost: int
    half_dates: list[str] = field(default_factory=list)

    @property
    def survived(self) -> bool:
        return (self.as_before or self.whole_run) and not self.records_lost and not self.half_dates


def _dated_rows(snap: Snapshot, table: str, names: list[str], skip: set[Any]) -> Counter[Any]:
    """The ``names`` columns of ``table``'s rows, without the rows of the dates in ``skip``."""
    columns, rows = snap[table]
    at = [columns.index(n) for n in names]
    day = columns.index("as_of") if "as_of" in columns else None
    return Counter(tuple(r[i] for i in at) for r in rows if day is None or r[day] not in skip)


def compare(before: Snapshot, after: Snapshot) -> Comparison:
    """Compare two snapshots of one store (see :class:`Comparison`).

    A date a new run wrote again is replaced, not lost: scoring it again may rightly change
    its rows (its health drop and invoice window compare with the scoring a month earlier,
    which the new run may have added), so of such a date only its accounts must all be
    there again; every other row must be there unchanged."""
    old_runs = {row[0] for row in before["runs"][1]}
    new_runs = {row[0] for row in after["runs"][1]} - old_runs
    r_columns, r_rows = after["runs"]
    rewritten = {
        r[r_columns.index("as_of")] for r in r_rows if r[r_columns.index("run_id")] in new_runs
    }
    lost = 0
    for table, (columns, _) in before.items():
        keep = [c for c in columns if c not in VOLATILE]
        had = _dated_rows(before, table, keep, rewritten)
        lost += sum((had - _dated_rows(after, table, keep, rewritten)).values())
    s_columns, s_rows = before["scores"]
    accounts = [s_columns.index("as_of"), s_columns.index("account_id")]
    had_accounts = Counter(
        tuple(r[i] for i in accounts) for r in s_rows if r[accounts[0]] in rewritten
    )
    has_accounts = _dated_rows(after, "scores", ["as_of", "account_id"], set())
    lost += sum((had_accounts - has_accounts).values())
    as_before = all(Counter(before[t][1]) == Counter(after[t][1]) for t in before)
    # A run committed whole: every date it wrote carries its own run id, none is half old.
    whole_run = bool(new_runs) and not ({row[0] for row in after["runs"][1]} & old_runs)
    return Comparison(as_before, whole_run and not as_before, lost, half_dates(after))


def half_dates(snap: Snapshot) -> list[str]:
    """Dates whose rows do not all belong to the one run the ``runs`` table names for them."""
    columns, rows = snap["runs"]
    runs = {r[columns.index("as_of")]: r for r in rows}
    run_id, scored = columns.index("run_id"), columns.index("accounts_scored")
    problems = []
    s_columns, s_rows = snap["scores"]
    by_date: dict[Any, list[tuple[Any, ...]]] = {}
    for row in s_rows:
        by_date.setdefault(row[s_columns.index("as_of")], []).append(row)
    for day, day_rows in by_date.items():
        run = runs.get(day)
        ids = {r[s_columns.index("run_id")] for r in day_rows}
        if run is None:
            problems.append(f"{day}: scores without a run")
        elif ids != {run[run_id]} or len(day_rows) != run[scored]:
            problems.append(f"{day}: {len(day_rows)} scores of runs {sorted(ids)}, run {run}")
    for day, run in runs.items():
        if run[scored] and day not in by_date:
            problems.append(f"{day}: a run without its scores")
    for table in DATED[1:]:
        t_columns, t_rows = snap[table]
        for day in {r[t_columns.index("as_of")] for r in t_rows} - set(runs):
            problems.append(f"{day}: {table} without a run")
    return problems


def total_rows(snap: Snapshot) -> int:
    return sum(len(rows) for _, rows in snap.values())
