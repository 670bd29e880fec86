"""The scoring API: ``create_app(settings)`` builds it, ``churn serve`` runs it under uvicorn.

At start-up (lifespan) the champion bundle ``<models_dir>/champion`` is loaded, verified
against its manifest and test-predicted; without it the service answers with rule-based
scores and ``/readyz`` is 503 with the reason. A background task re-checks the bundle folder
every ``serve.reload_interval_seconds`` (0 turns it off); ``POST /v1/admin/reload`` reloads
on demand. See ``serving.model_holder`` for the atomic swap.

One pure-ASGI middleware (:class:`ServingMiddleware`) does what must wrap every request:
a request id; for an API request with a body (``POST /v1/...``), the key checked before any
body byte is read (401 at once for a missing or wrong key, 429 for an address throttled
after failed attempts), so that nobody without a key can make the service wait for a body;
the body-size limit on the bytes actually received (413, also for a chunked body without
Content-Length) and its deadline (408), both much tighter for a body no key vouches for
(the dashboard's login form: ``serve.unauthenticated_*``); a cap per client on requests
still receiving their body (429); a cap on requests in flight, counted once their body
has arrived (503); a deadline for the answer (``serve.request_timeout_seconds``, counted
from the start: 504 when the answer is not ready - the work goes on in the background and
still counts against the cap until it ends), security headers on every response, the
latency and status metrics, and one JSON log line per request (method, route template,
status, duration, key id, role, number of accounts - never names or feature values).

The serving process never unpickles: :func:`disable_pickle_deserialization` switches off
MLflow's pickle loading (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``) whatever the
environment says, and the model loader refuses bundles holding pickles.

The app builds the score store from ``settings.store_url`` unless one was passed in (a bad
URL stops start-up there); the store connects on first use and the lifespan closes it.
The routers are those of ``serving.routes`` and the dashboard's
(``serving.dashboard.views``, with its stylesheet and favicon under ``/static``);
``include_routers`` adds more. All may use ``app.state.serving``
(:class:`serving.deps.ServingState`) and the dependencies of ``serving.deps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from fastapi import APIRouter, FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from churn.bundle import CHAMPION_DIR
from churn.settings import Settings, get_settings
from serving.deps import (
    RateLimiter,
    ServingState,
    authenticate_bearer,
    bearer_token,
    client_address,
)
from serving.keys import KeyStore
from serving.metrics import Metrics
from serving.model_holder import LoadedModel, ModelHolder, ReloadResult
from serving.problems import Problem, install_handlers, problem_response, unhandled_problem
from serving.scoring import load_rules
from serving.store import Store
from serving.throttle import AuthThrottle

log = logging.getLogger(__name__)
access_log = logging.getLogger("churn.access")

API_VERSION = "1"
# Probes and scrapes must answer even when the service is saturated.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
PICKLE_SWITCH = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"

#: The security headers, sent with every response unless the route set its own (the
#: dashboard's pages set their own CSP, ``serving.dashboard.views.PAGE_CSP``; ``/docs`` gets
#: :data:`DOCS_CSP`). JSON needs no sources at all.
SECURITY_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Cross-Origin-Resource-Policy": "same-origin",
}
#: Responses that carry account data are not to be kept by browsers or proxies.
NO_STORE = {"Cache-Control": "no-store"}
#: Swagger UI at /docs: its script, stylesheet and favicon are served by the service itself
#: under :data:`DOCS_ASSETS` (no CDN: the page works offline), and it starts with one inline
#: script, allowed by its hash (filled in by ``create_app``).
DOCS_URL = "/docs"
DOCS_ASSETS = "/static/docs"
DOCS_CSP = (
    "default-src 'self'; script-src 'self' {inline}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

DESCRIPTION = """\
Churn risk of client accounts: a calibrated probability with its reasons, the rule-based
health and service scores, escalations and the retention playbook's next steps.

Authenticate with `Authorization: Bearer <key>` (keys come from `churn keys add`). Roles:
`crm` scores and reads every account, `manager` only the accounts they manage, `admin`
everything including model reload. Errors are `application/problem+json` with a `detail`
naming the field at fault.
"""


class ServingMiddleware:
    """Request id, authentication before the body, body, concurrency and time limits, metrics
    and the access log."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        max_concurrency: int,
        request_timeout: float | None = None,
        state: ServingState | None = None,
        max_waiting_bodies: int | None = None,
        unauthenticated_body_timeout: float | None = None,
        unauthenticated_max_body_bytes: int | None = None,
        fixed_paths: frozenset[str] = frozenset(),
        path_headers: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.app = app
        # Paths FastAPI answers outside its routes (the OpenAPI document, /docs).
        self.fixed_paths = fixed_paths
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_concurrency = max_concurrency
        self.request_timeout = request_timeout
        # The keys and the failed-authentication throttle (None: no check before the body).
        self.state = state
        self.max_waiting_bodies = max_waiting_bodies
        self.unauthenticated_body_timeout = unauthenticated_body_timeout
        self.unauthenticated_max_body_bytes = unauthenticated_max_body_bytes
        self.in_flight = 0
        # Requests receiving their body, per client ("key <id>" or "address <address>").
        self.waiting: dict[str, int] = {}
        # Default headers per path (e.g. /docs' CSP), on top of SECURITY_HEADERS.
        self.path_headers = path_headers or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        status = 500
        responded = False

        defaults = self._default_headers(scope["path"])
        timed_out = False

        async def send_with_id(message: Message) -> None:
            if not timed_out:  # else the client has had its 504; the late answer goes nowhere
                await send_direct(message)

        async def send_direct(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                given = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in defaults if k not in given),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        limited = scope["path"] not in UNLIMITED_PATHS
        deadline = self.request_timeout if limited else None
        release = False  # whether this request holds a place in the concurrency cap
        try:
            if scope["method"] in _BODY_METHODS:
                # Before the body: who sends it decides how long and how large it may be.
                intake = self._intake(scope, headers)
                if not isinstance(intake, _Intake):
                    await intake(scope, receive, send_with_id)
                    return
                body = await self._receive_body(intake, headers, receive)
                if not isinstance(body, bytes):
                    if body is not None:
                        await body(scope, receive, send_with_id)
                    return
                receive = _replay(body, receive)
            if limited:  # counted once the body is in: a slow sender holds no place
                self.in_flight += 1
                release = True
                if self.in_flight > self.max_concurrency:
                    await problem_response(
                        503,
                        f"The service is answering {self.max_concurrency} requests already; "
                        "retry shortly.",
                        headers={"Retry-After": "1"},
                    )(scope, receive, send_with_id)
                    return
            if deadline is None:
                await self.app(scope, receive, send_with_id)
                return
            elapsed = time.perf_counter() - started
            handler = asyncio.ensure_future(self.app(scope, receive, send_with_id))
            try:
                done, _ = await asyncio.wait({handler}, timeout=max(deadline - elapsed, 0))
            except asyncio.CancelledError:
                handler.cancel()
                raise
            if not done and not responded:
                timed_out = True
                await self._answer_timeout()(scope, receive, send_direct)
                if release:
                    release = False
                    handler.add_done_callback(self._handler_ended)
                # Not cancelled: its thread would run on unseen and unaccounted for. It ends
                # on its own (every route finishes its work), then frees its place.
                return
            await handler  # done, or answering already: let it finish (re-raises its error)
        except Exception as exc:
            # Caught here, not by Starlette's outermost handler, which re-raises for the
            # server to log the message - and a message may hold request data.
            if responded:
                raise
            response = unhandled_problem(self._route(scope), exc)
            await response(scope, receive, send_with_id)
        finally:
            if release:
                self.in_flight -= 1
            self._record(scope, request_id, status, time.perf_counter() - started)

    def _intake(self, scope: Scope, headers: dict[bytes, bytes]) -> _Intake | JSONResponse:
        """How the body of this request may arrive, or the answer that refuses it unread.

        An API request (``/v1/...``) must carry a valid key before any body byte is read: a
        missing or wrong key is 401 and a throttled address 429 at once (the connection is
        closed, the body never read); the route's own dependencies still decide the role.
        Any other request with a body (the dashboard's login form) has no key to vouch for
        it, so it gets the short deadline and small size of the ``unauthenticated_*`` limits.
        """
        address = client_address(scope)
        if self.state is not None and scope["path"].startswith("/v1/"):
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            try:
                key = authenticate_bearer(self.state, address, bearer_token(authorization))
            except Problem as problem:
                return problem_response(
                    problem.status,
                    problem.detail,
                    title=problem.title,
                    headers={**problem.headers, "Connection": "close"},
                )
            request_state = scope.setdefault("state", {})
            request_state["key_id"], request_state["role"] = key.key_id, key.role
            return _Intake(
                f"key {key.key_id}",
                self.request_timeout,
                "serve.request_timeout_seconds",
                self.max_body_bytes,
                "serve.max_body_bytes",
            )
        timeout, timeout_setting = self.request_timeout, "serve.request_timeout_seconds"
        unauthenticated = self.unauthenticated_body_timeout
        if unauthenticated is not None and (timeout is None or unauthenticated < timeout):
            timeout, timeout_setting = unauthenticated, "serve.unauthenticated_body_timeout_seconds"
        size, size_setting = self.max_body_bytes, "serve.max_body_bytes"
        small = self.unauthenticated_max_body_bytes
        if small is not None and small < size:
            size, size_setting = small, "serve.unauthenticated_max_body_bytes"
        return _Intake(f"address {address}", timeout, timeout_setting, size, size_setting)

    async def _receive_body(
        self, intake: _Intake, headers: dict[bytes, bytes], receive: Receive
    ) -> bytes | JSONResponse | None:
        """The whole body; or the answer refusing it (429 too many waiting for this client,
        408 too slow, 413 too large); None when the client went away."""
        waiting = self.waiting.get(intake.client, 0)
        if self.max_waiting_bodies is not None and waiting >= self.max_waiting_bodies:
            retry = str(max(math.ceil(intake.timeout or 1), 1))
            return problem_response(
                429,
                f"This client has {waiting} requests waiting for their bodies already "
                f"(serve.max_waiting_bodies_per_client); send each body whole, or retry in "
                f"{retry} s.",
                headers={"Retry-After": retry, "Connection": "close"},
            )
        self.waiting[intake.client] = waiting + 1
        try:
            body = await asyncio.wait_for(
                self._read_body(headers, receive, intake.max_bytes), intake.timeout
            )
        except TimeoutError:
            return self._body_timeout(intake)
        finally:
            left = self.waiting[intake.client] - 1
            if left:
                self.waiting[intake.client] = left
            else:
                del self.waiting[intake.client]
        if isinstance(body, int):
            return self._too_large(body, intake) if body else None
        return body

    def _handler_ended(self, handler: asyncio.Future[Any]) -> None:
        """A handler that outlived its deadline has ended: free its place, drop its result."""
        self.in_flight -= 1
        if not handler.cancelled() and handler.exception() is not None:
            log.warning(
                "a request that timed out then failed",
                extra={"event": "late_failure", "error": type(handler.exception()).__name__},
            )

    def _default_headers(self, path: str) -> list[tuple[bytes, bytes]]:
        headers = {**SECURITY_HEADERS, **self.path_headers.get(path, {})}
        if not path.startswith("/static/"):
            headers = {**NO_STORE, **headers}
        return [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    def _answer_timeout(self) -> JSONResponse:
        timeout = self.request_timeout or 0
        detail = (
            f"The answer was not ready within {timeout:g} s (serve.request_timeout_seconds); "
            "retry with fewer accounts per request."
        )
        return problem_response(504, detail, headers={"Retry-After": "1"})

    def _body_timeout(self, intake: _Intake) -> JSONResponse:
        return problem_response(
            408,
            f"The request body did not arrive within {intake.timeout or 0:g} s "
            f"({intake.timeout_setting}).",
            headers={"Connection": "close"},
        )

    async def _read_body(
        self, headers: dict[bytes, bytes], receive: Receive, limit: int
    ) -> bytes | int:
        """The whole body, or the size that broke ``limit`` (0: the client went away)."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return int(declared)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 0
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return size
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, size: int, intake: _Intake) -> JSONResponse:
        advice = (
            " Send fewer accounts per request."
            if intake.max_bytes_setting == "serve.max_body_bytes"
            else ""
        )
        return problem_response(
            413,
            f"The request body is larger than the limit of {intake.max_bytes:,} bytes "
            f"({intake.max_bytes_setting}); got at least {size:,}.{advice}",
            headers={"Connection": "close"},
        )

    def _route(self, scope: Scope) -> str:
        route = getattr(scope.get("route"), "path", None)
        if route is None:
            route = scope["path"] if scope["path"] in self.fixed_paths else "unmatched"
        return route

    def _record(self, scope: Scope, request_id: str, status: int, seconds: float) -> None:
        route = self._route(scope)
        method = scope["method"]
        self.metrics.observe_request(method, route, status, seconds)
        state = scope.get("state") or {}
        access_log.info(
            "request",
            extra={
                "event": "request",
                "request_id": request_id,
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "key_id": state.get("key_id"),
                "role": state.get("role"),
                "accounts": state.get("accounts"),
            },
        )


@dataclass(frozen=True)
class _Intake:
    """How one request's body may arrive: whose it is (for the per-client cap on bodies
    waiting) and its deadline and size limit, with the settings that set them."""

    client: str
    timeout: float | None
    timeout_setting: str
    max_bytes: int
    max_bytes_setting: str


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect as usual

    return replay


class JsonFormatter(logging.Formatter):
    """One JSON object per line; only whitelisted fields, so no personal data slips in."""

    FIELDS = (
        "event", "request_id", "method", "route", "status", "duration_ms", "key_id", "role",
        "accounts", "model_version", "previous_version", "outcome", "error", "stack", "client",
        "failures",
    )  # fmt: skip

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in self.FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the service's own loggers (``churn serve`` calls this)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("churn", "serving"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


_gc_frozen = False


def _freeze_startup_objects() -> None:
    """Once per process, after start-up: move every object alive now (modules, the model,
    the app) out of the garbage collector's reach.

    A full collection walks every tracked object while holding the GIL - some 170,000 after
    start-up, well over 100 ms - and the objects of a few large requests are enough to
    trigger one; every request waits meanwhile. Frozen, start-up objects are still freed
    when nothing refers to them, but a reference cycle among them is not (the first model's,
    after a reload: once per process, small).
    """
    global _gc_frozen
    if not _gc_frozen:
        _gc_frozen = True
        gc.collect()
        gc.freeze()


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServingState = app.state.serving
    result = await state.holder.reload_async()
    if result.outcome == "failed":
        log.warning(
            "serving rule-based scores only", extra={"event": "no_model", "error": result.error}
        )
    _freeze_startup_objects()
    interval = state.settings.serve.reload_interval_seconds
    watcher = asyncio.create_task(state.holder.watch(interval)) if interval > 0 else None
    try:
        yield
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if state.owns_store:  # a store passed to create_app is its caller's to close
            state.store.close()


def create_app(
    settings: Settings | None = None,
    *,
    bundle_dir: Path | None = None,
    store: Store | None = None,
    include_routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """Build the API.

    ``bundle_dir`` overrides ``<settings.models_dir>/champion``; ``store`` (the score store
    for the accounts routes and dashboard) is kept on ``app.state.serving.store``, else the
    app opens ``settings.store_url`` (closed by the lifespan); ``include_routers`` are added
    after the built-in routers and the dashboard's. The health rules and playbook are loaded
    here, so a broken config stops start-up with a ConfigError.
    """
    from fastapi.staticfiles import StaticFiles

    from serving.dashboard import STATIC_DIR
    from serving.dashboard.views import router as dashboard_router
    from serving.routes import api_routers

    disable_pickle_deserialization()
    settings = settings or get_settings()
    metrics = Metrics()
    holder = ModelHolder(bundle_dir or settings.models_dir / CHAMPION_DIR)

    def on_reload(result: ReloadResult, model: LoadedModel | None) -> None:
        metrics.reloads.labels(result.outcome).inc()
        metrics.set_model(model.version if model else None)

    holder.listeners.append(on_reload)
    metrics.set_model(None)
    state = ServingState(
        settings=settings,
        holder=holder,
        keys=KeyStore.from_settings(settings),
        rules=load_rules(settings.health_config, settings.playbook_config),
        metrics=metrics,
        limiter=RateLimiter(settings.serve.rate_limit_per_minute),
        throttle=AuthThrottle(settings.serve.auth_failures_per_minute),
        # Built here so that a bad store_url stops start-up with its one-line StoreError;
        # the store connects on first use and the lifespan closes it at shutdown.
        store=store if store is not None else Store(settings.store_url),
        owns_store=store is None,
    )
    app = FastAPI(
        title="Churn prediction service",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url=None,  # served by _add_docs from the service's own copy of Swagger UI
        redoc_url=None,
    )
    docs_csp = _add_docs(app)
    app.state.serving = state
    install_handlers(app)
    # After /static/docs (mounted by _add_docs), so that the more specific prefix wins.
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in (*api_routers(), dashboard_router, *include_routers):
        app.include_router(router)
    app.add_middleware(
        ServingMiddleware,
        metrics=metrics,
        max_body_bytes=settings.serve.max_body_bytes,
        max_concurrency=settings.serve.max_concurrency,
        request_timeout=settings.serve.request_timeout_seconds,
        state=state,
        max_waiting_bodies=settings.serve.max_waiting_bodies_per_client,
        unauthenticated_body_timeout=settings.serve.unauthenticated_body_timeout_seconds,
        unauthenticated_max_body_bytes=settings.serve.unauthenticated_max_body_bytes,
        fixed_paths=frozenset(p for p in (app.openapi_url,) if p),
        path_headers={DOCS_URL: {"Content-Security-Policy": docs_csp}},
    )
    return app


def worker_app() -> FastAPI:
    """The app of one `churn serve` worker process (uvicorn's factory when serve.workers > 1):
    JSON logs and the settings of this process's environment."""
    configure_logging()
    return create_app()


def disable_pickle_deserialization() -> None:
    """Switch off MLflow's pickle loading in this process, whatever the environment says.

    Serving loads LightGBM text and JSON only; should any code path reach an MLflow flavour
    that unpickles (sklearn, pyfunc python_model, ...), MLflow raises instead of running the
    pickle's code.
    """
    os.environ[PICKLE_SWITCH] = "false"


def _add_docs(app: FastAPI) -> str:
    """Serve Swagger UI at ``/docs`` with assets from the installed fastapi-offline package
    (FastAPI's default page loads them from a CDN, which is blank offline); returns the page's
    Content-Security-Policy, which allows its one inline script by hash."""
    import base64
    import hashlib
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    assets = Path(fastapi_offline.__file__).resolve().parent / "static"
    # Mounted before the dashboard's /static, so that this more specific prefix wins.
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    page = get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title} - API documentation",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        oauth2_redirect_url=None,
        swagger_ui_parameters=app.swagger_ui_parameters,
    )
    html = cast(bytes, page.body)  # rendered from a str: bytes, never starlette's memoryview

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(html)

    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in re.findall(r"<script>(.*?)</script>", html.decode(), flags=re.S)
    ]
    return DOCS_CSP.format(inline=" ".join(hashes))
