"""Serving faults against real `churn serve` processes: damaged model bundles on reload, a
cold start without a model, the MLflow tracking store unreachable at start-up, MLflow's
pickle loading switched off, a request past its deadline (504), overload beyond the
concurrency cap (503) and a client too slow to send its body (408).

Each check records the faults it injected and how many the service survived: it answered as
described, the old model kept serving, and the process stayed up.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from churn.bundle import CALIBRATION_FILE, MANIFEST_FILE, MODEL_FILE, write_manifest
from features.catalog import MODEL_FEATURES
from tests.reliability.figures import record
from tests.support.bundle_factory import make_bundle, make_models_dir, promote, synthetic_features
from tests.support.live_server import ROOT, Server, free_port, live_server

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SMALL = {"accounts": [{"account_id": "A-1", "features": {"days_since_last_contact": 80}}]}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _is_problem(response: httpx.Response, status: int) -> bool:
    return response.status_code == status and response.headers.get("content-type", "").startswith(
        "application/problem+json"
    )


def _alive(server: Server) -> bool:
    return server.process.poll() is None and httpx.get(f"{server.url}/healthz").status_code == 200


def _accounts(n: int, seed: int = 1) -> bytes:
    rows = synthetic_features(n, seed)
    accounts = [
        {
            "account_id": f"A-{i}",
            "features": {
                name: None if np.isnan(v) else float(v)
                for name, v in zip(MODEL_FEATURES, row, strict=True)
            },
        }
        for i, row in enumerate(rows)
    ]
    return json.dumps({"accounts": accounts}).encode()


# ------------------------------------------------------------ damaged bundles on reload


class _Mkdir:
    """Unpickling this makes a folder: proof of whether a pickle was ever loaded."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.mkdir, (str(self.target),)


def _hash_mismatch(folder: Path) -> None:
    calibration = json.loads((folder / CALIBRATION_FILE).read_text())
    calibration["y"] = [min(1.0, y + 0.05) for y in calibration["y"]]  # still valid, not signed
    (folder / CALIBRATION_FILE).write_text(json.dumps(calibration))


def _truncate(folder: Path) -> None:
    text = (folder / MODEL_FILE).read_bytes()
    (folder / MODEL_FILE).write_bytes(text[: len(text) // 2])


def _truncate_and_resign(folder: Path) -> None:
    # A manifest written over a broken file: LightGBM 4 would crash the whole process on it.
    _truncate(folder)
    write_manifest(folder)


def _regression_model(folder: Path) -> None:
    import lightgbm as lgb

    x = synthetic_features(300, seed=4)
    y = np.nan_to_num(x[:, 0])
    params = {"objective": "regression", "num_leaves": 4, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, y, feature_name=list(MODEL_FEATURES)), 5)
    booster.save_model(str(folder / MODEL_FILE))
    write_manifest(folder)


def _nan_calibration(folder: Path) -> None:
    # Valid JSON and a valid structure; only the test prediction shows it yields no probability.
    (folder / CALIBRATION_FILE).write_text('{"method": "platt", "a": NaN, "b": 0.0}')
    write_manifest(folder)


def _pickled_model(folder: Path) -> None:
    (folder / MODEL_FILE).write_bytes(pickle.dumps(_Mkdir(folder.parent / "unpickled")))
    write_manifest(folder)


def _pickle_beside(folder: Path) -> None:
    (folder / "model.pkl").write_bytes(pickle.dumps(_Mkdir(folder.parent / "unpickled")))


def _no_manifest(folder: Path) -> None:
    (folder / MANIFEST_FILE).unlink()


DAMAGE = {
    "a file not matching its sha256": (_hash_mismatch, "sha256"),
    "a truncated model.txt": (_truncate, "sha256"),
    "a truncated model.txt under a fresh manifest": (_truncate_and_resign, "not a complete"),
    "a regression model": (_regression_model, "not a binary classifier"),
    "a calibration failing the test prediction": (_nan_calibration, "test prediction"),
    "a pickle as model.txt": (_pickled_model, "pickle"),
    "a pickle beside the model": (_pickle_beside, "pickle"),
    "no manifest": (_no_manifest, MANIFEST_FILE),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    with live_server(tmp_path_factory.mktemp("faults")) as running:
        yield running


@pytest.fixture
def serving_v1(server: Server) -> Server:
    """The module's server with bundle v1 as champion, loaded (whatever ran before)."""
    promote(server.models, "v1")
    reload = httpx.post(f"{server.url}/v1/admin/reload", headers=_auth(server.admin), timeout=60)
    assert reload.status_code == 200, reload.text
    return server


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_bundle_is_refused_on_reload_and_the_old_model_keeps_serving(
    serving_v1: Server, damage: str
):
    server = serving_v1
    spoil, expected = DAMAGE[damage]
    name = f"bad-{list(DAMAGE).index(damage)}"
    shutil.rmtree(server.models / name, ignore_errors=True)
    spoil(make_bundle(server.models / name, name, seed=7))
    promote(server.models, name)

    with httpx.Client(base_url=server.url, timeout=60) as http:
        reload = http.post("/v1/admin/reload", headers=_auth(server.admin))
        ready = http.get("/readyz")
        ready_admin = http.get("/readyz", headers=_auth(server.admin))
        predict = http.post("/v1/predict", json=SMALL, headers=_auth(server.crm))
        alive = _alive(server)
    refused = (
        _is_problem(reload, 409)
        and expected in reload.json()["detail"]
        and str(server.models) not in reload.text
    )
    old_serves = (
        ready.status_code == 200
        and ready.json() == {"status": "ready", "model_version": "v1"}
        and expected in (ready_admin.json()["reload_error"] or "")
        and predict.status_code == 200
        and predict.json()["model_version"] == "v1"
        and predict.json()["predictions"][0]["churn_probability"] is not None
    )
    never_unpickled = not (server.models / "unpickled").exists()
    survived = refused and old_serves and never_unpickled and alive
    record(
        f"fault: reload of a bundle with {damage}",
        requests=4,
        errors=0 if survived else 1,
        faults_injected=1,
        faults_survived=int(survived),
    )
    assert refused, reload.text
    assert old_serves, (ready.text, predict.text[:300])
    assert never_unpickled
    assert alive, server.log()[-2000:]


FUZZ = textwrap.dedent(
    """
    import json, random, shutil, sys
    from pathlib import Path
    from churn.bundle import MODEL_FILE, write_manifest
    from churn.errors import BundleIntegrityError
    from serving.model_holder import load_model

    source, work, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    original = (source / MODEL_FILE).read_bytes()
    rng = random.Random(20240601)
    variants = [original[: int(len(original) * k / 40)] for k in range(1, 40)]
    for _ in range(n):
        data = bytearray(original)
        at = rng.randrange(len(data))
        kind = rng.choice(["byte", "digit", "cut", "insert"])
        if kind == "byte":
            data[at] = rng.randrange(256)
        elif kind == "digit":
            data[at] = rng.choice(b"0123456789")
        elif kind == "cut":
            del data[at : at + rng.randrange(1, 20)]
        else:
            data[at:at] = bytes(rng.choice(b"0123456789 -=.\\n\\r") for _ in range(4))
        variants.append(bytes(data))
    outcome = {"loaded": 0, "refused": 0, "other": []}
    for data in variants:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(source, work)
        (work / MODEL_FILE).write_bytes(data)
        write_manifest(work)  # as if exported that way: only the structure check stands
        try:
            load_model(work)
            outcome["loaded"] += 1
        except BundleIntegrityError:
            outcome["refused"] += 1
        except Exception as exc:
            outcome["other"].append(type(exc).__name__)
    print(json.dumps(outcome))
    """
)


def test_mangled_model_files_never_crash_the_loading_process(tmp_path):
    """Truncations and random byte damage of model.txt, each under a manifest that matches:
    the loader refuses or loads each one, and the process lives (LightGBM alone segfaults
    or aborts on many of them)."""
    source = make_bundle(tmp_path / "good", "good")
    n = 160
    run = subprocess.run(
        [sys.executable, "-c", FUZZ, str(source), str(tmp_path / "work"), str(n)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    tried = n + 39
    outcome = json.loads(run.stdout.splitlines()[-1]) if run.returncode == 0 else None
    survived = (
        0 if outcome is None else outcome["loaded"] + outcome["refused"] - len(outcome["other"])
    )
    record(
        "fault: mangled model.txt under a valid manifest",
        faults_injected=tried,
        faults_survived=survived,
    )
    assert run.returncode == 0, f"loader process died ({run.returncode}): {run.stderr[-1500:]}"
    assert outcome is not None and not outcome["other"], outcome
    assert outcome["refused"] >= 39  # every truncation at least


# -------------------------------------------------------------- cold start, MLflow away


def test_a_cold_start_without_a_model_serves_rule_based_scores_until_one_arrives(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    with (
        live_server(tmp_path / "cold", models=models, expect_ready=False) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        ready = http.get("/readyz")
        ready_admin = http.get("/readyz", headers=_auth(server.admin))
        predict = http.post("/v1/predict", json=SMALL, headers=_auth(server.crm))
        model = http.get("/v1/model", headers=_auth(server.crm))
        make_models_dir(models, "v1")
        reload = http.post("/v1/admin/reload", headers=_auth(server.admin))
        ready_after = http.get("/readyz")
        alive = _alive(server)
    prediction = predict.json()["predictions"][0] if predict.status_code == 200 else {}
    cold_ok = (
        ready.status_code == 503
        and ready.json() == {"status": "not ready", "reason": "no_bundle"}
        and "champion" in ready_admin.json()["detail"]
        and prediction.get("churn_probability", 0) is None
        and prediction.get("risk_band") in ("high", "medium", "low")
        and predict.json()["probability_unavailable_reason"]
        and model.json()["available"] is False
    )
    recovered = reload.status_code == 200 and ready_after.json().get("model_version") == "v1"
    survived = bool(cold_ok and recovered and alive)
    record(
        "fault: cold start without any model",
        requests=6,
        faults_injected=1,
        faults_survived=int(survived),
    )
    assert cold_ok, (ready.text, predict.text[:500], model.text[:300])
    assert recovered, (reload.text, ready_after.text)
    assert alive


def test_mlflow_unreachable_at_start_up_serves_the_exported_bundle(tmp_path):
    port = free_port()  # bound and released: nothing listens there
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    tracking = f"http://127.0.0.1:{port}"
    env = {"CHURN_MLFLOW_TRACKING_URI": tracking, "MLFLOW_TRACKING_URI": tracking}
    with live_server(tmp_path, env=env) as server:
        ready = httpx.get(f"{server.url}/readyz")
        predict = httpx.post(f"{server.url}/v1/predict", json=SMALL, headers=_auth(server.crm))
    survived = (
        ready.status_code == 200
        and ready.json()["model_version"] == "v1"
        and predict.status_code == 200
        and predict.json()["predictions"][0]["churn_probability"] is not None
    )
    record(
        "fault: MLflow tracking store unreachable at start-up",
        requests=2,
        faults_injected=1,
        faults_survived=int(survived),
    )
    assert survived, (ready.text, predict.text[:300])


MLFLOW_PICKLE = textwrap.dedent(
    """
    import os, pickle, sys
    from pathlib import Path
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"  # an operator's setting
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException
    from sklearn.dummy import DummyClassifier

    work = Path(sys.argv[1])
    model = work / "mlflow-model"
    mlflow.sklearn.save_model(
        DummyClassifier().fit([[0], [1]], [0, 1]), str(model),
        serialization_format="pickle", pip_requirements=[],
    )
    class Mkdir:
        def __init__(self, target): self.target = target
        def __reduce__(self): return os.mkdir, (str(self.target),)
    def plant(marker):
        (model / "model.pkl").write_bytes(pickle.dumps(Mkdir(marker)))

    plant(work / "loaded-before")
    mlflow.sklearn.load_model(str(model))  # the payload is live: it makes its folder

    from churn.settings import Settings
    from serving.app import create_app
    from tests.support.strong_secrets import TEST_SECRET
    create_app(Settings(models_dir=work / "models", keys_file=work / "keys.json",
                        store_url=str(work / "store.duckdb"), secret_key=TEST_SECRET))
    plant(work / "loaded-after")
    try:
        mlflow.sklearn.load_model(str(model))
    except MlflowException as exc:
        print("refused" if "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" in str(exc) else "other")
    else:
        print("loaded")
    """
)


def test_the_serving_process_refuses_to_unpickle_an_mlflow_model(tmp_path):
    """MLflow's own loader, in a process that built the app: a pickled sklearn model whose
    payload makes a folder loads (and runs) before ``create_app``, and is refused after it,
    even though the environment allowed pickles."""
    run = subprocess.run(
        [sys.executable, "-c", MLFLOW_PICKLE, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": ""},
        timeout=300,
    )
    refused = run.returncode == 0 and run.stdout.strip().splitlines()[-1:] == ["refused"]
    not_run = not (tmp_path / "loaded-after").exists()
    record(
        "hostile: pickled MLflow model in the serving process",
        hostile_tried=1,
        hostile_rejected=int(refused and not_run),
    )
    assert (tmp_path / "loaded-before").exists(), run.stderr[-1500:]  # the payload is real
    assert refused, (run.stdout, run.stderr[-1500:])
    assert not_run


# ------------------------------------------------------- deadline, overload, slow body


@pytest.fixture(scope="module")
def tight(tmp_path_factory) -> Iterator[Server]:
    """One request at a time, a quarter-second deadline, and room for very large requests
    (explaining 8,000 accounts takes over a second: SHAP alone costs ~150 µs a row)."""
    env = {
        "CHURN_SERVE__MAX_CONCURRENCY": "1",
        "CHURN_SERVE__REQUEST_TIMEOUT_SECONDS": "0.25",
        "CHURN_SERVE__MAX_ACCOUNTS_PER_REQUEST": "20000",
        "CHURN_SERVE__MAX_BODY_BYTES": "40000000",
    }
    with live_server(tmp_path_factory.mktemp("tight"), env=env) as running:
        yield running


def _wait_until_free(server: Server, deadline_s: float = 180) -> bool:
    """Whether a small predict answers 200 again (the abandoned work has finished)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        r = httpx.post(f"{server.url}/v1/predict", json=SMALL, headers=_auth(server.crm))
        if r.status_code == 200:
            return True
        time.sleep(0.2)
    return False


def test_past_the_deadline_is_504_and_the_late_work_holds_its_place_503(tight: Server):
    """8,000 accounts cannot be scored within the deadline: 504, never a hang. The scoring
    thread still runs, so with a cap of one request the next one is 503 (probes answer)."""
    assert _wait_until_free(tight)
    body = _accounts(8000)
    headers = {**_auth(tight.crm), "Content-Type": "application/json"}
    with httpx.Client(base_url=tight.url, timeout=120) as http:
        late = http.post("/v1/predict", content=body, headers=headers)
        overloaded = http.post("/v1/predict", json=SMALL, headers=_auth(tight.crm))
        probes = [http.get("/healthz").status_code, http.get("/readyz").status_code]
    recovered = _wait_until_free(tight)
    alive = _alive(tight)
    timed_out = _is_problem(late, 504) and "request_timeout_seconds" in late.json()["detail"]
    shed = _is_problem(overloaded, 503) and overloaded.headers.get("retry-after") == "1"
    record(
        "fault: answer past serve.request_timeout_seconds (504)",
        requests=2,
        faults_injected=1,
        faults_survived=int(timed_out and recovered and alive),
    )
    record(
        "fault: request beyond serve.max_concurrency (503)",
        requests=3,
        faults_injected=1,
        faults_survived=int(shed and probes == [200, 200] and recovered and alive),
    )
    assert timed_out, late.text[:500]
    assert shed, overloaded.text
    assert probes == [200, 200]
    assert recovered and alive


def test_a_body_slower_than_the_deadline_is_408(tight: Server):
    assert _wait_until_free(tight)
    host, port = tight.url.removeprefix("http://").split(":")
    head = (
        "POST /v1/predict HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Authorization: Bearer {tight.crm}\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 5000\r\n\r\n"
        '{"accounts": ['
    )
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head.encode())  # ... and never the rest
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0]
    slow_refused = status_line.startswith(b"HTTP/1.1 408") and b"problem+json" in answer
    alive = _alive(tight) and _wait_until_free(tight)
    record(
        "fault: client sending its body slower than the deadline (408)",
        requests=1,
        faults_injected=1,
        faults_survived=int(slow_refused and alive),
    )
    assert slow_refused, answer[:500]
    assert alive
