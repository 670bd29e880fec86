"""The score store: every scored date's scores, explanations, escalations and actions.

One interface, two backends sharing the same SQL text: a DuckDB file (the default,
``data/store.duckdb``) through DuckDB's own Python API, and PostgreSQL (``postgresql://...``)
through SQLAlchemy and psycopg. Writing is one transaction per run, whatever the number of
dates (delete each ``as_of``, insert the new rows, commit), so re-running a date replaces it
and a run killed or cut off half-way leaves the store exactly as it was.

Tables (``STORE_SCHEMA`` is the one definition):

- ``scores``       one row per (as_of, account_id): every stored field of the score record
                   (``serving.score_record``): probability, bands, health score and its
                   components, service score and its parts, segment, stage, revenue
- ``reasons``      the top explained factors per (as_of, account_id), ranked
- ``escalations``  the escalation rules that fired per (as_of, account_id)
- ``actions``      the playbook's recommended actions per (as_of, account_id), ranked
- ``flags``        what the model and the health rules disagree about per (as_of,
                   account_id), with both sides' reasons as JSON arrays (``serving.flags``)
- ``runs``         one row per stored date: run id, start and end time, accounts, model
- ``accounts``     current account facts for the dashboard and retention metrics: name,
                   manager, start, churn date and reason (names are shown, never logged)
- ``revenue_monthly``  invoiced amount per account and month (revenue retention)
- ``activity_daily``   per account and day with activity: invoiced amount, invoices and
                   interactions (lapsed clients and win-backs, ``features.lapsed``)
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from churn.errors import StoreError
from churn.files import umask_for
from features.health import DROP_COMPARE_DAYS
from serving.priority import PRIORITIES
from serving.score_record import FIELDS, ScoreField, stored

if TYPE_CHECKING:
    from serving.batch import ScoredBatch
    from serving.retention import RetentionBase

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"

_F = "DOUBLE PRECISION"
# SQL type of each kind of score field; whole numbers are stored as DOUBLE PRECISION too.
_SCORE_TYPES: Mapping[str, str] = {"float": _F, "int": _F, "text": "TEXT", "band": "TEXT"}


def scores_table(fields: Iterable[ScoreField] = FIELDS) -> dict[str, str]:
    """Columns of the ``scores`` table: the date, account and run, every stored field of the
    score record in its order, and when the row was scored."""
    return {
        "as_of": "DATE",
        "account_id": "TEXT",
        "run_id": "TEXT",
        **{f.column: _SCORE_TYPES[f.kind] for f in stored(fields)},
        "scored_at": "TIMESTAMP",
    }


# Column name -> SQL type; types spelled the same way in DuckDB and PostgreSQL.
STORE_SCHEMA: dict[str, dict[str, str]] = {
    "store_meta": {"key": "TEXT", "value": "TEXT"},
    "runs": {
        "run_id": "TEXT",
        "as_of": "DATE",
        "started_at": "TIMESTAMP",
        "finished_at": "TIMESTAMP",
        "accounts_scored": "INTEGER",
        "model_version": "TEXT",
    },
    "scores": scores_table(),
    "reasons": {
        "as_of": "DATE",
        "account_id": "TEXT",
        "rank": "INTEGER",
        "feature": "TEXT",
        "family": "TEXT",
        "value": _F,
        "impact_pts": _F,
        "sentence": "TEXT",
    },
    "escalations": {
        "as_of": "DATE",
        "account_id": "TEXT",
        "code": "TEXT",
        "rule": "TEXT",
        "action": "TEXT",
        "severity": "INTEGER",
        # evidence (serving.batch.ESCALATION_EVIDENCE): the invoice of the invoice rule, the
        # earlier stored score of the drop rule; null where it does not apply
        "invoice_id": "TEXT",
        "amount": _F,
        "days_late": _F,
        "previous_score": _F,
        "previous_as_of": "DATE",
        "score_drop": _F,
    },
    "actions": {
        "as_of": "DATE",
        "account_id": "TEXT",
        "rank": "INTEGER",
        "action_id": "TEXT",
        "title": "TEXT",
        "steps": "TEXT",
        "owner": "TEXT",
        "due": "TEXT",
        "priority": "TEXT",
        "because": "TEXT",
        "because_text": "TEXT",
        "source": "TEXT",
    },
    "flags": {
        "as_of": "DATE",
        "account_id": "TEXT",
        "code": "TEXT",
        "text": "TEXT",
        "model_reasons": "TEXT",
        "rule_reasons": "TEXT",
    },
    "accounts": {
        "account_id": "TEXT",
        "name": "TEXT",
        "account_manager": "TEXT",
        "started_at": "DATE",
        "churned_at": "DATE",
        "churn_reason": "TEXT",
    },
    "revenue_monthly": {"account_id": "TEXT", "month": "DATE", "amount": _F},
    "activity_daily": {
        "account_id": "TEXT",
        "day": "DATE",
        "invoiced": _F,
        "invoices": "INTEGER",
        "interactions": "INTEGER",
    },
}
_PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "store_meta": ("key",),
    "runs": ("run_id",),
    "scores": ("as_of", "account_id"),
    "reasons": ("as_of", "account_id", "rank"),
    "escalations": ("as_of", "account_id", "code"),
    "actions": ("as_of", "account_id", "rank"),
    "flags": ("as_of", "account_id", "code"),
    "accounts": ("account_id",),
    "revenue_monthly": ("account_id", "month"),
    "activity_daily": ("account_id", "day"),
}
_DATED_TABLES = ("scores", "reasons", "escalations", "actions", "flags", "runs")
_PG_WRITE_LOCK = 0x63687572  # an arbitrary, fixed advisory lock id for store writers
_DATE_COLUMNS = {
    name
    for cols in STORE_SCHEMA.values()
    for name, kind in cols.items()
    if kind in ("DATE", "TIMESTAMP")
}

#: The portfolio's order, most urgent first: (score column, ascending), missing values last
#: either way. ``priority`` sorts by its rank in ``serving.priority.PRIORITIES`` (act now
#: first); then the money, the model and the rules. The one definition of the order: the
#: accounts API lists in it (``PORTFOLIO_ORDER``) and the dashboard's action queue sorts in it
#: and breaks a clicked column's ties with it (``serving.dashboard.queue``).
PORTFOLIO_ORDER_BY: tuple[tuple[str, bool], ...] = (
    ("priority", True),
    ("revenue_at_risk", False),
    ("churn_probability", False),
    ("health_score", True),
    ("account_id", True),
)


def portfolio_order_sql(columns: Sequence[tuple[str, bool]] = PORTFOLIO_ORDER_BY) -> str:
    """``PORTFOLIO_ORDER_BY`` as an ORDER BY clause over the scores aliased ``s`` (valid in
    DuckDB and PostgreSQL)."""
    terms = []
    for column, ascending in columns:
        key = f"s.{column}"
        if column == "priority":
            ranks = " ".join(f"WHEN '{p}' THEN {i}" for i, p in enumerate(PRIORITIES))
            key = f"CASE s.priority {ranks} END"
        terms.append(f"{key} {'ASC' if ascending else 'DESC'} NULLS LAST")
    return ", ".join(terms)


PORTFOLIO_ORDER = portfolio_order_sql()
# A store written before priorities existed has no priority column to sort on.
_PORTFOLIO_ORDER_NO_PRIORITY = portfolio_order_sql(
    [(c, asc) for c, asc in PORTFOLIO_ORDER_BY if c != "priority"]
)
# "Change since last month" compares with the latest stored date 28 to 31 days back: the
# same date the 15-point-drop escalation compares with (features.health.DROP_COMPARE_DAYS).
PREVIOUS_MIN_DAYS, PREVIOUS_MAX_DAYS = DROP_COMPARE_DAYS


def schema_ddl(schema: Mapping[str, Mapping[str, str]] = STORE_SCHEMA) -> list[str]:
    """CREATE TABLE / INDEX statements valid in both DuckDB and PostgreSQL."""
    statements = []
    for table, columns in schema.items():
        cols = ", ".join(f"{name} {kind}" for name, kind in columns.items())
        key = ", ".join(_PRIMARY_KEYS[table])
        statements.append(f"CREATE TABLE IF NOT EXISTS {table} ({cols}, PRIMARY KEY ({key}))")
    statements.append("CREATE INDEX IF NOT EXISTS scores_account ON scores (account_id, as_of)")
    return statements


def migrate_ddl(
    existing: Mapping[str, set[str]], schema: Mapping[str, Mapping[str, str]] = STORE_SCHEMA
) -> list[str]:
    """ALTER TABLE statements adding the columns of ``schema`` that the ``existing`` tables
    (table -> its columns) lack: a store written before a field was declared gains it, null
    in the rows already stored (``churn score`` fills it for the dates it scores again).
    Tables missing altogether are created by :func:`schema_ddl`."""
    return [
        f"ALTER TABLE {table} ADD COLUMN {name} {kind}"
        for table, columns in schema.items()
        if table in existing
        for name, kind in columns.items()
        if name not in existing[table]
    ]


class _Tx(Protocol):
    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None: ...

    def insert(self, table: str, frame: pd.DataFrame) -> None: ...


class _Backend(Protocol):
    kind: str

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame: ...

    def transaction(self) -> Any: ...  # context manager yielding a _Tx

    def reading(self) -> Any: ...  # context manager sharing one connection between reads

    def exists(self) -> bool: ...

    def close(self) -> None: ...


def _to_python(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def _one_line(exc: BaseException | None) -> str:
    """A driver's message on one line (psycopg's span several, with tabs)."""
    return " ".join(str(exc).split())


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: _to_python(v) for k, v in (params or {}).items()}


class _DuckDBTx:
    """Statements of one open DuckDB transaction."""

    def __init__(self, con: Any, translate: Any) -> None:
        self.con, self.translate = con, translate

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self.con.execute(self.translate(sql), _params(params))

    def insert(self, table: str, frame: pd.DataFrame) -> None:
        self.con.register("_store_frame", frame)
        try:
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _store_frame")
        finally:
            self.con.unregister("_store_frame")


class _SQLAlchemyTx:
    """Statements of one open SQLAlchemy transaction."""

    def __init__(self, con: Any) -> None:
        self.con = con

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        import sqlalchemy as sa

        self.con.execute(sa.text(sql), _params(params))

    def insert(self, table: str, frame: pd.DataFrame) -> None:
        import sqlalchemy as sa

        if frame.empty:
            return
        target = sa.table(table, *(sa.column(c) for c in frame.columns))
        records = frame.astype(object).where(frame.notna(), None)
        self.con.execute(target.insert(), records.to_dict("records"))


class _DuckDBBackend:
    """A DuckDB file; a short-lived connection per call so other processes can get the lock."""

    kind = "duckdb"
    _PARAM = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")

    def __init__(self, path: Path, lock_timeout: float) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        # Opening a DuckDB connection costs tens of milliseconds: ``reading()`` shares one
        # between the queries of a page, per thread, and closes it at the end so a score run
        # in another process can take the write lock.
        self._local = threading.local()

    def exists(self) -> bool:
        return self.path.is_file()

    def _sql(self, sql: str) -> str:
        # The shared SQL uses :name parameters; DuckDB's are $name.
        return self._PARAM.sub(r"$\1", sql)

    def _connect(self, read_only: bool) -> Any:
        import duckdb

        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder of the score store {self.path}: {_one_line(exc)}",
                    hint="set store_url (CHURN_STORE_URL) to a writable path",
                ) from exc
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                # Another process holds the file's write lock (a score run or the server)...
                locked = "lock" in str(exc).lower()
                if not locked or time.monotonic() > deadline:
                    raise StoreError(
                        f"cannot open the score store {self.path}: {_one_line(exc)}",
                        hint="another process may be writing it; try again when it has finished"
                        if locked  # ... or the file cannot be opened at all
                        else "set store_url (CHURN_STORE_URL) to a readable and writable path",
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            except duckdb.Error as exc:
                raise StoreError(
                    f"cannot open the score store {self.path}: {_one_line(exc)}",
                    hint="the file is not a DuckDB database; point store_url at another path",
                ) from exc

    @contextmanager
    def reading(self) -> Iterator[None]:
        if getattr(self._local, "con", None) is not None:
            yield
            return
        self._local.con = self._connect(read_only=True)
        try:
            yield
        finally:
            con, self._local.con = self._local.con, None
            con.close()

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        with self.reading():
            return self._local.con.execute(self._sql(sql), _params(params)).df()

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        # The store holds client data: a new file and each write-ahead log DuckDB creates
        # while writing get the store file's permissions, 0600 for a new store.
        with umask_for(self.path), self._transaction() as tx:
            yield tx

    @contextmanager
    def _transaction(self) -> Iterator[_Tx]:
        import duckdb

        con = self._connect(read_only=False)
        try:
            con.execute("BEGIN TRANSACTION")
            yield _DuckDBTx(con, self._sql)
            con.execute("COMMIT")
        except BaseException as exc:
            with suppress(duckdb.Error):  # the failed statement may have ended it already
                con.execute("ROLLBACK")
            if isinstance(exc, duckdb.Error):
                raise StoreError(
                    f"writing the score store {self.path} failed: {_one_line(exc)}",
                    hint="nothing was changed; fix the cause and run again",
                ) from exc
            raise
        finally:
            con.close()

    def close(self) -> None:
        return None


class _SQLAlchemyBackend:
    """PostgreSQL (or any SQLAlchemy URL) through a pooled engine."""

    kind = "postgresql"

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        parsed = sa.engine.make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.display = parsed.render_as_string(hide_password=True)
        connect_args = {"connect_timeout": 5} if parsed.drivername.startswith("postgresql") else {}
        self.engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)

    def exists(self) -> bool:
        return True

    @contextmanager
    def reading(self) -> Iterator[None]:
        yield  # the engine's pool already reuses connections

    @contextmanager
    def _errors(self) -> Iterator[None]:
        import sqlalchemy as sa

        try:
            yield
        except sa.exc.OperationalError as exc:
            raise StoreError(
                f"cannot reach the score store at {self.display}: {_one_line(exc.orig)}",
                hint="check that the database server runs and store_url (CHURN_STORE_URL) is right",
            ) from exc
        except sa.exc.DBAPIError as exc:
            raise StoreError(
                f"the score store at {self.display} refused a statement: {_one_line(exc.orig)}",
                hint="check the database user's rights on its tables",
            ) from exc

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        import sqlalchemy as sa

        with self._errors(), self.engine.connect() as con:
            return pd.read_sql_query(sa.text(sql), con, params=_params(params))

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        with self._errors(), self.engine.begin() as con:
            if con.dialect.name == "postgresql":
                # One writer at a time: two runs replacing the same date would otherwise
                # collide on its primary keys.
                con.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_WRITE_LOCK})")
            yield _SQLAlchemyTx(con)

    def close(self) -> None:
        self.engine.dispose()


def _is_duckdb(url: str) -> bool:
    return url.startswith("duckdb:") or "://" not in url


def _duckdb_path(url: str) -> Path:
    if url.startswith("duckdb:///"):
        return Path(url.removeprefix("duckdb:///"))
    if url.startswith("duckdb:"):
        return Path(url.removeprefix("duckdb:"))
    return Path(url)


@dataclass
class AccountRecord:
    """Everything the store knows about one account: the latest score and its history."""

    score: dict[str, Any]
    name: str | None
    reasons: pd.DataFrame
    escalations: pd.DataFrame
    actions: pd.DataFrame
    history: pd.DataFrame
    previous: dict[str, Any] | None = None
    flags: pd.DataFrame | None = None


class Store:
    """Read and write scored dates. ``url`` is a ``.duckdb`` path or a database URL."""

    def __init__(self, url: str, *, lock_timeout: float = 30.0) -> None:
        if not url:
            raise StoreError("store_url is empty", hint="set CHURN_STORE_URL or store_url")
        self.url = url
        self._backend: _Backend
        if _is_duckdb(url):
            self._backend = _DuckDBBackend(_duckdb_path(url), lock_timeout)
            self.display = str(_duckdb_path(url))
        else:
            try:
                self._backend = _SQLAlchemyBackend(url)
            except Exception as exc:  # bad URL or unknown driver: a user's configuration error
                raise StoreError(
                    f"store_url is not a usable database URL: {type(exc).__name__}",
                    hint="use a .duckdb file path or postgresql://user@host/db",
                ) from exc
            self.display = self._backend.display
        self._schema_ready = False
        # (table, column) pairs seen in the store; column None: the table. Tables and
        # columns are only ever added (migrations), so a seen one stays: later reads skip
        # the information_schema query.
        self._seen: set[tuple[str, str | None]] = set()

    @property
    def kind(self) -> str:
        """``duckdb`` or ``postgresql``."""
        return self._backend.kind

    def close(self) -> None:
        self._backend.close()

    @contextmanager
    def reading(self) -> Iterator[Store]:
        """Share one read connection between the queries inside the block (one page)."""
        if not self._backend.exists():
            yield self
            return
        with self._backend.reading():
            yield self

    # -- schema -------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the tables when they are missing and add the columns a store written by an
        earlier release of this schema version lacks (``migrate_ddl``); refuse a store of
        another schema version."""
        if self._schema_ready:
            return
        with self._backend.transaction() as tx:
            for statement in schema_ddl():
                tx.execute(statement)
        added = migrate_ddl(self._columns())
        if added:
            with self._backend.transaction() as tx:
                for statement in added:
                    tx.execute(statement)
            log.info("score store %s: %s", self.display, "; ".join(added))
        meta = self._backend.query("SELECT value FROM store_meta WHERE key = 'schema_version'")
        if meta.empty:
            with self._backend.transaction() as tx:
                tx.execute(
                    "INSERT INTO store_meta (key, value) VALUES ('schema_version', :v)",
                    {"v": SCHEMA_VERSION},
                )
        elif str(meta["value"].iloc[0]) != SCHEMA_VERSION:
            raise StoreError(
                f"the score store {self.display} has schema version {meta['value'].iloc[0]}, "
                f"this version of the service writes {SCHEMA_VERSION}",
                hint="point store_url at a new store and run `churn score` again",
            )
        self._schema_ready = True

    def _columns(self) -> dict[str, set[str]]:
        """The columns each existing table of the store has."""
        found = self._backend.query(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema()"
        )
        out: dict[str, set[str]] = {}
        for table, column in zip(found["table_name"], found["column_name"], strict=True):
            out.setdefault(str(table).lower(), set()).add(str(column).lower())
        return out

    def _readable(self) -> bool:
        """False while nothing was ever written (reads then return empty results)."""
        if self._schema_ready:
            return True
        if not self._backend.exists():
            return False
        found = self._backend.query(
            "SELECT count(*) AS n FROM information_schema.tables "
            "WHERE table_name = 'runs' AND table_schema = current_schema()"
        )
        return int(found["n"].iloc[0]) > 0

    # -- writing ------------------------------------------------------------------------

    def write_batch(self, batch: ScoredBatch, base: RetentionBase | None = None) -> str:
        """Replace the batch's date with its rows in one transaction; return the run id.

        With ``base`` the account facts and monthly revenue used by the retention metrics are
        replaced in the same transaction.
        """
        return self.write_batches([batch], base=base)[0]

    def write_batches(
        self, batches: Sequence[ScoredBatch], base: RetentionBase | None = None
    ) -> list[str]:
        """Replace every batch's date with its rows in ONE transaction; return the run ids.

        A run that scores several dates (history back-fill) is all or nothing: killed or cut
        off half-way, it leaves every stored date exactly as it was, not some dates replaced.
        """
        self.ensure_schema()
        started = datetime.now()
        prepared = []
        for batch in batches:
            run_id = uuid.uuid4().hex
            as_of = pd.Timestamp(batch.as_of).date()
            frames = {
                "scores": batch.scores.assign(run_id=run_id, scored_at=started),
                "reasons": batch.reasons,
                "escalations": batch.escalations,
                "actions": batch.actions,
                "flags": batch.flags,
            }
            tables = {
                name: _conform(name, frame.assign(as_of=pd.Timestamp(as_of)))
                for name, frame in frames.items()
            }
            prepared.append((run_id, as_of, batch, tables))
        with self._backend.transaction() as tx:
            for run_id, as_of, batch, tables in prepared:
                for table in _DATED_TABLES:
                    tx.execute(f"DELETE FROM {table} WHERE as_of = :as_of", {"as_of": as_of})
                for table, frame in tables.items():
                    tx.insert(table, frame)
                run = pd.DataFrame(
                    [
                        {
                            "run_id": run_id,
                            "as_of": pd.Timestamp(as_of),
                            "started_at": started,
                            "finished_at": datetime.now(),
                            "accounts_scored": len(batch.scores),
                            "model_version": batch.model_version,
                        }
                    ]
                )
                tx.insert("runs", _conform("runs", run))
            if base is not None:
                tx.execute("DELETE FROM accounts")
                tx.insert("accounts", _conform("accounts", base.accounts))
                tx.execute("DELETE FROM revenue_monthly")
                tx.insert("revenue_monthly", _conform("revenue_monthly", base.revenue))
                if base.activity is not None:
                    tx.execute("DELETE FROM activity_daily")
                    tx.insert("activity_daily", _conform("activity_daily", base.activity))
        for run_id, as_of, batch, _ in prepared:
            log.info("stored %d scores for %s (run %s)", len(batch.scores), as_of, run_id)
        return [run_id for run_id, *_ in prepared]

    # -- reading ------------------------------------------------------------------------

    def _query(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        frame = self._backend.query(sql, params)
        for col in frame.columns:
            if col in _DATE_COLUMNS or col in ("previous_as_of",):
                frame[col] = pd.to_datetime(frame[col])
        return frame

    def dates(self) -> list[date]:
        """Every stored as_of, oldest first."""
        if not self._readable():
            return []
        frame = self._query("SELECT DISTINCT as_of FROM runs ORDER BY as_of")
        return [ts.date() for ts in frame["as_of"]]

    def latest_as_of(self) -> date | None:
        """The most recent stored date, or None when the store is empty."""
        stored = self.dates()
        return stored[-1] if stored else None

    def runs(self) -> pd.DataFrame:
        """One row per stored date, newest first."""
        if not self._readable():
            return _empty("runs")
        return self._query("SELECT * FROM runs ORDER BY as_of DESC")

    def previous_as_of(self, as_of: date) -> date | None:
        """The stored date "last month" is compared with: the latest one ``PREVIOUS_MIN_DAYS``
        to ``PREVIOUS_MAX_DAYS`` days before ``as_of`` (None without one: no change is shown,
        and no 15-point drop can fire)."""
        return compare_date(as_of, self.dates())

    def scores_before(self, dates: Sequence[date]) -> pd.DataFrame:
        """as_of, account_id and health_score of the stored dates (other than ``dates``) that
        scoring ``dates`` compares with: every stored date up to ``PREVIOUS_MAX_DAYS`` days
        before one of them, and the latest stored date before each (the previous scoring).
        Empty (those columns) when there are none."""
        columns = ["as_of", "account_id", "health_score"]
        days = {pd.Timestamp(d).date() for d in dates}
        stored_days = [d for d in self.dates() if d not in days]
        wanted = set()
        for day in days:
            earlier = [d for d in stored_days if d < day]
            if earlier:
                wanted.add(earlier[-1])
            span = pd.Timedelta(days=PREVIOUS_MAX_DAYS)
            wanted |= {d for d in earlier if pd.Timestamp(day) - pd.Timestamp(d) <= span}
        if not wanted:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        frames = [
            self._query(
                "SELECT as_of, account_id, health_score FROM scores WHERE as_of = :as_of",
                {"as_of": d},
            )
            for d in sorted(wanted)
        ]
        return pd.concat(frames, ignore_index=True)[columns]

    def managers(self, as_of: date | None = None) -> list[str]:
        """Account managers with scored accounts on the date (default: the latest)."""
        as_of = as_of or self.latest_as_of()
        if as_of is None:
            return []
        frame = self._query(
            "SELECT DISTINCT account_manager FROM scores WHERE as_of = :as_of "
            "AND account_manager IS NOT NULL ORDER BY account_manager",
            {"as_of": as_of},
        )
        return [str(v) for v in frame["account_manager"]]

    def portfolio(
        self,
        as_of: date | None = None,
        *,
        manager: str | None = None,
        band: str | None = None,
        segment: str | None = None,
        stage: str | None = None,
        priority: str | None = None,
        health_band: str | None = None,
    ) -> pd.DataFrame:
        """Scores of one date (default: the latest), most urgent first (``PORTFOLIO_ORDER_BY``:
        priority, then revenue at risk), with the client name, the top reason (the best-ranked
        one that raises risk) and the change since the previous month.

        ``band`` matches the health band or the model's risk band, ``health_band`` the health
        band only. On a store written before priorities existed, ``priority`` matches nothing.
        """
        as_of = as_of or self.latest_as_of()
        if as_of is None:
            return _empty("scores")
        previous = self.previous_as_of(as_of)
        has_priority = self._has("scores", "priority")
        where = ["s.as_of = :as_of"]
        # A date no score has stands in for "no previous month" (a NULL parameter has no type).
        params: dict[str, Any] = {"as_of": as_of, "previous": previous or date(1900, 1, 1)}
        if priority is not None and not has_priority:
            where.append("1 = 0")
            priority = None
        for column, value, name in (
            ("s.account_manager", manager, "manager"),
            ("s.revenue_segment", segment, "segment"),
            ("s.lifecycle_stage", stage, "stage"),
            ("s.priority", priority, "priority"),
            ("s.health_band", health_band, "health_band"),
        ):
            if value is not None:
                where.append(f"{column} = :{name}")
                params[name] = value
        if band is not None:
            where.append("(s.health_band = :band OR s.risk_band = :band)")
            params["band"] = band
        sql = f"""
            SELECT s.*, a.name,
                   p.health_score AS previous_health_score,
                   p.churn_probability AS previous_churn_probability,
                   p.as_of AS previous_as_of,
                   r.sentence AS top_reason, r.feature AS top_feature,
                   r.impact_pts AS top_impact_pts
            FROM scores s
            LEFT JOIN accounts a ON a.account_id = s.account_id
            LEFT JOIN scores p ON p.account_id = s.account_id AND p.as_of = :previous
            LEFT JOIN (
                SELECT account_id, min(rank) AS rank FROM reasons
                WHERE as_of = :as_of AND impact_pts > 0 GROUP BY account_id
            ) t ON t.account_id = s.account_id
            LEFT JOIN reasons r ON r.as_of = s.as_of AND r.account_id = s.account_id
                               AND r.rank = t.rank
            WHERE {" AND ".join(where)}
            ORDER BY {PORTFOLIO_ORDER if has_priority else _PORTFOLIO_ORDER_NO_PRIORITY}
        """
        frame = _with_columns("scores", self._query(sql, params))
        frame["health_change"] = frame["health_score"] - frame["previous_health_score"]
        frame["churn_probability_change"] = (
            frame["churn_probability"] - frame["previous_churn_probability"]
        )
        return frame

    def history(self, account_id: str) -> pd.DataFrame:
        """The account's stored scores, oldest first."""
        if not self._readable():
            return _empty("scores")
        return _with_columns(
            "scores",
            self._query(
                "SELECT * FROM scores WHERE account_id = :id ORDER BY as_of", {"id": account_id}
            ),
        )

    def account(
        self, account_id: str, *, as_of: date | None = None, manager: str | None = None
    ) -> AccountRecord | None:
        """The account's score on ``as_of`` (default: its latest), explanation, escalations,
        actions and full history; None when unknown (or not managed by ``manager``)."""
        with self.reading():  # one connection for its seven queries, not one each
            return self._account(account_id, as_of, manager)

    def _account(
        self, account_id: str, as_of: date | None, manager: str | None
    ) -> AccountRecord | None:
        history = self.history(account_id)
        if history.empty:
            return None
        if as_of is not None:
            history_upto = history[history["as_of"] <= pd.Timestamp(as_of)]
            if history_upto.empty:
                return None
        else:
            history_upto = history
        latest = history_upto.iloc[-1]
        if manager is not None and latest["account_manager"] != manager:
            return None
        day = latest["as_of"].date()
        params = {"id": account_id, "as_of": day}
        reasons = self._query(
            "SELECT * FROM reasons WHERE account_id = :id AND as_of = :as_of ORDER BY rank", params
        )
        escalations = self._query(
            "SELECT * FROM escalations WHERE account_id = :id AND as_of = :as_of ORDER BY severity",
            params,
        )
        actions = self._query(
            "SELECT * FROM actions WHERE account_id = :id AND as_of = :as_of ORDER BY rank", params
        )
        reasons, escalations, actions = (
            _with_columns(table, frame)
            for table, frame in (
                ("reasons", reasons),
                ("escalations", escalations),
                ("actions", actions),
            )
        )
        flags = (
            self._query(
                "SELECT * FROM flags WHERE account_id = :id AND as_of = :as_of ORDER BY code",
                params,
            )
            if self._has("flags")
            else _empty("flags")
        )
        names = self._query("SELECT name FROM accounts WHERE account_id = :id", {"id": account_id})
        previous_day = self.previous_as_of(day)
        previous = None
        if previous_day is not None:
            before = history[history["as_of"] == pd.Timestamp(previous_day)]
            if not before.empty:
                previous = _record(before.iloc[0])
        return AccountRecord(
            score=_record(latest),
            name=None if names.empty else names["name"].iloc[0],
            reasons=reasons,
            escalations=escalations,
            actions=actions,
            history=history_upto.reset_index(drop=True),
            previous=previous,
            flags=flags,
        )

    def reasons(self, as_of: date | None = None, *, manager: str | None = None) -> pd.DataFrame:
        """Every stored reason of a date (default: the latest), optionally one manager's."""
        return self._dated("reasons", as_of, manager)

    def escalations(self, as_of: date | None = None, *, manager: str | None = None) -> pd.DataFrame:
        """Every escalation that fired on a date (default: the latest)."""
        return self._dated("escalations", as_of, manager)

    def actions(self, as_of: date | None = None, *, manager: str | None = None) -> pd.DataFrame:
        """Every recommended action of a date (default: the latest)."""
        return self._dated("actions", as_of, manager)

    def flags(self, as_of: date | None = None, *, manager: str | None = None) -> pd.DataFrame:
        """Every flag of a date (default: the latest); reason lists as JSON arrays."""
        return self._dated("flags", as_of, manager)

    def _has(self, table: str, column: str | None = None) -> bool:
        """Whether the store has ``table`` (and its ``column``): one written before they were
        declared has not, until ``churn score`` writes to it again. Asked of the database
        until the answer is yes (see ``_seen``)."""
        if (table, column) not in self._seen:
            columns = self._columns().get(table)
            if columns is not None:
                self._seen.add((table, None))
                self._seen.update((table, c) for c in columns)
        return (table, column) in self._seen

    def _dated(self, table: str, as_of: date | None, manager: str | None) -> pd.DataFrame:
        as_of = as_of or self.latest_as_of()
        if as_of is None or (table == "flags" and not self._has(table)):
            return _empty(table)
        sql = f"SELECT t.* FROM {table} t"
        params: dict[str, Any] = {"as_of": as_of}
        if manager is not None:
            sql += (
                " JOIN scores s ON s.as_of = t.as_of AND s.account_id = t.account_id"
                " WHERE t.as_of = :as_of AND s.account_manager = :manager"
            )
            params["manager"] = manager
        else:
            sql += " WHERE t.as_of = :as_of"
        return _with_columns(table, self._query(sql + " ORDER BY t.account_id", params))

    def retention_base(self, *, manager: str | None = None) -> RetentionBase | None:
        """The account facts, monthly revenue and daily activity stored by the last full score
        run (``activity`` None in a store written before it was kept)."""
        from serving.retention import RetentionBase

        if not self._readable():
            return None
        accounts = self._query(
            "SELECT account_id, name, account_manager, started_at, churned_at, churn_reason "
            "FROM accounts ORDER BY account_id"
        )
        if accounts.empty:
            return None
        revenue = self._query("SELECT * FROM revenue_monthly ORDER BY account_id, month")
        activity = (
            self._query("SELECT * FROM activity_daily ORDER BY account_id, day")
            if self._has("activity_daily")
            else None
        )
        if activity is not None and activity.empty and not revenue.empty:
            activity = None  # the table was added to an older store: no run has filled it
        base = RetentionBase(accounts=accounts, revenue=revenue, activity=activity)
        return base if manager is None else base.for_manager(manager)


def compare_date(as_of: date, dates: Iterable[date]) -> date | None:
    """The latest of ``dates`` ``PREVIOUS_MIN_DAYS`` to ``PREVIOUS_MAX_DAYS`` days before
    ``as_of``: the date the change and the 15-point drop compare with; None without one."""
    day = pd.Timestamp(as_of)
    within = [
        d for d in dates if PREVIOUS_MIN_DAYS <= (day - pd.Timestamp(d)).days <= PREVIOUS_MAX_DAYS
    ]
    return max(within) if within else None


def _record(row: pd.Series) -> dict[str, Any]:
    """A stored row as plain Python values (NaN -> None, Timestamp -> date)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, pd.Timestamp):
            out[str(key)] = value.date() if key == "as_of" else value.to_pydatetime()
        elif value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
            out[str(key)] = None
        elif hasattr(value, "item"):
            out[str(key)] = value.item()
        else:
            out[str(key)] = value
    return out


def _with_columns(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every column of ``table`` that it lacks added as null: a store written
    before a column was declared reads like one holding nulls until ``churn score`` adds it
    (``Store.ensure_schema``)."""
    for name in STORE_SCHEMA[table]:
        if name not in frame.columns:
            frame[name] = None
    return frame


def _empty(table: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in STORE_SCHEMA[table]})


def _conform(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with exactly the table's columns (missing ones null) in schema order."""
    columns = STORE_SCHEMA[table]
    unknown = sorted(set(frame.columns) - set(columns))
    if unknown:
        raise StoreError(f"cannot store columns {unknown} in table {table}")
    out = pd.DataFrame(index=frame.index)
    for name, kind in columns.items():
        values = frame[name] if name in frame else pd.Series(None, index=frame.index, dtype=object)
        if kind in ("DATE", "TIMESTAMP"):
            values = pd.to_datetime(values)
            if kind == "DATE":
                values = values.dt.normalize()
        elif kind == _F:
            values = pd.to_numeric(values, errors="coerce").astype("float64")
        elif kind == "INTEGER":
            values = pd.to_numeric(values, errors="coerce").astype("Int64")
        else:
            values = values.astype("string")
        out[name] = values
    return out.reset_index(drop=True)


class RunCache:
    """Answers computed from a store that change only when a score run writes: keyed by the
    store, its runs (the latest finish and how many) and the question; at most ``size``
    answers, the oldest dropped first. Shared by the threads of one serving process."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._answers: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(store: Store, *question: Any) -> tuple[Any, ...]:
        """The key of ``question`` on ``store`` as its runs stand now (reads the runs)."""
        runs = store.runs()
        return (store.url, str(runs["finished_at"].max()), len(runs), *question)

    def get(self, key: tuple[Any, ...]) -> Any | None:
        with self._lock:
            return self._answers.get(key)

    def put(self, key: tuple[Any, ...], answer: Any) -> None:
        with self._lock:
            if len(self._answers) >= self.size:
                self._answers.pop(next(iter(self._answers)))
            self._answers[key] = answer
