"""``POST /v1/predict``: score, explain and recommend for up to 1,000 accounts per request.

The body is read, parsed and validated in a worker thread, never on the event loop (where a
4 MB body would stall every other request, probes included): the ``accounts`` array is
parsed one account at a time and a body with more than ``serve.max_accounts_per_request``
of them is refused as soon as the count is passed, before any account is validated
(:mod:`serving.json_body`). The route therefore declares no body parameter for FastAPI to
parse; a twin registered for the OpenAPI document only (:func:`_documented`) keeps the
request body schema that clients see.
"""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Mapping
from typing import Annotated, Any, cast

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from churn.text import UNPRINTABLE, normalise_name
from serving.deps import ANY_ROLE, Principal, State, require_json, require_roles
from serving.json_body import TooManyItems, loads_bounded
from serving.model_holder import LoadedModel
from serving.problems import Problem, invalid_field
from serving.schemas import PredictRequest, PredictResponse, problem_responses
from serving.scoring import AccountInput, Rules, score_accounts

router = APIRouter(prefix="/v1", tags=["predict"])

# Parsing and validating hold the GIL nearly all the time, so two bodies parsed at once take
# as long as one after the other - but each extra busy thread makes the event loop wait
# longer for the GIL at every step of every other request. One at a time keeps /healthz and
# the small requests quick while large bodies arrive.
_PARSING = threading.Lock()


#: No feature (days, counts, amounts in currency units) or revenue is anywhere near this; a
#: number beyond it is a mistake or a probe for overflow, not a client's data.
MAX_MAGNITUDE = 1e12


def _check_values(body: PredictRequest) -> None:
    """422 for ids and names holding control or text-direction characters, and for numbers
    beyond any plausible magnitude (the schema already refuses NaN and infinity)."""
    for i, account in enumerate(body.accounts):
        for name in ("account_id", "account_manager"):
            value = getattr(account, name)
            if value is not None and UNPRINTABLE.search(value):
                raise invalid_field(
                    ("body", "accounts", i, name),
                    "control and text-direction characters are not allowed in ids and names",
                    "string_pattern_mismatch",
                )
        numbers: list[tuple[tuple[str, ...], object]] = [
            (("features", k), v) for k, v in account.features.items()
        ]
        numbers.append((("revenue",), account.revenue))
        for loc, value in numbers:
            if isinstance(value, float) and abs(value) > MAX_MAGNITUDE:
                raise invalid_field(
                    ("body", "accounts", i, *loc),
                    f"beyond any plausible value (the magnitude is at most {MAX_MAGNITUDE:.0e})",
                    "less_than_equal",
                )


def _check_manager(principal: Principal, body: PredictRequest) -> None:
    """A manager key scores only accounts that name the key's manager as account_manager
    (compared in normalised form: a no-break space or a doubled space names the same person)."""
    own = normalise_name(principal.manager or "")
    for i, account in enumerate(body.accounts):
        if account.account_manager is None or normalise_name(account.account_manager) != own:
            raise Problem(
                403,
                f"accounts[{i}].account_manager: a manager key scores only accounts whose "
                "account_manager is the key's own manager name.",
            )


def _read_body(raw: bytes, limit: int) -> PredictRequest:
    """The request body parsed and validated (run in a worker thread, one body at a time):
    400 when it is not JSON, 422 for more than ``limit`` accounts (before any is validated),
    for a missing body and for invalid values, with the same problem details as FastAPI's
    own validation."""
    with _PARSING:
        return _parse(raw, limit)


def _parse(raw: bytes, limit: int) -> PredictRequest:
    if not raw:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    try:
        data = loads_bounded(raw, array="accounts", limit=limit)
    except TooManyItems as exc:
        if exc.where != "accounts":
            raise Problem(
                422, "body: send a JSON object with an accounts list, not a list."
            ) from None
        raise Problem(
            422,
            f"accounts: more than {limit:,} accounts in one request; the limit is {limit} "
            "(serve.max_accounts_per_request). Split the accounts over several requests.",
        ) from None
    except json.JSONDecodeError as exc:
        error = {
            "type": "json_invalid",
            "loc": ("body", exc.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        raise RequestValidationError([error]) from None
    except UnicodeDecodeError:
        raise Problem(
            400, "The request body is not valid JSON: it is not UTF-8 (or UTF-16/32) text."
        ) from None
    except (ValueError, RecursionError):  # Python's limits: integer digits, nesting depth
        raise Problem(
            400,
            "The request body cannot be read: it nests arrays or objects too deeply or holds "
            "a number with too many digits.",
        ) from None
    try:
        body = PredictRequest.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None
    _check_values(body)
    return body


def _answer(
    accounts: list[AccountInput],
    model: LoadedModel | None,
    rules: Rules,
    top_reasons: int,
    unavailable_reason: str | None,
) -> tuple[list[str | None], JSONResponse]:
    """Score the accounts and render the answer (run in a worker thread, like the body):
    the risk bands, for the metrics, and the response."""
    predictions = score_accounts(accounts, model, rules, top_reasons)
    response = JSONResponse(
        {
            "model_version": model.version if model else None,
            "probability_unavailable_reason": unavailable_reason,
            "predictions": predictions,
        }
    )
    return [p["risk_band"] for p in predictions], response


# The parameters both views of the route declare, once.
Scorer = Annotated[Principal, Depends(require_roles(*ANY_ROLE))]
JsonBody = Annotated[None, Depends(require_json)]
TopReasons = Annotated[
    int | None, Query(ge=0, le=50, description="How many reasons per account (default 5).")
]

_OPERATION: dict[str, Any] = {
    "response_model": PredictResponse,
    "summary": "Score accounts: probability, reasons, health, escalations, actions",
    "responses": problem_responses(400, 401, 403, 408, 413, 415, 422, 429, 503, 504),
}


@router.post("/predict", include_in_schema=False, **_OPERATION)
async def predict(
    request: Request,
    state: State,
    principal: Scorer,
    _json: JsonBody,
    top_reasons: TopReasons = None,
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
    raw = await request.body()  # already received whole by the serving middleware
    body = await anyio.to_thread.run_sync(_read_body, raw, serve.max_accounts_per_request)
    request.state.accounts = len(body.accounts)
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
    reason = None if model else state.holder.unavailable_reason()
    # Past serve.request_timeout_seconds the middleware answers 504; the thread finishes its
    # batch and keeps its place in the concurrency cap until then (not abandoned).
    bands, response = await anyio.to_thread.run_sync(
        _answer, accounts, model, state.rules, k, reason
    )
    state.metrics.count_predictions(bands, "model" if model else "rules")
    return response


@router.post(
    "/predict",
    name="predict",
    description=inspect.cleandoc(predict.__doc__ or ""),
    **_OPERATION,
)
async def _documented(
    body: PredictRequest,
    principal: Scorer,
    _json: JsonBody,
    top_reasons: TopReasons = None,
) -> JSONResponse:
    """The OpenAPI document's view of :func:`predict`, with its request body schema. It is
    registered after :func:`predict` for the same path and method, so it never answers."""
    raise AssertionError("POST /v1/predict is answered by predict()")
