"""Feature building: ``features.snapshots.build_snapshots`` on the demo source.

Figures, all measured in this run:

* events per second building every monthly snapshot (features, labels, health scores and the
  30-days-earlier history they need) against one DuckDB ``GROUP BY account_id`` scan (count,
  first and last stamp) over the same events: how far the whole feature engine is from a bare
  aggregation floor. DuckDB runs on one thread, like the numpy engine;
* the same for a copy ten times larger (each account and its records cloned under new ids);
* growth: events per second at 10x against 1x (linear cost gives 1; target 0.8, which an
  O(n log n) engine meets and anything quadratic misses by far), and rows per second with
  weekly as_of dates (about 4x the snapshots) against monthly;
* the issue's budget: all monthly snapshots of the demo in under 30 seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from bench.common import Result, best_of
from bench.data import DEMO, DemoSpec, bench_settings, demo_tables
from churn.console import err_console
from features.contract import TABLES, Tables

SCALE = 10
DUCKDB_THREADS = 1
GROWTH_TARGET = 0.8
BUDGET_SECONDS = 30.0
WEEKLY = "W-MON"


def event_count(tables: Tables) -> int:
    """Records of every table but ``accounts``: what the feature engine reads."""
    return sum(len(frame) for name, frame in tables if name != "accounts")


def replicate(tables: Tables, copies: int) -> Tables:
    """``copies`` clones of every account with all its records (copy 0 keeps the original ids,
    copy k appends ``~k`` to the account id and to the table keys): ``copies`` times the events
    over the same period, so per-event cost can be compared across sizes."""
    frames: dict[str, pd.DataFrame] = {}
    for name, frame in tables:
        ids = [c for c in ("account_id", *TABLES[name].key) if c in frame.columns]
        parts = []
        for k in range(copies):
            part = frame.copy()
            if k:
                for col in dict.fromkeys(ids):
                    part[col] = part[col] + f"~{k}"
            parts.append(part)
        frames[name] = pd.concat(parts, ignore_index=True)
    return Tables(**frames, source=f"{tables.source} x{copies}", meta=dict(tables.meta))


def duckdb_scan(tables: Tables, threads: int = DUCKDB_THREADS) -> Callable[[], Any]:
    """A function running one DuckDB ``GROUP BY account_id`` over every event of ``tables``
    (all event tables as one ``UNION ALL``): events, first and last stamp per account."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    selects = []
    for name, frame in tables:
        stamp = TABLES[name].stamp
        if name == "accounts" or stamp is None:
            continue
        con.register(f"t_{name}", frame[["account_id", stamp]])
        selects.append(f"SELECT account_id, {stamp} AS stamp FROM t_{name}")
    query = (
        "SELECT account_id, count(*) AS events, min(stamp) AS first, max(stamp) AS last "
        f"FROM ({' UNION ALL '.join(selects)}) GROUP BY account_id"
    )
    return lambda: con.execute(query).fetchall()


def _timed_build(tables: Tables, dates: list, cfg: Any, repeat: int) -> tuple[float, int]:
    from features.snapshots import build_snapshots

    rows = 0

    def build() -> None:
        nonlocal rows
        rows = len(build_snapshots(tables, dates, cfg))

    return best_of(build, repeat), rows


def run(workdir: Path, spec: DemoSpec = DEMO, scale: int = SCALE, repeat: int = 3) -> list[Result]:
    from features.snapshots import as_of_grid

    tables = demo_tables(workdir, spec)
    cfg = bench_settings(workdir).snapshots
    monthly = as_of_grid(tables, cfg)
    weekly = as_of_grid(tables, cfg.model_copy(update={"frequency": WEEKLY}))
    events = event_count(tables)

    err_console.print(
        f"monthly snapshots of the demo: {len(monthly)} as_of dates, {events:,} events"
    )
    seconds, rows = _timed_build(tables, monthly, cfg, repeat)
    scan = best_of(duckdb_scan(tables), 5)
    err_console.print(f"  {seconds:.2f} s for {rows:,} rows; DuckDB scan {scan * 1000:.1f} ms")

    err_console.print(f"weekly snapshots: {len(weekly)} as_of dates")
    weekly_seconds, weekly_rows = _timed_build(tables, weekly, cfg, max(1, repeat - 1))
    err_console.print(f"  {weekly_seconds:.2f} s for {weekly_rows:,} rows")

    big = replicate(tables, scale)
    big_events = event_count(big)
    err_console.print(f"monthly snapshots of a {scale}x copy: {big_events:,} events")
    started = time.perf_counter()
    big_seconds, big_rows = _timed_build(big, monthly, cfg, 1)
    big_scan = best_of(duckdb_scan(big), 3)
    err_console.print(
        f"  {big_seconds:.2f} s for {big_rows:,} rows; DuckDB scan {big_scan * 1000:.1f} ms "
        f"({time.perf_counter() - started:.0f} s in all)"
    )
    del big

    common = {"as_of_dates": len(monthly), "duckdb_threads": DUCKDB_THREADS}
    scan_name = f"DuckDB GROUP BY account_id scan, {DUCKDB_THREADS} thread"
    return [
        Result(
            name=f"features: all monthly snapshots, demo ({events / 1e6:.2f}M events)",
            unit="events/s",
            ours=events / seconds,
            reference=events / scan,
            reference_name=scan_name,
            extra={**common, "events": events, "rows": rows, "seconds": seconds, "scan_s": scan},
        ),
        Result(
            name=f"features: all monthly snapshots, {scale}x copy ({big_events / 1e6:.2f}M events)",
            unit="events/s",
            ours=big_events / big_seconds,
            reference=big_events / big_scan,
            reference_name=scan_name,
            extra={
                **common,
                "events": big_events,
                "rows": big_rows,
                "seconds": big_seconds,
                "scan_s": big_scan,
            },
        ),
        Result(
            name=f"features: growth with {scale}x events (1 = linear)",
            unit="events/s",
            ours=big_events / big_seconds,
            reference=events / seconds,
            reference_name="same build at 1x",
            target=GROWTH_TARGET,
            extra={"duckdb_growth": (big_events / big_scan) / (events / scan)},
        ),
        Result(
            name=f"features: growth with {len(weekly) / len(monthly):.1f}x as_of dates (weekly)",
            unit="rows/s",
            ours=weekly_rows / weekly_seconds,
            reference=rows / seconds,
            reference_name="monthly as_of dates",
            target=GROWTH_TARGET,
            extra={
                "weekly_dates": len(weekly),
                "weekly_rows": weekly_rows,
                "weekly_seconds": weekly_seconds,
                "monthly_rows": rows,
                "monthly_seconds": seconds,
            },
        ),
        Result(
            name="features: all monthly snapshots of the demo, time",
            unit="s",
            ours=seconds,
            reference=BUDGET_SECONDS,
            reference_name="time budget",
            target=1.0,
            higher_is_better=False,
        ),
    ]
