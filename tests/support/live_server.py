"""`churn serve` in its own process on a free port, for the tests that need the real thing.

``live_server(tmp, env={...})`` is a context manager yielding a :class:`Server` once
``/readyz`` answers (200, or 503 with ``expect_ready=False`` for a cold start); it creates a
crm, an admin and a manager key and stops the process afterwards. Everything the server reads
(models, keys, store) lives under ``tmp`` unless ``env`` names other places.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from serving.keys import KeyStore
from tests.support.bundle_factory import make_models_dir
from tests.support.strong_secrets import TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]
SECRET = TEST_SECRET


@dataclass
class Server:
    url: str
    models: Path
    crm: str
    admin: str
    manager: str
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    keys_file: Path | None = None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_server(
    tmp: Path,
    env: Mapping[str, str] | None = None,
    *,
    models: Path | None = None,
    manager_name: str = "am-1",
    expect_ready: bool = True,
    keys_file: Path | None = None,
) -> Iterator[Server]:
    """Start `churn serve` with a bundle (``make_models_dir(tmp/'models', 'v1')`` by default)
    and keys in ``keys_file`` (default ``tmp/keys.json``)."""
    tmp.mkdir(parents=True, exist_ok=True)
    if models is None:
        models = make_models_dir(tmp / "models", "v1")
    keys_file = keys_file or tmp / "keys.json"
    keys = KeyStore(keys_file, SECRET)
    crm, admin = keys.add("crm")[1], keys.add("admin")[1]
    manager = keys.add("manager", manager_name)[1]
    port = free_port()
    full_env = {
        **os.environ,
        "CHURN_MODELS_DIR": str(models),
        "CHURN_KEYS_FILE": str(keys_file),
        "CHURN_SECRET_KEY": SECRET,
        "CHURN_STORE_URL": str(tmp / "store.duckdb"),
        "CHURN_SERVE__RELOAD_INTERVAL_SECONDS": "0",
        "CHURN_SERVE__RATE_LIMIT_PER_MINUTE": "1000000",
        # Every test request comes from 127.0.0.1: a test of refused keys would otherwise
        # throttle the address for the tests after it. Tests of the throttle set their own.
        "CHURN_SERVE__AUTH_FAILURES_PER_MINUTE": "1000000",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    full_env.pop("CHURN_CONFIG", None)
    log_path = tmp / "server.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from churn_cli.main import main; main()",
            "serve",
            "--port",
            str(port),
        ],
        cwd=tmp,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    wanted = 200 if expect_ready else 503
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == wanted:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"churn serve did not start:\n{log_path.read_text()}")
        time.sleep(0.1)
    try:
        yield Server(url, models, crm, admin, manager, process, log_path, full_env, keys_file)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
