"""``POST /v1/predict``: score, explain and recommend for up to 1,000 accounts per request."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, cast

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from serving.deps import ANY_ROLE, Principal, State, require_json, require_roles
from serving.problems import Problem
from serving.schemas import PredictRequest, PredictResponse, problem_responses
from serving.scoring import AccountInput, score_accounts

router = APIRouter(prefix="/v1", tags=["predict"])


# C0 and C1 control characters, DEL, and the bidirectional overrides/isolates that make a
# string display differently from what it is (an id is shown in logs, CSVs and the dashboard).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: No feature (days, counts, amounts in currency units) or revenue is anywhere near this; a
#: number beyond it is a mistake or a probe for overflow, not a client's data.
MAX_MAGNITUDE = 1e12


def _invalid(field: str, loc: list[str | int], message: str, kind: str) -> Problem:
    entry = {"field": field, "loc": ["body", *loc], "message": message, "type": kind}
    return Problem(422, f"{field}: {message}.", errors=[entry])


def _check_values(body: PredictRequest) -> None:
    """422 for ids and names holding control or text-direction characters, and for numbers
    beyond any plausible magnitude (the schema already refuses NaN and infinity)."""
    for i, account in enumerate(body.accounts):
        for name in ("account_id", "account_manager"):
            value = getattr(account, name)
            if value is not None and _UNPRINTABLE.search(value):
                raise _invalid(
                    f"accounts[{i}].{name}",
                    ["accounts", i, name],
                    "control and text-direction characters are not allowed in ids and names",
                    "string_pattern_mismatch",
                )
        numbers = [(f"features.{k}", ["features", k], v) for k, v in account.features.items()]
        numbers.append(("revenue", ["revenue"], account.revenue))
        for field, loc, value in numbers:
            if isinstance(value, float) and abs(value) > MAX_MAGNITUDE:
                raise _invalid(
                    f"accounts[{i}].{field}",
                    ["accounts", i, *loc],
                    f"beyond any plausible value (the magnitude is at most {MAX_MAGNITUDE:.0e})",
                    "less_than_equal",
                )


def _check_manager(principal: Principal, body: PredictRequest) -> None:
    """A manager key scores only accounts that name the key's manager as account_manager."""
    for i, account in enumerate(body.accounts):
        if account.account_manager != principal.manager:
            raise Problem(
                403,
                f"accounts[{i}].account_manager: a manager key scores only accounts whose "
                "account_manager is the key's own manager name.",
            )


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Score accounts: probability, reasons, health, escalations, actions",
    responses=problem_responses(400, 401, 403, 408, 413, 415, 422, 429, 503, 504),
)
async def predict(
    request: Request,
    body: PredictRequest,
    state: State,
    principal: Annotated[Principal, Depends(require_roles(*ANY_ROLE))],
    _json: Annotated[None, Depends(require_json)],
    top_reasons: Annotated[
        int | None,
        Query(ge=0, le=50, description="How many reasons per account (default 5)."),
    ] = None,
) -> JSONResponse:
    """Each account gets the calibrated churn probability and its risk band, the impacts of
    its top factors in probability points (they add up with ``other_impact_pts`` and the
    base rate to the probability), the rule-based health and service scores, the escalations
    that fired and the playbook's next steps.

    Without a loaded model ``churn_probability`` is null, ``probability_unavailable_reason``
    says why, the risk band follows the health band and the actions come from escalations.
    A ``manager`` key may score only accounts whose ``account_manager`` is its manager.
    """
    serve = state.settings.serve
    n = len(body.accounts)
    request.state.accounts = n
    if n > serve.max_accounts_per_request:
        raise Problem(
            422,
            f"accounts: {n} accounts in one request; the limit is "
            f"{serve.max_accounts_per_request} (serve.max_accounts_per_request). "
            "Split the accounts over several requests.",
        )
    _check_values(body)
    if principal.role == "manager":
        _check_manager(principal, body)
    model = state.holder.current  # this request uses this model throughout
    # Validated feature values are numbers, category names or None; the TypedDict the schema
    # builds from the catalogue names no fields for mypy.
    accounts = [
        AccountInput(
            a.account_id,
            cast("Mapping[str, float | str | None]", a.features),
            a.health_score_30d_ago,
            a.revenue,
            None if a.late_invoice is None else a.late_invoice.model_dump(),
            a.days_since_last_scoring,
        )
        for a in body.accounts
    ]
    k = serve.top_reasons if top_reasons is None else top_reasons
    # Past serve.request_timeout_seconds the middleware answers 504; the thread finishes its
    # batch and keeps its place in the concurrency cap until then (not abandoned).
    predictions = await anyio.to_thread.run_sync(score_accounts, accounts, model, state.rules, k)
    state.metrics.count_predictions(
        [p["risk_band"] for p in predictions], "model" if model else "rules"
    )
    return JSONResponse(
        {
            "model_version": model.version if model else None,
            "probability_unavailable_reason": None if model else state.holder.unavailable_reason(),
            "predictions": predictions,
        }
    )
