"""The compute engine of ``churn features``, ``churn score`` and ``churn train`` (docs/cluster.md).

``local`` (the default) runs everything in one process. ``dask`` runs the heavy steps on a Dask
cluster: the scheduler at ``--scheduler``/``CHURN_DASK_SCHEDULER``, or, with no address, a
local cluster of two single-threaded worker processes started for the run and closed after it.

Accounts are partitioned by a hash of ``account_id`` (:func:`partition_tables`): every record
of an account lands in the same partition, so each partition is a small source of its own and
the single-process code (``features.snapshots.build_features``, ``serving.batch.score_snapshot``)
runs on it unchanged. The steps that compare accounts with each other run once over the whole
population (see ``features.distributed``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from churn.errors import ChurnError, ConfigError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from distributed import Client

    from churn.settings import Settings
    from features.contract import Tables

logger = logging.getLogger(__name__)

ENGINES: tuple[str, ...] = ("local", "dask")
# The local cluster started when no scheduler address is given.
LOCAL_WORKERS = 2
LOCAL_THREADS_PER_WORKER = 1
CONNECT_TIMEOUT_SECONDS = 15
# Partition size: large enough that a partition's fixed costs (building its timelines) are
# small against its events, small enough that a worker holds many at once and they balance.
ACCOUNTS_PER_PARTITION = 3_000
PARTITIONS_PER_WORKER = 2

ENGINE_HELP = (
    "local (one process, the default) or dask (a Dask cluster: partitions of accounts run on "
    "its workers, same results). Env CHURN_ENGINE."
)
SCHEDULER_HELP = (
    "Dask scheduler address, e.g. tcp://10.0.0.5:8786 (implies --engine dask). Without one the "
    "dask engine starts a local cluster of 2 workers for the run. Env CHURN_DASK_SCHEDULER."
)


# ----------------------------------------------------------------------------- choosing


def engine_option() -> Any:
    """The ``--engine`` option of the commands that can run on Dask."""
    import typer

    return typer.Option(None, "--engine", help=ENGINE_HELP, show_default=False)


def scheduler_option() -> Any:
    """The ``--scheduler`` option of the commands that can run on Dask."""
    import typer

    return typer.Option(None, "--scheduler", help=SCHEDULER_HELP, show_default=False)


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


# ----------------------------------------------------------------------------- the cluster


@contextmanager
def engine_client(settings: Settings) -> Iterator[Client | None]:
    """A Dask client when ``settings.engine`` is ``dask`` (None for the local engine), closed
    on exit together with any local cluster started for it."""
    if settings.engine != "dask":
        yield None
        return
    with dask_client(settings.dask_scheduler or None) as client:
        yield client


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


def partition_tables(tables: Tables, n_partitions: int) -> list[Tables]:
    """Split a source into partitions of whole accounts (each account's rows in every table in
    one partition, in their original order); partitions without accounts are left out (all of
    them, for a source without accounts: then the source is its one partition).

    A table present in the source is present (possibly empty) in every partition, so a partition
    has the same absent features as the whole source.
    """
    import numpy as np

    from features.contract import Tables

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


__all__ = [
    "ENGINES",
    "dask_client",
    "engine_client",
    "engine_option",
    "partition_count",
    "partition_of",
    "partition_tables",
    "resolve_engine",
    "scheduler_option",
    "worker_count",
]
