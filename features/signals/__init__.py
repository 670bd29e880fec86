"""Feature families (docs/domain.md#how-clients-leave), one module each, one vectorised engine.

Each family module has ``compute(tables, grid) -> dict[name, array]`` giving its features for
every (account, as_of) row of the :class:`~features.signals.timeline.Grid`; a feature whose
table (or optional column) the source lacks is left out and becomes NaN here — absent, not 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalog import CATALOG
from features.contract import Tables
from features.signals import (
    behavioural,
    financial,
    lifecycle,
    purchase,
    relationship,
    satisfaction,
)
from features.signals.timeline import Grid

FAMILY_MODULES = {
    "behavioural": behavioural,
    "relationship": relationship,
    "financial": financial,
    "satisfaction": satisfaction,
    "lifecycle": lifecycle,
    "purchase": purchase,
}


def compute_features(tables: Tables, grid: Grid) -> pd.DataFrame:
    """Every catalogue feature for every grid row, in catalogue order (positional index)."""
    values: dict[str, np.ndarray] = {}
    for module in FAMILY_MODULES.values():
        values |= module.compute(tables, grid)
    columns: dict[str, object] = {}
    for feature in CATALOG:
        if feature.kind == "category":
            data = values.get(feature.name, np.full(len(grid), pd.NA, dtype=object))
            columns[feature.name] = pd.array(data, dtype="string")
        else:
            found = values.get(feature.name)
            columns[feature.name] = (
                np.full(len(grid), np.nan) if found is None else np.asarray(found, dtype=np.float64)
            )
    return pd.DataFrame(columns, index=pd.RangeIndex(len(grid)))


__all__ = ["FAMILY_MODULES", "Grid", "compute_features"]
