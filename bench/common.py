"""Shared pieces of the benchmarks: timing, result rows, machine facts."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Result:
    """One benchmark figure: ours against a reference measured in the same run.

    ``ratio`` is ours / reference in the unit's "more is better" sense (throughput), so a ratio
    above 1 means faster than the reference; ``target`` is the ratio the issue asks for.
    """

    name: str
    unit: str
    ours: float
    reference: float
    reference_name: str
    target: float | None = None
    higher_is_better: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.ours / self.reference if self.reference else float("inf")
        return self.reference / self.ours if self.ours else float("inf")

    @property
    def meets_target(self) -> bool | None:
        return None if self.target is None else self.ratio >= self.target

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["meets_target"] = self.meets_target
        return data


@dataclass
class SuiteOutput:
    """What a suite returns when it has tables beside its rows: the rows (in the runner's
    table) and named tables (lists of records) that go to the results file as they are."""

    results: list[Result]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def margin_target(reference: float, margin: float) -> float:
    """The target ratio of a figure required to be at least ``margin`` above ``reference``:
    (reference + margin) / reference, rounded up to three decimals so that a figure short of
    the margin never passes on the rounding."""
    return math.ceil(1000 * (reference + margin) / reference) / 1000


def ratio_up(required: float, reference: float) -> float:
    """The target ratio to ``reference`` that a figure of exactly ``required`` reaches (less a
    float's noise); a figure short of the requirement does not."""
    return (required - 1e-9) / reference if reference else math.inf


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Seconds of the fastest of ``repeat`` runs (the least disturbed by the machine)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median_of(fn: Callable[[], Any], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.machine(),
    }
