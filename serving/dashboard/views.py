"""The dashboard's routes: each checks the session, asks :mod:`serving.dashboard.pages` for
what the page shows and renders it with the dashboard's headers.

The pages allow their own stylesheet and inline SVG (:data:`PAGE_CSP`) and send their origin
on same-site requests only (``Referrer-Policy: same-origin``, so that a form post carries the
``Origin`` that :func:`serving.dashboard.sessions.cross_site_reason` checks); the app's
middleware adds the other security headers and ``Cache-Control: no-store`` to every response.

``/login`` and ``/logout`` take POST only, refuse forms sent from another site (403) and,
for login, an address that failed too often (429 with ``Retry-After``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from churn.errors import StoreError
from serving.dashboard import pages
from serving.dashboard.formatting import render
from serving.dashboard.sessions import (
    Viewer,
    cross_site_reason,
    current_viewer,
    end_session,
    safe_next,
    start_session,
)
from serving.deps import State, client_address
from serving.keys import parse_key_id

log = logging.getLogger(__name__)

#: The dashboard's Content-Security-Policy: its own stylesheet and images, inline SVG
#: (``data:`` images), no script from anywhere else and forms posting only to itself.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: Browsers send this site's origin with the dashboard's own form posts (the app-wide
#: ``no-referrer`` would make them send ``Origin: null``) and nothing to other sites.
PAGE_REFERRER_POLICY = "same-origin"
_PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, "Referrer-Policy": PAGE_REFERRER_POLICY}

router = APIRouter(include_in_schema=False)
CurrentViewer = Annotated[Viewer | None, Depends(current_viewer)]


def _page(html: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status_code, headers=_PAGE_HEADERS)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=_PAGE_HEADERS)


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _redirect("/login?" + urlencode({"next": target}))


def _error_page(viewer: Viewer | None, title: str, detail: str, status: int) -> HTMLResponse:
    return _page(render("error.html", principal=viewer, title=title, detail=detail), status)


def _cross_site(request: Request) -> Response | None:
    """A 403 page when the posted form came from another site, else None."""
    reason = cross_site_reason(request)
    if reason is None:
        return None
    log.warning("cross-site form refused", extra={"event": "cross_site_refused"})
    detail = (
        f"This form was refused: {reason}. Open the dashboard at its own address, "
        "log in there and try again."
    )
    return _error_page(None, "Form refused", detail, 403)


def _guarded(viewer: Viewer, build: Callable[[], Response]) -> Response:
    """A page, or an error page saying the store cannot be read (not a JSON 500)."""
    try:
        return build()
    except StoreError as exc:
        log.warning("dashboard page without store: %s", type(exc).__name__)
        detail = f"{exc} {exc.hint or ''}".strip()
        return _error_page(viewer, "Scores are unavailable right now", detail, 503)


@router.get("/login", response_class=HTMLResponse)
def login_form(viewer: CurrentViewer, state: State, next: str = "/") -> Response:
    if viewer is not None:
        return _redirect(safe_next(next))
    no_keys = not state.keys.has_keys()
    html = render(
        "login.html", principal=None, next_url=safe_next(next), error=None, no_keys=no_keys
    )
    return _page(html)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request, state: State, api_key: str = Form(""), next: str = Form("/")
) -> Response:
    """Exchange a key for a session cookie: a cross-site form is 403, an address with too
    many recent failures 429 (checked before the key, so guessing costs the guesser), a
    wrong key 401 and one more failure counted for the address."""
    refused = _cross_site(request)
    if refused is not None:
        return refused
    address = client_address(request.scope)
    wait = state.throttle.wait(address)
    if wait > 0:
        seconds = math.ceil(wait)
        detail = f"Too many failed logins from your address. Try again in {seconds} seconds."
        html = render(
            "login.html", principal=None, next_url=safe_next(next), error=detail, no_keys=False
        )
        page = _page(html, 429)
        page.headers["Retry-After"] = str(seconds)
        return page
    response = _redirect(safe_next(next))
    if start_session(request, response, api_key):
        return response
    state.throttle.failed(address, parse_key_id(api_key.strip()), "login")
    html = render(
        "login.html",
        principal=None,
        next_url=safe_next(next),
        error="That key is not valid. Check it and try again.",
    )
    return _page(html, 401)


@router.post("/logout")
def logout(request: Request) -> Response:
    """End the session (revoked for good, cookie deleted) and go to the login page."""
    refused = _cross_site(request)
    if refused is not None:
        return refused
    response = _redirect("/login")
    end_session(request, response)
    return response


@router.get("/logout", response_class=HTMLResponse)
def logout_by_get(viewer: CurrentViewer) -> Response:
    """A link or a prefetch must not log anyone out: 405, with the way to do it."""
    detail = "Log out with the button at the top right of the dashboard."
    page = _error_page(viewer, "Logging out needs the button", detail, 405)
    page.headers["Allow"] = "POST"
    return page


@router.get("/", response_class=HTMLResponse)
def portfolio_page(
    request: Request, viewer: CurrentViewer, state: State, page: int = 1
) -> Response:
    if viewer is None:
        return _to_login(request)

    def build() -> Response:
        context = pages.portfolio_context(
            state.store,
            viewer,
            request.query_params,
            state.rules.health.bands,
            page,
            snapshots=state.settings.snapshots,
        )
        return _page(render("portfolio.html", principal=viewer, **context))

    return _guarded(viewer, build)


@router.get("/portfolio.csv")
def portfolio_export(request: Request, viewer: CurrentViewer, state: State) -> Response:
    """The portfolio's filtered rows, every page of them, in the page's order, as CSV."""
    if viewer is None:
        return _to_login(request)

    def build() -> Response:
        filename, text = pages.portfolio_csv(state.store, viewer, request.query_params)
        headers = {
            **_PAGE_HEADERS,
            "Content-Disposition": f'attachment; filename="{filename}"',
        }
        return Response(text, media_type="text/csv; charset=utf-8", headers=headers)

    return _guarded(viewer, build)


@router.get("/accounts/{account_id}", response_class=HTMLResponse)
def account_page(
    request: Request, viewer: CurrentViewer, state: State, account_id: str
) -> Response:
    if viewer is None:
        return _to_login(request)
    horizon = state.settings.snapshots.horizon_days

    def build() -> Response:
        bands = state.rules.health.bands
        context = pages.account_context(state.store, viewer, account_id, horizon, bands)
        if context is None:
            # Same answer for "unknown" and "not yours": a manager learns nothing about others.
            detail = f"No scored account {account_id}."
            return _error_page(viewer, "Account not found", detail, 404)
        return _page(render("account.html", principal=viewer, **context))

    return _guarded(viewer, build)


@router.get("/retention", response_class=HTMLResponse)
def retention_page(request: Request, viewer: CurrentViewer, state: State) -> Response:
    if viewer is None:
        return _to_login(request)

    def build() -> Response:
        summary = pages.retention_for(state.store, viewer, snapshots=state.settings.snapshots)
        if summary is None:
            return _page(render("retention.html", principal=viewer, active="retention", r=None))
        html = render(
            "retention.html",
            principal=viewer,
            active="retention",
            as_of=summary.as_of,
            model_version=pages.model_version(state.store, summary.as_of),
            **pages.retention_context(summary),
        )
        return _page(html)

    return _guarded(viewer, build)


@router.get("/lapsed", response_class=HTMLResponse)
def lapsed_page(request: Request, viewer: CurrentViewer, state: State, page: int = 1) -> Response:
    """The clients past their silence window, most revenue lost first (the viewer's own for
    a manager), with the playbook's win-back action."""
    if viewer is None:
        return _to_login(request)

    def build() -> Response:
        context = pages.lapsed_context(
            state.store, viewer, state.settings.snapshots, state.rules.playbook, page
        )
        version = pages.model_version(state.store, context["as_of"])
        return _page(render("lapsed.html", principal=viewer, model_version=version, **context))

    return _guarded(viewer, build)
