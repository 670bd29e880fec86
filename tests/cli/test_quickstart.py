"""`churn quickstart` (behind `make run`): each step runs only when its output is missing."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from churn.bundle import CHAMPION_DIR, load_bundle
from serving.keys import KeyStore
from serving.store import Store
from tests.support.cli import isolated_env, run_churn

pytestmark = pytest.mark.slow


def _quickstart(data: Path, root: Path) -> subprocess.CompletedProcess[str]:
    env = isolated_env(
        root,
        CHURN_REJECTS_DIR=str(root / "data" / "rejects"),
        CHURN_STORE_URL=str(root / "data" / "store.duckdb"),
        CHURN_KEYS_FILE=str(root / "data" / "api_keys.json"),
    )
    return run_churn(["quickstart", "--no-serve", "--data", str(data)], env, root)


def test_quickstart_trains_scores_a_year_and_creates_keys_once(demo_source, tmp_path):
    data = shutil.copytree(demo_source, tmp_path / "demo")
    first = _quickstart(data, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]

    bundle = load_bundle(tmp_path / "models" / CHAMPION_DIR)
    assert bundle.version == "churn-model/1"
    store = Store(str(tmp_path / "data" / "store.duckdb"))
    assert len(store.dates()) == 13  # the latest date and twelve monthly ones before it
    assert store.portfolio()["churn_probability"].notna().all()
    store.close()

    keys_file = tmp_path / "data" / "demo-keys.txt"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    rows = [line.split("\t") for line in keys_file.read_text().splitlines()[1:]]
    assert [r[0] for r in rows][:2] == ["admin", "crm"] and rows[2][0] == "manager"
    keystore = KeyStore(tmp_path / "data" / "api_keys.json")
    for role, manager, token in rows:
        key = keystore.authenticate(token)
        assert key is not None and key.role == role and (key.manager or "") == manager
        assert token in first.stdout  # printed once for the user

    again = _quickstart(data, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "using the champion bundle" in again.stdout
    assert "latest scored date" in again.stdout
    assert "using the existing API keys" in again.stdout
    assert len(keystore.list()) == len(rows)  # no new keys
    assert load_bundle(tmp_path / "models" / CHAMPION_DIR).version == "churn-model/1"
