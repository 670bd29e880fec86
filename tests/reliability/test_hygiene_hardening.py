"""Hostile rows at import: every row breaking an id or name rule is a reject naming the rule,
every input row is either loaded or in the rejects (nothing lost), and the rejects file hands
neither a formula to a spreadsheet nor a control character to a terminal."""

from __future__ import annotations

import csv
import re
import stat
import time

import numpy as np
import pandas as pd
import pytest

from churn.settings import Settings
from churn.text import UNPRINTABLE
from features.validate import load_validated
from tests.reliability.figures import record

pytestmark = pytest.mark.reliability

FORMULAS = ('=HYPERLINK("http://evil.example","x")', "@SUM(A1:A9)", "+1+cmd|' /C calc'!A0")
HOSTILE_IDS = (
    "A/1",
    "A 2",
    "../etc",
    "A?3",
    "A#4",
    "A%2F5",
    "-6",
    "A-7\x00",
    "A-8\u202e",
    "X" * 129,
)
HOSTILE_NAMES = (
    "Acme\u202eevil",
    "Beta\x1b]0;pwned\x07",
    "Gamma\u2066x",
    "Delta\nForged",
    "Zero\u200bWidth",
    "x" * 200_000,
)


def _source(folder, clean: int) -> tuple[dict[str, pd.DataFrame], set[str]]:
    """Clean accounts, hostile ones, formula-named ones, and interactions for all of them;
    returns the tables and the ids of the hostile accounts."""
    rng = np.random.default_rng(7)
    rows = [(f"A-{i:04d}", f"Client {i}", "Drew Hollis") for i in range(clean)]
    hostile = [(i, f"Client {i}", "Drew Hollis") for i in HOSTILE_IDS]
    hostile += [(f"H-{n}", name, "Drew Hollis") for n, name in enumerate(HOSTILE_NAMES)]
    hostile += [(f"M-{n}", "Client", name) for n, name in enumerate(HOSTILE_NAMES)]
    formulas = [(f"F-{n}", formula, formula) for n, formula in enumerate(FORMULAS)]
    accounts = pd.DataFrame(
        [*rows, *hostile, *formulas], columns=["account_id", "name", "account_manager"]
    ).assign(started_at="2020-01-01")
    ids = accounts["account_id"].to_numpy()
    interactions = pd.DataFrame(
        {
            "account_id": rng.choice(ids, 4 * len(ids)),
            "occurred_at": "2024-01-02 10:00:00",
            "channel": "call",
            "status": "held",
        }
    )
    folder.mkdir()
    for name, frame in (("accounts", accounts), ("interactions", interactions)):
        frame.to_csv(folder / f"{name}.csv", index=False)
    return {"accounts": accounts, "interactions": interactions}, {str(h[0]) for h in hostile}


def test_hostile_import_rows_are_rejected_and_nothing_is_lost(tmp_path):
    source, hostile = _source(tmp_path / "data", clean=500)
    settings = Settings(rejects_dir=tmp_path / "rejects", reject_threshold=1.0)
    started = time.perf_counter()
    result = load_validated(tmp_path / "data", settings)
    elapsed_ms = (time.perf_counter() - started) * 1000

    summary = result.summary.set_index("table")
    rows = loaded = rejected = 0
    for name, frame in source.items():
        line = summary.loc[name]
        assert line["rows"] == len(frame)
        rows += int(line["rows"])
        loaded += int(line["loaded"])
        rejected += int(line["rejected"])
    lost = rows - loaded - rejected
    accounts = result.tables.accounts
    refused = set(hostile) - set(accounts["account_id"])
    # The names that were loaded are the clean and formula ones, all single-spaced text.
    assert not accounts["name"].str.contains(UNPRINTABLE).any()
    assert set(accounts["account_manager"]) == {"Drew Hollis", *(f.strip() for f in FORMULAS)}

    assert result.rejects_path is not None
    raw = result.rejects_path.read_text(encoding="utf-8")
    with result.rejects_path.open(newline="", encoding="utf-8") as fh:
        values = [line["value"] for line in csv.DictReader(fh)]
    formula_cells = [v for v in values if re.match(r"[=+@\t\r]|-(?![\d.])", v)]
    control = UNPRINTABLE.findall(raw.replace("\r\n", "").replace("\n", ""))
    record(
        "hygiene: hostile rows at import",
        requests=rows,
        errors=len(formula_cells) + len(control),
        hostile_tried=len(hostile),
        hostile_rejected=len(refused),
        records_lost=lost,
        note=f"{len(FORMULAS)} formula-named accounts loaded, written with a leading ' in CSVs; "
        f"the load took {elapsed_ms:,.0f} ms",
    )
    assert lost == 0
    assert refused == hostile
    assert formula_cells == [] and control == []
    assert stat.S_IMODE(result.rejects_path.stat().st_mode) == 0o600
