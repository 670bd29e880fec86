"""Data profile printed by ``churn validate``: how often and why clients leave, and how
concentrated revenue is, computed from validated ``Tables``.

Definitions (also printed with the numbers):

* Observed period: from the earliest to the latest record stamp of the event tables
  (interactions, invoices, projects, surveys, tickets, churn events, contacts).
* Annual churn rate: churn events in the period per account-year at risk, where an account is
  at risk from the later of its start and the period start until the earlier of its churn and
  the period end. A rate of 12 % means about 12 of 100 clients leave per year.
* Churn rate by lifecycle stage: the same ratio with each account's time at risk split by the
  stage it was in (new: tenure under 12 months, established: 12 to under 36, long_term: 36 and
  more; months of 30.4375 days as in the features) and each churn counted in its stage at the
  churn date.
* Reason mix: share of churn events per reason (empty reasons count as ``unknown``).
* Revenue concentration: share of the trailing-12-months invoiced amount (the 365 days up to
  the period end) brought by the top 20 % of clients by that amount, among clients with any;
  without invoices, the share of contract value of the top 20 % of accounts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd

from features.contract import CHURN_REASONS, TABLES, Tables
from features.signals.lifecycle import DAYS_PER_MONTH, STAGE_BOUNDS_MONTHS, STAGES

if TYPE_CHECKING:
    from rich.console import RenderableType

DAYS_PER_YEAR = 365.25
TOP_SHARE = 0.2
TRAILING_DAYS = 365
_PERIOD_TABLES = (
    "interactions",
    "invoices",
    "projects",
    "surveys",
    "tickets",
    "churn_events",
    "contacts",
)


@dataclass
class StageChurn:
    """Churn in one lifecycle stage: churns, account-years at risk and their ratio per year."""

    stage: str
    churned: int
    account_years: float
    annual_rate: float


@dataclass
class DemoProfile:
    """The profile of a source. A number that cannot be computed is NaN (or empty) and
    ``notes`` says why."""

    accounts: int
    period_start: pd.Timestamp | None
    period_end: pd.Timestamp | None
    churned: int | None
    annual_churn_rate: float
    by_stage: list[StageChurn] = field(default_factory=list)
    reason_mix: dict[str, float] = field(default_factory=dict)
    revenue_top20_share: float = float("nan")
    revenue_basis: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def period_years(self) -> float:
        """Length of the observed period, both end days included."""
        if self.period_start is None or self.period_end is None:
            return float("nan")
        return cast(float, ((self.period_end - self.period_start).days + 1) / DAYS_PER_YEAR)


def profile(tables: Tables) -> DemoProfile:
    """Churn rates (overall and by lifecycle stage), reason mix and revenue concentration."""
    accounts = tables.accounts
    notes: list[str] = []
    start, end = _period(tables)
    result = DemoProfile(
        accounts=len(accounts),
        period_start=start,
        period_end=end,
        churned=None,
        annual_churn_rate=float("nan"),
        notes=notes,
    )
    events = tables.churn_events
    if start is None or end is None:
        notes.append("no dated records: the observed period, churn rates and revenue are unknown")
    elif events is None:
        notes.append("table churn_events is missing: churn rates and reasons cannot be computed")
    else:
        _churn_rates(result, accounts, events, start, end)
    if events is not None:
        reason = events["reason"].astype("string").fillna("unknown")
        shares = reason.value_counts(normalize=True, sort=False)
        order = [*CHURN_REASONS, "unknown"]
        order += sorted(set(shares.index) - set(order))
        result.reason_mix = {r: float(shares[r]) for r in order if r in shares.index}
        result.churned = len(events)
    _concentration(result, tables, end)
    return result


def _period(tables: Tables) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    lows, highs = [], []
    for name in _PERIOD_TABLES:
        frame = tables.get(name)
        stamp = TABLES[name].stamp
        if frame is None or stamp is None or not len(frame):
            continue
        values = pd.to_datetime(frame[stamp]).dropna()
        if len(values):
            lows.append(values.min())
            highs.append(values.max())
    if not lows:
        return None, None
    return pd.Timestamp(min(lows)).normalize(), pd.Timestamp(max(highs)).normalize()


def _churn_rates(
    result: DemoProfile,
    accounts: pd.DataFrame,
    events: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> None:
    churn = (
        events.dropna(subset=["churned_at"])
        .groupby("account_id", sort=False)["churned_at"]
        .min()
        .rename("churned_at")
    )
    frame = accounts[["account_id", "started_at"]].merge(
        churn, how="left", left_on="account_id", right_index=True
    )
    frame = frame.dropna(subset=["started_at"])
    started = _days(frame["started_at"])
    churned_at = _days(frame["churned_at"])
    lo = np.maximum(started, _days(pd.Series([start]))[0])
    hi = np.fmin(churned_at, _days(pd.Series([end]))[0] + 1)
    in_period = ~np.isnan(churned_at) & (churned_at >= lo) & (churned_at <= hi)
    bounds = np.array([0.0, *STAGE_BOUNDS_MONTHS, np.inf]) * DAYS_PER_MONTH
    tenure_at_churn = churned_at - started
    total_years, total_churn = 0.0, 0
    for i, stage in enumerate(STAGES):
        s_lo = np.maximum(lo, started + bounds[i])
        s_hi = np.minimum(hi, started + bounds[i + 1])
        years = float(np.clip(s_hi - s_lo, 0, None).sum() / DAYS_PER_YEAR)
        churns = int(
            (in_period & (tenure_at_churn >= bounds[i]) & (tenure_at_churn < bounds[i + 1])).sum()
        )
        rate = churns / years if years > 0 else float("nan")
        result.by_stage.append(StageChurn(stage, churns, years, rate))
        total_years += years
        total_churn += churns
    result.annual_churn_rate = total_churn / total_years if total_years > 0 else float("nan")


def _days(values: pd.Series) -> np.ndarray:
    """Dates as float day numbers (NaN for missing)."""
    stamps = pd.to_datetime(values).to_numpy(dtype="datetime64[D]")
    out: np.ndarray = stamps.astype(np.int64).astype(np.float64)
    out[np.isnat(stamps)] = np.nan
    return out


def _concentration(result: DemoProfile, tables: Tables, end: pd.Timestamp | None) -> None:
    invoices = tables.invoices
    if invoices is not None and end is not None and len(invoices):
        since = end - pd.Timedelta(days=TRAILING_DAYS - 1)
        issued = pd.to_datetime(invoices["issued_at"])
        recent = invoices[(issued >= since) & (issued <= end)]
        basis = recent.groupby("account_id")["amount"].sum()
        result.revenue_basis = (
            f"invoiced amount {since.date()} to {end.date()} (trailing 12 months)"
        )
    elif "contract_value" in tables.accounts:
        basis = tables.accounts["contract_value"]
        result.revenue_basis = "accounts.contract_value (no invoices)"
        result.notes.append(
            "table invoices is missing: concentration uses contract value, not invoiced revenue"
        )
    else:
        result.notes.append("no invoices and no contract values: concentration unknown")
        return
    values = np.sort(pd.to_numeric(basis, errors="coerce").dropna().to_numpy(dtype=float))[::-1]
    values = values[values > 0]
    if not len(values):
        result.notes.append("no positive revenue: concentration unknown")
        return
    top = max(1, round(TOP_SHARE * len(values)))
    result.revenue_top20_share = float(values[:top].sum() / values.sum())


def render_profile(tables: Tables) -> RenderableType:
    """The profile as rich tables with the definitions of each number."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    p = profile(tables)
    parts: list[RenderableType] = []
    period = (
        f"{p.period_start.date()} to {p.period_end.date()} ({p.period_years:.1f} years)"
        if p.period_start is not None and p.period_end is not None
        else "unknown"
    )
    head = Table(title="Data profile", show_header=False)
    head.add_column("what")
    head.add_column("value", justify="right")
    head.add_row("accounts", f"{p.accounts:,}")
    head.add_row("observed period (record stamps)", period)
    head.add_row("churn events", "-" if p.churned is None else f"{p.churned:,}")
    head.add_row("annual churn rate (churns per account-year at risk)", _pct(p.annual_churn_rate))
    head.add_row(
        "revenue share of the top 20 % of clients",
        _pct(p.revenue_top20_share) + (f"  [dim]{p.revenue_basis}[/]" if p.revenue_basis else ""),
    )
    parts.append(head)
    if p.by_stage:
        stages = Table(
            title="Churn by lifecycle stage",
            caption="rate = churns in the stage / account-years spent in it during the period; "
            "stage at churn: new < 12 months of tenure, established 12-36, long_term 36+",
        )
        for col in ("stage", "churned", "account-years", "annual churn rate"):
            stages.add_column(col, justify="left" if col == "stage" else "right")
        for s in p.by_stage:
            stages.add_row(
                s.stage, f"{s.churned:,}", f"{s.account_years:,.0f}", _pct(s.annual_rate)
            )
        parts.append(stages)
    if p.reason_mix:
        reasons = Table(title="Churn reasons", caption="share of churn events")
        reasons.add_column("reason")
        reasons.add_column("share", justify="right")
        for reason, share in p.reason_mix.items():
            reasons.add_row(reason, _pct(share))
        parts.append(reasons)
    for note in p.notes:
        parts.append(Text(f"note: {note}", style="yellow"))
    return Group(*parts)


def _pct(value: float) -> str:
    return "-" if value is None or np.isnan(value) else f"{100 * value:.1f} %"
