"""`GET /v1/lapsed` and the dashboard's lapsed page read the daily activity `churn score` keeps
in the store and list the hand-built firm's lapsed clients (tests/support/lapsed_firm.py: E
then A on 2025-01-01) most revenue lost first, each with the playbook's win-back action; a
manager sees only their own; a bad or too late as_of is a 422 naming it; the retention page
shows the win-backs per quarter."""

from __future__ import annotations

import re
from datetime import date

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.keys import KeyStore
from serving.playbook import load_playbook
from serving.retention import RetentionBase
from serving.store import Store
from tests.support.cli import served_settings
from tests.support.lapsed_firm import AS_OF, CFG, hand_built
from tests.support.store_rows import make_batch

WINDOW = {"min_silence_days": CFG.min_silence_days, "purchase_cycles": CFG.purchase_cycles}


@pytest.fixture
def env(tmp_path):
    settings = served_settings(tmp_path, snapshots=WINDOW)
    store = Store(settings.store_url)
    scored = {a: (m, 70.0, 0.1) for a, m in (("A", "Ann"), ("B", "Bob"), ("C", "Ann"))}
    store.write_batch(make_batch(date(2024, 12, 1), scored))
    store.write_batch(make_batch(AS_OF, scored), base=RetentionBase.from_tables(hand_built()))
    keys = KeyStore.from_settings(settings)
    tokens = {
        "ann": keys.add("manager", "Ann")[1],
        "bob": keys.add("manager", "Bob")[1],
        "crm": keys.add("crm")[1],
        "admin": keys.add("admin")[1],
    }
    with TestClient(create_app(settings)) as client:
        yield client, tokens


def _get(client, token, **params):
    return client.get("/v1/lapsed", params=params, headers={"Authorization": f"Bearer {token}"})


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [a["account_id"] for a in response.json()["accounts"]]


def test_the_list_is_the_hand_computed_one_most_revenue_lost_first(env):
    client, tokens = env
    body = _get(client, tokens["crm"]).json()
    assert body["as_of"] == "2025-01-01" and body["total"] == 2
    assert body["revenue_lost"] == 5600 and body["activity_recorded"] is True
    e, a = body["accounts"]
    assert (e["account_id"], a["account_id"]) == ("E", "A")
    assert e == e | {
        "account_manager": "Bob",
        "name": "Epsilon",
        "last_purchase": "2024-06-15",
        "last_activity": "2024-06-15",
        "usual_cycle_days": None,
        "silence_days": 30,
        "lapsed_on": "2024-07-16",
        "days_silent": 200,
        "revenue_lost": 5000,
        "lifetime_revenue": 5000,
    }
    assert a == a | {
        "name": "Alpha",
        "last_purchase": "2024-03-21",
        "usual_cycle_days": 10,
        "silence_days": 30,
        "lapsed_on": "2024-04-21",
        "days_silent": 286,
        "revenue_lost": 600,
        "lifetime_revenue": 1600,
    }


def test_each_client_carries_the_playbooks_win_back_action(env):
    client, tokens = env
    shipped = load_playbook().situation_action("lapsed")
    for item in _get(client, tokens["admin"]).json()["accounts"]:
        action = item["action"]
        assert action["id"] == "win_back" == shipped.id
        assert (action["title"], action["steps"], action["owner"]) == (
            shipped.title,
            shipped.steps,
            shipped.owner,
        )
        assert action["because"] == "lapsed"
        assert f"for {item['days_silent']} days" in action["because_text"]
        assert f"{item['silence_days']}-day window" in action["because_text"]


def test_a_manager_lists_only_their_own_lapsed_clients(env):
    client, tokens = env
    assert _ids(_get(client, tokens["ann"])) == ["A"]
    assert _ids(_get(client, tokens["bob"])) == ["E"]
    assert _ids(_get(client, tokens["bob"], manager="Bob")) == ["E"]
    other = _get(client, tokens["bob"], manager="Ann")
    assert other.status_code == 403
    assert other.headers["content-type"].startswith("application/problem+json")
    assert _ids(_get(client, tokens["admin"], manager="Ann")) == ["A"]


def test_limit_offset_and_an_earlier_date(env):
    client, tokens = env
    page = _get(client, tokens["crm"], limit=1, offset=1).json()
    assert page["total"] == 2 and [a["account_id"] for a in page["accounts"]] == ["A"]
    # On 2024-07-15 E is still inside its window (lapsed from 07-16); A (600 lost) and C
    # (lapsed 06-01 to 08-01, 500 lost) are lapsed.
    assert _ids(_get(client, tokens["crm"], as_of="2024-07-15")) == ["A", "C"]
    assert _ids(_get(client, tokens["crm"], as_of="2024-07-16")) == ["E", "A", "C"]


@pytest.mark.parametrize("bad", ["2025-13-01", "yesterday", "2025-02-30"])
def test_a_bad_as_of_is_a_422_naming_it(env, bad):
    client, tokens = env
    response = _get(client, tokens["crm"], as_of=bad)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "as_of" in response.json()["detail"]
    assert response.json()["errors"][0]["field"] == "query parameter as_of"


def test_an_as_of_after_the_latest_scored_date_is_a_422_naming_it(env):
    client, tokens = env
    response = _get(client, tokens["crm"], as_of="2025-01-02")
    assert response.status_code == 422
    body = response.json()
    assert "as_of" in body["detail"] and "2025-01-01" in body["detail"]
    assert body["errors"][0]["loc"] == ["query", "as_of"]


@pytest.mark.parametrize(("params", "field"), [({"limit": 0}, "limit"), ({"offset": -1}, "offset")])
def test_limits_are_validated(env, params, field):
    client, tokens = env
    response = _get(client, tokens["crm"], **params)
    assert response.status_code == 422 and field in response.json()["detail"]


def test_every_role_may_list_and_no_key_may_not(env):
    client, tokens = env
    for who in ("crm", "admin", "ann"):
        assert _get(client, tokens[who]).status_code == 200
    assert client.get("/v1/lapsed").status_code == 401


def test_an_empty_store_lists_nothing(tmp_path):
    settings = served_settings(tmp_path)
    token = KeyStore.from_settings(settings).add("crm")[1]
    with TestClient(create_app(settings)) as client:
        body = _get(client, token).json()
    assert body["as_of"] is None and body["total"] == 0 and body["accounts"] == []


def test_the_openapi_documents_the_route_and_its_schema(env):
    client, _ = env
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/v1/lapsed"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"manager", "as_of", "limit", "offset"}
    assert "422" in operation["responses"] and "403" in operation["responses"]
    item = schema["components"]["schemas"]["LapsedAccount"]["properties"]
    assert {
        "last_purchase",
        "usual_cycle_days",
        "lifetime_revenue",
        "revenue_lost",
        "action",
    } <= set(item)


# -- the dashboard ----------------------------------------------------------------------------


def _login(client, token) -> None:
    response = client.post("/login", data={"api_key": token}, follow_redirects=False)
    assert response.status_code == 303


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr data-account-id="([^"]+)"', html)


def test_the_page_lists_the_same_clients_as_the_api_and_is_in_the_navigation(env):
    client, tokens = env
    _login(client, tokens["admin"])
    page = client.get("/lapsed")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    html = page.text
    assert _rows(html) == ["E", "A"]
    assert 'href="/lapsed" class="active"' in html
    assert "Win the client back" in html and "5,600" in html
    assert "No purchase or contact for 286 days, past its 30-day window" in html
    assert 'href="/lapsed"' in client.get("/").text  # linked from every page's navigation


@pytest.mark.parametrize(("who", "expected"), [("ann", ["A"]), ("bob", ["E"])])
def test_a_manager_sees_only_their_own_lapsed_clients_on_the_page(env, who, expected):
    client, tokens = env
    _login(client, tokens[who])
    html = client.get("/lapsed").text
    assert _rows(html) == expected
    other = {"A": "Alpha", "E": "Epsilon"}[{"ann": "E", "bob": "A"}[who]]
    assert other not in html


def test_the_page_asks_to_log_in_first(env):
    client, _ = env
    response = client.get("/lapsed", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_the_retention_page_shows_the_win_backs_per_quarter(env):
    """The hand-computed quarters (tests/features/test_lapsed.py): 2024 Q1 2 lapsed, 1 won
    back; Q2 3, 1; Q3 3, 0; Q4 3, 1."""
    client, tokens = env
    _login(client, tokens["admin"])
    html = client.get("/retention").text
    section = html[html.index('id="winbacks"') :]
    section = section[: section.index("</section>")]
    cells = re.findall(
        r"<tr><td>(\d{4} Q\d)</td><td class=\"num\">(\d+)</td><td class=\"num\">(\d+)</td>"
        r"<td class=\"num\">([^<]+)</td></tr>",
        section,
    )
    assert cells[-4:] == [
        ("2024 Q1", "2", "1", "50.0 %"),
        ("2024 Q2", "3", "1", "33.3 %"),
        ("2024 Q3", "3", "0", "0.0 %"),
        ("2024 Q4", "3", "1", "33.3 %"),
    ]
