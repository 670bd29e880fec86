"""``GET /v1/model``: the serving model's version, training date, metrics and the catalogue."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from features.catalog import catalog_records
from serving.deps import ANY_ROLE, CurrentModel, State, require_roles
from serving.schemas import ModelInfo, problem_responses

router = APIRouter(prefix="/v1", tags=["model"])


@router.get(
    "/model",
    response_model=ModelInfo,
    summary="The serving model and the feature catalogue",
    dependencies=[Depends(require_roles(*ANY_ROLE))],
    responses=problem_responses(401, 429),
)
async def model_info(state: State, model: CurrentModel) -> ModelInfo:
    """Without a model: ``available`` is false with the reason; the catalogue is still listed
    (it is what ``POST /v1/predict`` accepts)."""
    if model is None:
        return ModelInfo(
            available=False,
            model_version=None,
            unavailable_reason=state.holder.unavailable_reason(),
            trained_at=None,
            loaded_at=None,
            base_rate=None,
            horizon_days=None,
            metrics={},
            model_features=[],
            features=catalog_records(),
        )
    meta = model.bundle.metadata
    return ModelInfo(
        available=True,
        model_version=model.version,
        unavailable_reason=None,
        trained_at=meta.get("trained_at"),
        loaded_at=model.loaded_at,
        base_rate=meta.get("base_rate"),
        horizon_days=meta.get("horizon_days"),
        metrics=model.bundle.metrics,
        model_features=list(model.explainer.feature_names),
        features=catalog_records(),
    )
