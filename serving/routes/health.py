"""``/healthz`` (alive), ``/readyz`` (a verified model serves), ``/metrics`` (Prometheus).

The probes need no key; ``/metrics`` needs a key of any role (it carries no personal data,
but it is not public either): point Prometheus' ``authorization`` at a key.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from serving.deps import ANY_ROLE, State, require_roles
from serving.problems import problem_response
from serving.schemas import LiveResponse, ReadyResponse, problem_responses

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=LiveResponse, summary="The process is alive")
async def healthz() -> LiveResponse:
    return LiveResponse()


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="A verified model is serving",
    responses=problem_responses(503),
)
async def readyz(state: State) -> JSONResponse:
    """200 with the serving model's version (and the last reload error, if the last reload
    failed but the previous model serves); 503 with the reason when no model is loaded."""
    model = state.holder.current
    if model is None:
        reason = state.holder.unavailable_reason() or "no model loaded"
        return problem_response(
            503,
            f"No model is loaded: {reason}. Rule-based scores are still served.",
            title="Model unavailable",
            reason=reason,
        )
    body = ReadyResponse(
        model_version=model.version, loaded_at=model.loaded_at, reload_error=state.holder.error
    )
    return JSONResponse(body.model_dump())


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    dependencies=[Depends(require_roles(*ANY_ROLE))],
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(401, 429)},
)
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=state.metrics.content_type)
