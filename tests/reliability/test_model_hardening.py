"""Crafted model files and the ``metrics`` role against a real `churn serve` process.

The server runs with the header rule for ``num_tree_per_iteration=0`` switched off (a
``sitecustomize`` on its ``PYTHONPATH``, inherited by the child that loads a candidate bundle
first), standing for a crafted file the checks do not foresee: LightGBM divides by zero on it.
Every crafted header must be refused on reload - that one by the child's crash - while the
old model keeps answering predictions and ``/readyz`` stays 200.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.reliability.figures import record
from tests.support.bundle_factory import make_bundle, promote
from tests.support.crafted_model import CRAFTED, lenient_header_path, write_crafted
from tests.support.live_server import ROOT, Server, live_server

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

ACCOUNT = {"accounts": [{"account_id": "A-1", "features": {"days_since_last_contact": 80}}]}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return round(ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] * 1000, 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("model-hardening")
    env = {"PYTHONPATH": f"{lenient_header_path(tmp)}{os.pathsep}{ROOT}"}
    with live_server(tmp, env=env) as running:
        yield running


class _Client:
    """Counts requests and 5xx answers; latencies of everything but reloads."""

    def __init__(self, server: Server) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=120)
        self.sent = self.server_errors = 0
        self.latencies: list[float] = []

    def request(self, method: str, path: str, **kw: object) -> httpx.Response:
        started = time.perf_counter()
        response = self.http.request(method, path, **kw)  # type: ignore[arg-type]
        if path != "/v1/admin/reload":  # a reload waits for the bundle's checks and probe
            self.latencies.append(time.perf_counter() - started)
        self.sent += 1
        self.server_errors += int(response.status_code >= 500)
        return response


def _old_model_answers(client: _Client, server: Server) -> bool:
    ready = client.request("GET", "/readyz")
    predicted = client.request("POST", "/v1/predict", json=ACCOUNT, headers=_auth(server.crm))
    return (
        ready.status_code == 200
        and ready.json() == {"status": "ready", "model_version": "v1"}
        and predicted.status_code == 200
        and predicted.json()["model_version"] == "v1"
        and predicted.json()["predictions"][0]["churn_probability"] is not None
    )


def test_crafted_model_files_are_refused_and_the_old_model_keeps_answering(server, tmp_path):
    good = make_bundle(tmp_path / "good", "good", seed=11, trees=3)
    client = _Client(server)
    variants = {name: expected for name, (_, expected) in CRAFTED.items()}
    # This server lets that header through its check: the child loading it first dies instead.
    variants["num_tree_per_iteration=0"] = "LightGBM crashed while loading it (SIGFPE)"
    tried = rejected = 0
    failures: list[str] = []
    for i, (name, expected) in enumerate(variants.items()):
        folder = server.models / f"crafted-{i}"
        shutil.rmtree(folder, ignore_errors=True)
        write_crafted(good, folder, name)
        promote(server.models, folder.name)
        reload = client.request("POST", "/v1/admin/reload", headers=_auth(server.admin))
        tried += 1
        refused = reload.status_code == 409 and expected in reload.json()["detail"]
        leaked = str(server.models) in reload.text
        serving = _old_model_answers(client, server)
        alive = server.process.poll() is None
        if refused and not leaked and serving and alive:
            rejected += 1
        else:
            failures.append(f"{name}: {reload.status_code} {reload.text[:300]} {serving=}")
    promote(server.models, "v1")
    back = client.request("POST", "/v1/admin/reload", headers=_auth(server.admin))
    log = server.log()
    record(
        "model: crafted model.txt headers on reload, old model answering",
        requests=client.sent,
        errors=client.server_errors + len(failures) + int(back.status_code != 200),
        hostile_tried=tried,
        hostile_rejected=rejected,
        records_lost=0,
        p99_ms=_p99(client.latencies),
        note="p99 of /readyz and /v1/predict between reloads; one header crashes LightGBM "
        "in the child probing it (SIGFPE), the server lives",
    )
    assert not failures, "\n".join(failures)
    assert client.server_errors == 0 and back.status_code == 200
    assert server.process.poll() is None
    assert '"event": "model_load_failed"' in log and "SIGFPE" in log


def test_the_metrics_role_reads_metrics_and_nothing_else(server):
    from serving.keys import KeyStore
    from tests.support.live_server import SECRET

    assert server.keys_file is not None
    metrics_key = KeyStore(server.keys_file, SECRET).add("metrics")[1]
    client = _Client(server)
    checks = [
        ("metrics key on /metrics", "GET", "/metrics", metrics_key, 200),
        ("admin key on /metrics", "GET", "/metrics", server.admin, 200),
        ("crm key on /metrics", "GET", "/metrics", server.crm, 403),
        ("manager key on /metrics", "GET", "/metrics", server.manager, 403),
        ("metrics key on /v1/model", "GET", "/v1/model", metrics_key, 403),
        ("metrics key on /v1/accounts", "GET", "/v1/accounts", metrics_key, 403),
        ("metrics key on /v1/predict", "POST", "/v1/predict", metrics_key, 403),
        ("metrics key on reload", "POST", "/v1/admin/reload", metrics_key, 403),
    ]
    failures = []
    hostile = rejected = 0
    for label, method, path, key, status in checks:
        kw = {"json": ACCOUNT} if path == "/v1/predict" else {}
        response = client.request(method, path, headers=_auth(key), **kw)
        hostile += int(status == 403)
        rejected += int(status == 403 and response.status_code == 403)
        if response.status_code != status:
            failures.append(f"{label}: {response.status_code} {response.text[:200]}")
    login = client.request("POST", "/login", data={"api_key": metrics_key}, follow_redirects=False)
    hostile += 1
    if login.status_code < 400 or "churn_session" in login.cookies:
        failures.append(f"metrics key logging in: {login.status_code}")
    else:
        rejected += 1
    record(
        "model: /metrics for admin and metrics keys only",
        requests=client.sent,
        errors=client.server_errors + len(failures),
        hostile_tried=hostile,
        hostile_rejected=rejected,
        records_lost=0,
        p99_ms=_p99(client.latencies),
    )
    assert not failures, "\n".join(failures)
    assert client.server_errors == 0
