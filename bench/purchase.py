"""Purchase-cycle clients: one `churn train --label-mode inactivity --horizon-days 90` run on
the purchase demo (``churn demo-data --business purchase``: 18 months of invoices, default
size and seed), and the model's test ROC AUC beside the two baselines a firm without churn
events would otherwise use, on the same test rows: recency (days since the last purchase) and
the BG/NBD buy-till-you-die model (docs/metrics.md#purchase-baselines). The target is the
model at least 0.01 above each (as a ratio: (baseline + 0.01) / baseline, computed from this
run's baseline). The split the trainer chose for the short history is in each row's extra.
"""

from __future__ import annotations

from pathlib import Path

from bench.common import Result, margin_target
from bench.data import bench_settings, fresh_store, train_in_bench_store

ROC_AUC_MARGIN = 0.01
BASELINES = {"recency": "days since the last purchase", "bgnbd": "BG/NBD P(no purchase)"}


def purchase_results(metrics: dict[str, dict[str, float]], split: str) -> list[Result]:
    """The model against each purchase baseline, from a run's test metrics."""
    model = metrics["model"]["roc_auc"]
    return [
        Result(
            name=f"purchase demo: test ROC AUC, model vs {BASELINES[name]}",
            unit="ROC AUC",
            ours=model,
            reference=metrics[name]["roc_auc"],
            reference_name=BASELINES[name],
            target=margin_target(metrics[name]["roc_auc"], ROC_AUC_MARGIN),
            extra={"required": f"model >= {name} + {ROC_AUC_MARGIN}", "split": split},
        )
        for name in BASELINES
    ]


def run(workdir: Path) -> list[Result]:
    from features.demo_purchase import generate_purchase_demo

    folder = Path(workdir) / "purchase-demo"
    if not (folder / "invoices.csv").exists():
        generate_purchase_demo(folder)
    root = fresh_store(Path(workdir) / "purchase-model")
    result = train_in_bench_store(
        folder, bench_settings(workdir, root), label_mode="inactivity", horizon_days=90
    )
    return purchase_results(result.metrics, result.split.description)
