"""`python -m bench [NAME ...]`: run the benchmarks and write bench/results.json plus a table."""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.common import Result, SuiteOutput, machine

# Each module exposes run(workdir: Path) -> list[Result] (or a SuiteOutput: rows and tables);
# order = cheapest first, except that scoring and api use the training suite's model.
SUITES = ("features", "training", "quality", "purchase", "scoring", "api", "scaling")
OUT = Path(__file__).resolve().parent / "results.json"


def main(argv: list[str]) -> int:
    console = Console()
    if not console.is_terminal:  # a log file: wide enough for the rows' names
        console = Console(width=160)
    names = argv or list(SUITES)
    unknown = sorted(set(names) - set(SUITES))
    if unknown:
        console.print(f"[red]unknown benchmark {unknown}; known: {list(SUITES)}")
        return 2
    workdir = Path("data/bench")
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    tables: dict[str, dict[str, list[dict[str, Any]]]] = {}
    failures: dict[str, str] = {}
    started = time.perf_counter()
    for name in names:
        console.rule(f"bench: {name}")
        module = importlib.import_module(f"bench.{name}")
        try:
            output = module.run(workdir)
            if isinstance(output, SuiteOutput):
                results.extend(output.results)
                tables[name] = output.tables
            else:
                results.extend(output)
        except Exception as exc:  # one broken suite must not hide the others' figures
            failures[name] = f"{type(exc).__name__}: {exc}"
            console.print(f"[red]{name} failed: {failures[name]}")
    report: dict[str, Any] = {
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "results": [r.to_dict() for r in results],
        "tables": tables,
        "failures": failures,
    }
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"Benchmarks on {report['machine']['cores']} cores")
    for col in ("benchmark", "ours", "reference", "ratio", "target", "ok"):
        table.add_column(col, justify="right" if col not in ("benchmark",) else "left")
    for r in results:
        ok = {None: "", True: "[green]yes", False: "[red]no"}[r.meets_target]
        table.add_row(
            r.name,
            f"{r.ours:,.4g} {r.unit}",
            f"{r.reference:,.4g} {r.unit} ({r.reference_name})",
            f"{r.ratio:.2f}x",
            "" if r.target is None else f">= {r.target:g}x",
            ok,
        )
    console.print(table)
    console.print(f"wrote {OUT} in {report['seconds']} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
