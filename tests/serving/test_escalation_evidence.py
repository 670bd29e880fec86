"""Escalations show their evidence: POST /v1/predict (from the request's invoice evidence, or
from overdue_days), the stored escalations of GET /v1/accounts/{id}, and the account page's
escalation box."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.keys import KeyStore
from serving.store import Store
from tests.support.cli import served_settings
from tests.support.store_rows import make_batch

D1, D2 = date(2025, 1, 1), date(2025, 2, 1)


@pytest.fixture
def env(tmp_path):
    settings = served_settings(tmp_path)
    store = Store(settings.store_url)
    store.write_batch(make_batch(D1, {"A-1": ("Ann", 70.0, None)}, model_version=None))
    batch = make_batch(D2, {"A-1": ("Ann", 52.0, None)}, model_version=None)
    common = {"account_id": "A-1", "severity": 2}
    batch.escalations = pd.DataFrame(
        [
            {
                **common,
                "code": "esc_invoice_30d_late",
                "rule": "an invoice became 30+ days late since the previous scoring",
                "action": "executive outreach and a relationship audit",
                "invoice_id": "INV-0042",
                "amount": 4200.0,
                "days_late": 34.0,
            },
            {
                **common,
                "code": "esc_health_drop",
                "rule": "health score dropped 15+ points since the scoring a month earlier",
                "action": "account manager reaches out",
                "severity": 4,
                "previous_score": 70.0,
                "previous_as_of": pd.Timestamp(D1),
                "score_drop": 18.0,
            },
        ]
    )
    store.write_batch(batch)
    keys = KeyStore.from_settings(settings)
    token = keys.add("admin")[1]
    with TestClient(create_app(settings)) as client:
        yield client, token


def _predict(client, token, **extra):
    account = {"account_id": "A-9", "features": {"overdue_days": 45}, **extra}
    response = client.post(
        "/v1/predict",
        json={"accounts": [account]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    return {e["code"]: e for e in response.json()["predictions"][0]["escalations"]}


def test_predict_shows_the_invoice_the_request_names(env):
    client, token = env
    late = {"invoice_id": "INV-7", "amount": 1200.5, "days_late": 33}
    fired = _predict(client, token, late_invoice=late, health_score_30d_ago=95.0)
    assert fired["esc_invoice_30d_late"]["evidence"] == {
        "invoice_id": "INV-7",
        "amount": 1200.5,
        "days_late": 33.0,
        "previous_score": None,
        "previous_as_of": None,
        "score_drop": None,
    }
    drop = fired["esc_health_drop"]["evidence"]
    assert drop["previous_score"] == 95.0 and drop["score_drop"] > 15
    assert all(fired[c]["evidence"] is None for c in fired if c.startswith("esc_below"))


def test_predict_without_invoice_evidence_falls_back_on_overdue_days(env):
    client, token = env
    # the oldest unpaid invoice is 45 days late: it crossed 30 days within the lookback (30)
    fired = _predict(client, token)
    assert fired["esc_invoice_30d_late"]["evidence"]["days_late"] == 45.0
    assert fired["esc_invoice_30d_late"]["evidence"]["invoice_id"] is None
    # crossed 30 days 15 days ago, but the last scoring was a week ago: it fired then
    assert "esc_invoice_30d_late" not in _predict(client, token, days_since_last_scoring=7)
    # an invoice 45 days late that crossed before the previous scoring does not fire again
    late = {"invoice_id": "INV-7", "amount": 10.0, "days_late": 45}
    assert "esc_invoice_30d_late" not in _predict(
        client, token, late_invoice=late, days_since_last_scoring=14
    )


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"days_since_last_scoring": 0}, "accounts[0].days_since_last_scoring"),
        ({"days_since_last_scoring": "7"}, "accounts[0].days_since_last_scoring"),
        (
            {"late_invoice": {"invoice_id": "I", "amount": -1, "days_late": 3}},
            "accounts[0].late_invoice.amount",
        ),
        ({"late_invoice": {"amount": 1, "days_late": 3}}, "accounts[0].late_invoice.invoice_id"),
    ],
)
def test_bad_evidence_is_a_422_naming_the_field(env, extra, field):
    client, token = env
    account = {"account_id": "A-9", "features": {}, **extra}
    response = client.post(
        "/v1/predict", json={"accounts": [account]}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]


def test_stored_escalations_carry_their_evidence(env):
    client, token = env
    body = client.get("/v1/accounts/A-1", headers={"Authorization": f"Bearer {token}"}).json()
    fired = {e["code"]: e for e in body["escalations"]}
    assert fired["esc_invoice_30d_late"]["evidence"] == {
        "invoice_id": "INV-0042",
        "amount": 4200.0,
        "days_late": 34.0,
        "previous_score": None,
        "previous_as_of": None,
        "score_drop": None,
    }
    drop = fired["esc_health_drop"]["evidence"]
    assert drop["previous_score"] == 70.0 and drop["previous_as_of"] == "2025-01-01"
    assert drop["score_drop"] == 18.0


def test_the_account_page_escalation_box_shows_the_evidence(env):
    client, token = env
    client.post("/login", data={"api_key": token}, follow_redirects=False)
    page = client.get("/accounts/A-1")
    assert page.status_code == 200
    box = page.text.split('id="escalations"', 1)[1].split("</ul>", 1)[0]
    assert "Invoice INV-0042, 4,200, 34 days late" in box
    assert "Health 70 on 1 Jan 2025, 18 points lower now" in box
