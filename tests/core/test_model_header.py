"""Crafted ``model.txt`` headers under a manifest rewritten to match: each is refused with a
readable reason before LightGBM reads the file (LightGBM trusts these fields: some kill the
process with SIGFPE, some make it allocate gigabytes)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from churn.bundle import MODEL_FILE, load_bundle, write_manifest
from churn.bundle_checks import MAX_TREES
from churn.errors import BundleIntegrityError
from tests.support.bundle_factory import make_bundle


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("header") / "good", "good", trees=3)


def _header_line(text: str, key: str) -> str:
    match = re.search(rf"^{key}=.*$", text, flags=re.MULTILINE)
    assert match, key
    return match.group(0)


def _set(key: str, value: str):
    def edit(text: str) -> str:
        return text.replace(_header_line(text, key), f"{key}={value}", 1)

    return edit


def _names(edit):
    def apply(text: str) -> str:
        names = _header_line(text, "feature_names")[len("feature_names=") :].split(" ")
        return text.replace(
            _header_line(text, "feature_names"), "feature_names=" + " ".join(edit(names)), 1
        )

    return apply


def _sizes(edit):
    def apply(text: str) -> str:
        sizes = _header_line(text, "tree_sizes")[len("tree_sizes=") :].split(" ")
        return text.replace(
            _header_line(text, "tree_sizes"), "tree_sizes=" + " ".join(edit(sizes)), 1
        )

    return apply


def _insert(line: str):
    def apply(text: str) -> str:
        return text.replace("\nnum_class=", f"\n{line}\nnum_class=", 1)

    return apply


CRAFTED = {
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


@pytest.mark.parametrize("crafted", list(CRAFTED))
def test_a_crafted_header_is_refused_before_lightgbm_reads_it(good, tmp_path, crafted):
    edit, expected = CRAFTED[crafted]
    folder = tmp_path / "crafted"
    shutil.copytree(good, folder)
    text = (folder / MODEL_FILE).read_text()
    changed = edit(text)
    assert changed != text
    (folder / MODEL_FILE).write_text(changed)
    write_manifest(folder)  # as if exported that way: only the header check stands
    with pytest.raises(BundleIntegrityError, match=re.escape(expected)) as refused:
        load_bundle(folder)
    assert MODEL_FILE in str(refused.value)


def test_an_untouched_header_passes_every_check(good):
    assert load_bundle(good).version == "good"
