"""The bundle format itself: calibration JSON round trips and the sha256 manifest check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from churn.bundle import (
    CALIBRATION_FILE,
    CATALOG_FILE,
    MANIFEST_FILE,
    METADATA_FILE,
    MODEL_FILE,
    Calibration,
    verify_manifest,
    write_manifest,
)
from churn.errors import BundleIntegrityError


def test_isotonic_calibration_interpolates_and_is_flat_beyond_its_points():
    cal = Calibration("isotonic", x=(0.1, 0.5, 0.9), y=(0.0, 0.4, 1.0))
    assert cal.apply(np.array([0.0, 0.1, 0.3, 0.9, 1.0])).tolist() == pytest.approx(
        [0.0, 0.0, 0.2, 1.0, 1.0]
    )


@given(
    a=st.floats(0.1, 5),
    b=st.floats(-3, 3),
    p=st.lists(st.floats(0.001, 0.999), min_size=1, max_size=20),
)
def test_platt_calibration_round_trips_through_json_and_stays_monotone(a, b, p):
    cal = Calibration("platt", a=a, b=b)
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    values = np.sort(np.asarray(p))
    out = again.apply(values)
    assert np.allclose(out, cal.apply(values))
    assert np.all((out >= 0) & (out <= 1))
    assert np.all(np.diff(out) >= -1e-12)


@pytest.mark.parametrize(
    "data",
    [
        {"method": "isotonic", "x": [0.2, 0.1], "y": [0.1, 0.2]},
        {"method": "isotonic", "x": [0.1], "y": [1.5]},
        {"method": "magic"},
    ],
)
def test_invalid_calibration_is_refused(data):
    with pytest.raises(ValueError):
        Calibration.from_dict(data)


def _fake_bundle(folder):
    for name in (MODEL_FILE, CALIBRATION_FILE, METADATA_FILE, CATALOG_FILE):
        (folder / name).write_text(f"content of {name}\n")
    write_manifest(folder)


def test_manifest_accepts_an_untouched_bundle(tmp_path):
    _fake_bundle(tmp_path)
    verify_manifest(tmp_path)


def test_manifest_refuses_a_changed_or_truncated_file(tmp_path):
    _fake_bundle(tmp_path)
    (tmp_path / MODEL_FILE).write_text("content of model.txt, tampered\n")
    with pytest.raises(BundleIntegrityError, match="model.txt does not match"):
        verify_manifest(tmp_path)


def test_manifest_refuses_a_missing_file_or_manifest(tmp_path):
    _fake_bundle(tmp_path)
    (tmp_path / CALIBRATION_FILE).unlink()
    with pytest.raises(BundleIntegrityError, match="missing calibration.json"):
        verify_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).unlink()
    with pytest.raises(BundleIntegrityError, match="no MANIFEST"):
        verify_manifest(tmp_path)
