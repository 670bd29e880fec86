"""Snapshots on the engine's partitions of accounts: the rows of
:func:`features.snapshots.build_snapshots`, built where the partitions live.

The source is cut into partitions of whole accounts (:func:`partition_tables`; one partition,
the whole source, on the local engine) and :meth:`churn.engine.Engine.map` runs
:func:`features.snapshots.build_features` on each for the as_of dates and the dates 30 days
before them (for ``health_score_30d_ago``), with the whole source's ``data_end`` so labels are
cut at the same day. Rows depend only on their own account's records, except
``revenue_segment``, which ranks the accounts of a date against each other: each partition sends
back only ``as_of``, ``revenue_365d`` and ``contract_value``, :func:`features.snapshots.
assign_segments` runs once over the whole population, and each partition gets its accounts'
segments back. The health scores (:func:`features.snapshots.add_health`) read only an account's
own row, its segment and its own row 30 days earlier, so they run per partition too. The
partitions stay where they are (:class:`PartitionedSnapshots`, on the workers with Dask) for
scoring and training; :meth:`PartitionedSnapshots.gather` concatenates them in the
single-process order (as_of, then account_id).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churn.engine import Engine, Partitions, partition_of
from features.snapshots import (
    _dates,
    _log_absent,
    add_health,
    assign_segments,
    build_features,
    history_dates,
    observed_end,
)

if TYPE_CHECKING:
    from churn.settings import SnapshotSettings
    from features.contract import Tables
    from features.health import HealthConfig

SORT_KEYS = ["as_of", "account_id"]
_SEGMENT_BASIS = ["as_of", "revenue_365d", "contract_value"]


def partition_tables(tables: Tables, n_partitions: int) -> list[Tables]:
    """Split a source into partitions of whole accounts (each account's rows in every table in
    one partition, in their original order); partitions without accounts are left out (all of
    them, for a source without accounts: then the source is its one partition).

    A table present in the source is present (possibly empty) in every partition, so a partition
    has the same absent features as the whole source.
    """
    from features.contract import Tables

    if n_partitions == 1:
        return [tables]
    split: dict[str, list[pd.DataFrame]] = {}
    for name, frame in tables:
        part = partition_of(frame["account_id"], n_partitions)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(n_partitions + 1))
        split[name] = [
            frame.iloc[order[bounds[i] : bounds[i + 1]]].reset_index(drop=True)
            for i in range(n_partitions)
        ]
    out = []
    for i in range(n_partitions):
        if not len(split["accounts"][i]):
            continue
        frames = {name: parts[i] for name, parts in split.items()}
        out.append(Tables(**frames, source=tables.source, meta=dict(tables.meta)))
    return out or [tables]  # a source without accounts stays one (empty) partition


@dataclass
class PartitionedSnapshots:
    """Snapshot frames of disjoint sets of accounts, kept by the engine (each sorted by as_of
    then account_id), with their row counts."""

    engine: Engine
    parts: Partitions[pd.DataFrame]
    rows: list[int]
    dates: list[pd.Timestamp]
    positions: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def map(
        self, func: Callable[..., Any], *per_part: Sequence[Any], **kwargs: Any
    ) -> Partitions[Any]:
        """``func(parts[i], *(seq[i] for seq in per_part), **kwargs)`` for every partition i,
        where it lives."""
        return self.engine.map(func, self.parts, *per_part, **kwargs)

    def gather(self) -> pd.DataFrame:
        """The whole snapshot frame in this process, row for row as ``build_snapshots`` gives
        it.

        Also sets :attr:`positions`: for each row of that frame, its partition and its row
        in that partition (training picks its rows where they lie with them).
        """
        frames = self.engine.gather(self.parts)
        if len(frames) == 1:  # the local engine's whole source: already in that order
            (frame,) = frames
            self.positions = (np.zeros(len(frame), dtype=np.int64), np.arange(len(frame)))
            return frame.reset_index(drop=True)
        part = np.repeat(np.arange(len(frames)), [len(f) for f in frames])
        row = np.concatenate([np.arange(len(f)) for f in frames]) if frames else np.empty(0, int)
        frame = _concat(frames)
        order = frame.sort_values(SORT_KEYS, kind="stable").index.to_numpy()
        self.positions = (part[order], row[order])
        return frame.take(order).reset_index(drop=True)


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate partition frames; empty ones are left out so that they cannot change a
    column's dtype (all empty: the first, as it is)."""
    filled = [f for f in frames if len(f)]
    if not filled:
        return frames[0].iloc[0:0].reset_index(drop=True)
    return pd.concat(filled, ignore_index=True)


# ------------------------------------------------------------------------- partition tasks


def _features(
    tables: Tables,
    dates: list[pd.Timestamp],
    cfg: SnapshotSettings,
    data_end: pd.Timestamp,
    health: HealthConfig | None = None,
) -> pd.DataFrame:
    return build_features(tables, dates, cfg, data_end, health)


def _segment_basis(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[_SEGMENT_BASIS]


def _finish(
    every: pd.DataFrame,
    segments: np.ndarray,
    dates: list[pd.Timestamp],
    past: list[pd.Timestamp] | None,
    health: HealthConfig | None,
) -> pd.DataFrame:
    """Set the partition's segments (computed over every account) and, with ``past``, the
    health scores from the rows at the as_of dates and 30 days before."""
    every = every.assign(revenue_segment=pd.array(segments, dtype="string"))
    if past is None:
        return every
    frame = every[every["as_of"].isin(dates)]
    history = every[every["as_of"].isin(past)]
    return add_health(frame, history, health)


# ------------------------------------------------------------------------------ entry points


def snapshot_partitions(
    engine: Engine,
    tables: Tables,
    as_of: Sequence[date | pd.Timestamp | str],
    cfg: SnapshotSettings,
    health: HealthConfig | None = None,
    with_health: bool = True,
    data_end: pd.Timestamp | None = None,
    n_partitions: int | None = None,
) -> PartitionedSnapshots:
    """Build the snapshots of ``build_snapshots(tables, as_of, cfg, health, with_health,
    data_end)`` on ``engine``'s partitions, leaving them where they were built."""
    from features.health import load_health_config

    dates = _dates(as_of)
    _log_absent(tables, cfg)
    end = observed_end(tables) if data_end is None else pd.Timestamp(data_end).normalize()
    past = history_dates(dates) if with_health else None
    every_dates = sorted(set(dates) | set(past or []))
    if with_health and health is None:
        health = load_health_config()  # read here: workers need not share the client's files
    n = n_partitions or engine.partition_count(len(tables.accounts))
    sources = engine.scatter(partition_tables(tables, n))
    every = engine.map(
        _features,
        sources,
        dates=every_dates,
        cfg=cfg,
        data_end=end,
        health=health if with_health else None,
    )
    del sources  # released once the features are built: workers keep features, not raw rows
    basis = engine.gather(engine.map(_segment_basis, every))
    lengths = [len(b) for b in basis]
    segments = assign_segments(_concat(basis))["revenue_segment"].to_numpy(
        dtype=object, na_value=None
    )
    cuts = np.cumsum([0, *lengths])
    pieces = [segments[cuts[i] : cuts[i + 1]] for i in range(len(lengths))]
    parts = engine.map(_finish, every, pieces, dates=dates, past=past, health=health)
    del every
    rows = [int(r) for r in engine.gather(engine.map(len, parts))]
    return PartitionedSnapshots(engine=engine, parts=parts, rows=rows, dates=dates)


def build_snapshots(
    engine: Engine,
    tables: Tables,
    as_of: Sequence[date | pd.Timestamp | str],
    cfg: SnapshotSettings,
    health: HealthConfig | None = None,
    with_health: bool = True,
    data_end: pd.Timestamp | None = None,
    **options: Any,
) -> pd.DataFrame:
    """:func:`features.snapshots.build_snapshots` on ``engine``: the same frame."""
    parts = snapshot_partitions(
        engine, tables, as_of, cfg, health, with_health, data_end, **options
    )
    return parts.gather()


__all__ = ["PartitionedSnapshots", "build_snapshots", "partition_tables", "snapshot_partitions"]
