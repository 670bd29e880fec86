"""Request dependencies: the serving state, the authenticated key (with its rate limit), roles.

Routes declare what they need as typed aliases::

    def route(principal: Principal = Depends(require_roles("crm", "admin")), ...)

A missing or unknown key is 401 with ``WWW-Authenticate: Bearer``; a key over its rate limit
is 429 with ``Retry-After``; a role the route does not allow is 403. All are problem+json.

Wrong keys are throttled per client address (:class:`serving.throttle.AuthThrottle` on the
state): each wrong, unknown, expired or revoked key counts as a failure (a missing one does
not), and an address over ``serve.auth_failures_per_minute`` is answered 429 with
``Retry-After`` before its key is even looked at, whether that key is valid or not.
:func:`authenticate_bearer` does this for :func:`current_principal` and for the serving
middleware, which checks the key of an API request before it receives the body.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from churn.settings import Settings
from serving.keys import ApiKey, KeyStore, parse_key_id
from serving.metrics import Metrics
from serving.model_holder import LoadedModel, ModelHolder
from serving.problems import Problem
from serving.scoring import Rules
from serving.store import Store
from serving.throttle import AuthThrottle

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key created with `churn keys add`, sent as `Authorization: Bearer <key>`.",
)


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests a minute, bursts up to ``per_minute``."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one token; returns 0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


@dataclass
class ServingState:
    """Everything the routes share, kept on ``app.state.serving``."""

    settings: Settings
    holder: ModelHolder
    keys: KeyStore
    rules: Rules
    metrics: Metrics
    limiter: RateLimiter
    store: Store
    throttle: AuthThrottle
    owns_store: bool = False  # built by create_app from settings: the lifespan closes it
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's public id, its role and (for managers) the manager's name."""

    key_id: str
    role: str
    manager: str | None = None

    def list_scope(self, manager: str | None, what: str) -> str | None:
        """The manager whose ``what`` (accounts, clients) a list may show: a manager key's own
        (asking for another manager's is 403); any other role the ``manager`` asked for."""
        if self.role != "manager":
            return manager
        if manager is not None and manager != self.manager:
            raise Problem(403, f"A manager key can list only its own {what}.")
        return self.manager


async def get_state(request: Request) -> ServingState:
    # Dependencies are async on purpose: FastAPI runs plain functions in the thread pool.
    state: ServingState = request.app.state.serving
    return state


State = Annotated[ServingState, Depends(get_state)]


async def current_model(request: Request) -> LoadedModel | None:
    """The serving model at the start of this request (None: rule-based scores only)."""
    model: LoadedModel | None = request.app.state.serving.holder.current
    return model


CurrentModel = Annotated[LoadedModel | None, Depends(current_model)]


def _unauthorized(detail: str, error: str | None = None) -> Problem:
    challenge = 'Bearer realm="churn"' + (f', error="{error}"' if error else "")
    return Problem(401, detail, headers={"WWW-Authenticate": challenge})


def client_address(scope: Mapping[str, Any]) -> str:
    """The client's address as the server saw it (after the proxy headers uvicorn trusts)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None: absent or another
    scheme), read as FastAPI's ``HTTPBearer`` reads it."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate_bearer(state: ServingState, address: str, token: str | None) -> ApiKey:
    """The active key for ``token`` sent from ``address``, else a :class:`Problem`.

    429 while the address is throttled (checked first, so that a throttled address learns
    nothing about the key it sends); 401 for a missing key; 401 for a wrong, unknown, expired
    or revoked one, which also counts as a failure of the address (logged with the key id it
    named, never the token).
    """
    wait = state.throttle.wait(address)
    if wait > 0:
        seconds = math.ceil(wait)
        raise Problem(
            429,
            "Too many failed authentications from this address; "
            f"retry in {seconds} s (serve.auth_failures_per_minute).",
            headers={"Retry-After": str(seconds)},
        )
    if token is None:
        hint = (
            ""
            if state.keys.has_keys()
            else " No keys exist yet: create one with `churn keys add --role crm`."
        )
        raise _unauthorized(f"Send an API key as 'Authorization: Bearer <key>'.{hint}")
    key = state.keys.authenticate(token)
    if key is None:
        state.throttle.failed(address, parse_key_id(token), "api")
        raise _unauthorized("The API key is unknown, wrong, expired or revoked.", "invalid_token")
    return key


async def current_principal(
    request: Request,
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller's key, authenticated and charged one request of its rate limit."""
    token = None if credentials is None else credentials.credentials
    key = authenticate_bearer(state, client_address(request.scope), token)
    request.state.key_id = key.key_id
    request.state.role = key.role
    wait = state.limiter.take(key.key_id)
    if wait > 0:
        state.metrics.rate_limited.inc()
        per_minute = state.settings.serve.rate_limit_per_minute
        raise Problem(
            429,
            f"This key may make {per_minute} requests a minute; retry in {math.ceil(wait)} s.",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    return Principal(key.key_id, key.role, key.manager)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting only keys of ``roles`` (403 for the others)."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise Problem(
                403,
                f"A {principal.role} key cannot use this route; it needs the "
                f"{' or '.join(roles)} role.",
            )
        return principal

    return dependency


ANY_ROLE = ("crm", "manager", "admin")


async def require_json(request: Request) -> None:
    """415 unless the body is sent as JSON (``application/json`` or ``...+json``)."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if not media:
        raise Problem(415, "Send the body as JSON with 'Content-Type: application/json'.")
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise Problem(415, f"Send the body as application/json, not {media[:60]}.")
