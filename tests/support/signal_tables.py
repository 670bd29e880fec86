"""Tables for the feature-engine tests: one account ``A`` by default, and dense random tables.

- ``make_tables(interactions=[...], ...)``: ``Tables`` from row dicts (or dicts of columns);
  accounts default to one account ``A`` started in 2020.
- ``random_tables(n_accounts, seed)``: dense random tables over every contract table (not
  realistic: every branch of the engine exercised).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import TABLES, Tables, empty_table, pandas_dtype


def typed(name: str, rows: list[dict] | dict | None) -> pd.DataFrame:
    """A contract table from row dicts (or a dict of columns), every column typed."""
    if rows is None or (isinstance(rows, list) and not rows):
        return empty_table(name)
    frame = pd.DataFrame(rows)
    for col in TABLES[name].columns:
        if col.name not in frame:
            frame[col.name] = None
        frame[col.name] = frame[col.name].astype(pandas_dtype(col.kind))
    return frame[TABLES[name].column_names]


def make_tables(accounts: list[dict] | None = None, **tables: list[dict] | dict | None) -> Tables:
    """Tables from row dicts; accounts default to one account A started in 2020."""
    if accounts is None:
        accounts = [{"account_id": "A", "started_at": "2020-01-01"}]
    accounts = [
        {"name": "Client", "account_manager": "Mia", **row} for row in accounts
    ]  # names are never read by the engine
    return Tables(
        accounts=typed("accounts", accounts),
        **{name: typed(name, rows) for name, rows in tables.items()},
    )


def random_tables(n_accounts: int, seed: int, years: int = 3) -> Tables:
    """Dense random tables over every contract table (not realistic: every branch exercised)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2020-01-01")
    ids = np.array([f"A-{i}" for i in range(n_accounts)])

    def days(k: int) -> pd.DatetimeIndex:
        return start + pd.to_timedelta(rng.integers(0, years * 365, k), "D")

    def pick(k: int) -> np.ndarray:
        return rng.choice(ids, k)

    def secs(k: int) -> pd.TimedeltaIndex:
        return pd.to_timedelta(rng.integers(0, 86400, k), "s")

    n = n_accounts
    accounts = [
        dict(account_id=a, started_at=start + pd.Timedelta(days=int(rng.integers(-900, 400))),
             renewal_at=days(1)[0] if k % 4 else None, contract_value=float(k * 100))
        for k, a in enumerate(ids)
    ]  # fmt: skip
    k = n * 80
    interactions = dict(
        account_id=pick(k), occurred_at=days(k) + secs(k),
        channel=rng.choice(["meeting", "call", "email", "business_review", "check_in"], k),
        status=rng.choice(["held", "held", "held", "cancelled", "rescheduled", "no_show"], k),
        client_seniority=pd.Series(rng.choice(list(levels_order()), k)).where(rng.random(k) < .8),
        response_hours=pd.Series(rng.exponential(10, k)).where(rng.random(k) < 0.7),
        sentiment=rng.uniform(-1, 1, k), competitor_mentioned=rng.random(k) < 0.05,
        # its own generator: the other columns and tables keep the draws they always had
        initiated_by=pd.Series(np.random.default_rng(seed + 1).choice(
            np.array(["client", "firm", None], dtype=object), k)),
    )  # fmt: skip
    k = n * 6
    started = days(k)
    contacts = dict(
        account_id=pick(k), contact_id=[f"c{i}" for i in range(k)],
        side=rng.choice(["client", "firm"], k), seniority=rng.choice(list(levels_order()), k),
        role=rng.choice(["sponsor", "decision_maker", "procurement", "operational", "other"], k),
        started_at=started,
        ended_at=(started + pd.to_timedelta(rng.integers(0, 500, k), "D")).where(
            rng.random(k) < 0.5),
    )  # fmt: skip
    k = n * 30
    issued = days(k)
    due = issued + pd.to_timedelta(rng.choice([0, 14, 30], k), "D")
    paid = due + pd.to_timedelta(rng.integers(-20, 90, k), "D")
    invoices = dict(
        account_id=pick(k), invoice_id=[f"i{i}" for i in range(k)], issued_at=issued,
        due_at=due, paid_at=paid.where(paid >= issued, issued).where(rng.random(k) < 0.9),
        amount=rng.uniform(0, 10000, k).round(2),
        discount=pd.Series(rng.uniform(0, 100, k).round(2)).where(rng.random(k) < 0.5),
    )  # fmt: skip
    k = n * 5
    started = days(k)
    projects = dict(
        account_id=pick(k), project_id=[f"p{i}" for i in range(k)], started_at=started,
        planned_end_at=(started + pd.to_timedelta(rng.integers(0, 300, k), "D")).where(
            rng.random(k) < 0.9),
        ended_at=(started + pd.to_timedelta(rng.integers(0, 300, k), "D")).where(
            rng.random(k) < 0.7),
        budget=pd.Series(rng.uniform(0, 5e4, k)).where(rng.random(k) < 0.9),
        actual_cost=rng.uniform(0, 6e4, k),
        kind=pd.Series(rng.choice(["strategic", "tactical"], k)).where(rng.random(k) < 0.8),
    )  # fmt: skip
    k = n * 5
    surveys = dict(account_id=pick(k), answered_at=days(k), score=rng.integers(0, 11, k) * 1.0)
    k = n * 6
    opened = days(k) + secs(k)
    tickets = dict(
        account_id=pick(k), opened_at=opened,
        closed_at=(opened + pd.to_timedelta(rng.integers(0, 90 * 86400, k), "s")).where(
            rng.random(k) < 0.8),
        severity=rng.choice(["low", "medium", "high", "critical"], k),
        is_complaint=rng.random(k) < 0.2,
    )  # fmt: skip
    gone = rng.choice(ids, n // 3, replace=False)
    return make_tables(
        accounts=accounts,
        churn_events=dict(account_id=gone, churned_at=days(len(gone))),
        interactions=interactions, contacts=contacts, invoices=invoices, projects=projects,
        surveys=surveys, tickets=tickets,
    )  # fmt: skip


def levels_order() -> tuple[str, ...]:
    return ("junior", "middle", "senior", "executive")
