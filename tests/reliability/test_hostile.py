"""Hostile input against a real `churn serve` process with a filled score store.

Every hostile request must get the right 4xx as ``application/problem+json`` (the dashboard:
its login page or its own 404 page), every response carries the security headers and no
server banner, and ``/healthz`` answers 200 after each batch. Categories: request bodies
(oversized - declared or streamed chunked without Content-Length -, deeply nested, huge
numbers, NaN and Infinity, control and text-direction characters in ids, unknown fields,
wrong content types), SQL metacharacters and path traversal in account ids and filters, keys
(forged, expired, revoked, other roles), a manager enumerating other managers' accounts (404
indistinguishable from an unknown id) and dashboard session cookies (tampered, re-signed
with a wrong secret, expired, reused after logout or after the key's revocation).

Odd but valid input - unicode letters, quotes or ``../`` in an account id - is not
hostile-by-definition: it must be answered 200 and echoed exactly, and is checked as such.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from churn.settings import get_settings
from serving.dashboard.sessions import SESSION_COOKIE, SESSION_SALT
from serving.keys import KeyStore, parse_key_id
from serving.store import Store
from tests.reliability.figures import record
from tests.support.live_server import SECRET, Server, live_server
from tests.support.store_rows import make_batch
from tests.support.strong_secrets import OTHER_SECRET

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

AS_OF = date(2025, 3, 1)
SQL_MANAGER = "O'Brien\"; DROP TABLE scores;--"
ACCOUNTS = {
    "A-1": ("am-1", 35.0, 0.6),  # the manager key's (live_server's manager is am-1)
    "A-2": ("am-1", 80.0, 0.05),
    "B-1": ("am-2", 50.0, 0.4),
    "B-2": ("am-2", 70.0, 0.1),
    "S-1": (SQL_MANAGER, 65.0, 0.2),
}
LIMIT = 4_000_000  # serve.max_body_bytes by default
SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}
#: No address is ever sent to another site: the API says no-referrer, the dashboard's pages
#: same-origin (so that their own form posts carry an Origin the server can check).
REFERRER_POLICIES = ("no-referrer", "same-origin")


@dataclass
class Tally:
    """Hostile requests per category, and every response that missed a security header."""

    tried: int = 0
    rejected: int = 0
    failures: list[str] = field(default_factory=list)
    header_faults: list[str] = field(default_factory=list)

    def check(self, label: str, ok: bool, detail: str = "") -> None:
        self.tried += 1
        self.rejected += int(ok)
        if not ok:
            self.failures.append(f"{label}: {detail[:300]}")


def _headers_fault(label: str, status: int, headers: dict[str, str]) -> str | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [k for k, v in SECURITY.items() if lowered.get(k) != v]
    if lowered.get("referrer-policy") not in REFERRER_POLICIES:
        missing.append("referrer-policy")
    csp = lowered.get("content-security-policy", "")
    if "frame-ancestors 'none'" not in csp:
        missing.append("content-security-policy")
    if "server" in lowered:
        missing.append(f"server banner {lowered['server']!r}")
    return f"{label} ({status}): {', '.join(missing)}" if missing else None


class Client:
    """httpx against the live server, checking the headers of every response."""

    def __init__(self, server: Server, tally: Tally) -> None:
        self.server = server
        self.tally = tally
        self.http = httpx.Client(base_url=server.url, timeout=60, follow_redirects=False)
        self.sent = 0

    def request(self, method: str, path: str, key: str | None = None, **kw: Any):
        headers = dict(kw.pop("headers", {}) or {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        cookie = kw.pop("cookie", None)
        if cookie is not None:
            headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
        response = self.http.request(method, path, headers=headers, **kw)
        self.http.cookies.clear()  # a cookie goes only where a test sends it
        self.sent += 1
        fault = _headers_fault(f"{method} {path[:60]}", response.status_code, response.headers)
        if fault:
            self.tally.header_faults.append(fault)
        return response

    def healthy(self) -> bool:
        return self.request("GET", "/healthz").status_code == 200


def _problem(response: httpx.Response, status: int) -> bool:
    media = response.headers.get("content-type", "")
    if response.status_code != status or not media.startswith("application/problem+json"):
        return False
    body = response.json()
    return body.get("status") == status and bool(body.get("detail"))


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("hostile")
    store = Store(str(tmp / "store.duckdb"))
    store.write_batch(make_batch(AS_OF, ACCOUNTS))
    del store
    with live_server(tmp) as running:
        yield running


def _finish(check: str, client: Client, tally: Tally, note: str = "") -> None:
    healthy = client.healthy()
    record(
        check,
        requests=client.sent,
        errors=len(tally.failures) + len(tally.header_faults) + int(not healthy),
        hostile_tried=tally.tried,
        hostile_rejected=tally.rejected,
        **({"note": note} if note else {}),
    )
    client.http.close()
    assert not tally.failures, "\n".join(tally.failures)
    assert not tally.header_faults, "\n".join(tally.header_faults[:10])
    assert healthy


# ---------------------------------------------------------------------------- raw HTTP


def _raw(server: Server, head: str, chunks: Iterator[bytes]) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` then ``chunks`` until the server answers; (status, headers, body).

    The server may answer (413) before the body is through; a client library would then
    fail on the broken pipe instead of reading the answer, so this reads as soon as it can.
    """
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
        head_part, _, body = data.partition(b"\r\n\r\n")
        lines = head_part.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            part = sock.recv(65536)
            if not part:
                break
            body += part
    return int(lines[0].split(" ")[1]), headers, body


def _oversized_declared(server: Server) -> tuple[int, dict[str, str], bytes]:
    size = LIMIT + 1_000_000
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {server.crm}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    )
    return _raw(server, head, (b" " * 65536 for _ in range(size // 65536 + 1)))


def _oversized_chunked(server: Server) -> tuple[int, dict[str, str], bytes]:
    """No Content-Length at all: only the bytes actually received can tell."""
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {server.crm}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b'{"accounts": [' + b" " * 65522

    def chunks() -> Iterator[bytes]:
        for _ in range(LIMIT // len(piece) + 20):
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    return _raw(server, head, chunks())


# ------------------------------------------------------------------------------ bodies


def _account(**kw: Any) -> dict[str, Any]:
    return {"account_id": "H-1", "features": {"days_since_last_contact": 40}, **kw}


def _body(**kw: Any) -> str:
    return json.dumps({"accounts": [_account(**kw)]})


def _features(raw: str) -> str:
    return '{"accounts": [{"account_id": "H-1", "features": {' + raw + "}}]}"


JSON = "application/json"
DAYS = '"days_since_last_contact": '
DEEP_ARRAYS = '{"accounts": ' + "[" * 100_000 + "]" * 100_000 + "}"
DEEP_OBJECTS = _features(DAYS + '{"a": ' * 500 + "1" + "}" * 500)
MANY = json.dumps({"accounts": [_account(account_id=f"H-{i}") for i in range(1001)]})
HOSTILE_BODIES: list[tuple[str, str | bytes, str | None, int]] = [
    # (label, body, content type, expected status)
    ("nested arrays 100,000 deep", DEEP_ARRAYS, JSON, 400),
    ("nested objects 500 deep", DEEP_OBJECTS, JSON, 422),
    ("a 5,000-digit integer", _features(DAYS + "9" * 5000), JSON, 400),
    ("1e999", _features(DAYS + "1e999"), JSON, 422),
    ("1e300", _features('"revenue_365d": 1e300'), JSON, 422),
    ("-1.7e308", _features('"overdue_amount": -1.7e308'), JSON, 422),
    ("revenue 1e15", _body(revenue=1e15), JSON, 422),
    ("NaN", _features(DAYS + "NaN"), JSON, 422),
    ("Infinity", _features('"revenue_365d": Infinity'), JSON, 422),
    ("-Infinity", '{"accounts": [{"account_id": "H-1", "revenue": -Infinity}]}', JSON, 422),
    ("NaN health", '{"accounts": [{"account_id": "H", "health_score_30d_ago": NaN}]}', JSON, 422),
    ("NUL in account id", _body(account_id="A-\u0000"), JSON, 422),
    ("newline in account id", _body(account_id="A-1\nforged log line"), JSON, 422),
    ("escape sequence in account id", _body(account_id="A-\u001b[31m"), JSON, 422),
    ("right-to-left override in account id", _body(account_id="A-\u202e1-B"), JSON, 422),
    ("C1 control in manager name", _body(account_manager="am-\u0085"), JSON, 422),
    ("account id of 129 characters", _body(account_id="A" * 129), JSON, 422),
    ("empty account id", _body(account_id=""), JSON, 422),
    ("account id as a number", _body(account_id=12345), JSON, 422),
    ("unknown top-level field", json.dumps({"accounts": [_account()], "debug": True}), JSON, 422),
    ("unknown account field", _body(is_admin=True), JSON, 422),
    ("unknown feature", _features('"__proto__": 1'), JSON, 422),
    ("feature as a string", _features(DAYS + '"40; DROP TABLE scores"'), JSON, 422),
    ("flag out of range", _features('"single_threaded": 7'), JSON, 422),
    ("category not a level", _features('"lifecycle_stage": "../../etc"'), JSON, 422),
    ("no accounts", '{"accounts": []}', JSON, 422),
    ("1,001 accounts", MANY, JSON, 422),
    ("null body", "null", JSON, 422),
    ("array body", "[]", JSON, 422),
    ("empty body", "", JSON, 422),
    ("invalid UTF-8", b'{"accounts": [{"account_id": "\xff\xfe"}]}', JSON, 400),
    ("truncated JSON", '{"accounts": [{"account_id": ', JSON, 400),
    ("text/plain", _body(), "text/plain", 415),
    ("form encoded", "accounts=1", "application/x-www-form-urlencoded", 415),
    ("multipart", "--x\r\n\r\nA\r\n--x--\r\n", "multipart/form-data; boundary=x", 415),
    ("XML", "<accounts><account_id>A-1</account_id></accounts>", "application/xml", 415),
    ("no content type", _body(), None, 415),
]


def test_hostile_bodies_get_the_right_4xx_and_the_service_stays_healthy(server):
    tally = Tally()
    client = Client(server, tally)
    for label, body, media, expected in HOSTILE_BODIES:
        headers = {"Content-Type": media} if media else {}
        response = client.request("POST", "/v1/predict", server.crm, content=body, headers=headers)
        tally.check(label, _problem(response, expected), f"{response.status_code} {response.text}")
    for label, send in (("declared", _oversized_declared), ("chunked", _oversized_chunked)):
        status, headers, raw = send(server)
        client.sent += 1
        fault = _headers_fault(f"oversized {label}", status, headers)
        if fault:
            tally.header_faults.append(fault)
        ok = status == 413 and headers.get("content-type", "").startswith(
            "application/problem+json"
        )
        tally.check(f"oversized body ({label})", ok, f"{status} {raw[:200]!r}")
    for label, query in (("top_reasons -1", "-1"), ("top_reasons 1e30", "1" + "0" * 30)):
        response = client.request(
            "POST", f"/v1/predict?top_reasons={query}", server.crm, json={"accounts": [_account()]}
        )
        tally.check(label, _problem(response, 422), response.text)
    # Odd but valid ids: answered and echoed exactly, never mangled or refused.
    odd = ["Société-Ω-🚀", "A'; DROP TABLE scores;--", "../../etc/passwd", "<script>x</script>"]
    response = client.request(
        "POST", "/v1/predict", server.crm, json={"accounts": [_account(account_id=i) for i in odd]}
    )
    echoed = (
        response.status_code == 200
        and [p["account_id"] for p in response.json()["predictions"]] == odd
    )
    _finish("hostile: request bodies (POST /v1/predict)", client, tally)
    assert echoed, response.text[:500]


# ------------------------------------------------------------ ids, filters, traversal


def _raw_get(server: Server, path: str, key: str) -> tuple[int, dict[str, str], bytes]:
    head = f"GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\r\n"
    return _raw(server, head, iter(()))


def test_sql_metacharacters_and_traversal_in_ids_and_filters_leak_nothing(server):
    tally = Tally()
    client = Client(server, tally)
    before = client.request("GET", "/v1/accounts", server.crm).json()
    assert before["total"] == len(ACCOUNTS)
    not_found = [
        "/v1/accounts/' OR '1'='1",
        "/v1/accounts/A-1' OR 1=1--",
        "/v1/accounts/A-1'; DROP TABLE scores;--",
        '/v1/accounts/A-1" UNION SELECT * FROM accounts--',
        "/v1/accounts/%25",
        "/v1/accounts/A-_",
        "/v1/accounts/%00",
        "/v1/accounts/A-1%0A",
        "/v1/accounts/..%2F..%2Fetc%2Fpasswd",
        "/v1/accounts/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/v1/accounts/" + "A" * 8000,
        "/static/..%2f..%2fpyproject.toml",
        "/static/%2e%2e/%2e%2e/serving/keys.py",
        "/v1/accounts/..;/admin/reload",
    ]
    for path in not_found:
        response = client.request("GET", path, server.crm)
        tally.check(path[:60], _problem(response, 404), f"{response.status_code} {response.text}")
    for path in ("/v1/accounts/../../etc/passwd", "/static/../../pyproject.toml"):
        status, _, body = _raw_get(server, path, server.crm)  # sent as is, not normalised
        client.sent += 1
        ok = status in (400, 404) and b"[tool" not in body and b"root:" not in body
        tally.check(f"raw {path}", ok, f"{status} {body[:200]!r}")
    invalid_filters = {
        "band": "' OR 1=1--",
        "priority": "act_now' OR '1'='1",
        "health_band": "healthy; DROP TABLE scores",
        "segment": "A' OR 'x'='x",
        "lifecycle_stage": "new; DROP TABLE scores",
        "as_of": "../../etc/passwd",
        "limit": "-1",
        "offset": "1; DELETE FROM scores",
    }
    for name, value in invalid_filters.items():
        response = client.request("GET", "/v1/accounts", server.crm, params={name: value})
        tally.check(f"filter {name}", _problem(response, 422), response.text)
    response = client.request(
        "GET", "/v1/accounts/A-1", server.crm, params={"as_of": "2025-03-01' OR '1'='1"}
    )
    tally.check("as_of on one account", _problem(response, 422), response.text)
    # Free-text filter values are data: matched literally, nothing else comes back.
    for value in ("' OR '1'='1", "am-1' OR account_manager LIKE '%", "%", "am-_"):
        response = client.request("GET", "/v1/accounts", server.crm, params={"manager": value})
        ok = response.status_code == 200 and response.json()["total"] == 0
        tally.check(f"manager={value}", ok, response.text[:300])
    literal = client.request("GET", "/v1/accounts", server.crm, params={"manager": SQL_MANAGER})
    manager_own = client.request(
        "GET", "/v1/accounts", server.manager, params={"manager": "' OR '1'='1"}
    )
    tally.check("manager key filtering another manager", _problem(manager_own, 403))
    after = client.request("GET", "/v1/accounts", server.crm).json()
    _finish(
        "hostile: SQL metacharacters and traversal in ids and filters",
        client,
        tally,
        note="free-text manager filters count as rejected when they match nothing",
    )
    assert [a["account_id"] for a in literal.json()["accounts"]] == ["S-1"]
    assert after["total"] == before["total"] and after["accounts"] == before["accounts"]


# --------------------------------------------------------------------------------- keys


def _forged(server: Server) -> dict[str, str]:
    key_id = parse_key_id(server.crm)
    other = KeyStore(server.keys_file.with_name("other-keys.json"), OTHER_SECRET)
    return {
        "well-shaped random key": "ck_0123456789ab_" + "x" * 43,
        "real key id, wrong secret": f"ck_{key_id}_" + "A" * 43,
        "real key plus one character": server.crm + "A",
        "real key minus one character": server.crm[:-1],
        "upper-cased real key": server.crm.upper(),
        "key from another server secret": other.add("admin")[1],
        "SQL in the key": "ck_' OR '1'='1_x",
        "10 kB key": "ck_" + "a" * 10_000,
    }


def _expire(keys_file: Path, key_id: str) -> None:
    """As if the key's days had passed: its expiry moves into the past."""
    data = json.loads(keys_file.read_text())
    for entry in data["keys"]:
        if entry["key_id"] == key_id:
            entry["expires_at"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    tmp = keys_file.with_name(".expire.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, keys_file)  # the server never reads a half-written file


def test_forged_expired_revoked_and_other_role_keys_are_refused(server, monkeypatch):
    from typer.testing import CliRunner

    from churn_cli.main import app

    tally = Tally()
    client = Client(server, tally)
    invalid_details = set()
    for label, token in _forged(server).items():
        response = client.request("GET", "/v1/model", token)
        ok = _problem(response, 401) and "Bearer" in response.headers.get("www-authenticate", "")
        tally.check(label, ok, f"{response.status_code} {response.text}")
        invalid_details.add(response.json().get("detail"))
    for label, header in (
        ("no Authorization", {}),
        ("bearer without a key", {"Authorization": "Bearer"}),
        ("Basic scheme", {"Authorization": "Basic YWRtaW46YWRtaW4="}),
        ("key without scheme", {"Authorization": server.admin}),
    ):
        response = client.request("GET", "/v1/model", headers=header)
        tally.check(label, _problem(response, 401), response.text)

    # An expiring key made with the real CLI works until its expiry, then is refused.
    monkeypatch.setenv("CHURN_KEYS_FILE", str(server.keys_file))
    monkeypatch.setenv("CHURN_SECRET_KEY", SECRET)
    get_settings.cache_clear()
    try:
        add = ["keys", "add", "--role", "crm", "--expires-days"]
        added = CliRunner().invoke(app, [*add, "30"])
        refused_zero = CliRunner().invoke(app, [*add, "0"])
    finally:
        get_settings.cache_clear()
    assert added.exit_code == 0, added.output
    assert refused_zero.exit_code != 0
    expiring = added.stdout.strip().splitlines()[-1]
    stored = {k.key_id: k for k in KeyStore(server.keys_file, SECRET).list()}
    days = datetime.fromisoformat(stored[parse_key_id(expiring)].expires_at) - datetime.now(UTC)
    assert timedelta(days=29) < days <= timedelta(days=30)
    assert client.request("GET", "/v1/model", expiring).status_code == 200
    _expire(server.keys_file, parse_key_id(expiring))
    response = client.request("GET", "/v1/model", expiring)
    tally.check("expired key", _problem(response, 401), response.text)
    invalid_details.add(response.json().get("detail"))

    keys = KeyStore(server.keys_file, SECRET)
    _, revoked = keys.add("admin")
    assert client.request("GET", "/v1/model", revoked).status_code == 200
    keys.revoke(parse_key_id(revoked))
    for method, path in (("GET", "/v1/model"), ("POST", "/v1/admin/reload"), ("GET", "/metrics")):
        response = client.request(method, path, revoked)
        tally.check(f"revoked key {path}", _problem(response, 401), response.text)
        invalid_details.add(response.json().get("detail"))

    other_role = [
        ("crm reloading the model", "POST", "/v1/admin/reload", server.crm, {}, 403),
        ("manager reloading the model", "POST", "/v1/admin/reload", server.manager, {}, 403),
        ("manager listing another's", "GET", "/v1/accounts?manager=am-2", server.manager, {}, 403),
        (
            "manager scoring another's account",
            "POST",
            "/v1/predict",
            server.manager,
            {"json": {"accounts": [_account(account_id="B-1", account_manager="am-2")]}},
            403,
        ),
        (
            "manager scoring an account without its manager",
            "POST",
            "/v1/predict",
            server.manager,
            {"json": {"accounts": [_account(account_id="B-1")]}},
            403,
        ),
    ]
    for label, method, path, key, kw, expected in other_role:
        response = client.request(method, path, key, **kw)
        tally.check(label, _problem(response, expected), response.text)
    _finish("hostile: forged, expired, revoked and other-role keys", client, tally)
    # One answer for every bad key: no oracle telling a forged key from a revoked one.
    assert len(invalid_details) == 1, invalid_details


# -------------------------------------------------------------------------- enumeration


def _normalised(response: httpx.Response, account_id: str) -> tuple[int, str, dict[str, str]]:
    body = response.text.replace(repr(account_id), "<id>").replace(account_id, "<id>")
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in ("date", "x-request-id", "content-length")
    }
    return response.status_code, body, headers


def _login(client: Client, key: str) -> str:
    response = client.request("POST", "/login", data={"api_key": key, "next": "/"})
    assert response.status_code == 303, response.text
    return response.cookies[SESSION_COOKIE]


def test_a_manager_cannot_tell_other_managers_accounts_from_missing_ones(server):
    tally = Tally()
    client = Client(server, tally)
    mine = client.request("GET", "/v1/accounts/A-1", server.manager)
    assert mine.status_code == 200  # the control: the manager's own account answers
    listed = client.request("GET", "/v1/accounts", server.manager).json()
    assert {a["account_id"] for a in listed["accounts"]} == {"A-1", "A-2"}
    others = [a for a, (manager, *_) in ACCOUNTS.items() if manager != "am-1"]
    missing = ["B-3", "X-1", "A-3", "S-2"]
    for account_id in others + missing:
        for params in ({}, {"as_of": AS_OF.isoformat()}):
            path = f"/v1/accounts/{account_id}"
            response = client.request("GET", path, server.manager, params=params)
            unknown = client.request("GET", "/v1/accounts/Z-0", server.manager, params=params)
            reference = _normalised(unknown, "Z-0")
            assert reference[0] == 404
            same = _normalised(response, account_id) == reference
            if account_id in others:
                tally.check(f"API {account_id} {params}", same, response.text)
            else:
                assert same, response.text
    cookie = _login(client, server.manager)
    page_baseline = _normalised(client.request("GET", "/accounts/Z-0", cookie=cookie), "Z-0")
    assert page_baseline[0] == 404
    for account_id in others:
        response = client.request("GET", f"/accounts/{account_id}", cookie=cookie)
        same = _normalised(response, account_id) == page_baseline
        tally.check(f"dashboard {account_id}", same, f"{response.status_code}")
        text = response.text
        assert "am-2" not in text and SQL_MANAGER not in text
    _finish("hostile: a manager enumerating other managers' accounts", client, tally)


# -------------------------------------------------------------------- dashboard cookies


def _sign(payload: dict[str, Any], secret: str, age_s: float = 0.0) -> str:
    class Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - age_s)

    return URLSafeTimedSerializer(secret, salt=SESSION_SALT, signer=Signer).dumps(payload)


def _flip(token: str, at: int) -> str:
    swap = "A" if token[at] != "A" else "B"
    return token[:at] + swap + token[at + 1 :]


def test_tampered_forged_expired_and_logged_out_session_cookies_are_refused(server):
    tally = Tally()
    client = Client(server, tally)
    admin_id = parse_key_id(server.admin)

    def page(cookie: str | None) -> httpx.Response:
        return client.request("GET", "/", cookie=cookie)

    def refused(response: httpx.Response) -> bool:
        return response.status_code == 303 and response.headers["location"].startswith("/login")

    cookie = _login(client, server.manager)
    assert page(cookie).status_code == 200  # the control: a real session shows the portfolio
    payload_end = cookie.index(".")
    admin = {"k": admin_id, "s": "x"}
    hostile: dict[str, Callable[[], str | None]] = {
        "no cookie": lambda: None,
        "empty cookie": lambda: "",
        "payload modified": lambda: _flip(cookie, 2),
        "signature modified": lambda: _flip(cookie, len(cookie) - 3),
        "timestamp modified": lambda: _flip(cookie, payload_end + 2),
        "signature dropped": lambda: cookie.rsplit(".", 1)[0],
        "admin session signed with a wrong secret": lambda: _sign(admin, "wrong"),
        "admin session signed without the salt": lambda: URLSafeTimedSerializer(SECRET).dumps(
            admin
        ),
        "session of an unknown key": lambda: _sign({"k": "0123456789ab", "s": "x"}, SECRET),
        "session without a session id": lambda: _sign({"k": admin_id}, SECRET),
        "session older than its 8 hours": lambda: _sign(admin, SECRET, 9 * 3600),
        "payload not an object": lambda: _sign(["k", admin_id], SECRET),
        "garbage": lambda: "' OR '1'='1",
    }
    for label, make in hostile.items():
        response = page(make())
        tally.check(label, refused(response), f"{response.status_code} {response.text[:200]}")

    # Logged out: a copy of the cookie (another browser, a thief) no longer works either.
    stolen = _login(client, server.manager)
    assert page(stolen).status_code == 200
    client.request("POST", "/logout", cookie=stolen)
    for path in ("/", "/retention", "/accounts/A-1"):
        response = client.request("GET", path, cookie=stolen)
        tally.check(
            f"cookie reused after logout {path}", refused(response), str(response.status_code)
        )
    assert page(cookie).status_code == 200  # other sessions of the same key live on

    # The key behind a session is revoked: the session ends with it.
    keys = KeyStore(server.keys_file, SECRET)
    _, doomed = keys.add("manager", "am-1")
    session = _login(client, doomed)
    assert page(session).status_code == 200
    keys.revoke(parse_key_id(doomed))
    tally.check("session of a revoked key", refused(page(session)))

    # After logging in, never sent to another site.
    form = {"api_key": server.manager, "next": "//evil.example/x"}
    response = client.request("POST", "/login", data=form)
    tally.check("open redirect after login", response.headers.get("location") == "/")
    response = client.request("POST", "/login", data={"api_key": "ck_' OR '1'='1_x"})
    no_session = response.status_code == 401 and SESSION_COOKIE not in response.cookies
    tally.check("SQL in the login form", no_session)

    csp = page(cookie).headers["content-security-policy"]
    _finish("hostile: dashboard session cookies", client, tally)
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert re.search(r"script-src 'self'(;|$)", csp)
