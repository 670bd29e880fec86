"""The purchase baselines in a training run: in inactivity mode `churn train` scores recency
and BG/NBD on the test rows beside the other baselines, in its report, its JSON, the MLflow
run and the model card; events mode keeps its three scorers (tests/training/test_train.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from churn.bundle import TEST_PREDICTIONS_FILE
from churn_cli.train import comparison_table
from features.validate import load_validated
from tests.support.cli import isolated_env, isolated_settings, run_churn
from training.btyd import NO_PURCHASE_DAYS
from training.evaluate import METRICS, SCORERS, evaluate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def invoices_only_run(demo_source, tmp_path_factory) -> tuple[dict, str, Path, Path]:
    """`churn train --label-mode inactivity --json` on a generated source of accounts and
    invoices only (three years): the JSON summary, the human report and the run's folders."""
    root = tmp_path_factory.mktemp("btyd-train")
    source = root / "billing"
    source.mkdir()
    for table in ("accounts", "invoices"):
        shutil.copy(demo_source / f"{table}.csv", source / f"{table}.csv")
    env = isolated_env(root)
    done = run_churn(
        ["train", "--data", str(source), "--label-mode", "inactivity", "--json"], env, root
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return summary, done.stderr, root, source


def test_inactivity_run_scores_recency_and_bgnbd_on_the_test_rows(invoices_only_run):
    summary, report, _, _ = invoices_only_run
    for scorer in (*SCORERS, "recency", "bgnbd"):
        assert set(summary[scorer]) == set(METRICS), scorer
    # Recency is a ranking in days: no Brier score or calibration error.
    assert summary["recency"]["brier"] is None and summary["recency"]["ece"] is None
    assert 0 <= summary["bgnbd"]["brier"] <= 1 and summary["bgnbd"]["ece"] is not None
    # Both rank the test rows better than chance: a long silence precedes inactivity churn.
    assert summary["recency"]["roc_auc"] > 0.6 and summary["bgnbd"]["roc_auc"] > 0.6
    assert "recency baseline" in report and "BG/NBD baseline" in report


def test_the_recency_baseline_is_the_days_since_the_last_invoice_before_as_of(invoices_only_run):
    """Recomputed from the loaded invoices for the bundle's logged test rows."""
    summary, _, root, source = invoices_only_run
    bundle = Path(summary["run"]["bundle"])
    rows = pd.read_parquet(bundle / TEST_PREDICTIONS_FILE)
    # The invoices the run loaded: the source's, less the rows validation rejects.
    invoices = load_validated(str(source), isolated_settings(root)).tables.invoices
    invoices = invoices.assign(issued_at=pd.to_datetime(invoices["issued_at"]))
    rows["as_of"] = pd.to_datetime(rows["as_of"])
    merged = rows[["account_id", "as_of"]].merge(
        invoices[["account_id", "issued_at"]], on="account_id", how="left"
    )
    merged = merged[merged["issued_at"] < merged["as_of"]]
    last = merged.groupby(["account_id", "as_of"])["issued_at"].max()
    keys = pd.MultiIndex.from_frame(rows[["account_id", "as_of"]])
    days = (rows["as_of"].to_numpy() - last.reindex(keys).to_numpy()) / np.timedelta64(1, "D")
    days = np.where(np.isnan(days), NO_PURCHASE_DAYS, days)
    expected = evaluate(rows["label"].to_numpy(), days)
    for metric in ("roc_auc", "pr_auc", "lift_top_decile", "recall_top_decile"):
        assert summary["recency"][metric] == pytest.approx(expected[metric], abs=1e-12), metric


def test_mlflow_and_the_model_card_carry_both_purchase_baselines(invoices_only_run):
    from mlflow import MlflowClient

    summary, _, root, _ = invoices_only_run
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    metrics = client.get_run(summary["run"]["mlflow_run_id"]).data.metrics
    for scorer in ("recency", "bgnbd"):
        assert metrics[f"{scorer}.roc_auc"] == pytest.approx(summary[scorer]["roc_auc"])
        assert metrics[f"{scorer}.pr_auc"] == pytest.approx(summary[scorer]["pr_auc"])
    assert "recency.brier" not in metrics  # NaN is not logged
    card = (Path(summary["run"]["bundle"]) / "model_card.md").read_text()
    header = next(line for line in card.splitlines() if line.startswith("| metric |"))
    assert header.endswith("| Recency baseline | BG/NBD baseline |")
    auc_row = next(line for line in card.splitlines() if line.startswith("| ROC AUC"))
    cells = [
        f"{summary[s]['roc_auc']:.3f} [{low:.3f}-{high:.3f}]"
        for s in ("recency", "bgnbd")
        for low, high in [summary["intervals"][s]["roc_auc"]]
    ]
    assert auc_row.endswith(f"| {cells[0]} | {cells[1]} |")
    # Recency is a ranking in days: no Brier score, so no interval of one either.
    assert summary["intervals"]["recency"]["brier"] == [None, None]
    assert "recency.brier_low" not in metrics and "recency.roc_auc_low" in metrics
    assert "buy-till-you-die" in card


def test_the_report_table_shows_only_the_scorers_a_run_has():
    metrics = {s: dict.fromkeys(METRICS, 0.5) for s in SCORERS}
    console = Console(record=True, width=200)
    console.print(comparison_table(metrics))
    plain = console.export_text()
    assert "logistic baseline" in plain and "BG/NBD" not in plain and "recency" not in plain
    metrics |= {
        "recency": dict.fromkeys(METRICS, float("nan")),
        "bgnbd": dict.fromkeys(METRICS, 0.7),
    }
    console = Console(record=True, width=200)
    console.print(comparison_table(metrics))
    plain = console.export_text()
    assert "recency baseline" in plain and "BG/NBD baseline" in plain and "n/a" in plain


def test_the_report_table_gives_every_figure_its_interval():
    metrics = {s: dict.fromkeys(METRICS, 0.5) for s in SCORERS}
    intervals = {s: dict.fromkeys(METRICS, (0.25, 0.75)) for s in SCORERS}
    intervals["logistic"]["brier"] = (float("nan"), float("nan"))  # undefined: no interval
    console = Console(record=True, width=200)
    console.print(comparison_table(metrics, intervals))
    plain = console.export_text()
    assert plain.count("[0.250-0.750]") == len(METRICS) * len(SCORERS) - 1
