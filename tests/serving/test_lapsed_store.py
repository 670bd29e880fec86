"""The daily activity behind the lapsed clients goes through the score store (DuckDB and
PostgreSQL) and back without changing a lapse; a store written before it was kept says so
instead of listing nobody; the playbook's lapsed situation has exactly one action."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from churn.errors import ConfigError
from features.lapsed import lapse_episodes, lapsed_accounts
from serving.lapsed import lapsed_list
from serving.playbook import DEFAULT_PLAYBOOK, load_playbook
from serving.retention import RetentionBase
from serving.store import Store
from tests.support.firms import small_firm
from tests.support.lapsed_firm import AS_OF, CFG, hand_built
from tests.support.store_rows import make_batch


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> str:
    if request.param == "duckdb":
        return str(tmp_path / "store" / "scores.duckdb")
    return request.getfixturevalue("pg_schema_url")


def test_the_stored_activity_gives_the_lapses_of_the_source(store_url):
    tables = small_firm(40, seed=3)
    day = tables.data_end().date()
    store = Store(store_url)
    store.write_batch(
        make_batch(day, {"A-001": ("Ann", 70.0, 0.1)}), base=RetentionBase.from_tables(tables)
    )
    base = store.retention_base()
    assert base is not None and base.activity is not None
    rebuilt = base.activity_tables()
    assert rebuilt is not None
    expected = lapsed_accounts(tables, day, CFG)
    assert len(expected) > 1
    order = list(zip(-expected["revenue_lost"], expected["account_id"], strict=True))
    assert order == sorted(order)  # most revenue lost first, then by account id
    pd.testing.assert_frame_equal(lapsed_accounts(rebuilt, day, CFG), expected)
    pd.testing.assert_frame_equal(
        lapse_episodes(rebuilt, day, CFG), lapse_episodes(tables, day, CFG)
    )
    found = lapsed_list(store, CFG)
    assert found.as_of == day and found.recorded
    pd.testing.assert_frame_equal(found.rows, expected)
    ann = lapsed_list(store, CFG, manager="Ann").rows
    assert list(ann["account_id"]) == list(
        expected.loc[expected["account_manager"] == "Ann", "account_id"]
    )


def test_a_store_without_the_daily_activity_says_it_is_not_recorded(tmp_path):
    store = Store(str(tmp_path / "old.duckdb"))
    base = RetentionBase.from_tables(hand_built())
    old = RetentionBase(base.accounts, base.revenue)  # as written before the activity was kept
    store.write_batch(make_batch(AS_OF, {"A": ("Ann", 70.0, 0.1)}), base=old)
    found = lapsed_list(store, CFG)
    assert found.as_of == AS_OF and not found.recorded and found.rows.empty


# -- the playbook's situation ------------------------------------------------------------------


def _shipped() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_PLAYBOOK.read_text())


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "playbook.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _win_back(data: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in data["actions"] if "lapsed" in a.get("situations", []))


def test_the_shipped_playbook_has_a_win_back_action_for_lapsed_clients():
    action = load_playbook().situation_action("lapsed")
    assert action.id == "win_back" and action.because == "lapsed" and action.source == "situation"
    assert action.owner == "account manager" and action.steps


def test_a_stage_variant_words_the_win_back_for_that_stage(tmp_path):
    data = _shipped()
    _win_back(data)["variants"] = {"long_term": {"title": "Partner call to a long-time client"}}
    playbook = load_playbook(_write(tmp_path, data))
    assert (
        playbook.situation_action("lapsed", "long_term").title
        == "Partner call to a long-time client"
    )
    assert playbook.situation_action("lapsed", "new").title == _win_back(data)["title"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["actions"].remove(_win_back(d)),
            r"situations without an action: \['lapsed'\]",
        ),
        (
            lambda d: d["actions"][0].update(situations=["lapsed"]),
            "situation lapsed triggers both partner_intervention and win_back",
        ),
        (lambda d: _win_back(d).update(situations=["gone"]), r"situations"),
        (lambda d: _win_back(d).update(situations=[]), "no drivers, escalations or situations"),
    ],
)
def test_the_lapsed_situation_has_exactly_one_action(tmp_path, mutate, message):
    data = _shipped()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        load_playbook(_write(tmp_path, data))


def test_an_unknown_situation_is_refused_by_name():
    with pytest.raises(KeyError, match="unknown situation 'gone'"):
        load_playbook().situation_action("gone")


def test_the_features_and_the_store_agree_on_the_hand_built_firm(tmp_path):
    store = Store(str(tmp_path / "s.duckdb"))
    store.write_batch(
        make_batch(AS_OF, {"A": ("Ann", 70.0, 0.1)}), base=RetentionBase.from_tables(hand_built())
    )
    assert list(lapsed_list(store, CFG).rows["account_id"]) == ["E", "A"]
    assert list(lapsed_list(store, CFG, as_of=date(2024, 7, 15)).rows["account_id"]) == ["A", "C"]
