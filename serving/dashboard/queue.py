"""The portfolio as an action queue: which accounts a page lists, in which order, as a page of
the dashboard or as a CSV file, and which accounts moved most since the last scoring.

Pure functions of the frames :meth:`serving.store.Store.portfolio` returns; the page and the
CSV export read the same query string (:class:`QueueQuery`), so the file holds exactly the
rows the filtered page lists, every page of them, in the page's order.

Order: by priority (act now, then watch, then ok), then revenue at risk (largest first), then
churn probability (highest first), then health score (lowest first), then account id: the
store's ``PORTFOLIO_ORDER_BY``, which the accounts API lists in as well. A click on a column
header sorts by that column; ties keep this order. Missing values sort last in
either direction. Rules in words: ``docs/metrics.md`` (the portfolio).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Literal
from urllib.parse import urlencode

import pandas as pd

from churn.text import csv_cell
from serving.dashboard.formatting import SERVICE_LEVELS
from serving.flags import FLAG_RULES
from serving.priority import PRIORITIES
from serving.store import PORTFOLIO_ORDER_BY

Direction = Literal["asc", "desc"]


@dataclass(frozen=True)
class SortColumn:
    """A sortable column: the frame column it sorts on and the direction of a first click."""

    column: str
    first: Direction
    label: str


#: Sortable columns by query-string key. ``_urgency`` (2 act now, 1 watch, 0 ok) and
#: ``_client`` (the name in lower case, else the id) are added by :func:`sort_frame`.
SORTS: Mapping[str, SortColumn] = {
    "client": SortColumn("_client", "asc", "Client"),
    "priority": SortColumn("_urgency", "desc", "Priority"),
    "manager": SortColumn("account_manager", "asc", "Manager"),
    "segment": SortColumn("revenue_segment", "asc", "Segment"),
    "revenue_at_risk": SortColumn("revenue_at_risk", "desc", "Revenue at risk"),
    "probability": SortColumn("churn_probability", "desc", "Churn probability"),
    "health": SortColumn("health_score", "asc", "Health"),
    "service": SortColumn("service_score", "asc", "Service score"),
}
DEFAULT_SORT = "priority"

#: The default order, which also breaks every tie of a clicked column: the store's portfolio
#: order (the accounts API's too), with the priority as its urgency.
TIE_BREAK: tuple[tuple[str, bool], ...] = tuple(  # (column, ascending)
    ("_urgency", not ascending) if column == "priority" else (column, ascending)
    for column, ascending in PORTFOLIO_ORDER_BY
)

#: Query-string keys of the filters, in the order of the page's form.
FILTER_KEYS: tuple[str, ...] = (
    "priority",
    "band",
    "segment",
    "stage",
    "service",
    "escalation",
    "flag",
    "manager",
    "q",
)
#: ``escalation=`` and ``flag=`` values besides an escalation or flag code.
ANY_ESCALATION, NO_ESCALATION = "any", "none"
ANY_FLAG, NO_FLAG = "any", "none"
#: Every flag code, in the order the pages show them.
FLAG_CODES: tuple[str, ...] = tuple(rule.code for rule in FLAG_RULES)
_URGENCY = {p: float(len(PRIORITIES) - 1 - i) for i, p in enumerate(PRIORITIES)}


@dataclass(frozen=True)
class QueueQuery:
    """The filters and sort of one portfolio request (its query string, validated).

    Unknown sort keys and directions fall back to the default order; filter values are kept
    as given (a value no account has lists no account). A manager's own key always filters to
    their accounts (``scope``) and never shows in links.
    """

    filters: Mapping[str, str | None] = field(default_factory=dict)
    sort: str = DEFAULT_SORT
    direction: Direction = "desc"
    scope: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str], scope: str | None = None) -> QueueQuery:
        filters: dict[str, str | None] = {
            k: (str(params.get(k) or "").strip()[:200] or None) for k in FILTER_KEYS
        }
        if scope is not None:
            filters["manager"] = scope
        sort = str(params.get("sort") or DEFAULT_SORT)
        if sort not in SORTS:
            sort = DEFAULT_SORT
        raw = params.get("dir")
        direction: Direction = SORTS[sort].first
        if raw == "asc":
            direction = "asc"
        elif raw == "desc":
            direction = "desc"
        return cls(filters, sort, direction, scope)

    @property
    def kept(self) -> dict[str, str]:
        """The filters a link repeats: the non-empty ones, less the manager of a manager key."""
        return {
            k: v
            for k, v in self.filters.items()
            if v and not (k == "manager" and self.scope is not None)
        }

    @property
    def is_default_sort(self) -> bool:
        return self.sort == DEFAULT_SORT and self.direction == SORTS[DEFAULT_SORT].first

    def params(self, **extra: Any) -> dict[str, Any]:
        """Query parameters repeating these filters and this sort, plus ``extra``."""
        out: dict[str, Any] = dict(self.kept)
        if not self.is_default_sort:
            out.update(sort=self.sort, dir=self.direction)
        out.update({k: v for k, v in extra.items() if v is not None})
        return out

    def url(self, path: str = "/", **extra: Any) -> str:
        query = urlencode(self.params(**extra))
        return path + ("?" + query if query else "")

    def sorted_by(self, key: str) -> QueueQuery:
        """The query a click on column ``key``'s header asks: that column in its first
        direction, or the other direction when it already sorts the list."""
        if key == self.sort:
            flipped: Direction = "asc" if self.direction == "desc" else "desc"
            return replace(self, direction=flipped)
        return replace(self, sort=key, direction=SORTS[key].first)


def with_escalations(frame: pd.DataFrame, escalations: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``escalation_codes`` (a tuple, most severe first) and ``escalations``
    (their rules, ``"; "``-joined, empty when none) per account, from the escalations of the
    same date."""
    out = frame.copy()
    if escalations.empty or frame.empty:
        out["escalation_codes"] = [() for _ in range(len(out))]
        out["escalations"] = ""
        return out
    ordered = escalations.sort_values(["account_id", "severity", "code"], kind="stable")
    codes = ordered.groupby("account_id")["code"].agg(tuple)
    rules = ordered.groupby("account_id")["rule"].agg(lambda r: "; ".join(map(str, r)))
    out["escalation_codes"] = [codes.get(a, ()) for a in out["account_id"]]
    out["escalations"] = [rules.get(a, "") for a in out["account_id"]]
    return out


def with_flags(frame: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``flag_codes`` (a tuple, in the order of ``serving.flags.FLAG_RULES``)
    and ``flags`` (the codes, ``"; "``-joined, empty when none) per account, from the stored
    flags of the same date (``Store.flags``)."""
    out = frame.copy()
    if flags.empty or frame.empty:
        out["flag_codes"] = [() for _ in range(len(out))]
        out["flags"] = ""
        return out
    rank = {code: i for i, code in enumerate(FLAG_CODES)}
    ordered = flags.assign(_rank=flags["code"].map(rank).fillna(len(rank))).sort_values(
        ["account_id", "_rank", "code"], kind="stable"
    )
    codes = ordered.groupby("account_id")["code"].agg(lambda c: tuple(dict.fromkeys(map(str, c))))
    out["flag_codes"] = [codes.get(a, ()) for a in out["account_id"]]
    out["flags"] = ["; ".join(c) for c in out["flag_codes"]]
    return out


def filter_frame(frame: pd.DataFrame, query: QueueQuery) -> pd.DataFrame:
    """The rows of ``frame`` that pass every filter of ``query``."""
    f = query.filters
    if frame.empty:
        return frame
    keep = pd.Series(True, index=frame.index)
    if f.get("priority"):
        keep &= _column(frame, "priority") == f["priority"]
    if f.get("band"):
        keep &= (_column(frame, "health_band") == f["band"]) | (
            _column(frame, "risk_band") == f["band"]
        )
    if f.get("segment"):
        keep &= _column(frame, "revenue_segment") == f["segment"]
    if f.get("stage"):
        keep &= _column(frame, "lifecycle_stage") == f["stage"]
    level = SERVICE_LEVELS.get(f.get("service") or "")
    if level is not None:
        service = pd.to_numeric(_column(frame, "service_score"), errors="coerce")
        keep &= service.between(level.low, level.high)
    if f.get("escalation"):
        codes = frame.get("escalation_codes")
        wanted = f["escalation"]
        if codes is None:
            keep &= wanted == NO_ESCALATION
        elif wanted == ANY_ESCALATION:
            keep &= codes.map(bool)
        elif wanted == NO_ESCALATION:
            keep &= ~codes.map(bool)
        else:
            keep &= codes.map(lambda c: wanted in c)
    if f.get("flag"):
        flagged = frame.get("flag_codes")
        wanted_flag = f["flag"]
        if flagged is None:
            keep &= wanted_flag == NO_FLAG
        elif wanted_flag == ANY_FLAG:
            keep &= flagged.map(bool)
        elif wanted_flag == NO_FLAG:
            keep &= ~flagged.map(bool)
        else:
            keep &= flagged.map(lambda c: wanted_flag in c)
    if f.get("manager"):
        keep &= _column(frame, "account_manager") == f["manager"]
    if f.get("q"):
        q = str(f["q"]).lower()
        name = _column(frame, "name").astype("string").str.lower().fillna("")
        ident = frame["account_id"].astype("string").str.lower()
        keep &= name.str.contains(q, regex=False) | ident.str.contains(q, regex=False)
    return frame[keep.fillna(False).astype(bool)]


def _column(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column of ``frame``, or missing values when the store has no such column."""
    if column in frame:
        return frame[column]
    return pd.Series(pd.NA, index=frame.index, dtype="object")


def sort_frame(
    frame: pd.DataFrame, sort: str = DEFAULT_SORT, direction: Direction = "desc"
) -> pd.DataFrame:
    """``frame`` in the queue's order: ``sort`` in ``direction``, ties in the default order,
    missing values last."""
    if frame.empty:
        return frame
    urgency = _column(frame, "priority").map(_URGENCY)
    name = _column(frame, "name").astype("string").str.lower()
    work = frame.assign(
        _urgency=pd.to_numeric(urgency, errors="coerce"),
        _client=name.fillna(frame["account_id"].astype("string").str.lower()),
    )
    primary = SORTS[sort].column
    keys = [(primary, direction == "asc")]
    keys += [(c, asc) for c, asc in TIE_BREAK if c != primary]
    keys = [(c, asc) for c, asc in keys if c in work]
    ordered = work.sort_values(
        [c for c, _ in keys],
        ascending=[asc for _, asc in keys],
        na_position="last",
        kind="mergesort",
    )
    return ordered.drop(columns=["_urgency", "_client"])


# -- CSV export ---------------------------------------------------------------------------------

#: Columns of the CSV export, in order: (frame column, header).
CSV_COLUMNS: tuple[tuple[str, str], ...] = (
    ("account_id", "account_id"),
    ("name", "name"),
    ("account_manager", "account_manager"),
    ("priority", "priority"),
    ("revenue_segment", "revenue_segment"),
    ("lifecycle_stage", "lifecycle_stage"),
    ("churn_probability", "churn_probability"),
    ("risk_band", "risk_band"),
    ("health_score", "health_score"),
    ("health_band", "health_band"),
    ("service_score", "service_score"),
    ("revenue_365d", "revenue_365d"),
    ("revenue_at_risk", "revenue_at_risk"),
    ("churn_probability_change", "churn_probability_change"),
    ("health_change", "health_change"),
    ("escalations", "escalations"),
    ("flags", "flags"),
    ("top_reason", "top_reason"),
)
#: Decimals the CSV export keeps: probabilities to a hundredth of a percentage point, scores
#: to a tenth of a point, money to the cent.
CSV_DECIMALS: Mapping[str, int] = {
    "churn_probability": 4,
    "churn_probability_change": 4,
    "health_score": 1,
    "health_change": 1,
    "service_score": 1,
    "revenue_365d": 2,
    "revenue_at_risk": 2,
}


def csv_text(frame: pd.DataFrame, as_of: date | None) -> str:
    """The rows of ``frame`` as CSV (UTF-8 text, a header row, one row per account, the
    scoring date in the last column); no cell starts a spreadsheet formula
    (``churn.text.csv_cell``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([header for _, header in CSV_COLUMNS] + ["as_of"])
    day = "" if as_of is None else pd.Timestamp(as_of).date().isoformat()
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for row in records:
        cells = []
        for column, _ in CSV_COLUMNS:
            value = row.get(column)
            if column in CSV_DECIMALS and isinstance(value, float):
                value = round(value, CSV_DECIMALS[column])
            cells.append(csv_cell(value))
        writer.writerow([*cells, day])
    return out.getvalue()


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def csv_filename(as_of: date | None, query: QueueQuery) -> str:
    """``portfolio-<date>[-<filters>].csv``, letters, digits, dots and dashes only."""
    parts = ["portfolio", "unscored" if as_of is None else pd.Timestamp(as_of).date().isoformat()]
    parts += [f"{k}-{v}" for k, v in query.kept.items()]
    name = _UNSAFE.sub("_", "-".join(parts)).strip("._-")[:120]
    return f"{name}.csv"


# -- movers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mover:
    """One account's change between two scoring dates."""

    account_id: str
    name: str | None
    before: float
    after: float

    @property
    def change(self) -> float:
        return self.after - self.before


def movers(
    latest: pd.DataFrame, previous: pd.DataFrame, column: str, n: int = 5, minimum: float = 0.0
) -> list[Mover]:
    """The ``n`` accounts of ``latest`` whose ``column`` changed most (in absolute value,
    more than ``minimum``) since ``previous``; accounts absent from either date are left out.
    Ties go to the larger revenue at risk, then the account id."""
    if latest.empty or previous.empty or column not in latest or column not in previous:
        return []
    before = previous.drop_duplicates("account_id").set_index("account_id")[column]
    frame = latest[["account_id", column]].copy()
    frame["name"] = _column(latest, "name")
    frame["revenue_at_risk"] = _column(latest, "revenue_at_risk")
    frame["before"] = pd.to_numeric(frame["account_id"].map(before), errors="coerce")
    frame["after"] = pd.to_numeric(frame[column], errors="coerce")
    frame["size"] = (frame["after"] - frame["before"]).abs()
    frame = frame[frame["size"] > minimum].dropna(subset=["size"])
    frame = frame.sort_values(
        ["size", "revenue_at_risk", "account_id"],
        ascending=[False, False, True],
        na_position="last",
        kind="mergesort",
    ).head(n)
    return [
        Mover(
            str(r.account_id),
            None if pd.isna(r.name) else str(r.name),
            float(r.before),
            float(r.after),
        )
        for r in frame.itertuples(index=False)
    ]
