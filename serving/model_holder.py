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

Before LightGBM parses ``model.txt`` its structure is checked here (:func:`check_model_text`):
LightGBM's C++ parser reads trees at the byte offsets the file's ``tree_sizes`` header
announces and aborts or crashes the whole process on a truncated or mangled tree (measured
with LightGBM 4: SIGSEGV/SIGABRT, no Python exception). The manifest already refuses a file
changed after export; the structural check also covers a bundle whose manifest was written
over a broken file. A bundle holding any pickled file is refused outright: serving never
unpickles.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio

from churn.bundle import MODEL_FILE, Bundle, load_bundle, verify_manifest
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
    if stamp is not None:
        refuse_pickles(folder)
        verify_manifest(folder)
        check_model_text(folder / MODEL_FILE)
    bundle = load_bundle(folder, verify=True)
    explainer = Explainer(bundle)
    explainer.self_test()
    if fingerprint(folder) != stamp:
        raise BundleIntegrityError(
            f"model bundle {folder} changed while it was being loaded",
            hint="the next check or POST /v1/admin/reload loads it once it is complete",
        )
    loaded_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    return LoadedModel(bundle, explainer, loaded_at, stamp)


# -- what is refused before LightGBM sees a file --------------------------------------------

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".cloudpickle", ".dill", ".sav")
# Pickle protocols 2-5 begin with the PROTO opcode and the protocol number.
_PICKLE_MAGIC = tuple(bytes([0x80, n]) for n in range(2, 6))


def refuse_pickles(folder: Path) -> None:
    """Raise BundleIntegrityError when any file of the bundle is (named like) a pickle."""
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        with path.open("rb") as fh:
            head = fh.read(2)
        if path.suffix.lower() in PICKLE_SUFFIXES or head in _PICKLE_MAGIC:
            raise BundleIntegrityError(
                f"model bundle {folder} holds a pickled file {path.name}; serving never unpickles",
                hint="export the model with `churn train` (LightGBM text format + JSON)",
            )


# A number as LightGBM writes it (C++ ``%g``-style or shortest round-trip), or inf/nan.
_NUMBER = re.compile(rb"^[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)$")
_INTEGER = re.compile(rb"^-?\d{1,10}$")
_KEY = re.compile(rb"^[a-z_]+$")
_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]")
_PARAMETER = re.compile(rb"^\[[a-z0-9_]+: .*\]$")
_IMPORTANCE = re.compile(rb"^[^=\s]+=\d+$")
_TREE_INTS = frozenset(
    {"num_leaves", "num_cat", "split_feature", "decision_type", "left_child", "right_child",
     "leaf_count", "internal_count", "cat_boundaries", "cat_threshold", "is_linear"}
)  # fmt: skip
_TREE_FLOATS = frozenset(
    {"split_gain", "threshold", "leaf_value", "leaf_weight", "internal_value",
     "internal_weight", "shrinkage"}
)  # fmt: skip
_PER_SPLIT = ("split_feature", "split_gain", "threshold", "decision_type", "left_child",
              "right_child", "internal_value", "internal_weight", "internal_count")  # fmt: skip
_PER_LEAF = ("leaf_value", "leaf_weight", "leaf_count")


def _broken(path: Path, what: str) -> BundleIntegrityError:
    return BundleIntegrityError(
        f"model bundle {path.parent}: {path.name} is not a complete LightGBM model ({what})",
        hint="the file is truncated or damaged; re-export the bundle",
    )


def check_model_text(path: Path) -> None:
    """Check that ``model.txt`` is a whole LightGBM text model that LightGBM parses safely.

    The grammar LightGBM writes, checked line by line: a ``key=value`` header whose
    ``tree_sizes`` places every tree; each tree at its offset, starting ``Tree=<i>``, with
    known keys, numeric values, arrays as long as ``num_leaves`` implies, split features and
    children in range; then ``end of trees``, the feature importances, the ``[name: value]``
    parameters up to ``end of parameters`` and the optional ``pandas_categorical`` line.
    """
    try:
        data = path.read_bytes()
        data.decode("utf-8")
    except OSError as exc:
        raise _broken(path, f"cannot read it: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise _broken(path, f"a byte that is not UTF-8 at {exc.start}") from exc
    control = _CONTROL.search(data)
    if control:  # LightGBM also splits lines at "\r"
        raise _broken(path, f"a control character at byte {control.start()}")
    first = data.find(b"\nTree=")
    if not data.startswith(b"tree\n") or first < 0:
        raise _broken(path, "no header or no trees")
    header: dict[str, bytes] = {}
    for line in data[5 : first + 1].split(b"\n"):
        key, sep, value = line.partition(b"=")
        if line and not (sep and _KEY.match(key)):
            raise _broken(path, "a header line is not key=value")
        header[key.decode()] = value
    try:
        n_features = int(header["max_feature_idx"]) + 1
        sizes = [int(v) for v in header["tree_sizes"].split(b" ")]
        n_names = len(header["feature_names"].split(b" "))
        n_infos = len(header["feature_infos"].split(b" "))
        int(header["num_class"]), int(header["num_tree_per_iteration"])
    except (KeyError, ValueError) as exc:
        raise _broken(path, f"header field {exc} missing or not a number") from exc
    if not n_features == n_names == n_infos or not sizes or min(sizes) <= 0:
        raise _broken(path, "feature names, feature infos or tree sizes do not add up")
    objective = header.get("objective", b"").decode("utf-8")
    if objective.split(" ")[0] != "binary":
        # Calibration clips to [0, 1], so a regression model's scores could pass as
        # probabilities; the explanations assume log-odds.
        raise BundleIntegrityError(
            f"model bundle {path.parent}: {path.name} is not a binary classifier "
            f"(objective {objective[:40]!r})",
            hint="train with objective=binary",
        )
    offset = first + 1
    if offset + sum(sizes) > len(data):
        raise _broken(path, f"the trees need {offset + sum(sizes):,} bytes, it has {len(data):,}")
    for i, size in enumerate(sizes):
        _check_tree(path, i, data[offset : offset + size], n_features)
        offset += size
    _check_tail(path, data[offset:])


def _check_tail(path: Path, tail: bytes) -> None:
    """``end of trees``, importances, parameters (LightGBM reads them to their end marker,
    past the buffer's end when it is missing) and the Python package's categorical line."""
    lines = [line for line in tail.split(b"\n") if line]
    if len(lines) < 3 or lines[0] != b"end of trees" or lines[1] != b"feature_importances:":
        raise _broken(path, "no 'end of trees' and feature importances after the last tree")
    rest = lines[2:]
    while rest and _IMPORTANCE.match(rest[0]):
        rest = rest[1:]
    if not rest or rest[0] != b"parameters:":
        raise _broken(path, "the feature importances are damaged or the parameters missing")
    rest = rest[1:]
    while rest and _PARAMETER.match(rest[0]):
        rest = rest[1:]
    if not rest or rest[0] != b"end of parameters":
        raise _broken(path, "the parameters are damaged or cut short")
    rest = rest[1:]
    if rest:
        key, _, value = rest[0].partition(b":")
        try:
            json.loads(value)
        except ValueError:
            key = b""
        if len(rest) > 1 or key != b"pandas_categorical":
            raise _broken(path, "unexpected lines after the parameters")


def _is_tree(left: list[int], right: list[int], leaves: int) -> bool:
    """Whether every node but the root and every leaf (``~leaf``) has exactly one parent, all
    reachable from the root (LightGBM walks these arrays without bounds checks)."""
    children = left + right
    if sorted(children) != sorted([*range(1, leaves - 1), *(~j for j in range(leaves))]):
        return False
    seen, todo = {0}, [0]
    while todo:
        node = todo.pop()
        for child in (left[node], right[node]):
            if child >= 0 and child not in seen:
                seen.add(child)
                todo.append(child)
    return len(seen) == leaves - 1


def _check_tree(path: Path, i: int, block: bytes, n_features: int) -> None:
    lines = block.split(b"\n")
    if lines[0] != f"Tree={i}".encode():
        raise _broken(path, f"tree {i} is not where tree_sizes puts it")
    fields: dict[str, list[bytes]] = {}
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(b"=")
        name = key.decode("ascii", "replace")
        values = value.split(b" ") if value else []
        pattern = _INTEGER if name in _TREE_INTS else _NUMBER if name in _TREE_FLOATS else None
        if not sep or pattern is None or name in fields:
            raise _broken(path, f"tree {i}: a line that is not one of LightGBM's tree fields")
        if not all(pattern.match(v) for v in values):
            raise _broken(path, f"tree {i}: {name} holds something that is not a number")
        fields[name] = values
    ints = {k: [int(v) for v in vs] for k, vs in fields.items() if k in _TREE_INTS}
    leaves = (ints.get("num_leaves") or [0])[0]
    cats = (ints.get("num_cat") or [0])[0]
    if leaves < 1 or cats < 0 or (ints.get("is_linear") or [0])[0] != 0:
        raise _broken(path, f"tree {i}: bad num_leaves or num_cat, or a linear tree")
    if len(fields.get("leaf_value", ())) != leaves:
        raise _broken(path, f"tree {i}: {leaves} leaves but not as many leaf values")
    if any(not math.isfinite(float(v)) for v in fields["leaf_value"]):
        raise _broken(path, f"tree {i}: a leaf value is not finite")
    if leaves == 1:
        return
    for key in ("split_feature", "threshold", "decision_type", "left_child", "right_child"):
        if key not in fields:
            raise _broken(path, f"tree {i}: no {key}")
    for keys, n in ((_PER_SPLIT, leaves - 1), (_PER_LEAF, leaves)):
        for key in keys:
            if key in fields and len(fields[key]) != n:
                raise _broken(path, f"tree {i}: {key} has {len(fields[key])} values, not {n}")
    if any(not 0 <= f < n_features for f in ints["split_feature"]):
        raise _broken(path, f"tree {i}: a split on a feature the model does not have")
    if not _is_tree(ints["left_child"], ints["right_child"], leaves):
        raise _broken(path, f"tree {i}: its nodes do not form a tree")
    if any(not 0 <= d < 256 for d in ints["decision_type"]):
        raise _broken(path, f"tree {i}: a decision type out of range")
    bounds = ints.get("cat_boundaries", [])
    if cats and (
        len(bounds) != cats + 1
        or bounds[0] != 0
        or any(b < a for a, b in itertools.pairwise(bounds))
        or bounds[-1] != len(ints.get("cat_threshold", []))
    ):
        raise _broken(path, f"tree {i}: categorical split tables do not match num_cat")
    thresholds = [float(t) for t in fields["threshold"]]
    for t, d in zip(thresholds, ints["decision_type"], strict=True):
        if d & 1 and not (t.is_integer() and 0 <= t < cats):
            raise _broken(path, f"tree {i}: a categorical split points outside its tables")


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
