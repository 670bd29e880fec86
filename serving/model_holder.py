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

Before LightGBM parses ``model.txt`` in this process, :func:`churn.bundle.verify_bundle`
refuses pickles, checks the manifest and the file's structure and header
(``churn.bundle_checks``): LightGBM 4 crashes the whole process on some truncated, mangled
or crafted files instead of raising. Then ``serving.model_probe`` loads the bundle in a child
process: if LightGBM kills the child, the bundle is refused and the serving model stays.

What a failure tells whom: the log (event ``model_load_failed``) and an admin get the full
detail; everyone else gets a reason code (:data:`REASON_CODES`) or, for authenticated
callers, a readable reason that names files relative to the bundle folder and carries no
exception text (:func:`public_reason`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

import anyio

from churn.bundle import Bundle, load_bundle, verify_bundle
from churn.errors import BundleIntegrityError, ChurnError
from serving.explain import Explainer
from serving.model_probe import ModelCrashed, probe_bundle

log = logging.getLogger(__name__)

Fingerprint = tuple[str, tuple[tuple[str, int, int], ...]]

#: Why no model serves or the last reload failed, as ``/readyz`` tells anyone: no bundle
#: folder (``no_bundle``), a bundle refused by its checks (``bundle_refused``), a bundle that
#: crashed the child process loading it first (``bundle_crashed``), any other failure
#: (``load_failed``), nothing tried yet (``not_loaded``).
ReasonCode = Literal["no_bundle", "bundle_refused", "bundle_crashed", "load_failed", "not_loaded"]
REASON_CODES: tuple[str, ...] = get_args(ReasonCode)


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
    """What a reload did: ``reloaded``, ``unchanged`` (same fingerprint) or ``failed``.

    On failure ``error`` is the full detail (for the log and admins), ``reason`` the readable
    reason without paths or exception text and ``code`` one of :data:`REASON_CODES`.
    """

    outcome: str
    model_version: str | None
    previous_version: str | None
    error: str | None = None
    reason: str | None = None
    code: str | None = None


# An absolute path left in a message after the bundle folder's own were made relative.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s/:'\"]+/)*([^\s/:'\"]+)")


def _detail(exc: BaseException) -> str:
    """The full text of a load failure, with the exception that caused it."""
    text = str(exc) if isinstance(exc, ChurnError) else f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" (cause: {type(cause).__name__}: {cause})"
    return text


def public_reason(exc: BaseException, folder: Path) -> str:
    """A load failure as callers may read it: files named relative to the bundle folder (the
    folder itself by its name), no other path and no exception text (that goes to the log)."""
    if not isinstance(exc, ChurnError):
        return f"an unexpected {type(exc).__name__} while loading it"
    text = str(exc)
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) in text:
        text = text.replace(str(cause), f"{type(cause).__name__}, see the log")
    folder = Path(folder)
    forms = {str(folder), str(folder.absolute())}
    with contextlib.suppress(OSError):
        forms.add(str(folder.resolve()))
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(f"model bundle {form}: ", "").replace(f"{form}/", "")
        text = text.replace(form, folder.name)
    return _ABSOLUTE_PATH.sub(r"\1", text)


def reason_code(exc: BaseException, folder: Path) -> str:
    """The :data:`REASON_CODES` entry for a load failure."""
    if isinstance(exc, ModelCrashed):
        return "bundle_crashed"
    if fingerprint(Path(folder)) is None:
        return "no_bundle"
    if isinstance(exc, BundleIntegrityError):
        return "bundle_refused"
    return "load_failed"


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


def load_model(folder: Path, *, probe: bool = True) -> LoadedModel:
    """Load, verify and test one bundle; raises a ChurnError (usually BundleIntegrityError).

    In order: no pickled file, the sha256 manifest, the structure and header of
    ``model.txt``, then (with ``probe``) the same load in a child process that may crash,
    then LightGBM and the JSON files here, then one test prediction whose explanations must
    add up. A bundle whose files change while this runs is refused (the next check retries it).
    """
    folder = Path(folder)
    stamp = fingerprint(folder)
    if probe:
        verify_bundle(folder)
        probe_bundle(folder)  # ModelCrashed when LightGBM kills the child
    bundle = load_bundle(folder, verify=True)  # checked again: the files may have changed
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
        self.error: str | None = None  # the full detail of the last failure
        self.reason: str | None = None  # the same without paths or exception text
        self.code: str | None = None  # one of REASON_CODES
        self.last_checked: float | None = None
        self._failed: Fingerprint | None = None
        self._lock = threading.Lock()
        # Called as listener(result, serving model) after every reload that did something.
        self.listeners: list[Callable[[ReloadResult, LoadedModel | None], None]] = []

    @property
    def ready(self) -> bool:
        return self.current is not None

    def unavailable_reason(self) -> str | None:
        """Why there is no model (None when one is serving), without paths or exception text."""
        if self.current is not None:
            return None
        return self.reason or "no model bundle has been loaded yet"

    def unavailable_code(self) -> str | None:
        """The :data:`REASON_CODES` entry saying why there is no model (None when one serves)."""
        if self.current is not None:
            return None
        return self.code or "not_loaded"

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
            except Exception as exc:  # a corrupt file can surface as any error type
                return self._failed_with(exc, stamp, old_version)
            self.current = loaded  # the atomic swap
            self.error = self.reason = self.code = None
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

    def _failed_with(
        self, exc: Exception, stamp: Fingerprint | None, old: str | None
    ) -> ReloadResult:
        self.error = error = _detail(exc)
        self.reason = reason = public_reason(exc, self.folder)
        self.code = code = reason_code(exc, self.folder)
        self._failed = stamp
        log.error(
            "model load failed; %s",
            "keeping the serving model" if old else "serving rule-based scores only",
            extra={"event": "model_load_failed", "error": error, "model_version": old},
        )
        result = ReloadResult("failed", old, old, error, reason, code)
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
