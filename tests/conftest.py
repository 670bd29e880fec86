"""Shared test fixtures and tiny-table helpers.

Fixtures:
- ``postgres_url`` (session): the test PostgreSQL server, from ``CHURN_TEST_POSTGRES_URL``
  (default ``postgresql://postgres@127.0.0.1:5432/test``). An unreachable server fails the
  test with a message saying so; it is never skipped.
- ``pg_schema``: a fresh, uniquely named schema for one test (tests run in parallel), dropped
  with everything in it afterwards. Yields the schema name.
- ``pg_schema_url``: ``postgres_url`` whose ``search_path`` is ``pg_schema``, so every table read
  or written through it lives in that schema.
- ``make_tables``: the ``make_tables`` function below, as a fixture.

Helpers (``from tests.conftest import make_tables, typed_frame``):
- ``typed_frame("invoices", [{"account_id": "A-1", "invoice_id": "I-1", ...}])``: a frame with
  every column of the contract table, typed as validated tables are (string, datetime64[ns],
  float64, boolean); columns a row leaves out are null. Dates and timestamps may be written as
  strings (``"2024-01-31"``); other values as Python values.
- ``make_tables(accounts=["A-1", "A-2"], interactions=[...], ...)``: a ``Tables``. ``accounts``
  takes ids or rows; a row's missing ``name``, ``account_manager`` and ``started_at`` default to
  ``"Client <id>"``, ``"am-1"`` and ``2020-01-01``. Other tables take rows or frames.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import pytest

from features.contract import TABLES, Tables, pandas_dtype

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
ACCOUNT_DEFAULTS: dict[str, Any] = {"account_manager": "am-1", "started_at": "2020-01-01"}


def typed_frame(table: str, rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Rows of a contract table as a frame typed exactly like a validated table."""
    given = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    given = given.reset_index(drop=True)
    unknown = set(given.columns) - set(TABLES[table].column_names)
    if unknown:
        raise KeyError(f"{table} has no columns {sorted(unknown)}")
    out = {}
    for col in TABLES[table].columns:
        values = given[col.name] if col.name in given else pd.Series([None] * len(given))
        dtype = pandas_dtype(col.kind)
        if col.kind in ("date", "timestamp"):
            values = pd.to_datetime(values, format="ISO8601").astype(dtype)
            out[col.name] = values.dt.normalize() if col.kind == "date" else values
        else:
            out[col.name] = pd.Series(list(values), dtype=dtype)
    return pd.DataFrame(out).reset_index(drop=True)


def make_tables(
    accounts: Sequence[str | Mapping[str, Any]] | pd.DataFrame,
    **tables: Sequence[Mapping[str, Any]] | pd.DataFrame,
) -> Tables:
    """A ``Tables`` from hand-written rows (see the module docstring)."""
    if not isinstance(accounts, pd.DataFrame):
        rows = [{"account_id": a} if isinstance(a, str) else dict(a) for a in accounts]
        accounts = [{"name": f"Client {r['account_id']}", **ACCOUNT_DEFAULTS, **r} for r in rows]
    typed = {name: typed_frame(name, rows) for name, rows in tables.items()}
    return Tables(accounts=typed_frame("accounts", accounts), **typed)


@pytest.fixture(name="make_tables")
def _make_tables_fixture():
    return make_tables


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's URL; fails (not skips) when the server cannot be reached."""
    import psycopg

    url = os.environ.get("CHURN_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL test server {url} is unreachable ({str(exc).strip()}); start it or "
            "set CHURN_TEST_POSTGRES_URL",
            pytrace=False,
        )
    return url


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A schema of its own for one test, dropped (with its tables) afterwards."""
    import psycopg
    from psycopg import sql

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pg_schema_url(postgres_url: str, pg_schema: str) -> str:
    """``postgres_url`` reading and writing in ``pg_schema`` (through its search_path)."""
    sep = "&" if "?" in postgres_url else "?"
    return f"{postgres_url}{sep}options=-csearch_path%3D{pg_schema}"


# -- reliability figures (tests/reliability): cleared at the start, one table at the end --------


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if _is_controller(config):
        from tests.reliability import figures

        # Before the xdist workers start, so that they inherit it.
        os.environ[figures.SESSION_VAR] = uuid.uuid4().hex[:12]


def pytest_sessionstart(session: pytest.Session) -> None:
    if _is_controller(session.config):
        from tests.reliability import figures

        figures.clear()


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    from tests.reliability import figures

    rows = figures.collected()
    if not rows or not _is_controller(config):
        return
    terminalreporter.section("reliability figures")
    for line in figures.table_lines(rows):
        terminalreporter.write_line(line)
