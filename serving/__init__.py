"""A trained bundle and validated tables in, explained scores out: the third stage.

``serving`` answers the people and systems that act on churn risk. ``create_app(settings)``
builds the FastAPI service (``churn serve``): the scoring API, the stored-score API and the
account managers' dashboard, with API keys and roles. ``score_batch`` / ``score_batches``
score and explain every active account of one or more dates (``churn score``), and ``Store``
keeps those scores in a DuckDB file or PostgreSQL. ``load_champion`` loads the exported
champion bundle (LightGBM text and JSON, never a pickle). ``RetentionBase`` and
``retention_summary`` compute the retention metrics of the dashboard and ``churn report``
(docs/metrics.md).

Serving imports the feature catalogue and the health rules from ``features``; it never
imports ``training``. Names are imported on first use, so ``churn --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from churn.lazy import lazy_exports

if TYPE_CHECKING:
    from serving.app import create_app
    from serving.batch import load_champion, score_batch, score_batches
    from serving.retention import RetentionBase, retention_summary
    from serving.store import Store

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "create_app": "serving.app",
    "load_champion": "serving.batch",
    "score_batch": "serving.batch",
    "score_batches": "serving.batch",
    "Store": "serving.store",
    "RetentionBase": "serving.retention",
    "retention_summary": "serving.retention",
}

__all__ = [
    "RetentionBase",
    "Store",
    "create_app",
    "load_champion",
    "retention_summary",
    "score_batch",
    "score_batches",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
