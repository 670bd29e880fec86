"""`churn demo-data --business purchase|retainer`: the purchase log from the command line, the
default (retainer) demo unchanged byte for byte, and the options that belong to one business
refused for the other in one clear line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from churn.errors import ChurnError
from churn_cli.main import app
from features.contract import TABLE_NAMES
from features.demo import generate_demo
from features.sources import read_source
from features.validate import validate_tables

# sha256 over (table name, CSV bytes) of `generate_demo(accounts=40, years=1, seed=3)`, recorded
# from the generator before the purchase demo existed: the default demo must not change.
DEFAULT_DEMO_SHA256 = "232acec638e18095258fcc99f11bfc03912223080bb939d2c9da1d8809a5b726"


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in TABLE_NAMES:
        h.update(name.encode())
        h.update((folder / f"{name}.csv").read_bytes())
    return h.hexdigest()


def _run(*args: str) -> None:
    result = CliRunner().invoke(app, ["demo-data", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_the_default_demo_is_unchanged_and_retainer_is_the_default(tmp_path: Path) -> None:
    small = ("--accounts", "40", "--years", "1", "--seed", "3")
    _run("--out", str(tmp_path / "default"), *small)
    _run("--out", str(tmp_path / "retainer"), "--business", "retainer", *small)
    generate_demo(tmp_path / "direct", accounts=40, years=1, seed=3)
    assert _digest(tmp_path / "default") == DEFAULT_DEMO_SHA256
    assert _digest(tmp_path / "retainer") == DEFAULT_DEMO_SHA256
    assert _digest(tmp_path / "direct") == DEFAULT_DEMO_SHA256


def test_purchase_demo_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "purchase"
    _run("--business", "purchase", "--months", "18", "--accounts", "300", "--out", str(out))
    assert sorted(p.name for p in out.iterdir()) == ["accounts.csv", "invoices.csv"]
    result = validate_tables(read_source(out))
    assert result.rejects.empty
    assert len(result.tables.accounts) == 300
    issued = result.tables.invoices["issued_at"]
    assert issued.min() > issued.max() - pd.DateOffset(months=18)


def test_purchase_demo_defaults_to_18_months_and_8000_accounts(tmp_path: Path) -> None:
    out = tmp_path / "purchase"
    result = CliRunner().invoke(
        app, ["demo-data", "--business", "purchase", "--out", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "8000 accounts over 18 months" in " ".join(result.output.split())
    assert len(validate_tables(read_source(out)).tables.accounts) == 8000


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--business", "subscription"], "unknown --business 'subscription'"),
        (["--business", "purchase", "--years", "2"], "--years is for --business retainer"),
        (["--months", "18"], "--months is for --business purchase"),
        (["--business", "retainer", "--months", "18"], "--months is for --business purchase"),
    ],
)
def test_an_option_of_the_other_business_is_refused(
    tmp_path: Path, args: list[str], words: str
) -> None:
    with pytest.raises(ChurnError, match=words):
        CliRunner().invoke(
            app, ["demo-data", "--out", str(tmp_path), *args], catch_exceptions=False
        )
    assert not list(tmp_path.iterdir())  # refused before anything is written
