"""The dashboard's pages take the health bands from the health config the app loaded, not
from numbers of their own: the portfolio's tiles and the account page's gauges follow a
config with other bands."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from churn.settings import load_settings
from serving.app import create_app
from serving.keys import KeyStore
from serving.store import Store
from tests.support.store_rows import make_batch

ROOT = Path(__file__).resolve().parents[2]


def _client(tmp_path: Path, bands: dict[str, float] | None) -> tuple[TestClient, str]:
    config = yaml.safe_load((ROOT / "configs" / "health.yaml").read_text())
    if bands is not None:
        config["bands"] = bands
    health_config = tmp_path / "health.yaml"
    health_config.write_text(yaml.safe_dump(config))
    settings = load_settings(
        keys_file=tmp_path / "keys.json",
        models_dir=tmp_path / "models",
        store_url=str(tmp_path / "store.duckdb"),
        health_config=health_config,
        serve={"reload_interval_seconds": 0},
    )
    # Each component of a 65-point account holds 65 % of its maximum.
    Store(settings.store_url).write_batch(make_batch(date(2025, 1, 1), {"A-1": ("Ann", 65.0, 0.1)}))
    token = KeyStore.from_settings(settings).add("admin")[1]
    return TestClient(create_app(settings)), token


@pytest.mark.parametrize(
    ("bands", "at_risk_note", "critical_note", "gauge"),
    [
        (None, "health 40-59", "health below 40", "bar bar-healthy"),
        ({"healthy": 70, "at_risk": 50}, "health 50-69", "health below 50", "bar bar-at_risk"),
    ],
)
def test_pages_show_the_bands_of_the_health_config(
    tmp_path, bands, at_risk_note, critical_note, gauge
):
    client, token = _client(tmp_path, bands)
    with client:
        client.post("/login", data={"api_key": token}, follow_redirects=False)
        portfolio = client.get("/").text
        account = client.get("/accounts/A-1").text
    assert at_risk_note in portfolio and critical_note in portfolio
    assert account.count(f'class="{gauge}"') == 4  # the four health components
