"""A small generated firm whose accounts a batch scores: names, meetings, invoices, churn."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import Tables
from tests.support.tables import make_tables

_FIRST = (
    "Northwind",
    "Bluewater",
    "Granite",
    "Harbor",
    "Juniper",
    "Keystone",
    "Lakeside",
    "Meridian",
    "Oakridge",
    "Pinecrest",
    "Redwood",
    "Summit",
    "Tidewater",
    "Westfield",
)
_SECOND = ("Logistics", "Health", "Capital", "Foods", "Energy", "Retail", "Labs", "Partners",
           "Insurance", "Media")  # fmt: skip


def small_firm(n: int = 40, seed: int = 3) -> Tables:
    """``n`` accounts over 2021-2024 with meetings, invoices (some late), contacts, surveys and
    a few churn events; quieter and later-paying accounts churn more."""
    rng = np.random.default_rng(seed)
    managers = ["Ann", "Bob", "Cy"]
    end = pd.Timestamp("2024-09-30")
    accounts, churn, interactions, invoices, contacts, surveys = [], [], [], [], [], []
    for i in range(n):
        account = f"A-{i:03d}"
        start = pd.Timestamp("2021-01-01") + pd.Timedelta(days=int(rng.integers(0, 900)))
        quiet = rng.random() < 0.35
        accounts.append(
            {
                "account_id": account,
                "name": f"{_FIRST[i % len(_FIRST)]} {_SECOND[(i // len(_FIRST)) % len(_SECOND)]}",
                "account_manager": managers[i % 3],
                "started_at": start,
                "contract_value": float(rng.integers(20, 200)) * 1000,
            }
        )
        stop = end
        if quiet and rng.random() < 0.6:
            stop = start + pd.Timedelta(days=int(rng.integers(200, 1200)))
            if stop < end:
                churn.append(
                    {"account_id": account, "churned_at": stop, "reason": "taken_for_granted"}
                )
            stop = min(stop, end)
        days = (stop - start).days
        gap = 45 if quiet else 12
        for d in range(0, max(days, 1), gap):
            interactions.append(
                {
                    "account_id": account,
                    "occurred_at": start + pd.Timedelta(days=d, hours=10),
                    "channel": "meeting" if d % (3 * gap) == 0 else "call",
                    "status": "held",
                    "sentiment": -0.3 if quiet else 0.4,
                }
            )
        for m, d in enumerate(range(0, max(days, 1), 30)):
            issued = start + pd.Timedelta(days=d)
            late = 45 if quiet and m % 4 == 0 else 0
            paid = issued + pd.Timedelta(days=20 + late)
            invoices.append(
                {
                    "account_id": account,
                    "invoice_id": f"{account}-I{m}",
                    "issued_at": issued,
                    "due_at": issued + pd.Timedelta(days=30),
                    "paid_at": paid if paid < end else None,
                    "amount": float(rng.integers(2, 20)) * 1000,
                }
            )
        for c in range(1 if quiet else 3):
            contacts.append(
                {
                    "account_id": account,
                    "contact_id": f"{account}-C{c}",
                    "side": "client",
                    "seniority": "senior" if c == 0 else "middle",
                    "role": "sponsor" if c == 0 else "operational",
                    "started_at": start,
                }
            )
        surveys.append(
            {
                "account_id": account,
                "answered_at": start + pd.Timedelta(days=120),
                "score": 5.0 if quiet else 9.0,
            }
        )
    return make_tables(
        accounts,
        churn_events=churn,
        interactions=interactions,
        invoices=invoices,
        contacts=contacts,
        surveys=surveys,
    )
