"""The model-derived terms training and serving share: base rate and annual revenue."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from churn.model_terms import annual_revenue, base_rate, sigmoid


def test_the_base_rate_is_the_calibrated_probability_at_the_bias():
    assert base_rate(0.0, lambda p: p) == 0.5
    assert base_rate(-2.0, lambda p: p) == pytest.approx(1 / (1 + math.exp(2.0)))
    assert base_rate(-2.0, lambda p: p / 2) == pytest.approx(sigmoid(-2.0) / 2)


def test_annual_revenue_falls_back_to_the_contract_value():
    frame = pd.DataFrame(
        {"revenue_365d": [100.0, np.nan, np.nan], "contract_value": [5.0, 70.0, None]}
    )
    out = annual_revenue(frame, len(frame))
    assert out[:2].tolist() == [100.0, 70.0] and np.isnan(out[2])


def test_annual_revenue_reads_plain_values_and_absent_columns_as_unknown():
    columns = {"revenue_365d": [None, 3.0, "many"], "contract_value": [7, 8.0, None]}
    out = annual_revenue(columns, 3)
    assert out[:2].tolist() == [7.0, 3.0] and np.isnan(out[2])
    assert annual_revenue({"contract_value": [1.0]}, 1).tolist() == [1.0]
    assert np.isnan(annual_revenue({}, 2)).all()
