"""The Dask engine on a local cluster of two worker processes: snapshots equal to the
single-process ones (events and inactivity labels), batch scores equal within 1e-9 for the same
model, ``churn train`` on the cluster (lightgbm.dask) on the same split and rows as the
single-process fit (the pipeline's own steps on the local engine), with a known gap in test ROC
AUC between the two (an expected failure, see its comment),
and ``churn features --engine dask`` writing the same file as the single-process command.

One cluster serves the module (started by ``churn.engine.dask_client`` without an address, as
the commands do without ``--scheduler``); the training and command tests reach it by its
scheduler address, as a remote cluster is reached.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.bundle import load_bundle
from churn.engine import DaskEngine, LocalEngine, dask_client, partition_of, resolve_engine
from churn.errors import ConfigError
from churn.settings import load_settings
from features.distributed import partition_tables, snapshot_partitions
from features.snapshots import as_of_grid, build_snapshots
from features.validate import load_validated
from serving.batch import default_as_of, history_dates, score_batches

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client():
    with dask_client(n_workers=2, threads_per_worker=1) as dask:
        yield dask


@pytest.fixture(scope="module")
def engine(client) -> DaskEngine:
    return DaskEngine(client)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    from features.demo import generate_demo

    folder = tmp_path_factory.mktemp("demo")
    generate_demo(folder, accounts=300, years=3, fmt="parquet")
    return folder


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    root = tmp_path_factory.mktemp("settings")
    return load_settings(rejects_dir=root / "rejects", models_dir=root / "models")


@pytest.fixture(scope="module")
def tables(source, settings):
    return load_validated(source, settings).tables


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["as_of", "account_id"], kind="stable", ignore_index=True)


def test_partitions_keep_every_account_whole_and_lose_no_row(tables):
    parts = partition_tables(tables, 4)
    assert len(parts) == 4
    home: dict[str, int] = {}
    for i, part in enumerate(parts):
        for account in part.accounts["account_id"]:
            assert account not in home
            home[account] = i
    assert len(home) == len(tables.accounts)
    for name, frame in tables:
        assert sum(len(p.get(name)) for p in parts) == len(frame)
        for i, part in enumerate(parts):
            assert {home[a] for a in part.get(name)["account_id"]} <= {i}, name
    # The partition of an id is a pure function of the id.
    ids = tables.accounts["account_id"]
    np.testing.assert_array_equal(partition_of(ids, 4), partition_of(ids.copy(), 4))


def test_engine_flags_resolve_and_contradictions_fail(settings):
    assert resolve_engine(settings, None, None).engine == "local"
    chosen = resolve_engine(settings, None, "tcp://10.0.0.5:8786")
    assert (chosen.engine, chosen.dask_scheduler) == ("dask", "tcp://10.0.0.5:8786")
    assert resolve_engine(settings, "dask", None).engine == "dask"
    with pytest.raises(ConfigError, match="--engine is local"):
        resolve_engine(settings, "local", "tcp://10.0.0.5:8786")
    with pytest.raises(ConfigError, match="not an engine"):
        resolve_engine(settings, "spark", None)


@pytest.mark.parametrize("label_mode", ["events", "inactivity"])
def test_features_on_the_cluster_equal_the_single_process_ones(
    engine, tables, settings, label_mode
):
    cfg = settings.snapshots.model_copy(update={"label_mode": label_mode})
    grid = as_of_grid(tables, cfg)
    dates = [grid[0], grid[len(grid) // 2], grid[-1]]
    local = build_snapshots(tables, dates, cfg)
    parted = snapshot_partitions(engine, tables, dates, cfg)
    assert len(parted.parts) >= 2 and len(set(parted.parts.homes)) == 2  # really spread out
    dask = parted.gather()
    pd.testing.assert_frame_equal(_sorted(dask), _sorted(local), check_exact=True)
    pd.testing.assert_frame_equal(dask, local, check_exact=True)  # same order too
    assert dask["revenue_segment"].notna().any() and dask["health_score"].notna().all()

    bare = snapshot_partitions(engine, tables, dates, cfg, with_health=False).gather()
    pd.testing.assert_frame_equal(bare, build_snapshots(tables, dates, cfg, with_health=False))


def test_batch_scores_on_the_cluster_equal_the_single_process_ones(
    engine, tables, settings, tiny_bundle
):
    bundle = load_bundle(tiny_bundle)
    dates = history_dates(default_as_of(tables), 2)
    for model in (bundle, None):
        local = score_batches(tables, dates, model, settings)
        dask = score_batches(tables, dates, model, settings, engine=engine)
        assert [b.as_of for b in dask] == [b.as_of for b in local]
        for ours, theirs in zip(dask, local, strict=True):
            assert ours.model_version == theirs.model_version
            assert len(ours.scores) > 100
            if model is not None:
                diff = ours.scores["churn_probability"] - theirs.scores["churn_probability"]
                assert diff.abs().max() <= 1e-9
                assert ours.scores["churn_probability"].notna().all()
            for name in ("scores", "reasons", "escalations", "actions"):
                pd.testing.assert_frame_equal(
                    getattr(ours, name), getattr(theirs, name), check_exact=False, rtol=0, atol=1e-9
                )


@pytest.fixture(scope="module")
def dask_and_local_fits(client, source, tmp_path_factory) -> dict[str, float]:
    """``churn train`` on the cluster and the single-process fit of the same split: the test
    ROC AUC of each on the same test rows, and the Dask run's own (calibrated) figure."""
    from sklearn.metrics import roc_auc_score

    from training.config import plan_run
    from training.fit import fit_model
    from training.frame import build_training_frame
    from training.pipeline import train
    from training.split import split_by_time

    root = tmp_path_factory.mktemp("dask-train")
    settings = load_settings(
        models_dir=root / "models",
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifacts_dir=root / "artifacts",
        rejects_dir=root / "rejects",
        engine="dask",
        dask_scheduler=client.scheduler.address,
    )
    dask = train(str(source), settings, progress=False)
    prefixes = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert "training_block" in prefixes and "train_part" in prefixes  # key_split drops "_"

    # The single-process fit: the pipeline's own steps on the local engine, as `churn train`
    # runs them without Dask; the same split and test rows as the Dask run.
    local_engine = LocalEngine()
    plan = plan_run(settings)
    data = build_training_frame(load_validated(source, settings), plan, local_engine)
    parts = split_by_time(data.frame, plan.config.split, plan.snapshots.horizon_days, plan.features)
    assert parts.split.to_dict() == dask.split.to_dict()
    pd.testing.assert_frame_equal(
        parts.test.frame[["account_id", "as_of"]], dask.test_frame[["account_id", "as_of"]]
    )
    assert list(parts.features) == dask.feature_names
    local = fit_model(local_engine, data.snapshots, parts, plan)
    x_te, y_te = parts.test.x, parts.test.y
    bundle = load_bundle(dask.bundle_path)  # the exported Dask-trained model
    return {
        "local": roc_auc_score(y_te, local.booster.predict(x_te)),
        "dask": roc_auc_score(y_te, bundle.raw_probability(x_te)),
        "dask_calibrated": dask.metrics["model"]["roc_auc"],
    }


def test_lightgbm_dask_trains_a_useful_model_on_the_same_split(dask_and_local_fits):
    auc = dask_and_local_fits
    assert auc["local"] > 0.6 and auc["dask"] > 0.6
    assert abs(auc["dask_calibrated"] - auc["dask"]) <= 0.005  # calibrated, same ranks


# Known gap: the data-parallel fit builds each feature's histogram bins from one worker's own
# rows and bags per worker, and early stopping then ends at another round. Measured on
# generated demos (3 years, seed 42): 300 accounts 0.729 vs 0.731 before the purchase
# features, 0.717 vs 0.701 and 0.684 (two runs) after; 600 accounts 0.771 vs 0.735 even
# without them (best rounds 247 vs 190). Not strict: the Dask fit varies between runs.
@pytest.mark.xfail(
    strict=False,
    reason="lightgbm.dask fit can end 0.02-0.04 ROC AUC below the single-process fit "
    "(per-worker histogram bins and bagging); see the comment above",
)
def test_lightgbm_dask_model_scores_the_test_period_within_001_roc_auc(dask_and_local_fits):
    auc = dask_and_local_fits
    assert abs(auc["dask"] - auc["local"]) <= 0.01, auc


def _features_command(source: Path, out: Path, tmp: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    env |= {"CHURN_REJECTS_DIR": str(tmp / "rejects"), "PYTHONPATH": str(ROOT)}
    args = ["features", "--data", str(source), "--as-of", "2026-03-01", "--out", str(out)]
    return subprocess.Popen(
        [sys.executable, "-c", "from churn_cli.main import main; main()", *args, *extra],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_features_command_with_engine_dask_writes_the_same_file(client, source, tmp_path):
    address = client.scheduler.address
    runs = {
        "local": _features_command(source, tmp_path / "local.parquet", tmp_path),
        "dask": _features_command(
            source, tmp_path / "dask.parquet", tmp_path, "--engine", "dask", "--scheduler", address
        ),
    }
    for name, run in runs.items():
        stdout, stderr = run.communicate(timeout=240)
        assert run.returncode == 0, f"{name}: {stderr}"
        assert "wrote" in stdout and "Traceback" not in stderr
    local = pd.read_parquet(tmp_path / "local.parquet")
    assert len(local) > 100
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dask.parquet"), local)
    assert (tmp_path / "dask.parquet").read_bytes() == (tmp_path / "local.parquet").read_bytes()
