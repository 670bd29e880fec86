"""Relationship signals: multi-threading on both sides, seniority reached, new buying
executives, departed key contacts, sentiment and its trend, competitor mentions.

Sources: ``contacts`` (known from ``started_at``; ended only when ``ended_at`` is before as_of)
and ``interactions``.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from features.contract import SENIORITY_LEVELS, Tables
from features.signals.timeline import (
    NAT,
    Grid,
    Timeline,
    baseline_window,
    column,
    flag,
    floats,
    mask,
    not_before,
    pace_change,
    ratio,
    recorded,
    seconds,
)

BUYING_ROLES = ("sponsor", "decision_maker", "procurement")
KEY_ROLES = ("sponsor", "decision_maker")
SENIOR = ("senior", "executive")


def compute(tables: Tables, grid: Grid) -> dict[str, np.ndarray]:
    """Relationship features per grid row; a missing table leaves its features out (NaN)."""
    out: dict[str, np.ndarray] = {}
    if tables.contacts is not None:
        out |= _contacts(tables, grid)
    if tables.interactions is not None:
        out |= _interactions(tables, grid)
    return out


def _contacts(tables: Tables, grid: Grid) -> dict[str, np.ndarray]:
    frame = tables.contacts
    assert frame is not None
    acc = grid.code(frame["account_id"])
    started = seconds(frame["started_at"])
    ended = not_before(seconds(column(frame, "ended_at", "datetime64[ns]")), started)
    client = mask(frame["side"] == "client")
    seniority, role = frame["seniority"], column(frame, "role", "string")
    levels = {
        f"level{i}": client & mask(seniority == name) for i, name in enumerate(SENIORITY_LEVELS)
    }
    joins = Timeline(
        acc,
        started,
        {
            "client": client,
            "firm": mask(frame["side"] == "firm"),
            "new_executive": client
            & mask(seniority == "executive")
            & mask(role.isin(BUYING_ROLES)),
            **levels,
        },
    )
    left = ended != NAT
    leaves = Timeline(
        acc[left],
        ended[left],
        {
            "client": client[left],
            "firm": mask(frame["side"] == "firm")[left],
            "key": (client & mask(role.isin(KEY_ROLES)))[left],
            **{name: lvl[left] for name, lvl in levels.items()},
        },
    )
    a, t = grid.acc, grid.t

    def active(what: str, when: np.ndarray = t) -> np.ndarray:
        # joined before `when` minus left before it (an end is never before its start); a
        # year ago reads as known now: the ends recorded since then count
        return cast(
            np.ndarray, joins.total(what, a, None, when) - leaves.total(what, a, None, when)
        )

    year_ago = grid.ago(365)
    out: dict[str, np.ndarray] = {
        "client_contacts_active": active("client"),
        "firm_contacts_active": active("firm"),
        "client_contacts_left_365d": leaves.total("client", a, year_ago, t),
    }
    # against a year ago only for clients that were clients then
    was_client = (grid.started == NAT) | (grid.started <= year_ago)
    for side in ("client", "firm"):
        then = np.where(was_client, active(side, year_ago), np.nan)
        out[f"{side}_contacts_vs_year_ago"] = pace_change(out[f"{side}_contacts_active"], then)
    level = np.full(len(grid), np.nan)
    for i in range(len(SENIORITY_LEVELS)):  # four levels, each a whole-array step
        level = np.where(active(f"level{i}") > 0, float(i), level)
    out["most_senior_client_level"] = level
    if recorded(tables, "contacts", "role"):
        out["new_executive_90d"] = flag(joins.total("new_executive", a, grid.ago(90), t) > 0)
        out["key_contact_departed_90d"] = flag(leaves.total("key", a, grid.ago(90), t) > 0)
    out["single_threaded"] = flag(out["client_contacts_active"] <= 1)
    return out


def _interactions(tables: Tables, grid: Grid) -> dict[str, np.ndarray]:
    frame = tables.interactions
    assert frame is not None
    held = mask(frame["status"] == "held")
    seniority = column(frame, "client_seniority", "string")
    events = Timeline(
        grid.code(frame["account_id"]),
        seconds(frame["occurred_at"]),
        {
            "sentiment": floats(column(frame, "sentiment")),
            "competitor": floats(column(frame, "competitor_mentioned")),
            "held_known": held & mask(seniority.notna()),
            "held_senior": held & mask(seniority.isin(SENIOR)),
        },
    )
    a, t, quarter = grid.acc, grid.t, grid.ago(90)
    recent = events.mean("sentiment", a, quarter, t)
    out: dict[str, np.ndarray] = {
        "sentiment_90d": recent,
        "sentiment_trend": recent - events.mean("sentiment", a, grid.ago(180), quarter),
        "senior_interaction_share_90d": ratio(
            events.total("held_senior", a, quarter, t), events.total("held_known", a, quarter, t)
        ),
    }
    start, end = baseline_window(grid)
    usual = events.mean("sentiment", a, start, end)
    out["sentiment_vs_usual"] = recent - usual
    out["sentiment_30d_vs_usual"] = events.mean("sentiment", a, grid.ago(30), t) - usual
    if recorded(tables, "interactions", "competitor_mentioned"):
        out["competitor_mentions_90d"] = events.total("competitor", a, quarter, t)
    return out
