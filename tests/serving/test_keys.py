"""API keys: shown once, stored only as a keyed hash, checked in constant time, revocable, and
picked up by a running server without a restart."""

from __future__ import annotations

import json
import stat

import pytest
from typer.testing import CliRunner

from churn.errors import ConfigError
from churn.settings import get_settings
from serving.keys import KeyStore, parse_key_id, secret_file_for
from tests.support.strong_secrets import OTHER_SECRET, TEST_SECRET


@pytest.fixture
def store(tmp_path) -> KeyStore:
    return KeyStore(tmp_path / "keys.json")


def test_a_new_key_authenticates_with_its_role_and_manager(store):
    record, token = store.add("manager", "Ann Lee")
    found = store.authenticate(token)
    assert found is not None
    assert (found.key_id, found.role, found.manager) == (record.key_id, "manager", "Ann Lee")
    assert parse_key_id(token) == record.key_id


def test_the_keys_file_holds_no_key_and_only_the_owner_can_read_it(store, tmp_path):
    _, token = store.add("crm")
    text = store.path.read_text()
    secret_part = token.split("_", 2)[2]
    assert token not in text and secret_part not in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    secret = secret_file_for(store.path)
    assert secret.exists() and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert json.loads(text)["keys"][0]["role"] == "crm"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # wrong secret part
        lambda t: "ck_000000000000_" + t.split("_", 2)[2],  # unknown key id
        lambda t: t.replace("ck_", "xx_", 1),  # not one of ours
        lambda t: "",
        lambda t: "ck__",
    ],
)
def test_a_wrong_or_malformed_key_is_refused(store, mangle):
    _, token = store.add("admin")
    assert store.authenticate(mangle(token)) is None


def test_keys_do_not_work_under_another_server_secret(tmp_path):
    _, token = KeyStore(tmp_path / "keys.json", secret=TEST_SECRET).add("crm")
    assert KeyStore(tmp_path / "keys.json", secret=TEST_SECRET).authenticate(token) is not None
    assert KeyStore(tmp_path / "keys.json", secret=OTHER_SECRET).authenticate(token) is None


def test_a_running_server_sees_keys_added_and_revoked_by_the_cli(tmp_path):
    server = KeyStore(tmp_path / "keys.json")
    cli = KeyStore(tmp_path / "keys.json")
    assert not server.has_keys()
    record, token = cli.add("crm")
    assert server.authenticate(token) is not None
    cli.revoke(record.key_id)
    assert server.authenticate(token) is None
    assert server.list()[0].revoked_at is not None


def test_role_and_manager_are_checked(store):
    with pytest.raises(ConfigError, match="manager's name"):
        store.add("manager")
    with pytest.raises(ConfigError, match="only to the manager role"):
        store.add("crm", "Ann")
    with pytest.raises(ConfigError, match="unknown role"):
        store.add("superuser")
    with pytest.raises(ConfigError, match="no API key with id"):
        store.revoke("abcdefabcdef")


def test_a_manager_name_is_stored_as_the_import_stores_it_and_hidden_characters_refused(store):
    record, token = store.add("manager", " Drew\u00a0\u00a0Hollis ")
    assert record.manager == "Drew Hollis"
    assert store.authenticate(token).manager == "Drew Hollis"
    stored = json.loads(store.path.read_text())
    stored["keys"][0]["manager"] = "Drew\u00a0 Hollis"  # written before names were normalised
    store.path.write_text(json.dumps(stored))
    assert KeyStore(store.path).authenticate(token).manager == "Drew Hollis"
    for bad in ("Drew\u202eHollis", "Drew\x1b[31mHollis", "x" * 201):
        with pytest.raises(ConfigError, match="--manager"):
            store.add("manager", bad)


def test_a_corrupt_keys_file_is_reported_with_its_path(store):
    store.path.write_text("{not json")
    with pytest.raises(ConfigError, match="keys.json"):
        store.add("crm")


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CHURN_KEYS_FILE", str(tmp_path / "keys.json"))
    monkeypatch.delenv("CHURN_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "keys.json"
    get_settings.cache_clear()


def test_churn_keys_add_prints_the_key_once_and_list_never_shows_it(cli_env):
    from churn_cli.main import app

    runner = CliRunner()
    added = runner.invoke(app, ["keys", "add", "--role", "manager", "--manager", "Ann Lee"])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[-1]
    assert KeyStore(cli_env).authenticate(token) is not None
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0
    assert parse_key_id(token) in listed.stdout and token not in listed.stdout
    revoked = runner.invoke(app, ["keys", "revoke", parse_key_id(token)])
    assert revoked.exit_code == 0
    assert KeyStore(cli_env).authenticate(token) is None


def test_churn_keys_add_refuses_a_manager_key_without_a_name(cli_env):
    from churn_cli.main import app

    result = CliRunner().invoke(app, ["keys", "add", "--role", "manager"])
    assert result.exit_code != 0
    assert not cli_env.exists() or not KeyStore(cli_env).list()
