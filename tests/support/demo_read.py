"""The demo's CSV files read back as typed tables, with the contract-breaking rows counted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.contract import TABLE_NAMES, TABLES, Tables, pandas_dtype


@dataclass
class DemoRead:
    """Typed clean tables, the contract-breaking rows set aside per table, raw row counts."""

    tables: Tables
    messy: dict[str, int]
    rows: dict[str, int]


def _messy_mask(name: str, raw: pd.DataFrame, known_ids: pd.Series | None) -> pd.Series:
    """Rows that break the contract: unparsable dates, out-of-range numbers, unknown accounts,
    repeated keys (the first occurrence stays)."""
    table = TABLES[name]
    bad = pd.Series(False, index=raw.index)
    for col in table.columns:
        text = raw[col.name]
        filled = text != ""
        if col.kind in ("date", "timestamp"):
            fmt = "%Y-%m-%d" if col.kind == "date" else "%Y-%m-%d %H:%M:%S"
            parsed = pd.to_datetime(text.where(filled), format=fmt, errors="coerce")
            bad |= filled & parsed.isna()
        elif col.kind == "float":
            number = pd.to_numeric(text.where(filled), errors="coerce")
            bad |= filled & number.isna()
            if col.min is not None:
                bad |= number < col.min
            if col.max is not None:
                bad |= number > col.max
        if col.required and not col.nullable:
            bad |= ~filled
    if known_ids is not None and table.references_accounts:
        bad |= ~raw["account_id"].isin(known_ids)
    if table.key:
        repeated = raw[~bad].duplicated(list(table.key), keep="first")
        bad |= repeated.reindex(raw.index, fill_value=False)
    return bad


def _typed(name: str, raw: pd.DataFrame) -> pd.DataFrame:
    """CSV text as validated tables are typed (string, datetime64[ns], float64, boolean)."""
    out = {}
    for col in TABLES[name].columns:
        text = raw[col.name].where(raw[col.name] != "")
        dtype = pandas_dtype(col.kind)
        if col.kind in ("date", "timestamp"):
            out[col.name] = pd.to_datetime(text, format="ISO8601").astype(dtype)
        elif col.kind == "float":
            out[col.name] = pd.to_numeric(text).astype(dtype)
        elif col.kind == "bool":
            out[col.name] = text.map({"true": True, "false": False}).astype(dtype)
        else:
            out[col.name] = text.astype(dtype)
    return pd.DataFrame(out).reset_index(drop=True)


def read_demo(folder: Path) -> DemoRead:
    """The demo CSVs as typed ``Tables`` without their contract-breaking rows."""
    frames, messy, rows = {}, {}, {}
    known: pd.Series | None = None
    for name in TABLE_NAMES:
        raw = pd.read_csv(folder / f"{name}.csv", dtype=str, keep_default_na=False)
        assert list(raw.columns) == TABLES[name].column_names, name
        bad = _messy_mask(name, raw, known)
        frames[name] = _typed(name, raw[~bad])
        messy[name] = int(bad.sum())
        rows[name] = len(raw)
        if name == "accounts":
            known = frames[name]["account_id"]
    return DemoRead(Tables(**frames, source=str(folder)), messy, rows)
