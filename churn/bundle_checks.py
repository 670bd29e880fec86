"""What is refused before LightGBM sees a bundle's files: pickles, and a ``model.txt`` that is
not a whole LightGBM text model.

LightGBM's C++ parser reads trees at the byte offsets the file's ``tree_sizes`` header
announces and aborts or crashes the whole process on a truncated or mangled tree (measured
with LightGBM 4: SIGSEGV/SIGABRT, no Python exception). The sha256 manifest already refuses a
file changed after export; :func:`check_model_text` also covers a bundle whose manifest was
written over a broken file. Every header field is checked against bounds too: LightGBM trusts
them (``num_tree_per_iteration=0`` divides by zero and kills the process with SIGFPE). A bundle
holding any pickled file is refused outright: nothing in a bundle is ever unpickled.
:func:`churn.bundle.load_bundle` runs both checks; serving also loads a new bundle in a child
process first (``serving.model_probe``), for whatever crash these checks do not foresee.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

from churn.errors import BundleIntegrityError

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
    n_features, sizes = _check_header(path, data[5 : first + 1])
    if data.count(b"\nTree=") != len(sizes):
        raise _broken(path, f"tree_sizes announces {len(sizes)} trees, the file holds others")
    offset = first + 1
    if offset + sum(sizes) > len(data):
        raise _broken(path, f"the trees need {offset + sum(sizes):,} bytes, it has {len(data):,}")
    for i, size in enumerate(sizes):
        _check_tree(path, i, data[offset : offset + size], n_features)
        offset += size
    _check_tail(path, data[offset:])


#: The header keys LightGBM 4 writes for a binary model (``GBDT::SaveModelToString``), each
#: with the shape its value must have. LightGBM reads them with ``atoi`` and trusts them:
#: ``num_tree_per_iteration=0`` divides by zero (SIGFPE), a huge ``num_class`` or
#: ``max_feature_idx`` makes it allocate gigabytes. Any other key is refused.
MAX_FEATURES = 100_000
MAX_TREES = 100_000
MAX_CATEGORIES = 10_000  # values listed in one categorical feature's info
_HEADER_KEYS = (
    "version", "num_class", "num_tree_per_iteration", "label_index", "max_feature_idx",
    "objective", "feature_names", "feature_infos", "tree_sizes",
)  # fmt: skip
_OBJECTIVE = re.compile(rb"^binary sigmoid:(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)$")
_FEATURE_NAME = re.compile(rb'^[^\s\[\]{}",:=]{1,256}$')
_FEATURE_INFO = re.compile(
    rb"^(?:none|\[[^\]:\s]{1,40}:[^\]:\s]{1,40}\]|-?\d{1,10}(?::-?\d{1,10})*)$"
)
_SIZE = re.compile(rb"^\d{1,10}$")


def _header_int(path: Path, header: dict[str, bytes], key: str, low: int, high: int) -> int:
    value = header[key]
    if not _INTEGER.match(value) or not low <= int(value) <= high:
        wanted = str(low) if low == high else f"an integer from {low} to {high:,}"
        raise _broken(path, f"header {key}={value[:20].decode(errors='replace')}, not {wanted}")
    return int(value)


def _check_header(path: Path, block: bytes) -> tuple[int, list[int]]:
    """Every header line is one of LightGBM's keys, once, with a value in bounds; returns the
    number of features and the tree sizes.

    A binary model has one class and one tree per iteration; names, infos and sizes are
    lists of the announced lengths in LightGBM's formats; ``tree_sizes`` is bounded (its
    count is checked against the trees themselves by the caller).
    """
    header: dict[str, bytes] = {}
    for line in block.split(b"\n"):
        if not line:
            continue
        key, sep, value = line.partition(b"=")
        name = key.decode("ascii", "replace")
        if not (sep and _KEY.match(key)):
            raise _broken(path, "a header line is not key=value")
        if name not in _HEADER_KEYS:
            raise _broken(path, f"unknown header key {name[:40]!r}")
        if name in header:
            raise _broken(path, f"header key {name} given twice")
        header[name] = value
    missing = [key for key in _HEADER_KEYS if key not in header]
    if missing:
        raise _broken(path, f"header field {missing[0]} missing")
    if header["version"] != b"v4":
        raise _broken(path, "header version is not v4 (LightGBM 4's text format)")
    _header_int(path, header, "num_class", 1, 1)
    _header_int(path, header, "num_tree_per_iteration", 1, 1)
    n_features = _header_int(path, header, "max_feature_idx", 0, MAX_FEATURES - 1) + 1
    _header_int(path, header, "label_index", 0, MAX_FEATURES)
    objective = _OBJECTIVE.match(header["objective"])
    if objective is None:
        # Calibration clips to [0, 1], so a regression model's scores could pass as
        # probabilities; the explanations assume log-odds.
        shown = header["objective"].decode("utf-8", "replace")[:40]
        raise BundleIntegrityError(
            f"model bundle {path.parent}: {path.name} is not a binary classifier "
            f"(objective {shown!r})",
            hint="train with objective=binary",
        )
    sigmoid = float(objective.group(1))
    if not (math.isfinite(sigmoid) and 0 < sigmoid <= 1e6):
        raise _broken(path, "the objective's sigmoid is not a finite positive number")
    names = header["feature_names"].split(b" ")
    infos = header["feature_infos"].split(b" ")
    if len(names) != n_features or len(infos) != n_features:
        raise _broken(path, "feature names, feature infos or tree sizes do not add up")
    if not all(_FEATURE_NAME.match(n) for n in names) or len(set(names)) != len(names):
        raise _broken(path, "a feature name is empty, repeated or holds a reserved character")
    for info in infos:
        if not _FEATURE_INFO.match(info) or info.count(b":") > MAX_CATEGORIES:
            raise _broken(path, "a feature info is not 'none', '[min:max]' or categories a:b:c")
        if info.startswith(b"[") and not all(_NUMBER.match(v) for v in info[1:-1].split(b":")):
            raise _broken(path, "a feature info's range does not hold numbers")
    listed = header["tree_sizes"].split(b" ")
    if not 1 <= len(listed) <= MAX_TREES or not all(_SIZE.match(v) for v in listed):
        raise _broken(path, f"tree_sizes is not a list of 1 to {MAX_TREES:,} sizes")
    sizes = [int(v) for v in listed]
    if min(sizes) <= 0:
        raise _broken(path, "feature names, feature infos or tree sizes do not add up")
    return n_features, sizes


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
    for field in ("split_feature", "threshold", "decision_type", "left_child", "right_child"):
        if field not in fields:
            raise _broken(path, f"tree {i}: no {field}")
    for names, n in ((_PER_SPLIT, leaves - 1), (_PER_LEAF, leaves)):
        for field in names:
            if field in fields and len(fields[field]) != n:
                raise _broken(path, f"tree {i}: {field} has {len(fields[field])} values, not {n}")
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
