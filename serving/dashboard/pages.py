"""What each dashboard page shows: the template context of the portfolio, one account and
the retention page, read from the score store for one viewer. No HTTP here: the views and
``churn report`` call these and render the result."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd

from churn.settings import SnapshotSettings, get_settings
from features.health import Bands
from serving.dashboard import charts, queue
from serving.dashboard.formatting import (
    SERVICE_LEVELS,
    STAGE_NAMES,
    change_between,
    field_label,
    flag_words,
    is_missing,
)
from serving.dashboard.sessions import Viewer
from serving.flags import FLAG_RULES, decode_flags
from serving.lapsed import lapse_sentence, lapsed_list
from serving.playbook import Playbook
from serving.priority import BAND_LABELS, PRIORITIES, PRIORITY_LABELS
from serving.retention import (
    HEALTH_BANDS,
    LIFECYCLE_STAGES,
    REVENUE_SEGMENTS,
    SEGMENT_LABELS,
    RetentionSummary,
    priority_counts,
    retention_summary,
    risk_counts,
)
from serving.score_record import HEALTH_COMPONENT_FIELDS, HEALTH_MAXIMUM, SERVICE_PART_FIELDS
from serving.store import RunCache, Store

PAGE_SIZE = 25
_SUMMARIES = RunCache()


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with None for missing values (templates test ``is not none``)."""
    clean = frame.astype(object).where(frame.notna(), None)
    records: list[dict[str, Any]] = clean.to_dict("records")
    return records


def _paged(
    frame: pd.DataFrame, page: int, url: Callable[[int], str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of page ``page`` (clamped to the pages there are, ``PAGE_SIZE`` rows each)
    and the pager under them (``pager.html``), whose links are ``url(page number)``."""
    total = len(frame)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(max(page, 1), pages)
    rows = _records(frame.iloc[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]) if total else []
    pager = {
        "total": total,
        "first": (page - 1) * PAGE_SIZE + 1 if total else 0,
        "last": min(page * PAGE_SIZE, total),
        "prev_url": url(page - 1) if page > 1 else None,
        "next_url": url(page + 1) if page < pages else None,
    }
    return rows, pager


def _health_band_options(frame: pd.DataFrame) -> list[tuple[str, str]]:
    options = [(b, f"Health: {BAND_LABELS[b]}") for b in HEALTH_BANDS]
    if "risk_band" in frame:
        risk = sorted({str(v) for v in frame["risk_band"].dropna()})
        options += [(r, f"Risk: {r.replace('_', ' ')}") for r in risk]
    return options


@dataclass(frozen=True)
class Queue:
    """The portfolio of one request: every account the viewer may see on the latest date, the
    filtered and sorted rows the page and the CSV export list, and the previous date's scores
    (for the movers)."""

    as_of: date | None
    query: queue.QueueQuery
    everything: pd.DataFrame
    rows: pd.DataFrame
    previous_as_of: date | None
    previous: pd.DataFrame
    escalation_rules: dict[str, str]


def portfolio_queue(store: Store, viewer: Viewer, params: Mapping[str, str]) -> Queue:
    """The accounts a portfolio request lists, filtered and in the queue's order."""
    query = queue.QueueQuery.from_params(params, viewer.scope)
    with store.reading():
        as_of = store.latest_as_of()
        if as_of is None:
            empty = pd.DataFrame()
            return Queue(None, query, empty, empty, None, empty, {})
        everything = store.portfolio(as_of, manager=viewer.scope)
        escalations = store.escalations(as_of, manager=viewer.scope)
        flags = store.flags(as_of, manager=viewer.scope)
        dates = store.dates()
        previous_as_of = dates[-2] if len(dates) >= 2 else None
        previous = (
            store.portfolio(previous_as_of, manager=viewer.scope)
            if previous_as_of is not None
            else pd.DataFrame()
        )
    everything = queue.with_flags(queue.with_escalations(everything, escalations), flags)
    rows = queue.sort_frame(queue.filter_frame(everything, query), query.sort, query.direction)
    rules = {
        str(code): str(rule)
        for code, rule in zip(escalations.get("code", []), escalations.get("rule", []), strict=True)
    }
    return Queue(as_of, query, everything, rows, previous_as_of, previous, rules)


def portfolio_context(
    store: Store,
    viewer: Viewer,
    params: Mapping[str, str],
    bands: Bands,
    page: int = 1,
    *,
    snapshots: SnapshotSettings | None = None,
) -> dict[str, Any]:
    """Everything ``portfolio.html`` shows for this viewer and these filters (its retention
    tiles from the summary the retention page shows, ``snapshots`` as for ``retention_for``)."""
    q = portfolio_queue(store, viewer, params)
    everything, frame, query = q.everything, q.rows, q.query
    with store.reading():
        managers = [] if viewer.scope is not None or not q.as_of else store.managers(q.as_of)
        summary = retention_for(store, viewer, snapshots=snapshots) if q.as_of else None
        version = model_version(store, q.as_of)
    kpis: dict[str, Any] = {}
    if not everything.empty:
        kpis = {
            "accounts": len(everything),
            "at_risk": int((everything["health_band"] == "at_risk").sum()),
            "critical": int((everything["health_band"] == "critical").sum()),
            "revenue_at_risk": (
                None
                if everything["revenue_at_risk"].isna().all()
                else float(everything["revenue_at_risk"].sum())
            ),
            "logo_retention": None,
            "nrr": None,
            # The viewer's whole portfolio of the date, like the tiles above (not the filtered
            # list): each priority tile links to the queue filtered by that priority.
            "by_priority": [
                {**row, "url": queue.QueueQuery({"priority": row["priority"]}).url()}
                for row in _records(priority_counts(everything))
            ],
            "by_band": {row["band"]: row for row in _records(risk_counts(everything))},
        }
        if summary is not None:
            kpis["logo_retention"] = summary.logo_12m.rate
            kpis["nrr"] = summary.revenue_12m.nrr
    kpis.setdefault("by_priority", [])
    kpis.setdefault("by_band", {})
    rows, pager = _paged(frame, page, lambda n: query.url(page=n))
    has_priority = "priority" in everything and bool(everything["priority"].notna().any())
    columns = [
        {
            "key": key,
            "label": sort.label,
            "url": query.sorted_by(key).url(),
            "sorted": (
                None
                if key != query.sort
                else ("ascending" if query.direction == "asc" else "descending")
            ),
        }
        for key, sort in queue.SORTS.items()
    ]
    return {
        "active": "portfolio",
        "as_of": q.as_of,
        "model_version": version,
        "bands": bands,
        "kpis": kpis,
        "rows": rows,
        "has_priority": has_priority,
        "columns": {c["key"]: c for c in columns},
        "sort": {"key": query.sort, "direction": query.direction, "default": query.is_default_sort},
        "filters": {**query.filters, "active": bool(query.kept)},
        "hidden_sort": (
            {} if query.is_default_sort else {"sort": query.sort, "dir": query.direction}
        ),
        "csv_url": query.url("/portfolio.csv"),
        "options": {
            "priorities": [(p, PRIORITY_LABELS[p]) for p in PRIORITIES],
            "bands": _health_band_options(everything),
            "segments": [(s, SEGMENT_LABELS[s]) for s in REVENUE_SEGMENTS],
            "stages": [(s, STAGE_NAMES.get(s, s)) for s in LIFECYCLE_STAGES],
            "service": [(k, v.label) for k, v in SERVICE_LEVELS.items()],
            "escalations": [
                (queue.ANY_ESCALATION, "Any escalation"),
                (queue.NO_ESCALATION, "No escalation"),
                *sorted(q.escalation_rules.items(), key=lambda kv: kv[1]),
            ],
            "flags": [
                (queue.ANY_FLAG, "Any flag"),
                (queue.NO_FLAG, "No flag"),
                *((code, flag_words(code).marker) for code in queue.FLAG_CODES),
            ],
            "managers": managers,
        },
        "movers": _movers(q, frame),
        "pager": pager,
    }


def _movers(q: Queue, filtered: pd.DataFrame) -> dict[str, Any]:
    """The accounts (of the filtered list) whose churn probability or health score moved most
    between the two latest stored scoring dates."""
    return {
        "previous_as_of": q.previous_as_of,
        "probability": queue.movers(filtered, q.previous, "churn_probability", minimum=0.005),
        "health": queue.movers(filtered, q.previous, "health_score", minimum=0.5),
    }


def portfolio_csv(store: Store, viewer: Viewer, params: Mapping[str, str]) -> tuple[str, str]:
    """The CSV export of a portfolio request: (file name, text), every filtered row."""
    q = portfolio_queue(store, viewer, params)
    return queue.csv_filename(q.as_of, q.query), queue.csv_text(q.rows, q.as_of)


def model_version(store: Store, as_of: date | None) -> str | None:
    """The model version that scored ``as_of`` (None without a model or a date)."""
    if as_of is None:
        return None
    runs = store.runs()
    mine = runs[runs["as_of"] == pd.Timestamp(as_of)]
    if mine.empty or pd.isna(mine["model_version"].iloc[0]):
        return None
    return str(mine["model_version"].iloc[0])


def account_context(
    store: Store, viewer: Viewer, account_id: str, horizon_days: int, bands: Bands
) -> dict[str, Any] | None:
    """Everything ``account.html`` shows; None when the account is unknown to this viewer."""
    with store.reading():
        record = store.account(account_id, manager=viewer.scope)
        if record is None:
            return None
        version = model_version(store, record.score["as_of"])
    s = record.score
    history = record.history
    labels = [pd.Timestamp(d).strftime("%b %Y") for d in history["as_of"]]
    chart = charts.line_chart(
        labels,
        [
            charts.Series("Health score", history["health_score"].tolist(), "health"),
            charts.Series(
                "Churn probability (right axis)",
                (history["churn_probability"] * 100).tolist(),
                "probability",
                right=True,
            ),
        ],
        title="Churn probability and health score over time",
        y_min=0,
        y_max=HEALTH_MAXIMUM,
        y2_format=lambda v: f"{v:.3g} %",
        zones=[
            charts.Zone(0, bands.at_risk, "critical", "critical zone"),
            charts.Zone(bands.at_risk, bands.healthy, "at_risk", "at-risk zone"),
        ],
    )
    components = []
    for field in HEALTH_COMPONENT_FIELDS:
        label, maximum = field_label(field.column)
        column = field.column
        value = s.get(column)
        css = _component_css(value, maximum, bands)
        components.append(
            {
                "label": label,
                "value": value,
                "max": int(maximum),
                "gauge": charts.gauge(value, maximum, css=css),
            }
        )
    service_parts = [
        {"label": p.label, "value": s.get(p.column), "max": int(p.maximum or 0)}
        for p in SERVICE_PART_FIELDS
    ]
    reasons = _records(record.reasons)
    scale = max([abs(r["impact_pts"] or 0.0) for r in reasons] + [1.0])
    for r in reasons:
        r["impact_pts"] = r["impact_pts"] or 0.0
        r["bar"] = charts.impact_bar(r["impact_pts"], scale)
    previous = record.previous or {}
    return {
        "flags": _flags(record.flags),
        "active": "portfolio",
        "as_of": s["as_of"],
        "model_version": version,
        "s": s,
        "name": record.name,
        "history_chart": chart,
        "history_points": len(history),
        "components": components,
        "service_parts": service_parts,
        "reasons": reasons,
        "escalations": _records(record.escalations),
        "actions": _records(record.actions),
        "horizon_days": horizon_days,
        "changes": {
            "health_score": change_between(
                s.get("health_score"), previous.get("health_score"), worse_up=False
            ),
            "churn_probability": change_between(
                s.get("churn_probability"),
                previous.get("churn_probability"),
                pct_points=True,
                worse_up=True,
            ),
        },
    }


#: Flags that set the model's reasons beside the health rules' (a disagreement); the others
#: (a data-quality flag) carry no reasons.
_TWO_SIDED = {rule.code for rule in FLAG_RULES if rule.reasons}


def _flags(stored: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The account's stored flags as the page shows them: heading, marker, sentence and, for a
    disagreement, the reasons of both sides."""
    if stored is None or stored.empty:
        return []
    order = {code: i for i, code in enumerate(queue.FLAG_CODES)}
    flags = sorted(decode_flags(stored), key=lambda f: order.get(f["code"], len(order)))
    return [
        {
            **f,
            "title": flag_words(f["code"]).title,
            "marker": flag_words(f["code"]).marker,
            "two_sided": f["code"] in _TWO_SIDED or bool(f["model_reasons"] or f["rule_reasons"]),
        }
        for f in flags
    ]


def _component_css(value: Any, maximum: float, bands: Bands) -> str:
    """A component's colour: the health band its share of its maximum would have as a score."""
    if is_missing(value):
        return "primary"
    share = float(value) / maximum
    if share >= bands.healthy / HEALTH_MAXIMUM:
        return "healthy"
    return "at_risk" if share >= bands.at_risk / HEALTH_MAXIMUM else "critical"


def retention_for(
    store: Store,
    viewer: Viewer | None = None,
    *,
    manager: str | None = None,
    snapshots: SnapshotSettings | None = None,
) -> RetentionSummary | None:
    """The retention summary of the latest stored date, for everyone or one manager; the
    win-backs with the inactivity window of ``snapshots`` (default: the settings')."""
    scope = manager if manager is not None else (viewer.scope if viewer else None)
    snapshots = snapshots or get_settings().snapshots
    with store.reading():
        as_of = store.latest_as_of()
        if as_of is None:
            return None
        # The summary changes only when a score run writes: cache it per store, run and scope.
        window = (snapshots.min_silence_days, snapshots.purchase_cycles)
        key = RunCache.key(store, scope, window)
        cached: RetentionSummary | None = _SUMMARIES.get(key)
        if cached is not None:
            return cached
        base = store.retention_base(manager=scope)
        if base is None:
            return None
        scores = store.portfolio(as_of, manager=scope)
        reasons = store.reasons(as_of, manager=scope)
        escalations = store.escalations(as_of, manager=scope)
    from features.catalog import FEATURES

    labels = {name: f.description for name, f in FEATURES.items()}
    summary = retention_summary(
        base,
        as_of,
        scores=scores,
        reasons=reasons,
        escalations=escalations,
        driver_labels=labels,
        scope=f"accounts of {scope}" if scope else "all accounts",
        snapshots=snapshots,
    )
    _SUMMARIES.put(key, summary)
    return summary


def retention_context(summary: RetentionSummary) -> dict[str, Any]:
    """Charts and rows of ``retention_body.html``."""
    q = summary.quarterly
    stage, segment = summary.churn_by_stage, summary.churn_by_segment

    def rate_notes(frame: pd.DataFrame) -> list[str]:
        return [
            f"{c} of {n:,} clients" for c, n in zip(frame["churned"], frame["clients"], strict=True)
        ]

    severity = summary.risk_counts
    drivers = summary.risk_drivers
    reasons = summary.churn_reasons
    return {
        "r": summary,
        "quarterly": _records(q),
        "severity": _records(severity),
        "priorities": _records(summary.priority_counts),
        "escalation_counts": _records(summary.escalation_counts),
        "winbacks": None if summary.winbacks is None else _records(summary.winbacks),
        "charts": {
            "quarterly": charts.line_chart(
                q["quarter"].tolist(),
                [
                    charts.Series("Logo retention", q["logo_retention"].tolist(), "logo"),
                    charts.Series("Gross revenue retention", q["grr"].tolist(), "grr"),
                    charts.Series("Net revenue retention", q["nrr"].tolist(), "nrr"),
                ],
                title="Logo, gross and net revenue retention by quarter",
                y_format=charts.percent,
                reference=1.0,
                height=280,
                width=1100,
            ),
            "stage": charts.bar_chart(
                stage["label"].tolist(),
                stage["churn_rate"].tolist(),
                title="Churn rate by lifecycle stage, last 12 months",
                value_format=charts.percent1,
                notes=rate_notes(stage),
                css="critical",
            ),
            "segment": charts.bar_chart(
                segment["label"].tolist(),
                segment["churn_rate"].tolist(),
                title="Churn rate by revenue segment, last 12 months",
                value_format=charts.percent1,
                notes=rate_notes(segment),
                css="critical",
            ),
            "reasons": charts.bar_chart(
                reasons["label"].tolist(),
                reasons["clients"].tolist(),
                title="Why clients left, last 12 months",
                notes=[charts.percent(s) for s in reasons["share"]],
                css="brand",
            ),
            "severity": charts.stacked_bar(
                severity["label"].tolist(),
                severity["accounts"].tolist(),
                severity["band"].tolist(),
                title="Scored accounts by health band",
            ),
            "drivers": charts.bar_chart(
                drivers["label"].tolist(),
                drivers["accounts"].tolist(),
                title="Most common risk drivers",
                notes=[f"avg +{v:.1f} pts" for v in drivers["mean_impact_pts"]],
                css="critical",
            ),
        },
    }


def lapsed_context(
    store: Store, viewer: Viewer, snapshots: SnapshotSettings, playbook: Playbook, page: int = 1
) -> dict[str, Any]:
    """The lapsed clients page: the clients the viewer may see that are past their silence
    window on the latest scored date, most revenue lost first, with the win-back action."""
    found = lapsed_list(store, snapshots, manager=viewer.scope)
    rows, pager = _paged(found.rows, page, lambda n: f"/lapsed?page={n}")
    for row in rows:
        row["why"] = lapse_sentence(row)
    return {
        "active": "lapsed",
        "as_of": found.as_of,
        "recorded": found.recorded,
        "rows": rows,
        "total": len(found.rows),
        "revenue_lost": found.revenue_lost,
        "action": playbook.situation_action("lapsed"),
        "window": {
            "floor": snapshots.min_silence_days,
            "cycles": snapshots.purchase_cycles,
        },
        "pager": pager,
    }
