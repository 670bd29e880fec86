"""``GET /v1/accounts`` and ``GET /v1/accounts/{account_id}``: stored scores.

Both read the score store written by ``churn score``. A ``manager`` key sees only the
accounts whose ``account_manager`` is its manager: asking for another manager's list is 403,
and another manager's account is 404, exactly like an unknown one (no existence leak).
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, Query

from churn.errors import StoreError
from serving.batch import ACTION_COLUMNS, ESCALATION_EVIDENCE, REASON_COLUMNS
from serving.deps import ANY_ROLE, Principal, State, require_roles
from serving.flags import decode_flags
from serving.problems import Problem, store_unavailable
from serving.schemas import (
    CATEGORY_LEVELS,
    AccountDetail,
    AccountList,
    AccountSummary,
    ActionOut,
    EscalationEvidence,
    EscalationOut,
    FlagOut,
    HistoryPoint,
    Reason,
    problem_responses,
)
from serving.score_record import BY_COLUMN, api_values

router = APIRouter(prefix="/v1", tags=["accounts"])

# Stored columns that make up the API's escalation, reason and action objects.
_ESC = ["code", "rule", "action", "severity"]
_REASON = [c for c in REASON_COLUMNS if c not in ("as_of", "account_id", "rank")]
_ACTION = [c for c in ACTION_COLUMNS if c not in ("account_id", "rank")]

_HEALTH_BANDS: tuple[str, ...] = BY_COLUMN["health_band"].values
_RISK_BANDS: tuple[str, ...] = BY_COLUMN["risk_band"].values
_BANDS = tuple(dict.fromkeys((*_HEALTH_BANDS, *_RISK_BANDS)))
_PRIORITIES: tuple[str, ...] = BY_COLUMN["priority"].values


def _one_of(values: tuple[str, ...], what: str) -> Any:
    """An optional query parameter taking one of ``values``: the schema lists them, and any
    other value is a 422 naming the parameter and the values it takes."""
    return Annotated[
        Literal[values] | None,
        Query(description=f"{what}: one of {', '.join(values)}."),
    ]


if TYPE_CHECKING:
    Band = str | None
    HealthBand = str | None
    Priority = str | None
    Segment = str | None
    Stage = str | None
else:
    Band = _one_of(_BANDS, "A health band or a risk band")
    HealthBand = _one_of(_HEALTH_BANDS, "A health band")
    Priority = _one_of(_PRIORITIES, "A priority")
    Segment = _one_of(CATEGORY_LEVELS["revenue_segment"], "A revenue segment")
    Stage = _one_of(CATEGORY_LEVELS["lifecycle_stage"], "A lifecycle stage")


def _clean(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = (
        frame.astype(object).where(frame.notna(), None).to_dict("records")
    )
    return records


def _escalation(row: dict[str, Any]) -> EscalationOut:
    """A stored escalation with its evidence (null when it has none)."""
    evidence = {k: row.get(k) for k in ESCALATION_EVIDENCE if row.get(k) is not None}
    if "previous_as_of" in evidence:
        evidence["previous_as_of"] = _day(evidence["previous_as_of"])
    return EscalationOut(
        **{k: row[k] for k in _ESC},
        evidence=EscalationEvidence(**evidence) if evidence else None,
    )


def _day(value: Any) -> date:
    day: date = value.date() if hasattr(value, "date") else value
    return day


@router.get(
    "/accounts",
    response_model=AccountList,
    summary="Stored scores of every account, most urgent first",
    responses=problem_responses(401, 403, 422, 429, 503),
)
def list_accounts(
    state: State,
    principal: Annotated[Principal, Depends(require_roles(*ANY_ROLE))],
    priority: Priority = None,
    health_band: HealthBand = None,
    band: Band = None,
    manager: Annotated[str | None, Query(max_length=200)] = None,
    segment: Segment = None,
    lifecycle_stage: Stage = None,
    as_of: Annotated[date | None, Query(description="A stored date; default the latest.")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AccountList:
    """The latest scored date (or ``as_of``), in the action queue's order: priority (act now,
    watch, ok; none last), then revenue at risk, churn probability (both largest first),
    health score (lowest first) and account id. Filters combine; ``band`` matches the health
    or the risk band. A manager key lists only its own accounts."""
    manager = principal.list_scope(manager, "accounts")
    store = state.store
    try:
        with store.reading():
            day = as_of or store.latest_as_of()
            if as_of is not None and as_of not in store.dates():
                raise Problem(404, f"No scores are stored for {as_of}.")
            frame = (
                store.portfolio(
                    day,
                    manager=manager,
                    band=band,
                    segment=segment,
                    stage=lifecycle_stage,
                    priority=priority,
                    health_band=health_band,
                )
                if day
                else pd.DataFrame()
            )
            previous = store.previous_as_of(day) if day else None
    except StoreError as exc:
        raise store_unavailable(exc) from exc
    rows = _clean(frame.iloc[offset : offset + limit]) if len(frame) else []
    accounts = [
        AccountSummary(account_id=r["account_id"], **api_values(r, "summary")) for r in rows
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
        record = state.store.account(account_id, as_of=as_of, manager=scope)
    except StoreError as exc:
        raise store_unavailable(exc) from exc
    if record is None:
        raise Problem(404, f"No stored score for account {account_id!r}.")
    s = record.score
    history = [
        HistoryPoint(as_of=_day(h["as_of"]), **api_values(h, "history"))
        for h in _clean(record.history)
    ]
    return AccountDetail(
        account_id=s["account_id"],
        as_of=s["as_of"],
        **api_values(s, "detail"),
        escalations=[_escalation(e) for e in _clean(record.escalations)],
        reasons=[Reason(**r) for r in _clean(record.reasons[_REASON])],
        actions=[ActionOut(id=a.pop("action_id"), **a) for a in _clean(record.actions[_ACTION])],
        flags=[FlagOut(**f) for f in decode_flags(record.flags)]
        if record.flags is not None
        else [],
        history=history,
    )
