"""The score store on DuckDB and on the real PostgreSQL server: a date is replaced as a whole,
a run killed half-way changes nothing, and history reads back in date order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from churn.errors import StoreError
from serving.retention import RetentionBase
from serving.store import Store
from tests.support.store_rows import make_batch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> str:
    if request.param == "duckdb":
        return str(tmp_path / "store" / "scores.duckdb")
    return request.getfixturevalue("pg_schema_url")


D1, D2, D3 = date(2025, 1, 1), date(2025, 2, 1), date(2025, 3, 1)


def _counts(store: Store, as_of: date) -> dict[str, int]:
    return {
        "scores": len(store.portfolio(as_of)),
        "reasons": len(store.reasons(as_of)),
        "escalations": len(store.escalations(as_of)),
        "actions": len(store.actions(as_of)),
        "runs": int((store.runs()["as_of"] == pd.Timestamp(as_of)).sum()),
    }


def test_rerunning_a_date_replaces_it_and_leaves_other_dates_alone(store_url):
    store = Store(store_url)
    store.write_batch(make_batch(D1, {"A-1": ("Ann", 70.0, 0.1), "A-2": ("Bob", 30.0, 0.6)}))
    store.write_batch(make_batch(D2, {"A-1": ("Ann", 65.0, 0.2), "A-2": ("Bob", 35.0, 0.5)}))
    before_d1 = store.portfolio(D1)

    # Re-run D2 with one account gone and another one's score changed.
    store.write_batch(make_batch(D2, {"A-1": ("Ann", 20.0, 0.9)}))
    store.write_batch(make_batch(D2, {"A-1": ("Ann", 20.0, 0.9)}))

    d2 = store.portfolio(D2)
    assert d2["account_id"].tolist() == ["A-1"]
    assert d2["health_score"].tolist() == [20.0]
    assert _counts(store, D2) == {
        "scores": 1,
        "reasons": 3,
        "escalations": 1,
        "actions": 1,
        "runs": 1,
    }
    pd.testing.assert_frame_equal(store.portfolio(D1), before_d1)
    assert store.dates() == [D1, D2]


def test_history_reads_back_in_date_order_whatever_the_write_order(store_url):
    store = Store(store_url)
    for as_of, health in ((D3, 41.0), (D1, 80.0), (D2, 62.0)):
        store.write_batch(make_batch(as_of, {"A-1": ("Ann", health, health / 200)}))
    history = store.history("A-1")
    assert [ts.date() for ts in history["as_of"]] == [D1, D2, D3]
    assert history["health_score"].tolist() == [80.0, 62.0, 41.0]
    assert store.latest_as_of() == D3

    record = store.account("A-1")
    assert record is not None
    assert record.score["as_of"] == D3
    assert record.previous is not None and record.previous["health_score"] == 62.0
    assert record.reasons["rank"].tolist() == [1, 2, 3]
    assert record.escalations.empty  # 41 is at risk, not critical
    assert store.account("A-1", as_of=D1).score["health_score"] == 80.0


def test_portfolio_sorts_by_revenue_at_risk_filters_and_shows_the_monthly_change(store_url):
    store = Store(store_url)
    store.write_batch(make_batch(D1, {"A-1": ("Ann", 70.0, 0.1), "A-2": ("Bob", 50.0, 0.2)}))
    store.write_batch(
        make_batch(
            D2,
            {"A-1": ("Ann", 55.0, 0.3), "A-2": ("Bob", 52.0, 0.1), "A-3": ("Ann", 30.0, 0.8)},
        )
    )
    frame = store.portfolio()
    assert frame["account_id"].tolist() == ["A-3", "A-1", "A-2"]
    assert frame["revenue_at_risk"].tolist() == pytest.approx([80_000, 30_000, 10_000])
    changes = dict(zip(frame["account_id"], frame["health_change"], strict=True))
    assert changes["A-1"] == -15.0 and changes["A-2"] == 2.0 and pd.isna(changes["A-3"])
    assert frame["top_reason"].iloc[0] == "days_since_last_contact is 74"

    assert store.portfolio(manager="Ann")["account_id"].tolist() == ["A-3", "A-1"]
    assert store.portfolio(band="critical")["account_id"].tolist() == ["A-3"]
    assert store.portfolio(band="high")["account_id"].tolist() == ["A-3", "A-1"]
    assert store.portfolio(segment="A").empty
    assert store.managers() == ["Ann", "Bob"]
    assert store.account("A-2", manager="Ann") is None
    assert store.account("A-2", manager="Bob") is not None
    assert store.account("nope") is None


def test_scores_without_a_model_store_a_null_probability(store_url):
    store = Store(store_url)
    store.write_batch(make_batch(D1, {"A-1": ("Ann", 35.0, None)}, model_version=None))
    row = store.account("A-1").score
    assert row["churn_probability"] is None and row["revenue_at_risk"] is None
    assert row["health_band"] == "critical"
    assert store.runs()["model_version"].isna().all()


def test_retention_base_round_trips_through_the_store(store_url):
    base = RetentionBase(
        accounts=pd.DataFrame(
            {
                "account_id": ["A-1", "A-2"],
                "account_manager": ["Ann", "Bob"],
                "started_at": pd.to_datetime(["2020-01-01", "2021-06-01"]),
                "churned_at": pd.to_datetime([None, "2024-05-03"]),
                "churn_reason": [None, "competitor"],
            }
        ),
        revenue=pd.DataFrame(
            {
                "account_id": ["A-1", "A-1", "A-2"],
                "month": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-01-01"]),
                "amount": [10.0, 20.0, 5.0],
            }
        ),
    )
    store = Store(store_url)
    assert store.retention_base() is None
    store.write_batch(make_batch(D1, {"A-1": ("Ann", 70.0, 0.1)}), base=base)
    back = store.retention_base()
    assert back is not None
    assert back.accounts["churned_at"].isna().tolist() == [True, False]
    assert back.accounts["churn_reason"].tolist()[1] == "competitor"
    assert back.revenue["amount"].tolist() == [10.0, 20.0, 5.0]
    assert store.retention_base(manager="Bob").accounts["account_id"].tolist() == ["A-2"]


def test_a_failure_before_commit_leaves_the_store_as_it_was(store_url):
    store = Store(store_url)
    store.write_batch(make_batch(D1, {"A-1": ("Ann", 70.0, 0.1), "A-2": ("Bob", 30.0, 0.6)}))
    before = store.portfolio(D1)
    broken = make_batch(D1, {"A-1": ("Ann", 10.0, 0.9)})
    # Two reasons with the same rank break the primary key after scores were written.
    broken.reasons = pd.concat([broken.reasons, broken.reasons.head(1)], ignore_index=True)
    with pytest.raises(StoreError):
        store.write_batch(broken)
    pd.testing.assert_frame_equal(store.portfolio(D1), before)
    assert _counts(store, D1)["reasons"] == 6


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import date
    from serving import store as store_mod
    from tests.support.store_rows import make_batch

    done = []
    def killing_insert(original):
        def insert(self, table, frame):
            original(self, table, frame)
            done.append(table)
            if len(done) == 2:  # scores and reasons written, the rest not yet
                print("inserted", done, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        return insert
    store_mod._DuckDBTx.insert = killing_insert(store_mod._DuckDBTx.insert)
    store_mod._SQLAlchemyTx.insert = killing_insert(store_mod._SQLAlchemyTx.insert)
    url, day = sys.argv[1], date.fromisoformat(sys.argv[2])
    store_mod.Store(url).write_batch(make_batch(day, {"A-1": ("Ann", 5.0, 0.99)}))
    print("committed", flush=True)
    """
)


def test_a_run_killed_half_way_leaves_no_partial_date(store_url):
    store = Store(store_url)
    store.write_batch(make_batch(D1, {"A-1": ("Ann", 70.0, 0.1), "A-2": ("Bob", 30.0, 0.6)}))
    before = store.portfolio(D1)

    for day in (D1, D2):  # re-writing a stored date, then writing a new one
        proc = subprocess.run(
            [sys.executable, "-c", _KILL_SCRIPT, store_url, day.isoformat()],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert "inserted ['scores', 'reasons']" in proc.stdout
        assert "committed" not in proc.stdout

    store = Store(store_url)
    assert store.dates() == [D1]
    pd.testing.assert_frame_equal(store.portfolio(D1), before)
    assert _counts(store, D1) == {
        "scores": 2,
        "reasons": 6,
        "escalations": 1,
        "actions": 2,
        "runs": 1,
    }
    assert _counts(store, D2) == {
        "scores": 0,
        "reasons": 0,
        "escalations": 0,
        "actions": 0,
        "runs": 0,
    }


def test_reading_a_store_that_was_never_written_gives_empty_results(tmp_path):
    store = Store(str(tmp_path / "absent.duckdb"))
    assert store.dates() == [] and store.latest_as_of() is None
    assert store.portfolio().empty and store.account("A-1") is None
    assert not (tmp_path / "absent.duckdb").exists()


def test_an_unreachable_database_is_a_store_error_naming_it():
    store = Store("postgresql://churn:secret@127.0.0.1:1/nowhere")
    with pytest.raises(StoreError, match=r"cannot reach the score store") as info:
        store.write_batch(make_batch(D1, {"A-1": ("Ann", 70.0, 0.1)}))
    assert "secret" not in str(info.value)
    assert info.value.hint


def test_a_file_that_is_not_a_duckdb_database_is_a_store_error(tmp_path):
    bad = tmp_path / "store.duckdb"
    bad.write_text("not a database")
    with pytest.raises(StoreError, match="store.duckdb"):
        Store(str(bad)).write_batch(make_batch(D1, {"A-1": ("Ann", 70.0, 0.1)}))


def test_a_store_written_before_a_column_existed_reads_and_is_migrated_on_write(store_url):
    """An older store of this schema version lacks the newer columns (``priority``): reads
    give null for them, and the next write adds them, keeping the stored rows."""
    from serving import store as store_module

    old_schema = {
        table: {c: kind for c, kind in columns.items() if c != "priority" or table != "scores"}
        for table, columns in store_module.STORE_SCHEMA.items()
        if table != "flags"
    }
    old_batch = make_batch(D1, {"A-1": ("Ann", 35.0, 0.6)})
    old_batch.scores = old_batch.scores.drop(columns="priority")
    store = Store(store_url)
    with store._backend.transaction() as tx:  # the tables as an older release created them
        for statement in store_module.schema_ddl(old_schema):
            tx.execute(statement)
        tx.execute("INSERT INTO store_meta (key, value) VALUES ('schema_version', '1')")
        for table, frame in (("scores", old_batch.scores), ("escalations", old_batch.escalations)):
            rows = frame.assign(as_of=pd.Timestamp(D1), run_id="old")
            tx.insert(table, rows[[c for c in old_schema[table] if c in rows]])
        tx.insert("runs", pd.DataFrame([{"run_id": "old", "as_of": pd.Timestamp(D1)}]))

    # Any table's newer column reads as null too (here one the escalations table lacks).
    monkey_schema = {**store_module.STORE_SCHEMA["escalations"], "newer": "TEXT"}
    reader = Store(store_url)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(store_module.STORE_SCHEMA, "escalations", monkey_schema)
        assert reader.escalations(D1)["newer"].isna().all()
        assert reader.account("A-1").escalations["newer"].isna().all()
    assert reader.portfolio(D1)["priority"].isna().all()
    assert reader.portfolio(D1, priority="act_now").empty  # no priority to match
    assert reader.account("A-1").score["priority"] is None
    assert reader.account("A-1").flags.empty and reader.flags(D1).empty

    writer = Store(store_url)
    writer.write_batch(make_batch(D2, {"A-1": ("Ann", 50.0, 0.05)}))
    assert writer.account("A-1", as_of=D1).score["priority"] is None  # kept, still unknown
    assert writer.account("A-1").score["priority"] == "watch"
    assert writer.flags(D2)["code"].tolist() == ["rule_only_risk"]  # now stored
    assert store_module.migrate_ddl(writer._columns()) == []
