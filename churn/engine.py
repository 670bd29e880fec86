"""The compute engine of ``churn features``, ``churn score`` and ``churn train``: the one seam
between running in one process and running on a Dask cluster.

The choice is made once, by :func:`open_engine` from the settings (``engine``, ``dask_scheduler``;
``--engine``/``--scheduler`` on the commands). Stage code then works through one interface,
:class:`Engine`, whichever engine it got:

* :meth:`Engine.partition_count` says how many partitions of accounts to cut a source into
  (one, the whole source, in one process);
* :meth:`Engine.scatter` places the partitions, :meth:`Engine.map` runs a function on each where
  it lies, :meth:`Engine.gather` brings the results back in partition order,
  :meth:`Engine.broadcast` gives every partition's task one shared value;
* :meth:`Engine.collective` runs a step that needs every partition at once (fitting one model):
  the caller gives its one-process and its cluster form, the engine runs its own.

:class:`LocalEngine` (the default) runs every call in this process, on the whole source as one
partition. :class:`DaskEngine` runs them on the cluster at ``--scheduler``/``CHURN_DASK_SCHEDULER``
or, with no address, on a local cluster of two single-threaded worker processes started for the
run and closed after it.

Accounts are partitioned by a hash of ``account_id`` (:func:`partition_of`): every record of an
account lands in the same partition, so each partition is a small source of its own and the
single-process code runs on it unchanged. This module imports no stage package: the values it
moves are opaque to it.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from churn.errors import ChurnError, ConfigError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from distributed import Client

    from churn.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

ENGINES: tuple[str, ...] = ("local", "dask")
# The local cluster started when no scheduler address is given.
LOCAL_WORKERS = 2
LOCAL_THREADS_PER_WORKER = 1
CONNECT_TIMEOUT_SECONDS = 15
# Partition size: large enough that a partition's fixed costs (building its timelines) are
# small against its events, small enough that a worker holds many at once and they balance.
ACCOUNTS_PER_PARTITION = 3_000
PARTITIONS_PER_WORKER = 2


# ----------------------------------------------------------------------------- choosing


def resolve_engine(settings: Settings, engine: str | None, scheduler: str | None) -> Settings:
    """``settings`` with the command's ``--engine``/``--scheduler`` applied (a copy).

    A scheduler address alone means the dask engine; ``--engine local`` with an address is a
    contradiction and an error.
    """
    if engine is not None and engine not in ENGINES:
        raise ConfigError(
            f"--engine {engine!r} is not an engine", hint=f"use one of {', '.join(ENGINES)}"
        )
    if engine == "local" and scheduler:
        raise ConfigError(
            "--scheduler names a Dask scheduler but --engine is local",
            hint="drop --scheduler, or use --engine dask",
        )
    update: dict[str, str] = {}
    if scheduler:
        update |= {"engine": "dask", "dask_scheduler": scheduler}
    if engine is not None:
        update["engine"] = engine
    return settings.model_copy(update=update) if update else settings


# ----------------------------------------------------------------------------- the engines


@dataclass(frozen=True)
class Partitions(Generic[T]):
    """One value per partition of accounts, where the engine keeps it (the values themselves in
    one process, futures on the workers on Dask), with the worker each partition lives on."""

    items: tuple[Any, ...]
    homes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.items)


def _aligned(values: Partitions[Any] | Sequence[Any]) -> Sequence[Any]:
    return values.items if isinstance(values, Partitions) else values


class Engine(ABC):
    """Where the partitions of accounts are processed: the interface stage code calls."""

    name: ClassVar[str]

    @abstractmethod
    def partition_count(self, n_accounts: int) -> int:
        """How many partitions of accounts a source of ``n_accounts`` accounts is cut into."""

    @abstractmethod
    def scatter(self, values: Sequence[T]) -> Partitions[T]:
        """Place one value per partition (a partition of a source) where it is processed."""

    @abstractmethod
    def map(
        self,
        func: Callable[..., R],
        parts: Partitions[Any],
        *per_part: Partitions[Any] | Sequence[Any],
        **kwargs: Any,
    ) -> Partitions[R]:
        """``func(parts[i], *(seq[i] for seq in per_part), **kwargs)`` for every partition i,
        where partition i lives; ``per_part`` are other partitioned values or one plain value
        per partition."""

    @abstractmethod
    def gather(self, parts: Partitions[T]) -> list[T]:
        """The partitions' values in this process, in partition order."""

    @abstractmethod
    def broadcast(self, value: T) -> Any:
        """``value`` as an argument every partition's task can read (pass it to :meth:`map`)."""

    @abstractmethod
    def collective(self, *, in_process: Callable[[], R], on_cluster: Callable[[Client], R]) -> R:
        """One step over every partition at once (a model fitted on all of them): the caller
        says how it runs in one process (``in_process()``) and on a Dask cluster
        (``on_cluster(client)``, e.g. ``lightgbm.dask``); the engine runs its own."""


class LocalEngine(Engine):
    """Everything in this process, on the whole source as one partition."""

    name = "local"
    HOME = "local"

    def partition_count(self, n_accounts: int) -> int:
        return 1

    def scatter(self, values: Sequence[T]) -> Partitions[T]:
        return Partitions(tuple(values), (self.HOME,) * len(values))

    def map(
        self,
        func: Callable[..., R],
        parts: Partitions[Any],
        *per_part: Partitions[Any] | Sequence[Any],
        **kwargs: Any,
    ) -> Partitions[R]:
        columns = [_aligned(p) for p in per_part]
        results = tuple(func(*args, **kwargs) for args in zip(parts.items, *columns, strict=True))
        return Partitions(results, parts.homes)

    def gather(self, parts: Partitions[T]) -> list[T]:
        return list(parts.items)

    def broadcast(self, value: T) -> T:
        return value

    def collective(self, *, in_process: Callable[[], R], on_cluster: Callable[[Client], R]) -> R:
        return in_process()


class DaskEngine(Engine):
    """Partitions on the workers of a Dask cluster, reached through ``client``.

    Partition i goes to the i-th worker in address order (round robin), so the workers get
    equal shares and the same partitions sit together on every run; every task on a partition
    is pinned to its worker: its data never moves, and no task is stolen by another worker, so
    results are the same on every run (a lost worker's scattered partitions could not be
    rebuilt elsewhere anyway).
    """

    name = "dask"

    def __init__(self, client: Client) -> None:
        self.client = client

    def partition_count(self, n_accounts: int) -> int:
        return partition_count(n_accounts, worker_count(self.client))

    def scatter(self, values: Sequence[T]) -> Partitions[T]:
        workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        homes = [workers[i % len(workers)] for i in range(len(values))]
        placed: list[Any] = [None] * len(values)
        for worker in workers:
            mine = [i for i, home in enumerate(homes) if home == worker]
            if mine:
                # hash=False: random keys, rather than hashing every value of the tables.
                futures = self.client.scatter(
                    [values[i] for i in mine], workers=[worker], hash=False
                )
                for i, future in zip(mine, futures, strict=True):
                    placed[i] = future
        return Partitions(tuple(placed), tuple(homes))

    def map(
        self,
        func: Callable[..., R],
        parts: Partitions[Any],
        *per_part: Partitions[Any] | Sequence[Any],
        **kwargs: Any,
    ) -> Partitions[R]:
        columns = [_aligned(p) for p in per_part]
        futures = tuple(
            self.client.submit(
                func, *args, workers=[home], allow_other_workers=False, pure=False, **kwargs
            )
            for home, *args in zip(parts.homes, parts.items, *columns, strict=True)
        )
        return Partitions(futures, parts.homes)

    def gather(self, parts: Partitions[T]) -> list[T]:
        return list(self.client.gather(list(parts.items)))

    def broadcast(self, value: T) -> Any:
        return self.client.scatter(value, broadcast=True, hash=False)

    def collective(self, *, in_process: Callable[[], R], on_cluster: Callable[[Client], R]) -> R:
        return on_cluster(self.client)


@contextmanager
def open_engine(settings: Settings) -> Iterator[Engine]:
    """The engine ``settings.engine`` names: one process, or a Dask cluster (its client, and
    any local cluster started for it, closed on exit)."""
    if settings.engine != "dask":
        yield LocalEngine()
        return
    with dask_client(settings.dask_scheduler or None) as client:
        yield DaskEngine(client)


# ----------------------------------------------------------------------------- the cluster


@contextmanager
def dask_client(
    address: str | None = None,
    n_workers: int = LOCAL_WORKERS,
    threads_per_worker: int = LOCAL_THREADS_PER_WORKER,
) -> Iterator[Client]:
    """A client of the scheduler at ``address``, or of a local cluster of ``n_workers``
    processes started here (and closed on exit)."""
    from distributed import Client, LocalCluster

    with ExitStack() as stack:
        stack.enter_context(_distributed_logs_at_warning())
        if address:
            try:
                client = Client(address, timeout=f"{CONNECT_TIMEOUT_SECONDS}s")
            except (OSError, TimeoutError) as exc:
                raise ChurnError(
                    f"cannot reach the Dask scheduler at {address}: {exc}",
                    hint="start one with `dask scheduler` (and workers with `dask worker "
                    "ADDRESS`), or drop --scheduler/CHURN_DASK_SCHEDULER for a local cluster",
                ) from exc
            stack.callback(client.close)
        else:
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                dashboard_address=":0",  # a free port: runs side by side never clash
                silence_logs=logging.CRITICAL,
            )
            stack.callback(cluster.close)
            client = Client(cluster)
            stack.callback(client.close)  # closed before the cluster (callbacks run reversed)
            client.register_plugin(_quiet_stdout_plugin(), name="churn-quiet-stdout")
        _check_workers(client, address)
        yield client


@contextmanager
def _distributed_logs_at_warning() -> Iterator[None]:
    """Dask's own loggers say INFO about every connection, which the command's log handler
    would print: keep them at WARNING for the run (everything with ``--debug``)."""
    logger = logging.getLogger("distributed")
    old = logger.level
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def _quiet_stdout_plugin() -> Any:
    """A worker plugin that points a local worker's stdout at /dev/null.

    The local cluster's workers inherit the command's stdout, where LightGBM's native code
    prints its network set-up during a Dask fit; the command's own output (``--json``) must stay
    clean. Worker logs and errors go to stderr and back to the client as before.
    """
    from distributed import WorkerPlugin

    class QuietStdout(WorkerPlugin):
        def setup(self, worker: Any) -> None:
            import os
            import sys

            sys.stdout.flush()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)

    return QuietStdout()


def _installed_version() -> str:
    from importlib.metadata import version

    return version("churn-service")


def _check_workers(client: Client, address: str | None) -> None:
    """Fail early, in one line, when the cluster has no worker or a worker lacks the package."""
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError) as exc:
        raise ChurnError(
            f"the Dask scheduler at {address or 'the local cluster'} has no workers",
            hint="start workers with `dask worker ADDRESS` on machines that have this project "
            "installed",
        ) from exc
    try:
        versions = client.run(_installed_version)
    except Exception as exc:  # a worker without the package, or an unpicklable environment
        raise ChurnError(
            "a Dask worker cannot import this project (churn-service): "
            f"{type(exc).__name__}: {exc}",
            hint="install this project (same version) in every worker's Python environment",
        ) from exc
    mine = _installed_version()
    other = sorted({v for v in versions.values() if v != mine})
    if other:
        logger.warning("Dask workers run churn-service %s, this client %s", other, mine)


def worker_count(client: Client) -> int:
    """Workers currently connected to the client's scheduler (at least 1)."""
    return max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))


# ----------------------------------------------------------------------------- partitions


def partition_count(n_accounts: int, n_workers: int) -> int:
    """How many partitions of accounts a run uses: about ``ACCOUNTS_PER_PARTITION`` accounts
    each, at least ``PARTITIONS_PER_WORKER`` per worker, never more than the accounts."""
    wanted = max(math.ceil(n_accounts / ACCOUNTS_PER_PARTITION), PARTITIONS_PER_WORKER * n_workers)
    return max(1, min(wanted, n_accounts))


def partition_of(account_ids: pd.Series | np.ndarray, n_partitions: int) -> np.ndarray:
    """The partition (0 to ``n_partitions - 1``) of each account id: a keyed hash of the id's
    text, the same on every machine and in every run (each distinct id is hashed once)."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(pd.Series(account_ids).astype("string"))
    hashed = pd.util.hash_array(np.asarray(uniques, dtype=object)) % np.uint64(n_partitions)
    # A missing id (never in a validated source) goes to partition 0.
    return np.append(hashed.astype(np.int64), 0)[codes]


__all__ = [
    "ENGINES",
    "DaskEngine",
    "Engine",
    "LocalEngine",
    "Partitions",
    "dask_client",
    "open_engine",
    "partition_count",
    "partition_of",
    "resolve_engine",
    "worker_count",
]
