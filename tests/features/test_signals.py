"""Every feature family on hand-built accounts whose answers can be checked by eye, plus a
literal per-row reading of FEATURES.md compared with the vectorised engine on random data."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from churn.settings import SnapshotSettings
from features.catalog import FEATURES
from features.contract import Tables
from features.snapshots import build_snapshots
from tests.support.purchase_reference import purchase_reference
from tests.support.signal_tables import make_tables, random_tables

AS_OF = date(2024, 7, 1)


def row(tables: Tables, as_of: date = AS_OF, account: str = "A", **cfg: object) -> pd.Series:
    """The snapshot row of one account (features only: no health scores needed here)."""
    frame = build_snapshots(tables, [as_of], SnapshotSettings(**cfg), with_health=False)
    return frame.set_index("account_id").loc[account]


def interaction(when: str, channel: str = "call", status: str = "held", **kw: object) -> dict:
    return {"account_id": "A", "occurred_at": when, "channel": channel, "status": status, **kw}


def test_behavioural_counts_trends_silence_and_projects():
    tables = make_tables(
        interactions=[
            interaction("2024-06-30 10:00", "meeting", response_hours=2.0),
            interaction("2024-06-10 09:00", response_hours=4.0),
            interaction("2024-05-01 15:00", "business_review"),
            interaction("2024-04-20 11:00", "meeting", "cancelled"),
            interaction("2024-03-01 12:00", response_hours=10.0),
            interaction("2024-07-01 09:00", "meeting"),  # on as_of: not yet known
        ],
        projects=[
            # running past its planned end
            dict(account_id="A", project_id="P1", started_at="2024-03-01", budget=300.0,
                 planned_end_at="2024-06-01", kind="strategic"),
            # ended a month late and over budget
            dict(account_id="A", project_id="P2", started_at="2023-10-01", budget=100.0,
                 planned_end_at="2024-01-01", ended_at="2024-02-01", actual_cost=150.0,
                 kind="tactical"),
            dict(account_id="A", project_id="P3", started_at="2024-06-15", budget=200.0,
                 planned_end_at="2024-12-01", kind="tactical"),
            dict(account_id="A", project_id="P4", started_at="2024-08-01", budget=1000.0),
        ],
    )  # fmt: skip
    got = row(tables)
    assert (got.interactions_30d, got.interactions_90d, got.interactions_180d) == (2, 3, 4)
    assert (got.meetings_30d, got.meetings_90d, got.meetings_180d) == (1, 2, 2)
    assert got.interaction_trend == (3 - 1) / 1  # previous quarter had one held interaction
    assert got.meeting_trend == 2.0  # from none: divided by max(previous, 1)
    assert got.cancellation_rate_90d == 1 / 4
    assert got.days_since_last_contact == 1
    assert got.silent_60d == 0.0 and got.business_review_6m == 1.0
    assert got.response_hours_90d == 3.0 and got.response_time_trend == 3.0 - 10.0
    assert got.project_scope_trend == (500 - 100) / 100
    assert got.strategic_share == 300 / 600
    assert got.projects_over_budget_365d == 1
    assert got.projects_late == 2


def test_behavioural_silence_and_absent_interactions():
    quiet = make_tables(interactions=[interaction("2024-04-15 10:00")])
    got = row(quiet)
    assert got.days_since_last_contact == 77 and got.silent_60d == 1.0
    assert got.cancellation_rate_90d == 0.0 and np.isnan(got.response_hours_90d)
    without = row(make_tables(projects=[]))
    for name in ("interactions_90d", "silent_60d", "days_since_last_contact", "meeting_trend"):
        assert np.isnan(without[name]), name  # absent, not 0
    assert without.projects_late == 0 and without.project_scope_trend == 0


def test_relationship_threads_seniority_and_departures():
    def contact(cid, side, seniority, started, ended=None, role=None):
        return dict(account_id="A", contact_id=cid, side=side, seniority=seniority,
                    role=role, started_at=started, ended_at=ended)  # fmt: skip

    tables = make_tables(
        contacts=[
            contact("c1", "client", "executive", "2024-05-01", role="sponsor"),
            contact("c2", "client", "senior", "2020-01-01", "2024-06-01", role="decision_maker"),
            contact("c3", "client", "junior", "2021-01-01", role="operational"),
            contact("c4", "firm", "middle", "2021-01-01"),
            contact("c5", "firm", "senior", "2024-07-01"),  # starts on as_of
            contact("c6", "client", "executive", "2020-01-01", "2024-07-01", role="technical"),
        ],
        interactions=[
            interaction("2024-06-01", sentiment=0.5, competitor_mentioned=True,
                        client_seniority="executive"),
            interaction("2024-05-01", sentiment=-0.1, competitor_mentioned=False,
                        client_seniority="junior"),
            interaction("2024-05-02", status="no_show", client_seniority="senior"),
            interaction("2024-03-01", sentiment=0.6),
        ],
    )  # fmt: skip
    got = row(tables)
    assert got.client_contacts_active == 3  # c1, c3 and c6 (ending on as_of is not before it)
    assert got.firm_contacts_active == 1
    assert got.most_senior_client_level == 3
    assert got.new_executive_90d == 1.0 and got.key_contact_departed_90d == 1.0
    assert got.single_threaded == 0.0
    assert got.sentiment_90d == pytest.approx(0.2)
    assert got.sentiment_trend == pytest.approx(0.2 - 0.6)
    assert got.competitor_mentions_90d == 1
    assert got.senior_interaction_share_90d == 0.5  # held ones only: executive and junior


def test_relationship_single_threaded_and_absent_contacts():
    one = make_tables(
        contacts=[dict(account_id="A", contact_id="c", side="client", seniority="middle",
                       started_at="2023-01-01")]
    )  # fmt: skip
    got = row(one)
    assert got.single_threaded == 1.0 and got.most_senior_client_level == 1
    assert got.new_executive_90d == 0.0 or np.isnan(got.new_executive_90d)  # role not recorded
    none = row(make_tables(interactions=[]))
    assert np.isnan(none.client_contacts_active) and np.isnan(none.single_threaded)


def invoice(iid, issued, due, amount, paid=None, discount=None):
    return dict(account_id="A", invoice_id=iid, issued_at=issued, due_at=due, paid_at=paid,
                amount=amount, discount=discount)  # fmt: skip


def test_financial_revenue_lateness_overdue_and_renewal():
    tables = make_tables(
        accounts=[dict(account_id="A", started_at="2020-01-01", renewal_at="2021-08-15",
                       contract_value=12000.0)],
        invoices=[
            invoice("I1", "2024-06-01", "2024-07-01", 600.0),  # due on as_of: not overdue
            invoice("I2", "2024-04-01", "2024-05-01", 500.0, "2024-05-11", discount=50.0),
            invoice("I3", "2024-03-01", "2024-03-31", 300.0, "2024-08-01"),  # paid after as_of
            invoice("I4", "2024-01-15", "2024-02-14", 200.0, "2024-02-01"),  # paid early
            invoice("I5", "2023-06-01", "2023-07-01", 1000.0, "2023-07-31"),  # a year ago
        ],
    )  # fmt: skip
    got = row(tables)
    assert got.revenue_90d == 600 and got.revenue_365d == 1600
    assert got.spend_change_qoq == pytest.approx((600 - 1000) / 1000)
    assert got.avg_days_late_365d == pytest.approx((10 + 92 + 0) / 3)
    assert got.overdue_amount == 300 and got.overdue_days == 92 and got.overdue_30d == 1.0
    assert got.discount_share_365d == pytest.approx(50 / 1650)
    assert got.contract_value == 12000
    assert got.days_to_renewal == 45  # 2021-08-15 rolled forward to 2024-08-15
    assert got.renewal_flat_spend == 1.0


def test_financial_without_invoices_keeps_account_terms_only():
    tables = make_tables(
        accounts=[dict(account_id="A", started_at="2020-01-01", renewal_at="2024-06-30",
                       contract_value=5000.0)],
        interactions=[],
    )  # fmt: skip
    got = row(tables)
    assert got.days_to_renewal == 364  # last renewal was the day before: the next is in 2025
    assert got.contract_value == 5000
    for name in ("revenue_365d", "overdue_days", "overdue_30d", "renewal_flat_spend"):
        assert np.isnan(got[name]), name


def test_satisfaction_surveys_and_tickets():
    def ticket(opened, severity, closed=None, complaint=False):
        return dict(account_id="A", opened_at=opened, closed_at=closed, severity=severity,
                    is_complaint=complaint)  # fmt: skip

    tables = make_tables(
        surveys=[
            dict(account_id="A", answered_at="2024-01-10", score=9.0),
            dict(account_id="A", answered_at="2024-05-20", score=6.0),
            dict(account_id="A", answered_at="2024-07-01", score=2.0),  # on as_of
        ],
        tickets=[
            ticket("2024-06-01 09:00", "high", "2024-07-01 10:00", complaint=True),
            ticket("2024-02-01 09:00", "low", "2024-02-10 09:00"),
            ticket("2024-04-15 09:00", "critical"),
            ticket("2024-07-01 08:00", "critical", complaint=True),  # on as_of
        ],
    )
    got = row(tables)
    assert got.last_survey_score == 6 and got.survey_score_change == -3
    assert got.days_since_last_survey == 42
    assert got.tickets_90d == 2 and got.complaints_90d == 1
    assert got.open_tickets == 2 and got.open_high_severity_tickets == 2


def test_satisfaction_absent_without_surveys_and_tickets():
    got = row(make_tables(invoices=[]))
    for name in FEATURES:
        if FEATURES[name].family == "satisfaction":
            assert np.isnan(got[name]), name


def test_lifecycle_tenure_stage_and_segments():
    accounts = [
        {"account_id": f"A{i}", "started_at": str(date(2024 - i, 6, 30)), "contract_value": v}
        for i, v in enumerate([10.0, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    ]
    frame = build_snapshots(
        make_tables(accounts=accounts), [AS_OF], SnapshotSettings(), with_health=False
    ).set_index("account_id")
    assert frame.loc["A0", "tenure_months"] == pytest.approx(1 / 30.4375)
    assert frame.loc["A1", "tenure_months"] == pytest.approx(367 / 30.4375)  # 2024 is a leap year
    stages = frame["lifecycle_stage"].to_dict()
    assert stages["A0"] == "new" and stages["A1"] == "established"
    assert stages["A2"] == "established" and stages["A3"] == "long_term"
    # without invoices the segment ranks contract value: top two A, bottom two C
    segments = frame["revenue_segment"].to_dict()
    assert [segments[f"A{i}"] for i in range(10)] == list("CCBBBBBBAA")


def test_segments_rank_revenue_when_invoices_exist():
    accounts = [{"account_id": a, "started_at": "2020-01-01"} for a in "ABCDE"]
    invoices = [
        dict(account_id=a, invoice_id=a, issued_at="2024-05-01", due_at="2024-06-01", amount=v)
        for a, v in zip("ABCDE", [5.0, 4.0, 3.0, 2.0, 1.0], strict=True)
    ]
    frame = build_snapshots(
        make_tables(accounts=accounts, invoices=invoices), [AS_OF], SnapshotSettings(),
        with_health=False,
    )  # fmt: skip
    assert dict(zip(frame.account_id, frame.revenue_segment, strict=True)) == {
        "A": "A", "B": "B", "C": "B", "D": "B", "E": "C"
    }  # fmt: skip


# ---------------------------------------------------------------- literal reference on random data

D = pd.Timedelta(days=1)


def _window(df: pd.DataFrame, col: str, t: pd.Timestamp, n: int, m: int = 0) -> pd.DataFrame:
    return df[(df[col] >= t - n * D) & (df[col] < t - m * D)]


def reference_row(tb: Tables, acc: str, t: pd.Timestamp) -> dict[str, float]:
    """FEATURES.md read literally, one account and date at a time (slow on purpose)."""
    o: dict[str, float] = {}
    inter = tb.interactions[(tb.interactions.account_id == acc) & (tb.interactions.occurred_at < t)]
    held = inter[inter.status == "held"]
    meet = held[held.channel.isin(["meeting", "business_review"])]
    for n in (30, 90, 180):
        o[f"interactions_{n}d"] = len(_window(held, "occurred_at", t, n))
        o[f"meetings_{n}d"] = len(_window(meet, "occurred_at", t, n))
    prev = len(_window(held, "occurred_at", t, 180, 90))
    o["interaction_trend"] = (o["interactions_90d"] - prev) / max(prev, 1)
    prev = len(_window(meet, "occurred_at", t, 180, 90))
    o["meeting_trend"] = (o["meetings_90d"] - prev) / max(prev, 1)
    w = _window(inter, "occurred_at", t, 90)
    wp = _window(inter, "occurred_at", t, 180, 90)
    o["cancellation_rate_90d"] = (w.status != "held").mean() if len(w) else np.nan
    last = held.occurred_at.max()
    o["days_since_last_contact"] = (t - last.normalize()).days if len(held) else np.nan
    o["silent_60d"] = float(len(_window(held, "occurred_at", t, 60)) == 0)
    o["response_hours_90d"] = w.response_hours.mean()
    o["response_time_trend"] = w.response_hours.mean() - wp.response_hours.mean()
    recent_held = _window(held, "occurred_at", t, 182)
    o["business_review_6m"] = float((recent_held.channel == "business_review").any())
    pr = tb.projects[(tb.projects.account_id == acc) & (tb.projects.started_at < t)]
    b, bp = _window(pr, "started_at", t, 180).budget.sum(), _window(pr, "started_at", t, 360, 180)
    o["project_scope_trend"] = (b - bp.budget.sum()) / max(bp.budget.sum(), 1)
    y = _window(pr, "started_at", t, 365)
    y = y[y.kind.notna()]
    if not len(y):
        o["strategic_share"] = np.nan
    elif y.budget.sum() > 0:
        o["strategic_share"] = y[y.kind == "strategic"].budget.sum() / y.budget.sum()
    else:
        o["strategic_share"] = (y.kind == "strategic").mean()
    ended = _window(pr[pr.ended_at < t], "ended_at", t, 365)
    o["projects_over_budget_365d"] = int((ended.actual_cost > ended.budget).sum())
    running_late = pr[(pr.planned_end_at < t) & ~(pr.ended_at < t)]
    o["projects_late"] = len(running_late) + int((ended.ended_at > ended.planned_end_at).sum())
    co = tb.contacts[(tb.contacts.account_id == acc) & (tb.contacts.started_at < t)]
    active = co[~(co.ended_at < t)]
    client = active[active.side == "client"]
    o["client_contacts_active"] = len(client)
    o["firm_contacts_active"] = int((active.side == "firm").sum())
    levels = {"junior": 0, "middle": 1, "senior": 2, "executive": 3}
    o["most_senior_client_level"] = client.seniority.map(levels).max() if len(client) else np.nan
    new = _window(co, "started_at", t, 90)
    o["new_executive_90d"] = float(
        ((new.side == "client") & (new.seniority == "executive")
         & new.role.isin(["sponsor", "decision_maker", "procurement"])).any()
    )  # fmt: skip
    gone = _window(co[co.ended_at < t], "ended_at", t, 90)
    o["key_contact_departed_90d"] = float(
        ((gone.side == "client") & gone.role.isin(["sponsor", "decision_maker"])).any()
    )
    o["single_threaded"] = float(len(client) <= 1)
    o["sentiment_90d"] = w.sentiment.mean()
    o["sentiment_trend"] = w.sentiment.mean() - wp.sentiment.mean()
    o["competitor_mentions_90d"] = int(w.competitor_mentioned.fillna(False).sum())
    hw = _window(held, "occurred_at", t, 90)
    hw = hw[hw.client_seniority.notna()]
    o["senior_interaction_share_90d"] = (
        hw.client_seniority.isin(["senior", "executive"]).mean() if len(hw) else np.nan
    )
    inv = tb.invoices[(tb.invoices.account_id == acc) & (tb.invoices.issued_at < t)]
    o |= purchase_reference(inv, t)
    o["revenue_90d"] = _window(inv, "issued_at", t, 90).amount.sum()
    o["revenue_365d"] = _window(inv, "issued_at", t, 365).amount.sum()
    prev = _window(inv, "issued_at", t, 180, 90).amount.sum()
    o["spend_change_qoq"] = (o["revenue_90d"] - prev) / prev if prev != 0 else np.nan
    due = _window(inv, "due_at", t, 365)
    late = np.where(
        due.paid_at < t,
        (due.paid_at - due.due_at).dt.days.clip(lower=0),
        (t - due.due_at).dt.days,
    )
    o["avg_days_late_365d"] = late.mean() if len(due) else np.nan
    overdue = inv[(inv.due_at < t) & ~(inv.paid_at < t)]
    o["overdue_amount"] = overdue.amount.sum()
    o["overdue_days"] = (t - overdue.due_at.min()).days if len(overdue) else 0
    o["overdue_30d"] = float(o["overdue_days"] >= 30)
    year = _window(inv, "issued_at", t, 365)
    billed = (year.amount + year.discount.fillna(0)).sum()
    o["discount_share_365d"] = year.discount.fillna(0).sum() / billed if billed else np.nan
    account = tb.accounts.set_index("account_id").loc[acc]
    o["contract_value"] = account.contract_value
    renewal = account.renewal_at
    if pd.isna(renewal):
        o["days_to_renewal"] = np.nan
    else:
        years = 0
        while renewal + pd.DateOffset(years=years) < t:
            years += 1
        o["days_to_renewal"] = (renewal + pd.DateOffset(years=years) - t).days
    if np.isnan(o["days_to_renewal"]):
        o["renewal_flat_spend"] = np.nan
    else:
        change = o["spend_change_qoq"]
        flat = change <= 0.05 if not np.isnan(change) else o["revenue_90d"] == 0
        o["renewal_flat_spend"] = float(o["days_to_renewal"] <= 90 and flat)
    su = tb.surveys[(tb.surveys.account_id == acc) & (tb.surveys.answered_at < t)]
    su = su.sort_values(["answered_at", "score"])
    o["last_survey_score"] = su.score.iloc[-1] if len(su) else np.nan
    o["survey_score_change"] = su.score.iloc[-1] - su.score.iloc[-2] if len(su) > 1 else np.nan
    o["days_since_last_survey"] = (t - su.answered_at.iloc[-1]).days if len(su) else np.nan
    ti = tb.tickets[(tb.tickets.account_id == acc) & (tb.tickets.opened_at < t)]
    recent = _window(ti, "opened_at", t, 90)
    o["complaints_90d"] = int(recent.is_complaint.fillna(False).sum())
    o["tickets_90d"] = len(recent)
    still_open = ti[~(ti.closed_at < t)]
    o["open_tickets"] = len(still_open)
    o["open_high_severity_tickets"] = int(still_open.severity.isin(["high", "critical"]).sum())
    o["tenure_months"] = (t - account.started_at).days / 30.4375
    o |= baseline_reference(tb, acc, t, o)
    return o


def baseline_reference(tb: Tables, acc: str, t: pd.Timestamp, o: dict) -> dict[str, float]:
    """The baseline-relative features read literally: the last 90 days against the account's
    own 365 days before them ([t - 455 days, t - 90 days))."""
    r: dict[str, float] = {}
    started = tb.accounts.set_index("account_id").loc[acc].started_at
    # the baseline: the year before the last 90 days, from the account's start when later
    lo, hi = t - 455 * D, t - 90 * D
    if not pd.isna(started):
        lo = min(max(started, lo), hi)
    days = (hi - lo).total_seconds() / 86400

    def baseline(frame: pd.DataFrame, col: str) -> pd.DataFrame:
        return frame[(frame[col] >= lo) & (frame[col] < hi)]

    def pace(recent: float, earlier: float) -> float:
        if days < 30:
            return np.nan
        usual = earlier * 90 / days
        return (recent - usual) / max(usual, 1.0)

    def share(frame: pd.DataFrame) -> float:
        known = frame[frame.initiated_by.notna()]
        return (known.initiated_by == "client").mean() if len(known) else np.nan

    inter = tb.interactions[(tb.interactions.account_id == acc) & (tb.interactions.occurred_at < t)]
    recent, base = _window(inter, "occurred_at", t, 90), baseline(inter, "occurred_at")
    held, held_base = recent[recent.status == "held"], base[base.status == "held"]
    meeting = ["meeting", "business_review"]
    r["interactions_vs_usual"] = pace(len(held), len(held_base))
    r["meetings_vs_usual"] = pace(
        held.channel.isin(meeting).sum(), held_base.channel.isin(meeting).sum()
    )
    r["response_hours_vs_usual"] = recent.response_hours.mean() - base.response_hours.mean()
    r["client_initiated_share_90d"] = share(held)
    r["client_initiated_vs_usual"] = share(held) - share(held_base)
    r["sentiment_vs_usual"] = recent.sentiment.mean() - base.sentiment.mean()
    last30 = _window(inter, "occurred_at", t, 30)
    r["sentiment_30d_vs_usual"] = last30.sentiment.mean() - base.sentiment.mean()
    co = tb.contacts[(tb.contacts.account_id == acc) & (tb.contacts.started_at < t)]
    year_ago = t - 365 * D
    r["client_contacts_left_365d"] = int(
        ((co.side == "client") & (co.ended_at >= year_ago) & (co.ended_at < t)).sum()
    )
    then = co[(co.started_at < year_ago) & ~(co.ended_at < year_ago)]
    for side in ("client", "firm"):
        now = o[f"{side}_contacts_active"]
        count = int((then.side == side).sum())
        was_client = pd.isna(started) or started <= year_ago
        r[f"{side}_contacts_vs_year_ago"] = (now - count) / max(count, 1) if was_client else np.nan
    inv = tb.invoices[(tb.invoices.account_id == acc) & (tb.invoices.issued_at < t)]
    recent, base = _window(inv, "issued_at", t, 90), baseline(inv, "issued_at")
    usual = base.amount.sum() * 90 / days if days >= 30 else np.nan
    r["spend_vs_usual"] = (recent.amount.sum() - usual) / usual if usual else np.nan
    before = base.amount.mean()
    r["invoice_amount_vs_usual"] = recent.amount.mean() / before - 1 if before else np.nan

    def discount_share(frame: pd.DataFrame) -> float:
        billed = (frame.amount + frame.discount.fillna(0)).sum()
        return frame.discount.fillna(0).sum() / billed if billed else np.nan

    r["discount_share_90d"] = discount_share(recent)
    r["discount_share_vs_usual"] = discount_share(recent) - discount_share(base)
    due = inv.due_at.where(inv.due_at >= inv.issued_at, inv.issued_at)
    paid = inv.paid_at.where(inv.paid_at >= inv.issued_at, inv.issued_at)
    settled = paid.where(paid >= due, due)
    # a delay is known once paid: stamped at the payment (never before the issue)
    delays = pd.DataFrame({"at": paid, "late": (settled - due).dt.days})[inv.paid_at.notna()]
    r["days_late_vs_usual"] = (
        _window(delays, "at", t, 90).late.mean() - baseline(delays, "at").late.mean()
    )
    su = tb.surveys[(tb.surveys.account_id == acc) & (tb.surveys.answered_at < t)]
    su = su.sort_values(["answered_at", "score"])
    if len(su):
        when = su.answered_at.iloc[-1]
        earlier = su[(su.answered_at < when) & (su.answered_at >= when - 1095 * D)]
        r["survey_score_vs_usual"] = su.score.iloc[-1] - earlier.score.mean()
    else:
        r["survey_score_vs_usual"] = np.nan
    ti = tb.tickets[(tb.tickets.account_id == acc) & (tb.tickets.opened_at < t)]
    base = baseline(ti, "opened_at")
    r["tickets_vs_usual"] = pace(o["tickets_90d"], len(base))
    r["complaints_vs_usual"] = pace(o["complaints_90d"], int(base.is_complaint.fillna(False).sum()))
    return r


def test_engine_matches_a_literal_reading_of_every_definition():
    tables = random_tables(12, seed=7)
    dates = pd.date_range("2020-04-01", "2023-01-01", freq="MS").date.tolist()
    frame = build_snapshots(tables, dates, SnapshotSettings(), with_health=False)
    sample = frame.sample(40, random_state=3)
    mismatches = []
    for _, got in sample.iterrows():
        account, as_of = got.account_id, got.as_of
        for name, want in reference_row(tables, account, as_of).items():
            have = got[name]
            same = (pd.isna(want) and pd.isna(have)) or (
                not pd.isna(have) and float(have) == pytest.approx(float(want), rel=1e-9)
            )
            if not same:
                mismatches.append((account, str(as_of.date()), name, want, have))
    assert not mismatches, mismatches[:10]
    checked = set(reference_row(tables, sample.account_id.iloc[0], sample.as_of.iloc[0]))
    assert checked == {f.name for f in FEATURES.values() if f.name not in (
        "lifecycle_stage", "revenue_segment")}  # fmt: skip
