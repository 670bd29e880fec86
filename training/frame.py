"""The training frame: a validated source turned into labeled snapshots, one row per account and
``as_of`` date of the monthly grid, and the facts that identify it (its hash, its lineage)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from churn.errors import ChurnError

if TYPE_CHECKING:
    from churn.engine import Engine
    from churn.settings import Settings
    from features.distributed import PartitionedSnapshots
    from features.validate import LoadResult
    from training.config import RunPlan
    from training.split import TimeSplit

# Columns hashed for the run's data lineage: what the model saw, in a fixed order.
_HASH_ID_COLUMNS = ("account_id", "as_of", "churned", "label_window_end", "health_score")


@dataclass(frozen=True)
class TrainingFrame:
    """The labeled snapshots of a run: the whole frame in this process, the same rows where the
    engine built them (the fit reads its rows there), the source they came from, the feature
    families the source cannot fill, and the frame's hash."""

    loaded: LoadResult
    absent: dict[str, list[str]]
    frame: pd.DataFrame
    snapshots: PartitionedSnapshots
    snapshot_hash: str


def load_source(source: str, settings: Settings, plan: RunPlan) -> LoadResult:
    """Load and validate ``source``; a ChurnError when it cannot give the plan's labels."""
    from features.validate import load_validated

    loaded = load_validated(source, settings)
    if plan.snapshots.label_mode == "events" and loaded.tables.churn_events is None:
        raise ChurnError(
            f"{loaded.source} has no churn_events table, so events labels cannot be built",
            hint="train with --label-mode inactivity (churn = a long silence in invoices and "
            "interactions)",
        )
    return loaded


def build_training_frame(loaded: LoadResult, plan: RunPlan, engine: Engine) -> TrainingFrame:
    """Labeled snapshots with health scores at every ``as_of`` of the source's grid, built per
    partition of accounts on ``engine`` (the same frame on every engine)."""
    from features.distributed import snapshot_partitions
    from features.snapshots import absent_families, as_of_grid

    tables = loaded.tables
    grid = as_of_grid(tables, plan.snapshots)
    snapshots = snapshot_partitions(engine, tables, grid, plan.snapshots, plan.health)
    frame = snapshots.gather()
    return TrainingFrame(
        loaded=loaded,
        absent=absent_families(tables),
        frame=frame,
        snapshots=snapshots,
        snapshot_hash=snapshot_hash(frame, list(plan.features)),
    )


def snapshot_hash(frame: pd.DataFrame, features: list[str]) -> str:
    """sha256 of the snapshot table the run used (identity, label, health score, features)."""
    columns = [c for c in (*_HASH_ID_COLUMNS, *features) if c in frame]
    rows = pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()
    digest = hashlib.sha256(rows.tobytes())
    digest.update("\x1f".join(columns).encode())
    return digest.hexdigest()


def data_lineage(data: TrainingFrame, split: TimeSplit) -> dict[str, Any]:
    """Where the run's data came from and what it held: the source, each table's row counts,
    the snapshot rows and dates, the hash and the split (logged with the run)."""
    frame = data.frame
    tables = {
        row.table: {
            "status": row.status,
            "rows": int(row.rows),
            "loaded": int(row.loaded),
            "rejected": int(row.rejected),
        }
        for row in data.loaded.summary.itertuples()
    }
    as_of = pd.to_datetime(frame["as_of"])
    return {
        "source": data.loaded.source,
        "tables": tables,
        "snapshot_rows": len(frame),
        "labeled_rows": int(frame["churned"].notna().sum()),
        "as_of_first": as_of.min().date().isoformat(),
        "as_of_last": as_of.max().date().isoformat(),
        "as_of_dates": int(as_of.nunique()),
        "snapshot_hash": data.snapshot_hash,
        "split": split.to_dict(),
    }
