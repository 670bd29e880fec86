"""Snapshots in, a calibrated, registered and exported model out: the second stage.

``training.train`` is the whole pipeline behind ``churn train`` (``training/pipeline.py``,
whose ``run`` reads like the steps): load and validate a source, build labeled snapshots
(``features``), split them by time, fit LightGBM with early stopping, calibrate on the
validation period, evaluate against the health-score and logistic baselines on the same test
rows, track the run in MLflow, register a ``churn-model`` version, move the ``champion`` alias
through the promotion gate, and export the serving bundle under ``models/``.
``training.evaluate`` computes the test-period metrics (docs/metrics.md).

Names are imported on first use, so ``churn --help`` does not load LightGBM, scikit-learn or
MLflow. Serving never imports this package: it reads only the exported bundle.

``evaluate`` is also the name of the module defining it. Python binds a submodule to its
parent package's attribute when it is first imported, which would turn ``training.evaluate``
into the module whenever ``from training.evaluate import ...`` ran first; the package's
``__setattr__`` below keeps the function there instead. Reach the module itself with
``from training.evaluate import ...`` or ``importlib.import_module``.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from churn.lazy import lazy_exports

if TYPE_CHECKING:
    from training.evaluate import METRICS, evaluate
    from training.pipeline import TrainResult, train

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "train": "training.pipeline",
    "TrainResult": "training.pipeline",
    "evaluate": "training.evaluate",
    "METRICS": "training.evaluate",
}

__all__ = ["METRICS", "TrainResult", "evaluate", "train"]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)


class _Package(ModuleType):
    """This package's module type: a submodule named like a public function (``evaluate``)
    never replaces that function as the package's attribute."""

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            isinstance(value, ModuleType)
            and _EXPORTS.get(name) == value.__name__ == f"{__name__}.{name}"
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
