"""Calibration fitted on validation rows: levels corrected, ranking kept, JSON round trip,
Platt when there are too few churners for isotonic."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from churn.bundle import Calibration
from training.calibrate import fit_calibration, fit_isotonic, fit_platt
from training.config import CalibrationConfig
from training.evaluate import expected_calibration_error


def overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores twice too high in log-odds: a true 5 % reads as ~0.3 %, 50 % stays 50 %."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-3, 1.2, n)
    truth = 1 / (1 + np.exp(-z))
    y = (rng.random(n) < truth).astype(float)
    raw = 1 / (1 + np.exp(-2 * z))
    return raw, y


def test_isotonic_brings_the_calibration_error_down():
    raw, y = overconfident(20_000)
    fit = fit_calibration(raw, y, CalibrationConfig())
    assert fit.method == "isotonic"
    test_raw, test_y = overconfident(20_000, seed=1)
    before = expected_calibration_error(test_y, test_raw)
    after = expected_calibration_error(test_y, fit.calibration.apply(test_raw))
    assert before > 0.02
    assert after < 0.01


def test_centred_isotonic_keeps_the_ranking():
    raw, y = overconfident(5_000)
    cal = fit_isotonic(raw, y)
    grid = np.linspace(0, 1, 2001)
    mapped = cal.apply(grid)
    assert np.all(np.diff(mapped) >= 0)
    # Strictly increasing between the first and last block: distinct raw scores stay distinct.
    inside = (grid > cal.x[1]) & (grid < cal.x[-2])
    assert np.all(np.diff(mapped[inside]) > 0)


def test_platt_fits_a_logit_scaling():
    raw, y = overconfident(20_000)
    cal = fit_platt(raw, y)
    # Raw log-odds are 2 x the true ones, so a is close to 1/2.
    assert cal.a == pytest.approx(0.5, abs=0.05)


def test_few_churners_fall_back_to_platt_and_say_so():
    raw, y = overconfident(400, seed=3)
    fit = fit_calibration(raw, y, CalibrationConfig(min_positives_isotonic=int(y.sum()) + 1))
    assert fit.method == "platt"
    assert "fewer than" in fit.note and str(int(y.sum())) in fit.note


def test_method_none_is_the_identity():
    raw, y = overconfident(100)
    fit = fit_calibration(raw, y, CalibrationConfig(method="none"))
    assert np.array_equal(fit.calibration.apply(raw), raw)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(50, 3000),
    method=st.sampled_from(["isotonic", "platt"]),
)
def test_stored_json_reproduces_the_calibration_exactly(seed, n, method):
    raw, y = overconfident(n, seed)
    if y.sum() == 0:
        y[0] = 1.0
    cal = fit_isotonic(raw, y) if method == "isotonic" else fit_platt(raw, y)
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    probe = np.random.default_rng(seed).random(200)
    assert np.array_equal(again.apply(probe), cal.apply(probe))
    out = again.apply(probe)
    assert np.all((out >= 0) & (out <= 1))
