"""The current model: loaded, verified and test-predicted before it serves; swapped atomically.

:class:`ModelHolder` keeps one immutable :class:`LoadedModel` (bundle + explainer). A request
reads ``holder.current`` once and uses that object to the end, so every response is computed
by exactly one model version. A reload builds the new object completely (manifest check,
LightGBM load, one test prediction whose explanations must add up) and then replaces the
reference in a single assignment; if anything fails the old model keeps serving and the error
is kept for ``/readyz`` and ``POST /v1/admin/reload``.

The periodic check (:meth:`ModelHolder.watch`) compares a fingerprint of the bundle folder
(resolved path - ``models/champion`` may be a symlink - plus size and mtime of every file)
every ``reload_interval_seconds`` and reloads when it changed. A fingerprint that failed is
not retried until it changes again (a bundle still being copied changes its files' stamps).

Before LightGBM parses ``model.txt``, :func:`churn.bundle.load_bundle` refuses pickles, checks
the manifest and the file's structure (``churn.bundle_checks``): LightGBM 4 crashes the whole
process on some truncated or mangled files instead of raising.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio

from churn.bundle import Bundle, load_bundle
from churn.errors import BundleIntegrityError, ChurnError
from serving.explain import Explainer

log = logging.getLogger(__name__)

Fingerprint = tuple[str, tuple[tuple[str, int, int], ...]]


@dataclass(frozen=True)
class LoadedModel:
    """A bundle ready to serve: its explainer, when it was loaded and what was loaded."""

    bundle: Bundle
    explainer: Explainer
    loaded_at: str
    fingerprint: Fingerprint | None

    @property
    def version(self) -> str:
        return self.bundle.version


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: ``reloaded``, ``unchanged`` (same fingerprint) or ``failed``."""

    outcome: str
    model_version: str | None
    previous_version: str | None
    error: str | None = None


def fingerprint(folder: Path) -> Fingerprint | None:
    """Resolved path plus (name, size, mtime_ns) of every file; None when there is no folder."""
    try:
        resolved = folder.resolve(strict=True)
        stamps = []
        for path in sorted(resolved.iterdir()):
            if path.is_file():
                st = path.stat()
                stamps.append((path.name, st.st_size, st.st_mtime_ns))
    except OSError:
        return None
    return str(resolved), tuple(stamps)


def load_model(folder: Path) -> LoadedModel:
    """Load, verify and test one bundle; raises a ChurnError (usually BundleIntegrityError).

    In order: no pickled file, the sha256 manifest, the structure of ``model.txt``, then
    LightGBM and the JSON files, then one test prediction whose explanations must add up. A
    bundle whose files change while this runs is refused (the next check retries it).
    """
    folder = Path(folder)
    stamp = fingerprint(folder)
    bundle = load_bundle(folder, verify=True)  # pickles, manifest, model.txt, then LightGBM
    explainer = Explainer(bundle)
    explainer.self_test()
    if fingerprint(folder) != stamp:
        raise BundleIntegrityError(
            f"model bundle {folder} changed while it was being loaded",
            hint="the next check or POST /v1/admin/reload loads it once it is complete",
        )
    loaded_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    return LoadedModel(bundle, explainer, loaded_at, stamp)


class ModelHolder:
    """Holds the serving model (or None) and the last load error, reloads on request."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.current: LoadedModel | None = None
        self.error: str | None = None
        self.last_checked: float | None = None
        self._failed: Fingerprint | None = None
        self._lock = threading.Lock()
        # Called as listener(result, serving model) after every reload that did something.
        self.listeners: list[Callable[[ReloadResult, LoadedModel | None], None]] = []

    @property
    def ready(self) -> bool:
        return self.current is not None

    def unavailable_reason(self) -> str | None:
        """Why there is no model (None when one is serving)."""
        if self.current is not None:
            return None
        return self.error or f"no model bundle has been loaded from {self.folder}"

    def reload(self, force: bool = True) -> ReloadResult:
        """Load the bundle folder and swap it in; keep the old model when anything fails.

        ``force=False`` (the periodic check) does nothing when the folder's fingerprint is
        the serving one's or the one that last failed.
        """
        with self._lock:  # one reload at a time; requests never take this lock
            previous = self.current
            old_version = previous.version if previous else None
            stamp = fingerprint(self.folder)
            self.last_checked = time.time()
            if not force and (
                (previous is not None and stamp == previous.fingerprint)
                or (stamp is not None and stamp == self._failed)
                or (stamp is None and self.error is not None)
            ):
                return ReloadResult("unchanged", old_version, old_version)
            try:
                loaded = load_model(self.folder)
            except ChurnError as exc:
                return self._failed_with(str(exc), stamp, old_version)
            except Exception as exc:  # a corrupt file can surface as any error type
                return self._failed_with(f"{type(exc).__name__}: {exc}", stamp, old_version)
            self.current = loaded  # the atomic swap
            self.error = None
            self._failed = None
        log.info(
            "model loaded",
            extra={
                "event": "model_loaded",
                "model_version": loaded.version,
                "previous_version": old_version,
            },
        )
        result = ReloadResult("reloaded", loaded.version, old_version)
        for listener in self.listeners:
            listener(result, loaded)
        return result

    def _failed_with(self, error: str, stamp: Fingerprint | None, old: str | None) -> ReloadResult:
        self.error = error
        self._failed = stamp
        log.error(
            "model load failed; %s",
            "keeping the serving model" if old else "serving rule-based scores only",
            extra={"event": "model_load_failed", "error": error, "model_version": old},
        )
        result = ReloadResult("failed", old, old, error)
        for listener in self.listeners:
            listener(result, self.current)
        return result

    async def reload_async(self, force: bool = True) -> ReloadResult:
        """:meth:`reload` in a worker thread, so requests keep being answered meanwhile."""
        return await anyio.to_thread.run_sync(self.reload, force)

    async def watch(self, interval: float) -> None:
        """Check the bundle folder every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload_async(force=False)
            except Exception:  # the watcher must survive anything a reload throws
                log.exception("periodic model check failed")
