"""The input data contract: the one definition of every table, column, type and rule.

Sources, validation, the demo generator, the feature engine and the docs all read this module;
nothing else spells out a table's columns.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from churn.errors import DataContractError
from churn.text import ID_MAX_LENGTH, NAME_MAX_LENGTH

Kind = Literal["str", "date", "timestamp", "float", "bool"]
#: What a free-text column holds, for the character and length rules of ``churn.text``:
#: ``account_id`` (URL-safe characters, at most 128), ``id`` (another id: printable, at most
#: 128) or ``name`` (printable, at most 200, stored normalised: NFKC, single spaces).
TextRule = Literal["account_id", "id", "name"]

SENIORITY_LEVELS: tuple[str, ...] = ("junior", "middle", "senior", "executive")
CHURN_REASONS: tuple[str, ...] = (
    "taken_for_granted",
    "service_quality",
    "competitor",
    "budget_cut",
    "key_contact_left",
    "other",
)
CHANNELS: tuple[str, ...] = ("meeting", "call", "email", "business_review", "check_in")
INTERACTION_STATUSES: tuple[str, ...] = ("held", "cancelled", "rescheduled", "no_show")
CONTACT_ROLES: tuple[str, ...] = (
    "sponsor",
    "decision_maker",
    "procurement",
    "operational",
    "technical",
    "other",
)
TICKET_SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class Column:
    """One column: its type, whether the table must have it, and the values it may take.

    ``required`` means the column must exist in the source; ``nullable`` whether a row may
    leave it empty. Optional columns are ``required=False, nullable=True``.
    """

    name: str
    kind: Kind
    required: bool = True
    nullable: bool = False
    enum: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    description: str = ""
    text: TextRule | None = None


@dataclass(frozen=True)
class Table:
    """One table of the contract.

    ``key`` is the unique key (rows repeating it are rejects); ``stamp`` the column that dates a
    record for point-in-time work (a record is known from that instant on); ``order`` lists
    pairs of columns where the first must not come after the second.
    """

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    stamp: str | None = None
    required: bool = False
    order: tuple[tuple[str, str], ...] = ()
    description: str = ""
    references_accounts: bool = True

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name} has no column {name!r}")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def date_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.kind in ("date", "timestamp")]


def _opt(name: str, kind: Kind, **kw: object) -> Column:
    return Column(name, kind, required=False, nullable=True, **kw)  # type: ignore[arg-type]


ACCOUNT_ID = Column(
    "account_id",
    "str",
    description="The firm's identifier of the client account",
    text="account_id",
)

TABLES: Mapping[str, Table] = {
    t.name: t
    for t in (
        Table(
            "accounts",
            (
                ACCOUNT_ID,
                Column(
                    "name",
                    "str",
                    description="Client name (personal data: never logged)",
                    text="name",
                ),
                Column(
                    "account_manager",
                    "str",
                    description="Account manager responsible",
                    text="name",
                ),
                _opt("industry", "str", text="name"),
                Column("started_at", "date", description="Start of the client relationship"),
                _opt("renewal_at", "date", description="Next contract renewal date"),
                _opt("contract_value", "float", min=0, description="Annual contract value"),
            ),
            key=("account_id",),
            required=True,
            references_accounts=False,
            description="One row per client account. The only required table.",
        ),
        Table(
            "churn_events",
            (
                ACCOUNT_ID,
                Column("churned_at", "date"),
                _opt("reason", "str", enum=CHURN_REASONS),
            ),
            key=("account_id",),
            stamp="churned_at",
            description="When (and why) a client left. At most one row per account.",
        ),
        Table(
            "interactions",
            (
                ACCOUNT_ID,
                Column("occurred_at", "timestamp"),
                Column("channel", "str", enum=CHANNELS),
                Column("status", "str", enum=INTERACTION_STATUSES),
                _opt("initiated_by", "str", enum=("client", "firm")),
                _opt("client_seniority", "str", enum=SENIORITY_LEVELS),
                _opt("response_hours", "float", min=0),
                _opt("sentiment", "float", min=-1, max=1),
                _opt("competitor_mentioned", "bool"),
            ),
            stamp="occurred_at",
            description="Meetings, calls, emails, reviews and check-ins from the CRM.",
        ),
        Table(
            "contacts",
            (
                ACCOUNT_ID,
                Column("contact_id", "str", text="id"),
                Column("side", "str", enum=("client", "firm")),
                Column("seniority", "str", enum=SENIORITY_LEVELS),
                _opt("role", "str", enum=CONTACT_ROLES),
                Column("started_at", "date"),
                _opt("ended_at", "date"),
            ),
            key=("account_id", "contact_id"),
            stamp="started_at",
            order=(("started_at", "ended_at"),),
            description="People on both sides of the relationship and when they were involved.",
        ),
        Table(
            "invoices",
            (
                ACCOUNT_ID,
                Column("invoice_id", "str", text="id"),
                Column("issued_at", "date"),
                Column("due_at", "date"),
                _opt("paid_at", "date", description="Empty while unpaid"),
                Column("amount", "float", min=0),
                _opt("discount", "float", min=0, description="Discount granted, in currency"),
            ),
            key=("invoice_id",),
            stamp="issued_at",
            order=(("issued_at", "due_at"), ("issued_at", "paid_at")),
            description="Billing: what was invoiced, when it was due and when it was paid.",
        ),
        Table(
            "projects",
            (
                ACCOUNT_ID,
                Column("project_id", "str", text="id"),
                Column("started_at", "date"),
                _opt("planned_end_at", "date"),
                _opt("ended_at", "date"),
                _opt("budget", "float", min=0),
                _opt("actual_cost", "float", min=0),
                _opt("kind", "str", enum=("strategic", "tactical")),
            ),
            key=("project_id",),
            stamp="started_at",
            order=(("started_at", "ended_at"), ("started_at", "planned_end_at")),
            description="Engagements delivered for the client, with budget and actual cost.",
        ),
        Table(
            "surveys",
            (
                ACCOUNT_ID,
                Column("answered_at", "date"),
                Column("score", "float", min=0, max=10),
                _opt("kind", "str", enum=("nps", "csat")),
            ),
            stamp="answered_at",
            description="Client satisfaction survey answers on a 0-10 scale.",
        ),
        Table(
            "tickets",
            (
                ACCOUNT_ID,
                Column("opened_at", "timestamp"),
                _opt("closed_at", "timestamp"),
                Column("severity", "str", enum=TICKET_SEVERITIES),
                _opt("is_complaint", "bool"),
            ),
            stamp="opened_at",
            order=(("opened_at", "closed_at"),),
            description="Service issues and complaints.",
        ),
    )
}

TABLE_NAMES: tuple[str, ...] = tuple(TABLES)

#: The text rules as the contract's table of columns states them.
TEXT_RULES: Mapping[TextRule, str] = {
    "account_id": f"URL-safe id, at most {ID_MAX_LENGTH} characters",
    "id": f"printable, at most {ID_MAX_LENGTH} characters",
    "name": f"printable, at most {NAME_MAX_LENGTH} characters, normalised",
}
#: ``rejects.csv`` quotes at most this many characters of an offending cell.
REJECT_VALUE_MAX_LENGTH = 1_000

_PANDAS_DTYPES: dict[str, str] = {
    "str": "string",
    "date": "datetime64[ns]",
    "timestamp": "datetime64[ns]",
    "float": "float64",
    "bool": "boolean",
}


def pandas_dtype(kind: Kind) -> str:
    """The pandas dtype a column of this kind has once loaded and validated."""
    return _PANDAS_DTYPES[kind]


def empty_table(name: str) -> pd.DataFrame:
    """A zero-row frame with the table's full typed schema."""
    table = TABLES[name]
    return pd.DataFrame({c.name: pd.Series(dtype=pandas_dtype(c.kind)) for c in table.columns})


@dataclass
class Tables:
    """The typed tables of one source. ``accounts`` is always present; any other table may be
    ``None``, meaning the source does not have it (features needing it are absent, not zero).
    """

    accounts: pd.DataFrame
    churn_events: pd.DataFrame | None = None
    interactions: pd.DataFrame | None = None
    contacts: pd.DataFrame | None = None
    invoices: pd.DataFrame | None = None
    projects: pd.DataFrame | None = None
    surveys: pd.DataFrame | None = None
    tickets: pd.DataFrame | None = None
    source: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    def __iter__(self) -> Iterator[tuple[str, pd.DataFrame]]:
        """The tables that are present, in contract order."""
        for name in TABLE_NAMES:
            frame = getattr(self, name)
            if frame is not None:
                yield name, frame

    def get(self, name: str) -> pd.DataFrame | None:
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}")
        return getattr(self, name)

    @property
    def present(self) -> list[str]:
        return [name for name, _ in self]

    @property
    def missing(self) -> list[str]:
        return [name for name in TABLE_NAMES if getattr(self, name) is None]

    def data_end(self) -> pd.Timestamp:
        """The last day the source recorded something: the latest record stamp
        (``Table.stamp``, or an account's start). Other dates are left out: due dates,
        planned ends and renewals may lie in the future. Label windows end on or before it."""
        stamps = []
        for name, frame in self:
            stamp = TABLES[name].stamp
            if stamp is not None and stamp in frame and len(frame):
                stamps.append(pd.to_datetime(frame[stamp]).max())
        if len(self.accounts):
            stamps.append(pd.to_datetime(self.accounts["started_at"]).max())
        stamps = [s for s in stamps if pd.notna(s)]
        if not stamps:
            raise DataContractError(
                "the source holds no dated records",
                hint="check that accounts.started_at is filled",
            )
        return pd.Timestamp(max(stamps)).tz_localize(None).normalize()


def contract_markdown() -> str:
    """The data contract as Markdown (docs/data-contract.md is generated from it)."""
    lines = [
        "# Data contract",
        "",
        "Generated from `features/contract.py` by `python -m features.contract`; do not edit.",
        "",
        "A source is a folder of `<table>.csv` / `<table>.parquet` files, a DuckDB file, or a",
        "SQLAlchemy URL. Only `accounts` is required; a missing table makes the features that",
        "need it absent (not zero). Dates are `YYYY-MM-DD`, timestamps `YYYY-MM-DD HH:MM:SS`,",
        "booleans `true`/`false`. Rows that break a rule go to the rejects file with the reason.",
        "A source whose tables or columns have other names is mapped to these in `churn.yaml`",
        "([own-data.md](own-data.md)).",
        "",
        "Ids and names follow the same rules as in the API (`churn/text.py`), and a row breaking",
        "one goes to the rejects:",
        "",
        "- no control characters and no invisible format characters (text-direction marks,",
        "  overrides and isolates, zero-width space, word joiner, byte-order mark), in any id,",
        "  name, manager or industry;",
        f"- ids at most {ID_MAX_LENGTH} characters, names at most {NAME_MAX_LENGTH};",
        "- `account_id` is URL-safe: ASCII letters and digits, then also `.` `_` `~` `:` `-`,",
        "  starting with a letter or a digit (`A-00042`, `acme.uk`, `crm:1234`). Account ids",
        "  are part of the API's and the dashboard's URLs; an id holding `/`, `?`, `#`, `%` or",
        "  a space could not be reached there, so the import refuses it rather than escaping it",
        "  in every link. Other ids (`invoice_id`, ...) never appear in a URL and may hold",
        "  those, and so may the ids sent to `POST /v1/predict`, which stores nothing;",
        "- names (`name`, `account_manager`, `industry`) are stored normalised: Unicode NFKC",
        "  (a no-break space becomes a space, full-width letters their usual form), every run of",
        "  spaces one space, no leading or trailing space. `Drew\\u00a0Hollis` is the manager",
        "  `Drew Hollis`, not a second one.",
        "",
        "CSV files written from this data (`rejects.csv`, `churn features --out x.csv`, the",
        "dashboard's portfolio export) prefix a cell starting with `=`, `+`, `-`, `@`, a tab or",
        "a carriage return with `'`, so that a spreadsheet shows it as text instead of running",
        "it as a formula; a plain negative number stays as it is. In `rejects.csv`, `value`",
        "shows control characters as escapes (`\\x1b`) and is cut after "
        f"{REJECT_VALUE_MAX_LENGTH:,} characters.",
        "",
    ]
    for table in TABLES.values():
        need = "required" if table.required else "optional"
        lines += [f"## `{table.name}` ({need})", "", table.description, ""]
        facts = []
        if table.key:
            facts.append(f"unique key: {', '.join(table.key)}")
        if table.stamp:
            facts.append(f"dated by `{table.stamp}` (known from that instant on)")
        if table.references_accounts:
            facts.append("`account_id` must exist in `accounts`")
        facts += [f"`{a}` not after `{b}`" for a, b in table.order]
        if facts:
            lines += ["Rules: " + "; ".join(facts) + ".", ""]
        lines += [
            "| column | type | required | empty allowed | allowed values | meaning |",
            "|---|---|---|---|---|---|",
        ]
        for col in table.columns:
            allowed = ""
            if col.enum:
                allowed = ", ".join(col.enum)
            elif col.min is not None or col.max is not None:
                lo = "" if col.min is None else f"{col.min:g}"
                hi = "" if col.max is None else f"{col.max:g}"
                allowed = f"{lo} .. {hi}".strip()
            elif col.text is not None:
                allowed = TEXT_RULES[col.text]
            lines.append(
                f"| `{col.name}` | {col.kind} | {'yes' if col.required else 'no'} | "
                f"{'yes' if col.nullable else 'no'} | {allowed} | {col.description} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(contract_markdown(), end="")
