"""Request and response bodies of the API (pydantic), with the examples shown at ``/docs``.

The accepted features are generated from the feature catalogue (``features.catalog``): one
optional member per feature, typed by its kind, so an unknown name or a wrong type is a 422
naming ``accounts[i].features.<name>``:

- number: a finite JSON number (no strings, no booleans, no NaN/Infinity) within the
  feature's valid range in the catalogue (``last_survey_score`` 0-10, days, counts and money
  at least 0...): a value outside is a 422 naming the field and the range;
- flag: ``0``/``1`` or ``true``/``false``;
- category: one of its levels (``lifecycle_stage``: new, established, long_term;
  ``revenue_segment``: A, B, C).

``null`` or a missing feature means unknown: the model treats it as missing and the health
rules give it their neutral share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, create_model
from typing_extensions import TypedDict

from churn.text import ID_MAX_LENGTH, NAME_MAX_LENGTH
from features.catalog import CATALOG, Feature
from features.health import Segment
from features.signals.lifecycle import STAGES
from serving.model_holder import ReasonCode
from serving.score_record import FIELDS, GROUPS, ScoreField, View, in_view

CATEGORY_LEVELS: dict[str, tuple[str, ...]] = {
    "lifecycle_stage": tuple(STAGES),
    "revenue_segment": tuple(get_args(Segment)),
}

_Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def _flag_value(value: bool | float) -> float:
    number = float(value)
    if number not in (0.0, 1.0):
        raise ValueError("a flag is 0 or 1 (or false/true)")
    return number


_Flag = Annotated[
    StrictBool | Annotated[float, Field(strict=True, ge=0, le=1)], AfterValidator(_flag_value)
]


def _in_range(feature: Feature) -> Any:
    """A validator refusing values outside the feature's valid range, naming the range."""

    def check(value: float) -> float:
        if not feature.in_range(value):
            raise ValueError(f"must be {feature.range_text()}")
        return value

    return AfterValidator(check)


def _feature_type(feature: Feature) -> Any:
    if feature.kind == "category":
        levels = CATEGORY_LEVELS.get(feature.name)
        base: Any = Literal[levels] if levels else Annotated[str, Field(max_length=100)]
    elif feature.kind == "flag":
        base = _Flag
    else:
        base = Annotated[_Number, _in_range(feature)]
    unit = "" if feature.unit in ("flag", "category") else f" Unit: {feature.unit}."
    valid = "" if feature.kind == "category" else f" Valid: {feature.range_text()}."
    return Annotated[base | None, Field(description=f"{feature.description}.{unit}{valid}")]


FeatureValues = TypedDict(  # type: ignore[misc]
    "FeatureValues", {f.name: _feature_type(f) for f in CATALOG}, total=False
)
FeatureValues.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
FeatureValues.__doc__ = "Feature values named as in the catalogue (GET /v1/model); all optional."

_Strict = ConfigDict(extra="forbid")

EXAMPLE_ACCOUNT: dict[str, Any] = {
    "account_id": "A-1042",
    "account_manager": "Dana Reyes",
    "features": {
        "days_since_last_contact": 74,
        "silent_60d": 1,
        "interactions_90d": 1,
        "meetings_180d": 0,
        "client_contacts_active": 1,
        "single_threaded": 1,
        "overdue_days": 12,
        "revenue_365d": 180000,
        "last_survey_score": 6,
        "lifecycle_stage": "established",
        "revenue_segment": "A",
    },
    "health_score_30d_ago": 61.5,
    "days_since_last_scoring": 31,
}


class LateInvoiceIn(BaseModel):
    """One unpaid invoice past due: the invoice escalation's evidence."""

    model_config = _Strict

    invoice_id: str = Field(min_length=1, max_length=ID_MAX_LENGTH, strict=True)
    amount: float = Field(ge=0, strict=True, allow_inf_nan=False)
    days_late: float = Field(ge=0, le=36500, strict=True, allow_inf_nan=False)


class AccountIn(BaseModel):
    """One account to score: its id, optional manager, and its feature values."""

    model_config = _Strict

    account_id: str = Field(min_length=1, max_length=ID_MAX_LENGTH, strict=True)
    account_manager: str | None = Field(
        None,
        max_length=NAME_MAX_LENGTH,
        strict=True,
        description="Required with a manager key: must be the key's manager.",
    )
    features: FeatureValues = Field(default_factory=FeatureValues)
    health_score_30d_ago: float | None = Field(
        None,
        ge=0,
        le=100,
        strict=True,
        allow_inf_nan=False,
        description="Health score 30 days ago, for the 15-point-drop escalation.",
    )
    revenue: float | None = Field(
        None,
        ge=0,
        strict=True,
        allow_inf_nan=False,
        description="Annual revenue for revenue_at_risk; default revenue_365d, "
        "else contract_value.",
    )
    late_invoice: LateInvoiceIn | None = Field(
        None,
        description="The unpaid invoice that most recently became 30+ days late (and is not "
        "yet stale), for the invoice escalation and its evidence. Without it the rule reads "
        "features.overdue_days (the oldest unpaid invoice) and shows no invoice id.",
    )
    days_since_last_scoring: float | None = Field(
        None,
        gt=0,
        le=36500,
        strict=True,
        allow_inf_nan=False,
        description="Days since the account was last scored: the invoice escalation fires for "
        "an invoice that became 30+ days late within them (default: the rule's lookback_days, "
        "30).",
    )


class PredictRequest(BaseModel):
    """Accounts to score, at most ``serve.max_accounts_per_request`` (default 1,000)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"accounts": [EXAMPLE_ACCOUNT]}]}
    )

    accounts: list[AccountIn] = Field(min_length=1)


class EscalationEvidence(BaseModel):
    """What made an escalation fire (docs/domain.md#escalations). The invoice rule: the
    invoice, its amount and days late (``invoice_id`` and ``amount`` null when the request
    gave only ``overdue_days``). The drop rule: the earlier score, its date (null in
    POST /v1/predict) and the drop in points."""

    invoice_id: str | None = None
    amount: float | None = None
    days_late: float | None = None
    previous_score: float | None = None
    previous_as_of: date | None = None
    score_drop: float | None = None


class EscalationOut(BaseModel):
    code: str
    rule: str = Field(description="The rule that fired.")
    action: str = Field(description="What the firm does about it.")
    severity: int = Field(description="1 is the most severe.")
    evidence: EscalationEvidence | None = Field(
        None, description="What made it fire; null for the score thresholds."
    )


class Reason(BaseModel):
    feature: str
    family: str
    value: float | None = Field(
        description="The feature's value: always known (an unknown value is never a reason); "
        "null only in rows stored by an older version."
    )
    impact_pts: float = Field(
        description="Signed impact on the churn probability in percentage points "
        "(+9.0 = nine points more likely to churn)."
    )
    sentence: str = Field(examples=["No contact for 74 days (+9 pts)"])


class ActionOut(BaseModel):
    id: str
    title: str
    steps: str
    owner: str
    due: str
    priority: str
    because: str = Field(description="The driver feature or escalation code behind the action.")
    because_text: str = Field(description="That driver's sentence or the escalation's rule.")
    source: Literal["escalation", "driver"]


class FlagOut(BaseModel):
    """Something the account's scores disagree about, with the reasons of both sides
    (docs/metrics.md#flags)."""

    code: str = Field(examples=["quiet_risk"], description="quiet_risk, rule_only_risk, ...")
    text: str = Field(description="What the flag means for this account, in one sentence.")
    model_reasons: list[str] = Field(
        description="The model's top reasons that raise the risk (sentences)."
    )
    rule_reasons: list[str] = Field(
        description="The health components losing the most points, with the sub-rules "
        "that cost them (sentences)."
    )


# -- the score views: built from the score record (serving/score_record.py) ------------------

_KIND_TYPES: Mapping[str, Any] = {"float": float, "int": int, "text": str}


def _score_type(f: ScoreField, view: View = "prediction") -> Any:
    base = Literal[f.values] if f.kind == "band" else _KIND_TYPES[f.kind]
    nullable = f.nullable or (f.nullable_stored and view != "prediction")
    return base | None if nullable else base


def score_group_model(group: str, fields: Iterable[ScoreField] = FIELDS) -> type[BaseModel]:
    """The model of one nested group of score fields (``HealthComponents``)."""
    spec = GROUPS[group]
    members: dict[str, Any] = {
        f.api: (_score_type(f), Field(description=f.description))
        for f in fields
        if f.group == group
    }
    return create_model(spec.model, __doc__=spec.description, **members)


def score_model(
    name: str,
    view: View,
    doc: str,
    *,
    head: Mapping[str, Any],
    before: Mapping[str, Mapping[str, Any]] | None = None,
    tail: Mapping[str, Any] | None = None,
    fields: Iterable[ScoreField] = FIELDS,
    groups: Mapping[str, type[BaseModel]] | None = None,
) -> type[BaseModel]:
    """A response model showing the score record's fields of ``view``, in the record's order.

    ``head`` fields come first (the account's identity), ``before[key]`` fields just before
    the score field ``key`` (the explanation), ``tail`` fields last; each is a ``(type,
    FieldInfo)`` pair as for :func:`pydantic.create_model`.
    """
    fields = tuple(fields)
    groups = _GROUP_MODELS if groups is None else groups
    members: dict[str, Any] = dict(head)
    for f in in_view(view, fields):
        members.update((before or {}).get(f.api, {}))
        if f.group is None:
            members[f.api] = (_score_type(f, view), Field(description=f.description))
        elif f.group not in members:
            members[f.group] = (groups[f.group], ...)
    members.update(tail or {})
    return create_model(name, __doc__=doc, **members)


_GROUP_MODELS: dict[str, type[BaseModel]] = {g: score_group_model(g) for g in GROUPS}

if TYPE_CHECKING:  # built at run time; a type checker sees plain models
    HealthComponents = BaseModel
    ServiceComponents = BaseModel
    Prediction = BaseModel
    AccountSummary = BaseModel
    HistoryPoint = BaseModel
    AccountDetail = BaseModel
else:
    HealthComponents = _GROUP_MODELS["health_components"]
    ServiceComponents = _GROUP_MODELS["service_components"]

    Prediction = score_model(
        "Prediction",
        "prediction",
        """One account's scores, explanation and next steps.

    ``base_rate + sum(reasons.impact_pts) / 100 + other_impact_pts / 100 ==
    churn_probability`` (the impacts of every feature add up to the probability).
    """,
        head={"account_id": (str, ...)},
        before={
            "revenue_at_risk": {
                "escalations": (list[EscalationOut], ...),
                "reasons": (
                    list[Reason],
                    Field(
                        description="Top factors by size of impact among the features whose "
                        "value is known, largest first."
                    ),
                ),
                "other_impact_pts": (
                    float | None,
                    Field(
                        description="Summed impact of every feature not listed in reasons "
                        "(points), unknown values included."
                    ),
                ),
                "actions": (list[ActionOut], ...),
                "flags": (
                    list[FlagOut],
                    Field(description="What the model and the health rules disagree about."),
                ),
            }
        },
    )

    AccountSummary = score_model(
        "AccountSummary",
        "summary",
        "One account's latest stored score, as listed in the portfolio.",
        head={"account_id": (str, ...)},
    )

    HistoryPoint = score_model(
        "HistoryPoint",
        "history",
        "The account's score on one stored date.",
        head={"as_of": (date, ...)},
    )

    AccountDetail = score_model(
        "AccountDetail",
        "detail",
        """The account's latest stored score with its explanation, escalations, actions and
    every stored date, oldest first.""",
        head={"account_id": (str, ...), "as_of": (date, ...)},
        before={
            "model_version": {
                "escalations": (list[EscalationOut], ...),
                "reasons": (list[Reason], ...),
                "actions": (list[ActionOut], ...),
                "flags": (list[FlagOut], ...),
            }
        },
        tail={"history": (list[HistoryPoint], ...)},
    )

#: The keys of a prediction, in the order the API writes them.
PREDICTION_KEYS: tuple[str, ...] = tuple(Prediction.model_fields)


class AccountList(BaseModel):
    as_of: date | None = Field(description="The scored date listed; null when nothing is stored.")
    previous_as_of: date | None = Field(description="The date changes are measured against.")
    total: int = Field(description="Accounts matching the filters (before limit/offset).")
    accounts: list[AccountSummary] = Field(
        description="Most urgent first: by priority (act_now, watch, ok; none last), then "
        "revenue at risk, largest first."
    )


def _reason(feature: str, family: str, value: float, pts: float, sentence: str) -> dict[str, Any]:
    return {
        "feature": feature,
        "family": family,
        "value": value,
        "impact_pts": pts,
        "sentence": sentence,
    }


EXAMPLE_PREDICTION: dict[str, Any] = {
    "account_id": "A-1042",
    "churn_probability": 0.34,
    "risk_band": "high",
    "priority": "act_now",
    "base_rate": 0.08,
    "health_score": 47.5,
    "health_components": {
        "engagement": 9.0,
        "relationship": 12.5,
        "financial": 16.0,
        "satisfaction": 10.0,
    },
    "health_band": "at_risk",
    "health_drop_30d": 14.0,
    "service_score": 1,
    "service_components": {
        "client_contacts": 0,
        "firm_contacts": 0,
        "meetings": 0,
        "seniority": 1,
        "survey": 0,
    },
    "escalations": [
        {
            "code": "esc_below_60",
            "rule": "health score below 60",
            "action": "account review meeting within one week",
            "severity": 3,
        }
    ],
    "reasons": [
        _reason(
            "days_since_last_contact", "behavioural", 74, 9.1, "No contact for 74 days (+9 pts)"
        ),
        _reason(
            "single_threaded",
            "relationship",
            1,
            6.2,
            "Single-threaded: only one client contact (+6 pts)",
        ),
        _reason(
            "overdue_days", "financial", 12, 3.4, "Oldest unpaid invoice 12 days past due (+3 pts)"
        ),
        _reason(
            "meetings_180d", "behavioural", 0, 2.9, "No meetings in the last 180 days (+3 pts)"
        ),
        _reason(
            "last_survey_score", "satisfaction", 6, 2.1, "Last survey score 6.0 out of 10 (+2 pts)"
        ),
    ],
    "other_impact_pts": 2.3,
    "actions": [
        {
            "id": "account_review_meeting",
            "title": "Account review meeting",
            "steps": "Review the account with the team: health components, recent warning "
            "signals, open issues and upcoming milestones.",
            "owner": "account manager",
            "due": "within one week",
            "priority": "high",
            "because": "esc_below_60",
            "because_text": "health score below 60",
            "source": "escalation",
        },
        {
            "id": "checkin_call",
            "title": "Schedule a check-in call",
            "steps": "Call the main contact without a sales agenda: ask about their priorities.",
            "owner": "account manager",
            "due": "this week",
            "priority": "high",
            "because": "days_since_last_contact",
            "because_text": "No contact for 74 days (+9 pts)",
            "source": "driver",
        },
    ],
    "flags": [
        {
            "code": "rule_only_risk",
            "text": "The health score is 47.5 (At risk) while the model gives a 34% churn "
            "probability, below its watch point (40%): the health rules see a risk the model "
            "does not.",
            "model_reasons": [
                "No contact for 74 days (+9 pts)",
                "Single-threaded: only one client contact (+6 pts)",
            ],
            "rule_reasons": [
                "Engagement 9 of 30 points: No contact for 74 days (1 of 10); "
                "No meetings in the last 180 days (0 of 6)",
                "Relationship depth 12.5 of 25 points: 1 active client contact (0 of 7); "
                "Single-threaded: only one client contact (0 of 2)",
            ],
        }
    ],
    "revenue_at_risk": 61200.0,
    "model_version": "2024-06-01-a1b2c3",
}


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_version": "2024-06-01-a1b2c3",
                    "probability_unavailable_reason": None,
                    "predictions": [EXAMPLE_PREDICTION],
                }
            ]
        }
    )

    model_version: str | None = Field(description="null when no model is loaded.")
    probability_unavailable_reason: str | None = Field(
        description="Why churn_probability is null (no model loaded); null otherwise."
    )
    predictions: list[Prediction]


class ValidationIssue(BaseModel):
    field: str = Field(examples=["accounts[0].features.foo"])
    loc: list[str | int]
    message: str
    type: str


class ProblemDetail(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ValidationIssue] | None = None


class LiveResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    """A model serves. Without an admin key only ``status`` and ``model_version``."""

    status: Literal["ready"] = "ready"
    model_version: str
    loaded_at: str | None = Field(None, description="When it was loaded (admin key only).")
    reload_error: str | None = Field(
        None,
        description="Why the last reload failed, the model above still serving (admin key only).",
    )


class NotReadyResponse(BaseModel):
    """No model serves (rule-based scores still do): a reason code, the detail for admins."""

    status: Literal["not ready"] = "not ready"
    reason: ReasonCode
    detail: str | None = Field(None, description="The full reason (admin key only).")


class ModelInfo(BaseModel):
    available: bool
    model_version: str | None
    unavailable_reason: str | None
    trained_at: str | None
    loaded_at: str | None
    base_rate: float | None = Field(
        description="The model's probability for an account with average features "
        "(calibration(sigmoid(bias))): the starting point the impacts add to."
    )
    horizon_days: int | None
    metrics: dict[str, Any]
    model_features: list[str] = Field(description="The model's inputs, in order.")
    features: list[dict[str, Any]] = Field(description="The feature catalogue.")


class WinBackAction(BaseModel):
    """The playbook's action for a lapsed client (its ``lapsed`` situation)."""

    id: str = Field(examples=["win_back"])
    title: str
    steps: str
    owner: str
    due: str
    priority: str
    because: Literal["lapsed"] = Field(description="The situation behind the action.")
    because_text: str = Field(
        examples=[
            "No purchase or contact for 286 days, past its 30-day window (usual cycle 10 days)"
        ],
        description="Why the client is lapsed, in words.",
    )


class LapsedAccount(BaseModel):
    """A client past its silence window (docs/domain.md#lapsed-clients-and-win-backs)."""

    account_id: str
    account_manager: str | None
    name: str | None = Field(description="The client's name, where the source has one.")
    last_purchase: date = Field(description="Its last invoice before as_of.")
    last_activity: date = Field(description="Its last invoice or interaction before as_of.")
    usual_cycle_days: float | None = Field(
        description="Median gap in days between its distinct invoice days; null with fewer "
        "than two."
    )
    silence_days: int = Field(
        description="Its silence window N: max(snapshots.min_silence_days, "
        "snapshots.purchase_cycles x the usual cycle), the inactivity label's window."
    )
    lapsed_on: date = Field(description="The first day it was lapsed: last activity + N + 1.")
    days_silent: int = Field(description="Days from its last activity to as_of.")
    revenue_lost: float = Field(
        description="Invoiced in the 365 days ending with its last purchase."
    )
    lifetime_revenue: float = Field(description="Everything invoiced to it before as_of.")
    action: WinBackAction


class LapsedList(BaseModel):
    as_of: date | None = Field(
        description="The date listed (records strictly before it count); null when nothing "
        "is stored."
    )
    total: int = Field(description="Lapsed clients (before limit/offset).")
    revenue_lost: float = Field(description="Revenue lost of every lapsed client listed.")
    activity_recorded: bool = Field(
        description="False when the store holds no daily activity yet (run `churn score`)."
    )
    accounts: list[LapsedAccount] = Field(
        description="Most revenue lost first, then by account id."
    )


class ReloadResponse(BaseModel):
    outcome: Literal["reloaded"]
    model_version: str
    previous_version: str | None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problem+json errors."""
    return {
        s: {"model": ProblemDetail, "content": {"application/problem+json": {}}} for s in statuses
    }
