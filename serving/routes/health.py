"""``/healthz`` (alive), ``/readyz`` (a verified model serves), ``/metrics`` (Prometheus).

The probes need no key. ``/readyz`` tells anyone whether a model serves and, if not, a reason
code; the detail (paths, the error text) only to an admin key, since it describes the
server's file layout. ``/metrics`` needs an admin or a ``metrics`` key: it carries no personal
data, but service-wide counters (how many predictions, for whom) are not for every role.
Point Prometheus' ``authorization`` at a ``metrics`` key (``churn keys add --role metrics``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials

from serving.deps import (
    ServingState,
    State,
    authenticate_bearer,
    bearer,
    client_address,
    require_roles,
)
from serving.problems import Problem
from serving.schemas import LiveResponse, NotReadyResponse, ReadyResponse, problem_responses

router = APIRouter(tags=["operations"])

METRICS_ROLES = ("admin", "metrics")


@router.get("/healthz", response_model=LiveResponse, summary="The process is alive")
async def healthz() -> LiveResponse:
    return LiveResponse()


def _is_admin(
    request: Request, state: ServingState, credentials: HTTPAuthorizationCredentials | None
) -> bool:
    """Whether the request carries a valid admin key. Never an error: the probe answers
    anyone. A wrong key counts against the caller's address like anywhere else (else this
    would be an unthrottled way to test keys), and a throttled address gets no details."""
    if credentials is None:
        return False
    try:
        key = authenticate_bearer(state, client_address(request.scope), credentials.credentials)
    except Problem:
        return False
    return key.role == "admin"


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="A verified model is serving",
    responses={503: {"model": NotReadyResponse}},
)
async def readyz(
    request: Request,
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> JSONResponse:
    """200 with the serving model's version; 503 with a reason code when no model is loaded
    (rule-based scores are still served). With an admin key also when the model was loaded,
    why the last reload failed (if it did) and the full reason."""
    admin = _is_admin(request, state, credentials)
    holder = state.holder
    model = holder.current
    if model is None:
        code = holder.unavailable_code() or "not_loaded"
        detail = (holder.error or holder.unavailable_reason()) if admin else None
        body = NotReadyResponse.model_validate({"reason": code, "detail": detail})
        return JSONResponse(body.model_dump(exclude_none=not admin), status_code=503)
    if not admin:
        return JSONResponse(
            ReadyResponse(model_version=model.version).model_dump(exclude_none=True)
        )
    ready = ReadyResponse(
        model_version=model.version, loaded_at=model.loaded_at, reload_error=holder.error
    )
    return JSONResponse(ready.model_dump())


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    dependencies=[Depends(require_roles(*METRICS_ROLES))],
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(401, 403, 429)},
)
async def metrics(state: State) -> Response:
    """The service's counters in Prometheus' text format (admin and ``metrics`` keys)."""
    return Response(state.metrics.render(), media_type=state.metrics.content_type)
