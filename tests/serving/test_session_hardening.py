"""Dashboard sessions under least privilege and against other sites, in-process.

Logout needs no write beside the keys file (revocations go to ``data_dir``, or to memory when
that cannot be written either) and always deletes the cookie; login and logout are POST only
and refuse forms sent from another site; failed logins are throttled per client address; the
server secret must look random (``churn.secret_strength``), whether set or generated.
``tests/reliability/test_sessions_hardening.py`` checks the same against a real server.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from churn.errors import ConfigError
from churn.secret_strength import MIN_LENGTH, estimated_bits, secret_weakness
from churn.settings import Settings, load_settings
from serving.app import JsonFormatter, create_app
from serving.dashboard.sessions import REVOCATIONS_FILE, SESSION_COOKIE
from serving.keys import KeyStore, parse_key_id, secret_file_for
from tests.support.cli import isolated_env, run_churn, served_settings
from tests.support.strong_secrets import TEST_SECRET

LIMIT = 3  # serve.auth_failures_per_minute in these tests


def _settings(tmp_path: Path, data_dir: Path, **overrides: object) -> Settings:
    """The keys in a folder of their own (the folder a deployment makes read-only)."""
    serve = {"reload_interval_seconds": 0, "auth_failures_per_minute": LIMIT}
    return served_settings(
        tmp_path,
        keys_file=tmp_path / "secrets" / "keys.json",
        data_dir=data_dir,
        serve=serve,
        **overrides,
    )


def _folder_state(folder: Path) -> dict[str, int]:
    """Every entry of ``folder`` with its mtime, and the folder's own mtime."""
    state = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    state["."] = folder.stat().st_mtime_ns
    return state


def _logged_in(client: TestClient) -> bool:
    """The login page sends a logged-in visitor on to the dashboard (no store needed)."""
    return client.get("/login", follow_redirects=False).status_code == 303


def _login(client: TestClient, token: str, **headers: str):
    return client.post(
        "/login", data={"api_key": token, "next": "/"}, headers=headers, follow_redirects=False
    )


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[tuple[TestClient, str, Path]]:
    """An app whose keys folder is left alone and whose data_dir cannot be created at all
    (under a plain file: refused even to root, which the tests run as)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings = _settings(tmp_path, blocker / "data")
    token = KeyStore.from_settings(settings).add("admin")[1]
    with TestClient(create_app(settings)) as client:
        yield client, token, settings.keys_file.parent


def test_logout_without_a_writable_folder_clears_the_cookie_and_ends_the_session(
    unwritable, caplog
):
    client, token, keys_folder = unwritable
    assert _login(client, token).status_code == 303
    stolen = client.cookies[SESSION_COOKIE]
    before = _folder_state(keys_folder)
    with caplog.at_level(logging.WARNING):
        response = client.post("/logout", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    cleared = response.headers["set-cookie"]
    assert cleared.startswith(f"{SESSION_COOKIE}=") and "max-age=0" in cleared.lower()
    assert not _logged_in(client)
    client.cookies.set(SESSION_COOKIE, stolen)  # a copy of the cookie, kept by a thief
    assert not _logged_in(client)
    assert _folder_state(keys_folder) == before  # nothing written beside the keys file
    unsaved = [r for r in caplog.records if getattr(r, "event", "") == "session_revocation_unsaved"]
    assert len(unsaved) == 1


def test_a_logout_is_kept_in_data_dir_and_outlives_a_restart(tmp_path):
    settings = _settings(tmp_path, tmp_path / "data")
    token = KeyStore.from_settings(settings).add("manager", "am-1")[1]
    keys_folder = settings.keys_file.parent
    with TestClient(create_app(settings)) as client:
        _login(client, token)
        stolen = client.cookies[SESSION_COOKIE]
        before = _folder_state(keys_folder)
        client.post("/logout", follow_redirects=False)
    assert _folder_state(keys_folder) == before
    assert (tmp_path / "data" / REVOCATIONS_FILE).is_file()
    with TestClient(create_app(settings), cookies={SESSION_COOKIE: stolen}) as restarted:
        assert not _logged_in(restarted)
        _login(restarted, token)
        assert _logged_in(restarted)  # the key itself still logs in


@pytest.fixture
def app_and_key(tmp_path: Path) -> tuple[object, str]:
    settings = _settings(tmp_path, tmp_path / "data")
    token = KeyStore.from_settings(settings).add("crm")[1]
    return create_app(settings), token


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "http://testserver:8443"},
        {"Referer": "https://evil.example/page"},
    ],
    ids=["other-origin", "null-origin", "suffixed-host", "other-port", "other-referer"],
)
def test_a_login_posted_from_another_site_is_refused(app_and_key, headers):
    app, token = app_and_key
    with TestClient(app) as client:
        response = _login(client, token, **headers)
        assert response.status_code == 403
        assert "text/html" in response.headers["content-type"]
        assert "another site" in response.text or "which site" in response.text
        assert SESSION_COOKIE not in response.cookies and not _logged_in(client)


def test_a_login_from_the_dashboard_itself_is_accepted(app_and_key):
    app, token = app_and_key
    with TestClient(app) as client:
        assert _login(client, token, Origin="http://testserver").status_code == 303
        client.post("/logout", headers={"Origin": "http://testserver"})
        assert _login(client, token, Referer="http://testserver/login?next=/").status_code == 303
        assert _logged_in(client)


def test_a_cross_site_logout_is_refused_and_logout_by_get_is_405(app_and_key):
    app, token = app_and_key
    with TestClient(app) as client:
        _login(client, token)
        forged = client.post(
            "/logout", headers={"Origin": "https://evil.example"}, follow_redirects=False
        )
        assert forged.status_code == 403 and _logged_in(client)
        by_get = client.get("/logout", follow_redirects=False)
        assert by_get.status_code == 405 and by_get.headers["allow"] == "POST"
        assert "set-cookie" not in by_get.headers and _logged_in(client)
        page = client.get("/login?next=/retention", follow_redirects=True)
        assert '<form method="post" action="/logout">' in page.text  # the header's button


def test_failed_logins_are_throttled_per_address(app_and_key, caplog):
    app, token = app_and_key
    wrong = f"ck_{parse_key_id(token)}_" + "x" * 43  # a real key id, a wrong secret
    with TestClient(app, client=("203.0.113.7", 40000)) as guesser:
        with caplog.at_level(logging.WARNING):
            statuses = [_login(guesser, wrong).status_code for _ in range(LIMIT)]
        assert statuses == [401] * LIMIT
        throttled = _login(guesser, wrong)
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
        assert "Too many failed logins" in throttled.text
        # Checked before the key: even the right key waits, so guessing gains nothing.
        assert _login(guesser, token).status_code == 429
    with TestClient(app, client=("198.51.100.9", 40000)) as other:
        assert _login(other, token).status_code == 303  # another address is not affected
    failed = [r for r in caplog.records if getattr(r, "event", "") == "auth_failed"]
    assert len(failed) == LIMIT
    lines = [JsonFormatter().format(r) for r in failed]
    assert all(f'"key_id": "{parse_key_id(token)}"' in line for line in lines)
    assert all('"route": "login"' in line for line in lines)
    assert not any(wrong in line or "203.0.113.7" in line for line in lines)


# -- the server secret --------------------------------------------------------------------


@pytest.mark.parametrize(
    "weak",
    ["Q7", "live-secret", "changeme" * 4, "abcdefghij" * 4, "correct horse battery staple ok!"],
)
def test_a_weak_secret_key_is_refused_at_settings_load(weak):
    with pytest.raises(ConfigError) as refused:
        load_settings(secret_key=weak)
    message = str(refused.value)
    assert message.startswith("secret_key") and weak not in message
    assert "secrets.token_urlsafe(32)" in (refused.value.hint or "")


def test_the_command_line_names_a_weak_secret_key_in_one_line(tmp_path):
    env = isolated_env(tmp_path, CHURN_SECRET_KEY="live-secret")
    result = run_churn(["keys", "list"], env, tmp_path, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: secret_key (CHURN_SECRET_KEY) is 11 characters long" in result.stderr
    assert "hint: generate one with" in result.stderr and "live-secret" not in result.stderr


def test_a_strong_secret_key_is_accepted():
    assert load_settings(secret_key=TEST_SECRET).secret_key == TEST_SECRET
    assert load_settings(secret_key="").secret_key == ""  # empty: generated into a file
    assert secret_weakness(TEST_SECRET) is None and len(TEST_SECRET) >= MIN_LENGTH


@pytest.mark.parametrize(
    "generate",
    [
        lambda: secrets.token_urlsafe(32),
        lambda: secrets.token_hex(32),
        lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
    ],
    ids=["token_urlsafe(32)", "token_hex(32)", "openssl rand -base64 32"],
)
def test_every_common_way_of_writing_32_random_bytes_is_accepted(generate):
    for _ in range(300):
        value = generate()
        assert secret_weakness(value) is None, value


def test_fewer_than_32_random_bytes_are_refused_whatever_the_draw():
    for _ in range(300):
        assert "32 random bytes are 64 hex characters" in secret_weakness(secrets.token_hex(16))
        assert "at least 43 are needed" in secret_weakness(str(uuid.uuid4()))
        assert "at least 43 are needed" in secret_weakness(secrets.token_urlsafe(24))


def test_an_existing_weak_secret_file_is_refused(tmp_path):
    settings = served_settings(tmp_path)
    secret_file = secret_file_for(settings.keys_file)
    secret_file.write_text("hunter2\n")
    with pytest.raises(ConfigError) as refused:
        create_app(settings)  # the service does not start on it
    assert str(secret_file) in str(refused.value) and "hunter2" not in str(refused.value)
    with pytest.raises(ConfigError):
        KeyStore(settings.keys_file).add("crm")  # nor does `churn keys add` use it


def test_a_generated_secret_file_is_strong_and_private(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    store.add("crm")
    secret_file = secret_file_for(store.path)
    value = secret_file.read_text().strip()
    assert len(value) == 64 and secret_weakness(value) is None and estimated_bits(value) > 200
    assert os.stat(secret_file).st_mode & 0o077 == 0
