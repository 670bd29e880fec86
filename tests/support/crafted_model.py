"""Crafted ``model.txt`` files for the tests of what serving refuses, and how it contains a crash.

:data:`CRAFTED`: header edits, each with the words its refusal must contain; apply one to a
copy of a real bundle and rewrite the manifest (as a forger would).

A bundle whose ``model.txt`` kills any process LightGBM loads it in, for containment tests:

``num_tree_per_iteration=0`` makes LightGBM 4 divide by zero while loading (SIGFPE). The
header check refuses it, so to reach LightGBM at all a test switches that one rule off in the
processes it starts: :func:`lenient_header_path` writes a ``sitecustomize.py`` that lets this
header through, and putting its folder first on ``PYTHONPATH`` (inherited by the child that
loads a candidate bundle first) stands for a crafted file the checks do not foresee.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path

from churn.bundle import MODEL_FILE, write_manifest
from churn.bundle_checks import MAX_TREES

Edit = Callable[[str], str]

CRASHING_LINE = b"num_tree_per_iteration=0"

_SITECUSTOMIZE = textwrap.dedent(
    """
    import churn.bundle_checks as _checks

    _check_header = _checks._check_header


    def _lenient(path, block):
        return _check_header(path, block.replace(%r, b"num_tree_per_iteration=1"))


    _checks._check_header = _lenient
    """
)


def make_crashing(folder: Path) -> Path:
    """Rewrite the bundle's ``model.txt`` to crash LightGBM, and its manifest to match."""
    text = (folder / MODEL_FILE).read_bytes()
    crafted = text.replace(b"num_tree_per_iteration=1\n", CRASHING_LINE + b"\n", 1)
    assert crafted != text
    (folder / MODEL_FILE).write_bytes(crafted)
    write_manifest(folder)
    return folder


def lenient_header_path(tmp: Path) -> Path:
    """A folder holding a ``sitecustomize.py`` that lets :data:`CRASHING_LINE` pass the
    header check in every Python process started with it first on ``PYTHONPATH``."""
    folder = tmp / "lenient-header"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE % CRASHING_LINE)
    return folder


def _header_line(text: str, key: str) -> str:
    match = re.search(rf"^{key}=.*$", text, flags=re.MULTILINE)
    assert match, key
    return match.group(0)


def _set(key: str, value: str) -> Edit:
    def edit(text: str) -> str:
        return text.replace(_header_line(text, key), f"{key}={value}", 1)

    return edit


def _names(edit: Callable[[list[str]], list[str]]) -> Edit:
    def apply(text: str) -> str:
        names = _header_line(text, "feature_names")[len("feature_names=") :].split(" ")
        return text.replace(
            _header_line(text, "feature_names"), "feature_names=" + " ".join(edit(names)), 1
        )

    return apply


def _sizes(edit: Callable[[list[str]], list[str]]) -> Edit:
    def apply(text: str) -> str:
        sizes = _header_line(text, "tree_sizes")[len("tree_sizes=") :].split(" ")
        return text.replace(
            _header_line(text, "tree_sizes"), "tree_sizes=" + " ".join(edit(sizes)), 1
        )

    return apply


def _insert(line: str) -> Edit:
    def apply(text: str) -> str:
        return text.replace("\nnum_class=", f"\n{line}\nnum_class=", 1)

    return apply


CRAFTED: dict[str, tuple[Edit, str]] = {
    # LightGBM divides the number of trees by it: SIGFPE, the process gone without a log line.
    "num_tree_per_iteration=0": (_set("num_tree_per_iteration", "0"), "num_tree_per_iteration"),
    "num_tree_per_iteration=2": (_set("num_tree_per_iteration", "2"), "num_tree_per_iteration"),
    # A 60 GiB allocation at the first prediction.
    "num_class=2000000000": (_set("num_class", "2000000000"), "num_class"),
    "num_class=2": (_set("num_class", "2"), "num_class"),
    "num_class=-1": (_set("num_class", "-1"), "num_class"),
    "num_class not a number": (_set("num_class", "1x"), "num_class"),
    "version=v9": (_set("version", "v9"), "version"),
    "label_index=-1": (_set("label_index", "-1"), "label_index"),
    "max_feature_idx=99999999": (_set("max_feature_idx", "99999999"), "max_feature_idx"),
    "max_feature_idx off by one": (_set("max_feature_idx", "55"), "do not add up"),
    "objective multiclass": (_set("objective", "multiclass num_class:2"), "binary classifier"),
    "objective without sigmoid": (_set("objective", "binary"), "binary classifier"),
    "sigmoid 0": (_set("objective", "binary sigmoid:0"), "sigmoid"),
    "sigmoid inf": (_set("objective", "binary sigmoid:inf"), "binary classifier"),
    "sigmoid -1": (_set("objective", "binary sigmoid:-1"), "binary classifier"),
    "sigmoid huge": (_set("objective", "binary sigmoid:1e400"), "sigmoid"),
    "repeated feature name": (_names(lambda n: [n[1], *n[1:]]), "feature name"),
    "feature name with a bracket": (_names(lambda n: ["a[0]", *n[1:]]), "feature name"),
    "feature info not a range": (_set("feature_infos", "x"), "do not add up"),
    "feature info garbage": (
        lambda t: t.replace("feature_infos=[", "feature_infos=[abc:", 1),
        "feature info",
    ),
    "a tree size of 0": (_sizes(lambda s: ["0", *s[1:]]), "tree sizes"),
    "a tree size not a number": (_sizes(lambda s: ["9x", *s[1:]]), "tree_sizes"),
    "fewer tree sizes than trees": (_sizes(lambda s: s[:-1]), "tree_sizes announces"),
    "too many tree sizes": (_sizes(lambda s: s + ["1"] * MAX_TREES), "tree_sizes"),
    "an unknown key": (_insert("boost_from_anywhere=1"), "unknown header key"),
    "a key given twice": (_insert("num_class=1"), "given twice"),
    "a bare key": (_insert("average_output"), "not key=value"),
    "a missing key": (lambda t: t.replace(_header_line(t, "label_index") + "\n", ""), "missing"),
}


def write_crafted(good: Path, folder: Path, name: str) -> Path:
    """A copy of bundle ``good`` at ``folder`` with the :data:`CRAFTED` edit ``name`` applied
    to its ``model.txt`` and the manifest rewritten to match."""
    import shutil

    shutil.copytree(good, folder)
    text = (folder / MODEL_FILE).read_text()
    changed = CRAFTED[name][0](text)
    assert changed != text, name
    (folder / MODEL_FILE).write_text(changed)
    write_manifest(folder)
    return folder
