"""`churn health backtest` and `churn health apply` as a user runs them: the backtest prints its
tables and, with --json, one JSON object as the last line, and writes the suggestion to a new
file; apply refuses a broken file in one line and replaces nothing, and otherwise makes the
file the active rules, keeping the old ones as a backup."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from features.health import DEFAULT_HEALTH_CONFIG, load_health_config
from tests.support.cli import isolated_env, run_churn


@pytest.fixture
def active(tmp_path) -> Path:
    """A copy of the shipped rules as the active health config of the test's runs."""
    path = tmp_path / "configs" / "health.yaml"
    path.parent.mkdir()
    shutil.copyfile(DEFAULT_HEALTH_CONFIG, path)
    return path


def _env(tmp_path: Path, active: Path) -> dict[str, str]:
    return isolated_env(tmp_path, CHURN_HEALTH_CONFIG=str(active))


@pytest.fixture(scope="module")
def backtest_run(demo_source, tmp_path_factory):
    root = tmp_path_factory.mktemp("health-backtest")
    active = root / "configs" / "health.yaml"
    active.parent.mkdir()
    shutil.copyfile(DEFAULT_HEALTH_CONFIG, active)
    result = run_churn(
        ["health", "backtest", "--data", str(demo_source), "--json"],
        isolated_env(root, CHURN_HEALTH_CONFIG=str(active)),
        root,
    )
    return root, active, result


def test_backtest_json_last_line_is_one_object_with_both_rule_sets(backtest_run):
    _, _, result = backtest_run
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    keys = {"roc_auc", "pr_auc", "churners_in_healthy_band", "recall_at_equal_workload"}
    assert set(summary["current"]) == keys
    assert set(summary["suggested"]) == keys
    for side in ("current", "suggested"):
        assert 0 <= summary[side]["churners_in_healthy_band"] <= 1
        assert 0 <= summary[side]["recall_at_equal_workload"] <= 1
    components = {k: v for k, v in summary["weights"].items() if "." not in k}
    assert set(components) == {"engagement", "relationship", "financial", "satisfaction"}
    assert sum(components.values()) == pytest.approx(100.0)
    assert summary["interval"]["low"] <= summary["interval"]["high"]
    # the tables and the interval go to stderr with --json
    assert "bootstrap interval" in result.stderr
    assert "share of churners" in result.stderr
    # the reserve sub-rules are measured too: listed with no points today
    reserve = [k for k in summary["rules"] if k not in summary["current_weights"]]
    assert "relationship.sentiment_vs_usual" in reserve
    assert "reserve" in result.stderr


SHIPPED_VERSION = load_health_config(DEFAULT_HEALTH_CONFIG).version
NEXT = SHIPPED_VERSION + 1


def test_backtest_writes_a_new_version_beside_the_active_rules_and_leaves_them(backtest_run):
    _, active, result = backtest_run
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    written = active.parent / f"health.v{NEXT}.suggested.yaml"
    assert summary["file"] == str(written)
    assert active.read_bytes() == DEFAULT_HEALTH_CONFIG.read_bytes()
    cfg = load_health_config(written)
    assert cfg.version == NEXT
    assert cfg.bands == load_health_config(active).bands
    header = written.read_text().split("\n\n", 1)[0]
    assert "ROC AUC" in header and "bootstrap interval" in header
    assert "recall at equal workload" in header
    # the file says how the points were chosen: on the validation period, never the test one
    assert "chosen on the validation period" in header
    assert "refitted on the training and validation periods together" in header


def test_backtest_out_option_and_refusal_to_overwrite_the_active_rules(demo_source, tmp_path):
    active = tmp_path / "health.yaml"
    shutil.copyfile(DEFAULT_HEALTH_CONFIG, active)
    env = _env(tmp_path, active)
    refused = run_churn(
        ["health", "backtest", "--data", str(demo_source), "--out", str(active)], env, tmp_path
    )
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[0].startswith("error: --out")
    assert "hint:" in refused.stderr
    assert active.read_bytes() == DEFAULT_HEALTH_CONFIG.read_bytes()


def test_backtest_prints_the_bands_it_keeps_and_refuses_an_unknown_method(
    backtest_run, demo_source, tmp_path
):
    _, _, result = backtest_run
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    below = summary["band_fit"]["below_60"]
    assert below["suggested_train"] >= below["current_train"]
    assert "Share of rows below the cut-offs" in result.stderr
    assert "critical (under 40)" in result.stderr
    active = tmp_path / "health.yaml"
    shutil.copyfile(DEFAULT_HEALTH_CONFIG, active)
    refused = run_churn(
        ["health", "backtest", "--data", str(demo_source), "--method", "lasso"],
        _env(tmp_path, active),
        tmp_path,
    )
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[0] == "error: --method 'lasso' is not a fit method"
    assert "weights, steps" in refused.stderr


def test_backtest_free_level_says_the_workload_is_not_kept(demo_source, tmp_path):
    active = tmp_path / "health.yaml"
    shutil.copyfile(DEFAULT_HEALTH_CONFIG, active)
    result = run_churn(
        ["health", "backtest", "--data", str(demo_source), "--free-level", "--json"],
        _env(tmp_path, active),
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["band_fit"] == {}
    assert "level free" in summary["method"]
    assert summary["method"].startswith(summary["selection"]["chosen"])
    assert "the bands' workload is not kept" in result.stderr
    header = (tmp_path / f"health.v{NEXT}.suggested.yaml").read_text().split("\n\n", 1)[0]
    assert "the bands' workload is not kept" in header


def _suggestion(tmp_path: Path, **change) -> Path:
    """The shipped rules as the next version with 5 points moved from engagement to satisfaction."""
    data = yaml.safe_load(DEFAULT_HEALTH_CONFIG.read_text())
    data["version"] = NEXT
    eng = data["components"]["engagement"]
    eng["max_points"] = 25
    eng["rules"][0]["points"] = 5
    eng["rules"][0]["steps"] = [[0, 0], [0.5, 3], [1.0, 5]]
    sat = data["components"]["satisfaction"]
    sat["max_points"] = 25
    sat["rules"][0]["points"] = 15
    sat["rules"][0]["steps"][-1][1] = 15
    data.update(change)
    path = tmp_path / "suggested.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_apply_replaces_the_active_rules_keeps_a_backup_and_says_what_changed(tmp_path, active):
    file = _suggestion(tmp_path)
    result = run_churn(["health", "apply", str(file)], _env(tmp_path, active), tmp_path)
    assert result.returncode == 0, result.stderr
    assert load_health_config(active).version == NEXT
    assert active.read_bytes() == file.read_bytes()
    backup = active.with_name(f"health.v{SHIPPED_VERSION}.bak.yaml")
    assert backup.read_bytes() == DEFAULT_HEALTH_CONFIG.read_bytes()
    assert f"version {NEXT} active" in result.stdout
    assert "engagement 30 -> 25 points: interaction_frequency 10 -> 5" in result.stdout
    assert "satisfaction 20 -> 25 points: survey_score 10 -> 15" in result.stdout


def test_apply_says_which_sub_rules_come_from_and_go_to_the_reserve(tmp_path, active):
    """A suggestion that gives a reserve sub-rule the points of a sub-rule it sends to the
    reserve: apply names both moves."""
    data = yaml.safe_load(DEFAULT_HEALTH_CONFIG.read_text())
    data["version"] = NEXT
    rel = data["components"]["relationship"]
    strategic = next(r for r in rel["rules"] if r["name"] == "strategic_work")
    sentiment = next(r for r in rel["reserve"] if r["name"] == "sentiment_vs_usual")
    rel["rules"] = [r for r in rel["rules"] if r is not strategic] + [sentiment]
    rel["reserve"] = [r for r in rel["reserve"] if r is not sentiment] + [strategic]
    file = tmp_path / "suggested.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_churn(["health", "apply", str(file)], _env(tmp_path, active), tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        "relationship 25 -> 25 points: strategic_work 4 -> to the reserve; "
        "sentiment_vs_usual from the reserve 4 (an unknown value earns 50 % of its points)"
        in result.stdout
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("version: [\n", "is not valid YAML"),
        (None, "component max_points add up to 105"),
        (f"version: {NEXT}\n", "cadence: Field required"),
    ],
)
def test_apply_refuses_a_broken_file_in_one_line_and_replaces_nothing(
    tmp_path, active, content, message
):
    if content is None:  # sub-rules that add up, component maxima that do not
        file = _suggestion(tmp_path)
        data = yaml.safe_load(file.read_text())
        data["components"]["relationship"]["max_points"] = 30
        data["components"]["relationship"]["rules"][0]["points"] = 12
        data["components"]["relationship"]["rules"][0]["steps"][-1][1] = 12
        file.write_text(yaml.safe_dump(data, sort_keys=False))
    else:
        file = tmp_path / "broken.yaml"
        file.write_text(content)
    before = active.read_bytes()
    result = run_churn(["health", "apply", str(file)], _env(tmp_path, active), tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in result.stderr
    assert active.read_bytes() == before
    assert not list(active.parent.glob("*.bak.yaml"))


def test_apply_refuses_rules_that_do_not_raise_the_version(tmp_path, active):
    file = _suggestion(tmp_path, version=SHIPPED_VERSION)
    result = run_churn(["health", "apply", str(file)], _env(tmp_path, active), tmp_path)
    assert result.returncode == 1
    assert (
        f"version {SHIPPED_VERSION} is not above the active rules' version {SHIPPED_VERSION}"
        in result.stderr
    )
    assert active.read_bytes() == DEFAULT_HEALTH_CONFIG.read_bytes()
