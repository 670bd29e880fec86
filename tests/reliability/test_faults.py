"""Faults during `churn score`, with the real command in its own process, the
real stores (a DuckDB file, PostgreSQL) and small demo data.

- The store unreachable when the run starts (a PostgreSQL port nobody listens on, a DuckDB
  path that cannot be created or opened): one error line and a hint, exit 1, nothing written.
- The PostgreSQL connection cut while the run writes (its server process terminated): the
  same clear error, and the store exactly as it was.
- The run killed (SIGKILL) while it writes, once right as the write starts and once at a
  random moment inside it: the store exactly as before, or (if the kill came after the
  commit) the whole run and nothing half; no stored row lost, no date half written.
- Disk full on the rejects file (its temporary file is /dev/full, which fails every write
  with ENOSPC): an error naming the rejects path, exit 1, the previous rejects file and the
  store untouched.

The write of a run is detected from outside: the "✓ scoring" line on stderr, then the store
file open in the process (/proc/<pid>/fd) for DuckDB, or the store's write lock held by the
run's own database session (found by its application_name) for PostgreSQL.
"""

from __future__ import annotations

import random
import shutil
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.reliability.churn_runs import (
    CLI,
    ChurnRun,
    Comparison,
    churn_argv,
    churn_env,
    clear_error,
    compare,
    copy_store,
    demo_workdir,
    has_open,
    run_churn,
    snapshot,
    total_rows,
)
from tests.reliability.figures import record
from tests.support.live_server import free_port

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

BASELINE_MONTHS = "3"  # the store before a fault: 4 dates
FAULT_MONTHS = "12"  # the run a fault hits: 13 dates, so its write lasts about a second
_KILL_ATTEMPTS = 4  # tries per kill trial while the write ends before the kill
SCORED = "✓ scoring"  # printed once scoring is done, right before the write starts
WRITE_LOCK = 0x63687572  # serving.store._PG_WRITE_LOCK


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Demo data, a model, and a DuckDB store scored once (``base.duckdb``, its rejects): the
    store as it is before each fault (copied into PostgreSQL for the PostgreSQL faults)."""
    root = demo_workdir(tmp_path_factory.mktemp("faults"))
    env = churn_env(root, CHURN_REJECTS_DIR=str(root / "base-rejects"))
    run = run_churn(
        ["score", "--history-months", BASELINE_MONTHS, "--store", "base.duckdb"], env, root
    )
    assert run.returncode == 0, run.stderr
    return root


def _score_argv(store: str, months: str = FAULT_MONTHS) -> list[str]:
    return churn_argv(["score", "--history-months", months, "--store", store])


def _duckdb_store(work: Path, tmp_path: Path) -> str:
    store = tmp_path / "store.duckdb"
    shutil.copyfile(work / "base.duckdb", store)
    return str(store)


def _pg_url(pg_schema_url: str, name: str) -> str:
    return f"{pg_schema_url}&application_name={name}"


def _pg_sessions(postgres_url: str, name: str, *, writing: bool = False) -> list[int]:
    """Server process ids of the sessions named ``name`` (with the store's write lock)."""
    import psycopg

    sql = "SELECT a.pid FROM pg_stat_activity a WHERE a.application_name = %s"
    if writing:
        sql = (
            "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE a.application_name = %s AND l.locktype = 'advisory' AND l.granted "
            f"AND l.objid = {WRITE_LOCK}"
        )
    with psycopg.connect(postgres_url, autocommit=True) as con:
        return [row[0] for row in con.execute(sql, (name,)).fetchall()]


def _wait_until(condition, run: ChurnRun, timeout: float = 60) -> bool:
    """Poll ``condition`` while the run lives; False if it ended (or timed out) first."""
    deadline = time.monotonic() + timeout
    while run.running() and time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def _kill_trials(
    store: str, work: Path, delays: list[float], writing, settle
) -> tuple[list[Comparison], list[str]]:
    """Run the fault run once per delay and SIGKILL it ``delay`` s after its write started.

    ``writing(run)`` says whether the run is writing now; ``settle(run)`` waits until the
    store has let go of the killed run. A run that finished its whole write before the kill
    came (the write's length varies with the machine's load) injected no fault: the trial is
    run again with half the delay, at most ``_KILL_ATTEMPTS`` times, and ``delays`` is
    updated to the delays the kills really came at. Returns one comparison per trial and
    the problems.
    """
    results, problems = [], []
    env = churn_env(work)
    for trial, delay in enumerate(delays):
        for _attempt in range(_KILL_ATTEMPTS):
            before = snapshot(store)
            run = ChurnRun(_score_argv(store), env, work)
            started = run.wait_for(SCORED) and _wait_until(lambda r=run: writing(r), run)
            if started:
                time.sleep(delay)
                run.process.send_signal(signal.SIGKILL)
            code = run.finish()
            settle(run)
            if not (started and code == 0 and delay > 0):
                break
            delay = round(delay / 2, 3)  # the write ended before the kill: come sooner
        delays[trial] = delay
        if not started or code != -signal.SIGKILL:
            problems.append(f"the run was not killed while writing (exit {code}): {run.stderr}")
            continue
        result = compare(before, snapshot(store))
        results.append(result)
        if not result.survived:
            problems.append(f"killed {delay:.2f} s into the write: {result}")
    return results, problems


def _record_kills(check: str, results: list[Comparison], delays: list[float]) -> None:
    rolled_back = sum(r.as_before for r in results)
    committed = sum(r.whole_run for r in results)
    record(
        check,
        faults_injected=len(delays),
        faults_survived=sum(r.survived for r in results),
        records_lost=sum(r.records_lost for r in results),
        note=f"{rolled_back} rolled back, {committed} committed whole; kills at "
        + ", ".join(f"{d:.2f}" for d in delays)
        + " s into the write",
    )


def _delays() -> list[float]:
    return [0.0, round(random.uniform(0.05, 0.7), 2)]


def test_a_store_unreachable_at_the_start_fails_score_with_one_clear_line(work, tmp_path):
    closed = f"postgresql://churn:pw-secret@127.0.0.1:{free_port()}/none"
    not_creatable = "/dev/null/store.duckdb"  # its folder is a device file
    read_only = "/proc/store.duckdb"  # a read-only file system, even for root
    env = churn_env(work, CHURN_REJECTS_DIR=str(tmp_path / "rejects"))
    runs = {
        store: ChurnRun(_score_argv(store, "0"), env, work)
        for store in (closed, not_creatable, read_only)
    }
    failed: dict[str, str] = {}
    for store, run in runs.items():
        code = run.finish()
        wrong = clear_error(run.stderr)
        shown = "127.0.0.1" if store is closed else store
        if code != 1 or wrong or "score store" not in run.stderr or shown not in run.stderr:
            failed[store] = f"exit {code}, {wrong or 'the error does not name the store'}"
        elif "pw-secret" in run.stderr + run.stdout:
            failed[store] = "the password was printed"
        if store in failed:
            failed[store] += f":\n{run.stderr}"
    # Nothing was done before the store was found out: no rejects, no store file anywhere.
    written = [p for p in (tmp_path / "rejects", Path(read_only)) if p.exists()]
    record(
        "fault: store unreachable at start",
        faults_injected=len(runs),
        faults_survived=len(runs) - len(failed),
        records_lost=0,
        note="postgres closed port, duckdb folder not creatable, duckdb on read-only fs",
    )
    problems = [f"{store}: {problem}" for store, problem in failed.items()]
    assert not problems, "\n".join(problems)
    assert not written, f"the failed runs wrote {written}"


def test_a_killed_score_run_leaves_the_duckdb_store_as_it_was(work, tmp_path):
    store = _duckdb_store(work, tmp_path)
    path = Path(store)
    before = snapshot(store)
    assert total_rows(before) > 1000 and len(before["runs"][1]) == 4
    delays = _delays()
    results, problems = _kill_trials(
        store, work, delays, writing=lambda run: has_open(run.pid, path), settle=lambda run: None
    )
    _record_kills("fault: score killed mid-write (duckdb)", results, delays)
    assert not problems, "\n".join(problems)


@pytest.mark.postgres
def test_a_killed_score_run_leaves_the_postgres_store_as_it_was(work, postgres_url, pg_schema_url):
    name = f"churn-fault-{uuid.uuid4().hex[:12]}"
    store = _pg_url(pg_schema_url, name)
    copy_store(work / "base.duckdb", store)
    before = snapshot(store)
    assert total_rows(before) > 1000 and len(before["runs"][1]) == 4

    def settle(run: ChurnRun) -> None:
        # The server ends the killed session's transaction when it sees the socket closed.
        deadline = time.monotonic() + 60
        while _pg_sessions(postgres_url, name) and time.monotonic() < deadline:
            time.sleep(0.05)

    delays = _delays()
    results, problems = _kill_trials(
        store,
        work,
        delays,
        writing=lambda run: bool(_pg_sessions(postgres_url, name, writing=True)),
        settle=settle,
    )
    _record_kills("fault: score killed mid-write (postgresql)", results, delays)
    assert not problems, "\n".join(problems)


@pytest.mark.postgres
def test_losing_the_postgres_connection_mid_write_fails_score_and_changes_nothing(
    work, postgres_url, pg_schema_url
):
    name = f"churn-fault-{uuid.uuid4().hex[:12]}"
    store = _pg_url(pg_schema_url, name)
    copy_store(work / "base.duckdb", store)
    before = snapshot(store)

    import psycopg

    run = ChurnRun(_score_argv(store), churn_env(work), work)
    started = run.wait_for(SCORED) and _wait_until(
        lambda: bool(_pg_sessions(postgres_url, name, writing=True)), run
    )
    if started:
        time.sleep(random.uniform(0.0, 0.1))  # well inside the write, before its commit
        with psycopg.connect(postgres_url, autocommit=True) as con:
            for pid in _pg_sessions(postgres_url, name):
                con.execute("SELECT pg_terminate_backend(%s)", (pid,))
    code = run.finish()
    after = snapshot(store)
    result = compare(before, after)
    wrong = clear_error(run.stderr)
    survived = started and code == 1 and wrong is None and result.as_before and result.survived
    record(
        "fault: store connection lost mid-write (postgresql)",
        faults_injected=1,
        faults_survived=int(survived),
        records_lost=result.records_lost,
    )
    assert started, f"the run ended before its write could be cut (exit {code}): {run.stderr}"
    assert code == 1 and wrong is None, f"exit {code}, {wrong}:\n{run.stderr}"
    assert "score store" in run.stderr
    assert result.as_before and result.survived, result


def test_disk_full_on_the_rejects_file_fails_score_naming_it_and_loses_nothing(work, tmp_path):
    store = _duckdb_store(work, tmp_path)
    rejects = tmp_path / "rejects"
    shutil.copytree(work / "base-rejects", rejects)
    previous = (rejects / "rejects.csv").read_bytes()
    assert previous.count(b"\n") > 1, "the demo data should have rejects"
    before = snapshot(store)
    # `churn score` writes rejects.csv through ``.rejects.csv.<pid>.tmp``: the shell makes that
    # name a link to /dev/full, then becomes the command (exec keeps its pid).
    wrapper = 'p=$1; d=$2; shift 2; ln -s /dev/full "$d/.rejects.csv.$$.tmp" && exec "$p" "$@"'
    argv = ["sh", "-c", wrapper, "sh", churn_argv([])[0], str(rejects), "-c", CLI]
    argv += ["score", "--store", store]
    run = ChurnRun(argv, churn_env(work, CHURN_REJECTS_DIR=str(rejects)), work)
    code = run.finish()
    result = compare(before, snapshot(store))
    kept = (rejects / "rejects.csv").read_bytes() == previous
    left = sorted(p.name for p in rejects.iterdir() if p.name != "rejects.csv")
    wrong = clear_error(run.stderr)
    named = f"{rejects / 'rejects.csv'}" in run.stderr and "No space left" in run.stderr
    survived = code == 1 and not wrong and named and kept and not left and result.as_before
    record(
        "fault: disk full on rejects (/dev/full)",
        faults_injected=1,
        faults_survived=int(survived),
        records_lost=result.records_lost + (0 if kept else previous.count(b"\n")),
    )
    assert code == 1 and wrong is None, f"exit {code}, {wrong}:\n{run.stderr}"
    assert named, f"the error does not name the rejects file and the cause:\n{run.stderr}"
    assert kept and not left, f"previous rejects kept: {kept}; files left behind: {left}"
    assert result.as_before, result
