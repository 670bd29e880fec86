"""Lifecycle signals: tenure and lifecycle stage from ``accounts.started_at``.

``revenue_segment`` ranks accounts against each other at an as_of, so it is not computed per row
here but by :func:`features.snapshots.assign_segments` over the whole grid.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import pandas as pd

from features.contract import Tables
from features.signals.timeline import Grid, day_of

DAYS_PER_MONTH = 30.4375
STAGES = ("new", "established", "long_term")
STAGE_BOUNDS_MONTHS = (12.0, 36.0)


def compute(tables: Tables, grid: Grid) -> dict[str, np.ndarray]:
    """Tenure in months and the lifecycle stage of each grid row's account."""
    tenure = (day_of(grid.t) - day_of(grid.started)) / DAYS_PER_MONTH
    return {"tenure_months": tenure, "lifecycle_stage": lifecycle_stage(tenure)}


def lifecycle_stage(tenure_months: np.ndarray) -> np.ndarray:
    """new (under 12 months), established (12 to under 36), long_term (36 and more)."""
    tenure = np.asarray(tenure_months, dtype=np.float64)
    stage = np.select(
        [
            tenure < STAGE_BOUNDS_MONTHS[0],
            tenure < STAGE_BOUNDS_MONTHS[1],
            tenure >= STAGE_BOUNDS_MONTHS[1],
        ],
        list(STAGES),
        default=None,  # type: ignore[call-overload]  # numpy accepts None here (an object array)
    )
    return cast(np.ndarray, pd.array(stage, dtype="string").to_numpy(dtype=object, na_value=pd.NA))
