"""Load a candidate bundle in a child process first, so a crash inside LightGBM kills the child.

LightGBM's C++ code trusts ``model.txt``: some files make it divide by zero, read out of
bounds or allocate without limit, and the process dies by a signal with no Python exception
and no log line. ``churn.bundle_checks`` refuses every such file it knows of; this is the
second line for the ones it does not. Before the serving process loads a bundle,
:func:`probe_bundle` runs ``python -m serving.model_probe <folder>`` - the same LightGBM load
and the explainer's self-test prediction - and refuses the bundle when the child dies
(:class:`ModelCrashed`, e.g. "LightGBM crashed while loading it (SIGFPE)") or does not
finish in time. A child that fails with an ordinary error is not a crash: the serving
process then loads the bundle itself and reports that error as usual.

The verdict depends only on ``model.txt`` (the self-test's input is built from the model's
own features), so it is cached per process by the file's sha256 from the bundle's manifest:
tests and reloads of an unchanged model pay for the child once.

Exit codes of the child: 0 loaded and self-tested, 3 refused with an ordinary error (printed
on stderr), anything else (a signal, the interpreter failing) counts as a crash.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from churn.bundle import MANIFEST_FILE, MODEL_FILE
from churn.errors import BundleIntegrityError

log = logging.getLogger(__name__)

#: Seconds a child may take to load and self-test a bundle before the bundle is refused.
PROBE_TIMEOUT_SECONDS = 60.0  # a bundle loads in about a second; reloads wait on this
LOADED, REFUSED = 0, 3

_verdicts: dict[str, str | None] = {}  # sha256 of model.txt -> None (no crash) or the reason
_lock = threading.Lock()


class ModelCrashed(BundleIntegrityError):
    """Loading the bundle killed (or hung) the child process that tried it first."""


def _model_digest(folder: Path) -> str | None:
    """The sha256 of ``model.txt`` as the (already verified) manifest records it."""
    try:
        lines = (folder / MANIFEST_FILE).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        digest, _, name = line.partition("  ")
        if name.strip() == MODEL_FILE:
            return digest.strip()
    return None


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"LightGBM crashed while loading it ({name})"
    return f"the process loading it exited with code {returncode}"


def _run_child(folder: Path) -> tuple[str | None, bool]:
    """Run the probe: (None when the child did not crash, else why the bundle is refused;
    whether that verdict may be cached - a timeout may be the machine's, not the file's)."""
    package_root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}
    started = time.monotonic()
    try:
        run = subprocess.run(
            [sys.executable, "-m", "serving.model_probe", str(folder)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"loading it did not finish within {PROBE_TIMEOUT_SECONDS:.0f} s", False
    log.debug("model probe took %.2f s", time.monotonic() - started)
    if run.returncode in (LOADED, REFUSED):
        return None, True
    return _describe(run.returncode), True


def probe_bundle(folder: Path) -> None:
    """Raise :class:`ModelCrashed` when loading ``folder`` kills or hangs a child process.

    Call it after the manifest check (the cache trusts the manifest's digest of
    ``model.txt``); without a digest the child runs every time.
    """
    folder = Path(folder)
    digest = _model_digest(folder)
    with _lock:
        known = digest is not None and digest in _verdicts
        reason = _verdicts.get(digest) if digest is not None else None
    if not known:
        reason, cacheable = _run_child(folder)
        if digest is not None and cacheable:
            with _lock:
                _verdicts[digest] = reason
    if reason is not None:
        raise ModelCrashed(
            f"model bundle {folder}: {MODEL_FILE} was refused: {reason}",
            hint="the file is damaged or crafted; re-export the bundle with `churn train`",
        )


class _SkipOptional(importlib.abc.MetaPathFinder):
    """Makes LightGBM's optional integrations (scikit-learn, Dask, plotting) look absent in
    the child: loading a Booster needs none of them, and importing them takes seconds."""

    SKIPPED = frozenset({"sklearn", "dask", "distributed", "matplotlib", "graphviz"})

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in self.SKIPPED:
            raise ImportError(f"{fullname} is not needed to load a model")
        return None


def main(argv: list[str]) -> int:
    """Load and self-test the bundle in ``argv[1]``; the exit code is the verdict."""
    from serving.model_holder import load_model

    try:
        load_model(Path(argv[1]), probe=False)
    except Exception as exc:  # an ordinary refusal: the parent reports it itself
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return REFUSED
    return LOADED


if __name__ == "__main__":
    sys.meta_path.insert(0, _SkipOptional())
    sys.exit(main(sys.argv))
