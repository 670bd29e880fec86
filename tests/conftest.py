"""Shared test fixtures; the helpers they build on are in ``tests/support``.

Fixtures:
- ``demo_source`` (session): the small demo source (300 accounts over three years, seed 3:
  enough for the default split's test, validation and six training months), generated once.
  Read-only: a test that changes its files copies it first.
- ``tiny_bundle`` (session): a tiny trained model bundle, version ``test-v1``, written through
  training's own export (``tests.support.bundle_factory``). Read-only.
- ``tiny_models`` (session): a ``models/`` folder whose ``champion`` is the tiny model ``v1``.
  Read-only: a test that promotes or adds versions builds its own with ``make_models_dir``.
- ``postgres_url`` (session): the test PostgreSQL server, from ``CHURN_TEST_POSTGRES_URL``
  (default ``postgresql://postgres@127.0.0.1:5432/test``). An unreachable server fails the
  test with a message saying so; it is never skipped.
- ``pg_schema``: a fresh, uniquely named schema for one test (tests run in parallel), dropped
  with everything in it afterwards. Yields the schema name.
- ``pg_schema_url``: ``postgres_url`` whose ``search_path`` is ``pg_schema``, so every table read
  or written through it lives in that schema.
- ``make_tables``: ``tests.support.tables.make_tables``, as a fixture.

Session fixtures are built once per pytest process (once per xdist worker).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.tables import make_tables

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEMO_SOURCE_SIZE = {"accounts": 300, "seed": 3, "years": 3}


@pytest.fixture(name="make_tables")
def _make_tables_fixture():
    return make_tables


@pytest.fixture(scope="session")
def demo_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small demo source, generated once per session; read-only (copy it to change it)."""
    from features.demo import generate_demo

    folder = tmp_path_factory.mktemp("demo-source")
    generate_demo(folder, **DEMO_SOURCE_SIZE)
    return folder


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained model bundle (version ``test-v1``), written once; read-only."""
    from tests.support.bundle_factory import make_bundle

    return make_bundle(tmp_path_factory.mktemp("tiny-bundle") / "test-v1")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder whose champion is the tiny model ``v1``, written once; read-only."""
    from tests.support.bundle_factory import make_models_dir

    return make_models_dir(tmp_path_factory.mktemp("tiny-models"), "v1")


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
