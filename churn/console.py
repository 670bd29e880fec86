"""Terminal output shared by every command: rich consoles and a progress bar helper."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from churn.text import visible


def plain(message: object) -> str:
    """A message as literal text for a rich console: no Rich markup (``[bold]`` is printed as
    written) and no control characters (an escape sequence is shown as ``\\x1b``, not sent to
    the terminal). For messages quoting source data, such as a column name, that must not
    style or drive the terminal."""
    from rich.markup import escape

    return escape(visible(str(message)))


console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")


def progress() -> Progress:
    """A progress display on stderr (so ``--json`` output on stdout stays clean)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr."""
    with progress() as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


@contextmanager
def step(description: str) -> Iterator[None]:
    """A spinner for one long step whose length is not known in advance."""
    with err_console.status(description):
        yield
    err_console.print(f"[green]✓[/] {description}")
