"""Raw signals in, point-in-time snapshots out: the first stage of the pipeline.

``features`` reads a firm's exports (a folder of CSV/Parquet files, a DuckDB file or a SQL
URL) through the data contract, validates every row (rejects with reasons), and turns the
typed tables into one row per account and ``as_of`` date: the catalogue's features, the label,
and the rule-based health score, service score and escalations. Training and serving call the
names below; everything else in the package is internal.

The names are imported on first use (module ``__getattr__``), so ``import features`` does not
pay for pandas until a function is actually called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from churn.lazy import lazy_exports

if TYPE_CHECKING:
    from features.catalog import CATALOG, FEATURES, feature_sentence
    from features.contract import TABLES, Tables
    from features.demo import generate_demo
    from features.health import load_health_config, score_health
    from features.snapshots import as_of_grid, build_snapshots
    from features.sources import read_source, write_source
    from features.validate import LoadResult, load_validated

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    # the data contract (features/contract.py; docs/data-contract.md is generated from it)
    "TABLES": "features.contract",
    "Tables": "features.contract",
    # sources and validation
    "read_source": "features.sources",
    "write_source": "features.sources",
    "load_validated": "features.validate",
    "LoadResult": "features.validate",
    # snapshots
    "as_of_grid": "features.snapshots",
    "build_snapshots": "features.snapshots",
    # the feature catalogue (features/CATALOG.md is generated from it)
    "CATALOG": "features.catalog",
    "FEATURES": "features.catalog",
    "feature_sentence": "features.catalog",
    # rule-based scores (configs/health.yaml)
    "load_health_config": "features.health",
    "score_health": "features.health",
    # demo data
    "generate_demo": "features.demo",
}

__all__ = [
    "CATALOG",
    "FEATURES",
    "TABLES",
    "LoadResult",
    "Tables",
    "as_of_grid",
    "build_snapshots",
    "feature_sentence",
    "generate_demo",
    "load_health_config",
    "load_validated",
    "read_source",
    "score_health",
    "write_source",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
