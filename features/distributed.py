"""Snapshots on a Dask cluster: the rows of :func:`features.snapshots.build_snapshots`.

The source is split into partitions of whole accounts (:func:`churn.engine.partition_tables`)
and each partition is sent to a worker, which runs :func:`features.snapshots.build_features` on
it for the as_of dates and the dates 30 days before them (for ``health_score_30d_ago``), with
the whole source's ``data_end`` so labels are cut at the same day. Rows depend only on their own
account's records, except ``revenue_segment``, which ranks the accounts of a date against each
other: the workers send back only ``as_of``, ``revenue_365d`` and ``contract_value``, the client
runs :func:`features.snapshots.assign_segments` over the whole population, and each partition
gets its accounts' segments back. The health scores (:func:`features.snapshots.add_health`)
read only an account's own row, its segment and its own row 30 days earlier, so they run on the
workers too. The partitions stay in the workers' memory (:class:`PartitionedSnapshots`) for
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

from churn.engine import partition_count, partition_tables, worker_count
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
    from distributed import Client, Future

    from churn.settings import SnapshotSettings
    from features.contract import Tables
    from features.health import HealthConfig

SORT_KEYS = ["as_of", "account_id"]
_SEGMENT_BASIS = ["as_of", "revenue_365d", "contract_value"]


@dataclass
class PartitionedSnapshots:
    """Snapshot frames of disjoint sets of accounts, held by the cluster's workers (futures),
    each sorted by as_of then account_id, with their row counts."""

    client: Client
    parts: list[Future]
    homes: list[str]
    rows: list[int]
    dates: list[pd.Timestamp]
    positions: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def map(
        self, func: Callable[..., Any], *per_part: Sequence[Any], **kwargs: Any
    ) -> list[Future]:
        """``func(parts[i], *(seq[i] for seq in per_part), **kwargs)`` for every partition i,
        on its worker."""
        return _on_homes(self.client, self.homes, func, self.parts, *per_part, **kwargs)

    def gather(self) -> pd.DataFrame:
        """The whole snapshot frame on the client, row for row as ``build_snapshots`` gives it.

        Also sets :attr:`positions`: for each row of that frame, its partition and its row
        in that partition (training picks its rows on the workers with them).
        """
        frames = self.client.gather(self.parts)
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


def _place(client: Client, parts: list[Tables]) -> tuple[list[Future], list[str]]:
    """Send partition i to the i-th worker in address order (round robin), so the workers get
    equal shares and the same partitions sit together on every run. Returns the futures and
    each partition's worker (its home: every later task on it runs there, see _on_homes)."""
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    homes = [workers[i % len(workers)] for i in range(len(parts))]
    placed: list[Any] = [None] * len(parts)
    for worker in workers:
        mine = [i for i, home in enumerate(homes) if home == worker]
        if mine:
            # hash=False: random keys, rather than hashing every value of the tables.
            futures = client.scatter([parts[i] for i in mine], workers=[worker], hash=False)
            for i, future in zip(mine, futures, strict=True):
                placed[i] = future
    return placed, homes


def _on_homes(
    client: Client, homes: list[str], func: Callable[..., Any], *per_part: Sequence[Any], **kw: Any
) -> list[Future]:
    """One task per partition, pinned to the partition's worker: its data never moves, and no
    task is stolen by another worker, so blocks and results are the same on every run (a lost
    worker's scattered partitions could not be rebuilt elsewhere anyway)."""
    return [
        client.submit(func, *args, workers=[home], allow_other_workers=False, pure=False, **kw)
        for home, *args in zip(homes, *per_part, strict=True)
    ]


# ------------------------------------------------------------------------- worker tasks


def _features(
    tables: Tables, dates: list[pd.Timestamp], cfg: SnapshotSettings, data_end: pd.Timestamp
) -> pd.DataFrame:
    return build_features(tables, dates, cfg, data_end)


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
    client: Client,
    tables: Tables,
    as_of: Sequence[date | pd.Timestamp | str],
    cfg: SnapshotSettings,
    health: HealthConfig | None = None,
    with_health: bool = True,
    data_end: pd.Timestamp | None = None,
    n_partitions: int | None = None,
) -> PartitionedSnapshots:
    """Build the snapshots of ``build_snapshots(tables, as_of, cfg, health, with_health,
    data_end)`` on the cluster of ``client``, leaving them in the workers' memory."""
    from features.health import load_health_config

    dates = _dates(as_of)
    _log_absent(tables, cfg)
    end = observed_end(tables) if data_end is None else pd.Timestamp(data_end).normalize()
    past = history_dates(dates) if with_health else None
    every_dates = sorted(set(dates) | set(past or []))
    if with_health and health is None:
        health = load_health_config()  # read here: workers need not share the client's files
    n = n_partitions or partition_count(len(tables.accounts), worker_count(client))
    sources, homes = _place(client, partition_tables(tables, n))
    every = _on_homes(client, homes, _features, sources, dates=every_dates, cfg=cfg, data_end=end)
    del sources  # released once the features are built: workers keep features, not raw rows
    basis = client.gather(_on_homes(client, homes, _segment_basis, every))
    lengths = [len(b) for b in basis]
    segments = assign_segments(_concat(basis))["revenue_segment"].to_numpy(
        dtype=object, na_value=None
    )
    cuts = np.cumsum([0, *lengths])
    pieces = [segments[cuts[i] : cuts[i + 1]] for i in range(len(lengths))]
    parts = _on_homes(client, homes, _finish, every, pieces, dates=dates, past=past, health=health)
    del every
    rows = [int(r) for r in client.gather(_on_homes(client, homes, len, parts))]
    return PartitionedSnapshots(client=client, parts=parts, homes=homes, rows=rows, dates=dates)


def build_snapshots(
    client: Client,
    tables: Tables,
    as_of: Sequence[date | pd.Timestamp | str],
    cfg: SnapshotSettings,
    health: HealthConfig | None = None,
    with_health: bool = True,
    data_end: pd.Timestamp | None = None,
    **options: Any,
) -> pd.DataFrame:
    """:func:`features.snapshots.build_snapshots` on a Dask cluster: the same frame."""
    parts = snapshot_partitions(
        client, tables, as_of, cfg, health, with_health, data_end, **options
    )
    return parts.gather()


__all__ = ["PartitionedSnapshots", "build_snapshots", "snapshot_partitions"]
