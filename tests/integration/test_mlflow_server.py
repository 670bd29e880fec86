"""The team MLflow deployment (docs/mlflow-team.md): ``mlflow server`` on a PostgreSQL backend
store with proxied artifacts (``--serve-artifacts --artifacts-destination``), started by the
test as a subprocess on a fresh database of the local PostgreSQL server.

One real training runs against it (tracking URI = the server); the registered champion is then
read back through the server: its alias, the logged LightGBM model and bundle (predictions equal
to the exported bundle's), the rows in PostgreSQL, the artifacts in the server's artifact
folder, and ``churn export-champion`` as a serving host would run it. Before the training, the
same command names the missing champion.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from churn.bundle import CHAMPION_DIR, MODEL_FILE, load_bundle
from churn.errors import ChurnError
from churn.settings import get_settings, load_settings

pytestmark = pytest.mark.slow

MODEL_NAME = "churn-model"
READY_TIMEOUT_SECONDS = 180  # a guard against a server that never comes up, not a speed check


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    backend_url: str  # the SQLAlchemy URL mlflow uses (postgresql+psycopg://...)
    database_url: str  # the same database for psycopg (postgresql://...)
    artifacts: Path
    process: subprocess.Popen
    log: Path

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mlflow server exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        pytest.fail(f"mlflow server not healthy:\n{self.log.read_text()[-3000:]}")


@pytest.fixture
def mlflow_server(postgres_url: str, tmp_path: Path) -> Iterator[Server]:
    """``mlflow server`` on a new database ``mlflow_<random>``, started (not yet waited for);
    stopped and the database dropped afterwards."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"mlflow_{uuid.uuid4().hex[:12]}"
    url = make_url(postgres_url).set(database=name)
    backend = url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    database = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    root = tmp_path / "server"
    artifacts = root / "mlartifacts"
    artifacts.mkdir(parents=True)
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no GenAI job workers
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "server",
                "--backend-store-uri",
                backend,
                "--serve-artifacts",
                "--artifacts-destination",
                str(artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its uvicorn child is stopped with it
        )
    try:
        yield Server(f"http://127.0.0.1:{port}", backend, database, artifacts, process, log)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def export_champion(tracking_uri: str, models_dir: Path):
    """``churn export-champion`` in-process, as a serving host runs it (environment only)."""
    from churn_cli.main import app

    get_settings.cache_clear()
    try:
        return CliRunner().invoke(
            app,
            ["export-champion"],
            env={
                "MLFLOW_TRACKING_URI": tracking_uri,
                "CHURN_MODELS_DIR": str(models_dir),
                "CHURN_CONFIG": None,
            },
        )
    finally:
        get_settings.cache_clear()


@pytest.mark.postgres
def test_training_against_a_postgres_mlflow_server_registers_a_champion_read_back_through_it(
    mlflow_server: Server, demo_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import lightgbm as lgb
    import mlflow
    import psycopg
    import yaml
    from mlflow import MlflowClient

    from training.evaluate import feature_matrix
    from training.pipeline import train

    server = mlflow_server
    server.wait_ready()  # the demo source was generated while the server booted

    # A serving host asking before any training gets one clear error.
    serving_models = tmp_path / "serving-host" / "models"
    early = export_champion(server.url, serving_models)
    assert isinstance(early.exception, ChurnError), early.output
    assert f"has no {MODEL_NAME}@champion" in str(early.exception)
    assert not (serving_models / CHAMPION_DIR).exists()

    # A data scientist's training, pointed at the server by the setting.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings(
        models_dir=tmp_path / "models",
        mlflow_tracking_uri=server.url,
        mlflow_artifacts_dir=tmp_path / "local-artifacts",
        rejects_dir=tmp_path / "rejects",
    )
    result = train(str(demo_source), settings, progress=False)
    assert result.promotion.promoted and result.model_version == f"{MODEL_NAME}/1"
    exported = load_bundle(Path(settings.models_dir) / CHAMPION_DIR)
    x = feature_matrix(result.test_frame, exported.feature_names)[:25]
    expected = exported.predict(x)

    # The champion, read back through the server.
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.version == "1" and champion.run_id == result.run_id

    # The registered LightGBM model (text file, no pickle) predicts as the exported bundle.
    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{MODEL_NAME}@champion",
            dst_path=str(tmp_path / "registered"),
            tracking_uri=server.url,
            registry_uri=server.url,
        )
    )
    flavor = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["lightgbm"]
    booster = lgb.Booster(model_file=str(model_dir / flavor["data"]))
    assert np.array_equal(booster.predict(x), exported.raw_probability(x))

    # The bundle logged with the run, downloaded through the server, is the exported one.
    logged_dir = tmp_path / "logged"
    logged_dir.mkdir()
    logged = load_bundle(client.download_artifacts(result.run_id, "bundle", str(logged_dir)))
    assert logged.version == exported.version
    assert np.array_equal(logged.predict(x), expected)

    # Artifacts were uploaded through the server into its artifact destination; nothing was
    # written to the client's local artifact folder.
    experiment = client.get_run(result.run_id).info.experiment_id
    stored = server.artifacts / experiment / result.run_id / "artifacts" / "bundle" / MODEL_FILE
    assert stored.read_bytes() == (exported.path / MODEL_FILE).read_bytes()
    assert not Path(settings.mlflow_artifacts_dir).exists()

    # Params, metrics and the registry live in PostgreSQL.
    with psycopg.connect(server.database_url) as conn:
        params = dict(
            conn.execute(
                "SELECT key, value FROM params WHERE run_uuid = %s", (result.run_id,)
            ).fetchall()
        )
        metrics = dict(
            conn.execute(
                "SELECT key, value FROM latest_metrics WHERE run_uuid = %s", (result.run_id,)
            ).fetchall()
        )
        metric_rows = conn.execute(
            "SELECT count(*) FROM metrics WHERE run_uuid = %s", (result.run_id,)
        ).fetchone()[0]
        alias = conn.execute(
            "SELECT version FROM registered_model_aliases WHERE name = %s AND alias = %s",
            (MODEL_NAME, "champion"),
        ).fetchone()
        location = conn.execute(
            "SELECT artifact_location FROM experiments WHERE experiment_id = %s",
            (int(experiment),),
        ).fetchone()[0]
    assert params["data.snapshot_hash"] == result.snapshot_hash
    assert params["promotion"] == "promoted"
    assert metric_rows >= len(metrics) > 0
    assert metrics["model.pr_auc"] == pytest.approx(result.metrics["model"]["pr_auc"])
    assert metrics["health_score.roc_auc"] == pytest.approx(
        result.metrics["health_score"]["roc_auc"]
    )
    assert alias == (1,)
    assert location.startswith("mlflow-artifacts:")

    # A serving host fetches the champion bundle from the registry into its models/.
    done = export_champion(server.url, serving_models)
    assert done.exit_code == 0, done.output
    assert f"{MODEL_NAME}/1" in done.output
    link = serving_models / CHAMPION_DIR
    assert os.readlink(link) == f"{MODEL_NAME}-v1"
    fetched = load_bundle(link)
    assert fetched.version == exported.version
    assert np.array_equal(fetched.predict(x), expected)
    assert (fetched.path / "MANIFEST.sha256").read_text() == (
        exported.path / "MANIFEST.sha256"
    ).read_text()

    # Run again with the bundle in place: kept, not downloaded again (same inode).
    before = (serving_models / f"{MODEL_NAME}-v1" / MODEL_FILE).stat().st_ino
    again = export_champion(server.url, serving_models)
    assert again.exit_code == 0, again.output
    assert (serving_models / f"{MODEL_NAME}-v1" / MODEL_FILE).stat().st_ino == before


def test_export_champion_names_an_unreachable_tracking_server(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = export_champion(url, tmp_path / "models")
    assert isinstance(result.exception, ChurnError), result.output
    message = str(result.exception)
    assert message.startswith(f"cannot read {MODEL_NAME}@champion") and url in message
    assert "\n" not in message
    assert "MLFLOW_TRACKING_URI" in result.exception.hint
    assert not (tmp_path / "models" / CHAMPION_DIR).exists()


def test_training_stops_before_any_work_when_the_tracking_server_does_not_answer(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = load_settings(
        mlflow_tracking_uri=url,
        models_dir=tmp_path / "models",
        rejects_dir=tmp_path / "rejects",
    )
    from training.pipeline import train

    # The source does not exist either: the server check comes first, so that is not reached.
    with pytest.raises(ChurnError) as caught:
        train(str(tmp_path / "no-such-source"), settings, progress=False)
    assert str(caught.value).startswith(f"the MLflow tracking server {url} does not answer")
    assert "make mlflow-server" in caught.value.hint
    assert not (tmp_path / "models").exists()
