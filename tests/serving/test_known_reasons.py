"""On a small generated demo, every account of the latest date: no reason and no action rests
on an unknown value, and each account's data completeness matches its snapshot."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churn.bundle import Bundle, load_bundle
from churn.settings import Settings, load_settings
from features.catalog import FEATURES, MODEL_FEATURES, data_completeness
from features.snapshots import build_snapshots
from serving.batch import default_as_of, explained_reasons, recommend_frame, score_batch
from serving.playbook import Playbook, load_playbook
from tests.support.demo_read import read_demo


@pytest.fixture(scope="module")
def service_settings(tmp_path_factory) -> Settings:
    root = tmp_path_factory.mktemp("known-reasons")
    return load_settings(
        models_dir=root / "models",
        store_url=str(root / "store.duckdb"),
        keys_file=root / "keys.json",
        serve={"reload_interval_seconds": 0},
    )


@pytest.fixture(scope="module")
def scored(demo_source, tiny_bundle, service_settings):
    tables = read_demo(demo_source).tables
    as_of = default_as_of(tables)
    bundle = load_bundle(tiny_bundle)
    snapshot = build_snapshots(tables, [as_of], service_settings.snapshots)
    return score_batch(tables, as_of, bundle, service_settings), snapshot, bundle


def test_no_reason_and_no_action_rests_on_an_unknown_value(scored):
    batch, snapshot, bundle = scored
    rows = snapshot.set_index("account_id")
    names = bundle.feature_names
    unknown = {
        account: {n for n in names if pd.isna(rows.at[account, n])} for account in rows.index
    }
    assert sum(len(u) > 0 for u in unknown.values()) > len(rows) / 4  # the demo has gaps
    reasons = batch.reasons
    assert len(reasons) and reasons["value"].notna().all()
    assert not reasons["sentence"].str.contains("unknown").any()
    for account, group in reasons.groupby("account_id"):
        assert not set(group["feature"]) & unknown[account]
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
    drivers = batch.actions[batch.actions["source"] == "driver"]
    assert len(drivers)
    for _, action in drivers.iterrows():
        assert action["because"] not in unknown[action["account_id"]]
        assert "unknown" not in action["because_text"]


def test_each_account_shows_its_data_completeness(scored):
    batch, snapshot, bundle = scored
    names = bundle.feature_names
    scores = batch.scores.set_index("account_id")
    rows = snapshot.set_index("account_id").loc[scores.index]
    share, missing = data_completeness(rows[names].notna().to_numpy(), names)
    assert np.allclose(scores["data_completeness"].to_numpy(dtype=float), share)
    assert scores["missing_sources"].tolist() == missing
    assert ((scores["data_completeness"] > 0) & (scores["data_completeness"] <= 1)).all()
    # A source is named missing exactly when none of its own features is known.
    for account, text in scores["missing_sources"].items():
        for table in filter(None, text.split(", ")):
            own = [n for n in names if FEATURES[n].tables == (table,)]
            assert rows.loc[account, own].isna().all()


def test_the_api_and_the_account_page_show_the_data_completeness(scored, service_settings):
    settings = service_settings
    from fastapi.testclient import TestClient

    from serving import create_app
    from serving.keys import KeyStore
    from serving.store import Store

    batch = scored[0]
    Store(settings.store_url).write_batch(batch)
    scores = batch.scores.set_index("account_id")
    account = scores.index[scores["missing_sources"] != ""][0]
    expected = scores.loc[account]
    token = KeyStore.from_settings(settings).add("admin")[1]
    with TestClient(create_app(settings)) as client:
        detail = client.get(
            f"/v1/accounts/{account}", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert detail["data_completeness"] == pytest.approx(expected["data_completeness"])
        assert detail["missing_sources"] == expected["missing_sources"]
        listed = client.get("/v1/accounts", headers={"Authorization": f"Bearer {token}"}).json()
        assert all("data_completeness" in a for a in listed["accounts"])
        client.post("/login", data={"api_key": token}, follow_redirects=False)
        page = client.get(f"/accounts/{account}").text
    share = f"{expected['data_completeness'] * 100:.0f} %"
    assert "Data completeness" in page and share in page
    assert f"missing: <b>{expected['missing_sources']}</b>" in page


sparse_rows = st.lists(
    st.one_of(st.just(float("nan")), st.integers(0, 200).map(float)),
    min_size=len(MODEL_FEATURES),
    max_size=len(MODEL_FEATURES),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(sparse_rows, min_size=1, max_size=8))
def test_batch_reasons_and_actions_of_rows_with_gaps_rest_on_known_values(tiny_bundle, batch):
    bundle = _bundle(tiny_bundle)
    x = np.array(batch, dtype=float)
    for j, name in enumerate(MODEL_FEATURES):  # keep every value within its valid range
        low, high = FEATURES[name].valid_range
        x[:, j] = np.clip(x[:, j], low, high)
    snapshot = pd.DataFrame(x, columns=MODEL_FEATURES)
    snapshot.insert(0, "account_id", [f"A-{i}" for i in range(len(x))])
    snapshot.insert(0, "as_of", pd.Timestamp("2024-06-01"))
    _, reasons = explained_reasons(snapshot, bundle, 5)
    assert reasons["value"].notna().all()
    assert not reasons["sentence"].str.contains("unknown").any()
    unknown = {
        f"A-{i}": {n for j, n in enumerate(MODEL_FEATURES) if np.isnan(x[i, j])}
        for i in range(len(x))
    }
    for account, group in reasons.groupby("account_id"):
        assert not set(group["feature"]) & unknown[account]
        assert len(group) == min(5, len(MODEL_FEATURES) - len(unknown[account]))
    stages = pd.Series("established", index=snapshot["account_id"])
    no_escalations = pd.DataFrame({"account_id": [], "code": [], "rule": []})
    actions = recommend_frame(_playbook(), reasons, no_escalations, stages)
    for account, because in zip(actions["account_id"], actions["because"], strict=True):
        assert because not in unknown[account]


@functools.cache
def _bundle(folder: Path) -> Bundle:
    return load_bundle(folder)


@functools.cache
def _playbook() -> Playbook:
    return load_playbook(None, known_features=FEATURES)


def test_on_the_demo_every_displayed_drop_of_15_has_its_escalation(
    demo_source, tiny_bundle, service_settings, tmp_path
):
    """Monthly scorings of the demo written to a store: on each date the accounts the portfolio
    shows with a drop of 15+ points are exactly those with the drop escalation."""
    from features.health import load_health_config
    from serving.batch import history_dates, score_batches
    from serving.store import Store

    tables = read_demo(demo_source).tables
    dates = history_dates(default_as_of(tables), 4)
    store = Store(str(tmp_path / "drops.duckdb"))
    store.write_batches(score_batches(tables, dates, load_bundle(tiny_bundle), service_settings))
    threshold = load_health_config().escalations.esc_health_drop.threshold
    seen = 0
    for day in dates[1:]:
        shown = store.portfolio(day)
        drop = -np.round(shown["health_change"].to_numpy(dtype=float), 6)
        displayed = set(shown.loc[drop >= threshold, "account_id"])
        escalations = store.escalations(day)
        fired = set(escalations.loc[escalations["code"] == "esc_health_drop", "account_id"])
        assert fired == displayed, day
        seen += len(displayed)
    assert seen > 0  # the demo has drops to check
