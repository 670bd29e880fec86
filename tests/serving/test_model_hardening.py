"""What the service says about its model, and to whom, in-process: a bundle that crashes
LightGBM is tried in a child process first and refused; ``/readyz`` gives anyone a reason code
and only an admin the detail; a reload's 409 names files relative to the bundle folder; the
``metrics`` role reads ``/metrics`` and nothing else."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import churn.bundle_checks
from churn.bundle import METADATA_FILE, MODEL_FILE, write_manifest
from churn.settings import Settings
from serving import model_probe
from serving.app import create_app
from serving.keys import KeyStore
from serving.model_holder import ModelHolder
from tests.support.bundle_factory import make_bundle, make_models_dir, promote
from tests.support.crafted_model import CRASHING_LINE, lenient_header_path, make_crashing
from tests.support.live_server import ROOT
from tests.support.strong_secrets import TEST_SECRET

ACCOUNT = {"accounts": [{"account_id": "A-1", "features": {"days_since_last_contact": 80}}]}


@dataclass
class Api:
    client: TestClient
    keys: dict[str, str]
    models: Path

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


def _api(tmp: Path, models: Path, bundle_dir: Path | None = None) -> Iterator[Api]:
    settings = Settings(
        models_dir=models,
        keys_file=tmp / "keys.json",
        secret_key="model-hardening-secret-0123456789abcdefghijklmnop",
        serve={"reload_interval_seconds": 0, "auth_failures_per_minute": 3},
    )
    store = KeyStore.from_settings(settings)
    keys = {role: store.add(role, "Dana Reyes" if role == "manager" else None)[1]
            for role in ("crm", "manager", "admin", "metrics")}  # fmt: skip
    with TestClient(create_app(settings, bundle_dir=bundle_dir)) as client:
        yield Api(client, keys, models)


@pytest.fixture
def api(tmp_path) -> Iterator[Api]:
    yield from _api(tmp_path, make_models_dir(tmp_path / "models", "v1"))


def _lenient_header(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    """Let the crashing header through the check here and in the child that probes it."""
    check = churn.bundle_checks._check_header
    monkeypatch.setattr(
        churn.bundle_checks,
        "_check_header",
        lambda path, block: check(path, block.replace(CRASHING_LINE, b"num_tree_per_iteration=1")),
    )
    shim = lenient_header_path(tmp)
    monkeypatch.setenv("PYTHONPATH", f"{shim}{os.pathsep}{ROOT}")


# ------------------------------------------------------------------- crash containment


def test_a_bundle_that_crashes_lightgbm_is_refused_and_the_old_model_keeps_serving(
    api, tmp_path, monkeypatch, caplog
):
    _lenient_header(monkeypatch, tmp_path)
    make_crashing(make_bundle(api.models / "crash", "crash", seed=5))
    promote(api.models, "crash")
    caplog.set_level(logging.ERROR, logger="serving.model_holder")

    reload = api.client.post("/v1/admin/reload", headers=api.auth("admin"))

    assert reload.status_code == 409, reload.text
    problem = reload.json()
    assert "LightGBM crashed while loading it (SIGFPE)" in problem["detail"]
    assert problem["reason"] == "bundle_crashed" and problem["model_version"] == "v1"
    assert str(api.models) not in problem["detail"]
    assert api.client.get("/readyz").json() == {"status": "ready", "model_version": "v1"}
    admin = api.client.get("/readyz", headers=api.auth("admin")).json()
    assert "SIGFPE" in admin["reload_error"]
    predicted = api.client.post("/v1/predict", json=ACCOUNT, headers=api.auth("crm")).json()
    assert predicted["model_version"] == "v1"
    assert predicted["predictions"][0]["churn_probability"] is not None
    (failed,) = [r for r in caplog.records if getattr(r, "event", "") == "model_load_failed"]
    assert "SIGFPE" in failed.error


def test_without_a_model_a_crashing_bundle_leaves_rule_based_scores(tmp_path, monkeypatch):
    _lenient_header(monkeypatch, tmp_path)
    models = make_models_dir(tmp_path / "models", "v1")
    make_crashing(make_bundle(models / "crash", "crash", seed=6))
    promote(models, "crash")
    for api in _api(tmp_path, models):
        ready = api.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "not ready", "reason": "bundle_crashed"}
        predicted = api.client.post("/v1/predict", json=ACCOUNT, headers=api.auth("crm"))
        assert predicted.status_code == 200
        assert predicted.json()["predictions"][0]["churn_probability"] is None


def test_the_child_verdict_is_cached_by_the_model_files_sha256(tmp_path, monkeypatch):
    folder = make_bundle(tmp_path / "cached", "cached", seed=8, trees=4)
    runs: list[Path] = []
    real = model_probe._run_child

    def counted(folder: Path) -> tuple[str | None, bool]:
        runs.append(folder)
        return real(folder)

    monkeypatch.setattr(model_probe, "_run_child", counted)
    for _ in range(2):
        assert ModelHolder(folder).reload().outcome == "reloaded"
    assert runs == [folder]
    copy = make_bundle(tmp_path / "copy", "copy", seed=8, trees=4)  # the same model.txt
    assert ModelHolder(copy).reload().outcome == "reloaded"
    assert runs == [folder]


# --------------------------------------------------------------- what /readyz tells whom


def test_readyz_without_an_admin_key_gives_a_code_and_no_path_or_error_text(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for api in _api(tmp_path, models):
        for who in (None, "crm", "manager", "metrics"):
            headers = api.auth(who) if who else {}
            response = api.client.get("/readyz", headers=headers)
            assert response.status_code == 503
            assert response.json() == {"status": "not ready", "reason": "no_bundle"}
        admin = api.client.get("/readyz", headers=api.auth("admin")).json()
        assert admin["reason"] == "no_bundle" and str(models) in admin["detail"]


def test_readyz_codes_a_refused_bundle_and_hides_its_error(tmp_path):
    models = make_models_dir(tmp_path / "models", "v1")
    (models / "v1" / MODEL_FILE).write_text("tree\nbroken\n")
    for api in _api(tmp_path, models):
        anyone = api.client.get("/readyz")
        assert anyone.status_code == 503
        assert anyone.json() == {"status": "not ready", "reason": "bundle_refused"}
        assert "sha256" in api.client.get("/readyz", headers=api.auth("admin")).json()["detail"]


def test_a_wrong_key_on_readyz_counts_as_a_failed_authentication(api):
    wrong = {"Authorization": "Bearer ck_000000000000_nope"}
    for _ in range(3):
        assert api.client.get("/readyz", headers=wrong).json() == {
            "status": "ready",
            "model_version": "v1",
        }
    assert api.client.app.state.serving.throttle.wait("testclient") > 0
    # Throttled: not even a valid admin key gets the details from this address now.
    throttled = api.client.get("/readyz", headers=api.auth("admin")).json()
    assert throttled == {"status": "ready", "model_version": "v1"}


def test_a_reload_409_names_files_relative_to_the_bundle_and_logs_the_detail(api, caplog):
    bad = make_bundle(api.models / "v2", "v2", seed=2)
    (bad / METADATA_FILE).write_text("{not json")
    write_manifest(bad)
    promote(api.models, "v2")
    caplog.set_level(logging.ERROR, logger="serving.model_holder")

    reload = api.client.post("/v1/admin/reload", headers=api.auth("admin"))

    assert reload.status_code == 409, reload.text
    detail = reload.json()["detail"]
    assert "cannot read metadata.json" in detail and reload.json()["reason"] == "bundle_refused"
    assert str(api.models) not in detail and "/v2" not in detail
    assert "Expecting property name" not in detail  # the JSON parser's own words
    (failed,) = [r for r in caplog.records if getattr(r, "event", "") == "model_load_failed"]
    assert "Expecting property name" in failed.error and str(api.models) in failed.error


# ------------------------------------------------------------------------ metrics role


def test_metrics_is_for_admin_and_metrics_keys_only(api):
    for who, status in (("admin", 200), ("metrics", 200), ("crm", 403), ("manager", 403)):
        assert api.client.get("/metrics", headers=api.auth(who)).status_code == status, who
    body = api.client.get("/metrics", headers=api.auth("metrics")).text
    assert "churn_predictions_total" in body or "churn_http_requests" in body


def test_a_metrics_key_can_use_no_other_route_nor_open_the_dashboard(api):
    key = api.auth("metrics")
    assert api.client.get("/v1/model", headers=key).status_code == 403
    assert api.client.post("/v1/predict", json=ACCOUNT, headers=key).status_code == 403
    assert api.client.get("/v1/accounts", headers=key).status_code == 403
    assert api.client.post("/v1/admin/reload", headers=key).status_code == 403
    login = api.client.post("/login", data={"api_key": api.keys["metrics"]}, follow_redirects=False)
    assert login.status_code >= 400 and "churn_session" not in login.cookies
    assert api.client.get("/", follow_redirects=False).status_code in (302, 303, 307)


def test_keys_add_accepts_the_metrics_role(tmp_path):
    store = KeyStore(tmp_path / "keys.json", TEST_SECRET)
    record, token = store.add("metrics")
    assert record.role == "metrics" and store.authenticate(token) == record
    assert json.loads((tmp_path / "keys.json").read_text())
