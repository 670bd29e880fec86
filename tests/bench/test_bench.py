"""`make bench` stays runnable: the runner writes its results file and table (and survives a
broken suite), the feature suite runs for real on a tiny demo source, the scoring suite on a
tiny bundle, the API payloads pass the API's own request schema, and the vectorised impact
text used by batch scoring reads exactly like the per-reason text. No timing is asserted.
"""

from __future__ import annotations

import json
import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bench.__main__ as runner
from bench import api, features, purchase, scoring, training
from bench.common import Result
from bench.data import DemoSpec, bench_settings, demo_tables
from serving.explain import format_pts, format_pts_array

TINY = DemoSpec(accounts=120, years=2, seed=7)


def _suite(monkeypatch: pytest.MonkeyPatch, name: str, run) -> None:
    module = types.ModuleType(f"bench.{name}")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, f"bench.{name}", module)


def test_runner_writes_results_and_table_and_reports_a_broken_suite(tmp_path, monkeypatch, capsys):
    def fine(workdir: Path) -> list[Result]:
        assert workdir.is_dir()
        return [
            Result("fast thing", "rows/s", 300.0, 100.0, "slow thing", target=2.0),
            Result("latency", "ms", 5.0, 25.0, "budget", target=1.0, higher_is_better=False),
            Result("short", "req/s", 1.0, 4.0, "other", target=0.8),
        ]

    def broken(workdir: Path) -> list[Result]:
        raise ValueError("no data")

    _suite(monkeypatch, "fake_fine", fine)
    _suite(monkeypatch, "fake_broken", broken)
    monkeypatch.setattr(runner, "SUITES", ("fake_fine", "fake_broken"))
    monkeypatch.setattr(runner, "OUT", tmp_path / "results.json")
    monkeypatch.chdir(tmp_path)

    assert runner.main([]) == 1  # a failed suite fails the command, after the others' figures
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["machine"]["cores"] == os.cpu_count()
    assert report["failures"] == {"fake_broken": "ValueError: no data"}
    by_name = {r["name"]: r for r in report["results"]}
    assert by_name["fast thing"]["ratio"] == 3.0 and by_name["fast thing"]["meets_target"]
    assert by_name["latency"]["ratio"] == 5.0 and by_name["latency"]["meets_target"]
    assert by_name["short"]["ratio"] == 0.25 and by_name["short"]["meets_target"] is False
    shown = capsys.readouterr().out
    assert "fast thing" in shown and "3.00x" in shown and "fake_broken failed" in shown
    assert runner.main(["nonsense"]) == 2


def test_feature_suite_runs_on_a_tiny_demo_and_the_copy_is_twice_the_source(tmp_path):
    results = features.run(tmp_path, spec=TINY, scale=2, repeat=1)
    assert len(results) == 5
    for r in results:
        assert math.isfinite(r.ratio) and r.ours > 0 and r.reference > 0, r
    demo, copy = results[0].extra, results[1].extra
    assert copy["events"] == 2 * demo["events"]
    # Every cloned account is active exactly when its original is: twice the rows.
    assert copy["rows"] == 2 * demo["rows"]
    assert (tmp_path / TINY.folder_name / "bench-source.json").exists()


def test_replicated_accounts_keep_unique_keys_and_the_duckdb_scan_sees_every_event(tmp_path):
    tables = demo_tables(tmp_path, TINY)
    copy = features.replicate(tables, 3)
    assert copy.accounts["account_id"].is_unique
    assert len(copy.accounts) == 3 * len(tables.accounts)
    assert copy.invoices["invoice_id"].is_unique
    counted = sum(n for _, n, _, _ in features.duckdb_scan(copy)())
    assert counted == features.event_count(copy) == 3 * features.event_count(tables)


def test_scoring_suite_measures_on_a_tiny_bundle(tmp_path):
    from churn.bundle import load_bundle
    from tests.support.bundle_factory import make_bundle, synthetic_features

    bundle = load_bundle(make_bundle(tmp_path / "b", trees=10))
    x = synthetic_features(50, seed=3)
    snapshot = pd.DataFrame(x, columns=list(bundle.feature_names))
    snapshot.insert(0, "account_id", [f"A{i}" for i in range(50)])
    snapshot.insert(0, "as_of", pd.Timestamp("2026-01-01"))
    result = scoring.measure(snapshot, bundle, top=3, repeat=1)
    assert result.extra["rows"] == 50 and result.target == scoring.TARGET
    assert math.isfinite(result.ratio) and result.ratio > 0


def test_training_targets_follow_the_issue():
    def metrics(model_roc: float) -> dict[str, dict[str, float]]:
        return {
            "model": {"roc_auc": model_roc, "pr_auc": 0.2, "ece": 0.01},
            "health_score": {"roc_auc": 0.6, "pr_auc": 0.1, "ece": 0.2},
            "logistic": {"roc_auc": 0.7, "pr_auc": 0.15, "ece": 0.01},
        }

    ok = {r.name: r for r in training.quality_results(metrics(0.66), 40.0)}
    short = {r.name: r for r in training.quality_results(metrics(0.649), 200.0)}
    roc = "training: test ROC AUC, model vs health score"
    assert ok[roc].meets_target and not short[roc].meets_target
    wall = "training: demo `make train` run, wall time"
    assert ok[wall].meets_target and not short[wall].meets_target


def test_purchase_rows_need_the_model_001_above_each_baseline():
    def metrics(model: float) -> dict:
        return {
            "model": {"roc_auc": model},
            "recency": {"roc_auc": 0.55},
            "bgnbd": {"roc_auc": 0.7},
        }

    ok = {r.reference_name: r for r in purchase.purchase_results(metrics(0.711), "split")}
    short = {r.reference_name: r for r in purchase.purchase_results(metrics(0.709), "split")}
    bgnbd, recency = "BG/NBD P(no purchase)", "days since the last purchase"
    assert ok[bgnbd].meets_target and not short[bgnbd].meets_target
    assert ok[recency].meets_target and short[recency].meets_target
    assert ok[bgnbd].extra["split"] == "split"


def test_health_rule_rows_follow_the_issue_and_print_the_interval():
    def bands(below_60: float) -> dict:
        return {
            "healthy": {"share_of_rows": 1 - below_60},
            "at_risk": {"share_of_rows": below_60 - 0.005},
            "critical": {"share_of_rows": 0.005},
        }

    def backtest(roc: float, recall: float, below_60: float, healthy: float) -> dict:
        return {
            "current": {
                "roc_auc": 0.63,
                "recall_at_equal_workload": 0.2,
                "churners_in_healthy_band": 0.8,
            },
            "suggested": {
                "roc_auc": roc,
                "recall_at_equal_workload": recall,
                "churners_in_healthy_band": healthy,
            },
            "interval": {"low": 0.02, "high": 0.1, "resamples": 1000},
            "workload_share": 0.066,
            "bands": {"current": bands(0.066), "suggested": bands(below_60)},
        }

    ok = training.health_results(backtest(0.68, 0.28, 0.066, 0.79))
    short = training.health_results(backtest(0.679, 0.279, 0.065, 0.8))
    assert [r.meets_target for r in ok] == [True, True, True, True]
    assert [r.meets_target for r in short] == [False, False, False, False]
    assert "(0.5 % below 40)" in ok[2].name
    assert "95 % bootstrap interval +0.020 to +0.100" in ok[0].name
    assert "6.6 % of test rows" in ok[1].name


def test_api_payloads_pass_the_api_schema_and_carry_the_same_rows(tmp_path):
    from features.catalog import MODEL_FEATURES
    from features.snapshots import build_snapshots
    from serving.batch import default_as_of
    from serving.schemas import PredictRequest

    tables = demo_tables(tmp_path, TINY)
    snapshot = build_snapshots(
        tables, [default_as_of(tables)], bench_settings(tmp_path).snapshots
    ).reset_index(drop=True)
    ours = api.predict_bodies(snapshot, 7, 3)
    theirs = api.mlflow_bodies(snapshot, list(MODEL_FEATURES), 7, 3)
    assert len(ours) == len(theirs) == 3
    for mine, reference in zip(ours, theirs, strict=True):
        request = PredictRequest.model_validate_json(mine)
        frame = json.loads(reference)["dataframe_split"]
        assert frame["columns"] == list(MODEL_FEATURES)
        assert len(request.accounts) == len(frame["data"]) == 7
        first = request.accounts[0]
        row = dict(zip(frame["columns"], frame["data"][0], strict=True))
        for name in MODEL_FEATURES:
            assert first.features.get(name) == row[name]


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=60))
def test_vectorised_impact_text_reads_exactly_like_format_pts(values):
    edges = [0.05, 0.95, 0.25, 0.35, 0.45, 1.5, 2.5, -0.05, -0.95, -0.35, 0.0, -0.0]
    edges += [float(np.nextafter(v, d)) for v in edges for d in (-1.0, 1.0)]
    pts = np.array(values + edges, dtype=float)
    assert format_pts_array(pts).tolist() == [format_pts(v) for v in pts.tolist()]
