"""Validate a raw source against the data contract: typed tables plus rejects.

Structural problems (a required column missing) stop the run with one line naming the table,
the column and the expected type. Row problems never stop it and never vanish: each goes to the
rejects frame (and ``rejects.csv``) with its reason, and the summary counts, per table, the input
rows, the loaded rows and the rejected rows (``loaded + rejected == rows``). If any table's
rejected share exceeds the threshold (default 1 %) the run fails, after the rejects are written.

Reject layout: one line per problem, columns ``table, row, column, value, reason``; ``row`` is the
0-based row number in the source table (in a CSV file, line ``row + 2``), ``value`` the cell as
the source wrote it. A row with several problems has several lines and counts once as rejected.

How the checks are split, and why:
- Parsing is plain vectorised pandas: pandera validates typed frames and would either fail the
  whole column or coerce silently, while a CSV arrives as strings and every cell that does not
  parse must become its own reject. Accepted spellings: dates ``YYYY-MM-DD`` (a time part is
  dropped), timestamps ISO 8601 (an offset is converted to UTC), numbers as written (finite),
  booleans true/false, t/f, yes/no, y/n, 1/0 (any case). Empty cells are null; in typed and enum
  columns the usual null spellings (NA, N/A, NaN, NULL, None) are null too. Text is stripped,
  enum values are matched ignoring case and stored in lower case.
- Column rules (required value, enum, minimum, maximum) run through a pandera schema built from
  ``features.contract`` with lazy validation, whose failure cases carry the row index.
- Cross-row and cross-table rules are plain pandas: order pairs (``paid_at`` not before
  ``issued_at``), references (``account_id`` must be a loaded account) and duplicate keys. A key
  is checked among the rows that passed every other rule, so that a broken first copy does not
  take a good later copy down with it; the first remaining occurrence is kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd

from churn.errors import ChurnError, DataContractError, RejectThresholdExceeded
from churn.files import private_file
from churn.text import (
    ACCOUNT_ID_PATTERN,
    ACCOUNT_ID_REASON,
    ID_MAX_LENGTH,
    NAME_MAX_LENGTH,
    UNPRINTABLE,
    UNPRINTABLE_REASON,
    csv_frame,
    normalise_name,
    visible,
)
from features.contract import (
    REJECT_VALUE_MAX_LENGTH,
    TABLE_NAMES,
    TABLES,
    Column,
    Table,
    Tables,
    TextRule,
    pandas_dtype,
)
from features.sources import RawSource, read_source

if TYPE_CHECKING:
    import pandera.pandas as pa
    from rich.console import RenderableType

    from churn.settings import Settings

logger = logging.getLogger(__name__)

REJECT_COLUMNS: tuple[str, ...] = ("table", "row", "column", "value", "reason")
SUMMARY_COLUMNS: tuple[str, ...] = (
    "table",
    "status",
    "rows",
    "loaded",
    "rejected",
    "ignored_columns",
)
REJECTS_FILE = "rejects.csv"

# What goes missing with each optional table (said once in the run's log).
ABSENT_WITHOUT: dict[str, str] = {
    "churn_events": "churn labels in events mode are unavailable (use label mode inactivity)",
    "interactions": "behavioural and relationship features that need it will be absent",
    "contacts": "relationship features that need it will be absent",
    "invoices": "financial features that need it will be absent",
    "projects": "behavioural features that need it will be absent",
    "surveys": "satisfaction features that need it will be absent",
    "tickets": "satisfaction features that need it will be absent",
}

_NULL_TOKENS = ["", "na", "n/a", "nan", "null", "none", "#n/a", "nat"]
_TRUE = ["true", "t", "yes", "y", "1", "1.0"]
_FALSE = ["false", "f", "no", "n", "0", "0.0"]
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}"
_REQUIRED = "empty (a value is required)"
_UNPARSABLE = {
    "date": "not a date (expected YYYY-MM-DD)",
    "timestamp": "not a timestamp (expected YYYY-MM-DD HH:MM:SS)",
    "float": "not a number",
    "bool": "not a boolean (expected true/false, yes/no or 1/0)",
}
_OUT_OF_RANGE_DATE = "outside the supported dates (1678-01-01 to 2262-04-10)"
_NOT_FINITE = "not a finite number"


@dataclass
class LoadResult:
    """A validated source: typed tables, rejects (``REJECT_COLUMNS``), per-table summary
    (``SUMMARY_COLUMNS``, one row per contract table), the masked source location and, once
    written, where the rejects file is."""

    tables: Tables
    rejects: pd.DataFrame
    summary: pd.DataFrame
    source: str
    rejects_path: Path | None = None

    @property
    def missing(self) -> list[str]:
        """Contract tables the source does not have."""
        return cast(
            list[str], self.summary.loc[self.summary["status"] == "missing", "table"].tolist()
        )

    def top_reasons(self, n: int = 10) -> pd.DataFrame:
        """The most frequent problems: table, column, reason, rows (distinct rows affected)."""
        if self.rejects.empty:
            return pd.DataFrame(columns=["table", "column", "reason", "rows"])
        counts = (
            self.rejects.groupby(["table", "column", "reason"], sort=False)["row"]
            .nunique()
            .rename("rows")
            .reset_index()
        )
        return counts.sort_values("rows", ascending=False, kind="stable").head(n)


# --- public entry points -------------------------------------------------------------------


def validate_tables(raw: RawSource, reject_threshold: float = 0.01) -> LoadResult:
    """Type and check every table of ``raw``; raise RejectThresholdExceeded when a table's
    rejected share exceeds ``reject_threshold`` and DataContractError on a structural problem."""
    result = _validate(raw)
    check_reject_threshold(result, reject_threshold)
    return result


def load_validated(source: str | Path, settings: Settings) -> LoadResult:
    """Read ``source`` with the configured mapping, validate it, write the rejects file to
    ``settings.rejects_dir``, log each missing table once, then apply the reject threshold."""
    from churn.console import plain, step

    with step(f"reading {plain(_label(source))}"):
        raw = read_source(source, settings.mapping)
    with step(f"validating {len(raw.frames)} tables"):
        result = _validate(raw)
    result.rejects_path = write_rejects(result.rejects, Path(settings.rejects_dir))
    for name in result.missing:
        logger.warning("table %r is missing: %s", name, ABSENT_WITHOUT[name])
    for row in result.summary.itertuples():
        if row.status == "present":
            logger.info(
                "table %r: %d rows, %d loaded, %d rejected",
                row.table,
                row.rows,
                row.loaded,
                row.rejected,
            )
    check_reject_threshold(result, settings.reject_threshold)
    return result


def check_reject_threshold(result: LoadResult, reject_threshold: float) -> None:
    """Raise RejectThresholdExceeded naming every table whose rejected share is above it."""
    present = result.summary[(result.summary["status"] == "present") & (result.summary["rows"] > 0)]
    share = present["rejected"] / present["rows"]
    over = present.assign(share=share)[share > reject_threshold]
    if over.empty:
        return
    parts = [
        f"table {r.table!r} has {r.share:.2%} of its rows rejected ({r.rejected} of {r.rows})"
        for r in over.itertuples()
    ]
    where = f"see {result.rejects_path} for the reasons; " if result.rejects_path else ""
    raise RejectThresholdExceeded(
        "; ".join(parts) + f", above the reject threshold of {reject_threshold:.2%}",
        hint=f"{where}fix the source, or raise the threshold with CHURN_REJECT_THRESHOLD "
        "(reject_threshold in churn.yaml)",
    )


def write_rejects(rejects: pd.DataFrame, rejects_dir: Path) -> Path:
    """Write ``rejects.csv`` (header only when there are none, so no stale file misleads).

    The file quotes client data: it is created with mode 0600, and a cell a spreadsheet would
    run as a formula is written with a leading apostrophe (``churn.text.csv_cell``)."""
    path = rejects_dir / REJECTS_FILE
    tmp = path.with_name(f".{REJECTS_FILE}.{os.getpid()}.tmp")
    try:
        rejects_dir.mkdir(parents=True, exist_ok=True)
        with private_file(tmp) as handle:
            csv_frame(rejects).to_csv(handle, index=False)
        tmp.replace(path)
    except OSError as exc:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        raise ChurnError(
            f"cannot write rejects to {path}: {exc.strerror or exc}",
            hint="free disk space or point CHURN_REJECTS_DIR (rejects_dir) at a writable folder",
        ) from exc
    return path


def render_summary(result: LoadResult) -> RenderableType:
    """A terminal view of the load: per-table counts, missing tables, the top reject reasons."""
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    from churn.console import plain

    counts = RichTable(title=f"Source {plain(result.source)}", title_justify="left")
    for header in ("table", "rows", "loaded", "rejected", "rejected %", "note"):
        counts.add_column(header, justify="left" if header in ("table", "note") else "right")
    for row in result.summary.itertuples():
        if row.status == "missing":
            counts.add_row(
                row.table,
                "-",
                "-",
                "-",
                "-",
                Text(f"missing: {ABSENT_WITHOUT[row.table]}", "yellow"),
            )
            continue
        share = f"{row.rejected / row.rows:.2%}" if row.rows else "-"
        # Text, not markup: column names come from the source.
        note = Text(f"ignored columns: {row.ignored_columns}" if row.ignored_columns else "")
        style = "red" if row.rejected else ""
        counts.add_row(
            row.table,
            f"{row.rows:,}",
            f"{row.loaded:,}",
            Text(f"{row.rejected:,}", style),
            share,
            note,
        )
    parts: list[RenderableType] = [counts]
    top = result.top_reasons()
    if not top.empty:
        reasons = RichTable(title="Top reject reasons", title_justify="left")
        for header in ("table", "column", "reason", "rows"):
            reasons.add_column(header, justify="right" if header == "rows" else "left")
        for r in top.itertuples():
            reasons.add_row(r.table, r.column, r.reason, f"{r.rows:,}")
        parts.append(reasons)
    if result.rejects_path is not None:
        total = int(result.summary["rejected"].sum())
        parts.append(Text(f"{total:,} rejected rows; reasons in {result.rejects_path}"))
    return Group(*parts)


def _label(source: str | Path) -> str:
    from features.sources import mask_url

    return mask_url(str(source))


# --- validation ----------------------------------------------------------------------------


def _validate(raw: RawSource) -> LoadResult:
    """Validate every table (accounts first: the others reference its loaded rows)."""
    typed: dict[str, pd.DataFrame] = {}
    rejects: list[pd.DataFrame] = []
    summary: list[dict[str, object]] = []
    known_ids: pd.Series | None = None
    loaded_ids: pd.Series | None = None
    for name in TABLE_NAMES:
        frame = raw.frames.get(name)
        if frame is None:
            summary.append(
                dict(table=name, status="missing", rows=0, loaded=0, rejected=0, ignored_columns="")
            )
            continue
        table = TABLES[name]
        _check_structure(table, frame, raw)
        # Column names come from the source: shown with control characters escaped.
        ignored = [visible(str(c)) for c in frame.columns if c not in table.column_names]
        if ignored:
            logger.info("table %r: ignoring columns not in the contract: %s", name, ignored)
        frame = frame.reset_index(drop=True)
        parsed, problems = _parse_table(table, frame)
        problems += _column_rules(table, parsed, problems)
        problems += _order_rules(table, parsed)
        if table.references_accounts and known_ids is not None and loaded_ids is not None:
            problems += _reference_rule(parsed, known_ids, loaded_ids)
        problems += _key_rule(table, parsed, problems)
        table_rejects = _collect(name, frame, problems)
        bad = table_rejects["row"].unique()
        loaded = parsed.drop(index=bad).reset_index(drop=True)
        if name == "accounts":
            known_ids = parsed["account_id"].dropna()
            loaded_ids = loaded["account_id"]
        typed[name] = loaded
        rejects.append(table_rejects)
        summary.append(
            dict(
                table=name,
                status="present",
                rows=len(frame),
                loaded=len(loaded),
                rejected=len(bad),
                ignored_columns=", ".join(ignored),
            )
        )
    tables = Tables(**typed, source=raw.location, meta={"kind": raw.kind, "origins": raw.origins})
    all_rejects = pd.concat(rejects, ignore_index=True) if rejects else _empty_rejects()
    return LoadResult(
        tables=tables,
        rejects=all_rejects,
        summary=pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS)),
        source=raw.location,
    )


def _check_structure(table: Table, frame: pd.DataFrame, raw: RawSource) -> None:
    """Stop on the first required column the table lacks: one line, with a hint to fix it."""
    for col in table.columns:
        if col.required and col.name not in frame.columns:
            origin = raw.origins.get(table.name, table.name)
            hint = f"{origin} has columns: {', '.join(map(str, frame.columns)) or '(none)'}"
            close = [c for c in frame.columns if str(c).lower() == col.name]
            if close:
                hint = f"{origin} has {close[0]!r}; rename it or map it to {col.name!r}"
            mapped = raw.unmatched.get(table.name, [])
            if mapped:
                hint += f"; mapping.{table.name}.columns names {mapped} which {origin} lacks"
            else:
                hint += f"; map a source column to it under mapping.{table.name}.columns"
            raise DataContractError(
                f"table {table.name!r} lacks required column {col.name!r} (expected {col.kind})",
                hint=hint,
            )


# A problem is (row positions, column, reason); ``_collect`` turns them into reject lines.
Problem = tuple[np.ndarray, str, str]


def _parse_table(table: Table, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[Problem]]:
    """The frame typed per the contract (absent optional columns all null) and parse problems."""
    columns: dict[str, pd.Series] = {}
    problems: list[Problem] = []
    for col in table.columns:
        if col.name not in frame.columns:
            columns[col.name] = pd.Series(index=frame.index, dtype=pandas_dtype(col.kind))
            continue
        series, bad = _parse_column(col, frame[col.name])
        columns[col.name] = series
        for mask, reason in bad:
            if mask.any():
                problems.append((np.flatnonzero(mask), col.name, reason))
    return pd.DataFrame(columns, index=frame.index), problems


def _text(raw: pd.Series) -> pd.Series:
    """Cells as stripped strings (StringDtype), empty as <NA>; whole-number floats lose '.0'."""
    if pd.api.types.is_float_dtype(raw.dtype):
        values = raw.to_numpy(dtype="float64", na_value=np.nan)
        finite = values[np.isfinite(values)]
        whole = np.all(finite == np.round(finite)) and np.all(np.abs(finite) < 2**53)
        if len(finite) and whole and not np.isinf(values).any():
            raw = raw.astype("Int64")
    elif pd.api.types.is_bool_dtype(raw.dtype):
        raw = raw.map({True: "true", False: "false"}, na_action="ignore")
    text = raw.astype("string").str.strip()
    return text.mask(text == "")


def _nulls_to_na(text: pd.Series) -> pd.Series:
    return text.mask(text.str.lower().isin(_NULL_TOKENS))


def _parse_column(col: Column, raw: pd.Series) -> tuple[pd.Series, list[tuple[np.ndarray, str]]]:
    """One column typed per its kind, with the masks of cells that did not parse and why."""
    if col.kind == "str":
        text = _text(raw)
        if col.enum:
            text = _nulls_to_na(text).str.lower()
        if col.text is not None:
            return _check_text(col.text, text)
        return text, []
    if col.kind in ("date", "timestamp"):
        return _parse_datetime(col, raw)
    if col.kind == "float":
        return _parse_float(raw)
    return _parse_bool(raw)


def _check_text(rule: TextRule, text: pd.Series) -> tuple[pd.Series, list[tuple[np.ndarray, str]]]:
    """Ids and names under the rules the API applies too (``churn.text``): no control or
    text-direction characters, a maximum length, account ids URL-safe; names normalised
    (NFKC, single spaces) before anything compares them. A cell breaking a rule becomes null
    with that rule as its reason (one reason per cell, the first rule it breaks)."""
    present = text.notna().to_numpy()
    unprintable = present & text.str.contains(UNPRINTABLE, regex=True).fillna(False).to_numpy(
        dtype=bool
    )
    if rule == "name":
        text = text.map(normalise_name, na_action="ignore").astype("string")
        text = text.mask(text == "")
        limit = NAME_MAX_LENGTH
    else:
        limit = ID_MAX_LENGTH
    too_long = ~unprintable & (text.str.len() > limit).fillna(False).to_numpy(dtype=bool)
    bad = unprintable | too_long
    problems = [(unprintable, UNPRINTABLE_REASON), (too_long, f"longer than {limit} characters")]
    if rule == "account_id":
        matches = text.str.fullmatch(ACCOUNT_ID_PATTERN).fillna(True).to_numpy(dtype=bool)
        not_url_safe = ~bad & ~matches
        bad |= not_url_safe
        problems.append((not_url_safe, ACCOUNT_ID_REASON))
    return text.mask(bad), problems


def _parse_datetime(col: Column, raw: pd.Series) -> tuple[pd.Series, list[tuple[np.ndarray, str]]]:
    unparsable = np.zeros(len(raw), dtype=bool)
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        parsed = raw.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(raw.dtype):
        parsed = raw
    elif pd.api.types.is_numeric_dtype(raw.dtype) or pd.api.types.is_bool_dtype(raw.dtype):
        # Numbers are not dates (epoch seconds or spreadsheet serials would be guesses).
        unparsable = raw.notna().to_numpy()
        parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
    else:
        text = _nulls_to_na(_text(raw))
        iso = text.str.match(_ISO_DATE).fillna(False).to_numpy(dtype=bool)
        candidate = text.where(iso)
        parsed = pd.to_datetime(candidate, format="ISO8601", utc=True, errors="coerce")
        parsed = parsed.dt.tz_localize(None)
        unparsable = text.notna().to_numpy() & parsed.isna().to_numpy()
    # datetime64[ns] spans 1677-09-21 to 2262-04-11; anything outside would overflow.
    lo, hi = pd.Timestamp("1678-01-01"), pd.Timestamp("2262-04-10")
    outside = (parsed.notna() & ((parsed < lo) | (parsed > hi))).to_numpy()
    parsed = parsed.mask(outside).astype("datetime64[ns]")
    if col.kind == "date":
        parsed = parsed.dt.normalize()
    return parsed, [(unparsable, _UNPARSABLE[col.kind]), (outside, _OUT_OF_RANGE_DATE)]


def _parse_float(raw: pd.Series) -> tuple[pd.Series, list[tuple[np.ndarray, str]]]:
    unparsable = np.zeros(len(raw), dtype=bool)
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        values = raw.to_numpy(dtype="float64", na_value=np.nan)
    else:
        text = _nulls_to_na(_text(raw))
        numbers = pd.to_numeric(text, errors="coerce")
        values = pd.Series(numbers).to_numpy(dtype="float64", na_value=np.nan)
        unparsable = text.notna().to_numpy() & np.isnan(values)
    not_finite = np.isinf(values)
    values = np.where(not_finite, np.nan, values)
    series = pd.Series(values, index=raw.index, dtype="float64")
    return series, [(unparsable, _UNPARSABLE["float"]), (not_finite, _NOT_FINITE)]


def _parse_bool(raw: pd.Series) -> tuple[pd.Series, list[tuple[np.ndarray, str]]]:
    text = _nulls_to_na(_text(raw)).str.lower()
    is_true = text.isin(_TRUE).fillna(False).to_numpy(dtype=bool)
    is_false = text.isin(_FALSE).fillna(False).to_numpy(dtype=bool)
    unparsable = text.notna().to_numpy() & ~is_true & ~is_false
    values = pd.arrays.BooleanArray(is_true, ~(is_true | is_false))
    return pd.Series(values, index=raw.index), [(unparsable, _UNPARSABLE["bool"])]


@cache
def _schema(name: str) -> tuple[pa.DataFrameSchema, dict[tuple[str, int], str]]:
    """The pandera schema of a contract table and, per (column, check number), its reason."""
    import pandera.pandas as pa

    columns = {}
    reasons: dict[tuple[str, int], str] = {}
    for col in TABLES[name].columns:
        checks: list[pa.Check] = []
        if col.enum:
            checks.append(pa.Check.isin(list(col.enum)))
            reasons[(col.name, len(checks) - 1)] = "not one of: " + ", ".join(col.enum)
        if col.min is not None:
            checks.append(pa.Check.ge(col.min))
            reasons[(col.name, len(checks) - 1)] = f"below the minimum {col.min:g}"
        if col.max is not None:
            checks.append(pa.Check.le(col.max))
            reasons[(col.name, len(checks) - 1)] = f"above the maximum {col.max:g}"
        columns[col.name] = pa.Column(pandas_dtype(col.kind), checks, nullable=col.nullable)
    return pa.DataFrameSchema(columns, strict=True, ordered=True), reasons


def _column_rules(table: Table, parsed: pd.DataFrame, earlier: list[Problem]) -> list[Problem]:
    """Required values, enums and ranges through pandera (cells that did not parse excluded)."""
    import pandera.pandas as pa

    schema, reasons = _schema(table.name)
    try:
        schema.validate(parsed, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return []
    if cases["index"].isna().any():
        # A typed frame that does not match its own schema is a bug here, not bad input.
        raise RuntimeError(f"typed table {table.name!r} breaks its schema: {cases.head(3)}")
    unparsed: dict[str, np.ndarray] = {}
    for rows, column, _ in earlier:
        unparsed.setdefault(column, np.zeros(len(parsed), dtype=bool))[rows] = True
    problems: list[Problem] = []
    for (column, check, number), group in cases.groupby(
        ["column", "check", "check_number"], dropna=False, sort=False
    ):
        rows = group["index"].to_numpy(dtype="int64")
        if check == "not_nullable":
            reason = _REQUIRED
            if column in unparsed:
                rows = rows[~unparsed[column][rows]]
        else:
            reason = reasons[(column, int(number))]
        if len(rows):
            problems.append((rows, str(column), reason))
    return problems


def _order_rules(table: Table, parsed: pd.DataFrame) -> list[Problem]:
    problems: list[Problem] = []
    for first, second in table.order:
        wrong = (parsed[first] > parsed[second]).fillna(False).to_numpy(dtype=bool)
        if wrong.any():
            problems.append((np.flatnonzero(wrong), second, f"{second} is before {first}"))
    return problems


def _reference_rule(
    parsed: pd.DataFrame, known_ids: pd.Series, loaded_ids: pd.Series
) -> list[Problem]:
    ids = parsed["account_id"]
    unknown = (ids.notna() & ~ids.isin(loaded_ids)).to_numpy(dtype=bool)
    if not unknown.any():
        return []
    was_rejected = ids.isin(known_ids).to_numpy(dtype=bool)
    problems: list[Problem] = []
    for mask, reason in (
        (unknown & ~was_rejected, "account_id not in accounts"),
        (unknown & was_rejected, "account_id's row in accounts was rejected"),
    ):
        if mask.any():
            problems.append((np.flatnonzero(mask), "account_id", reason))
    return problems


def _key_rule(table: Table, parsed: pd.DataFrame, earlier: Sequence[Problem]) -> list[Problem]:
    if not table.key:
        return []
    bad = np.zeros(len(parsed), dtype=bool)
    for rows, _, _ in earlier:
        bad[rows] = True
    survivors = parsed.loc[~bad, list(table.key)]
    repeated = survivors.index[survivors.duplicated(keep="first")].to_numpy(dtype="int64")
    if not len(repeated):
        return []
    key = ",".join(table.key)
    return [(repeated, key, f"duplicate key ({key}); the first occurrence was kept")]


def _collect(name: str, frame: pd.DataFrame, problems: list[Problem]) -> pd.DataFrame:
    """Reject lines for one table, with each cell's value as the source wrote it."""
    if not problems:
        return _empty_rejects()
    parts = []
    for rows, column, reason in problems:
        cells = [c for c in column.split(",") if c in frame.columns]
        if cells:
            shown = frame[cells].iloc[rows].astype("string").fillna("")
            value = shown[cells[0]] if len(cells) == 1 else shown.agg(",".join, axis=1)
            values = np.array([_shown(v) for v in value.to_numpy(dtype=object)], dtype=object)
        else:
            values = np.full(len(rows), "", dtype=object)
        parts.append(
            pd.DataFrame({"row": rows, "column": column, "value": values, "reason": reason})
        )
    out = pd.concat(parts, ignore_index=True)
    order = {c: i for i, c in enumerate(TABLES[name].column_names)}
    out["_order"] = out["column"].str.split(",").str[0].map(order)
    out = out.sort_values(["row", "_order"], kind="stable").drop(columns="_order")
    out.insert(0, "table", name)
    return _typed_rejects(out.reset_index(drop=True))


def _shown(value: str) -> str:
    """A cell as a reject line quotes it: control characters as escapes (the file is read on
    terminals and in editors), and no more than ``REJECT_VALUE_MAX_LENGTH`` characters."""
    value = visible(value, keep_newlines=False)
    if len(value) <= REJECT_VALUE_MAX_LENGTH:
        return value
    cut = len(value) - REJECT_VALUE_MAX_LENGTH
    return f"{value[:REJECT_VALUE_MAX_LENGTH]}... ({cut:,} more characters)"


def _empty_rejects() -> pd.DataFrame:
    return _typed_rejects(pd.DataFrame(columns=list(REJECT_COLUMNS)))


def _typed_rejects(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(
        {
            "table": "string",
            "row": "int64",
            "column": "string",
            "value": "string",
            "reason": "string",
        }
    )[list(REJECT_COLUMNS)]
