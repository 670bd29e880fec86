"""The notebooks in notebooks/: every committed notebook is stored without outputs, and both run
from top to bottom (with the project's venv kernel) on a small generated demo source and a model
trained on it, read through their environment variables (CHURN_NOTEBOOK_DATA,
CHURN_NOTEBOOK_MODEL), drawing every figure and reporting figures that match their inputs.

Training uses its own SQLite tracking store, artifact folder and models folder under pytest's
tmp_path (as tests/training/test_train.py does); nothing is written to the project's data/ or
models/.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from churn.bundle import CHAMPION_DIR, TEST_PREDICTIONS_FILE
from churn.settings import load_settings
from features.health import load_health_config

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
SIGNALS = "01_signals_and_churn.ipynb"
REVIEW = "02_model_review.ipynb"
CELL_TIMEOUT_SECONDS = 300


def committed_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def execute(name: str, env: dict[str, str]) -> nbformat.NotebookNode:
    """Run a notebook in the project's ``python3`` kernel from notebooks/ (as a user would)."""
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_SECONDS,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        client.execute()  # raises CellExecutionError with the failing cell's traceback
    return nb


def text_output(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                parts.append(out["text"])
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
    return "\n".join(parts)


def assert_every_figure_drawn(nb: nbformat.NotebookNode) -> None:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "plt.show()" in cell.source:
            images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
            assert images, f"cell {i} of the notebook drew no figure"


@pytest.fixture(scope="module")
def champion(demo_source, tmp_path_factory) -> Path:
    """The champion bundle of one training run on ``demo_source`` into a fresh store."""
    from training.pipeline import train

    root = tmp_path_factory.mktemp("store")
    settings = load_settings(
        models_dir=root / "models",
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifacts_dir=root / "artifacts",
        rejects_dir=root / "rejects",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        train(str(demo_source), settings, progress=False)
    return root / "models" / CHAMPION_DIR


def test_both_notebooks_are_committed_without_outputs_or_execution_counts():
    names = {path.name for path in committed_notebooks()}
    assert {SIGNALS, REVIEW} <= names
    for path in committed_notebooks():
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3", path.name
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{path.name} cell {i} holds outputs: clear them"
                assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.slow
def test_signals_notebook_runs_on_the_source_named_by_its_environment_variable(demo_source):
    from features.sources import read_source
    from features.validate import validate_tables
    from serving.retention import RetentionBase

    before = sorted(p.name for p in NOTEBOOKS_DIR.iterdir())
    nb = execute(SIGNALS, {"CHURN_NOTEBOOK_DATA": str(demo_source)})

    accounts = RetentionBase.from_tables(validate_tables(read_source(demo_source)).tables).accounts
    churned = int(accounts["churned_at"].notna().sum())
    text = text_output(nb)
    assert f"{len(accounts)} accounts, {churned} churned" in text
    matched = re.search(r"(\d+) churners, matched with (\d+) distinct stayers", text)
    assert matched, "the precursor section reported no matched churners and stayers"
    assert 0 < int(matched.group(1)) <= churned and int(matched.group(2)) > 0
    assert_every_figure_drawn(nb)
    assert sorted(p.name for p in NOTEBOOKS_DIR.iterdir()) == before  # wrote nothing beside it


@pytest.mark.slow
def test_model_review_notebook_reproduces_the_bundles_test_predictions_and_runs(
    demo_source, champion
):
    before = sorted(p.name for p in NOTEBOOKS_DIR.iterdir())
    nb = execute(
        REVIEW, {"CHURN_NOTEBOOK_DATA": str(demo_source), "CHURN_NOTEBOOK_MODEL": str(champion)}
    )

    stored = pd.read_parquet(champion / TEST_PREDICTIONS_FILE)
    text = text_output(nb)
    rows = len(stored)
    assert f"the model reproduces {rows} of {rows} stored test predictions" in text
    quiet = re.search(r"(\d+) of (\d+) churned rows were quiet churners", text)
    assert quiet, "the quiet-churner section reported nothing"
    assert int(quiet.group(2)) == int(stored["label"].sum())
    healthy_from = load_health_config().bands.healthy
    healthy = stored["label"].eq(1) & stored["health_score"].ge(healthy_from)
    assert int(quiet.group(1)) == int(healthy.sum())
    assert_every_figure_drawn(nb)
    assert sorted(p.name for p in NOTEBOOKS_DIR.iterdir()) == before
