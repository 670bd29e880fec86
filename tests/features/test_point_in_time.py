"""Point-in-time property: adding, deleting or changing records stamped on or after
``as_of`` — in any table, including moving the later dates (paid, ended, closed, due, planned
end) of earlier records among values on or after ``as_of`` — leaves every feature and score of
that snapshot unchanged. Labels look forward by design and are left out."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churn.settings import SnapshotSettings
from features.contract import (
    CHANNELS,
    CONTACT_ROLES,
    INTERACTION_STATUSES,
    SENIORITY_LEVELS,
    TICKET_SEVERITIES,
)
from features.health import load_health_config
from features.snapshots import LABELS, build_snapshots
from tests.support.signal_tables import make_tables

BASE = pd.Timestamp("2023-01-01")
HORIZON_DAYS = 420
CORE = ("A", "B", "C")
LATER_DATES = {
    "invoices": ("due_at", "paid_at"),
    "contacts": ("ended_at",),
    "projects": ("planned_end_at", "ended_at"),
    "tickets": ("closed_at",),
}
STAMPS = {
    "interactions": "occurred_at",
    "contacts": "started_at",
    "invoices": "issued_at",
    "projects": "started_at",
    "surveys": "answered_at",
    "tickets": "opened_at",
}
HEALTH = load_health_config()

maybe = st.none().__or__


def at(day: int, second: int = 0) -> pd.Timestamp:
    return BASE + timedelta(days=day, seconds=second)


def later(start: pd.Timestamp, days: int = 200) -> st.SearchStrategy:
    return st.integers(0, days).map(lambda d: start + timedelta(days=d))


@st.composite
def record(draw, table: str, accounts: tuple[str, ...], lo: int, hi: int) -> dict:
    """One record of ``table`` stamped on a day in [lo, hi]."""
    account = draw(st.sampled_from(accounts))
    day = at(draw(st.integers(lo, hi)))
    money = st.integers(0, 100_000).map(lambda c: c / 100)
    if table == "interactions":
        return dict(
            account_id=account, occurred_at=day + timedelta(seconds=draw(st.integers(0, 86399))),
            channel=draw(st.sampled_from(CHANNELS)),
            status=draw(st.sampled_from(INTERACTION_STATUSES)),
            client_seniority=draw(maybe(st.sampled_from(SENIORITY_LEVELS))),
            response_hours=draw(maybe(st.floats(0, 200))),
            sentiment=draw(maybe(st.floats(-1, 1))),
            competitor_mentioned=draw(maybe(st.booleans())),
            initiated_by=draw(maybe(st.sampled_from(["client", "firm"]))),
        )  # fmt: skip
    if table == "contacts":
        return dict(
            account_id=account, side=draw(st.sampled_from(["client", "firm"])),
            seniority=draw(st.sampled_from(SENIORITY_LEVELS)),
            role=draw(maybe(st.sampled_from(CONTACT_ROLES))), started_at=day,
            ended_at=draw(maybe(later(day))),
        )  # fmt: skip
    if table == "invoices":
        return dict(
            account_id=account, issued_at=day, due_at=draw(later(day, 60)),
            paid_at=draw(maybe(later(day, 150))), amount=draw(money),
            discount=draw(maybe(money)),
        )  # fmt: skip
    if table == "projects":
        return dict(
            account_id=account, started_at=day, planned_end_at=draw(maybe(later(day, 300))),
            ended_at=draw(maybe(later(day, 300))), budget=draw(maybe(money)),
            actual_cost=draw(maybe(money)),
            kind=draw(maybe(st.sampled_from(["strategic", "tactical"]))),
        )  # fmt: skip
    if table == "surveys":
        return dict(account_id=account, answered_at=day, score=float(draw(st.integers(0, 10))))
    opened = day + timedelta(seconds=draw(st.integers(0, 86399)))
    closing = st.integers(0, 90 * 86400).map(lambda s: opened + timedelta(seconds=s))
    return dict(
        account_id=account, opened_at=opened, closed_at=draw(maybe(closing)),
        severity=draw(st.sampled_from(TICKET_SEVERITIES)), is_complaint=draw(maybe(st.booleans())),
    )  # fmt: skip


def account(account_id: str, started: pd.Timestamp) -> dict:
    return {"account_id": account_id, "started_at": started}


@st.composite
def future(draw, as_of_day: int) -> dict:
    """Everything stamped on or after as_of: accounts starting then, churn events, records."""
    extra = draw(st.lists(st.sampled_from(["D", "E"]), unique=True))
    accounts = [account(a, at(draw(st.integers(as_of_day, HORIZON_DAYS)))) for a in extra]
    ids = (*CORE, *extra)
    out: dict = {"accounts": accounts}
    for table in STAMPS:
        out[table] = draw(st.lists(record(table, ids, as_of_day, HORIZON_DAYS), max_size=6))
    out["churn_events"] = [
        {"account_id": a, "churned_at": at(draw(st.integers(as_of_day, HORIZON_DAYS)))}
        for a in ids
        if draw(st.booleans())
    ]
    return out


@st.composite
def moved(draw, rows: list[dict], table: str, as_of: pd.Timestamp) -> list[dict]:
    """Earlier records with their later dates that fall on or after as_of moved among such
    dates (or emptied where the column may be empty: unpaid is unknown-yet too)."""
    out = []
    for row in rows:
        row = dict(row)
        for col in LATER_DATES.get(table, ()):
            value = row[col]
            if value is not None and value >= as_of:
                choice = st.integers(0, 300).map(lambda d: as_of + timedelta(days=d))
                row[col] = draw(choice if col == "due_at" else maybe(choice))
        out.append(row)
    return out


def assemble(past: dict, coming: dict, core: list[dict]) -> object:
    tables = {}
    for table in STAMPS:
        rows = [*past[table], *coming[table]]
        key = {"contacts": "contact_id", "invoices": "invoice_id", "projects": "project_id"}
        if table in key:  # unique keys by position: the earlier records keep theirs
            rows = [{**r, key[table]: f"{table[0]}{i}"} for i, r in enumerate(rows)]
        tables[table] = rows
    churn = [*past["churn_events"], *coming["churn_events"]]
    churned = {r["account_id"] for r in past["churn_events"]}
    churn = [r for r in churn if r in past["churn_events"] or r["account_id"] not in churned]
    return make_tables(accounts=[*core, *coming["accounts"]], churn_events=churn, **tables)


@st.composite
def scenario(draw):
    as_of_day = draw(st.integers(60, 360))
    as_of = at(as_of_day)
    core = [
        {**account(a, at(draw(st.integers(-400, as_of_day + 30)))),
         "contract_value": draw(maybe(st.floats(0, 1e6))),
         "renewal_at": draw(maybe(st.integers(-400, 800).map(at)))}
        for a in CORE
    ]  # fmt: skip
    past: dict = {
        table: draw(st.lists(record(table, CORE, 0, as_of_day - 1), max_size=10))
        for table in STAMPS
    }
    past["churn_events"] = [
        {"account_id": a, "churned_at": at(draw(st.integers(0, as_of_day - 1)))}
        for a in CORE
        if draw(st.integers(0, 3)) == 0
    ]
    past_moved = {t: draw(moved(rows, t, as_of)) for t, rows in past.items() if t in STAMPS}
    past_moved["churn_events"] = past["churn_events"]
    first = assemble(past, draw(future(as_of_day)), core)
    second = assemble(past_moved, draw(future(as_of_day)), core)
    mode = draw(st.sampled_from(["events", "inactivity"]))
    return as_of, first, second, mode


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario())
def test_records_on_or_after_as_of_never_change_the_snapshot(case):
    as_of, first, second, mode = case
    cfg = SnapshotSettings(label_mode=mode)
    one = build_snapshots(first, [as_of.date()], cfg, health=HEALTH).drop(columns=list(LABELS))
    two = build_snapshots(second, [as_of.date()], cfg, health=HEALTH).drop(columns=list(LABELS))
    pd.testing.assert_frame_equal(one, two)
