"""The API as deployed: `churn serve` in its own process on a free port.

- Property-based testing against the service's own OpenAPI schema (schemathesis) finds no
  5xx and no response that breaks the documented schema.
- Reload under load: while clients send requests continuously, a reload to a new bundle drops
  none, and every request sent after the reload answered carries the new model_version.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.generation.modes import GenerationMode

from tests.support.bundle_factory import make_bundle, promote
from tests.support.live_server import Server, live_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    with live_server(tmp_path_factory.mktemp("live")) as running:
        yield running


@pytest.fixture(scope="module")
def live_schema(server):
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_never_get_a_server_error(live_schema, server, mode):
    """Every operation of /openapi.json, valid and invalid data, with a crm key."""
    headers = {"Authorization": f"Bearer {server.crm}"}
    tested = []
    for result in live_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=30,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            case.call_and_validate(
                base_url=server.url,
                headers=headers,
                checks=[not_a_server_error, response_schema_conformance],
            )

        try:
            check()
        except Unsatisfiable:  # nothing about this operation can be made invalid
            assert mode is GenerationMode.NEGATIVE
            continue
        tested.append(operation.label)
    assert "POST /v1/predict" in tested


def test_reload_under_load_drops_no_request_and_switches_version(server):
    body = {"accounts": [{"account_id": "A-1", "features": {"days_since_last_contact": 40}}]}
    results: list[tuple[float, int, str | None]] = []  # (sent at, status, model_version)
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        headers = {"Authorization": f"Bearer {server.crm}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    response = http.post("/v1/predict", json=body)
                    status, version = response.status_code, response.json().get("model_version")
                except httpx.HTTPError as exc:
                    status, version = -1, type(exc).__name__
                with lock:
                    results.append((sent, status, version))

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 30
        while len(results) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_for(30)
        make_bundle(server.models / "v2", "v2", seed=2)
        promote(server.models, "v2")
        reload = httpx.post(
            f"{server.url}/v1/admin/reload",
            headers={"Authorization": f"Bearer {server.admin}"},
            timeout=30,
        )
        reloaded_at = time.monotonic()
        assert reload.status_code == 200, reload.text
        assert reload.json()["model_version"] == "v2"
        wait_for(len(results) + 60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert len(results) >= 90
    failures = [r for r in results if r[1] != 200]
    assert not failures, failures[:5]
    after = [version for sent, _, version in results if sent > reloaded_at]
    assert after and set(after) == {"v2"}
    assert {version for _, _, version in results} == {"v1", "v2"}


def test_two_worker_processes_each_load_the_model_and_answer(tmp_path):
    body = {"accounts": [{"account_id": "A-1", "features": {"days_since_last_contact": 40}}]}
    with live_server(tmp_path, {"CHURN_SERVE__WORKERS": "2"}) as server:
        headers = {"Authorization": f"Bearer {server.crm}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
            answers = [http.post("/v1/predict", json=body) for _ in range(20)]
        deadline = time.monotonic() + 60  # the second worker may finish loading a bit later
        while server.log().count('"event": "model_loaded"') < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        log = server.log()
    assert [a.status_code for a in answers] == [200] * 20
    assert {a.json()["model_version"] for a in answers} == {"v1"}
    assert log.count('"event": "model_loaded"') == 2  # one per worker process
    assert "Traceback" not in log
