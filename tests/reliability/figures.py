"""Figures of the reliability checks, collected across pytest-xdist workers.

Each check calls :func:`record` with what it measured; every process appends JSON lines to
its own file under ``test-output/reliability/``, named after the session (``SESSION_VAR``, set
by the controller before the workers start, so they inherit it). The controller removes stale
files at the start of the session and prints one table of its own session's rows at the end
(``tests/conftest.py`` hooks), which is the table ``make reliability`` shows; another pytest
session running in the same checkout at the same time neither clears nor joins it.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

FIGURES_DIR = Path("test-output/reliability")
SESSION_VAR = "CHURN_FIGURES_SESSION"
STALE_SECONDS = 6 * 3600  # older files are left-overs of finished sessions


def _prefix() -> str:
    return f"figures-{os.environ.get(SESSION_VAR, 'local')}-"


#: The table's columns, in order: (key, heading).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("requests", "requests sent"),
    ("errors", "errors"),
    ("p99_ms", "p99 ms"),
    ("faults_injected", "faults injected"),
    ("faults_survived", "faults survived"),
    ("hostile_tried", "hostile inputs tried"),
    ("hostile_rejected", "hostile inputs rejected"),
    ("records_lost", "records lost"),
)


def record(check: str, **figures: Any) -> None:
    """Add one row of figures, named ``check``; keys are those of :data:`COLUMNS` (+ ``note``)."""
    unknown = set(figures) - {key for key, _ in COLUMNS} - {"note"}
    if unknown:
        raise ValueError(f"unknown reliability figure(s) {sorted(unknown)}")
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    row = {"check": check, **figures}
    with (FIGURES_DIR / f"{_prefix()}{os.getpid()}.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, allow_nan=False) + "\n")


def clear() -> None:
    """Remove this session's files and those of sessions long finished."""
    for path in FIGURES_DIR.glob("figures-*.jsonl"):
        try:
            stale = time.time() - path.stat().st_mtime > STALE_SECONDS
        except FileNotFoundError:  # removed by another session meanwhile
            continue
        if stale or path.name.startswith(_prefix()):
            path.unlink(missing_ok=True)


def collected() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(FIGURES_DIR.glob(f"{_prefix()}*.jsonl")):
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return sorted(rows, key=lambda r: r["check"])


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as a plain-text table with a total line (p99: the worst)."""
    headings = ["check"] + [heading for _, heading in COLUMNS]
    body = []
    for row in rows:
        body.append([row["check"]] + [_cell(row.get(key)) for key, _ in COLUMNS])
    total = ["TOTAL"]
    for key, _ in COLUMNS:
        values = [row[key] for row in rows if row.get(key) is not None]
        if not values:
            total.append("")
        elif key == "p99_ms":
            total.append(_cell(max(values)))
        else:
            total.append(_cell(sum(values)))
    body.append(total)
    widths = [max(len(str(r[i])) for r in [headings, *body]) for i in range(len(headings))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*headings), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*r) for r in body]
    return lines


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:,.1f}"
    return f"{value:,}"
