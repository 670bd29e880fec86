"""``GET /v1/lapsed``: the clients past their silence window, most revenue lost first, each
with the playbook's win-back action.

Read from the score store like the retention page (``serving.lapsed``). A ``manager`` key
sees only the clients it manages: asking for another manager's list is 403, as on
``GET /v1/accounts``.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends, Query

from churn.errors import StoreError
from serving.deps import ANY_ROLE, Principal, State, require_roles
from serving.lapsed import lapse_sentence, lapsed_list
from serving.problems import Problem, invalid_field, store_unavailable
from serving.schemas import LapsedAccount, LapsedList, WinBackAction, problem_responses

router = APIRouter(prefix="/v1", tags=["lapsed"])


def _late(as_of: date, latest: date) -> Problem:
    message = f"{as_of} is after the latest scored date {latest}: the store holds no later data"
    return invalid_field(("query", "as_of"), message)


def _clean(value: Any) -> Any:
    """A frame value as plain JSON-able Python (NaN/NaT -> None, Timestamp -> date)."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    if hasattr(value, "date") and callable(value.date):
        return value.date()
    if hasattr(value, "item"):
        return value.item()
    return value


@router.get(
    "/lapsed",
    response_model=LapsedList,
    summary="Lapsed clients, most revenue lost first, with a win-back action",
    responses=problem_responses(401, 403, 422, 429, 503),
)
def list_lapsed(
    state: State,
    principal: Annotated[Principal, Depends(require_roles(*ANY_ROLE))],
    manager: Annotated[str | None, Query(max_length=200)] = None,
    as_of: Annotated[
        date | None,
        Query(description="YYYY-MM-DD, not after the latest scored date; default that date."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> LapsedList:
    """Clients lapsed at ``as_of``: they bought before it, and had no invoice or interaction
    in their silence window N (the inactivity label's: max(min_silence_days, purchase_cycles
    x their usual cycle)) before it. Sorted by revenue lost (invoiced in the 365 days ending
    with the last purchase), largest first, then account id. A manager key lists only its own
    clients."""
    manager = principal.list_scope(manager, "clients")
    store = state.store
    try:
        found = lapsed_list(store, state.settings.snapshots, manager=manager, as_of=as_of)
    except StoreError as exc:
        raise store_unavailable(exc) from exc
    if as_of is not None and found.latest is not None and as_of > found.latest:
        raise _late(as_of, found.latest)
    action = state.rules.playbook.situation_action("lapsed")
    rows = found.rows.iloc[offset : offset + limit]
    accounts = []
    for record in rows.to_dict("records"):
        row = {k: _clean(v) for k, v in record.items()}
        accounts.append(
            LapsedAccount(
                **row,
                action=WinBackAction(
                    **action.model_dump(exclude={"source", "because"}),
                    because="lapsed",
                    because_text=lapse_sentence(row),
                ),
            )
        )
    return LapsedList(
        as_of=found.as_of,
        total=len(found.rows),
        revenue_lost=found.revenue_lost,
        activity_recorded=found.recorded,
        accounts=accounts,
    )
