"""Command-line options shared by several `churn` subcommands (one definition, one help text).

Each is a typed alias: a command declares ``data: DataOption = None`` and gets the same flag,
help and type as every other command that reads a source.
"""

from __future__ import annotations

from typing import Annotated

import typer

ENGINE_HELP = (
    "local (one process, the default) or dask (a Dask cluster: partitions of accounts run on "
    "its workers, same results). Env CHURN_ENGINE."
)
SCHEDULER_HELP = (
    "Dask scheduler address, e.g. tcp://10.0.0.5:8786 (implies --engine dask). Without one the "
    "dask engine starts a local cluster of 2 workers for the run. Env CHURN_DASK_SCHEDULER."
)

#: ``--data SOURCE``: every command that reads a source.
DataOption = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Source: folder, .duckdb file or SQLAlchemy URL (default: the data setting).",
    ),
]

#: ``--engine``: the commands that can run on Dask.
EngineOption = Annotated[str | None, typer.Option("--engine", help=ENGINE_HELP, show_default=False)]

#: ``--scheduler``: the commands that can run on Dask.
SchedulerOption = Annotated[
    str | None, typer.Option("--scheduler", help=SCHEDULER_HELP, show_default=False)
]

#: ``--store``: the commands that read or write the score store.
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store", help="Score store: .duckdb file or postgresql:// URL (default: setting)."
    ),
]
