"""Files holding client data are created readable by their owner only (mode 0600).

The score store, the rejects file, the retention report and feature files quote client names,
revenue and scores. Left to the process's umask (usually 022) they would be world-readable;
these helpers set the mode when the file is created, whatever the umask. A file that already
exists keeps the mode it has, so an operator who granted a group read access (for a service
running as another user) keeps that grant.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

PRIVATE_MODE = 0o600


@contextmanager
def private_file(path: Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open ``path`` for writing (``mode`` ``"w"`` or ``"wb"``; text opens with
    ``newline=""`` unless told otherwise), creating it with mode 0600 if it does not exist."""
    if mode not in ("w", "wb"):
        raise ValueError(f"private_file writes only ('w' or 'wb'), not {mode!r}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "")
    with os.fdopen(fd, mode, **kwargs) as handle:
        yield handle


def write_private_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path``, created with mode 0600 if it does not exist."""
    with private_file(path, "w", newline=None) as handle:
        handle.write(text)


_umask_lock = threading.RLock()


@contextmanager
def umask_for(path: Path) -> Iterator[None]:
    """Within the block, files the process creates give the group and others no more than
    ``path`` gives them (nothing when ``path`` does not exist yet: files 0600, folders 0700).
    The owner's bits are left to the umask, so a folder created meanwhile stays usable.

    For libraries that create files themselves, such as DuckDB with its database file and
    write-ahead log (``<file>.wal``, created by each write and removed at its checkpoint). The
    umask is process-wide: the lock keeps two blocks from restoring each other's value, and
    other threads creating files meanwhile only get fewer permissions, never more."""
    try:
        allowed = path.stat().st_mode & 0o666
    except OSError:
        allowed = PRIVATE_MODE
    with _umask_lock:
        previous = os.umask(0o077)
        os.umask(previous | (0o077 & ~allowed))
        try:
            yield
        finally:
            os.umask(previous)
