"""`GET /v1/accounts` and `GET /v1/accounts/{id}` read the store; the list is in the action
queue's order (priority, then revenue at risk) with validated filters; a manager key sees only
its own accounts; the dashboard's pages render for each role with strict security headers."""

from __future__ import annotations

from datetime import date

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.dashboard import queue
from serving.keys import KeyStore
from serving.store import Store
from tests.support.cli import served_settings
from tests.support.store_rows import make_batch

D1, D2 = date(2025, 1, 1), date(2025, 2, 1)


@pytest.fixture
def env(tmp_path):
    settings = served_settings(tmp_path)
    store = Store(settings.store_url)
    store.write_batch(make_batch(D1, {"A-1": ("Ann", 70.0, 0.10), "B-1": ("Bob", 65.0, 0.2)}))
    store.write_batch(
        make_batch(
            D2,
            {"A-1": ("Ann", 35.0, 0.60), "A-2": ("Ann", 80.0, 0.05), "B-1": ("Bob", 50.0, 0.4)},
        )
    )
    keys = KeyStore.from_settings(settings)
    tokens = {
        "ann": keys.add("manager", "Ann")[1],
        "bob": keys.add("manager", "Bob")[1],
        "crm": keys.add("crm")[1],
        "admin": keys.add("admin")[1],
    }
    app = create_app(settings)
    with TestClient(app) as client:
        yield client, tokens


def _get(client, path, token, **params):
    return client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


def test_list_is_most_urgent_first_with_the_change_since_last_month(env):
    client, tokens = env
    body = _get(client, "/v1/accounts", tokens["crm"]).json()
    assert body["as_of"] == "2025-02-01" and body["previous_as_of"] == "2025-01-01"
    assert [a["account_id"] for a in body["accounts"]] == ["A-1", "B-1", "A-2"]
    first = body["accounts"][0]
    assert first["revenue_at_risk"] == pytest.approx(60_000)
    assert first["health_change"] == pytest.approx(-35.0)
    assert first["health_band"] == "critical" and first["risk_band"] == "high"
    assert [a["priority"] for a in body["accounts"]] == ["act_now", "act_now", "ok"]
    assert first["top_reason"] == "days_since_last_contact is 74"
    assert body["total"] == 3


def test_filters_limit_and_offset(env):
    client, tokens = env
    admin = tokens["admin"]
    assert [a["account_id"] for a in _get(client, "/v1/accounts", admin, band="critical").json()[
        "accounts"
    ]] == ["A-1"]  # fmt: skip
    by_bob = _get(client, "/v1/accounts", admin, manager="Bob").json()
    assert [a["account_id"] for a in by_bob["accounts"]] == ["B-1"]
    page = _get(client, "/v1/accounts", admin, limit=1, offset=1).json()
    assert page["total"] == 3 and [a["account_id"] for a in page["accounts"]] == ["B-1"]
    old = _get(client, "/v1/accounts", admin, as_of="2025-01-01").json()
    assert old["as_of"] == "2025-01-01" and len(old["accounts"]) == 2
    bad = _get(client, "/v1/accounts", admin, band="purple")
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert _get(client, "/v1/accounts", admin, as_of="2024-12-01").status_code == 404


@pytest.fixture
def queue_env(tmp_path):
    """Five accounts whose revenue at risk does not follow their priority."""
    settings = served_settings(tmp_path)
    store = Store(settings.store_url)
    store.write_batch(
        make_batch(
            D2,
            {
                "R-1": ("Ann", 80.0, 0.25),  # healthy, 25 %: watch, the most revenue at risk
                "C-1": ("Ann", 30.0, 0.01),  # critical: act now, the least
                "H-1": ("Bob", 70.0, 0.35),  # 35 %: act now
                "O-1": ("Bob", 90.0, 0.10),  # ok
                "W-1": ("Cy", 50.0, 0.05),  # at risk: watch
            },
        )
    )
    token = KeyStore.from_settings(settings).add("crm")[1]
    with TestClient(create_app(settings)) as client:
        yield client, token, store


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [a["account_id"] for a in response.json()["accounts"]]


def test_the_list_is_in_the_action_queues_order_like_the_dashboard(queue_env):
    client, token, store = queue_env
    listed = _get(client, "/v1/accounts", token).json()
    assert [a["account_id"] for a in listed["accounts"]] == ["H-1", "C-1", "R-1", "W-1", "O-1"]
    assert [a["priority"] for a in listed["accounts"]] == [
        "act_now",
        "act_now",
        "watch",
        "watch",
        "ok",
    ]
    # One order: the dashboard's action queue lists the same accounts the same way.
    assert (
        _ids(_get(client, "/v1/accounts", token))
        == queue.sort_frame(store.portfolio())["account_id"].tolist()
    )


def test_the_list_filters_by_priority_health_band_and_segment(queue_env):
    client, token, _ = queue_env
    assert _ids(_get(client, "/v1/accounts", token, priority="watch")) == ["R-1", "W-1"]
    assert _ids(_get(client, "/v1/accounts", token, priority="ok")) == ["O-1"]
    healthy = _get(client, "/v1/accounts", token, health_band="healthy")
    assert _ids(healthy) == ["H-1", "R-1", "O-1"] and healthy.json()["total"] == 3
    both = _get(client, "/v1/accounts", token, priority="act_now", health_band="critical")
    assert _ids(both) == ["C-1"]
    assert _ids(_get(client, "/v1/accounts", token, segment="B")) == [
        "H-1",
        "C-1",
        "R-1",
        "W-1",
        "O-1",
    ]
    assert _ids(_get(client, "/v1/accounts", token, segment="C")) == []
    assert _ids(_get(client, "/v1/accounts", token, band="high", priority="act_now")) == ["H-1"]


@pytest.mark.parametrize(
    ("parameter", "value", "allowed"),
    [
        ("priority", "urgent", ("act_now", "watch", "ok")),
        ("priority", "ACT_NOW", ("act_now", "watch", "ok")),
        ("health_band", "high", ("healthy", "at_risk", "critical")),
        ("segment", "D", ("'A'", "'B'", "'C'")),
        ("lifecycle_stage", "old", ("new", "established", "long_term")),
        ("band", "purple", ("healthy", "critical", "high", "low")),
    ],
)
def test_an_unknown_filter_value_is_422_naming_the_parameter_and_its_values(
    queue_env, parameter, value, allowed
):
    client, token, _ = queue_env
    response = _get(client, "/v1/accounts", token, **{parameter: value})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert f"query parameter {parameter}" in problem["detail"]
    assert all(a in problem["detail"] for a in allowed), problem["detail"]
    assert [e["field"] for e in problem["errors"]] == [f"query parameter {parameter}"]


def test_the_schema_lists_the_values_of_each_filter(queue_env):
    client, _, _ = queue_env
    operation = client.get("/openapi.json").json()["paths"]["/v1/accounts"]["get"]
    params = {p["name"]: p["schema"] for p in operation["parameters"]}

    def values(schema: dict) -> list[str]:
        return next(s["enum"] for s in schema["anyOf"] if "enum" in s)

    assert values(params["priority"]) == ["act_now", "watch", "ok"]
    assert values(params["health_band"]) == ["healthy", "at_risk", "critical"]
    assert values(params["segment"]) == ["A", "B", "C"]


def test_a_manager_key_lists_and_reads_only_its_own_accounts(env):
    client, tokens = env
    mine = _get(client, "/v1/accounts", tokens["ann"]).json()
    assert [a["account_id"] for a in mine["accounts"]] == ["A-1", "A-2"]
    assert {a["account_manager"] for a in mine["accounts"]} == {"Ann"}
    other = _get(client, "/v1/accounts", tokens["ann"], manager="Bob")
    assert other.status_code == 403
    assert other.headers["content-type"].startswith("application/problem+json")
    hidden = _get(client, "/v1/accounts/B-1", tokens["ann"])
    unknown = _get(client, "/v1/accounts/Z-9", tokens["ann"])
    assert hidden.status_code == unknown.status_code == 404
    assert _get(client, "/v1/accounts/B-1", tokens["bob"]).status_code == 200


def test_account_detail_has_the_explanation_actions_and_history_in_order(env):
    client, tokens = env
    body = _get(client, "/v1/accounts/A-1", tokens["ann"]).json()
    assert body["as_of"] == "2025-02-01"
    assert body["churn_probability"] == pytest.approx(0.6)
    assert body["health_components"]["engagement"] == pytest.approx(35.0 * 0.3)
    assert body["service_components"]["seniority"] == 1
    assert [r["feature"] for r in body["reasons"]] == [
        "days_since_last_contact",
        "overdue_days",
        "client_contacts_active",
    ]
    assert body["escalations"][0]["code"] == "esc_below_40"
    assert body["actions"][0]["id"] == "reach_out"
    assert [h["as_of"] for h in body["history"]] == ["2025-01-01", "2025-02-01"]
    assert [h["health_score"] for h in body["history"]] == [70.0, 35.0]
    assert body["priority"] == "act_now"
    assert [h["priority"] for h in body["history"]] == ["ok", "act_now"]
    assert body["flags"] == []  # critical and 60 %: the two sides agree
    quiet = _get(client, "/v1/accounts/B-1", tokens["bob"], as_of="2025-01-15").json()
    (flag,) = quiet["flags"]  # healthy (65) while the model says 20 %
    assert flag["code"] == "quiet_risk" and "20%" in flag["text"]
    assert flag["model_reasons"] == ["days_since_last_contact is 74", "overdue_days is 35"]
    assert flag["rule_reasons"] == ["Engagement 19.5 of 30 points"]
    earlier = _get(client, "/v1/accounts/A-1", tokens["ann"], as_of="2025-01-15").json()
    assert earlier["as_of"] == "2025-01-01" and len(earlier["history"]) == 1


def test_no_key_is_401_and_an_empty_store_lists_nothing(env, tmp_path):
    client, tokens = env
    assert client.get("/v1/accounts").status_code == 401
    client.app.state.serving.store = Store(str(tmp_path / "empty.duckdb"))
    body = _get(client, "/v1/accounts", tokens["crm"]).json()
    assert body == {"as_of": None, "previous_as_of": None, "total": 0, "accounts": []}


def test_an_unreachable_store_is_503_problem_and_an_error_page(env):
    client, tokens = env
    client.app.state.serving.store = Store("postgresql://nobody@127.0.0.1:1/none")
    response = _get(client, "/v1/accounts", tokens["crm"])
    assert response.status_code == 503
    assert "cannot reach the score store" in response.json()["detail"]
    _login(client, tokens["admin"])
    page = client.get("/")
    assert page.status_code == 503 and "Scores are unavailable" in page.text


# -- the dashboard, without a browser (tests/integration/test_dashboard.py drives a real one) --


def _login(client, token):
    return client.post("/login", data={"api_key": token}, follow_redirects=False)


def test_login_sets_a_strict_http_only_session_and_logout_ends_it(env):
    client, tokens = env
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")
    bad = _login(client, "ck_000000000000_nope")
    assert bad.status_code == 401 and "not valid" in bad.text
    ok = _login(client, tokens["ann"])
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = client.get("/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "same-origin"  # form posts carry their Origin
    client.post("/logout")
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_manager_sees_only_their_accounts_on_every_page(env):
    client, tokens = env
    _login(client, tokens["bob"])
    portfolio = client.get("/").text
    assert 'data-account-id="B-1"' in portfolio
    assert 'data-account-id="A-1"' not in portfolio
    assert client.get("/accounts/B-1").status_code == 200
    assert client.get("/accounts/A-1").status_code == 404
    assert client.get("/retention").status_code == 200


def test_a_revoked_key_ends_its_dashboard_session(env):
    client, tokens = env
    _login(client, tokens["admin"])
    assert client.get("/", follow_redirects=False).status_code == 200
    keys = client.app.state.serving.keys
    key_id = tokens["admin"].split("_")[1]
    keys.revoke(key_id)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_login_never_redirects_to_another_site(env):
    client, tokens = env
    response = client.post(
        "/login",
        data={"api_key": tokens["crm"], "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/"
