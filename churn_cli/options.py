"""Command-line options shared by several `churn` subcommands (one definition, one help text)."""

from __future__ import annotations

from typing import Any


def data_option() -> Any:
    """The ``--data SOURCE`` option of every command that reads a source."""
    import typer

    return typer.Option(
        None,
        "--data",
        help="Source: folder, .duckdb file or SQLAlchemy URL (default: the data setting).",
    )
