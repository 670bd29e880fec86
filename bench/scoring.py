"""Batch explained scoring against raw LightGBM contributions.

Ours: ``serving.batch.explained_reasons``, what ``churn score`` runs over a snapshot: the
calibrated probability, the SHAP contributions rescaled to impacts in probability points, the
top reasons and their sentences. Reference: ``booster.predict(X, pred_contrib=True)`` of the
same booster on the same rows, the raw contributions alone. The rows are `make score`'s
workload on the demo source: every account active at the latest date and at each of the 12
monthly dates before it. Runs alternate between the two and the fastest round of each counts,
in wall seconds; both may use every core (batch scoring does, from 2,000 rows), and the
reference is the faster of LightGBM on one thread and on every core. The target is at least
0.8 of the reference's rows per second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import Result
from bench.data import DEMO, DemoSpec, bench_settings, demo_tables, trained_model
from churn.console import err_console

TARGET = 0.8
HISTORY_MONTHS = 12


def _seconds(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(
    snapshot: pd.DataFrame,
    bundle: Any,
    top: int = 5,
    repeat: int = 5,
    explain: Callable[[pd.DataFrame, Any, int], Any] | None = None,
) -> Result:
    """Rows per second of ``explain`` (default ``explained_reasons``) against the raw
    contributions of ``bundle``'s booster on the same rows (see the module docstring)."""
    if explain is None:
        from serving.batch import explained_reasons as explain
    booster = bundle.booster
    x = snapshot.reindex(columns=list(bundle.feature_names)).to_numpy(dtype=float, na_value=np.nan)
    cores = os.cpu_count() or 1
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "raw_1_thread": []}
    if cores > 1:
        runs["raw_all_cores"] = []
    for _ in range(repeat):
        runs["ours"].append(_seconds(lambda: explain(snapshot, bundle, top)))
        runs["raw_1_thread"].append(
            _seconds(lambda: booster.predict(x, pred_contrib=True, num_threads=1))
        )
        if cores > 1:
            runs["raw_all_cores"].append(
                _seconds(lambda: booster.predict(x, pred_contrib=True, num_threads=cores))
            )
    wall = {k: min(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: min(c for _, c in v) for k, v in runs.items()}
    # Wall seconds: both sides may run on every core, so CPU seconds would not compare.
    ours = wall["ours"]
    reference = min(wall["raw_1_thread"], wall.get("raw_all_cores", np.inf))
    rows = len(x)
    return Result(
        name=f"scoring: batch explained scoring, {rows:,} rows (top {top} reasons)",
        unit="rows/s",
        ours=rows / ours,
        reference=rows / reference,
        reference_name="raw LightGBM pred_contrib, faster of 1 thread / all cores",
        target=TARGET,
        extra={
            "rows": rows,
            "features": x.shape[1],
            "trees": booster.num_trees(),
            "ours_s": ours,
            "reference_s": reference,
            **{f"{k}_wall_s": v for k, v in wall.items()},
            **{f"{k}_cpu_s": v for k, v in cpu.items()},
            "cpu_ratio": cpu["raw_1_thread"] / cpu["ours"],
            "rounds": repeat,
        },
    )


def run(workdir: Path, spec: DemoSpec = DEMO, repeat: int = 5) -> list[Result]:
    from churn.bundle import load_bundle
    from features.snapshots import build_snapshots
    from serving.batch import default_as_of, history_dates

    model = trained_model(workdir, spec)
    bundle = load_bundle(model.champion)
    tables = demo_tables(workdir, spec)
    settings = bench_settings(workdir)
    dates = history_dates(default_as_of(tables), HISTORY_MONTHS)
    snapshot = build_snapshots(tables, dates, settings.snapshots)
    err_console.print(
        f"explaining {len(snapshot):,} rows ({len(dates)} dates) with {bundle.version}, "
        f"{repeat} rounds"
    )
    result = measure(snapshot, bundle, settings.serve.top_reasons, repeat)
    err_console.print(
        f"  ours {result.extra['ours_s']:.2f} s, raw contributions "
        f"{result.extra['reference_s']:.2f} s (fastest round)"
    )
    return [result]
