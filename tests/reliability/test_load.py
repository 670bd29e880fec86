"""Load and bursts against a real `churn serve` process.

- Load: 8 concurrent connections for ``CHURN_LOAD_SECONDS`` (default 60) of mixed traffic,
  half ``POST /v1/predict`` (3 accounts of synthetic features per request) and half account
  reads (``GET /v1/accounts`` with filters and ``GET /v1/accounts/{id}``) from a store that
  `churn score` filled with the server's own model. Every answer must be a 200 with the
  expected content: errors 0. The p99 latency is reported, never asserted.
- Burst: one key sending 4x its per-minute limit at once over 8 connections: the excess gets
  429 problem+json with a Retry-After, never a 5xx or a timeout; the other keys are not
  affected, the service stays healthy and the key works again after its Retry-After.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from features.catalog import MODEL_FEATURES
from serving.store import Store
from tests.reliability.churn_runs import churn_env, demo_workdir, run_churn
from tests.reliability.figures import record
from tests.support.bundle_factory import synthetic_features
from tests.support.live_server import live_server

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

CONNECTIONS = 8
ACCOUNTS_PER_PREDICT = 3
RATE_LIMIT = 30
TIMEOUT = httpx.Timeout(30.0)


def _load_seconds() -> float:
    return float(os.environ.get("CHURN_LOAD_SECONDS", "60"))


def _accounts(n: int, seed: int = 0) -> list[dict]:
    """``n`` predict accounts with synthetic feature values (missing ones left out)."""
    x = synthetic_features(n, seed)
    return [
        {
            "account_id": f"L-{seed}-{i}",
            "features": {
                name: float(value)
                for name, value in zip(MODEL_FEATURES, row, strict=True)
                if not math.isnan(value)
            },
        }
        for i, row in enumerate(x)
    ]


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Path:
    """Demo data scored into ``root/store.duckdb`` with the bundle in ``root/models``."""
    root = demo_workdir(tmp_path_factory.mktemp("load"))
    run = run_churn(["score", "--history-months", "2"], churn_env(root), root)
    assert run.returncode == 0, run.stderr
    return root


def test_mixed_load_on_eight_connections_has_no_errors(scored):
    store = Store(str(scored / "store.duckdb"))
    portfolio = store.portfolio()
    account_ids = portfolio["account_id"].tolist()
    manager = str(portfolio["account_manager"].mode().iloc[0])
    managed = portfolio.loc[portfolio["account_manager"] == manager, "account_id"].tolist()
    assert len(account_ids) > 100 and managed
    pool = _accounts(300)
    seconds = _load_seconds()

    with live_server(
        scored / "server",
        models=scored / "models",
        manager_name=manager,
        env={"CHURN_STORE_URL": str(scored / "store.duckdb")},
    ) as server:
        manager_auth = f"Bearer {server.manager}"
        latencies: list[float] = []
        failures: Counter[str] = Counter()
        lock = threading.Lock()
        stop = time.monotonic() + seconds

        def request(client: httpx.Client, rng: random.Random) -> tuple[str, httpx.Response]:
            kind = rng.random()
            if kind < 0.5:
                accounts = rng.sample(pool, ACCOUNTS_PER_PREDICT)
                return "predict", client.post("/v1/predict", json={"accounts": accounts})
            if kind < 0.65:
                band = rng.choice(["", "&band=at_risk", "&band=high", "&segment=A"])
                return "list", client.get(f"/v1/accounts?limit=25{band}")
            if kind < 0.75:  # a manager reading one of its own accounts
                url = f"/v1/accounts/{rng.choice(managed)}"
                return "manager", client.get(url, headers={"Authorization": manager_auth})
            return "detail", client.get(f"/v1/accounts/{rng.choice(account_ids)}")

        def expected(kind: str, response: httpx.Response) -> bool:
            if response.status_code != 200:
                return False
            body = response.json()
            if kind == "predict":
                predictions = body["predictions"]
                return len(predictions) == ACCOUNTS_PER_PREDICT and all(
                    p["churn_probability"] is not None for p in predictions
                )
            if kind == "list":
                return body["total"] >= len(body["accounts"]) and body["as_of"] is not None
            known = managed if kind == "manager" else account_ids
            return body["account_id"] in known and len(body["history"]) >= 1

        def worker(n: int) -> None:
            rng = random.Random(n)
            headers = {"Authorization": f"Bearer {server.crm}"}
            limits = httpx.Limits(max_connections=1)
            with httpx.Client(
                base_url=server.url, headers=headers, timeout=TIMEOUT, limits=limits
            ) as client:
                while time.monotonic() < stop:
                    began = time.perf_counter()
                    try:
                        kind, response = request(client, rng)
                        ok = expected(kind, response)
                        outcome = f"{kind} {response.status_code}"
                    except (httpx.HTTPError, ValueError, KeyError) as exc:
                        ok, outcome = False, type(exc).__name__
                    elapsed = time.perf_counter() - began
                    with lock:
                        latencies.append(elapsed)
                        if not ok:
                            failures[outcome] += 1

        with ThreadPoolExecutor(CONNECTIONS) as executor:
            list(executor.map(worker, range(CONNECTIONS)))
        healthy = httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
        server_log = server.log()
        server_errors = server_log.count("Traceback")

    # No personal data in the logs: no client's or account manager's name of the demo firm.
    people = pd.read_csv(scored / "data" / "accounts.csv", dtype=str)
    personal = set(people["name"].dropna()) | set(people["account_manager"].dropna())
    leaked = sorted(name for name in personal if name in server_log)
    access_lines = server_log.count('"logger": "churn.access"')

    errors = sum(failures.values())
    p99 = float(np.percentile(latencies, 99) * 1000) if latencies else float("nan")
    record(
        f"load: {CONNECTIONS} connections, {seconds:g} s mixed",
        requests=len(latencies),
        errors=errors,
        p99_ms=p99,
        note=f"{len(latencies) / seconds:.0f} req/s"
        + (f"; failures {dict(failures)}" if failures else ""),
    )
    assert latencies, "no request was sent"
    assert errors == 0, f"failed requests: {dict(failures)}"
    assert healthy and server_errors == 0
    assert access_lines >= len(latencies)  # every request was logged ...
    assert leaked == []  # ... and no name reached the log


def test_a_burst_beyond_the_rate_limit_gets_429s_and_nothing_worse(tmp_path):
    sent = RATE_LIMIT * 4
    with live_server(
        tmp_path / "burst", env={"CHURN_SERVE__RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT)}
    ) as server:
        body = {"accounts": _accounts(2, seed=1)}
        headers = {"Authorization": f"Bearer {server.crm}"}
        limits = httpx.Limits(max_connections=CONNECTIONS)
        latencies: list[float] = []
        outcomes: Counter[str] = Counter()
        bad_429: list[str] = []
        retry_after = 0

        with httpx.Client(
            base_url=server.url, headers=headers, timeout=TIMEOUT, limits=limits
        ) as client:

            def one(i: int) -> None:
                nonlocal retry_after
                began = time.perf_counter()
                try:
                    if i % 2:
                        response = client.post("/v1/predict", json=body)
                    else:
                        response = client.get("/v1/accounts?limit=5")
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1
                    return
                latencies.append(time.perf_counter() - began)
                outcomes[str(response.status_code)] += 1
                if response.status_code == 429:
                    problem = response.json()
                    wait = response.headers.get("retry-after", "")
                    if (
                        response.headers["content-type"] != "application/problem+json"
                        or problem.get("status") != 429
                        or not wait.isdigit()
                        or int(wait) < 1
                    ):
                        bad_429.append(f"{response.headers} {problem}")
                    else:
                        retry_after = max(retry_after, int(wait))

            began = time.monotonic()
            with ThreadPoolExecutor(CONNECTIONS) as executor:
                list(executor.map(one, range(sent)))
            burst_seconds = time.monotonic() - began

            # Other keys have their own budget; the service is healthy; the key recovers.
            others = [
                httpx.get(
                    f"{server.url}/v1/accounts?limit=5",
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=TIMEOUT,
                ).status_code
                for key in (server.admin, server.manager)
            ]
            probes = [
                httpx.get(f"{server.url}{p}", timeout=TIMEOUT).status_code
                for p in ("/healthz", "/readyz")
            ]
            time.sleep(retry_after)
            again = client.post("/v1/predict", json=body).status_code
        server_errors = server.log().count("Traceback")

    limited, ok = outcomes["429"], outcomes["200"]
    errors = sum(n for outcome, n in outcomes.items() if outcome not in ("200", "429"))
    p99 = float(np.percentile(latencies, 99) * 1000) if latencies else float("nan")
    record(
        f"load: burst of {sent} at a limit of {RATE_LIMIT}/min",
        requests=sent,
        errors=errors + len(bad_429),
        p99_ms=p99,
        note=f"{ok} answered, {limited} limited (429)",
    )
    assert errors == 0, f"answers other than 200 and 429: {dict(outcomes)}"
    assert not bad_429, bad_429[:3]
    # The bucket holds RATE_LIMIT requests and refills RATE_LIMIT a minute.
    assert 1 <= ok <= RATE_LIMIT + math.ceil(burst_seconds * RATE_LIMIT / 60) + 1, dict(outcomes)
    assert limited == sent - ok
    assert others == [200, 200] and probes == [200, 200], (others, probes)
    assert again == 200 and server_errors == 0
