"""``GET /v1/accounts`` and ``GET /v1/accounts/{account_id}``: stored scores.

Both read the score store written by ``churn score``. A ``manager`` key sees only the
accounts whose ``account_manager`` is its manager: asking for another manager's list is 403,
and another manager's account is 404, exactly like an unknown one (no existence leak).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from churn.errors import StoreError
from serving.batch import ACTION_COLUMNS, REASON_COLUMNS
from serving.deps import ANY_ROLE, Principal, State, require_roles
from serving.problems import Problem
from serving.schemas import (
    ActionOut,
    EscalationOut,
    HealthBand,
    HealthComponents,
    Reason,
    RiskBand,
    ServiceComponents,
    problem_responses,
)

router = APIRouter(prefix="/v1", tags=["accounts"])

# Stored columns that make up the API's escalation, reason and action objects.
_ESC = ["code", "rule", "action", "severity"]
_REASON = [c for c in REASON_COLUMNS if c not in ("as_of", "account_id", "rank")]
_ACTION = [c for c in ACTION_COLUMNS if c not in ("account_id", "rank")]

Band = Annotated[
    str | None,
    Query(
        pattern="^(healthy|at_risk|critical|high|medium|low)$",
        description="A health band (healthy, at_risk, critical) or a risk band (high, medium, "
        "low).",
    ),
]


class AccountSummary(BaseModel):
    """One account's latest stored score, as listed in the portfolio."""

    account_id: str
    account_manager: str | None
    churn_probability: float | None = Field(description="Null when scored without a model.")
    risk_band: RiskBand | None
    health_score: float
    health_band: HealthBand
    health_change: float | None = Field(
        description="Health score change since the stored date a month earlier (null without one)."
    )
    churn_probability_change: float | None
    service_score: int | None
    revenue_segment: str | None
    lifecycle_stage: str | None
    revenue_365d: float | None
    revenue_at_risk: float | None = Field(description="churn_probability x annual revenue.")
    top_reason: str | None = Field(description="The top factor that raises the risk.")
    model_version: str | None


class AccountList(BaseModel):
    as_of: date | None = Field(description="The scored date listed; null when nothing is stored.")
    previous_as_of: date | None = Field(description="The date changes are measured against.")
    total: int = Field(description="Accounts matching the filters (before limit/offset).")
    accounts: list[AccountSummary] = Field(description="Sorted by revenue at risk, largest first.")


class HistoryPoint(BaseModel):
    as_of: date
    churn_probability: float | None
    risk_band: RiskBand | None
    health_score: float
    health_band: HealthBand
    health_components: HealthComponents
    service_score: int | None
    revenue_at_risk: float | None
    model_version: str | None


class AccountDetail(BaseModel):
    """The account's latest stored score with its explanation, escalations, actions and
    every stored date, oldest first."""

    account_id: str
    as_of: date
    account_manager: str | None
    churn_probability: float | None
    risk_band: RiskBand | None
    health_score: float
    health_components: HealthComponents
    health_band: HealthBand
    health_drop_30d: float | None
    service_score: int | None
    service_components: ServiceComponents
    revenue_segment: str | None
    lifecycle_stage: str | None
    revenue_365d: float | None
    revenue_at_risk: float | None
    escalations: list[EscalationOut]
    reasons: list[Reason]
    actions: list[ActionOut]
    model_version: str | None
    history: list[HistoryPoint]


def _int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _clean(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _components(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "engagement": row["health_engagement"],
        "relationship": row["health_relationship"],
        "financial": row["health_financial"],
        "satisfaction": row["health_satisfaction"],
    }


def _store(state: Any) -> Any:
    if state.store is None:
        raise Problem(503, "No score store is configured (store_url).")
    return state.store


def _unavailable(exc: StoreError) -> Problem:
    return Problem(503, f"The score store cannot be read: {exc}", hint=exc.hint)


@router.get(
    "/accounts",
    response_model=AccountList,
    summary="Stored scores of every account, by revenue at risk",
    responses=problem_responses(401, 403, 422, 429, 503),
)
def list_accounts(
    state: State,
    principal: Annotated[Principal, Depends(require_roles(*ANY_ROLE))],
    band: Band = None,
    manager: Annotated[str | None, Query(max_length=200)] = None,
    segment: Annotated[str | None, Query(pattern="^[ABC]$")] = None,
    lifecycle_stage: Annotated[str | None, Query(pattern="^(new|established|long_term)$")] = None,
    as_of: Annotated[date | None, Query(description="A stored date; default the latest.")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AccountList:
    """The latest scored date (or ``as_of``), sorted by revenue at risk, then probability,
    then health score. A manager key lists only its own accounts."""
    if principal.role == "manager":
        if manager is not None and manager != principal.manager:
            raise Problem(403, "A manager key can list only its own accounts.")
        manager = principal.manager
    store = _store(state)
    try:
        with store.reading():
            day = as_of or store.latest_as_of()
            if as_of is not None and as_of not in store.dates():
                raise Problem(404, f"No scores are stored for {as_of}.")
            frame = (
                store.portfolio(
                    day, manager=manager, band=band, segment=segment, stage=lifecycle_stage
                )
                if day
                else pd.DataFrame()
            )
            previous = store.previous_as_of(day) if day else None
    except StoreError as exc:
        raise _unavailable(exc) from exc
    rows = _clean(frame.iloc[offset : offset + limit]) if len(frame) else []
    accounts = [
        AccountSummary(
            **{k: r[k] for k in AccountSummary.model_fields if k in r and k != "service_score"},
            service_score=_int(r["service_score"]),
        )
        for r in rows
    ]
    return AccountList(as_of=day, previous_as_of=previous, total=len(frame), accounts=accounts)


@router.get(
    "/accounts/{account_id}",
    response_model=AccountDetail,
    summary="One account's stored score, explanation, actions and history",
    responses=problem_responses(401, 404, 429, 503),
)
def get_account(
    account_id: str,
    state: State,
    principal: Annotated[Principal, Depends(require_roles(*ANY_ROLE))],
    as_of: Annotated[date | None, Query(description="A stored date; default the latest.")] = None,
) -> AccountDetail:
    """The score of the latest stored date (or the last one on or before ``as_of``)."""
    scope = principal.manager if principal.role == "manager" else None
    try:
        record = _store(state).account(account_id, as_of=as_of, manager=scope)
    except StoreError as exc:
        raise _unavailable(exc) from exc
    if record is None:
        raise Problem(404, f"No stored score for account {account_id!r}.")
    s = record.score
    history = [
        HistoryPoint(
            as_of=h["as_of"].date() if hasattr(h["as_of"], "date") else h["as_of"],
            churn_probability=h["churn_probability"],
            risk_band=h["risk_band"],
            health_score=h["health_score"],
            health_band=h["health_band"],
            health_components=HealthComponents(**_components(h)),
            service_score=_int(h["service_score"]),
            revenue_at_risk=h["revenue_at_risk"],
            model_version=h["model_version"],
        )
        for h in _clean(record.history)
    ]
    return AccountDetail(
        account_id=s["account_id"],
        as_of=s["as_of"],
        account_manager=s["account_manager"],
        churn_probability=s["churn_probability"],
        risk_band=s["risk_band"],
        health_score=s["health_score"],
        health_components=HealthComponents(**_components(s)),
        health_band=s["health_band"],
        health_drop_30d=s["health_drop_30d"],
        service_score=_int(s["service_score"]),
        service_components=ServiceComponents(
            client_contacts=_int(s["service_client_contacts"]) or 0,
            firm_contacts=_int(s["service_firm_contacts"]) or 0,
            meetings=_int(s["service_meetings"]) or 0,
            seniority=_int(s["service_seniority"]) or 0,
            survey=_int(s["service_survey"]) or 0,
        ),
        revenue_segment=s["revenue_segment"],
        lifecycle_stage=s["lifecycle_stage"],
        revenue_365d=s["revenue_365d"],
        revenue_at_risk=s["revenue_at_risk"],
        escalations=[EscalationOut(**e) for e in _clean(record.escalations[_ESC])],
        reasons=[Reason(**r) for r in _clean(record.reasons[_REASON])],
        actions=[ActionOut(id=a.pop("action_id"), **a) for a in _clean(record.actions[_ACTION])],
        model_version=s["model_version"],
        history=history,
    )
