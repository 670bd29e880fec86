"""The `churn` command line: one Typer app assembled from one module per command group.

``churn_cli`` is the composition root, the top floor: it may import every stage (features,
training, serving) and nothing imports it. Each command is a thin call into a stage function,
with the stage's heavy imports inside the function so that ``churn --help`` stays fast. This
module assembles the groups and turns domain errors into one readable line plus a hint (a
traceback only with ``--debug``).
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from churn.console import err_console, plain
from churn.errors import ChurnError
from churn_cli import data, health, quickstart, score, serve, train

app = typer.Typer(
    name="churn",
    help="Client churn prediction: demo data, validation, features, training, scoring, serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks and debug logs.")
    ] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        # psycopg warns about the pipeline it drops when a connection is lost, on top of the
        # one-line StoreError the command then prints.
        logging.getLogger("psycopg").setLevel(logging.ERROR)


# The order of `churn --help`: data, training, health rules, serving, batch scoring, then the
# quick start.
for _group in (data, train, health, serve, score, quickstart):
    _group.register(app)


def main() -> None:
    """Entry point of the console script."""
    try:
        app(standalone_mode=False)
    except ChurnError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {plain(exc)}", highlight=False, soft_wrap=True)
        if exc.hint:
            err_console.print(f"[dim]hint:[/] {plain(exc.hint)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click's own usage errors and anything unforeseen
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        if _state["debug"]:
            raise
        err_console.print(
            f"[bold red]error:[/] {type(exc).__name__}: {plain(exc)}",
            highlight=False,
            soft_wrap=True,
        )
        err_console.print(
            "[dim]hint:[/] run again with --debug for the full traceback", soft_wrap=True
        )
        sys.exit(1)
