"""Satisfaction signals: the last survey score, its change, how long ago it was,
complaints and tickets, and what is still open.

Sources: ``surveys`` (stamped ``answered_at``) and ``tickets`` (known from ``opened_at``; closed
only when ``closed_at`` is before as_of).
"""

from __future__ import annotations

import numpy as np

from features.contract import Tables
from features.signals.timeline import (
    DAY,
    NAT,
    Grid,
    Timeline,
    baseline_days,
    baseline_window,
    column,
    day_of,
    floats,
    mask,
    not_before,
    pace_change,
    recorded,
    seconds,
    usual_pace,
)

HIGH_SEVERITY = ("high", "critical")
# A client's usual survey score: the mean of its answers in the three years before the last.
USUAL_SURVEY_DAYS = 1095


def compute(tables: Tables, grid: Grid) -> dict[str, np.ndarray]:
    """Satisfaction features per grid row; a missing table leaves its features out (NaN)."""
    out: dict[str, np.ndarray] = {}
    if tables.surveys is not None:
        out |= _surveys(tables, grid)
    if tables.tickets is not None:
        out |= _tickets(tables, grid)
    return out


def _surveys(tables: Tables, grid: Grid) -> dict[str, np.ndarray]:
    frame = tables.surveys
    assert frame is not None
    score = floats(frame["score"])
    # answers of the same day are ordered by score, so "the last one" never depends on row order
    answers = Timeline(
        grid.code(frame["account_id"]), seconds(frame["answered_at"]), {"score": score}, score
    )
    last = answers.last(grid.acc, grid.t)
    before = answers.previous(last, grid.acc)
    last_score = answers.value_at("score", last)
    answered = answers.when_at(last)
    # the earlier answers: from three years before the last one up to (not including) its day
    until = np.where(answered == NAT, grid.t, answered)
    usual = answers.mean("score", grid.acc, until - USUAL_SURVEY_DAYS * DAY, until)
    return {
        "last_survey_score": last_score,
        "survey_score_change": last_score - answers.value_at("score", before),
        "days_since_last_survey": day_of(grid.t) - day_of(answered),
        "survey_score_vs_usual": last_score - usual,
    }


def _tickets(tables: Tables, grid: Grid) -> dict[str, np.ndarray]:
    frame = tables.tickets
    assert frame is not None
    acc = grid.code(frame["account_id"])
    opened = seconds(frame["opened_at"])
    closed = not_before(seconds(column(frame, "closed_at", "datetime64[ns]")), opened)
    high = mask(frame["severity"].isin(HIGH_SEVERITY))
    opens = Timeline(
        acc, opened, {"high": high, "complaint": floats(column(frame, "is_complaint"))}
    )
    done = closed != NAT
    closes = Timeline(acc[done], closed[done], {"high": high[done]})
    a, t = grid.acc, grid.t
    out = {
        "tickets_90d": opens.count(a, grid.ago(90), t),
        "open_tickets": opens.count(a, None, t) - closes.count(a, None, t),
        "open_high_severity_tickets": opens.total("high", a, None, t)
        - closes.total("high", a, None, t),
    }
    start, end = baseline_window(grid)
    days = baseline_days(grid)
    out["tickets_vs_usual"] = pace_change(
        out["tickets_90d"], usual_pace(opens.count(a, start, end), days)
    )
    if recorded(tables, "tickets", "is_complaint"):
        out["complaints_90d"] = opens.total("complaint", a, grid.ago(90), t)
        out["complaints_vs_usual"] = pace_change(
            out["complaints_90d"], usual_pace(opens.total("complaint", a, start, end), days)
        )
    return out
