"""Contract tables from hand-written rows, typed exactly as validated tables are.

- ``typed_frame("invoices", [{"account_id": "A-1", "invoice_id": "I-1", ...}])``: a frame with
  every column of the contract table, typed as validated tables are (string, datetime64[ns],
  float64, boolean); columns a row leaves out are null. Dates and timestamps may be written as
  strings (``"2024-01-31"``); other values as Python values.
- ``make_tables(accounts=["A-1", "A-2"], interactions=[...], ...)``: a ``Tables``. ``accounts``
  takes ids or rows; a row's missing ``name``, ``account_manager`` and ``started_at`` default to
  ``"Client <id>"``, ``"am-1"`` and ``2020-01-01``. Other tables take rows or frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from features.contract import TABLES, Tables, pandas_dtype

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
