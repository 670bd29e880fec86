"""``POST /v1/admin/reload``: load the champion bundle again and swap it in (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from serving.deps import State, require_roles
from serving.problems import Problem
from serving.schemas import ReloadResponse, problem_responses

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post(
    "/reload",
    response_model=ReloadResponse,
    summary="Reload the model bundle",
    dependencies=[Depends(require_roles("admin"))],
    responses=problem_responses(401, 403, 409, 429),
)
async def reload_model(state: State) -> ReloadResponse:
    """Load, verify and test-predict the bundle folder, then swap it in atomically; requests
    in flight finish on the old model. 409 when the new bundle is unusable: the old model
    (if any) keeps serving. The 409 names files relative to the bundle folder and carries no
    exception text; the log and ``/readyz`` (with an admin key) have the full detail."""
    result = await state.holder.reload_async(force=True)
    if result.outcome != "reloaded":
        raise Problem(
            409,
            f"The model bundle could not be loaded: {result.reason}. The full detail is in the "
            "service log (event model_load_failed).",
            title="Reload failed",
            model_version=result.model_version,
            reason=result.code,
        )
    return ReloadResponse(
        outcome="reloaded",
        model_version=result.model_version or "",
        previous_version=result.previous_version,
    )
