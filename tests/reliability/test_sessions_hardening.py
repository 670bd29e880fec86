"""Dashboard sessions against a real `churn serve` whose keys folder it must not write to.

The keys live in a folder of their own, as a deployment that makes it read-only has them, and
``data_dir`` cannot be created at all (it lies under a plain file: refused even to root, which
the tests run as, where a ``chmod`` would not be). Logging out must still answer 303, delete
the cookie and end the session (kept in memory, logged), with the keys folder untouched.
Hostile posts - forms from another site, logout by GET, a guessing address past the login
throttle, a server started with a weak secret - are each refused with their readable 4xx
(or, for the secret, a one-line start-up error), never a 5xx.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.dashboard.sessions import SESSION_COOKIE
from serving.keys import parse_key_id
from tests.reliability.figures import record
from tests.support.cli import isolated_env
from tests.support.live_server import ROOT, Server, free_port, live_server

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

LIMIT = 5  # serve.auth_failures_per_minute of this module's server
#: The guessing client: another loopback address, so that the throttle it earns does not
#: touch the other checks' requests from 127.0.0.1.
GUESSER = "127.0.0.2"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("sessions")
    blocker = tmp / "not-a-folder"
    blocker.write_text("")
    env = {
        "CHURN_DATA_DIR": str(blocker / "data"),
        "CHURN_SERVE__AUTH_FAILURES_PER_MINUTE": str(LIMIT),
    }
    with live_server(tmp, env, keys_file=tmp / "secrets" / "keys.json") as server:
        yield server


class Timed:
    """httpx without cookies of its own, counting requests, 5xx answers and latencies."""

    def __init__(self, server: Server, local_address: str | None = None) -> None:
        transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
        self.http = httpx.Client(
            base_url=server.url, timeout=30, follow_redirects=False, transport=transport
        )
        self.origin = server.url
        self.latencies: list[float] = []
        self.server_errors = 0

    def post(self, path: str, cookie: str | None = None, **kw) -> httpx.Response:
        return self.send("POST", path, cookie, **kw)

    def get(self, path: str, cookie: str | None = None) -> httpx.Response:
        return self.send("GET", path, cookie)

    def send(self, method: str, path: str, cookie: str | None, **kw) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if cookie is not None:
            headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
        started = time.perf_counter()
        response = self.http.request(method, path, headers=headers, **kw)
        self.latencies.append((time.perf_counter() - started) * 1000)
        self.http.cookies.clear()
        self.server_errors += int(response.status_code >= 500)
        return response

    def login(self, key: str, **headers: str) -> httpx.Response:
        headers.setdefault("Origin", self.origin)
        return self.post("/login", data={"api_key": key, "next": "/"}, headers=headers)

    def logged_in(self, cookie: str) -> bool:
        return self.get("/login", cookie).status_code == 303

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return round(ordered[max(math.ceil(0.99 * len(ordered)) - 1, 0)], 1)


def _folder_state(folder: Path) -> dict[str, int]:
    state = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    state["."] = folder.stat().st_mtime_ns
    return state


def test_logout_with_a_read_only_keys_folder_ends_the_session(site):
    client = Timed(site)
    keys_folder = site.keys_file.parent
    login = client.login(site.manager)
    assert login.status_code == 303, login.text
    cookie = login.cookies[SESSION_COOKIE]
    assert client.logged_in(cookie)
    before = _folder_state(keys_folder)
    logout = client.post("/logout", cookie, headers={"Origin": site.url})
    cleared = logout.headers.get("set-cookie", "")
    ended = not client.logged_in(cookie) and client.get("/", cookie).status_code == 303
    untouched = _folder_state(keys_folder) == before
    logged = "session_revocation_unsaved" in site.log()
    record(
        "sessions: logout without a writable folder",
        requests=len(client.latencies),
        errors=client.server_errors,
        records_lost=0,
        p99_ms=client.p99(),
        note="cookie deleted, session refused, keys folder untouched, kept in memory and logged",
    )
    assert logout.status_code == 303 and logout.headers["location"] == "/login"
    assert cleared.startswith(f"{SESSION_COOKIE}=") and "max-age=0" in cleared.lower()
    assert ended and untouched and logged
    assert client.server_errors == 0


def test_cross_site_posts_logout_by_get_and_login_guessing_are_refused(site):
    client = Timed(site)
    guesser = Timed(site, local_address=GUESSER)
    cookie = client.login(site.admin).cookies[SESSION_COOKIE]
    tried = rejected = 0
    failures: list[str] = []

    def check(label: str, ok: bool, detail: str = "") -> None:
        nonlocal tried, rejected
        tried += 1
        rejected += int(ok)
        if not ok:
            failures.append(f"{label}: {detail[:200]}")

    for label, headers in (
        ("login from another origin", {"Origin": "https://evil.example"}),
        ("login with a hidden origin", {"Origin": "null"}),
        ("login from another site's page", {"Origin": "", "Referer": "https://evil.example/"}),
    ):
        if headers.get("Origin") == "":
            del headers["Origin"]
            response = client.post(
                "/login", data={"api_key": site.admin, "next": "/"}, headers=headers
            )
        else:
            response = client.login(site.admin, **headers)
        refused = response.status_code == 403 and SESSION_COOKIE not in response.cookies
        check(label, refused and "text/html" in response.headers["content-type"], response.text)
    forged = client.post("/logout", cookie, headers={"Origin": "https://evil.example"})
    check("logout from another site", forged.status_code == 403 and client.logged_in(cookie))
    by_get = client.get("/logout", cookie)
    check("logout by GET", by_get.status_code == 405 and client.logged_in(cookie))

    wrong = f"ck_{parse_key_id(site.crm)}_" + "x" * 43
    for attempt in range(LIMIT):
        response = guesser.login(wrong)
        check(f"wrong key {attempt + 1}", response.status_code == 401, str(response.status_code))
    for attempt in range(LIMIT):
        response = guesser.login(wrong)
        throttled = response.status_code == 429 and int(response.headers["retry-after"]) >= 1
        check(f"guess past the limit {attempt + 1}", throttled, str(response.status_code))
    right = guesser.login(site.crm)
    check("right key from the throttled address", right.status_code == 429)
    assert client.login(site.crm).status_code == 303  # the control: 127.0.0.1 is not throttled

    weak_root = Path(site.env["CHURN_MODELS_DIR"]).parent / "weak"
    weak_root.mkdir()
    weak_env = {
        **isolated_env(weak_root),
        "CHURN_SECRET_KEY": "live-secret",
        "PYTHONPATH": str(ROOT),
    }
    start = [sys.executable, "-c", "from churn_cli.main import main; main()", "serve"]
    try:
        weak = subprocess.run(
            [*start, "--port", str(free_port())],
            env=weak_env,
            cwd=weak_root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        refused_start = weak.returncode == 1 and "error: secret_key" in weak.stderr
        detail = weak.stderr[-300:]
    except subprocess.TimeoutExpired:
        refused_start, detail = False, "the server started with a weak secret"
    check("server started with an 11-character secret", refused_start, detail)

    requests = len(client.latencies) + len(guesser.latencies)
    errors = client.server_errors + guesser.server_errors
    record(
        "hostile: dashboard forms (cross-site, GET logout, login guessing, weak secret)",
        requests=requests,
        errors=errors + len(failures),
        hostile_tried=tried,
        hostile_rejected=rejected,
        records_lost=0,
        p99_ms=max(client.p99(), guesser.p99()),
        note=f"login throttle after {LIMIT} failures per address",
    )
    assert not failures, "\n".join(failures)
    assert errors == 0
    assert wrong not in site.log() and site.crm not in site.log()  # no key is ever logged
