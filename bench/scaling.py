"""Scaling: time per million events of feature building and batch scoring at 1x, 10x
and 100x the demo data, in one process and on a local Dask cluster of two single-threaded
workers. The figure is each size's seconds per million events against the same figure at 1x
(``ratio`` = 1x / size: 1 is perfectly flat, the target 0.67 means at most 1.5 times the 1x
cost per event).

The workloads are the two commands' own, on each engine (``churn.engine``): ``churn features``
(one as_of date: features, segments, health scores) and ``churn score`` (the same snapshot,
probabilities, explanations, escalations, actions; no store write), from validated tables in
memory. Events are the rows of every table
but ``accounts``.

Data: 1x is the demo data (1,500 accounts, 4 years, about 218,000 events; generated once into
the work folder as Parquet and reused). A size of k x is k copies of the validated 1x firm with
every id made unique per copy: k times the accounts and events with exactly the 1x mix, so the
per-event figures differ only by size. (The generator itself writes 100x in flat memory,
``churn demo-data --accounts 150000``, but generating and validating it takes longer than this
whole benchmark.) 100x needs about 10 GB of free memory (client and workers together); with
less, 30x is measured instead. About five minutes on two busy cores, most of it at 100x;
``CHURN_BENCH_SCALING=1,10,30`` picks other sizes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from bench.common import Result, best_of

BASE_ACCOUNTS = 1500
BASE_YEARS = 4
DEFAULT_SIZES = (1, 10, 100)
FALLBACK_SIZE = 30  # measured instead of a size that does not fit in memory
TARGET = 1 / 1.5  # seconds per event at most 1.5 x the 1x figure
REPEAT_1X = 3  # the 1x runs are short and noisy: best of three (conservative for the ratio)
ID_COLUMNS = ("account_id", "invoice_id", "project_id", "contact_id")
# Memory per 1x of data, client and two workers together, with headroom: 1x is 18 MB of
# tables; at 100x the client peaked at 5.4 GB (source, its copy, the partitions being sent,
# results) and the workers hold the partitions and their snapshots besides.
BYTES_PER_1X = 100 * 2**20


def _sizes() -> list[int]:
    raw = os.environ.get("CHURN_BENCH_SCALING", "")
    sizes = sorted({int(s) for s in raw.split(",") if s.strip()} | {1}) if raw else None
    return sizes or list(DEFAULT_SIZES)


def _say(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[dim]scaling:[/] {message}", highlight=False)


def _base_source(workdir: Path) -> Path:
    """The 1x demo data as Parquet under the work folder (generated on the first run)."""
    from features.demo import generate_demo

    folder = workdir / "scaling" / f"demo-{BASE_ACCOUNTS}x{BASE_YEARS}y"
    if not (folder / "tickets.parquet").is_file():
        generate_demo(folder, accounts=BASE_ACCOUNTS, years=BASE_YEARS, fmt="parquet")
    return folder


def tile(tables: Any, copies: int) -> Any:
    """``copies`` copies of a source, ids made unique per copy (copy 0 keeps its ids)."""
    from features.contract import Tables

    if copies == 1:
        return tables
    frames = {}
    for name, frame in tables:
        parts = [frame]
        for k in range(1, copies):
            suffix = f"~{k}"
            parts.append(frame.assign(**{c: frame[c] + suffix for c in ID_COLUMNS if c in frame}))
        frames[name] = pd.concat(parts, ignore_index=True)
    return Tables(**frames, source=f"{tables.source} x{copies}", meta=dict(tables.meta))


def _events(tables: Any) -> int:
    return sum(len(frame) for name, frame in tables if name != "accounts")


def _bundle(loaded: Any, settings: Any, workdir: Path) -> Any:
    """A model like the shipped one (the training pipeline's own frame, split and fit steps
    with the training config, in one process), cached as LightGBM text under the work folder."""
    import lightgbm as lgb

    from churn.bundle import Bundle, Calibration
    from churn.engine import LocalEngine
    from training.config import plan_run
    from training.fit import fit_model
    from training.frame import build_training_frame
    from training.split import split_by_time

    plan = plan_run(settings)
    path = workdir / "scaling" / "model.txt"
    if not path.is_file():
        engine = LocalEngine()
        data = build_training_frame(loaded, plan, engine)
        parts = split_by_time(
            data.frame, plan.config.split, plan.snapshots.horizon_days, plan.features
        )
        path.write_text(fit_model(engine, data.snapshots, parts, plan).model_text)
    return Bundle(
        path=path.parent / "bundle",
        booster=lgb.Booster(model_file=str(path)),
        calibration=Calibration("none"),
        metadata={"model_version": "bench-scaling", "feature_names": list(plan.features)},
        catalog=[],
    )


def _measure(
    label: str, sizes: list[int], base: Any, run: Callable[[Any], Any]
) -> dict[int, dict[str, float]]:
    """Seconds and seconds per million events of ``run(tables)`` at each size."""
    curve: dict[int, dict[str, float]] = {}
    for k in sizes:
        tables = tile(base, k)
        events = _events(tables)
        seconds = best_of(lambda t=tables: run(t), repeat=REPEAT_1X if k == 1 else 1)
        per_million = seconds / (events / 1e6)
        curve[k] = {
            "accounts": len(tables.accounts),
            "events": events,
            "seconds": round(seconds, 3),
            "s_per_1M_events": round(per_million, 3),
        }
        _say(f"{label} {k}x: {events:,} events in {seconds:.1f} s ({per_million:.2f} s per 1M)")
        del tables
    return curve


def _results(stage: str, engine: str, curve: dict[int, dict[str, float]]) -> list[Result]:
    base = curve[1]
    return [
        Result(
            name=f"scaling {stage} ({engine}): {k}x vs 1x per event",
            unit="s/1M events",
            ours=point["s_per_1M_events"],
            reference=base["s_per_1M_events"],
            reference_name="1x",
            target=round(TARGET, 2),
            higher_is_better=False,
            extra={"curve": {f"{s}x": v for s, v in curve.items()}},
        )
        for k, point in curve.items()
        if k != 1
    ]


def run(workdir: Path) -> list[Result]:
    import psutil

    from churn.engine import DaskEngine, Engine, LocalEngine, dask_client
    from churn.settings import load_settings
    from features.distributed import build_snapshots
    from features.health import load_health_config
    from features.validate import load_validated
    from serving.batch import default_as_of, score_batches

    settings = load_settings(rejects_dir=workdir / "scaling" / "rejects")
    loaded = load_validated(_base_source(workdir), settings)
    base = loaded.tables
    sizes = _sizes()
    free = psutil.virtual_memory().available
    fits = [k for k in sizes if k * BYTES_PER_1X <= free]
    if fits != sizes:
        if FALLBACK_SIZE not in fits and free >= FALLBACK_SIZE * BYTES_PER_1X:
            fits = sorted({*fits, FALLBACK_SIZE})
        _say(f"{free / 2**30:.1f} GiB free: sizes {fits} instead of {sizes}")
    sizes = fits
    day: date = default_as_of(base)
    health = load_health_config(settings.health_config)
    bundle = _bundle(loaded, settings, workdir)
    cfg = settings.snapshots

    curves: dict[tuple[str, str], dict[int, dict[str, float]]] = {}

    def measure(engine: Engine) -> None:
        """Both commands' workloads on ``engine``, at every size."""
        curves["features", engine.name] = _measure(
            f"features {engine.name}",
            sizes,
            base,
            lambda t: build_snapshots(engine, t, [day], cfg, health=health),
        )
        curves["scoring", engine.name] = _measure(
            f"scoring {engine.name}",
            sizes,
            base,
            lambda t: score_batches(t, [day], bundle, settings, engine=engine, health=health),
        )

    measure(LocalEngine())
    with dask_client(n_workers=2, threads_per_worker=1) as client:
        measure(DaskEngine(client))

    results: list[Result] = []
    for (stage, engine), curve in curves.items():
        results.extend(_results(stage, engine, curve))
    top = max(sizes)
    for stage in ("features", "scoring"):
        local, dask = curves[stage, "local"][top], curves[stage, "dask"][top]
        results.append(
            Result(
                name=f"scaling {stage}: dask (2 workers) vs local at {top}x",
                unit="s/1M events",
                ours=dask["s_per_1M_events"],
                reference=local["s_per_1M_events"],
                reference_name="one process",
                higher_is_better=False,
                extra={"events": local["events"], "cores": os.cpu_count()},
            )
        )
    return results


__all__ = ["run", "tile"]
