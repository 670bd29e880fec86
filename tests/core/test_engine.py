"""The engine seam in one process: the local engine maps over its one partition (the whole
source) in this process, and the snapshots and batch scores built through it equal the
single-process functions' (``features.snapshots.build_snapshots``,
``serving.batch.score_snapshot``), frame for frame. The Dask engine's equality with these is
checked in tests/test_dask_engine.py.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from churn.engine import Engine, LocalEngine, open_engine
from churn.settings import load_settings
from features.distributed import partition_tables, snapshot_partitions
from features.snapshots import as_of_grid, build_snapshots


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    root = tmp_path_factory.mktemp("settings")
    return load_settings(rejects_dir=root / "rejects", models_dir=root / "models")


@pytest.fixture(scope="module")
def tables(demo_source, settings):
    from features.validate import load_validated

    return load_validated(demo_source, settings).tables


def test_the_local_engine_is_one_partition_mapped_in_this_process(settings):
    with open_engine(settings) as engine:
        assert isinstance(engine, LocalEngine) and isinstance(engine, Engine)
        assert engine.partition_count(1_000_000) == 1
        parts = engine.scatter([2, 3])
        doubled = engine.map(lambda v, k, add: v * k + add, parts, [10, 100], add=1)
        assert engine.gather(doubled) == [21, 301]
        shared = engine.broadcast({"a": 1})
        assert engine.gather(engine.map(lambda v, s: v + s["a"], parts, s=shared)) == [3, 4]
        ran = engine.collective(in_process=lambda: "here", on_cluster=lambda client: "there")
        assert ran == "here"


def test_one_partition_is_the_whole_source(tables):
    (only,) = partition_tables(tables, 1)
    assert only is tables


@pytest.mark.parametrize("with_health", [True, False])
def test_local_engine_snapshots_equal_the_single_process_frame(tables, settings, with_health):
    cfg = settings.snapshots
    grid = as_of_grid(tables, cfg)
    dates = [grid[0], grid[len(grid) // 2], grid[-1]]
    parted = snapshot_partitions(LocalEngine(), tables, dates, cfg, with_health=with_health)
    frame = parted.gather()
    expected = build_snapshots(tables, dates, cfg, with_health=with_health)
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)
    assert parted.rows == [len(expected)]


def test_local_engine_batch_scores_equal_the_single_process_scores(tables, settings, tmp_path):
    from churn.bundle import load_bundle
    from features.catalog import FEATURES
    from features.health import load_health_config
    from serving.batch import default_as_of, history_dates, score_batches, score_snapshot
    from serving.playbook import load_playbook
    from tests.support.bundle_factory import make_bundle

    health = load_health_config(settings.health_config)
    playbook = load_playbook(settings.playbook_config, known_features=FEATURES)
    dates = history_dates(default_as_of(tables), 2)
    snapshot = build_snapshots(tables, list(dates), settings.snapshots, health=health)
    bundle = load_bundle(make_bundle(Path(tmp_path) / "bundle"))
    for model in (bundle, None):
        ours = score_batches(tables, dates, model, settings, engine=LocalEngine())
        theirs = score_snapshot(
            snapshot,
            dates,
            model,
            health=health,
            playbook=playbook,
            top=settings.serve.top_reasons,
        )
        assert [b.as_of for b in ours] == [b.as_of for b in theirs]
        for mine, single in zip(ours, theirs, strict=True):
            assert mine.model_version == single.model_version
            for name in ("scores", "reasons", "escalations", "actions"):
                pd.testing.assert_frame_equal(
                    getattr(mine, name), getattr(single, name), check_exact=True
                )
