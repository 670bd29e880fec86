"""The dashboard: server-rendered pages for account managers and the retention lead.

Pages: ``/login`` (an API key, exchanged for a signed session cookie: HttpOnly,
SameSite=Strict; it names the key and a random session id), ``/logout`` (revokes that session
id, so a copied cookie stops working too; revocations are kept in
``<keys file stem>.sessions`` beside the keys file until the cookie would have expired
anyway), ``/`` (the portfolio), ``/accounts/{id}`` (one account) and
``/retention`` (retention metrics). A manager sees only the accounts they manage, everywhere.
Charts are inline SVG from ``serving.charts``; the only other files are the stylesheet and the
favicon under ``/static``, so it works offline with ``Content-Security-Policy: default-src
'self'`` and no script at all. ``render_report`` renders the retention page as one
self-contained HTML file for ``churn report``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pandas as pd
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from features.health import COMPONENT_MAXIMA
from serving import charts
from serving.retention import (
    BAND_LABELS,
    HEALTH_BANDS,
    REVENUE_SEGMENTS,
    SEGMENT_LABELS,
    RetentionSummary,
    retention_summary,
)
from serving.store import SERVICE_PARTS, Store

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
SESSION_COOKIE = "churn_session"
SESSION_MAX_AGE = 8 * 3600
SESSION_SALT = "churn-dashboard-session"
PAGE_SIZE = 25
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
SERVICE_LABELS: Mapping[str, tuple[str, int]] = {
    "service_client_contacts": ("More than one contact at the client", 1),
    "service_firm_contacts": ("Client knows more than one of us", 1),
    "service_meetings": ("Two or more meetings in six months", 1),
    "service_seniority": ("Most senior contact (junior 0, middle 1, senior 2)", 2),
    "service_survey": ("Last survey score above 8", 1),
}
COMPONENT_LABELS: Mapping[str, str] = {
    "engagement": "Engagement",
    "relationship": "Relationship depth",
    "financial": "Financial health",
    "satisfaction": "Satisfaction",
}
STAGE_NAMES = {"new": "New", "established": "Established", "long_term": "Long-term"}
_SUMMARY_CACHE: dict[tuple[Any, ...], RetentionSummary] = {}
_CACHE_LOCK = threading.Lock()


# -- formatting (Jinja filters) --------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def fmt_money(value: Any) -> str:
    """Compact amounts: 1.25 M, 48.2 k, 950."""
    if _missing(value):
        return "—"
    v = float(value)
    if abs(v) >= 1e6:
        return f"{v / 1e6:,.2f} M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:,.1f} k"
    return f"{v:,.0f}"


def fmt_pct(value: Any, digits: int = 0) -> str:
    return "—" if _missing(value) else f"{float(value) * 100:.{digits}f} %"


def fmt_num(value: Any) -> str:
    if _missing(value):
        return "—"
    v = float(value)
    return f"{v:,.0f}" if abs(v - round(v)) < 0.05 else f"{v:,.1f}"


def fmt_signed(value: Any) -> str:
    if _missing(value):
        return "—"
    v = float(value)
    return f"+{v:.1f}" if v > 0 else f"−{abs(v):.1f}" if v < 0 else "0.0"


def fmt_change(
    value: Any, pct_points: bool = False, higher_is_worse: bool = False, quiet: bool = False
) -> Markup:
    """An arrow and the change since last month, coloured better / worse (``quiet``: nothing
    when it did not change)."""
    if _missing(value):
        return Markup("")
    v = float(value) * (100 if pct_points else 1)
    unit = " pts" if pct_points else ""
    if abs(v) < 0.5:
        if quiet:
            return Markup("")
        return Markup(f'<span class="change flat" title="change since last month">±0{unit}</span>')
    worse = (v > 0) == higher_is_worse
    arrow = "▲" if v > 0 else "▼"
    css = "worse" if worse else "better"
    return Markup(
        f'<span class="change {css}" title="change since last month">{arrow} '
        f"{abs(v):.0f}{unit}</span>"
    )


def fmt_day(value: Any) -> str:
    if _missing(value):
        return "—"
    return pd.Timestamp(value).strftime("%-d %b %Y")


def fmt_prevday(value: Any) -> str:
    """The day before: periods are [start, end), people read them inclusive."""
    return "—" if _missing(value) else fmt_day(pd.Timestamp(value) - timedelta(days=1))


def fmt_months(value: Any) -> str:
    if _missing(value):
        return "—"
    months = int(float(value))
    years, rest = divmod(months, 12)
    if years == 0:
        return f"{rest} month{'s' if rest != 1 else ''}"
    tail = f" {rest} month{'s' if rest != 1 else ''}" if rest else ""
    return f"{years} year{'s' if years != 1 else ''}{tail}"


def fmt_count(value: Any) -> str:
    return "—" if _missing(value) else f"{int(value):,}"


_PTS_SUFFIX = re.compile(r"\s*\([+\-−]?\d+(?:\.\d+)? pts\)$")


def bare_sentence(text: Any) -> str:
    """A reason's sentence without the "(+9 pts)" the API appends (the page draws the bar)."""
    return "" if _missing(text) else _PTS_SUFFIX.sub("", str(text))


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The Jinja environment shared by the dashboard and ``churn report``."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        money=fmt_money,
        pct=fmt_pct,
        pct1=lambda v: fmt_pct(v, 1),
        num=fmt_num,
        signed=fmt_signed,
        change=fmt_change,
        day=fmt_day,
        prevday=fmt_prevday,
        months=fmt_months,
        count=fmt_count,
        stage=lambda s: "—" if _missing(s) else STAGE_NAMES.get(str(s), str(s)),
        bare=bare_sentence,
        capfirst=lambda t: "" if _missing(t) else str(t)[:1].upper() + str(t)[1:],
        bandlabel=lambda b: "—" if _missing(b) else BAND_LABELS.get(str(b), str(b)),
    )
    return env


def render(template: str, **context: Any) -> str:
    """Render one template of ``serving/templates`` to a string."""
    return environment().get_template(template).render(**context)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with None for missing values (templates test ``is not none``)."""
    clean = frame.astype(object).where(frame.notna(), None)
    return clean.to_dict("records")


# -- who is looking ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """The logged-in user as the dashboard needs it: role and (for managers) the manager."""

    role: str
    manager: str | None = None
    key_id: str | None = None

    @property
    def display(self) -> str:
        return self.manager or {"admin": "Administrator", "crm": "CRM integration"}.get(
            self.role, self.role
        )

    @property
    def scope(self) -> str | None:
        """The manager whose accounts this viewer may see; None for all accounts."""
        return self.manager if self.role == "manager" else None


# -- view models -----------------------------------------------------------------------------


def _health_band_options(frame: pd.DataFrame) -> list[tuple[str, str]]:
    options = [(b, f"Health: {BAND_LABELS[b]}") for b in HEALTH_BANDS]
    if "risk_band" in frame:
        risk = sorted({str(v) for v in frame["risk_band"].dropna()})
        options += [(r, f"Risk: {r.replace('_', ' ')}") for r in risk]
    return options


def portfolio_context(
    store: Store, viewer: Viewer, params: Mapping[str, str], page: int = 1
) -> dict[str, Any]:
    """Everything ``portfolio.html`` shows for this viewer and these filters."""
    filters = {k: (params.get(k) or None) for k in ("band", "segment", "manager", "q")}
    if viewer.scope is not None:
        filters["manager"] = viewer.scope
    with store.reading():
        as_of = store.latest_as_of()
        everything = store.portfolio(as_of, manager=viewer.scope) if as_of else pd.DataFrame()
        managers = [] if viewer.scope is not None or not as_of else store.managers(as_of)
        summary = retention_for(store, viewer) if as_of else None
        model_version = _model_version(store, as_of)
    frame = everything
    if not frame.empty:
        if filters["band"]:
            frame = frame[
                (frame["health_band"] == filters["band"]) | (frame["risk_band"] == filters["band"])
            ]
        if filters["segment"]:
            frame = frame[frame["revenue_segment"] == filters["segment"]]
        if filters["manager"]:
            frame = frame[frame["account_manager"] == filters["manager"]]
        if filters["q"]:
            q = filters["q"].lower()
            name = frame["name"].astype("string").str.lower().fillna("")
            ident = frame["account_id"].astype("string").str.lower()
            frame = frame[name.str.contains(q, regex=False) | ident.str.contains(q, regex=False)]
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
        }
        if summary is not None:
            kpis["logo_retention"] = summary.logo_12m.rate
            kpis["nrr"] = summary.revenue_12m.nrr
    total = len(frame)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(max(page, 1), pages)
    rows = _records(frame.iloc[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]) if total else []
    kept = {k: v for k, v in filters.items() if v and not (k == "manager" and viewer.scope)}

    def page_url(n: int) -> str:
        return "/?" + urlencode({**kept, "page": n})

    return {
        "active": "portfolio",
        "as_of": as_of,
        "model_version": model_version,
        "kpis": kpis,
        "rows": rows,
        "filters": {**filters, "active": bool(kept)},
        "options": {
            "bands": _health_band_options(everything),
            "segments": [(s, SEGMENT_LABELS[s]) for s in REVENUE_SEGMENTS],
            "managers": managers,
        },
        "pager": {
            "total": total,
            "first": (page - 1) * PAGE_SIZE + 1 if total else 0,
            "last": min(page * PAGE_SIZE, total),
            "prev_url": page_url(page - 1) if page > 1 else None,
            "next_url": page_url(page + 1) if page < pages else None,
        },
    }


def _model_version(store: Store, as_of: date | None) -> str | None:
    if as_of is None:
        return None
    runs = store.runs()
    mine = runs[runs["as_of"] == pd.Timestamp(as_of)]
    if mine.empty or pd.isna(mine["model_version"].iloc[0]):
        return None
    return str(mine["model_version"].iloc[0])


def _change_text(now: Any, before: Any, *, pct_points: bool = False, worse_up: bool) -> Markup:
    if _missing(now) or _missing(before):
        return Markup("")
    return fmt_change(float(now) - float(before), pct_points=pct_points, higher_is_worse=worse_up)


def account_context(
    store: Store, viewer: Viewer, account_id: str, horizon_days: int
) -> dict[str, Any] | None:
    """Everything ``account.html`` shows; None when the account is unknown to this viewer."""
    with store.reading():
        record = store.account(account_id, manager=viewer.scope)
        if record is None:
            return None
        model_version = _model_version(store, record.score["as_of"])
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
        y_max=100,
        y2_format=lambda v: f"{v:.3g} %",
        zones=[
            charts.Zone(0, 40, "critical", "critical zone"),
            charts.Zone(40, 60, "at_risk", "at-risk zone"),
        ],
    )
    components = [
        {
            "label": COMPONENT_LABELS[name],
            "value": s.get(f"health_{name}"),
            "max": int(maximum),
            "gauge": charts.gauge(
                s.get(f"health_{name}"),
                maximum,
                css=_component_css(s.get(f"health_{name}"), maximum),
            ),
        }
        for name, maximum in COMPONENT_MAXIMA.items()
    ]
    service_parts = [
        {"label": SERVICE_LABELS[p][0], "value": s.get(p), "max": SERVICE_LABELS[p][1]}
        for p in SERVICE_PARTS
    ]
    reasons = _records(record.reasons)
    scale = max([abs(r["impact_pts"] or 0.0) for r in reasons] + [1.0])
    for r in reasons:
        r["impact_pts"] = r["impact_pts"] or 0.0
        r["bar"] = charts.impact_bar(r["impact_pts"], scale)
    previous = record.previous or {}
    return {
        "active": "portfolio",
        "as_of": s["as_of"],
        "model_version": model_version,
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
            "health_score": _change_text(
                s.get("health_score"), previous.get("health_score"), worse_up=False
            ),
            "churn_probability": _change_text(
                s.get("churn_probability"),
                previous.get("churn_probability"),
                pct_points=True,
                worse_up=True,
            ),
        },
    }


def _component_css(value: Any, maximum: float) -> str:
    if _missing(value):
        return "primary"
    share = float(value) / maximum
    return "healthy" if share >= 0.6 else "at_risk" if share >= 0.4 else "critical"


def retention_for(
    store: Store, viewer: Viewer | None = None, *, manager: str | None = None
) -> RetentionSummary | None:
    """The retention summary of the latest stored date, for everyone or one manager."""
    scope = manager if manager is not None else (viewer.scope if viewer else None)
    with store.reading():
        as_of = store.latest_as_of()
        if as_of is None:
            return None
        # The summary changes only when a score run writes: cache it per store, run and scope.
        runs = store.runs()
        key = (store.url, str(runs["finished_at"].max()), len(runs), scope)
        with _CACHE_LOCK:
            if key in _SUMMARY_CACHE:
                return _SUMMARY_CACHE[key]
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
    )
    with _CACHE_LOCK:
        if len(_SUMMARY_CACHE) >= 64:
            _SUMMARY_CACHE.pop(next(iter(_SUMMARY_CACHE)))
        _SUMMARY_CACHE[key] = summary
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
        "escalation_counts": _records(summary.escalation_counts),
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
                height=300,
                width=1220,
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
                label_width=330,
                width=1220,
            ),
        },
    }


def render_report(store: Store, *, manager: str | None = None) -> str:
    """The retention page as one self-contained HTML document (CSS inlined, SVG inline)."""
    from churn.errors import StoreError

    summary = retention_for(store, manager=manager)
    if summary is None:
        raise StoreError(
            f"the score store {store.display} holds no scores"
            + (f" for accounts of {manager}" if manager else ""),
            hint="run `churn score --data SOURCE` first",
        )
    css = (STATIC_DIR / "dashboard.css").read_text()
    return render(
        "report.html",
        inline_css=Markup(css),
        generated=datetime.now().strftime("%-d %b %Y %H:%M"),
        as_of=summary.as_of,
        model_version=_model_version(store, summary.as_of),
        **retention_context(summary),
    )


# -- sessions ------------------------------------------------------------------------------


def _serializer(request: Request) -> Any:
    """Signs session cookies with the server secret of the API keys (so sessions survive a
    restart), or a per-process secret while no key exists yet."""
    from itsdangerous import URLSafeTimedSerializer

    from serving.keys import secret_file_for

    state = request.app.state
    secret = getattr(state, "dashboard_secret", None)
    if secret is None:
        settings = state.serving.settings
        secret = settings.secret_key
        path = secret_file_for(Path(settings.keys_file))
        if not secret and path.is_file():
            secret = path.read_text().strip()
        if not secret:
            # No key exists yet, so nobody can log in; do not cache the stand-in secret.
            return URLSafeTimedSerializer(secrets.token_urlsafe(32), salt=SESSION_SALT)
        state.dashboard_secret = secret
    return URLSafeTimedSerializer(secret, salt=SESSION_SALT)


class SessionRevocations:
    """Session ids ended by logging out, each kept until its cookie would have expired.

    A JSON file ``{session id: expiry (epoch seconds)}`` written atomically under a lock and
    re-read when it changes, so revocations survive a restart.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def beside(cls, keys_file: Path) -> SessionRevocations:
        keys_file = Path(keys_file)
        return cls(keys_file.with_name(f"{keys_file.stem}.sessions"))

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("session revocations unreadable; sessions stay valid until they expire")
            return {}
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _current(self) -> dict[str, float]:
        try:
            st = self.path.stat()
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._revoked = self._read() if stamp is not None else {}
                self._stamp = stamp
            return self._revoked

    def is_revoked(self, session_id: str) -> bool:
        return session_id in self._current()

    def revoke(self, session_id: str, until: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            now = time.time()
            revoked = {k: v for k, v in self._read().items() if v > now}
            revoked[session_id] = until
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w") as fh:
                    json.dump(revoked, fh)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise


def _revocations(request: Request) -> SessionRevocations:
    state = request.app.state
    revocations = getattr(state, "session_revocations", None)
    if revocations is None:
        revocations = SessionRevocations.beside(state.serving.settings.keys_file)
        state.session_revocations = revocations
    return revocations


def _session(request: Request) -> tuple[str, str, float] | None:
    """(key id, session id, signed at) of a validly signed, unexpired, unrevoked cookie."""
    from itsdangerous import BadSignature

    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        data, signed = _serializer(request).loads(
            token, max_age=SESSION_MAX_AGE, return_timestamp=True
        )
    except BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    key_id, session_id = data.get("k"), data.get("s")
    if not isinstance(key_id, str) or not isinstance(session_id, str):
        return None  # includes cookies from before sessions had ids: log in again
    if _revocations(request).is_revoked(session_id):
        return None
    return key_id, session_id, signed.timestamp()


def _viewer(request: Request) -> Viewer | None:
    """The logged-in viewer from the session cookie, re-checked against the key store so a
    revoked or expired key ends its sessions at once, and against the logged-out sessions."""
    session = _session(request)
    if session is None:
        return None
    key_id = session[0]
    keys = request.app.state.serving.keys
    record = next((k for k in keys.list() if k.key_id == key_id), None)
    if record is None or not record.active:
        return None
    # The access log records who looked (key id and role), never what they saw.
    request.state.key_id, request.state.role = record.key_id, record.role
    return Viewer(role=record.role, manager=record.manager, key_id=record.key_id)


def _headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**SECURITY_HEADERS, **(extra or {})}


def _page(html: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status_code, headers=_headers())


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=_headers())


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _redirect("/login?" + urlencode({"next": target}))


def _safe_next(value: str | None) -> str:
    # Only same-site paths: never redirect a user to another host after logging in.
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _store_of(request: Request) -> Store:
    return request.app.state.serving.store


def _error_page(viewer: Viewer | None, title: str, detail: str, status: int) -> HTMLResponse:
    return _page(render("error.html", principal=viewer, title=title, detail=detail), status)


router = APIRouter(include_in_schema=False)


def install(app: FastAPI) -> None:
    """Serve ``/static`` (stylesheet, favicon) and give the app a score store."""
    from fastapi.staticfiles import StaticFiles

    from serving.routes.accounts import install as install_store

    install_store(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> Response:
    if _viewer(request) is not None:
        return _redirect(_safe_next(next))
    no_keys = not request.app.state.serving.keys.has_keys()
    html = render(
        "login.html", principal=None, next_url=_safe_next(next), error=None, no_keys=no_keys
    )
    return _page(html)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, api_key: str = Form(""), next: str = Form("/")) -> Response:
    token = api_key.strip()
    key = request.app.state.serving.keys.authenticate(token) if token else None
    if key is None:
        html = render(
            "login.html",
            principal=None,
            next_url=_safe_next(next),
            error="That key is not valid. Check it and try again.",
        )
        return _page(html, 401)
    response = _redirect(_safe_next(next))
    response.set_cookie(
        SESSION_COOKIE,
        _serializer(request).dumps({"k": key.key_id, "s": secrets.token_urlsafe(18)}),
        max_age=SESSION_MAX_AGE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.api_route("/logout", methods=["GET", "POST"])
def logout(request: Request) -> Response:
    session = _session(request)
    if session is not None:  # end it for good, not only in this browser
        _revocations(request).revoke(session[1], until=session[2] + SESSION_MAX_AGE)
    response = _redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


def _guarded(viewer: Viewer, build: Callable[[], Response]) -> Response:
    """A page, or an error page saying the store cannot be read (not a JSON 500)."""
    from churn.errors import StoreError

    try:
        return build()
    except StoreError as exc:
        log.warning("dashboard page without store: %s", type(exc).__name__)
        detail = f"{exc} {exc.hint or ''}".strip()
        return _error_page(viewer, "Scores are unavailable right now", detail, 503)


@router.get("/", response_class=HTMLResponse)
def portfolio_page(request: Request, page: int = 1) -> Response:
    viewer = _viewer(request)
    if viewer is None:
        return _to_login(request)

    def build() -> Response:
        context = portfolio_context(_store_of(request), viewer, request.query_params, page)
        return _page(render("portfolio.html", principal=viewer, **context))

    return _guarded(viewer, build)


@router.get("/accounts/{account_id}", response_class=HTMLResponse)
def account_page(request: Request, account_id: str) -> Response:
    viewer = _viewer(request)
    if viewer is None:
        return _to_login(request)
    horizon = request.app.state.serving.settings.snapshots.horizon_days

    def build() -> Response:
        context = account_context(_store_of(request), viewer, account_id, horizon)
        if context is None:
            # Same answer for "unknown" and "not yours": a manager learns nothing about others.
            detail = f"No scored account {account_id}."
            return _error_page(viewer, "Account not found", detail, 404)
        return _page(render("account.html", principal=viewer, **context))

    return _guarded(viewer, build)


@router.get("/retention", response_class=HTMLResponse)
def retention_page(request: Request) -> Response:
    viewer = _viewer(request)
    if viewer is None:
        return _to_login(request)

    def build() -> Response:
        store = _store_of(request)
        summary = retention_for(store, viewer)
        if summary is None:
            return _page(render("retention.html", principal=viewer, active="retention", r=None))
        html = render(
            "retention.html",
            principal=viewer,
            active="retention",
            as_of=summary.as_of,
            model_version=_model_version(store, summary.as_of),
            **retention_context(summary),
        )
        return _page(html)

    return _guarded(viewer, build)
