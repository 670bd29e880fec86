"""The command line is the top floor: `churn --help` loads no stage and no heavy library, and a
setting only a stage understands (the mapping's table names) is refused by that stage in one
line. Which package may import which is checked by `make lint` (import-linter contracts in
pyproject.toml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("pandas", "numpy", "lightgbm", "mlflow", "fastapi", "dask", "distributed", "sklearn")
STAGES = ("features", "training", "serving")


def test_the_command_line_starts_without_stages_or_heavy_libraries():
    probe = (
        "import json, sys; import churn_cli.main; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    assert not loaded & set(HEAVY + STAGES), sorted(loaded & set(HEAVY + STAGES))


def test_every_command_group_is_registered():
    import typer.main

    from churn_cli.main import app

    group = typer.main.get_command(app)
    assert set(group.commands) == {
        "demo-data",
        "validate",
        "features",
        "train",
        "export-champion",
        "promote",
        "health",
        "serve",
        "keys",
        "score",
        "report",
        "quickstart",
    }


def test_a_mapping_of_an_unknown_table_stops_validate_in_one_line(tmp_path):
    (tmp_path / "churn.yaml").write_text("mapping:\n  clients:\n    table: Clients\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from churn_cli.main import main; sys.argv[0] = 'churn'; main()",
            "validate",
            "--data",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "error: mapping names unknown table 'clients'", result.stderr
    assert lines[1].startswith("hint: known tables: ['accounts'")
    assert "Traceback" not in result.stderr
