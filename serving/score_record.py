"""The score record: every score field the store keeps and the API serves, declared once.

Each field is one :class:`ScoreField`: its column (in the store's ``scores`` table and in the
batch's and the health rules' frames), its name in the API, a label for people, its unit,
maximum, description and kind, where its value comes from and which API views show it. The
store's ``scores`` table (``serving.store``), the batch's score columns (``serving.batch``),
the API's score models (``serving.schemas``) and the accounts route all derive from
:data:`FIELDS`, so adding a score field is one declaration here plus the code computing it.

The health components and the client service parts come from the health rules
(``features.health`` defines their names and maxima); the fields that are snapshot features
take their description and unit from the feature catalogue. Definitions in words:
``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from churn.model_terms import HEALTH_TO_RISK, REVENUE_BASIS, RISK_BAND_NAMES, RISK_BANDS
from features.catalog import FEATURES
from features.health import (
    COMPONENT_COLUMNS,
    HEALTH_BANDS,
    SERVICE_PART_MAXIMA,
    component_maxima,
)
from serving.priority import PRIORITIES

Kind = Literal["float", "int", "text", "band"]
"""``float`` and ``int`` numbers, free ``text``, or a ``band``: one of the field's ``values``."""

Source = Literal["snapshot", "model", "store"]
"""Where the value comes from: the scored snapshot (features and rule-based scores, copied by
the batch as they are), the model (computed when scoring, with or without a model: the
probability, the data completeness), or the store (derived when reading stored scores)."""

View = Literal["prediction", "summary", "detail", "history"]
"""The API's views of an account's scores: ``POST /v1/predict``'s ``Prediction``, the
portfolio list's ``AccountSummary``, ``AccountDetail`` and its ``HistoryPoint``."""

VIEWS: tuple[View, ...] = ("prediction", "summary", "detail", "history")
_ALL: frozenset[View] = frozenset(VIEWS)
_STORED_VIEWS: frozenset[View] = frozenset(("summary", "detail", "history"))
_ACCOUNT: frozenset[View] = frozenset(("summary", "detail"))
_BREAKDOWN: frozenset[View] = frozenset(("prediction", "detail", "history"))
_COMPLETENESS: frozenset[View] = frozenset(("prediction", "summary", "detail"))


@dataclass(frozen=True)
class ScoreGroup:
    """Fields the API nests in one object (``health_components``), with its model's name."""

    api: str
    model: str
    description: str


@dataclass(frozen=True)
class ScoreField:
    """One stored or served score field.

    ``column`` names it in the store and in frames, ``api`` in API responses (inside
    ``group``'s object when it has one). ``maximum`` is set where the value is bounded.
    ``nullable`` False means every scored account has a value; ``nullable_stored`` True
    relaxes that for the views read from the store (a row written by hand or by an older
    version may lack the value). ``stored`` False: served only,
    not a column of the store. ``views`` lists the API views showing it (none: stored only).
    """

    column: str
    label: str
    description: str
    kind: Kind
    source: Source
    views: frozenset[View] = field(default_factory=frozenset)
    api: str = ""
    unit: str = ""
    maximum: float | None = None
    nullable: bool = True
    nullable_stored: bool = False
    stored: bool = True
    group: str | None = None
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.api:
            object.__setattr__(self, "api", self.column)
        if (self.kind == "band") != bool(self.values):
            raise ValueError(f"score field {self.column}: a band, and only a band, has values")


GROUPS: Mapping[str, ScoreGroup] = {
    "health_components": ScoreGroup(
        "health_components", "HealthComponents", "The health score's components, in points."
    ),
    "service_components": ScoreGroup(
        "service_components", "ServiceComponents", "The client service score's parts, in points."
    ),
}

# Labels and descriptions of the parts the health rules define (names and maxima there).
_COMPONENT_LABELS: Mapping[str, str] = {
    "engagement": "Engagement",
    "relationship": "Relationship depth",
    "financial": "Financial health",
    "satisfaction": "Satisfaction",
}
_SERVICE_PARTS: Mapping[str, tuple[str, str]] = {  # column: (label, description)
    "service_client_contacts": (
        "More than one contact at the client",
        "1 when more than one client contact",
    ),
    "service_firm_contacts": (
        "Client knows more than one of us",
        "1 when the client knows more than one of us",
    ),
    "service_meetings": (
        "Two or more meetings in six months",
        "1 with two or more meetings in six months",
    ),
    "service_seniority": (
        "Most senior contact (junior 0, middle 1, senior 2)",
        "0 junior, 1 middle, 2 senior or executive",
    ),
    "service_survey": ("Last survey score above 8", "1 when the last survey score is above 8"),
}


def _feature(
    column: str, label: str, views: frozenset[View] = frozenset(), kind: Kind = "float"
) -> ScoreField:
    """A snapshot feature stored with the scores: description and unit from the catalogue."""
    feature = FEATURES[column]
    unit = "" if feature.unit == "category" else feature.unit
    return ScoreField(column, label, f"{feature.description}.", kind, "snapshot", views, unit=unit)


def _risk_band_text() -> str:
    bounds = ", ".join(f"{band} (p >= {lower:.2f})" for band, lower in RISK_BANDS[:-1])
    fallback = ", ".join(f"{h} -> {r}" for h, r in HEALTH_TO_RISK.items())
    return f"{bounds}, {RISK_BANDS[-1][0]}; without a model from the health band ({fallback})."


#: The components' maxima as the shipped health config splits the 100 points (a config may
#: split them otherwise; the scores hold points, these are what they are shown out of).
_COMPONENT_MAXIMA = component_maxima()
#: The health score's maximum: the sum of its components' maxima.
HEALTH_MAXIMUM = float(sum(_COMPONENT_MAXIMA.values()))
_SERVICE_MAXIMUM = float(sum(SERVICE_PART_MAXIMA.values()))

#: Every score field, in the order of the store's columns and of the API's fields.
FIELDS: tuple[ScoreField, ...] = (
    ScoreField(
        "account_manager",
        "Account manager",
        "The account's manager.",
        "text",
        "snapshot",
        _ACCOUNT,
    ),
    ScoreField(
        "churn_probability",
        "Churn probability",
        "Calibrated probability of churn within the horizon; null without a model.",
        "float",
        "model",
        _ALL,
        unit="probability",
        maximum=1.0,
    ),
    ScoreField(
        "risk_band",
        "Risk band",
        _risk_band_text(),
        "band",
        "model",
        _ALL,
        nullable=False,
        nullable_stored=True,
        values=RISK_BAND_NAMES,
    ),
    ScoreField(
        "priority",
        "Priority",
        "act_now, watch or ok: the churn probability against the model's operating points "
        "combined with the escalations and the health band (docs/metrics.md#priority); "
        "without a model from the escalations and the health band alone.",
        "band",
        "model",
        _ALL,
        nullable=False,
        nullable_stored=True,
        values=PRIORITIES,
    ),
    ScoreField(
        "base_rate",
        "Base rate",
        "The model's probability for an account with average features: the starting point "
        "the impacts add to.",
        "float",
        "model",
        frozenset(("prediction",)),
        unit="probability",
        maximum=1.0,
        stored=False,
    ),
    ScoreField(
        "health_score",
        "Health score",
        f"Rule-based health score 0-{HEALTH_MAXIMUM:g}.",
        "float",
        "snapshot",
        _ALL,
        unit="points",
        maximum=HEALTH_MAXIMUM,
        nullable=False,
    ),
    *(
        ScoreField(
            column,
            _COMPONENT_LABELS[name],
            f"0-{maximum:g}",
            "float",
            "snapshot",
            _BREAKDOWN,
            api=name,
            unit="points",
            maximum=maximum,
            nullable=False,
            group="health_components",
        )
        for column, (name, maximum) in zip(
            COMPONENT_COLUMNS, _COMPONENT_MAXIMA.items(), strict=True
        )
    ),
    ScoreField(
        "health_band",
        "Health band",
        "healthy, at_risk or critical: the health score against the bands of configs/health.yaml.",
        "band",
        "snapshot",
        _ALL,
        nullable=False,
        values=HEALTH_BANDS,
    ),
    ScoreField(
        "health_change",
        "Health change",
        "Health score change since the stored date a month earlier (null without one).",
        "float",
        "store",
        frozenset(("summary",)),
        unit="points",
        stored=False,
    ),
    ScoreField(
        "churn_probability_change",
        "Churn probability change",
        "Churn probability change since the stored date a month earlier (null without one).",
        "float",
        "store",
        frozenset(("summary",)),
        unit="probability",
        stored=False,
    ),
    ScoreField(
        "health_score_30d_ago",
        "Health score 30 days ago",
        "The account's stored health score at the scoring a month earlier (28 to 31 days "
        "before; in training snapshots: 30 days before), which the 15-point drop compares with.",
        "float",
        "snapshot",
        unit="points",
        maximum=HEALTH_MAXIMUM,
    ),
    ScoreField(
        "health_drop_30d",
        "Health drop in 30 days",
        "health_score_30d_ago minus health_score (null without an earlier score).",
        "float",
        "snapshot",
        frozenset(("prediction", "detail")),
        unit="points",
    ),
    ScoreField(
        "service_score",
        "Client service score",
        f"Client service score 0-{_SERVICE_MAXIMUM:g}.",
        "int",
        "snapshot",
        _ALL,
        unit="points",
        maximum=_SERVICE_MAXIMUM,
        nullable=False,
        nullable_stored=True,
    ),
    *(
        ScoreField(
            column,
            _SERVICE_PARTS[column][0],
            _SERVICE_PARTS[column][1],
            "int",
            "snapshot",
            frozenset(("prediction", "detail")),
            api=column.removeprefix("service_"),
            unit="points",
            maximum=float(maximum),
            nullable=False,
            group="service_components",
        )
        for column, maximum in SERVICE_PART_MAXIMA.items()
    ),
    _feature("revenue_segment", "Revenue segment", _ACCOUNT, "text"),
    _feature("lifecycle_stage", "Lifecycle stage", _ACCOUNT, "text"),
    _feature("tenure_months", "Tenure"),
    _feature("revenue_365d", "Revenue, last 365 days", _ACCOUNT),
    _feature("contract_value", "Contract value"),
    _feature("days_to_renewal", "Days to renewal"),
    ScoreField(
        "revenue_at_risk",
        "Revenue at risk",
        f"churn_probability x annual revenue (POST /v1/predict: the request's revenue, else "
        f"{', else '.join(REVENUE_BASIS)}); null without a probability or a revenue.",
        "float",
        "model",
        _ALL,
        unit="currency",
    ),
    ScoreField(
        "top_reason",
        "Top reason",
        "The top factor that raises the risk.",
        "text",
        "store",
        frozenset(("summary",)),
        stored=False,
    ),
    ScoreField(
        "model_version",
        "Model version",
        "The model version that scored the account; null without a model.",
        "text",
        "model",
        _ALL,
    ),
    ScoreField(
        "data_completeness",
        "Data completeness",
        "Share of the model's features (the catalogue's model inputs without a model) whose "
        "value is known for the account, 0-1.",
        "float",
        "model",
        _COMPLETENESS,
        unit="share",
        maximum=1.0,
        nullable=False,
        nullable_stored=True,
    ),
    ScoreField(
        "missing_sources",
        "Missing sources",
        "Source tables missing for the account, comma-separated (empty when none): every "
        "feature read from the table alone is unknown.",
        "text",
        "model",
        _COMPLETENESS,
        nullable=False,
        nullable_stored=True,
    ),
)

#: Each field by its column.
BY_COLUMN: Mapping[str, ScoreField] = {f.column: f for f in FIELDS}
#: The health score's components and the client service score's parts, in order (the
#: dashboard shows each with its label and maximum).
HEALTH_COMPONENT_FIELDS: tuple[ScoreField, ...] = tuple(
    f for f in FIELDS if f.group == "health_components"
)
SERVICE_PART_FIELDS: tuple[ScoreField, ...] = tuple(
    f for f in FIELDS if f.group == "service_components"
)


def stored(fields: Iterable[ScoreField] = FIELDS) -> tuple[ScoreField, ...]:
    """The fields that are columns of the store's ``scores`` table, in order."""
    return tuple(f for f in fields if f.stored)


def from_snapshot(fields: Iterable[ScoreField] = FIELDS) -> tuple[str, ...]:
    """Columns the batch copies from the scored snapshot into the store, in order."""
    return tuple(f.column for f in fields if f.stored and f.source == "snapshot")


def in_view(view: View, fields: Iterable[ScoreField] = FIELDS) -> tuple[ScoreField, ...]:
    """The fields one API view shows, in order."""
    return tuple(f for f in fields if view in f.views)


def label(column: str) -> str:
    """The label people read for a score column ("Relationship depth")."""
    return BY_COLUMN[column].label


def _layout(
    view: View, fields: Iterable[ScoreField]
) -> tuple[tuple[str, str | tuple[tuple[str, str], ...]], ...]:
    """The view's API keys in order, each with its column or, for a group, its members'
    (api, column) pairs."""
    out: list[tuple[str, Any]] = []
    groups: dict[str, list[tuple[str, str]]] = {}
    for f in in_view(view, fields):
        if f.group is None:
            out.append((f.api, f.column))
        elif f.group not in groups:
            groups[f.group] = [(f.api, f.column)]
            out.append((f.group, groups[f.group]))
        else:
            groups[f.group].append((f.api, f.column))
    return tuple((key, v if isinstance(v, str) else tuple(v)) for key, v in out)


_LAYOUTS = {view: _layout(view, FIELDS) for view in VIEWS}


def api_values(
    values: Mapping[str, Any], view: View, fields: Iterable[ScoreField] = FIELDS
) -> dict[str, Any]:
    """The view's API fields from one account's values keyed by column (a stored row, or
    the scores of a request), groups nested: ``{"health_components": {"engagement": ...}}``.
    """
    layout = _LAYOUTS[view] if fields is FIELDS else _layout(view, fields)
    out: dict[str, Any] = {}
    for key, source in layout:
        if isinstance(source, str):
            out[key] = values[source]
        else:
            out[key] = {api: values[column] for api, column in source}
    return out
