"""Retention metrics (docs/metrics.md#retention-metrics): the one definition used by the
dashboard's retention page, the portfolio's KPI tiles and ``churn report``.

Every metric is a pure function of a ``RetentionBase`` (one row per account with its start and
churn date, and invoiced revenue per account and month), built from the source's tables by
``RetentionBase.from_tables`` and kept in the score store by ``churn score``.

Definitions (a period is ``[start, end)``; dates are days):

- a client is **active at** a date ``t`` when ``started_at < t`` and it has not churned before
  ``t`` (no churn date, or ``churned_at >= t``);
- **logo retention** = (clients active at ``end`` - new clients) / clients active at ``start``,
  where new clients are those that started in the period (``start <= started_at < end``) and
  are among the clients at ``end``: the formula then equals the share of the clients at start
  that are still clients at the end (a client who joins and leaves inside the period is in
  neither count), and lies between 0 and 1;
- **net revenue retention (NRR)** = revenue invoiced in the period by the clients active at its
  start / the same clients' revenue in the previous period of the same length; expansion
  counts, so it can exceed 100 %;
- **gross revenue retention (GRR)** = the same, with each client's revenue capped at its
  revenue in the previous period (never above 100 %);
- **churn rate** of a group = clients active at ``start`` in that group who churned in the
  period / clients active at ``start`` in that group; the lifecycle stage and the revenue
  segment are the client's at ``start``, by the feature engine's rules (stage from tenure:
  new < 12 months <= established < 36 months <= long_term; segment A / B / C = top 20 % /
  middle 60 % / bottom 20 % of the revenue invoiced in the 12 months before ``start`` among
  the clients active at ``start``, ties sharing a segment);
- **churn reasons**: clients who churned in the period, by recorded reason;
- **accounts by priority** and **by health band**: the scored accounts of the date in each
  priority (act now, watch, ok) and each band, with their revenue at risk;
- **win-backs by quarter**: clients lapsed on some day of the quarter, those won back in it
  (their first activity after the lapse is a purchase) and the win-back rate, by the
  definitions of ``features.lapsed`` (docs/domain.md#lapsed-clients-and-win-backs) on the
  stored daily activity;
- "**last 12 months**" is the 12 complete calendar months before the scored date, and
  quarters are calendar quarters that ended on or before the scored date.

Revenue is counted by invoice issue month. Without ``churn_events`` a client is taken to have
churned ``silence_days`` after its last invoice or interaction when that day is inside the data
(the inactivity rule of docs/domain.md#labels, with the fixed floor window).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from churn.settings import SnapshotSettings
from features.contract import Tables
from features.health import HEALTH_BANDS as RULE_HEALTH_BANDS
from features.lapsed import activity_tables, daily_activity, lapse_episodes, winbacks_by_period
from features.signals.lifecycle import DAYS_PER_MONTH, STAGES, lifecycle_stage
from features.snapshots import assign_segments
from serving.priority import BAND_LABELS, PRIORITIES, PRIORITY_LABELS

LIFECYCLE_STAGES: tuple[str, ...] = STAGES
REVENUE_SEGMENTS: tuple[str, ...] = ("A", "B", "C")
# The health bands, most severe first (the health rules list them healthiest first).
HEALTH_BANDS: tuple[str, ...] = tuple(reversed(RULE_HEALTH_BANDS))
STAGE_LABELS = {
    "new": "New (< 1 year)",
    "established": "Established (1-3 years)",
    "long_term": "Long-term (3+ years)",
}
SEGMENT_LABELS = {"A": "A (top 20 %)", "B": "B (middle 60 %)", "C": "C (bottom 20 %)"}
# Each priority is shown in the style of the health band of the same urgency.
PRIORITY_CSS = {"act_now": "critical", "watch": "at_risk", "ok": "healthy"}
REASON_LABELS = {
    "taken_for_granted": "Relationship taken for granted",
    "service_quality": "Inconsistent service or team changes",
    "competitor": "Competitor offered more value",
    "budget_cut": "Budget cuts or restructuring",
    "key_contact_left": "Key contact left",
    "other": "Other",
    "unknown": "Not recorded",
}


@dataclass(frozen=True)
class RetentionBase:
    """What the retention metrics need: one row per account and its monthly revenue.

    ``accounts``: account_id, account_manager, started_at, churned_at (NaT while a client),
    churn_reason, and the client's ``name``, which the store keeps for the dashboard (the
    metrics never read it, and it is never logged).
    ``revenue``: account_id, month (first day), amount.
    ``activity``: account_id, day, invoiced, invoices, interactions per day with activity
    (``features.lapsed.daily_activity``: lapsed clients and win-backs); None when not recorded
    (a store written before it was kept).
    """

    accounts: pd.DataFrame
    revenue: pd.DataFrame
    activity: pd.DataFrame | None = None

    @classmethod
    def from_tables(cls, tables: Tables, *, silence_days: int = 90) -> RetentionBase:
        """Account facts and monthly invoiced revenue from a source's validated tables."""
        acc = tables.accounts
        accounts = pd.DataFrame(
            {
                "account_id": acc["account_id"].astype("string"),
                "name": acc["name"].astype("string"),
                "account_manager": acc["account_manager"].astype("string"),
                "started_at": pd.to_datetime(acc["started_at"]).dt.normalize(),
            }
        )
        events = tables.churn_events
        if events is not None:
            ev = events.drop_duplicates("account_id").set_index("account_id")
            churned = pd.to_datetime(ev["churned_at"]).dt.normalize()
            reason = ev["reason"] if "reason" in ev else pd.Series(pd.NA, index=ev.index)
            accounts["churned_at"] = accounts["account_id"].map(churned)
            accounts["churn_reason"] = accounts["account_id"].map(reason).astype("string")
        else:
            accounts["churned_at"] = _inactivity_churn(tables, accounts, silence_days)
            accounts["churn_reason"] = pd.Series(pd.NA, index=accounts.index, dtype="string")
        accounts["churned_at"] = pd.to_datetime(accounts["churned_at"])
        return cls(
            accounts=accounts.reset_index(drop=True),
            revenue=monthly_revenue(tables),
            activity=daily_activity(tables),
        )

    def for_manager(self, manager: str) -> RetentionBase:
        """The same facts restricted to one account manager's clients."""
        accounts = self.accounts[self.accounts["account_manager"] == manager]
        revenue = self.revenue[self.revenue["account_id"].isin(accounts["account_id"])]
        activity = self.activity
        if activity is not None:
            activity = activity[activity["account_id"].isin(accounts["account_id"])]
            activity = activity.reset_index(drop=True)
        return RetentionBase(
            accounts.reset_index(drop=True), revenue.reset_index(drop=True), activity
        )

    def activity_tables(self) -> Tables | None:
        """Tables of the stored activity (``features.lapsed.activity_tables``), on which the
        lapsed clients and win-backs are what they are on the source's; None when the
        activity was not recorded."""
        if self.activity is None:
            return None
        return activity_tables(self.accounts, self.activity)


def monthly_revenue(tables: Tables) -> pd.DataFrame:
    """Invoiced amount per account and issue month (empty without an invoices table)."""
    inv = tables.invoices
    if inv is None or inv.empty:
        return pd.DataFrame(
            {
                "account_id": pd.Series(dtype="string"),
                "month": pd.Series(dtype="datetime64[ns]"),
                "amount": pd.Series(dtype="float64"),
            }
        )
    month = pd.to_datetime(inv["issued_at"]).dt.to_period("M").dt.to_timestamp()
    frame = pd.DataFrame(
        {"account_id": inv["account_id"].astype("string"), "month": month, "amount": inv["amount"]}
    )
    out = frame.groupby(["account_id", "month"], as_index=False)["amount"].sum()
    return out.sort_values(["account_id", "month"]).reset_index(drop=True)


def _inactivity_churn(tables: Tables, accounts: pd.DataFrame, silence_days: int) -> pd.Series:
    """Churn date = last invoice or interaction + ``silence_days``, when inside the data."""
    stamps = []
    if tables.invoices is not None:
        stamps.append(tables.invoices[["account_id", "issued_at"]].set_axis(["id", "t"], axis=1))
    if tables.interactions is not None:
        stamps.append(
            tables.interactions[["account_id", "occurred_at"]].set_axis(["id", "t"], axis=1)
        )
    if not stamps:
        return pd.Series(pd.NaT, index=accounts.index)
    activity = pd.concat(stamps, ignore_index=True)
    last = activity.groupby("id")["t"].max().dt.normalize()
    churn = last + pd.Timedelta(days=silence_days)
    churn = churn.where(churn <= tables.data_end())
    return accounts["account_id"].map(churn)


# -- building blocks ----------------------------------------------------------------------


def active_at(accounts: pd.DataFrame, at: pd.Timestamp) -> pd.Series:
    """Boolean mask: clients active at ``at`` (started before it, not churned before it)."""
    at = pd.Timestamp(at)
    churned = accounts["churned_at"]
    return (accounts["started_at"] < at) & (churned.isna() | (churned >= at))


def lifecycle_stage_at(accounts: pd.DataFrame, at: pd.Timestamp) -> pd.Series:
    """new / established / long_term from the tenure at ``at`` (the feature engine's rule)."""
    tenure = (pd.Timestamp(at) - accounts["started_at"]).dt.days / DAYS_PER_MONTH
    stage = lifecycle_stage(tenure.to_numpy(dtype=float, na_value=np.nan))
    return pd.Series(stage, index=accounts.index, dtype="string")


def revenue_in(base: RetentionBase, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    """Revenue per account_id invoiced in the months ``[start, end)`` (0 when none)."""
    rev = base.revenue
    in_period = (rev["month"] >= pd.Timestamp(start)) & (rev["month"] < pd.Timestamp(end))
    per_account = rev[in_period].groupby("account_id")["amount"].sum()
    return base.accounts["account_id"].map(per_account).fillna(0.0).set_axis(base.accounts.index)


def revenue_segment_at(base: RetentionBase, at: pd.Timestamp, mask: pd.Series) -> pd.Series:
    """A / B / C among the accounts in ``mask`` by revenue of the 12 months before ``at``,
    ranked by the feature engine's rule (``features.snapshots.assign_segments``)."""
    trailing = revenue_in(base, pd.Timestamp(at) - pd.DateOffset(months=12), at)[mask]
    frame = pd.DataFrame(
        {"as_of": pd.Timestamp(at), "revenue_365d": trailing, "contract_value": np.nan}
    )
    segment = pd.Series(pd.NA, index=base.accounts.index, dtype="string")
    if not frame.empty:
        segment[mask] = assign_segments(frame)["revenue_segment"]
    return segment


# -- metrics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogoRetention:
    """Client (logo) retention over ``[start, end)``."""

    start: date
    end: date
    clients_at_start: int
    clients_at_end: int
    new_clients: int
    churned: int

    @property
    def rate(self) -> float | None:
        """(clients at end - new clients) / clients at start; None without clients at start."""
        if self.clients_at_start == 0:
            return None
        return (self.clients_at_end - self.new_clients) / self.clients_at_start


@dataclass(frozen=True)
class RevenueRetention:
    """Gross and net revenue retention of the clients active at ``start``."""

    start: date
    end: date
    clients: int
    previous_revenue: float
    revenue: float
    retained_revenue: float  # each client capped at its previous-period revenue

    @property
    def nrr(self) -> float | None:
        return self.revenue / self.previous_revenue if self.previous_revenue > 0 else None

    @property
    def grr(self) -> float | None:
        return self.retained_revenue / self.previous_revenue if self.previous_revenue > 0 else None


def logo_retention(base: RetentionBase, start: date, end: date) -> LogoRetention:
    """Client retention over ``[start, end)`` (see the module docstring)."""
    acc = base.accounts
    s, e = pd.Timestamp(start), pd.Timestamp(end)
    at_start, at_end = active_at(acc, s), active_at(acc, e)
    joined = (acc["started_at"] >= s) & (acc["started_at"] < e)
    return LogoRetention(
        start=s.date(),
        end=e.date(),
        clients_at_start=int(at_start.sum()),
        clients_at_end=int(at_end.sum()),
        new_clients=int((joined & at_end).sum()),
        churned=int((at_start & ~at_end).sum()),
    )


def revenue_retention(base: RetentionBase, start: date, end: date) -> RevenueRetention:
    """GRR and NRR over ``[start, end)`` against the previous period of the same months."""
    s, e = pd.Timestamp(start), pd.Timestamp(end)
    months = (e.year - s.year) * 12 + (e.month - s.month)
    previous_start = s - pd.DateOffset(months=months)
    cohort = active_at(base.accounts, s)
    current = revenue_in(base, s, e)[cohort]
    previous = revenue_in(base, previous_start, s)[cohort]
    return RevenueRetention(
        start=s.date(),
        end=e.date(),
        clients=int(cohort.sum()),
        previous_revenue=float(previous.sum()),
        revenue=float(current.sum()),
        retained_revenue=float(np.minimum(current, previous).sum()),
    )


def last_twelve_months(as_of: date) -> tuple[date, date]:
    """The 12 complete calendar months before ``as_of``: ``[start, end)``."""
    end = pd.Timestamp(as_of).to_period("M").to_timestamp()
    return (end - pd.DateOffset(months=12)).date(), end.date()


def quarters_before(as_of: date, n: int = 8) -> list[tuple[date, date]]:
    """The last ``n`` calendar quarters that ended on or before ``as_of``, oldest first."""
    # The quarter holding as_of is incomplete unless as_of is its first day, and then the
    # quarter before it ended exactly at as_of: either way the last end is that first day.
    last_end = pd.Timestamp(as_of).to_period("Q").start_time
    ends = [last_end - pd.DateOffset(months=3 * k) for k in range(n)][::-1]
    return [((end - pd.DateOffset(months=3)).date(), end.date()) for end in ends]


def quarterly_retention(base: RetentionBase, as_of: date, n: int = 8) -> pd.DataFrame:
    """Logo retention, GRR and NRR for each of the last ``n`` complete quarters."""
    rows = []
    for start, end in quarters_before(as_of, n):
        logo = logo_retention(base, start, end)
        rev = revenue_retention(base, start, end)
        quarter = pd.Timestamp(start).to_period("Q")
        rows.append(
            {
                "quarter": f"{quarter.year} Q{quarter.quarter}",
                "start": start,
                "end": end,
                "clients_at_start": logo.clients_at_start,
                "new_clients": logo.new_clients,
                "churned": logo.churned,
                "clients_at_end": logo.clients_at_end,
                "logo_retention": logo.rate,
                "previous_revenue": rev.previous_revenue,
                "revenue": rev.revenue,
                "grr": rev.grr,
                "nrr": rev.nrr,
            }
        )
    frame = pd.DataFrame(rows)
    for col in ("logo_retention", "grr", "nrr"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame


def quarterly_winbacks(
    base: RetentionBase, as_of: date, snapshots: SnapshotSettings, n: int = 8
) -> pd.DataFrame | None:
    """Clients lapsed, won back and the win-back rate for each of the last ``n`` complete
    quarters (``features.lapsed.winbacks_by_period``); None without recorded activity."""
    tables = base.activity_tables()
    if tables is None:
        return None
    periods = quarters_before(as_of, n)
    out = winbacks_by_period(lapse_episodes(tables, as_of, snapshots), periods)
    quarter = [pd.Timestamp(start).to_period("Q") for start, _ in periods]
    out.insert(0, "quarter", [f"{q.year} Q{q.quarter}" for q in quarter])
    return out


def churn_rate_by(base: RetentionBase, start: date, end: date, by: str) -> pd.DataFrame:
    """Churn rate over ``[start, end)`` by ``lifecycle_stage`` or ``revenue_segment`` at start.

    Columns: group, label, clients, churned, churn_rate (NaN for an empty group).
    """
    acc = base.accounts
    s, e = pd.Timestamp(start), pd.Timestamp(end)
    cohort = active_at(acc, s)
    if by == "lifecycle_stage":
        groups, labels, order = lifecycle_stage_at(acc, s), STAGE_LABELS, LIFECYCLE_STAGES
    elif by == "revenue_segment":
        groups, labels, order = (
            revenue_segment_at(base, s, cohort),
            SEGMENT_LABELS,
            REVENUE_SEGMENTS,
        )
    else:
        raise ValueError(f"churn_rate_by: unknown grouping {by!r}")
    churned = acc["churned_at"].notna() & (acc["churned_at"] >= s) & (acc["churned_at"] < e)
    frame = pd.DataFrame({"group": groups[cohort], "churned": churned[cohort].astype(int)})
    counts = frame.groupby("group")["churned"].agg(["size", "sum"]).reindex(list(order))
    counts = counts.fillna(0).astype(int)
    out = pd.DataFrame(
        {
            "group": list(order),
            "label": [labels[g] for g in order],
            "clients": counts["size"].to_numpy(),
            "churned": counts["sum"].to_numpy(),
        }
    )
    out["churn_rate"] = (out["churned"] / out["clients"].where(out["clients"] > 0)).astype(float)
    return out


def churn_reasons(base: RetentionBase, start: date, end: date) -> pd.DataFrame:
    """Clients who churned in ``[start, end)`` by reason: reason, label, clients, share."""
    acc = base.accounts
    s, e = pd.Timestamp(start), pd.Timestamp(end)
    churned = acc[acc["churned_at"].notna() & (acc["churned_at"] >= s) & (acc["churned_at"] < e)]
    reasons = churned["churn_reason"].astype("string").fillna("unknown")
    counts = reasons.value_counts()
    out = pd.DataFrame({"reason": counts.index.astype(str), "clients": counts.to_numpy()})
    out = out.sort_values(["clients", "reason"], ascending=[False, True]).reset_index(drop=True)
    out["label"] = out["reason"].map(REASON_LABELS).fillna(out["reason"])
    total = int(out["clients"].sum())
    out["share"] = out["clients"] / total if total else np.nan
    return out[["reason", "label", "clients", "share"]]


def _counts_by(scores: pd.DataFrame, column: str, order: tuple[str, ...]) -> pd.DataFrame:
    """Accounts, summed revenue at risk and annual revenue per value of ``column``, one row
    per value of ``order`` in that order (0 accounts where none)."""
    values = scores[column] if column in scores else pd.Series(pd.NA, index=scores.index)
    frame = pd.DataFrame(
        {
            "key": values.astype("string"),
            "revenue_at_risk": _numeric(scores, "revenue_at_risk"),
            "revenue_365d": _numeric(scores, "revenue_365d"),
        }
    )
    grouped = frame.groupby("key").agg(
        accounts=("key", "size"),
        revenue_at_risk=("revenue_at_risk", lambda s: s.sum(min_count=1)),
        revenue_365d=("revenue_365d", "sum"),
    )
    grouped = grouped.reindex(list(order))
    grouped["accounts"] = grouped["accounts"].fillna(0).astype(int)
    return grouped.rename_axis("key").reset_index()


def risk_counts(scores: pd.DataFrame) -> pd.DataFrame:
    """Accounts and revenue at risk by health band (critical, at risk, healthy)."""
    grouped = _counts_by(scores, "health_band", HEALTH_BANDS).rename(columns={"key": "band"})
    grouped["label"] = grouped["band"].map(BAND_LABELS)
    return grouped[["band", "label", "accounts", "revenue_at_risk", "revenue_365d"]]


def priority_counts(scores: pd.DataFrame) -> pd.DataFrame:
    """Accounts and revenue at risk by priority (act now, watch, ok; docs/metrics.md#priority),
    with the band style each is shown in (``css``). Scores stored before priorities existed
    have none and are left out."""
    grouped = _counts_by(scores, "priority", PRIORITIES).rename(columns={"key": "priority"})
    grouped["label"] = grouped["priority"].map(PRIORITY_LABELS)
    grouped["css"] = grouped["priority"].map(PRIORITY_CSS)
    return grouped[["priority", "label", "css", "accounts", "revenue_at_risk", "revenue_365d"]]


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


def escalation_counts(escalations: pd.DataFrame) -> pd.DataFrame:
    """Accounts per escalation rule that fired: rule, title, accounts."""
    if escalations.empty:
        return pd.DataFrame({"rule": [], "title": [], "accounts": []})
    title = escalations["title"] if "title" in escalations else escalations["rule"]
    frame = pd.DataFrame({"rule": escalations["rule"], "title": title.fillna(escalations["rule"])})
    out = (
        frame.groupby(["rule", "title"], as_index=False).size().rename(columns={"size": "accounts"})
    )
    return out.sort_values(["accounts", "rule"], ascending=[False, True]).reset_index(drop=True)


def risk_drivers(
    reasons: pd.DataFrame, labels: Mapping[str, str] | None = None, top: int = 10
) -> pd.DataFrame:
    """The factors that most often raise risk across accounts: feature, label, family,
    accounts (where it is a reason with a positive impact), mean_impact_pts, share."""
    positive = reasons[pd.to_numeric(reasons["impact_pts"], errors="coerce") > 0]
    n_accounts = reasons["account_id"].nunique() if not reasons.empty else 0
    if positive.empty:
        return pd.DataFrame(
            {"feature": [], "label": [], "family": [], "accounts": [], "mean_impact_pts": []}
        )
    out = positive.groupby("feature", as_index=False).agg(
        family=("family", "first"),
        accounts=("account_id", "nunique"),
        mean_impact_pts=("impact_pts", "mean"),
    )
    out = out.sort_values(["accounts", "mean_impact_pts"], ascending=[False, False]).head(top)
    names = labels or {}
    out["label"] = out["feature"].map(lambda f: names.get(f, f.replace("_", " ")))
    out["share"] = out["accounts"] / n_accounts if n_accounts else np.nan
    cols = ["feature", "label", "family", "accounts", "mean_impact_pts", "share"]
    return out[cols].reset_index(drop=True)


@dataclass
class RetentionSummary:
    """Everything the retention page and ``churn report`` show, for one scored date."""

    as_of: date
    window: tuple[date, date]
    logo_12m: LogoRetention
    revenue_12m: RevenueRetention
    quarterly: pd.DataFrame
    churn_by_stage: pd.DataFrame
    churn_by_segment: pd.DataFrame
    churn_reasons: pd.DataFrame
    risk_counts: pd.DataFrame
    priority_counts: pd.DataFrame
    escalation_counts: pd.DataFrame
    risk_drivers: pd.DataFrame
    accounts_scored: int
    revenue_at_risk: float | None
    scope: str = "all accounts"
    winbacks: pd.DataFrame | None = None


def retention_summary(
    base: RetentionBase,
    as_of: date,
    *,
    scores: pd.DataFrame | None = None,
    reasons: pd.DataFrame | None = None,
    escalations: pd.DataFrame | None = None,
    driver_labels: Mapping[str, str] | None = None,
    quarters: int = 8,
    scope: str = "all accounts",
    snapshots: SnapshotSettings | None = None,
) -> RetentionSummary:
    """Every retention metric for the scored date ``as_of`` (metrics end before ``as_of``);
    the win-backs use the inactivity window of ``snapshots`` (default settings)."""
    window = last_twelve_months(as_of)
    scores = scores if scores is not None else pd.DataFrame(columns=["health_band"])
    rar = _numeric(scores, "revenue_at_risk")
    return RetentionSummary(
        as_of=pd.Timestamp(as_of).date(),
        window=window,
        logo_12m=logo_retention(base, *window),
        revenue_12m=revenue_retention(base, *window),
        quarterly=quarterly_retention(base, as_of, quarters),
        churn_by_stage=churn_rate_by(base, *window, by="lifecycle_stage"),
        churn_by_segment=churn_rate_by(base, *window, by="revenue_segment"),
        churn_reasons=churn_reasons(base, *window),
        risk_counts=risk_counts(scores),
        priority_counts=priority_counts(scores),
        escalation_counts=escalation_counts(
            escalations if escalations is not None else pd.DataFrame()
        ),
        risk_drivers=risk_drivers(
            reasons
            if reasons is not None
            else pd.DataFrame(columns=["account_id", "feature", "family", "impact_pts"]),
            driver_labels,
        ),
        accounts_scored=len(scores),
        revenue_at_risk=None if rar.isna().all() else float(rar.sum()),
        scope=scope,
        winbacks=quarterly_winbacks(base, as_of, snapshots or SnapshotSettings(), quarters),
    )
