"""The invoice escalation on generated invoices: it fires when an unpaid invoice becomes 30+
days late since the previous scoring, names that invoice, and never fires for invoices unpaid
past the stale age (those are counted in the snapshot's stale-invoice columns instead)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churn.settings import SnapshotSettings
from features.health import load_health_config
from features.signals.financial import INVOICE_EVIDENCE
from features.snapshots import LABELS, build_snapshots
from serving.batch import escalations_frame, with_history
from tests.support.signal_tables import make_tables

HEALTH = load_health_config()
RULE = HEALTH.escalations.esc_invoice_30d_late
CFG = SnapshotSettings()
BASE = pd.Timestamp("2022-01-01")
ACCOUNTS = ("A", "B", "C")


def _day(offset: int) -> pd.Timestamp:
    return BASE + timedelta(days=offset)


@st.composite
def invoice(draw, number: int) -> dict:
    issued = draw(st.integers(0, 900))
    due = issued + draw(st.integers(0, 60))
    paid = draw(st.none() | st.integers(issued, 1300))
    return {
        "account_id": draw(st.sampled_from(ACCOUNTS)),
        "invoice_id": f"INV-{number:04d}",
        "issued_at": _day(issued),
        "due_at": _day(due),
        "paid_at": None if paid is None else _day(paid),
        "amount": float(draw(st.integers(1, 50_000))),
    }


@st.composite
def history(draw) -> tuple[list[dict], list[date]]:
    n = draw(st.integers(1, 12))
    invoices = [draw(invoice(i)) for i in range(n)]
    first = draw(st.integers(30, 1000))
    gaps = draw(st.lists(st.sampled_from([1, 7, 14, 28, 30, 31, 45, 90, 400]), max_size=3))
    offsets = np.cumsum([first, *gaps])
    return invoices, [_day(int(o)).date() for o in offsets]


def _late_at(inv: dict, day: pd.Timestamp) -> float | None:
    """Days late of an invoice at a scoring date, None when not late (not yet due, or paid
    before the date): the definition of docs/domain.md#escalations, written out."""
    issued, due, paid = inv["issued_at"], max(inv["due_at"], inv["issued_at"]), inv["paid_at"]
    if issued >= day or due >= day:
        return None
    if paid is not None and paid < day:
        return None
    return float((day.normalize() - due.normalize()).days)


def _scored(invoices: list[dict], dates: list[date]) -> tuple[pd.DataFrame, pd.DataFrame]:
    tables = make_tables(
        accounts=[{"account_id": a, "started_at": "2021-01-01"} for a in ACCOUNTS],
        invoices=invoices,
    )
    snapshot = build_snapshots(tables, dates, CFG, health=HEALTH)
    scored = with_history(snapshot, dates, None, HEALTH)
    return scored, escalations_frame(scored, HEALTH)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(history())
def test_every_invoice_that_became_30_days_late_since_the_previous_scoring_fires(case):
    invoices, dates = case
    scored, fired = _scored(invoices, dates)
    invoice_rule = fired[fired["code"] == "esc_invoice_30d_late"]
    for k, day in enumerate(dates):
        now = pd.Timestamp(day)
        window = RULE.lookback_days if k == 0 else (now - pd.Timestamp(dates[k - 1])).days
        here = invoice_rule[invoice_rule["as_of"] == now].set_index("account_id")
        for account in ACCOUNTS:
            crossed, late = [], []
            for inv in (i for i in invoices if i["account_id"] == account):
                days = _late_at(inv, now)
                if days is None:
                    continue
                late.append((days, inv))
                # became 30+ days late since the previous scoring, and not stale
                if RULE.threshold <= days < RULE.threshold + window and days < RULE.stale_days:
                    crossed.append((days, inv))
            if crossed:
                assert account in here.index, (day, account, crossed)
                evidence = here.loc[account]
                # it names the invoice that crossed last (the fewest days late), its amount
                fewest = min(d for d, _ in crossed)
                named = [i for d, i in crossed if d == fewest]
                assert evidence["days_late"] == fewest
                assert evidence["invoice_id"] in {i["invoice_id"] for i in named}
                assert evidence["amount"] in {i["amount"] for i in named}
            else:
                # nothing crossed: no invoice escalation, however old the unpaid invoices
                assert account not in here.index, (day, account, late)
            row = scored[(scored["as_of"] == now) & (scored["account_id"] == account)]
            stale = [d for d, _ in late if d >= RULE.stale_days]
            assert row["stale_invoices"].iloc[0] == len(stale)
            if stale:
                assert row["stale_invoice_days_late"].iloc[0] == max(stale)
            else:
                assert pd.isna(row["stale_invoice_id"].iloc[0])


def test_an_invoice_past_the_stale_age_is_counted_not_escalated():
    invoices = [
        {
            "account_id": "A",
            "invoice_id": "INV-OLD",
            "issued_at": _day(0),
            "due_at": _day(30),
            "paid_at": None,
            "amount": 900.0,
        },
        {
            "account_id": "A",
            "invoice_id": "INV-0042",
            "issued_at": _day(560),
            "due_at": _day(590),
            "paid_at": None,
            "amount": 4200.0,
        },
    ]
    day = _day(590 + 34).date()
    scored, fired = _scored(invoices, [day])
    row = scored.set_index("account_id").loc["A"]
    assert row["overdue_days"] == 594  # the oldest unpaid invoice: unchanged
    assert row["stale_invoices"] == 1
    assert row["stale_invoice_id"] == "INV-OLD" and row["stale_invoice_amount"] == 900.0
    assert row["stale_invoice_days_late"] == 594
    assert row["late_invoice_id"] == "INV-0042" and row["late_invoice_days_late"] == 34
    (escalation,) = fired[fired["code"] == "esc_invoice_30d_late"].to_dict("records")
    assert escalation["invoice_id"] == "INV-0042"
    assert escalation["amount"] == 4200.0 and escalation["days_late"] == 34
    # 40 days later INV-0042 crossed before that scoring: no escalation, with or without it
    scored, fired = _scored(invoices, [day, day + timedelta(days=40)])
    invoice_rule = fired[fired["code"] == "esc_invoice_30d_late"]
    assert (invoice_rule["as_of"] == pd.Timestamp(day)).all()


def test_without_invoices_the_evidence_is_unknown():
    tables = make_tables(accounts=[{"account_id": "A", "started_at": "2021-01-01"}])
    snapshot = build_snapshots(tables, [date(2022, 6, 1)], CFG, health=HEALTH)
    assert snapshot[list(INVOICE_EVIDENCE)].isna().all().all()
    assert not snapshot["esc_invoice_30d_late"].any()


def test_features_only_snapshots_carry_no_evidence():
    tables = make_tables(accounts=[{"account_id": "A", "started_at": "2021-01-01"}])
    frame = build_snapshots(tables, [date(2022, 6, 1)], CFG, with_health=False)
    assert not set(INVOICE_EVIDENCE) & set(frame.columns)
    assert not set(LABELS) - set(frame.columns)


@pytest.mark.parametrize(
    ("days", "since", "fires"),
    [(29, None, False), (30, None, True), (59, None, True), (60, None, False), (60, 31, True)],
)
def test_the_rule_window_is_the_time_since_the_previous_scoring(days, since, fires):
    from features.health import fired_escalations

    record = {"health_score": 80.0, "late_invoice_days_late": days}
    if since is not None:
        record["days_since_last_scoring"] = since
    assert ("esc_invoice_30d_late" in fired_escalations(record, HEALTH)) is fires


def test_on_a_generated_demo_invoice_escalations_fire_for_few_accounts(demo_source, tmp_path):
    from features.validate import load_validated
    from serving.batch import default_as_of, score_batches
    from serving.batch import history_dates as monthly
    from tests.support.cli import isolated_settings

    settings = isolated_settings(tmp_path)
    tables = load_validated(str(demo_source), settings).tables
    batches = score_batches(tables, monthly(default_as_of(tables), 6), None, settings)
    for batch in batches:
        fired = batch.escalations[batch.escalations["code"] == "esc_invoice_30d_late"]
        share = fired["account_id"].nunique() / len(batch.scores)
        assert share <= 0.05, (batch.as_of, share)
        # each names its invoice, 30+ days late since the previous scoring, not stale
        assert fired["invoice_id"].notna().all()
        assert fired["days_late"].between(RULE.threshold, RULE.stale_days - 1).all()
