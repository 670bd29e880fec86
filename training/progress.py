"""Progress of a training run on stderr (``churn.console``), or nothing at all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

Advance = Callable[..., None]
"""``advance(n=1)``: move a progress bar on by ``n`` steps."""


class Progress:
    """Steps and bars of a training run on stderr, or nothing when ``enabled`` is False."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def step(self, description: str) -> AbstractContextManager[None]:
        """A spinner named ``description`` while the ``with`` block runs."""
        if not self.enabled:
            return nullcontext()
        from churn.console import step

        return step(description)

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[Advance]:
        """Yields ``advance(n=1)``; the bar closes (and says done) on exit."""
        if not self.enabled:
            yield lambda n=1: None
            return
        from churn.console import progress

        with progress() as display:
            task = display.add_task(description, total=total)
            yield lambda n=1: display.advance(task, n)
            display.update(task, total=display.tasks[0].completed)


SILENT = Progress(enabled=False)
