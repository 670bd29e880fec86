"""The `churn` command line: one Typer app whose subcommands live beside the code they drive.

Each package keeps its commands in ``<package>/commands.py`` (heavy imports inside the
functions, so ``churn --help`` stays fast). This module only assembles them and turns domain
errors into one readable line plus a hint (a traceback only with ``--debug``).
"""

from __future__ import annotations

import logging
import sys

import typer

from churn.console import err_console
from churn.errors import ChurnError

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
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs."),
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


def _register() -> None:
    from features import commands as feature_commands

    feature_commands.register(app)
    try:
        from training import commands as training_commands
    except ImportError:  # pragma: no cover - package not built yet
        pass
    else:
        training_commands.register(app)
    try:
        from serving import commands as serving_commands
    except ImportError:  # pragma: no cover - package not built yet
        pass
    else:
        serving_commands.register(app)
    try:
        from serving import batch_commands
    except ImportError:  # pragma: no cover - package not built yet
        pass
    else:
        batch_commands.register(app)
    from churn import quickstart

    quickstart.register(app)


_register()


def main() -> None:
    """Entry point of the console script."""
    try:
        app(standalone_mode=False)
    except ChurnError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        if exc.hint:
            err_console.print(f"[dim]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)
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
            f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True
        )
        err_console.print(
            "[dim]hint:[/] run again with --debug for the full traceback", soft_wrap=True
        )
        sys.exit(1)
