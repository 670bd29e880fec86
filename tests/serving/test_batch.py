"""Batch scoring: the vectorised playbook equals the API's per-account one, and `churn score`
fills the store with every active account, replaces a re-run date and back-fills history."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import hypothesis.strategies as st
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings

from churn.bundle import load_bundle
from churn.settings import load_settings
from features.catalog import FEATURES
from features.contract import Tables
from features.health import ESCALATION_CODES
from features.snapshots import build_snapshots
from serving.batch import (
    default_as_of,
    history_dates,
    recommend_frame,
    score_batch,
    score_batches,
)
from serving.flags import decode_flags
from serving.model_holder import load_model
from serving.playbook import load_playbook, recommend
from serving.scoring import AccountInput, load_rules, score_accounts
from serving.store import Store
from tests.support.firms import small_firm

PLAYBOOK = load_playbook()
DRIVER_FEATURES = [*PLAYBOOK.driver_features(), "tenure_months", "revenue_365d"]


@st.composite
def _accounts(draw):
    n = draw(st.integers(1, 6))
    reasons, escalations, stages, tenure = [], [], {}, {}
    for i in range(n):
        account = f"A-{i}"
        stages[account] = draw(st.sampled_from(["new", "established", "long_term", None]))
        tenure[account] = draw(st.sampled_from([0.5, 2.99, 3.0, 7.0, 40.0, float("nan")]))
        features = draw(st.lists(st.sampled_from(DRIVER_FEATURES), max_size=6, unique=True))
        for rank, feature in enumerate(features, start=1):
            impact = draw(st.sampled_from([-3.0, 0.0, 1.0, 2.5, 2.5, 7.0, float("nan")]))
            reasons.append(
                {
                    "account_id": account,
                    "rank": rank,
                    "feature": feature,
                    "impact_pts": impact,
                    "sentence": f"sentence of {feature}",
                }
            )
        for code in draw(st.lists(st.sampled_from(ESCALATION_CODES), max_size=4, unique=True)):
            escalations.append({"account_id": account, "code": code, "rule": f"rule {code}"})
    return (
        pd.DataFrame(reasons, columns=["account_id", "rank", "feature", "impact_pts", "sentence"]),
        pd.DataFrame(escalations, columns=["account_id", "code", "rule"]),
        pd.Series(stages, dtype=object),
        pd.DataFrame({"tenure_months": pd.Series(tenure, dtype=float)}),
    )


@hypothesis_settings(max_examples=80, deadline=None)
@given(data=_accounts(), max_actions=st.integers(0, 6))
def test_vectorised_playbook_recommends_exactly_what_the_api_recommends(data, max_actions):
    reasons, escalations, stages, features = data
    frame = recommend_frame(
        PLAYBOOK, reasons, escalations, stages, max_actions=max_actions, features=features
    )
    for account, stage in stages.items():
        mine = reasons[reasons["account_id"] == account].sort_values("rank")
        drivers = list(zip(mine["feature"], mine["impact_pts"], strict=True))
        codes = escalations.loc[escalations["account_id"] == account, "code"].tolist()
        expected = recommend(
            PLAYBOOK,
            drivers,
            codes,
            max_actions,
            lifecycle_stage=stage,
            features={"tenure_months": features.loc[account, "tenure_months"]},
        )
        got = frame[frame["account_id"] == account].sort_values("rank")
        assert got["action_id"].tolist() == [a.id for a in expected]
        assert got["title"].tolist() == [a.title for a in expected]
        assert got["steps"].tolist() == [a.steps for a in expected]
        assert got["due"].tolist() == [a.due for a in expected]
        assert got["because"].tolist() == [a.because for a in expected]
        assert got["source"].tolist() == [a.source for a in expected]
        assert got["rank"].tolist() == list(range(1, len(expected) + 1))


# -- scoring a small firm --------------------------------------------------------------------

AS_OF = date(2024, 7, 1)


@pytest.fixture(scope="module")
def firm() -> Tables:
    return small_firm()


@pytest.fixture(scope="module")
def bundle_dir(tiny_bundle) -> Path:
    return tiny_bundle


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    root = tmp_path_factory.mktemp("settings")
    return load_settings(
        models_dir=root / "models", store_url=str(root / "store.duckdb"), keys_file=root / "k"
    )


def _api_features(row: pd.Series) -> dict:
    """A snapshot row as the API's ``features`` object (unknown values left out)."""
    out = {}
    for name, feature in FEATURES.items():
        value = row.get(name)
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            continue
        out[name] = str(value) if feature.kind == "category" else float(value)
    return out


def test_batch_scores_every_active_account_exactly_as_the_api_would(firm, bundle_dir, settings):
    bundle = load_bundle(bundle_dir)
    batch = score_batch(firm, AS_OF, bundle, settings)
    snapshot = build_snapshots(firm, [AS_OF], settings.snapshots)
    assert sorted(batch.scores["account_id"]) == sorted(snapshot["account_id"])
    assert batch.model_version == "test-v1" and batch.as_of == AS_OF

    # The API path (POST /v1/predict) on the same feature values gives the same answers.
    rules = load_rules(settings.health_config, settings.playbook_config)
    model = load_model(bundle_dir)
    # the batch scores one date and the store holds none: no earlier score, the rule's lookback
    inputs = [
        AccountInput(
            row["account_id"],
            _api_features(row),
            None,
            late_invoice=None
            if pd.isna(row["late_invoice_days_late"])
            else {
                "invoice_id": row["late_invoice_id"],
                "amount": float(row["late_invoice_amount"]),
                "days_late": float(row["late_invoice_days_late"]),
            },
        )
        for _, row in snapshot.iterrows()
    ]
    predictions = {p["account_id"]: p for p in score_accounts(inputs, model, rules, 5)}
    scores = batch.scores.set_index("account_id")
    for account, expected in predictions.items():
        got = scores.loc[account]
        assert got["churn_probability"] == pytest.approx(expected["churn_probability"])
        assert got["risk_band"] == expected["risk_band"]
        assert got["priority"] == expected["priority"]
        stored_flags = decode_flags(batch.flags[batch.flags["account_id"] == account])
        assert stored_flags == expected["flags"]
        assert got["health_score"] == pytest.approx(expected["health_score"])
        assert got["health_band"] == expected["health_band"]
        assert got["revenue_at_risk"] == pytest.approx(expected["revenue_at_risk"])
        reasons = batch.reasons[batch.reasons["account_id"] == account].sort_values("rank")
        assert reasons["feature"].tolist() == [r["feature"] for r in expected["reasons"]]
        assert reasons["sentence"].tolist() == [r["sentence"] for r in expected["reasons"]]
        assert reasons["impact_pts"].tolist() == pytest.approx(
            [r["impact_pts"] for r in expected["reasons"]]
        )
        fired = batch.escalations[batch.escalations["account_id"] == account]
        assert fired["code"].tolist() == [e["code"] for e in expected["escalations"]]
        for stored, served in zip(fired.to_dict("records"), expected["escalations"], strict=True):
            if served["evidence"] is not None and stored["code"] == "esc_invoice_30d_late":
                assert stored["invoice_id"] == served["evidence"]["invoice_id"]
                assert stored["days_late"] == served["evidence"]["days_late"]
        actions = batch.actions[batch.actions["account_id"] == account].sort_values("rank")
        assert actions["action_id"].tolist() == [a["id"] for a in expected["actions"]]
        assert actions["because_text"].tolist() == [a["because_text"] for a in expected["actions"]]
    assert batch.escalations["code"].nunique() >= 1  # the firm has accounts in trouble
    assert not batch.flags.empty  # the tiny model and the rules disagree somewhere


def test_without_a_model_the_batch_keeps_the_rule_based_scores(firm, settings):
    batch = score_batch(firm, AS_OF, None, settings)
    assert batch.model_version is None
    assert batch.scores["churn_probability"].isna().all()
    assert batch.scores["revenue_at_risk"].isna().all()
    expected = batch.scores["health_band"].map(
        {"critical": "high", "at_risk": "medium", "healthy": "low"}
    )
    assert batch.scores["risk_band"].tolist() == expected.tolist()
    assert batch.reasons.empty
    # Without a probability the escalations and the health band set the priority alone.
    escalated = set(batch.escalations["account_id"])
    for account, band, priority in batch.scores[
        ["account_id", "health_band", "priority"]
    ].itertuples(index=False):
        if band == "healthy" and account not in escalated:
            assert priority == "ok"
        else:
            assert priority in ("act_now", "watch")
    assert set(batch.actions["source"]) <= {"escalation"}
    assert len(batch.actions) >= batch.escalations["account_id"].nunique()


def test_history_dates_are_monthly_and_each_date_is_scored_point_in_time(firm, settings):
    dates = history_dates(AS_OF, 3)
    assert dates == [date(2024, 4, 1), date(2024, 5, 1), date(2024, 6, 1), AS_OF]
    batches = score_batches(firm, dates, None, settings)
    assert [b.as_of for b in batches] == dates
    # one date alone, given the stored scores of the date before, is scored the same
    stored = batches[0].scores.assign(as_of=pd.Timestamp(dates[0]))
    (alone,) = score_batches(
        firm,
        [date(2024, 5, 1)],
        None,
        settings,
        previous=stored[["as_of", "account_id", "health_score"]],
    )
    together = batches[1].scores.sort_values("account_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(
        together, alone.scores.sort_values("account_id").reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(
        batches[1].escalations.reset_index(drop=True), alone.escalations.reset_index(drop=True)
    )
    # without an earlier scoring there is nothing to compare with: no drop
    first = score_batch(firm, date(2024, 5, 1), None, settings)
    assert first.scores["health_score_30d_ago"].isna().all()
    assert default_as_of(firm) == date(2024, 9, 29)


# -- the commands ----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
# The `churn` console script's entry point, in a fresh process.
CLI = "import sys; from churn_cli.main import main; sys.argv[0] = 'churn'; main()"


def _churn(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        cwd=env["CHURN_TEST_CWD"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, firm, bundle_dir) -> dict[str, str]:
    root = tmp_path_factory.mktemp("work")
    data = root / "data"
    data.mkdir()
    for name, frame in firm:
        frame.to_parquet(data / f"{name}.parquet", index=False)
    models = root / "models"
    models.mkdir()
    (models / "champion").symlink_to(bundle_dir, target_is_directory=True)
    return {
        "CHURN_TEST_CWD": str(root),
        "CHURN_DATA": str(data),
        "CHURN_MODELS_DIR": str(models),
        "CHURN_STORE_URL": str(root / "store.duckdb"),
        "CHURN_REJECTS_DIR": str(root / "rejects"),
        "CHURN_KEYS_FILE": str(root / "keys.json"),
    }


def test_score_command_fills_the_store_with_history_and_a_rerun_replaces_it(workdir):
    run = _churn(["score", "--as-of", "2024-07-01", "--history-months", "2"], workdir)
    assert run.returncode == 0, run.stderr
    assert "model test-v1" in run.stdout and "back-filled 2 earlier date(s)" in run.stdout
    store = Store(workdir["CHURN_STORE_URL"])
    assert store.dates() == [date(2024, 5, 1), date(2024, 6, 1), AS_OF]
    first = store.portfolio(AS_OF)
    assert first["churn_probability"].notna().all() and len(first) > 10
    counts = first["priority"].value_counts()
    said = ", ".join(
        f"{counts.get(p, 0)} {p.replace('_', ' ')}" for p in ("act_now", "watch", "ok")
    )
    assert f"priority: {said}\n" in run.stdout
    assert store.retention_base() is not None

    again = _churn(["score", "--as-of", "2024-07-01"], workdir)
    assert again.returncode == 0, again.stderr
    assert store.dates() == [date(2024, 5, 1), date(2024, 6, 1), AS_OF]
    pd.testing.assert_frame_equal(
        store.portfolio(AS_OF).drop(columns=["run_id", "scored_at"]),
        first.drop(columns=["run_id", "scored_at"]),
    )
    assert len(store.runs()) == 3


def test_report_command_writes_one_self_contained_html_file(workdir):
    assert _churn(["score", "--as-of", "2024-07-01"], workdir).returncode == 0
    out = Path(workdir["CHURN_TEST_CWD"]) / "out" / "retention.html"
    run = _churn(["report", "--out", str(out)], workdir)
    assert run.returncode == 0, run.stderr
    html = out.read_text()
    assert "<style>" in html and html.count("<svg") >= 5
    assert "Logo retention" in html and "Net revenue retention" in html
    # Accounts by priority beside the health bands, and a tile of the two to act on.
    assert 'id="by-priority"' in html and "Act now" in html and "Watch" in html
    assert 'data-kpi="priority_act_now"' in html and 'data-kpi="priority_watch"' in html
    # Nothing to fetch: no stylesheet, script, image or font from anywhere.
    assert not re.search(r"<(link|script|img)[^>]+(href|src)=\"(?!data:)", html)
    assert "url(" not in html
    ann = _churn(["report", "--out", str(out), "--manager", "Ann"], workdir)
    assert ann.returncode == 0 and "accounts of Ann" in out.read_text()


def test_an_unreachable_store_fails_the_score_command_with_one_clear_line(workdir):
    run = _churn(["score", "--store", "postgresql://churn:pw@127.0.0.1:1/none"], workdir)
    assert run.returncode == 1
    assert "cannot reach the score store" in run.stderr
    assert "Traceback" not in run.stderr and "pw@" not in run.stderr


def test_a_batch_scores_the_accounts_active_under_the_models_own_label(bundle_dir, tmp_path):
    """A model trained on purchase-cycle silence scores the clients within their silence
    window, whatever label mode the settings name; an events model scores every client."""
    from dataclasses import replace

    from tests.support.lapsed_firm import AS_OF as LAPSED_AS_OF
    from tests.support.lapsed_firm import CFG, hand_built

    settings = load_settings(
        models_dir=tmp_path / "models",
        snapshots={
            "label_mode": "events",
            "min_silence_days": CFG.min_silence_days,
            "purchase_cycles": CFG.purchase_cycles,
        },
    )
    bundle = load_bundle(bundle_dir)
    scored = {}
    for mode in ("inactivity", "events"):
        model = replace(bundle, metadata={**bundle.metadata, "label_mode": mode})
        (batch,) = score_batches(hand_built(), [LAPSED_AS_OF], model, settings)
        scored[mode] = set(batch.scores["account_id"])
    # On the as_of A and E are lapsed and D never bought (its one call is a year old); B and
    # C are within their windows (tests/support/lapsed_firm.py works the dates out).
    assert scored["inactivity"] == {"B", "C"}
    assert scored["events"] == {"A", "B", "C", "D", "E"}
