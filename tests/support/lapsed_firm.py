"""A hand-built set of invoices and calls whose lapses and win-backs are worked out by hand
(the docstring of :func:`hand_built`): the lapsed tests of features and serving use it."""

from __future__ import annotations

from datetime import date

from churn.settings import SnapshotSettings
from features.contract import Tables
from tests.support.tables import make_tables

# N = max(30, 2 x the median gap between distinct invoice days), in whole days.
CFG = SnapshotSettings(min_silence_days=30, purchase_cycles=2, label_mode="inactivity")
AS_OF = date(2025, 1, 1)


def _inv(account: str, day: str, amount: float) -> dict:
    return {
        "account_id": account,
        "invoice_id": f"{account}-{day}",
        "issued_at": day,
        "due_at": day,
        "amount": amount,
    }


def hand_built() -> Tables:
    """Five clients; the comments give each one's lapses (worked out by hand).

    A (Ann, "Alpha"): invoices 2022-01-01 (1 000); 2024-03-01, 03-11, 03-21 (100, 200, 300);
      and 2025-01-01 (9 999, on the as_of: not read at 2025-01-01).
      - after 2022-01-01 one invoice day, no cycle: N = 30, lapsed from 2022-01-01 + 31 =
        2022-02-01; back 2024-03-01 with an invoice: a win-back.
      - after 2024-03-21 the gaps are 790, 10, 10: cycle 10, N = max(30, 20) = 30, lapsed from
        2024-03-21 + 31 = 2024-04-21 and still lapsed on 2025-01-01: 286 days silent
        (2024-03-21 is day 81 of the leap year: 366 - 81 + 1). Revenue lost: invoiced in
        (2023-03-22, 2024-03-21] = 600 (the 1 000 of 2022 is outside); lifetime 1 600.
    B (Bob, "Beta"): invoices 2024-01-01, 04-01, 07-01, 10-01 (1 000 each).
      - after 2024-01-01 N = 30: lapsed from 2024-02-01, back 2024-04-01 with an invoice.
      - after 04-01 the gap is 91: N = 182 > the 91 and 92 days to the next invoices; after
        10-01 (gaps 91, 91, 92: cycle 91, N 182) lapse on 2025-04-02, after the as_of.
        92 days silent on 2025-01-01, yet not lapsed: its cycle is long.
    C (Ann, no name): invoice 2024-05-01 (500), a call 2024-08-01, invoice 2024-10-15 (250).
      - after 05-01 N = 30: lapsed from 2024-06-01, back 2024-08-01 by a call: no win-back.
      - after 08-01 still no cycle (one invoice day): N = 30, lapsed from 2024-09-01, back
        2024-10-15 with an invoice: a win-back.
      - after 10-15 the gap is 167: N = 334, not lapsed on 2025-01-01.
    D (Bob): a call 2024-01-10 and nothing bought: never a lapsed client.
    E (Bob, "Epsilon"): invoice 2024-06-15 (5 000). N = 30: lapsed from 2024-07-16, 200 days
      silent on 2025-01-01 (2024-06-15 is day 167: 366 - 167 + 1). Revenue lost 5 000.
    """
    accounts = [
        {"account_id": "A", "name": "Alpha", "account_manager": "Ann"},
        {"account_id": "B", "name": "Beta", "account_manager": "Bob"},
        {"account_id": "C", "name": None, "account_manager": "Ann"},
        {"account_id": "D", "name": "Delta", "account_manager": "Bob"},
        {"account_id": "E", "name": "Epsilon", "account_manager": "Bob"},
    ]
    invoices = [
        _inv("A", "2022-01-01", 1000),
        _inv("A", "2024-03-01", 100),
        _inv("A", "2024-03-11", 200),
        _inv("A", "2024-03-21", 300),
        _inv("A", "2025-01-01", 9999),
        *(_inv("B", d, 1000) for d in ("2024-01-01", "2024-04-01", "2024-07-01", "2024-10-01")),
        _inv("C", "2024-05-01", 500),
        _inv("C", "2024-10-15", 250),
        _inv("E", "2024-06-15", 5000),
    ]
    interactions = [
        {"account_id": "C", "occurred_at": "2024-08-01 15:30", "channel": "call", "status": "held"},
        {"account_id": "D", "occurred_at": "2024-01-10 09:00", "channel": "call", "status": "held"},
    ]
    return make_tables(accounts, invoices=invoices, interactions=interactions)
