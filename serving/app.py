"""The scoring API: ``create_app(settings)`` builds it, ``churn serve`` runs it under uvicorn.

At start-up (lifespan) the champion bundle ``<models_dir>/champion`` is loaded, verified
against its manifest and test-predicted; without it the service answers with rule-based
scores and ``/readyz`` is 503 with the reason. A background task re-checks the bundle folder
every ``serve.reload_interval_seconds`` (0 turns it off); ``POST /v1/admin/reload`` reloads
on demand. See ``serving.model_holder`` for the atomic swap.

One pure-ASGI middleware (:class:`ServingMiddleware`) does what must wrap every request:
a request id, the body-size limit on the bytes actually received (413), a cap on requests in
flight (503), the latency and status metrics, and one JSON log line per request (method,
route template, status, duration, key id, role, number of accounts - never names or feature
values).

Extending the app: routers listed in ``serving.routes.OPTIONAL_ROUTERS`` are picked up when
their module exists, and ``include_routers`` adds more; both may use ``app.state.serving``
(:class:`serving.deps.ServingState`) and the dependencies of ``serving.deps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from churn.bundle import CHAMPION_DIR
from churn.settings import Settings, get_settings
from serving.deps import RateLimiter, ServingState
from serving.keys import KeyStore
from serving.metrics import Metrics
from serving.model_holder import LoadedModel, ModelHolder, ReloadResult
from serving.problems import install_handlers, problem_response, unhandled_problem
from serving.scoring import load_rules

log = logging.getLogger(__name__)
access_log = logging.getLogger("churn.access")

API_VERSION = "1"
# Probes and scrapes must answer even when the service is saturated.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

DESCRIPTION = """\
Churn risk of client accounts: a calibrated probability with its reasons, the rule-based
health and service scores, escalations and the retention playbook's next steps.

Authenticate with `Authorization: Bearer <key>` (keys come from `churn keys add`). Roles:
`crm` scores and reads every account, `manager` only the accounts they manage, `admin`
everything including model reload. Errors are `application/problem+json` with a `detail`
naming the field at fault.
"""


class ServingMiddleware:
    """Request id, body-size and concurrency limits, metrics and the access log."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        max_concurrency: int,
        fixed_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        # Paths FastAPI answers outside its routes (the OpenAPI document, /docs).
        self.fixed_paths = fixed_paths
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_concurrency = max_concurrency
        self.in_flight = 0

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

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        limited = scope["path"] not in UNLIMITED_PATHS
        if limited:
            self.in_flight += 1
        try:
            if limited and self.in_flight > self.max_concurrency:
                await problem_response(
                    503,
                    f"The service is answering {self.max_concurrency} requests already; "
                    "retry shortly.",
                    headers={"Retry-After": "1"},
                )(scope, receive, send_with_id)
                return
            if scope["method"] in _BODY_METHODS:
                body = await self._read_body(headers, receive)
                if isinstance(body, int):
                    if body:
                        await self._too_large(body)(scope, receive, send_with_id)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Caught here, not by Starlette's outermost handler, which re-raises for the
            # server to log the message - and a message may hold request data.
            if responded:
                raise
            response = unhandled_problem(self._route(scope), exc)
            await response(scope, receive, send_with_id)
        finally:
            if limited:
                self.in_flight -= 1
            self._record(scope, request_id, status, time.perf_counter() - started)

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes | int:
        """The whole body, or the size that broke the limit (0: the client went away)."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return int(declared)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 0
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return size
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, size: int) -> Any:
        return problem_response(
            413,
            f"The request body is larger than the limit of {self.max_body_bytes:,} bytes "
            f"(serve.max_body_bytes); got at least {size:,}. Send fewer accounts per request.",
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
        "accounts", "model_version", "previous_version", "outcome", "error", "stack",
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


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServingState = app.state.serving
    result = await state.holder.reload_async()
    if result.outcome == "failed":
        log.warning(
            "serving rule-based scores only", extra={"event": "no_model", "error": result.error}
        )
    interval = state.settings.serve.reload_interval_seconds
    watcher = asyncio.create_task(state.holder.watch(interval)) if interval > 0 else None
    try:
        yield
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def create_app(
    settings: Settings | None = None,
    *,
    bundle_dir: Path | None = None,
    store: Any = None,
    include_routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """Build the API.

    ``bundle_dir`` overrides ``<settings.models_dir>/champion``; ``store`` (the score store
    for the accounts routes and dashboard) is kept on ``app.state.serving.store``;
    ``include_routers`` are added after the built-in and optional routers. The health rules
    and playbook are loaded here, so a broken config stops start-up with a ConfigError.
    """
    from serving.routes import core_routers, optional_routers

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
        store=store,
    )
    app = FastAPI(
        title="Churn prediction service",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.serving = state
    # Short names for routers that need only one piece (dashboard, accounts).
    app.state.settings = settings
    app.state.store = store
    app.state.keys = state.keys
    install_handlers(app)
    for router in (*core_routers(), *optional_routers(app), *include_routers):
        app.include_router(router)
    app.add_middleware(
        ServingMiddleware,
        metrics=metrics,
        max_body_bytes=settings.serve.max_body_bytes,
        max_concurrency=settings.serve.max_concurrency,
        fixed_paths=frozenset(
            p for p in (app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url) if p
        ),
    )
    return app
