"""`churn train` on a short purchase-cycle source (18 months of invoices, no churn events) picks
a split that fits, trains, and says which split it chose: in the report, the ``--json``
summary and the model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support.cli import isolated_env, run_churn

pytestmark = pytest.mark.slow

FIRST, LAST = pd.Timestamp("2024-01-01"), pd.Timestamp("2025-06-30")


def write_purchase_source(folder: Path, accounts: int = 240, seed: int = 5) -> None:
    """accounts.csv and invoices.csv only: buyers on a purchase cycle of 20 to 75 days, and a
    third of them lapsing at some point (their last gaps lengthen before they stop)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    account_rows, invoice_rows = [], []
    for i in range(accounts):
        account = f"P-{i:04d}"
        account_rows.append(
            {
                "account_id": account,
                "name": f"Buyer {i}",
                "account_manager": f"am-{i % 4}",
                "started_at": FIRST.date().isoformat(),
            }
        )
        cycle = float(rng.uniform(20, 75))
        lapse = (
            FIRST + pd.Timedelta(days=int(rng.integers(120, 480))) if rng.random() < 1 / 3 else None
        )
        day = FIRST + pd.Timedelta(days=int(rng.integers(0, int(cycle))))
        while day <= LAST and (lapse is None or day <= lapse):
            slowing = 1.0 if lapse is None or (lapse - day).days > 3 * cycle else 1.6
            invoice_rows.append(
                {
                    "account_id": account,
                    "invoice_id": f"{account}-{len(invoice_rows)}",
                    "issued_at": day.date().isoformat(),
                    "due_at": (day + pd.Timedelta(days=30)).date().isoformat(),
                    "paid_at": (day + pd.Timedelta(days=int(rng.integers(5, 40))))
                    .date()
                    .isoformat(),
                    "amount": round(float(rng.lognormal(7, 0.5)), 2),
                }
            )
            gap = max(3.0, rng.normal(cycle * slowing, cycle * 0.2))
            day += pd.Timedelta(days=int(gap))
    pd.DataFrame(account_rows).to_csv(folder / "accounts.csv", index=False)
    invoices = pd.DataFrame(invoice_rows)
    # A payment after the end of the data is not recorded yet.
    invoices.loc[pd.to_datetime(invoices["paid_at"]) > LAST, "paid_at"] = ""
    invoices.to_csv(folder / "invoices.csv", index=False)


def test_an_18_month_inactivity_source_trains_and_prints_the_split_it_chose(tmp_path):
    source = tmp_path / "purchases"
    write_purchase_source(source)
    env = isolated_env(tmp_path)
    args = ["train", "--data", str(source), "--label-mode", "inactivity"]
    done = run_churn([*args, "--horizon-days", "90", "--json"], env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    periods = summary["run"]["periods"]
    # Too short for the configured 6/6-month periods: the split says so, and which it is.
    assert periods["configured"] is False
    assert "because the configured 6/6-month split needs" in periods["description"]
    assert f"split: {periods['description']}" in " ".join(done.stderr.split())
    # Too short even for 1/1-month periods with 6 training months: accounts held out.
    assert periods["kind"] == "group_holdout"
    assert "20% of the accounts held out of the training period" in periods["description"]
    for side in ("validation", "test"):
        assert 0 < periods[side]["positives"] < periods[side]["rows"]
    # The test period starts after every training label's window (one label window apart).
    assert periods["train"]["end"] < periods["test"]["start"]
    card = (Path(summary["run"]["bundle"]) / "model_card.md").read_text()
    assert f"Split: {periods['description']}." in card
