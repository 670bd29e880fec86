"""The scoring API against `mlflow models serve` of the same registered model.

Ours: `churn serve` (one uvicorn process, as shipped) with the bench model's champion bundle,
answering ``POST /v1/predict`` with everything: calibrated probability, SHAP reasons as
sentences, health and service scores, escalations and actions. Reference: `mlflow models serve
-m models:/churn-model@champion --env-manager local` (one uvicorn worker, its default) on the
same registered version, prediction only. Both run side by side on loopback and get the same
accounts (rows of the demo's latest snapshot), each server in turn for every scenario, from one
client in this process: one thread per connection, each keeping its HTTP/1.1 connection alive.
The client shares the machine's cores with the servers, so absolute figures include its cost.

Scenarios: 1 and 100 accounts per request, at 1 and 8 connections. The targets: at least
5x mlflow's requests per second at 8 connections with one account per request, and a p99
latency under 25 ms there.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import Result
from bench.data import DEMO, DemoSpec, TrainedModel, bench_settings, demo_tables, trained_model
from churn.console import err_console

HOST = "127.0.0.1"
SCENARIOS: tuple[tuple[int, int], ...] = ((1, 1), (1, 8), (100, 1), (100, 8))
SECONDS = 3.0
WARMUP_SECONDS = 0.5
RPS_TARGET_8 = 5.0
P99_BUDGET_MS = 25.0
# `churn serve` is also measured with one worker process per core (serve.workers).
WORKERS = os.cpu_count() or 1
POOL = 200  # distinct accounts cycled through by the single-account requests
START_TIMEOUT = 120.0


# ----------------------------------------------------------------------------------- payloads


def _number(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return float(value)


def predict_bodies(snapshot: pd.DataFrame, per_request: int, count: int) -> list[bytes]:
    """``POST /v1/predict`` bodies of ``per_request`` accounts each (every catalogue feature
    the row knows; unknown values left out, as a CRM would send them)."""
    from features.catalog import FEATURES

    accounts = []
    for row in snapshot.to_dict("records"):
        features: dict[str, Any] = {}
        for name, feature in FEATURES.items():
            value = row.get(name)
            if value is None or pd.isna(value):
                continue
            features[name] = str(value) if feature.kind == "category" else float(value)
        account: dict[str, Any] = {"account_id": str(row["account_id"]), "features": features}
        ago = _number(row.get("health_score_30d_ago"))
        if ago is not None:
            account["health_score_30d_ago"] = ago
        accounts.append(account)
    return [
        json.dumps({"accounts": chunk}).encode() for chunk in _chunks(accounts, per_request, count)
    ]


def mlflow_bodies(
    snapshot: pd.DataFrame, feature_names: Sequence[str], per_request: int, count: int
) -> list[bytes]:
    """`/invocations` bodies (``dataframe_split``) of the same rows, model features only."""
    rows = [
        [_number(v) for v in values]
        for values in snapshot.reindex(columns=list(feature_names)).itertuples(index=False)
    ]
    columns = list(feature_names)
    return [
        json.dumps({"dataframe_split": {"columns": columns, "data": chunk}}).encode()
        for chunk in _chunks(rows, per_request, count)
    ]


def _chunks(items: list[Any], size: int, count: int) -> Iterator[list[Any]]:
    """``count`` consecutive slices of ``size`` items, wrapping around the list."""
    n = len(items)
    for i in range(count):
        start = (i * size) % n
        yield [items[(start + j) % n] for j in range(size)]


# ------------------------------------------------------------------------------------- client


@dataclass(frozen=True)
class Load:
    """What one load run measured: completed requests per second and latency percentiles."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def load(
    port: int,
    path: str,
    bodies: Sequence[bytes],
    headers: Mapping[str, str],
    connections: int,
    seconds: float = SECONDS,
    warmup: float = WARMUP_SECONDS,
) -> Load:
    """``connections`` threads, each with one kept-alive connection, posting ``bodies`` in turn
    for ``warmup + seconds``; requests sent after the warm-up count. Any answer other than 200
    fails the run (a benchmark of error pages would mean nothing)."""
    start_gate = threading.Barrier(connections + 1)
    timings: list[list[tuple[float, float]]] = [[] for _ in range(connections)]
    errors: list[str] = []
    window: dict[str, float] = {}

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        i, mine, end = k, timings[k], 0.0
        try:
            start_gate.wait()
            end = window["end"]
            while (sent := time.perf_counter()) < end:
                conn.request("POST", path, body=bodies[i % len(bodies)], headers=dict(headers))
                response = conn.getresponse()
                data = response.read()
                mine.append((sent, time.perf_counter()))
                if response.status != 200:
                    errors.append(f"{response.status}: {data[:300]!r}")
                    return
                i += connections
        except Exception as exc:  # surfaced below with the others
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(connections)]
    for t in threads:
        t.start()
    now = time.perf_counter()
    window["begin"], window["end"] = now + warmup, now + warmup + seconds
    start_gate.wait()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{path} on port {port}: {errors[0]}")
    pairs = np.array([pair for mine in timings for pair in mine]).reshape(-1, 2)
    sent, done = pairs[:, 0], pairs[:, 1]
    begin, end = window["begin"], window["end"]
    # Throughput: requests finished inside the window; latency: requests sent inside it.
    finished = int(np.sum((done >= begin) & (done <= end)))
    latency_ms = (done - sent)[sent >= begin] * 1000.0
    if not finished or not len(latency_ms):
        raise RuntimeError(f"{path} on port {port}: no request completed in {seconds} s")
    return Load(
        requests=finished,
        seconds=seconds,
        p50_ms=float(np.percentile(latency_ms, 50)),
        p99_ms=float(np.percentile(latency_ms, 99)),
    )


# ------------------------------------------------------------------------------------ servers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class _Server:
    name: str
    port: int
    process: subprocess.Popen
    log: Path


def _wait_ready(server: _Server, path: str, deadline: float) -> None:
    while True:
        try:
            conn = http.client.HTTPConnection(HOST, server.port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if server.process.poll() is not None or time.monotonic() > deadline:
            tail = server.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{server.name} did not start; the end of its log:\n{tail}")
        time.sleep(0.2)


def _stop(server: _Server) -> None:
    """Stop the server's process group (mlflow runs uvicorn in a child of its own)."""
    if server.process.poll() is None:
        try:
            os.killpg(server.process.pid, signal.SIGTERM)
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
        except ProcessLookupError:
            pass


def _spawn(name: str, port: int, args: list[str], env: Mapping[str, str], cwd: Path) -> _Server:
    log = cwd / f"{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return _Server(name, port, process, log)


@contextmanager
def servers(
    model: TrainedModel, folder: Path
) -> Iterator[tuple[_Server, _Server, str, _Server | None]]:
    """`churn serve` and `mlflow models serve` of ``model``, both ready; yields them, a crm
    key for ours and (on a machine with several cores) `churn serve` with one worker process
    per core. All are stopped on exit."""
    from serving.keys import KeyStore

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    secret = secrets.token_urlsafe(32)
    keys_file = folder / "keys.json"
    token = KeyStore(keys_file, secret).add("crm")[1]
    bin_dir = str(Path(sys.executable).parent)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "MLFLOW_"))}
    base["PATH"] = f"{bin_dir}{os.pathsep}{base.get('PATH', '')}"
    ours_env = {
        **base,
        "CHURN_MODELS_DIR": str(Path(model.settings.models_dir)),
        "CHURN_KEYS_FILE": str(keys_file),
        "CHURN_SECRET_KEY": secret,
        "CHURN_STORE_URL": str(folder / "store.duckdb"),
        "CHURN_SERVE__RELOAD_INTERVAL_SECONDS": "0",
        "CHURN_SERVE__RATE_LIMIT_PER_MINUTE": "100000000",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    mlflow_env = {
        **base,
        "MLFLOW_TRACKING_URI": model.tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "GIT_PYTHON_REFRESH": "quiet",
    }
    ours_port, mlflow_port = _free_port(), _free_port()
    started: list[_Server] = []
    try:
        ours_argv = [
            sys.executable,
            "-c",
            "from churn_cli.main import main; main()",
            "serve",
            "--host",
            HOST,
            "--port",
            str(ours_port),
        ]
        ours = _spawn("churn-serve", ours_port, ours_argv, ours_env, folder)
        started.append(ours)
        reference = _spawn(
            "mlflow-serve",
            mlflow_port,
            [
                str(Path(bin_dir) / "mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/{model.registered_model}@champion",
                "--env-manager",
                "local",
                "--host",
                HOST,
                "--port",
                str(mlflow_port),
            ],
            mlflow_env,
            folder,
        )
        started.append(reference)
        multi = None
        if WORKERS > 1:  # the same service with serve.workers = one process per core
            multi_port = _free_port()
            multi = _spawn(
                "churn-serve-workers",
                multi_port,
                [*ours_argv[:-1], str(multi_port)],
                {**ours_env, "CHURN_SERVE__WORKERS": str(WORKERS)},
                folder,
            )
            started.append(multi)
        deadline = time.monotonic() + START_TIMEOUT
        _wait_ready(ours, "/readyz", deadline)
        _wait_ready(reference, "/ping", deadline)
        if multi is not None:
            _wait_ready(multi, "/readyz", deadline)
        yield ours, reference, token, multi
    finally:
        for server in started:
            _stop(server)


# --------------------------------------------------------------------------------------- run


def _check_answers(
    ours: _Server, reference: _Server, token: str, body: bytes, mlflow_body: bytes
) -> str:
    """One request to each: both answer, ours with a probability; returns our model version."""
    conn = http.client.HTTPConnection(HOST, ours.port, timeout=60)
    conn.request("POST", "/v1/predict", body=body, headers=_ours_headers(token))
    answer = json.loads(conn.getresponse().read())
    prediction = answer["predictions"][0]
    if prediction.get("churn_probability") is None or not prediction.get("reasons"):
        raise RuntimeError(f"churn serve answered without a model: {str(answer)[:300]}")
    conn = http.client.HTTPConnection(HOST, reference.port, timeout=60)
    conn.request("POST", "/invocations", body=mlflow_body, headers=_json_headers())
    reply = json.loads(conn.getresponse().read())
    if not isinstance(reply.get("predictions"), list) or not math.isfinite(reply["predictions"][0]):
        raise RuntimeError(f"mlflow models serve answered {str(reply)[:300]}")
    return str(prediction.get("model_version"))


def _json_headers() -> dict[str, str]:
    return {"Content-Type": "application/json", "Connection": "keep-alive"}


def _ours_headers(token: str) -> dict[str, str]:
    return {**_json_headers(), "Authorization": f"Bearer {token}"}


def measure(
    model: TrainedModel, snapshot: pd.DataFrame, folder: Path
) -> dict[tuple[int, int], tuple[Load, Load]]:
    """Every scenario on both servers: {(accounts per request, connections): (ours, mlflow)}."""
    from churn.bundle import load_bundle

    names = load_bundle(model.champion).feature_names
    figures: dict[tuple[int, int], tuple[Load, Load]] = {}
    with servers(model, folder) as (ours, reference, token, multi):
        bodies = {
            size: (
                predict_bodies(snapshot, size, max(1, POOL // size)),
                mlflow_bodies(snapshot, names, size, max(1, POOL // size)),
            )
            for size in sorted({s for s, _ in SCENARIOS})
        }
        version = _check_answers(ours, reference, token, bodies[1][0][0], bodies[1][1][0])
        err_console.print(f"both servers up; churn serve has {version}")
        for size, connections in SCENARIOS:
            mine = load(
                ours.port, "/v1/predict", bodies[size][0], _ours_headers(token), connections
            )
            theirs = load(
                reference.port, "/invocations", bodies[size][1], _json_headers(), connections
            )
            figures[(size, connections)] = (mine, theirs)
            err_console.print(
                f"  {size} account(s)/request, {connections} connection(s): "
                f"ours {mine.rps:,.0f} req/s p50 {mine.p50_ms:.1f} ms p99 {mine.p99_ms:.1f} ms | "
                f"mlflow {theirs.rps:,.0f} req/s p50 {theirs.p50_ms:.1f} ms "
                f"p99 {theirs.p99_ms:.1f} ms"
            )
            if multi is not None and (size, connections) == (1, 8):
                many = load(
                    multi.port, "/v1/predict", bodies[size][0], _ours_headers(token), connections
                )
                figures[(size, -connections)] = (many, theirs)  # negative: the worker pool
                err_console.print(
                    f"  ... with {WORKERS} worker processes: {many.rps:,.0f} req/s "
                    f"p50 {many.p50_ms:.1f} ms p99 {many.p99_ms:.1f} ms"
                )
    return figures


def _extra(mine: Load, theirs: Load, size: int) -> dict[str, Any]:
    return {
        "accounts_per_request": size,
        "ours_rps": mine.rps,
        "ours_p50_ms": mine.p50_ms,
        "ours_p99_ms": mine.p99_ms,
        "ours_requests": mine.requests,
        "mlflow_rps": theirs.rps,
        "mlflow_p50_ms": theirs.p50_ms,
        "mlflow_p99_ms": theirs.p99_ms,
        "mlflow_requests": theirs.requests,
    }


def results(figures: Mapping[tuple[int, int], tuple[Load, Load]]) -> list[Result]:
    """The API figures: throughput per scenario, then the latencies the targets name."""
    reference_name = "mlflow models serve, prediction only"
    out = []
    for (size, connections), (mine, theirs) in figures.items():
        if connections < 0:
            continue  # the worker pool's rows come last
        what = "1 account" if size == 1 else f"{size} accounts"
        conns = "connection" if connections == 1 else "connections"
        out.append(
            Result(
                name=f"api: {what}/request, {connections} {conns}, throughput",
                unit="req/s" if size == 1 else "accounts/s",
                ours=mine.rps * size,
                reference=theirs.rps * size,
                reference_name=reference_name,
                target=RPS_TARGET_8 if (size, connections) == (1, 8) else None,
                extra=_extra(mine, theirs, size),
            )
        )
    if (1, 1) in figures:
        mine, theirs = figures[(1, 1)]
        out.append(
            Result(
                name="api: 1 account/request, 1 connection, p50 latency",
                unit="ms",
                ours=mine.p50_ms,
                reference=theirs.p50_ms,
                reference_name=reference_name,
                higher_is_better=False,
                extra=_extra(mine, theirs, 1),
            )
        )
    if (1, 8) in figures:
        mine, theirs = figures[(1, 8)]
        out.append(
            Result(
                name="api: 1 account/request, 8 connections, p99 latency",
                unit="ms",
                ours=mine.p99_ms,
                reference=theirs.p99_ms,
                reference_name=reference_name,
                higher_is_better=False,
                extra=_extra(mine, theirs, 1),
            )
        )
        out.append(
            Result(
                name="api: 1 account/request, 8 connections, p99 against the budget",
                unit="ms",
                ours=mine.p99_ms,
                reference=P99_BUDGET_MS,
                reference_name="p99 budget",
                target=1.0,
                higher_is_better=False,
            )
        )
    if (1, -8) in figures:
        many, theirs = figures[(1, -8)]
        pool = f"serve.workers={WORKERS}"
        out.append(
            Result(
                name=f"api: 1 account/request, 8 connections, {pool}, throughput",
                unit="req/s",
                ours=many.rps,
                reference=theirs.rps,
                reference_name=reference_name,
                target=RPS_TARGET_8,
                extra=_extra(many, theirs, 1),
            )
        )
        out.append(
            Result(
                name=f"api: 1 account/request, 8 connections, {pool}, p99 against the budget",
                unit="ms",
                ours=many.p99_ms,
                reference=P99_BUDGET_MS,
                reference_name="p99 budget",
                target=1.0,
                higher_is_better=False,
            )
        )
    return out


def run(workdir: Path, spec: DemoSpec = DEMO) -> list[Result]:
    from features.snapshots import build_snapshots
    from serving.batch import default_as_of

    model = trained_model(workdir, spec)
    tables = demo_tables(workdir, spec)
    snapshot = build_snapshots(tables, [default_as_of(tables)], bench_settings(workdir).snapshots)
    err_console.print(f"starting churn serve and mlflow models serve on {model.champion.name}")
    figures = measure(model, snapshot.reset_index(drop=True), Path(workdir).resolve() / "api")
    return results(figures)
