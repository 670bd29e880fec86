"""Running the `churn` command line as a user does, in a fresh process, with everything it
writes (models, store, keys, rejects, MLflow runs) under one folder of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from churn.settings import Settings, load_settings

#: The console script installed with the project, beside the running interpreter.
CHURN = Path(sys.executable).with_name("churn")


def isolated_env(root: Path, **overrides: str) -> dict[str, str]:
    """This process's environment without any ``CHURN_*`` setting or MLflow tracking URI of its
    own, every written path under ``root``, and ``overrides`` on top. ``COLUMNS`` is wide
    enough that rich does not wrap the lines tests assert on."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CHURN_") and k != "MLFLOW_TRACKING_URI"
    }
    env |= {
        "CHURN_MODELS_DIR": str(root / "models"),
        "CHURN_DATA_DIR": str(root / "data"),
        "CHURN_STORE_URL": str(root / "store.duckdb"),
        "CHURN_KEYS_FILE": str(root / "api_keys.json"),
        "CHURN_REJECTS_DIR": str(root / "rejects"),
        "CHURN_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "CHURN_MLFLOW_ARTIFACTS_DIR": str(root / "artifacts"),
        "COLUMNS": "200",
    }
    return env | overrides


def isolated_settings(root: Path) -> Settings:
    """Settings whose models, MLflow store, artifacts and rejects live under ``root``."""
    return load_settings(
        models_dir=root / "models",
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifacts_dir=root / "artifacts",
        rejects_dir=root / "rejects",
    )


def served_settings(root: Path, **overrides: object) -> Settings:
    """Settings of a service under test: keys, models, data (the dashboard's session
    revocations) and a DuckDB store under ``root``, no background model reloads;
    ``overrides`` add or replace settings."""
    values: dict[str, object] = {
        "keys_file": root / "keys.json",
        "data_dir": root / "data",
        "models_dir": root / "models",
        "store_url": str(root / "store.duckdb"),
        "serve": {"reload_interval_seconds": 0},
    }
    return load_settings(**(values | overrides))


def run_churn(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``churn ARGS`` in ``cwd`` with ``env``; the caller checks the outcome."""
    return subprocess.run(
        [str(CHURN), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
