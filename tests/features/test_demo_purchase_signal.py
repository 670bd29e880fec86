"""The purchase demo carries what the inactivity mode is for: on its point-in-time snapshots a
model of the catalogue's features, trained on the early as_of dates, ranks the later ones'
lapses clearly better than the days since the last invoice alone."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churn.settings import SnapshotSettings
from features.catalog import MODEL_FEATURES
from features.demo_purchase import generate_purchase_demo
from features.snapshots import build_snapshots
from features.sources import read_source
from features.validate import validate_tables


def _days_since_last_invoice(invoices: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Point in time: days from the last invoice issued strictly before each row's as_of."""
    issued = invoices[["account_id", "issued_at"]].sort_values("issued_at")
    issued = issued.assign(stamp=issued["issued_at"] + pd.Timedelta(seconds=1))
    left = rows[["account_id", "as_of"]].reset_index().sort_values("as_of")
    last = (
        pd.merge_asof(
            left,
            issued[["account_id", "stamp", "issued_at"]],
            left_on="as_of",
            right_on="stamp",
            by="account_id",
            allow_exact_matches=True,
        )
        .set_index("index")
        .reindex(rows.index)
    )
    return (last["as_of"] - last["issued_at"]).dt.days.to_numpy(dtype=np.float64)


@pytest.mark.slow
def test_features_beat_recency_on_later_as_of_dates(tmp_path: Path) -> None:
    import lightgbm as lgb

    generate_purchase_demo(tmp_path, accounts=4000, seed=3)
    tables = validate_tables(read_source(tmp_path)).tables
    as_of = [d.date() for d in pd.date_range("2025-08-01", "2026-07-01", freq="MS")]
    cfg = SnapshotSettings(label_mode="inactivity", horizon_days=90)
    snap = build_snapshots(tables, as_of, cfg, with_health=False)
    snap = snap[snap["churned"].notna()].reset_index(drop=True)
    recency = _days_since_last_invoice(tables.invoices, snap)
    assert np.isfinite(recency).all() and (recency >= 0).all()
    cols = [c for c in MODEL_FEATURES if pd.api.types.is_numeric_dtype(snap[c])]
    early = (snap["as_of"] < pd.Timestamp(date(2026, 4, 1))).to_numpy()
    late = ~early
    assert early.sum() > 5000 and late.sum() > 1000
    model = lgb.LGBMClassifier(
        n_estimators=200,
        learning_rate=0.05,
        num_leaves=15,
        min_child_samples=50,
        random_state=0,
        n_jobs=1,
        verbose=-1,
    )
    model.fit(snap.loc[early, cols], snap.loc[early, "churned"])
    y = snap.loc[late, "churned"]
    model_auc = roc_auc_score(y, model.predict_proba(snap.loc[late, cols])[:, 1])
    recency_auc = roc_auc_score(y, recency[late])
    assert model_auc >= recency_auc + 0.02, (model_auc, recency_auc)
