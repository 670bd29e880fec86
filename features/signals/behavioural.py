"""Behavioural signals: interaction and meeting frequency and its trend, cancellations,
silence, response times, business reviews, project scope and strategic share.

Sources: ``interactions`` (any channel, stamped ``occurred_at``) and ``projects`` (stamped
``started_at``; an end or an actual cost counts only once ``ended_at`` is before as_of).
"""

from __future__ import annotations

from typing import cast

import numpy as np

from features.contract import Tables
from features.signals.timeline import (
    NAT,
    Grid,
    Timeline,
    baseline_days,
    baseline_window,
    column,
    day_of,
    flag,
    floats,
    mask,
    not_before,
    pace_change,
    ratio,
    recorded,
    seconds,
    usual_pace,
)

WINDOWS = (30, 90, 180)
MEETING_CHANNELS = ("meeting", "business_review")
MISSED = ("cancelled", "rescheduled", "no_show")


def compute(tables: Tables, grid: Grid) -> dict[str, np.ndarray]:
    """Behavioural features per grid row; a missing table leaves its features out (NaN)."""
    out: dict[str, np.ndarray] = {}
    if tables.interactions is not None:
        out |= _interactions(tables, grid)
    if tables.projects is not None:
        out |= _projects(tables, grid)
    return out


def trend(recent: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """(recent - previous) / max(previous, 1): a relative change that stays finite from zero."""
    return cast(np.ndarray, (recent - previous) / np.maximum(previous, 1.0))


def _interactions(tables: Tables, grid: Grid) -> dict[str, np.ndarray]:
    frame = tables.interactions
    assert frame is not None
    acc, when = grid.code(frame["account_id"]), seconds(frame["occurred_at"])
    status, channel = frame["status"], frame["channel"]
    held = mask(status == "held")
    initiated_by = column(frame, "initiated_by", "string")
    events = Timeline(
        acc,
        when,
        {
            "held": held,
            "meeting": held & mask(channel.isin(MEETING_CHANNELS)),
            "review": held & mask(channel == "business_review"),
            "missed": mask(status.isin(MISSED)),
            "response": floats(column(frame, "response_hours")),
            "client_led": held & mask(initiated_by == "client"),
            "led_known": held & mask(initiated_by.notna()),
        },
    )
    a, t = grid.acc, grid.t
    out: dict[str, np.ndarray] = {}
    for what in ("held", "meeting"):
        stem = "interactions" if what == "held" else "meetings"
        for days in WINDOWS:
            out[f"{stem}_{days}d"] = events.total(what, a, grid.ago(days), t)
        previous = events.total(what, a, grid.ago(180), grid.ago(90))
        out[f"{'interaction' if what == 'held' else 'meeting'}_trend"] = trend(
            out[f"{stem}_90d"], previous
        )
    out["cancellation_rate_90d"] = ratio(
        events.total("missed", a, grid.ago(90), t), events.count(a, grid.ago(90), t)
    )
    held_events = Timeline(acc[held], when[held])
    last = held_events.when_at(held_events.last(a, t))
    out["days_since_last_contact"] = day_of(t) - day_of(last)
    out["silent_60d"] = flag(events.total("held", a, grid.ago(60), t) == 0)
    recent = events.mean("response", a, grid.ago(90), t)
    out["response_hours_90d"] = recent
    out["response_time_trend"] = recent - events.mean("response", a, grid.ago(180), grid.ago(90))
    out["business_review_6m"] = flag(events.total("review", a, grid.ago(182), t) > 0)
    out |= _against_usual(events, grid, recorded(tables, "interactions", "initiated_by"))
    return out


def _against_usual(events: Timeline, grid: Grid, initiated: bool) -> dict[str, np.ndarray]:
    """The last 90 days against the account's own year before them (baseline-relative)."""
    a, t, quarter = grid.acc, grid.t, grid.ago(90)
    start, end = baseline_window(grid)
    days = baseline_days(grid)

    def against_usual(what: str) -> np.ndarray:
        usual = usual_pace(events.total(what, a, start, end), days)
        return pace_change(events.total(what, a, quarter, t), usual)

    out: dict[str, np.ndarray] = {
        "interactions_vs_usual": against_usual("held"),
        "meetings_vs_usual": against_usual("meeting"),
        "response_hours_vs_usual": events.mean("response", a, quarter, t)
        - events.mean("response", a, start, end),
    }
    if initiated:
        recent = ratio(
            events.total("client_led", a, quarter, t), events.total("led_known", a, quarter, t)
        )
        usual = ratio(
            events.total("client_led", a, start, end), events.total("led_known", a, start, end)
        )
        out["client_initiated_share_90d"] = recent
        out["client_initiated_vs_usual"] = recent - usual
    return out


def _projects(tables: Tables, grid: Grid) -> dict[str, np.ndarray]:
    frame = tables.projects
    assert frame is not None
    acc = grid.code(frame["account_id"])
    started = seconds(frame["started_at"])
    ended = not_before(seconds(column(frame, "ended_at", "datetime64[ns]")), started)
    planned = not_before(seconds(column(frame, "planned_end_at", "datetime64[ns]")), started)
    budget = floats(column(frame, "budget"))
    cost = floats(column(frame, "actual_cost"))
    kind = column(frame, "kind", "string")
    known_kind = mask(kind.notna())
    strategic = mask(kind == "strategic")
    budget0 = np.nan_to_num(budget, nan=0.0)
    starts = Timeline(
        acc,
        started,
        {
            "budget": budget0,
            "known": known_kind,
            "strategic": strategic,
            "known_budget": budget0 * known_kind,
            "strategic_budget": budget0 * strategic,
        },
    )
    a, t = grid.acc, grid.t
    out: dict[str, np.ndarray] = {}
    if recorded(tables, "projects", "budget"):
        out["project_scope_trend"] = trend(
            starts.total("budget", a, grid.ago(180), t),
            starts.total("budget", a, grid.ago(360), grid.ago(180)),
        )
    if recorded(tables, "projects", "kind"):
        year = grid.ago(365)
        by_budget = ratio(
            starts.total("strategic_budget", a, year, t), starts.total("known_budget", a, year, t)
        )
        by_count = ratio(starts.total("strategic", a, year, t), starts.total("known", a, year, t))
        out["strategic_share"] = np.where(np.isnan(by_budget), by_count, by_budget)
    if recorded(tables, "projects", "budget") and recorded(tables, "projects", "actual_cost"):
        over = (ended != NAT) & (np.nan_to_num(cost, nan=-np.inf) > budget)
        out["projects_over_budget_365d"] = Timeline(acc[over], ended[over]).count(
            a, grid.ago(365), t
        )
    if recorded(tables, "projects", "planned_end_at"):
        has_plan = planned != NAT
        due = Timeline(acc[has_plan], planned[has_plan])
        # a planned project stops running late once it ended: at the later of plan and end
        done = has_plan & (ended != NAT)
        finished = Timeline(acc[done], np.maximum(planned[done], ended[done]))
        running_late = due.count(a, None, t) - finished.count(a, None, t)
        late = done & (ended > planned)
        ended_late = Timeline(acc[late], ended[late]).count(a, grid.ago(365), t)
        out["projects_late"] = running_late + ended_late
    return out
