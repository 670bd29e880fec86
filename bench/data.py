"""What the benchmark suites share: the demo source, its validated tables and snapshots, and a
model trained on it, each made once under the bench workdir and reused by the next suite.

Everything lives under ``workdir`` (``data/bench`` for ``make bench``): the demo folder, the
rejects, and a self-contained MLflow store (SQLite tracking file, artifact folder, models
folder), so a benchmark never touches the project's own ``mlruns/`` or ``models/``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn.console import err_console

if TYPE_CHECKING:
    import pandas as pd

    from churn.settings import Settings
    from features.contract import Tables
    from training.pipeline import TrainResult

MARKER = "bench-source.json"


@dataclass(frozen=True)
class DemoSpec:
    """The generated source: ``features.demo.generate_demo`` arguments (defaults = `make data`)."""

    accounts: int = 1500
    years: int = 4
    seed: int = 42

    @property
    def folder_name(self) -> str:
        return f"demo-{self.accounts}a-{self.years}y-s{self.seed}"


DEMO = DemoSpec()
# The large sample of the quality suite: ten times the demo's accounts, another seed, so a gain
# of 0.01 in a test metric stands out of the sampling noise (about 16 s and 140 MB to generate).
LARGE = DemoSpec(accounts=15000, years=4, seed=7)


def demo_source(workdir: Path, spec: DemoSpec = DEMO) -> Path:
    """The demo folder for ``spec`` under ``workdir``, generated on first use (a marker file
    written last says the folder is complete)."""
    from features.demo import generate_demo

    folder = Path(workdir) / spec.folder_name
    marker = folder / MARKER
    if marker.exists() and json.loads(marker.read_text()) == asdict(spec):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    err_console.print(f"generating the demo source ({spec.accounts} accounts) in {folder}")
    generate_demo(folder, accounts=spec.accounts, seed=spec.seed, years=spec.years)
    marker.write_text(json.dumps(asdict(spec)))
    return folder


def bench_settings(workdir: Path, models_root: Path | None = None) -> Settings:
    """Settings whose every writable place is under ``workdir`` (``models_root`` for the
    MLflow store and models folder, default ``workdir/model``)."""
    from churn.settings import load_settings

    root = Path(models_root or Path(workdir) / "model").resolve()
    return load_settings(
        models_dir=root / "models",
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifacts_dir=root / "artifacts",
        rejects_dir=Path(workdir).resolve() / "rejects",
    )


@cache
def demo_tables(workdir: Path, spec: DemoSpec = DEMO) -> Tables:
    """The demo source read and validated as ``churn train`` reads it (once per process)."""
    from features.validate import load_validated

    folder = demo_source(workdir, spec)
    return load_validated(str(folder), bench_settings(workdir)).tables


@cache
def demo_snapshots(workdir: Path, spec: DemoSpec = DEMO) -> pd.DataFrame:
    """Every monthly snapshot of the demo source, with health scores (once per process)."""
    from features.snapshots import as_of_grid, build_snapshots

    tables = demo_tables(workdir, spec)
    cfg = bench_settings(workdir).snapshots
    return build_snapshots(tables, as_of_grid(tables, cfg), cfg)


@dataclass(frozen=True)
class TrainedModel:
    """A model trained on the demo source: its MLflow store and its champion bundle."""

    root: Path
    settings: Settings
    tracking_uri: str
    champion: Path
    registered_model: str


def _model_marker(root: Path) -> Path:
    return root / MARKER


@contextmanager
def bench_store_only() -> Iterator[None]:
    """Within the block MLflow uses the settings' store (the bench's), whatever
    MLFLOW_TRACKING_URI the user's shell names."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def train_in_bench_store(folder: Path, settings: Settings, **options: Any) -> TrainResult:
    """``training.pipeline.train`` on ``folder`` into the bench's own MLflow store (the
    settings'); ``options`` as train's."""
    from training.pipeline import train

    with bench_store_only():
        return train(str(folder), settings, progress=True, **options)


def fresh_store(root: Path) -> Path:
    """``root`` resolved, emptied and created: a new MLflow store and models folder."""
    root = Path(root).resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


def train_model(workdir: Path, spec: DemoSpec = DEMO) -> tuple[TrainedModel, TrainResult]:
    """Train on the demo source into a fresh store under ``workdir/model`` (the previous one is
    removed, so the first version is the champion); returns the model and the run's result."""
    folder = demo_source(workdir, spec)
    root = fresh_store(Path(workdir) / "model")
    settings = bench_settings(workdir, root)
    result = train_in_bench_store(folder, settings)
    if result.champion_path is None:
        raise RuntimeError(f"the bench training run left no champion under {root}")
    _model_marker(root).write_text(json.dumps(asdict(spec)))
    return _trained(root, settings), result


def trained_model(workdir: Path, spec: DemoSpec = DEMO) -> TrainedModel:
    """The model of the last bench training run on ``spec``, trained now if there is none."""
    root = (Path(workdir) / "model").resolve()
    marker = _model_marker(root)
    if marker.exists() and json.loads(marker.read_text()) == asdict(spec):
        model = _trained(root, bench_settings(workdir, root))
        if model.champion.exists():
            return model
    err_console.print("no bench model yet: training one on the demo source")
    return train_model(workdir, spec)[0]


def _trained(root: Path, settings: Settings) -> TrainedModel:
    from churn.bundle import CHAMPION_DIR

    return TrainedModel(
        root=root,
        settings=settings,
        tracking_uri=settings.mlflow_tracking_uri,  # ours, whatever MLFLOW_TRACKING_URI says
        champion=Path(settings.models_dir) / CHAMPION_DIR,
        registered_model=settings.registered_model_name,
    )
