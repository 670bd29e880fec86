"""One configuration system: code defaults, then churn.yaml, then CHURN_* variables."""

from __future__ import annotations

import pytest

from churn.errors import ConfigError, DataContractError
from churn.settings import load_settings


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("CHURN_") or name == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(name)
    return tmp_path


def test_defaults_apply_without_file_or_environment(workdir):
    settings = load_settings()
    assert settings.reject_threshold == 0.01
    assert settings.snapshots.horizon_days == 90
    assert settings.serve.port == 8000


def test_yaml_file_overrides_defaults_and_environment_overrides_yaml(workdir, monkeypatch):
    (workdir / "churn.yaml").write_text(
        "reject_threshold: 0.05\nsnapshots:\n  horizon_days: 60\nserve:\n  port: 9001\n"
    )
    settings = load_settings()
    assert settings.reject_threshold == 0.05
    assert settings.snapshots.horizon_days == 60

    monkeypatch.setenv("CHURN_REJECT_THRESHOLD", "0.02")
    monkeypatch.setenv("CHURN_SERVE__PORT", "9100")
    settings = load_settings()
    assert settings.reject_threshold == 0.02
    assert settings.serve.port == 9100
    assert settings.snapshots.horizon_days == 60


def test_config_file_named_by_environment_is_used(workdir, monkeypatch):
    path = workdir / "team.yaml"
    path.write_text("store_url: postgresql://db/churn\n")
    monkeypatch.setenv("CHURN_CONFIG", str(path))
    assert load_settings().store_url == "postgresql://db/churn"


def test_missing_config_file_named_by_environment_is_an_error(workdir, monkeypatch):
    monkeypatch.setenv("CHURN_CONFIG", str(workdir / "nope.yaml"))
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_settings()


def test_invalid_value_names_the_setting(workdir, monkeypatch):
    monkeypatch.setenv("CHURN_SNAPSHOTS__HORIZON_DAYS", "-3")
    with pytest.raises(ConfigError, match=r"snapshots\.horizon_days"):
        load_settings()


def test_unknown_setting_in_file_is_refused(workdir):
    (workdir / "churn.yaml").write_text("horizon: 90\n")
    with pytest.raises(ConfigError, match="horizon"):
        load_settings()


def test_mapping_of_unknown_table_is_refused_when_a_source_is_read(workdir):
    """The settings do not know the data contract; features checks the mapping's table names
    before it reads anything, and names the unknown table and the known ones."""
    from features.validate import load_validated

    (workdir / "churn.yaml").write_text("mapping:\n  clients:\n    table: Clients\n")
    settings = load_settings()
    with pytest.raises(DataContractError, match="unknown table 'clients'") as refused:
        load_validated(workdir, settings)
    assert refused.value.hint is not None and "accounts" in refused.value.hint


def test_mapping_renames_tables_and_columns(workdir):
    (workdir / "churn.yaml").write_text(
        "mapping:\n  accounts:\n    table: crm_clients\n    columns:\n      ClientID: account_id\n"
    )
    mapping = load_settings().mapping["accounts"]
    assert mapping.table == "crm_clients"
    assert mapping.columns == {"ClientID": "account_id"}


def test_tracking_uri_defaults_to_local_sqlite_and_honours_mlflow_variable(workdir, monkeypatch):
    assert load_settings().tracking_uri().startswith("sqlite:///")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert load_settings().tracking_uri() == "http://127.0.0.1:5000"
