"""Request intake, in-process: the key is checked before the body is read, a body still
arriving holds no place in the concurrency cap, a client may keep only a few bodies waiting,
a body no key vouches for is small, the predict body is parsed in bounded pieces (too many
accounts refused before any is validated), validation errors are capped, and wrong keys are
throttled per client address.

Requests are driven through raw ASGI calls where what matters is whether and when the body
is read (``receive``), and through a ``TestClient`` whose client address is set where the
address matters (every request of the live tests comes from 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from churn.settings import Settings
from serving.app import JsonFormatter, ServingMiddleware, create_app
from serving.json_body import TooManyItems, loads_bounded
from serving.keys import KeyStore
from serving.metrics import Metrics
from serving.problems import MAX_ERRORS

SECRET = secrets.token_urlsafe(32)
_HOSTS = itertools.count(1)


def _address() -> tuple[str, int]:
    """A client address of its own for each test: the failed-authentication throttle counts
    per address on the app the module's tests share."""
    return (f"10.0.{next(_HOSTS)}.1", 40000)


@dataclass
class Setup:
    app: FastAPI
    crm: str
    admin: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_models) -> Setup:
    tmp = tmp_path_factory.mktemp("intake")
    settings = Settings(
        models_dir=tiny_models,
        keys_file=tmp / "keys.json",
        secret_key=SECRET,
        store_url=str(tmp / "store.duckdb"),
        serve={
            "reload_interval_seconds": 0,
            "rate_limit_per_minute": 100_000,
            "auth_failures_per_minute": 3,
            "max_waiting_bodies_per_client": 2,
        },
    )
    keys = KeyStore.from_settings(settings)
    crm, admin = keys.add("crm")[1], keys.add("admin")[1]
    return Setup(create_app(settings), crm, admin)


@pytest.fixture
def client(setup) -> Iterator[TestClient]:
    with TestClient(setup.app, client=_address()) as client:
        yield client


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    return body


# ------------------------------------------------------------------------ raw ASGI calls


@dataclass
class Call:
    """One request driven through ASGI: its body arrives when ``arrive`` is set."""

    method: str
    path: str
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    client: tuple[str, int] = field(default_factory=_address)
    arrive: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    receives: int = 0
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""

    def scope(self) -> dict[str, Any]:
        path, _, query = self.path.partition("?")
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [
                (b"content-length", str(len(self.body)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in self.headers),
            ],
            "client": self.client,
            "server": ("testserver", 80),
            "state": {},
        }

    async def run(self, app: Any) -> Call:
        async def receive() -> dict[str, Any]:
            self.receives += 1
            if self.receives > 1:  # after the body: the client leaves once answered
                await self.answered.wait()
                return {"type": "http.disconnect"}
            await self.arrive.wait()
            return {"type": "http.request", "body": self.body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self.response_headers = {
                    k.decode().lower(): v.decode() for k, v in message["headers"]
                }
            elif message["type"] == "http.response.body":
                self.response_body += message.get("body", b"")
                if not message.get("more_body", False):
                    self.answered.set()

        await app(self.scope(), receive, send)
        return self


def _auth(key: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {key}")


JSON = ("Content-Type", "application/json")
FORM = ("Content-Type", "application/x-www-form-urlencoded")


def test_an_api_request_without_a_valid_key_is_refused_before_its_body_is_read(setup):
    """401 at once, the connection closed, and ``receive`` never called: a client without a
    key cannot make the service wait for a body."""

    async def scenario() -> list[Call]:
        calls = [
            Call("POST", "/v1/predict", [JSON], b'{"accounts": []}'),
            Call("POST", "/v1/predict", [JSON, _auth("ck_0123456789ab_wrong")], b"{}"),
            Call("POST", "/v1/admin/reload", [("Authorization", "Basic eDp5")], b""),
        ]
        # The bodies never arrive: only an answer that needs no body can come back.
        return list(await asyncio.wait_for(asyncio.gather(*(c.run(setup.app) for c in calls)), 30))

    for call in asyncio.run(scenario()):
        assert call.status == 401, (call.path, call.response_body[:300])
        assert call.receives == 0
        assert call.response_headers["connection"] == "close"
        assert call.response_headers["www-authenticate"].startswith("Bearer")
        assert call.response_headers["content-type"] == "application/problem+json"
        assert json.loads(call.response_body)["detail"]


def test_a_body_still_arriving_holds_no_place_in_the_concurrency_cap():
    """With one place, a request whose body has not arrived does not make the next 503."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] == "POST":
            await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = ServingMiddleware(app, metrics=Metrics(), max_body_bytes=1024, max_concurrency=1)

    async def scenario() -> tuple[Call, Call]:
        slow = Call("POST", "/login", [FORM], b"api_key=x")
        waiting = asyncio.ensure_future(slow.run(middleware))
        await asyncio.sleep(0.05)
        other = await asyncio.wait_for(Call("GET", "/v1/model").run(middleware), 30)
        slow.arrive.set()
        await asyncio.wait_for(waiting, 30)
        return slow, other

    slow, other = asyncio.run(scenario())
    assert other.status == 200, other.response_body
    assert slow.status == 200
    assert middleware.in_flight == 0 and middleware.waiting == {}


def test_a_client_may_have_only_a_few_bodies_waiting(setup):
    """serve.max_waiting_bodies_per_client (2 here): the third body-less login from one
    address is 429 at once with Retry-After and the connection closed; another address, and
    a request carrying a valid key from the same address, are not refused."""
    here = _address()

    def login(address: tuple[str, int]) -> Call:
        return Call("POST", "/login", [FORM], b"api_key=x&next=%2F", client=address)

    async def scenario() -> tuple[list[Call], Call, Call, Call]:
        held = [login(here), login(here)]
        tasks = [asyncio.ensure_future(c.run(setup.app)) for c in held]
        await asyncio.sleep(0.05)
        third = await asyncio.wait_for(login(here).run(setup.app), 30)
        keyed = Call(
            "POST", "/v1/predict", [JSON, _auth(setup.crm)], b'{"accounts": []}', client=here
        )
        other = login(_address())
        more = [asyncio.ensure_future(c.run(setup.app)) for c in (keyed, other)]
        await asyncio.sleep(0.05)
        assert not any(c.answered.is_set() for c in (*held, keyed, other))
        for call in (*held, keyed, other):
            call.arrive.set()
        await asyncio.wait_for(asyncio.gather(*tasks, *more), 30)
        return held, third, keyed, other

    held, third, keyed, other = asyncio.run(scenario())
    assert third.status == 429, third.response_body
    assert third.receives == 0
    assert third.response_headers["retry-after"].isdigit()
    assert third.response_headers["connection"] == "close"
    assert "max_waiting_bodies_per_client" in json.loads(third.response_body)["detail"]
    for call in (*held, other):  # let in: the login form answers (the key is not valid)
        assert call.status is not None and 400 <= call.status < 500 and call.status != 429
    assert keyed.status == 422  # let in, then refused for its empty list of accounts


def test_a_body_no_key_vouches_for_has_a_small_size_limit(client):
    big = client.post("/login", data={"api_key": "x" * 20_000, "next": "/"})
    problem = _problem(big, 413)
    assert "serve.unauthenticated_max_body_bytes" in problem["detail"]
    assert "16,384 bytes" in problem["detail"]
    small = client.post("/login", data={"api_key": "x", "next": "/"})
    assert small.status_code != 413 and small.status_code < 500


# ---------------------------------------------------------------------- the predict body


def test_too_many_accounts_is_refused_before_any_account_is_validated(setup, client):
    """1,001 accounts, all invalid: the count is the answer, not 1,001 validation errors."""
    body = {"accounts": [{"account_id": i} for i in range(1001)]}
    problem = _problem(client.post("/v1/predict", json=body, headers=dict([_auth(setup.crm)])), 422)
    assert "more than 1,000 accounts" in problem["detail"]
    assert "serve.max_accounts_per_request" in problem["detail"]
    assert "errors" not in problem


def test_a_huge_list_of_invalid_accounts_gets_a_small_answer(setup, client):
    """190,000 invalid accounts in a body just under the 4 MB limit: a short 422."""
    accounts = [{"account_id": 7}] * 190_000
    content = json.dumps({"accounts": accounts}, separators=(",", ":")).encode()
    assert len(content) < 4_000_000
    response = client.post("/v1/predict", content=content, headers=dict([_auth(setup.crm), JSON]))
    _problem(response, 422)
    assert len(response.content) < 2_000


def test_validation_errors_are_capped_with_a_count_of_the_rest(setup, client):
    """1,000 accounts with three bad values each: 50 errors listed, 2,950 counted."""
    bad = {"account_id": "", "features": {"no_such_feature": 1}, "revenue": -1}
    response = client.post(
        "/v1/predict", json={"accounts": [bad] * 1000}, headers=dict([_auth(setup.crm)])
    )
    problem = _problem(response, 422)
    assert len(problem["errors"]) == MAX_ERRORS == 50
    assert problem["errors_omitted"] == 3000 - MAX_ERRORS
    assert problem["errors"][0]["field"] == "accounts[0].account_id"
    assert "(and 2,995 more)" in problem["detail"]
    assert len(response.content) < 20_000


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        (b"", 422, "body: required field is missing"),
        (b"[]", 422, "body: Input should be a valid dictionary"),
        (b'{"accounts": []}', 422, "accounts: List should have at least 1 item"),
        (b'{"accounts": [{"account_id": "A"}], "extra": 1}', 422, "extra: unknown field"),
        (b'{"accounts": [', 400, "not valid JSON at character 14: Expecting value"),
        (b'{"accounts": [{}] "x"}', 400, "Expecting ',' delimiter"),
        (b'{"accounts": [{"account_id": "A"}]} x', 400, "Extra data"),
        (b"\xff\xfe\x00{", 400, "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "nests arrays or objects too deeply"),
        (b'{"accounts": [{"revenue": ' + b"9" * 5000 + b"}]}", 400, "too many digits"),
        (b'{"accounts": [{"account_id": "A\\u202e"}]}', 422, "text-direction"),
    ],
)
def test_a_bad_predict_body_is_the_same_readable_4xx_as_before(
    setup, client, content, status, words
):
    response = client.post("/v1/predict", content=content, headers=dict([_auth(setup.crm), JSON]))
    assert words in _problem(response, status)["detail"]


def test_the_openapi_document_still_shows_the_predict_body(client):
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/predict"]["post"]
    assert operation["operationId"] == "predict_v1_predict_post"
    assert operation["requestBody"] == {
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
        },
        "required": True,
    }
    assert "AccountIn" in document["components"]["schemas"]
    assert operation["description"].startswith("Each account gets the calibrated")


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(value=_JSON_VALUES, accounts=st.lists(_JSON_VALUES, max_size=5), cut=st.integers(0, 200))
def test_the_bounded_reader_reads_what_json_loads_reads(value, accounts, cut):
    """Same value, or the same error message at the same position, for whole and cut texts."""
    for document in ({"accounts": accounts, "other": value}, value, accounts):
        text = json.dumps(document, indent=1 if cut % 2 else None)
        for candidate in (text, text[:cut]):
            try:
                expected: Any = json.loads(candidate)
            except json.JSONDecodeError as exc:
                expected = (exc.msg, exc.pos)
            try:
                got: Any = loads_bounded(candidate.encode(), array="accounts", limit=10)
            except json.JSONDecodeError as exc:
                got = (exc.msg, exc.pos)
            assert got == expected


def test_the_bounded_reader_stops_counting_past_the_limit():
    with pytest.raises(TooManyItems):
        loads_bounded(b'{"accounts": [1, 2, 3, {"never": "parsed"', array="accounts", limit=3)
    assert loads_bounded(b'{"accounts": [1, 2, 3]}', array="accounts", limit=3) == {
        "accounts": [1, 2, 3]
    }
    with pytest.raises(TooManyItems) as top:  # a top-level array is bounded as well
        loads_bounded(b'[1, 2, 3, {"never": "parsed"', array="accounts", limit=3)
    assert top.value.where == ""


def test_a_body_that_is_a_huge_list_is_refused_without_reading_it_all(setup, client):
    """Two million numbers as the whole body: a short 422 saying what the body must be."""
    content = b"[" + b"1," * 1_900_000 + b"1]"
    response = client.post("/v1/predict", content=content, headers=dict([_auth(setup.crm), JSON]))
    problem = _problem(response, 422)
    assert "JSON object with an accounts list" in problem["detail"]
    small = client.post("/v1/predict", content=b"[1, 2]", headers=dict([_auth(setup.crm), JSON]))
    _problem(small, 422)


# ---------------------------------------------------------------------- wrong keys


def test_wrong_keys_are_throttled_per_address_and_logged_without_the_token(
    setup, tmp_path: Path, caplog
):
    """Three wrong keys from one address (serve.auth_failures_per_minute = 3): that address
    is refused with 429 and Retry-After even with a valid key, on a route that reads a body
    (checked by the middleware) and one that does not (checked by the route's dependency);
    another address is not. A missing key is no failure. Each failure is logged with the key
    id it named, never the token or the address."""
    caplog.set_level(logging.INFO)
    key_id = setup.admin.split("_")[1]
    wrong = setup.admin[:-4] + "AAAA"
    with TestClient(setup.app, client=("10.9.9.9", 1)) as here:
        for _ in range(5):
            _problem(here.get("/v1/model"), 401)  # no key: not counted
        for path in ("/v1/model", "/v1/admin/reload", "/v1/model"):
            method = here.get if path == "/v1/model" else here.post
            _problem(method(path, headers={"Authorization": f"Bearer {wrong}"}), 401)
        valid = {"Authorization": f"Bearer {setup.crm}"}
        for response in (
            here.get("/v1/model", headers=valid),
            here.post("/v1/predict", json={"accounts": [{"account_id": "A"}]}, headers=valid),
        ):
            problem = _problem(response, 429)
            assert int(response.headers["retry-after"]) >= 1
            assert "auth_failures_per_minute" in problem["detail"]
    with TestClient(setup.app, client=("10.9.9.10", 1)) as elsewhere:
        assert elsewhere.get("/v1/model", headers=valid).status_code == 200

    failures = [r for r in caplog.records if getattr(r, "event", None) == "auth_failed"]
    assert len(failures) == 3
    assert {r.key_id for r in failures} == {key_id}  # type: ignore[attr-defined]
    assert [r.route for r in failures] == ["api"] * 3  # type: ignore[attr-defined]
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert wrong not in logged and wrong.split("_")[2] not in logged
    assert setup.crm not in logged and "10.9.9.9" not in logged
