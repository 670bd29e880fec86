"""Read and write data sources: a folder of CSV/Parquet files, a DuckDB file, a SQL URL.

``read_source`` returns every contract table the source holds, renamed to the contract's names
through the configured mapping, and as raw as the source allows: CSV cells stay strings (nothing
is coerced silently; ``features.validate`` parses and checks them and rejects what does not
parse), Parquet, DuckDB and SQL columns keep their native types. Each frame's index is the
0-based row number in the source table, so a reject can point back at its row.

``write_source`` is the reverse, for tests and for users moving data between kinds of source.

Choices made where the contract is silent:
- a table is found by its (mapped) name, exactly or else ignoring case (file systems and
  databases disagree on case); a folder holding both ``x.csv`` and ``x.parquet`` is ambiguous
  and stops the run;
- CSV files are UTF-8 (a byte-order mark is fine); the delimiter is ``,`` unless the header
  line plainly uses ``;``, tab or ``|``; a line with the wrong number of fields stops the run
  (its cells cannot be trusted to sit under the right headers);
- a SQL schema other than the default is chosen through the URL, as PostgreSQL itself does:
  ``...?options=-csearch_path%3Dmyschema``; the same URL then reads and writes that schema.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pandas as pd

from churn.errors import ChurnError, DataContractError
from features.contract import TABLE_NAMES, TABLES, Tables

if TYPE_CHECKING:
    import sqlalchemy

    from churn.settings import TableMapping

logger = logging.getLogger(__name__)

SourceKind = Literal["folder", "duckdb", "sql"]
FOLDER_FORMATS: tuple[str, ...] = ("csv", "parquet")
_DELIMITERS = (",", ";", "\t", "|")


@dataclass
class RawSource:
    """The contract tables one source holds, before validation.

    ``frames`` maps contract table names to frames with the source's values (renamed columns,
    index = 0-based row number in the source table); ``missing`` lists contract tables the
    source lacks; ``origins`` names where each table came from (file or table name), and
    ``unmatched`` the mapped source columns that the table did not have (for error hints).
    """

    kind: SourceKind
    location: str
    frames: dict[str, pd.DataFrame]
    missing: list[str]
    origins: dict[str, str] = field(default_factory=dict)
    unmatched: dict[str, list[str]] = field(default_factory=dict)


def source_kind(source: str | Path) -> SourceKind:
    """What kind of source a location names: a URL, a ``.duckdb`` file, or else a folder."""
    text = str(source)
    if "://" in text:
        return "sql"
    if Path(text).suffix.lower() == ".duckdb":
        return "duckdb"
    return "folder"


def sqlalchemy_url(url: str) -> str:
    """The URL SQLAlchemy should get: plain PostgreSQL URLs use the psycopg (3) driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def mask_url(text: str) -> str:
    """``text`` with any password of a ``scheme://user:password@host`` URL (or a ``password=``
    query parameter) replaced by ***."""
    text = re.sub(r"(://[^/:@\s]*:)[^/\s]*@", r"\1***@", text)
    return re.sub(r"(password=)[^&\s]*", r"\1***", text, flags=re.IGNORECASE)


def read_source(source: str | Path, mapping: Mapping[str, TableMapping] | None = None) -> RawSource:
    """Read every contract table a source holds (see the module docstring for the rules).

    Raises DataContractError when the source is absent, ``accounts`` is missing, a mapping
    names something the source lacks, or a table cannot be read; ChurnError when a database
    cannot be reached.
    """
    mapping = dict(mapping or {})
    _check_mapping(mapping)
    kind = source_kind(source)
    wanted = {name: (mapping[name].table if name in mapping else None) or name for name in TABLES}
    if kind == "folder":
        location = str(source)
        frames, origins = _read_folder(Path(source), wanted)
    elif kind == "duckdb":
        location = str(source)
        frames, origins = _read_duckdb(Path(source), wanted)
    else:
        location = mask_url(str(source))
        frames, origins = _read_sql(str(source), wanted)

    unmatched: dict[str, list[str]] = {}
    for name, frame in frames.items():
        columns = mapping[name].columns if name in mapping else {}
        frames[name], unmatched[name] = _apply_columns(name, frame, columns, origins[name])
    if "accounts" not in frames:
        raise DataContractError(
            f"source {location} has no 'accounts' table (looked for {wanted['accounts']!r})",
            hint="accounts is the one required table; name it accounts.csv / accounts.parquet / "
            "table accounts, or map it in churn.yaml under mapping.accounts.table",
        )
    missing = [name for name in TABLE_NAMES if name not in frames]
    return RawSource(
        kind=kind,
        location=location,
        frames={name: frames[name] for name in TABLE_NAMES if name in frames},
        missing=missing,
        origins=origins,
        unmatched={k: v for k, v in unmatched.items() if v},
    )


def _check_mapping(mapping: Mapping[str, TableMapping]) -> None:
    for name, table_map in mapping.items():
        if name not in TABLES:
            raise DataContractError(
                f"mapping names unknown table {name!r}", hint=f"known tables: {list(TABLES)}"
            )
        known = set(TABLES[name].column_names)
        for source_col, target in table_map.columns.items():
            if target not in known:
                raise DataContractError(
                    f"mapping.{name}.columns maps {source_col!r} to {target!r}, "
                    f"which is not a column of {name}",
                    hint=f"columns of {name}: {', '.join(TABLES[name].column_names)}",
                )


def _apply_columns(
    name: str, frame: pd.DataFrame, columns: Mapping[str, str], origin: str
) -> tuple[pd.DataFrame, list[str]]:
    """Rename a frame's columns to the contract's; refuse two columns ending up with one name."""
    frame.columns = [str(c).strip() for c in frame.columns]
    _refuse_duplicates(name, list(frame.columns), origin)
    unmatched = [c for c in columns if c not in frame.columns]
    renamed = [columns.get(c, c) for c in frame.columns]
    seen: dict[str, str] = {}
    for before, after in zip(frame.columns, renamed, strict=True):
        if after in seen:
            raise DataContractError(
                f"table {name!r}: columns {seen[after]!r} and {before!r} both give column "
                f"{after!r} after mapping",
                hint=f"drop one of them from {origin} or change mapping.{name}.columns",
            )
        seen[after] = before
    frame.columns = renamed
    return frame, unmatched


def _refuse_duplicates(name: str, columns: list[str], origin: str) -> None:
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise DataContractError(
            f"table {name!r}: column {dupes[0]!r} appears more than once in {origin}",
            hint="give every column a distinct header",
        )


_T = TypeVar("_T")


def _find(names: Mapping[str, _T], wanted: str) -> _T | None:
    """The source name matching ``wanted`` exactly, else the only one matching ignoring case."""
    if wanted in names:
        return names[wanted]
    folded = [v for k, v in names.items() if k.lower() == wanted.lower()]
    return folded[0] if len(folded) == 1 else None


def _not_found(name: str, wanted: str, location: str) -> None:
    """A table the mapping names explicitly must exist: a typo must not drop a whole family."""
    if wanted != name:
        raise DataContractError(
            f"mapping.{name}.table names {wanted!r}, which {location} does not have",
            hint=f"fix mapping.{name}.table in churn.yaml, or remove it if the source lacks {name}",
        )


# --- folder --------------------------------------------------------------------------------


def _read_folder(
    folder: Path, wanted: Mapping[str, str]
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    if not folder.exists():
        raise DataContractError(
            f"source folder {folder} does not exist",
            hint="give a folder of <table>.csv / <table>.parquet files, a .duckdb file or a "
            "SQLAlchemy URL (churn demo-data --out DIR writes an example)",
        )
    if not folder.is_dir():
        raise DataContractError(
            f"source {folder} is a file, not a folder of tables",
            hint="give the folder holding accounts.csv and the other tables, a .duckdb file "
            "or a SQLAlchemy URL",
        )
    by_format: dict[str, dict[str, Path]] = {fmt: {} for fmt in FOLDER_FORMATS}
    for path in folder.iterdir():
        fmt = path.suffix.lower().lstrip(".")
        if fmt in by_format and path.is_file():
            by_format[fmt][path.stem] = path
    frames: dict[str, pd.DataFrame] = {}
    origins: dict[str, str] = {}
    for name, stem in wanted.items():
        matches = {fmt: _find(files, stem) for fmt, files in by_format.items()}
        found = {fmt: path for fmt, path in matches.items() if path is not None}
        if len(found) > 1:
            raise DataContractError(
                f"table {name!r} is in {folder} twice: "
                + " and ".join(p.name for p in found.values()),
                hint="keep one file per table (remove the stale one)",
            )
        if not found:
            _not_found(name, stem, f"folder {folder}")
            continue
        fmt, path = next(iter(found.items()))
        origins[name] = path.name
        frames[name] = _read_csv(name, path) if fmt == "csv" else _read_parquet(name, path)
    return frames, origins


def _read_csv(name: str, path: Path) -> pd.DataFrame:
    """Read a CSV with every cell as a string (empty cells as ``""``), header names as written."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header, delimiter = _csv_header(name, path)
    _refuse_duplicates(name, [h.strip() for h in header], path.name)
    convert = pacsv.ConvertOptions(
        column_types={h: pa.string() for h in header},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    bad_rows: list[tuple[int | None, int, int]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # Keep the row number and field counts only: the row's text may hold personal data.
        bad_rows.append((row.number, row.expected_columns, row.actual_columns))
        return "error"

    parse = pacsv.ParseOptions(
        delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
    )
    try:
        table = pacsv.read_csv(path, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        if bad_rows:
            # Threaded parsing does not know row numbers; one single-threaded pass does.
            bad_rows.clear()
            with contextlib.suppress(pa.ArrowInvalid):
                pacsv.read_csv(
                    path,
                    read_options=pacsv.ReadOptions(use_threads=False),
                    parse_options=parse,
                    convert_options=convert,
                )
        raise DataContractError(_csv_problem(name, path, exc, bad_rows), hint=_CSV_HINT) from exc
    except OSError as exc:
        raise DataContractError(
            f"table {name!r}: cannot read {path}: {exc.strerror or exc}", hint=_CSV_HINT
        ) from exc
    return table.to_pandas()


_CSV_HINT = (
    "save the table as comma-separated UTF-8 text with one header line and the same number "
    "of fields on every line (quote values that hold the delimiter or line breaks)"
)


def _csv_header(name: str, path: Path) -> tuple[list[str], str]:
    """The header names and the delimiter (the most frequent of , ; tab | on the header line)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            first = handle.readline()
    except UnicodeDecodeError as exc:
        raise DataContractError(
            f"table {name!r}: {path} is not UTF-8 text", hint=_CSV_HINT
        ) from exc
    except OSError as exc:
        raise DataContractError(
            f"table {name!r}: cannot read {path}: {exc.strerror or exc}", hint=_CSV_HINT
        ) from exc
    if not first.strip():
        raise DataContractError(f"table {name!r}: {path} is empty (no header line)", hint=_CSV_HINT)
    delimiter = max(_DELIMITERS, key=lambda d: (first.count(d), d == ","))
    header = next(csv.reader([first], delimiter=delimiter))
    return header, delimiter


def _csv_problem(
    name: str, path: Path, exc: Exception, bad_rows: list[tuple[int | None, int, int]]
) -> str:
    if bad_rows:
        number, expected, actual = bad_rows[0]
        where = f"line {number}" if number is not None else "a line"
        return (
            f"table {name!r}: {where} of {path.name} has {actual} fields where the header "
            f"has {expected}"
        )
    text = str(exc)
    if "UTF8" in text or "UTF-8" in text:
        return f"table {name!r}: {path} is not UTF-8 text"
    # Arrow messages may quote a row; keep only the part before it.
    return f"table {name!r}: cannot read {path}: {text.split(':')[0]}"


def _read_parquet(name: str, path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt or foreign file
        raise DataContractError(
            f"table {name!r}: cannot read {path} as Parquet ({type(exc).__name__})",
            hint="re-export the table as Parquet, or as CSV",
        ) from exc
    return frame.reset_index(drop=True)


# --- DuckDB --------------------------------------------------------------------------------


def _read_duckdb(
    path: Path, wanted: Mapping[str, str]
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    import duckdb

    if not path.is_file():
        raise DataContractError(
            f"DuckDB file {path} does not exist",
            hint="give an existing .duckdb file, a folder of tables or a SQLAlchemy URL",
        )
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise DataContractError(
            f"cannot open {path} as a DuckDB database: {str(exc).splitlines()[0]}",
            hint="is it a DuckDB file, and is another process writing to it?",
        ) from exc
    frames: dict[str, pd.DataFrame] = {}
    origins: dict[str, str] = {}
    try:
        names = {
            row[0]: row[0]
            for row in con.execute(
                "select table_name from information_schema.tables "
                "where table_catalog = current_database() and table_schema = current_schema()"
            ).fetchall()
        }
        for name, wanted_name in wanted.items():
            found = _find(names, wanted_name)
            if found is None:
                _not_found(name, wanted_name, f"DuckDB file {path}")
                continue
            origins[name] = found
            quoted = '"' + found.replace('"', '""') + '"'
            try:
                frames[name] = con.execute(f"select * from {quoted}").df()
            except duckdb.Error as exc:
                raise DataContractError(
                    f"table {name!r}: cannot read table {found!r} of {path}: "
                    f"{str(exc).splitlines()[0]}",
                    hint="check that the table or view can be queried in DuckDB",
                ) from exc
    finally:
        con.close()
    return frames, origins


# --- SQL -----------------------------------------------------------------------------------


def _engine(url: str) -> sqlalchemy.Engine:  # the import is kept local: heavy
    import sqlalchemy as sa

    try:
        return sa.create_engine(sqlalchemy_url(url))
    except Exception as exc:  # ArgumentError, NoSuchModuleError, ImportError of a driver
        raise ChurnError(
            f"cannot use {mask_url(url)} as a database URL: {mask_url(str(exc))}",
            hint="use a SQLAlchemy URL such as postgresql://user:password@host:5432/dbname",
        ) from exc


def _connection_error(url: str, exc: Exception) -> ChurnError:
    reason = getattr(exc, "orig", None) or exc
    first = mask_url(str(reason).strip().splitlines()[0] if str(reason).strip() else repr(reason))
    return ChurnError(
        f"cannot reach database {mask_url(url)}: {first}",
        hint="check the host, port, database name and credentials in the URL",
    )


def _read_sql(
    url: str, wanted: Mapping[str, str]
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    import sqlalchemy as sa

    engine = _engine(url)
    frames: dict[str, pd.DataFrame] = {}
    origins: dict[str, str] = {}
    try:
        try:
            conn = engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise _connection_error(url, exc) from exc
        with conn:
            inspector = sa.inspect(conn)
            names = {n: n for n in inspector.get_table_names() + inspector.get_view_names()}
            for name, wanted_name in wanted.items():
                found = _find(names, wanted_name)
                if found is None:
                    _not_found(name, wanted_name, f"database {mask_url(url)}")
                    continue
                origins[name] = found
                query: sa.Select[Any] = sa.select(sa.literal_column("*")).select_from(
                    sa.table(found)
                )
                try:
                    frames[name] = pd.read_sql_query(query, conn)
                except sa.exc.SQLAlchemyError as exc:
                    conn.rollback()
                    reason = mask_url(str(getattr(exc, "orig", exc)).splitlines()[0])
                    raise DataContractError(
                        f"table {name!r}: cannot read table {found!r} of {mask_url(url)}: {reason}",
                        hint="check that the table can be selected with this URL's user",
                    ) from exc
    finally:
        engine.dispose()
    return frames, origins


# --- writing -------------------------------------------------------------------------------


def write_source(
    tables: Mapping[str, pd.DataFrame] | Tables, target: str | Path, fmt: str = "csv"
) -> None:
    """Write tables to a folder (``fmt`` csv or parquet), a ``.duckdb`` file or a SQL URL.

    Each table written replaces the one of the same name (in a folder, in either format); other
    tables in the target are left alone. A SQL URL's schema comes from its search_path option.
    Dates are written as dates, timestamps as timestamps, booleans as true/false.
    """
    items = dict(iter(tables)) if isinstance(tables, Tables) else dict(tables)
    kind = source_kind(target)
    if kind == "folder":
        if fmt not in FOLDER_FORMATS:
            raise ChurnError(f"unknown folder format {fmt!r}", hint="use csv or parquet")
        _write_folder(items, Path(target), fmt)
    elif kind == "duckdb":
        _write_duckdb(items, Path(target))
    else:
        _write_sql(items, str(target))


def _date_columns(name: str, frame: pd.DataFrame) -> list[str]:
    table = TABLES.get(name)
    if table is None:
        return []
    # Only real datetimes are written as dates; raw text (say, a CSV being moved) stays text.
    return [
        c.name
        for c in table.columns
        if c.kind == "date"
        and c.name in frame
        and pd.api.types.is_datetime64_any_dtype(frame[c.name].dtype)
    ]


def _write_folder(items: Mapping[str, pd.DataFrame], folder: Path, fmt: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, frame in items.items():
            for other in FOLDER_FORMATS:
                if other != fmt:
                    (folder / f"{name}.{other}").unlink(missing_ok=True)
            path = folder / f"{name}.{fmt}"
            if fmt == "parquet":
                frame.to_parquet(path, index=False)
                continue
            out = frame.copy()
            for col in _date_columns(name, frame):
                out[col] = out[col].dt.strftime("%Y-%m-%d")
            for col in out.columns:
                if out[col].dtype == "boolean" or out[col].dtype == bool:
                    out[col] = out[col].map({True: "true", False: "false"}, na_action="ignore")
            # RFC 4180 line ends: the csv module then quotes cells holding a bare \r too.
            out.to_csv(path, index=False, lineterminator="\r\n")
    except OSError as exc:
        raise ChurnError(
            f"cannot write tables to {folder}: {exc.strerror or exc}",
            hint="check that the folder is writable and the disk has space",
        ) from exc


def _write_duckdb(items: Mapping[str, pd.DataFrame], path: Path) -> None:
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path))
    except duckdb.Error as exc:
        raise ChurnError(
            f"cannot open {path} for writing: {str(exc).splitlines()[0]}",
            hint="is another process using the file?",
        ) from exc
    try:
        con.begin()
        for name, frame in items.items():
            dates = set(_date_columns(name, frame))
            select = ", ".join(
                f'CAST("{c}" AS DATE) AS "{c}"' if c in dates else f'"{c}"' for c in frame.columns
            )
            con.register("_frame", frame)
            con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT {select} FROM _frame')
            con.unregister("_frame")
        con.commit()
    finally:
        con.close()


def _write_sql(items: Mapping[str, pd.DataFrame], url: str) -> None:
    import sqlalchemy as sa

    engine = _engine(url)
    try:
        with engine.begin() as conn:
            for name, frame in items.items():
                dtypes = {col: sa.Date() for col in _date_columns(name, frame)}
                frame.to_sql(
                    name,
                    conn,
                    if_exists="replace",
                    index=False,
                    dtype=dtypes,
                    method=_copy_rows if conn.dialect.name == "postgresql" else None,
                    chunksize=100_000,
                )
    except sa.exc.OperationalError as exc:
        raise _connection_error(url, exc) from exc
    except sa.exc.SQLAlchemyError as exc:
        reason = mask_url(str(getattr(exc, "orig", exc)).strip().splitlines()[0])
        raise ChurnError(
            f"cannot write tables to {mask_url(url)}: {reason}",
            hint="check that the schema exists and this URL's user may create tables in it",
        ) from exc
    finally:
        engine.dispose()


def _copy_rows(table: Any, conn: Any, keys: list[str], data_iter: Iterable[Sequence[Any]]) -> int:
    """pandas ``to_sql`` method for PostgreSQL: COPY instead of INSERTs (tens of times faster)."""
    from psycopg import sql

    target = (
        sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(table.name)
    )
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        target, sql.SQL(", ").join(sql.Identifier(k) for k in keys)
    )
    count = 0
    with conn.connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in data_iter:
            copy.write_row(row)
            count += 1
    return count
