"""Batch scoring on the engine's partitions of accounts: how :func:`serving.batch.score_batches`
runs, in one process or on a Dask cluster.

The snapshots are built by :mod:`features.distributed` and stay where they were built; each
partition runs :func:`serving.batch.score_snapshot` (probability, explanation, escalations,
playbook actions: all read an account's own rows), and the pieces of each date are put together
in the single-process order.

The model goes to each partition as its plain files' content (LightGBM's text model and the
JSON companions of the bundle), rebuilt there with LightGBM and JSON only: no model is pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import pandas as pd

from serving.batch import ScoredBatch, score_snapshot

if TYPE_CHECKING:
    from churn.bundle import Bundle
    from churn.engine import Engine
    from churn.settings import SnapshotSettings
    from features.contract import Tables
    from features.health import HealthConfig
    from serving.playbook import Playbook

# Row order of each store table within a date, as the single-process path writes it.
_ORDER: dict[str, list[str]] = {
    "scores": ["account_id"],
    "reasons": ["account_id", "rank"],
    "escalations": ["account_id", "severity"],
    "actions": ["account_id", "rank"],
    "flags": ["account_id"],  # stable: each account's flags keep their order
}


@dataclass(frozen=True)
class BundleFiles:
    """A model bundle as the text of its files: what a worker needs to rebuild it."""

    path: str
    model_text: str
    calibration: dict[str, Any]
    metadata: dict[str, Any]
    catalog: list[dict[str, Any]]
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, bundle: Bundle) -> BundleFiles:
        from churn.bundle import MODEL_FILE

        model_file = bundle.path / MODEL_FILE
        text = model_file.read_text() if model_file.is_file() else None
        return cls(
            path=str(bundle.path),
            model_text=text or bundle.booster.model_to_string(),
            calibration=bundle.calibration.to_dict(),
            metadata=bundle.metadata,
            catalog=bundle.catalog,
            metrics=bundle.metrics,
        )

    def load(self) -> Bundle:
        """The bundle, from LightGBM's text format and JSON values (no unpickling)."""
        from pathlib import Path

        import lightgbm as lgb

        from churn.bundle import Bundle, Calibration

        return Bundle(
            path=Path(self.path),
            booster=lgb.Booster(model_str=self.model_text),
            calibration=Calibration.from_dict(self.calibration),
            metadata=self.metadata,
            catalog=self.catalog,
            metrics=self.metrics,
        )


def _score_part(
    snapshot: pd.DataFrame,
    files: BundleFiles | None,
    dates: list[date],
    health: HealthConfig,
    playbook: Playbook,
    top: int,
    previous: pd.DataFrame | None = None,
) -> list[ScoredBatch]:
    bundle = files.load() if files is not None else None
    return score_snapshot(
        snapshot, dates, bundle, health=health, playbook=playbook, top=top, previous=previous
    )


def _combine(pieces: list[pd.DataFrame], keys: list[str], offset: int) -> pd.DataFrame:
    """One date's rows from every partition, in the single-process order and index."""
    filled = [p for p in pieces if len(p)]
    if not filled:
        return pieces[0]
    frame = pd.concat(filled) if len(filled) > 1 else filled[0]
    frame = frame.sort_values(keys, kind="stable")
    return frame.set_axis(pd.RangeIndex(offset, offset + len(frame)))


def merge_batches(per_part: Sequence[list[ScoredBatch]]) -> list[ScoredBatch]:
    """Put each date's batches of every partition together, ordered and indexed as
    :func:`serving.batch.score_batches` gives them."""
    merged = []
    offsets = dict.fromkeys(_ORDER, 0)
    for i, first in enumerate(per_part[0]):
        frames = {}
        for name, keys in _ORDER.items():
            frames[name] = _combine([getattr(p[i], name) for p in per_part], keys, offsets[name])
            offsets[name] += len(frames[name])
        merged.append(ScoredBatch(as_of=first.as_of, model_version=first.model_version, **frames))
    return merged


def score_partitions(
    engine: Engine,
    tables: Tables,
    dates: Sequence[date],
    bundle: Bundle | None,
    cfg: SnapshotSettings,
    *,
    health: HealthConfig,
    playbook: Playbook,
    top: int,
    previous: pd.DataFrame | None = None,
) -> list[ScoredBatch]:
    """The batches of :func:`serving.batch.score_batches`, scored per partition of accounts on
    ``engine`` (on Dask, scores equal to the last bit: the same LightGBM model on the same
    rows)."""
    from features.distributed import snapshot_partitions

    snapshots = snapshot_partitions(engine, tables, list(dates), cfg, health=health)
    files = engine.broadcast(BundleFiles.of(bundle)) if bundle else None
    days = sorted({pd.Timestamp(d).date() for d in dates})
    scored = snapshots.map(
        _score_part,
        files=files,
        dates=days,
        health=health,
        playbook=playbook,
        top=top,
        previous=previous,
    )
    return merge_batches(engine.gather(scored))


__all__ = ["BundleFiles", "merge_batches", "score_partitions"]
