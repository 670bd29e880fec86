"""Crafted ``model.txt`` headers under a manifest rewritten to match: each is refused with a
readable reason before LightGBM reads the file (LightGBM trusts these fields: some kill the
process with SIGFPE, some make it allocate gigabytes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from churn.bundle import MODEL_FILE, load_bundle
from churn.errors import BundleIntegrityError
from tests.support.bundle_factory import make_bundle
from tests.support.crafted_model import CRAFTED, write_crafted


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("header") / "good", "good", trees=3)


@pytest.mark.parametrize("crafted", list(CRAFTED))
def test_a_crafted_header_is_refused_before_lightgbm_reads_it(good, tmp_path, crafted):
    expected = CRAFTED[crafted][1]
    folder = write_crafted(good, tmp_path / "crafted", crafted)  # under a matching manifest
    with pytest.raises(BundleIntegrityError, match=re.escape(expected)) as refused:
        load_bundle(folder)
    assert MODEL_FILE in str(refused.value)


def test_an_untouched_header_passes_every_check(good):
    assert load_bundle(good).version == "good"
