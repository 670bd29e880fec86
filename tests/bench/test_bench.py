"""`make bench` stays runnable: the runner writes its results file and table (and survives a
broken suite), the feature suite runs for real on a tiny demo source, the scoring suite on a
tiny bundle, the API payloads pass the API's own request schema, the vectorised impact
text used by batch scoring reads exactly like the per-reason text, and the quality suite's
pieces (ablation and importance tables on the tiny demo, headline rows with their intervals on
synthetic test rows) hold together. No timing is asserted.
"""

from __future__ import annotations

import dataclasses
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
from bench import api, features, purchase, quality, scoring, training
from bench.common import Result, SuiteOutput
from bench.data import DemoSpec, bench_settings, demo_source, demo_tables
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


# ---------------------------------------------------------------------------- quality suite


def test_runner_stores_a_suites_tables_beside_its_rows(tmp_path, monkeypatch):
    def with_tables(workdir: Path) -> SuiteOutput:
        row = Result("auc", "ROC AUC", 0.9, 0.8, "today", target=1.0)
        return SuiteOutput([row], {"ablation": [{"set": "all features", "roc_auc": 0.9}]})

    _suite(monkeypatch, "fake_tables", with_tables)
    monkeypatch.setattr(runner, "SUITES", ("fake_tables",))
    monkeypatch.setattr(runner, "OUT", tmp_path / "results.json")
    monkeypatch.chdir(tmp_path)

    assert runner.main([]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert [r["name"] for r in report["results"]] == ["auc"]
    assert report["tables"] == {
        "fake_tables": {"ablation": [{"set": "all features", "roc_auc": 0.9}]}
    }


def _relabel(monkeypatch: pytest.MonkeyPatch, names: list[str], basis: str) -> None:
    from features import catalog

    for name in names:
        monkeypatch.setitem(
            catalog.FEATURES, name, dataclasses.replace(catalog.FEATURES[name], basis=basis)
        )


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    """The plan and split labeled frame of the tiny demo, built once for the quality tests."""
    from features.catalog import MODEL_FEATURES
    from training.progress import SILENT

    workdir = tmp_path_factory.mktemp("quality")
    folder = demo_source(workdir, TINY)
    return quality.labeled_split(folder, bench_settings(workdir), MODEL_FEATURES, SILENT)


@pytest.mark.parametrize("baseline", ["none", "some"])
def test_ablation_has_a_row_per_family_and_basis_and_the_importance_shares_add_to_one(
    tiny_split, monkeypatch, baseline
):
    """With no baseline feature the baseline-only row says so; with some, it is fitted."""
    from features.catalog import BASES, FAMILIES, FEATURES, MODEL_FEATURES
    from training.progress import SILENT

    plan, parts = tiny_split
    if baseline == "none":
        _relabel(monkeypatch, [f for f in MODEL_FEATURES if FEATURES[f].basis != "level"], "level")
    else:  # the relationship family, relabeled as changes against the account's baseline
        _relabel(
            monkeypatch,
            [f for f in MODEL_FEATURES if FEATURES[f].family == "relationship"],
            "baseline",
        )
    tables = quality.ablation_and_importance(parts, plan, workers=2, progress=SILENT)

    rows = {r["set"]: r for r in tables["ablation"]}
    expected = ["all features", *(f"minus {f}" for f in FAMILIES), *(f"{b} only" for b in BASES)]
    assert list(rows) == expected
    assert [r["kind"] for r in tables["ablation"]] == ["all"] + ["family"] * 6 + ["basis"] * 2
    n = len(parts.features)
    for family in FAMILIES:
        in_family = sum(FEATURES[f].family == family for f in parts.features)
        assert rows[f"minus {family}"]["features"] == n - in_family
    assert rows["all features"]["roc_auc_gain"] is None
    by_basis = {b: sum(FEATURES[f].basis == b for f in parts.features) for b in BASES}
    assert by_basis["baseline"] == (0 if baseline == "none" else rows["baseline only"]["features"])
    for name, row in rows.items():
        if row["features"] == 0:
            assert row["roc_auc"] is None and "no baseline features" in row["note"]
            continue
        assert 0.0 <= row["roc_auc"] <= 1.0 and 0.0 <= row["pr_auc"] <= 1.0
        if name != "all features":
            for metric in ("roc_auc", "pr_auc"):
                point, low, high = row[f"{metric}_gain"]
                assert low <= high and math.isclose(
                    point, row[metric] - rows["all features"][metric], abs_tol=1e-12
                )
    if baseline == "some":
        assert rows["baseline only"]["roc_auc"] is not None and not rows["baseline only"]["note"]

    for key, column in (("importance_by_family", "family"), ("importance_by_basis", "basis")):
        shares = tables[key]
        assert [r[column] for r in shares] == list(FAMILIES if column == "family" else BASES)
        assert math.isclose(sum(r["share"] for r in shares), 1.0)
        assert all(r["share"] >= 0 for r in shares)
    basis_share = {r["basis"]: r["share"] for r in tables["importance_by_basis"]}
    if baseline == "none":
        assert basis_share["baseline"] == 0.0
    top = tables["importance_top_features"]
    assert 0 < len(top) <= quality.TOP_FEATURES
    assert [r["share"] for r in top] == sorted((r["share"] for r in top), reverse=True)
    rendered = quality.render_tables(tables)
    assert len(rendered) == 4 and rendered[0].row_count == len(expected)


def test_ablation_fits_are_the_same_on_one_or_two_workers_and_once_per_feature_list(tiny_split):
    from training.progress import SILENT

    plan, parts = tiny_split
    names = list(parts.features)
    half = names[: len(names) // 2]
    sets = {"all features": names, "first half": half, "none": [], "half again": list(half)}
    one = quality.fit_sets(parts, plan, sets, workers=1, progress=SILENT)
    two = quality.fit_sets(parts, plan, sets, workers=2, progress=SILENT)
    assert set(one) == set(two) == {"all features", "first half", "half again"}  # not "none"
    for name in one:
        assert np.array_equal(one[name].scores, two[name].scores)
        assert one[name].features == sets[name]
    assert two["half again"] is two["first half"]  # the same features are fitted once
    assert not np.array_equal(two["first half"].scores, two["all features"].scores)


def _paired_rows(n_accounts: int = 300, months: int = 4, seed: int = 5) -> pd.DataFrame:
    """Test rows of two runs: ``p_all`` ranks the churners better than ``p_today``."""
    rng = np.random.default_rng(seed)
    accounts = np.repeat([f"A{i}" for i in range(n_accounts)], months)
    risk = np.repeat(rng.normal(size=n_accounts), months)
    y = (rng.random(len(accounts)) < 1 / (1 + np.exp(2.5 - 1.5 * risk))).astype(float)
    signal = risk + rng.normal(scale=0.5, size=len(y))
    p_all = 1 / (1 + np.exp(2.5 - 1.5 * signal))
    p_today = 1 / (1 + np.exp(2.5 - 1.5 * (signal + rng.normal(scale=1.5, size=len(y)))))
    return pd.DataFrame(
        {
            "account_id": accounts,
            "as_of": np.tile(pd.date_range("2026-01-01", periods=months, freq="MS"), n_accounts),
            "churned": y,
            "revenue": rng.uniform(1e4, 1e5, len(y)),
            "p_today": p_today,
            "p_all": p_all,
        }
    )


def test_headline_rows_carry_each_figures_interval_and_the_paired_gain():
    from training.evaluate import evaluate

    rows = _paired_rows()
    y, revenue = rows["churned"].to_numpy(), rows["revenue"].to_numpy()
    today = evaluate(y, rows["p_today"].to_numpy(), revenue)
    every = evaluate(y, rows["p_all"].to_numpy(), revenue)
    draws = quality.Bootstrap(samples=60, level=0.95, seed=3, bins=10)
    results = quality.headline_results(rows, today, every, draws, "synthetic")

    assert [r.unit for r in results] == ["ROC AUC", "PR AUC", "lift", "ECE"]
    for result, metric in zip(results, quality.HEADLINE_METRICS, strict=True):
        extra = result.extra
        assert extra["all"] == every[metric] and extra["today"] == today[metric]
        for key in ("interval_all", "interval_today", "gain_interval"):
            low, high = extra[key]
            assert math.isfinite(low) and low <= high, (metric, key)
        assert math.isclose(extra["gain"], every[metric] - today[metric], abs_tol=1e-9)
        assert extra["test_accounts"] == 300 and extra["bootstrap_samples"] == 60
        low, high = extra["gain_interval"]
        assert f"interval {low:+.3f} to {high:+.3f}" in result.name
    roc = results[0]
    assert roc.extra["gain_interval"][0] > 0  # the better score's gain is clear of zero
    assert roc.ratio == every["roc_auc"] / today["roc_auc"]  # the ratio to today's features


def test_one_resampling_gives_what_the_interval_functions_give_pair_by_pair():
    """The suite resamples many scorers at once; each figure and each gain is what
    account_bootstrap and paired_gain_interval give on their own."""
    from training.bootstrap import account_bootstrap, paired_gain_interval

    rows = _paired_rows(n_accounts=120)
    y, accounts = rows["churned"].to_numpy(), rows["account_id"].to_numpy()
    rng = np.random.default_rng(9)
    scores = {
        "today": rows["p_today"].to_numpy(),
        "all": rows["p_all"].to_numpy(),
        "noise": rng.random(len(rows)),
    }
    draws = quality.Bootstrap(samples=40, level=0.9, seed=11, bins=10)
    boot = draws.resample(y, scores, accounts, rows["revenue"].to_numpy())
    alone = account_bootstrap(
        y, scores, accounts, rows["revenue"].to_numpy(), samples=40, level=0.9, seed=11, bins=10
    )
    for name in scores:
        for metric in quality.HEADLINE_METRICS:
            assert boot.interval(name, metric) == pytest.approx(alone[name][metric], abs=1e-12)
    for base, new in (("today", "all"), ("all", "noise")):
        for metric in quality.HEADLINE_METRICS:
            pair = paired_gain_interval(
                y,
                scores[base],
                scores[new],
                accounts,
                metric=metric,
                samples=40,
                level=0.9,
                seed=11,
                bins=10,
            )
            assert boot.gain(base, new, metric) == pytest.approx(pair, abs=1e-12), metric


def test_headline_targets_follow_the_issue():
    rows, draws = _paired_rows(n_accounts=60), quality.Bootstrap(20, 0.95, 0, 10)

    def figures(roc: float, pr: float, lift: float, ece: float) -> dict[str, float]:
        return {"roc_auc": roc, "pr_auc": pr, "lift_top_decile": lift, "ece": ece}

    today = figures(0.84, 0.30, 3.0, 0.004)
    ok = quality.headline_results(rows, today, figures(0.86, 0.301, 3.01, 0.01), draws, "x")
    short = quality.headline_results(rows, today, figures(0.8599, 0.30, 3.0, 0.0101), draws, "x")
    assert [r.meets_target for r in ok] == [True, True, True, True]
    assert [r.meets_target for r in short] == [False, False, False, False]


def test_paired_test_rows_match_rows_by_account_and_date_and_refuse_other_rows():
    columns = ["account_id", "as_of", "churned", "churn_probability", "revenue_365d"]
    today = pd.DataFrame(
        [["A", "2026-01-01", 1.0, 0.2, 10.0], ["B", "2026-01-01", 0.0, 0.1, 20.0]],
        columns=columns,
    )
    every = today.iloc[::-1].assign(churn_probability=[0.3, 0.6]).reset_index(drop=True)
    both = quality.paired_test_rows(today, every)
    assert both.set_index("account_id")["p_all"].to_dict() == {"A": 0.6, "B": 0.3}
    assert both.set_index("account_id")["p_today"].to_dict() == {"A": 0.2, "B": 0.1}
    with pytest.raises(ValueError, match="different rows"):
        quality.paired_test_rows(today, every.iloc[:1])
    with pytest.raises(ValueError, match="different labels"):
        quality.paired_test_rows(today, every.assign(churned=[0.0, 0.0]))


def test_feature_sets_leave_out_each_family_and_keep_each_basis():
    from features.catalog import FEATURES, MODEL_FEATURES

    sets = quality.feature_sets(MODEL_FEATURES)
    for name, names in sets.items():
        assert names == [f for f in MODEL_FEATURES if f in set(names)], name  # order kept
    today = quality.today_features(MODEL_FEATURES)
    assert len(today) == 55 and set(today) <= set(sets["level only"])
    assert set(sets["level only"]) - set(today) == quality.ADDED_LEVELS
    assert all(FEATURES[f].family != "financial" for f in sets["minus financial"])
    assert sorted(sets["level only"] + sets["baseline only"]) == sorted(MODEL_FEATURES)
