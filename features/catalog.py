"""The feature catalogue: every snapshot feature defined once.

Each :class:`Feature` carries its family, description, unit, the tables it needs, and the
sentence used to explain it ("No contact for 74 days"). The snapshot builder, the model, the
explanations, the API and ``features/CATALOG.md`` (``python -m features.catalog``) all read
this module; no other place names a feature.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from string import Formatter
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

Family = Literal[
    "behavioural", "relationship", "financial", "satisfaction", "lifecycle", "purchase"
]
FeatureKind = Literal["number", "flag", "category"]
# What a feature measures: a level ("3 meetings in the last 90 days", "sentiment +0.12") or a
# change against the account's own baseline ("meetings 60 % below this client's usual pace"):
# the recent window against the same account's trailing year, so a client's normal level of
# contact, tone, discounting or billing is not mistaken for a risk.
Basis = Literal["level", "baseline"]
BASES: tuple[str, ...] = ("level", "baseline")
Direction = Literal["higher", "lower"]
Bounds = tuple[float | None, float | None]

# The valid range of a feature by its unit, unless the feature declares its own: counts, days,
# hours, months, money and purchase cycles ("cycles": the days since the last purchase over the
# usual gap between purchases) are never negative, shares and flags lie in 0-1, and a relative
# change ("ratio": (recent - previous) / previous) cannot fall below -100 %.
UNIT_BOUNDS: dict[str, Bounds] = {
    "count": (0.0, None),
    "days": (0.0, None),
    "hours": (0.0, None),
    "months": (0.0, None),
    "currency": (0.0, None),
    "cycles": (0.0, None),
    "share": (0.0, 1.0),
    "flag": (0.0, 1.0),
    "ratio": (-1.0, None),
    "share_change": (-1.0, 1.0),
    "category": (None, None),
}
# Units whose sentences show the value scaled: a difference of two shares ("share_change",
# stored as a fraction, 0.04) reads in percentage points ("Discounts 4 percentage points above
# this client's usual share").
UNIT_SCALE: dict[str, float] = {"share_change": 100.0}

FAMILIES: tuple[str, ...] = (
    "behavioural",
    "relationship",
    "financial",
    "satisfaction",
    "lifecycle",
    "purchase",
)

FAMILY_DESCRIPTIONS: dict[str, str] = {
    "behavioural": "How often the client meets and talks with the firm, and the work it buys.",
    "relationship": "Who knows whom on both sides, how senior, and the tone of the contact.",
    "financial": "Revenue, spend trend, payment behaviour, discounts and the next renewal.",
    "satisfaction": "Survey scores, complaints and open service tickets.",
    "lifecycle": "How long the client has been with the firm and how much it is worth.",
    "purchase": "When and how often the client buys (a purchase is a day with an invoice): how "
    "long since the last one against its usual gap, how regular, and the value of its invoices.",
}


@dataclass(frozen=True)
class Feature:
    """One feature of the snapshot.

    ``template`` is a ``str.format`` template with ``{value}`` (and ``{s}``, a plural "s" when the
    value is not 1, and ``{label}`` when ``labels`` names the levels of a numeric scale). For a
    signed number, ``template_negative`` (if set) is used for values below zero, formatted with
    the absolute value ("Spend down 32%"); ``template_zero`` (if set) is used for a value of 0 —
    for a flag, that is the sentence of the flag being off. ``direction`` says which way of the
    value signals more churn risk ("higher" / "lower"), where that is known. ``model`` is True
    for the numeric model inputs; the two categories are descriptive only.

    ``basis`` says whether it is a level or a change against the account's own baseline
    (:data:`Basis`).

    ``bounds`` is the valid range (lowest, highest; None: open), by default the unit's
    (:data:`UNIT_BOUNDS`); a unit without a default (a score, a level) must declare it. The API
    refuses a value outside it, and snapshots built from valid data never leave it.
    """

    name: str
    family: Family
    description: str
    unit: str
    template: str
    kind: FeatureKind = "number"
    model: bool = True
    direction: Direction | None = None
    template_negative: str | None = None
    template_zero: str | None = None
    tables: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    bounds: Bounds | None = None
    basis: Basis = "level"

    def __post_init__(self) -> None:
        if self.bounds is None and self.kind == "category":
            object.__setattr__(self, "bounds", (None, None))
        elif self.bounds is None:
            if self.unit not in UNIT_BOUNDS:
                raise ValueError(f"feature {self.name}: unit {self.unit!r} needs its own bounds")
            object.__setattr__(self, "bounds", UNIT_BOUNDS[self.unit])

    @property
    def valid_range(self) -> Bounds:
        """(lowest, highest) valid value; None where open."""
        assert self.bounds is not None  # set by __post_init__
        return self.bounds

    def range_text(self) -> str:
        """The valid range in words: "between 0 and 10", "at least 0", "any number"."""
        low, high = self.valid_range
        if low is not None and high is not None:
            return f"between {low:g} and {high:g}"
        if low is not None:
            return f"at least {low:g}"
        if high is not None:
            return f"at most {high:g}"
        return "any number"

    def in_range(self, value: float) -> bool:
        """True when ``value`` lies within the valid range (an unknown value is not checked)."""
        low, high = self.valid_range
        return (low is None or value >= low) and (high is None or value <= high)

    def sentence(
        self, value: float | str | None, *, typical: float | None = None, impact: float = 0.0
    ) -> str:
        """The plain-language sentence for one value of this feature.

        Numbers are rounded honestly: a value that is not exactly 0 (or a bound of its range)
        is never printed as one ("0.5%", not "0%"). With ``typical`` (the median of the
        training accounts) and an ``impact`` that raises the risk, a value on the risky side
        of the typical one says so: "Sentiment +0.12 in the last 90 days, below the +0.35
        typical of your clients" (not for flags and named levels, nor for a signed measure
        already on the risky side of zero: "Spend down 12%" reads as a risk on its own).
        """
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return f"{self.description}: unknown"
        if self.kind == "category":
            return self.template.format(value=str(value).replace("_", "-"))
        number = float(value)
        if math.isnan(number):
            return f"{self.description}: unknown"
        if not self.in_range(number):
            return f"{self.description}: {number:g} (outside its valid range, {self.range_text()})"
        template = self.template
        shown = number
        if self.kind == "flag":
            if number < 0.5 and self.template_zero is not None:
                template = self.template_zero
        elif number == 0 and self.template_zero is not None:
            template = self.template_zero
        elif number < 0 and self.template_negative is not None:
            template, shown = self.template_negative, -number
        label = f"level {shown:g}"
        if self.labels and float(shown).is_integer() and 0 <= shown < len(self.labels):
            label = self.labels[int(shown)]
        scale = UNIT_SCALE.get(self.unit, 1.0)
        text = _render(template, shown * scale, label, self._exact_values())
        return text + self._typical_clause(number, typical, impact)

    def _exact_values(self) -> tuple[float, ...]:
        """Values a rounded number may only show when it is exactly one of them (as shown,
        scaled like the value)."""
        scale = UNIT_SCALE.get(self.unit, 1.0)
        low, high = self.valid_range
        return _exact_values(
            (None if low is None else low * scale, None if high is None else high * scale)
        )

    def _typical_clause(self, number: float, typical: float | None, impact: float) -> str:
        if (
            typical is None
            or not math.isfinite(typical)
            or not impact > 0
            or self.kind != "number"
            or self.labels
            or self.direction is None
        ):
            return ""
        below = number < typical
        if (self.direction == "lower") != below or number == typical:
            return ""  # not on the risky side of the typical value
        low, high = self.valid_range
        if typical in (low, high):
            return ""  # most clients sit at the end of the range ("0 complaints"): nothing to add
        if (low is None or low < 0) and (number < 0) == (self.direction == "lower") and number:
            return ""  # a signed measure on the risky side of zero reads as a risk on its own
        spec = _value_spec(self.template) or "g"
        if self.template_negative is not None and "+" not in spec:
            spec = "+" + spec  # a signed measure: show the typical value's sign
        scale = UNIT_SCALE.get(self.unit, 1.0)
        mine = _honest(number * scale, spec, self._exact_values())
        theirs = _honest(typical * scale, spec, self._exact_values())
        if mine == theirs:
            return ""
        return f", {'below' if below else 'above'} the {theirs} typical of your clients"


_SPEC = re.compile(r"^(?P<head>[^.]*)\.(?P<digits>\d+)(?P<type>[f%])$")


@lru_cache(maxsize=64)
def _exact_values(valid_range: tuple[float | None, float | None]) -> tuple[float, ...]:
    bounds = (abs(b) for b in valid_range if b is not None and math.isfinite(b))
    return (0.0, *bounds)


@lru_cache(maxsize=1024)
def _parsed(template: str) -> tuple[tuple[str, str | None, str], ...]:
    """A template's (literal, field name, format spec) parts, parsed once per template."""
    return tuple((lit, name, spec or "") for lit, name, spec, _ in Formatter().parse(template))


@lru_cache(maxsize=1024)
def _value_spec(template: str) -> str | None:
    """The format spec of ``{value:...}`` in a template (None when it has no ``{value}``)."""
    for _literal, name, spec in _parsed(template):
        if name == "value":
            return spec or ""
    return None


def _honest(number: float, spec: str, exact: Sequence[float]) -> str:
    """``format(number, spec)``, with more decimals where rounding would show one of the
    ``exact`` values (0, a bound) that ``number`` is not: 0.005 as ``.0%`` is "0.5%", not "0%";
    "under 0.001%" when even three more decimals would not tell them apart."""
    text = format(number, spec)
    match = _SPEC.match(spec)
    if match is None:
        return text
    scale = 100.0 if match["type"] == "%" else 1.0
    digits = int(match["digits"])

    def shows_exact(d: int) -> float | None:
        shown = round(abs(number) * scale, d)
        for value in exact:
            if abs(number) != value and shown == round(value * scale, d):
                return value
        return None

    hit = shows_exact(digits)
    if hit is None:
        return text
    for extra in (1, 2, 3):
        spec_more = f"{match['head']}.{digits + extra}{match['type']}"
        if shows_exact(digits + extra) is None:
            return format(number, spec_more)
    unit = format(
        10.0 ** -(digits + 3) / scale, f"{match['head'].lstrip('+')}.{digits + 3}{match['type']}"
    )
    return f"under {unit}" if hit == 0 else f"almost {format(hit, spec)}"


def _render(template: str, number: float, label: str, exact: Sequence[float]) -> str:
    """A template with ``{value:spec}`` rounded honestly and ``{s}`` plural unless the printed
    number is exactly 1."""
    out = []
    printed = ""
    for literal, name, spec in _parsed(template):
        out.append(literal)
        if name == "value":
            printed = _honest(number, spec or "", exact)
            out.append(printed)
        elif name == "s":
            out.append("\0s")  # decided once the number is printed
        elif name == "label":
            out.append(label)
        elif name is not None:
            raise KeyError(name)
    plural = "" if printed.lstrip("+") == "1" else "s"
    return "".join(out).replace("\0s", plural)


def _f(
    name: str,
    family: Family,
    description: str,
    unit: str,
    template: str,
    tables: tuple[str, ...],
    **kw: object,
) -> Feature:
    return Feature(name, family, description, unit, template, tables=tables, **kw)  # type: ignore[arg-type]


_I = ("interactions",)
_P = ("projects",)
_C = ("contacts",)
_INV = ("invoices",)
_ACC = ("accounts",)
_S = ("surveys",)
_T = ("tickets",)
SENIORITY_NAMES = ("junior", "middle", "senior", "executive")


def _window_counts(
    stem: str, what: str, sentence: str, zero: str, windows: tuple[int, ...]
) -> list[Feature]:
    return [
        _f(
            f"{stem}_{days}d",
            "behavioural",
            f"Held {what} in the last {days} days",
            "count",
            sentence.format(days=days, value="{value:.0f}", s="{s}"),
            _I,
            direction="lower",
            template_zero=zero.format(days=days),
        )
        for days in windows
    ]


CATALOG: tuple[Feature, ...] = (
    # behavioural ---------------------------------------------------------------------------
    *_window_counts(
        "interactions",
        "interactions (any channel)",
        "{value} interaction{s} in the last {days} days",
        "No interactions in the last {days} days",
        (30, 90, 180),
    ),
    *_window_counts(
        "meetings",
        "meetings and business reviews",
        "{value} meeting{s} in the last {days} days",
        "No meetings in the last {days} days",
        (30, 90, 180),
    ),
    _f(
        "interaction_trend",
        "behavioural",
        "Change in held interactions, last 90 days against the 90 days before",
        "ratio",
        "Interactions up {value:.0%} on the previous quarter",
        _I,
        direction="lower",
        template_negative="Interactions down {value:.0%} on the previous quarter",
        template_zero="Interactions level with the previous quarter",
    ),
    _f(
        "meeting_trend",
        "behavioural",
        "Change in held meetings, last 90 days against the 90 days before",
        "ratio",
        "Meetings up {value:.0%} on the previous quarter",
        _I,
        direction="lower",
        template_negative="Meetings down {value:.0%} on the previous quarter",
        template_zero="Meetings level with the previous quarter",
    ),
    _f(
        "cancellation_rate_90d",
        "behavioural",
        "Share of interactions in the last 90 days cancelled, rescheduled or missed",
        "share",
        "{value:.0%} of interactions in the last 90 days cancelled, rescheduled or missed",
        _I,
        direction="higher",
        template_zero="No interactions cancelled, rescheduled or missed in the last 90 days",
    ),
    _f(
        "days_since_last_contact",
        "behavioural",
        "Days since the last held interaction",
        "days",
        "No contact for {value:.0f} day{s}",
        _I,
        direction="higher",
    ),
    _f(
        "silent_60d",
        "behavioural",
        "No held interaction in the last 60 days",
        "flag",
        "Silent: no contact in the last 60 days",
        _I,
        kind="flag",
        direction="higher",
        template_zero="In contact within the last 60 days",
    ),
    _f(
        "response_hours_90d",
        "behavioural",
        "Mean response time of interactions in the last 90 days",
        "hours",
        "Responses took {value:.0f} hour{s} on average in the last 90 days",
        _I,
        direction="higher",
    ),
    _f(
        "response_time_trend",
        "behavioural",
        "Mean response time, last 90 days minus the 90 days before",
        "hours",
        "Responses {value:.0f} hour{s} slower than the previous quarter",
        _I,
        direction="higher",
        template_negative="Responses {value:.0f} hour{s} faster than the previous quarter",
        template_zero="Response times level with the previous quarter",
        bounds=(None, None),
    ),
    _f(
        "business_review_6m",
        "behavioural",
        "A business review was held in the last 6 months",
        "flag",
        "Business review held in the last 6 months",
        _I,
        kind="flag",
        direction="lower",
        template_zero="No business review in the last 6 months",
    ),
    _f(
        "project_scope_trend",
        "behavioural",
        "Change in budget of projects started, last 180 days against the 180 days before",
        "ratio",
        "Project scope up {value:.0%} on the previous half-year",
        _P,
        direction="lower",
        template_negative="Project scope down {value:.0%} on the previous half-year",
        template_zero="Project scope level with the previous half-year",
    ),
    _f(
        "strategic_share",
        "behavioural",
        "Share of strategic work among projects started in the last 365 days",
        "share",
        "{value:.0%} of the last year's project work is strategic",
        _P,
        direction="lower",
        template_zero="No strategic work in the last year: tactical projects only",
    ),
    _f(
        "projects_over_budget_365d",
        "behavioural",
        "Projects ended in the last 365 days over budget",
        "count",
        "{value:.0f} project{s} ended over budget in the last year",
        _P,
        direction="higher",
        template_zero="No project ended over budget in the last year",
    ),
    _f(
        "projects_late",
        "behavioural",
        "Projects running past their planned end, or ended late in the last 365 days",
        "count",
        "{value:.0f} project{s} late",
        _P,
        direction="higher",
        template_zero="No late projects",
    ),
    # behavioural, against the account's own baseline -------------------------------------
    _f(
        "interactions_vs_usual",
        "behavioural",
        "Held interactions in the last 90 days against the client's usual pace (the 365 days "
        "before, scaled to 90 days; a usual of at least 1)",
        "ratio",
        "Interactions {value:.0%} above this client's usual pace",
        _I,
        direction="lower",
        template_negative="Interactions {value:.0%} below this client's usual pace",
        template_zero="Interactions at this client's usual pace",
        basis="baseline",
    ),
    _f(
        "meetings_vs_usual",
        "behavioural",
        "Held meetings and business reviews in the last 90 days against the client's usual "
        "pace (the 365 days before, scaled to 90 days; a usual of at least 1)",
        "ratio",
        "Meetings {value:.0%} above this client's usual pace",
        _I,
        direction="lower",
        template_negative="Meetings {value:.0%} below this client's usual pace",
        template_zero="Meetings at this client's usual pace",
        basis="baseline",
    ),
    _f(
        "response_hours_vs_usual",
        "behavioural",
        "Mean response time in the last 90 days minus the client's usual (the 365 days before)",
        "hours",
        "Responses {value:.0f} hour{s} slower than usual for this client",
        _I,
        direction="higher",
        template_negative="Responses {value:.0f} hour{s} faster than usual for this client",
        template_zero="Response times as usual for this client",
        bounds=(None, None),
        basis="baseline",
    ),
    _f(
        "client_initiated_share_90d",
        "behavioural",
        "Share of held interactions in the last 90 days that the client initiated",
        "share",
        "{value:.0%} of interactions in the last 90 days initiated by the client",
        _I,
        direction="lower",
        template_zero="No interaction in the last 90 days initiated by the client",
    ),
    _f(
        "client_initiated_vs_usual",
        "behavioural",
        "Share of held interactions the client initiated, last 90 days minus the client's "
        "usual (the 365 days before), as a fraction (0.04 is 4 percentage points)",
        "share_change",
        "The client initiates {value:.0f} percentage point{s} more of the interactions than usual",
        _I,
        direction="lower",
        template_negative="The client initiates {value:.0f} percentage point{s} fewer of the "
        "interactions than usual",
        template_zero="The client initiates its usual share of the interactions",
        basis="baseline",
    ),
    # relationship --------------------------------------------------------------------------
    _f(
        "client_contacts_active",
        "relationship",
        "Active contacts in the client's organisation",
        "count",
        "{value:.0f} active client contact{s}",
        _C,
        direction="lower",
        template_zero="No active client contact",
    ),
    _f(
        "firm_contacts_active",
        "relationship",
        "Active people of the firm the client deals with",
        "count",
        "The client deals with {value:.0f} person{s} at the firm",
        _C,
        direction="lower",
        template_zero="The client deals with nobody at the firm",
    ),
    _f(
        "most_senior_client_level",
        "relationship",
        "Level of the most senior active client contact (0 junior, 1 middle, 2 senior, "
        "3 executive)",
        "level",
        "Most senior client contact: {label}",
        _C,
        direction="lower",
        labels=SENIORITY_NAMES,
        bounds=(0.0, 3.0),
    ),
    _f(
        "new_executive_90d",
        "relationship",
        "A new client executive in a sponsor, decision-maker or procurement role in the last "
        "90 days",
        "flag",
        "New client executive sponsor, decision maker or procurement lead in the last 90 days",
        _C,
        kind="flag",
        direction="higher",
        template_zero="No new client executive in a buying role in the last 90 days",
    ),
    _f(
        "key_contact_departed_90d",
        "relationship",
        "A client sponsor or decision maker left in the last 90 days",
        "flag",
        "Key client contact (sponsor or decision maker) left in the last 90 days",
        _C,
        kind="flag",
        direction="higher",
        template_zero="No key client contact left in the last 90 days",
    ),
    _f(
        "single_threaded",
        "relationship",
        "At most one active client contact",
        "flag",
        "Single-threaded: only one client contact",
        _C,
        kind="flag",
        direction="higher",
        template_zero="Multi-threaded: several client contacts",
    ),
    _f(
        "sentiment_90d",
        "relationship",
        "Mean sentiment of interactions in the last 90 days (-1 to 1)",
        "score",
        "Sentiment {value:+.2f} in the last 90 days",
        _I,
        direction="lower",
        bounds=(-1.0, 1.0),
    ),
    _f(
        "sentiment_trend",
        "relationship",
        "Mean sentiment, last 90 days minus the 90 days before",
        "score",
        "Sentiment up {value:.2f} on the previous quarter",
        _I,
        direction="lower",
        template_negative="Sentiment down {value:.2f} on the previous quarter",
        template_zero="Sentiment level with the previous quarter",
        bounds=(-2.0, 2.0),
    ),
    _f(
        "competitor_mentions_90d",
        "relationship",
        "Interactions in the last 90 days where a competitor was mentioned",
        "count",
        "Competitors mentioned in {value:.0f} interaction{s} in the last 90 days",
        _I,
        direction="higher",
        template_zero="No competitor mentioned in the last 90 days",
    ),
    _f(
        "senior_interaction_share_90d",
        "relationship",
        "Share of held interactions in the last 90 days with senior or executive client people",
        "share",
        "{value:.0%} of interactions in the last 90 days with senior client people",
        _I,
        direction="lower",
        template_zero="No interaction with senior client people in the last 90 days",
    ),
    # relationship, against the account's own baseline ------------------------------------
    _f(
        "client_contacts_left_365d",
        "relationship",
        "Client contacts who left in the last 365 days",
        "count",
        "{value:.0f} client contact{s} left in the last year",
        _C,
        direction="higher",
        template_zero="No client contact left in the last year",
    ),
    _f(
        "client_contacts_vs_year_ago",
        "relationship",
        "Change in active client contacts against a year ago (a year-ago count of at least 1)",
        "ratio",
        "Client contacts up {value:.0%} on a year ago",
        _C,
        direction="lower",
        template_negative="Client contacts down {value:.0%} on a year ago",
        template_zero="As many client contacts as a year ago",
        basis="baseline",
    ),
    _f(
        "firm_contacts_vs_year_ago",
        "relationship",
        "Change in the firm's people the client deals with against a year ago (a year-ago "
        "count of at least 1)",
        "ratio",
        "The client deals with {value:.0%} more people at the firm than a year ago",
        _C,
        direction="lower",
        template_negative="The client deals with {value:.0%} fewer people at the firm than a "
        "year ago",
        template_zero="The client deals with as many people at the firm as a year ago",
        basis="baseline",
    ),
    _f(
        "sentiment_vs_usual",
        "relationship",
        "Mean sentiment in the last 90 days minus the client's usual tone (the 365 days before)",
        "score",
        "Sentiment {value:.2f} above this client's usual tone",
        _I,
        direction="lower",
        template_negative="Sentiment {value:.2f} below this client's usual tone",
        template_zero="Sentiment at this client's usual tone",
        bounds=(-2.0, 2.0),
        basis="baseline",
    ),
    _f(
        "sentiment_30d_vs_usual",
        "relationship",
        "Mean sentiment in the last 30 days minus the client's usual tone (the 365 days before "
        "the last 90)",
        "score",
        "Sentiment in the last 30 days {value:.2f} above this client's usual tone",
        _I,
        direction="lower",
        template_negative="Sentiment in the last 30 days {value:.2f} below this client's usual "
        "tone",
        template_zero="Sentiment in the last 30 days at this client's usual tone",
        bounds=(-2.0, 2.0),
        basis="baseline",
    ),
    # financial -----------------------------------------------------------------------------
    _f(
        "revenue_90d",
        "financial",
        "Revenue invoiced in the last 90 days",
        "currency",
        "Revenue of {value:,.0f} invoiced in the last 90 days",
        _INV,
        direction="lower",
        template_zero="Nothing invoiced in the last 90 days",
    ),
    _f(
        "revenue_365d",
        "financial",
        "Revenue invoiced in the last 365 days",
        "currency",
        "Revenue of {value:,.0f} invoiced in the last year",
        _INV,
        direction="lower",
        template_zero="Nothing invoiced in the last year",
    ),
    _f(
        "spend_change_qoq",
        "financial",
        "Change in revenue, last 90 days against the 90 days before",
        "ratio",
        "Spend up {value:.0%} quarter over quarter",
        _INV,
        direction="lower",
        template_negative="Spend down {value:.0%} quarter over quarter",
        template_zero="Spend flat quarter over quarter",
    ),
    _f(
        "avg_days_late_365d",
        "financial",
        "Mean days late of invoices due in the last 365 days",
        "days",
        "Invoices paid {value:.0f} day{s} late on average in the last year",
        _INV,
        direction="higher",
        template_zero="Invoices paid on time in the last year",
    ),
    _f(
        "overdue_amount",
        "financial",
        "Amount of invoices past due and unpaid",
        "currency",
        "{value:,.0f} overdue",
        _INV,
        direction="higher",
        template_zero="Nothing overdue",
    ),
    _f(
        "overdue_days",
        "financial",
        "Days past due of the oldest unpaid invoice",
        "days",
        "Oldest unpaid invoice {value:.0f} day{s} past due",
        _INV,
        direction="higher",
        template_zero="No invoice past due",
    ),
    _f(
        "overdue_30d",
        "financial",
        "An invoice is 30 or more days past due",
        "flag",
        "An invoice is 30+ days past due",
        _INV,
        kind="flag",
        direction="higher",
        template_zero="No invoice 30+ days past due",
    ),
    _f(
        "discount_share_365d",
        "financial",
        "Discounts as a share of billed value in the last 365 days",
        "share",
        "Discounts {value:.0%} of billed value in the last year",
        _INV,
        direction="higher",
        template_zero="No discounts in the last year",
    ),
    _f(
        "contract_value",
        "financial",
        "Annual contract value",
        "currency",
        "Contract worth {value:,.0f} a year",
        _ACC,
        direction="lower",
    ),
    _f(
        "days_to_renewal",
        "financial",
        "Days to the next contract renewal",
        "days",
        "Renewal in {value:.0f} day{s}",
        _ACC,
        direction="lower",
        template_zero="Renewal today",
    ),
    _f(
        "renewal_flat_spend",
        "financial",
        "Renewal within 90 days with flat or falling spend",
        "flag",
        "Renewal within 90 days with flat or falling spend",
        ("accounts", "invoices"),
        kind="flag",
        direction="higher",
        template_zero="No renewal within 90 days with flat or falling spend",
    ),
    # financial, against the account's own baseline ---------------------------------------
    _f(
        "spend_vs_usual",
        "financial",
        "Revenue invoiced in the last 90 days against the client's usual quarter (the 365 days "
        "before, scaled to 90 days)",
        "ratio",
        "Spend {value:.0%} above this client's usual quarter",
        _INV,
        direction="lower",
        template_negative="Spend {value:.0%} below this client's usual quarter",
        template_zero="Spend at this client's usual quarter",
        basis="baseline",
    ),
    _f(
        "invoice_amount_vs_usual",
        "financial",
        "Mean invoice amount in the last 90 days against the client's usual (the 365 days before)",
        "ratio",
        "Invoices {value:.0%} larger than usual for this client",
        _INV,
        direction="lower",
        template_negative="Invoices {value:.0%} smaller than usual for this client",
        template_zero="Invoices the usual size for this client",
        basis="baseline",
    ),
    _f(
        "discount_share_90d",
        "financial",
        "Discounts as a share of billed value in the last 90 days",
        "share",
        "Discounts {value:.0%} of billed value in the last 90 days",
        _INV,
        direction="higher",
        template_zero="No discounts in the last 90 days",
    ),
    _f(
        "discount_share_vs_usual",
        "financial",
        "Discount share of billed value, last 90 days minus the client's usual (the 365 days "
        "before), as a fraction (0.04 is 4 percentage points)",
        "share_change",
        "Discounts {value:.0f} percentage point{s} above this client's usual share of billed value",
        _INV,
        direction="higher",
        template_negative="Discounts {value:.0f} percentage point{s} below this client's usual "
        "share of billed value",
        template_zero="Discounts at this client's usual share of billed value",
        basis="baseline",
    ),
    _f(
        "days_late_vs_usual",
        "financial",
        "Mean days late of invoices paid in the last 90 days minus the client's usual (those "
        "paid in the 365 days before)",
        "days",
        "Invoices paid {value:.0f} day{s} later than usual for this client",
        _INV,
        direction="higher",
        template_negative="Invoices paid {value:.0f} day{s} sooner than usual for this client",
        template_zero="Invoices paid as promptly as usual for this client",
        bounds=(None, None),
        basis="baseline",
    ),
    # satisfaction --------------------------------------------------------------------------
    _f(
        "last_survey_score",
        "satisfaction",
        "Score of the last survey answer (0-10)",
        "score",
        "Last survey score {value:.1f} out of 10",
        _S,
        direction="lower",
        bounds=(0.0, 10.0),
    ),
    _f(
        "survey_score_change",
        "satisfaction",
        "Last survey score minus the one before",
        "score",
        "Survey score up {value:.1f} point{s} on the one before",
        _S,
        direction="lower",
        template_negative="Survey score down {value:.1f} point{s} on the one before",
        template_zero="Survey score unchanged on the one before",
        bounds=(-10.0, 10.0),
    ),
    _f(
        "days_since_last_survey",
        "satisfaction",
        "Days since the last survey answer",
        "days",
        "Last survey answered {value:.0f} day{s} ago",
        _S,
        direction="higher",
    ),
    _f(
        "complaints_90d",
        "satisfaction",
        "Complaints opened in the last 90 days",
        "count",
        "{value:.0f} complaint{s} in the last 90 days",
        _T,
        direction="higher",
        template_zero="No complaints in the last 90 days",
    ),
    _f(
        "tickets_90d",
        "satisfaction",
        "Tickets opened in the last 90 days",
        "count",
        "{value:.0f} ticket{s} opened in the last 90 days",
        _T,
        direction="higher",
        template_zero="No tickets opened in the last 90 days",
    ),
    _f(
        "open_tickets",
        "satisfaction",
        "Tickets open",
        "count",
        "{value:.0f} open ticket{s}",
        _T,
        direction="higher",
        template_zero="No open tickets",
    ),
    _f(
        "open_high_severity_tickets",
        "satisfaction",
        "Open tickets of high or critical severity",
        "count",
        "{value:.0f} open high-severity ticket{s}",
        _T,
        direction="higher",
        template_zero="No open high-severity tickets",
    ),
    # satisfaction, against the account's own baseline -------------------------------------
    _f(
        "survey_score_vs_usual",
        "satisfaction",
        "Last survey score minus the client's usual: the mean of its answers in the three years "
        "before the last",
        "score",
        "Last survey score {value:.1f} above this client's usual",
        _S,
        direction="lower",
        template_negative="Last survey score {value:.1f} below this client's usual",
        template_zero="Last survey score at this client's usual",
        bounds=(-10.0, 10.0),
        basis="baseline",
    ),
    _f(
        "tickets_vs_usual",
        "satisfaction",
        "Tickets opened in the last 90 days against the client's usual pace (the 365 days "
        "before, scaled to 90 days; a usual of at least 1)",
        "ratio",
        "Tickets {value:.0%} above this client's usual pace",
        _T,
        direction="higher",
        template_negative="Tickets {value:.0%} below this client's usual pace",
        template_zero="Tickets at this client's usual pace",
        basis="baseline",
    ),
    _f(
        "complaints_vs_usual",
        "satisfaction",
        "Complaints in the last 90 days against the client's usual pace (the 365 days before, "
        "scaled to 90 days; a usual of at least 1)",
        "ratio",
        "Complaints {value:.0%} above this client's usual pace",
        _T,
        direction="higher",
        template_negative="Complaints {value:.0%} below this client's usual pace",
        template_zero="Complaints at this client's usual pace",
        basis="baseline",
    ),
    # lifecycle -----------------------------------------------------------------------------
    _f(
        "tenure_months",
        "lifecycle",
        "Months since the client relationship started",
        "months",
        "Client for {value:.0f} month{s}",
        _ACC,
    ),
    _f(
        "lifecycle_stage",
        "lifecycle",
        "Lifecycle stage: new (under 12 months), established (12-36), long-term (36+)",
        "category",
        "Lifecycle stage: {value}",
        _ACC,
        kind="category",
        model=False,
    ),
    _f(
        "revenue_segment",
        "lifecycle",
        "Revenue segment among the accounts of the date: A top 20 %, B middle 60 %, "
        "C bottom 20 % of the last year's revenue (contract value without invoices)",
        "category",
        "Revenue segment {value}",
        _ACC,
        kind="category",
        model=False,
    ),
    # purchase ------------------------------------------------------------------------------
    _f(
        "days_since_last_purchase",
        "purchase",
        "Days since the last purchase (the last day with an invoice)",
        "days",
        "No purchase for {value:.0f} day{s}",
        _INV,
        direction="higher",
        template_zero="Bought today",
    ),
    _f(
        "purchases_to_date",
        "purchase",
        "Purchases so far in the data: distinct days with an invoice",
        "count",
        "{value:.0f} purchase{s} on record",
        _INV,
        direction="lower",
        template_zero="No purchases on record",
    ),
    _f(
        "purchase_gap_days",
        "purchase",
        "Usual gap between purchases: the median of the days between consecutive purchases "
        "(needs two purchases)",
        "days",
        "Usual gap between purchases: {value:.0f} day{s}",
        _INV,
    ),
    _f(
        "purchase_cycles_since_last",
        "purchase",
        "Days since the last purchase divided by the usual gap between purchases",
        "cycles",
        "No purchase for {value:.1f} of its usual cycles",
        _INV,
        direction="higher",
        template_zero="Bought today",
    ),
    _f(
        "purchase_gap_variation",
        "purchase",
        "How irregular the gaps between purchases are: their standard deviation over their mean "
        "(needs three purchases)",
        "coefficient of variation",
        "Gaps between purchases vary by {value:.0%} around the average gap",
        _INV,
        template_zero="Purchases evenly spaced",
        bounds=(0.0, None),
    ),
    _f(
        "months_since_first_purchase",
        "purchase",
        "Months since the first purchase in the data",
        "months",
        "First purchase on record {value:.0f} month{s} ago",
        _INV,
        template_zero="First purchase today",
    ),
    _f(
        "avg_invoice_value",
        "purchase",
        "Mean amount of the invoices so far",
        "currency",
        "Invoices average {value:,.0f}",
        _INV,
    ),
    _f(
        "invoice_value_trend",
        "purchase",
        "Change in invoice value: the mean of the last three invoices against the mean of the "
        "earlier ones (needs three of each)",
        "ratio",
        "Last three invoices {value:.0%} above the earlier average",
        _INV,
        direction="lower",
        template_negative="Last three invoices {value:.0%} below the earlier average",
        template_zero="Last three invoices level with the earlier average",
    ),
)

FEATURES: dict[str, Feature] = {f.name: f for f in CATALOG}
MODEL_FEATURES: list[str] = [f.name for f in CATALOG if f.model]
CATEGORY_FEATURES: list[str] = [f.name for f in CATALOG if f.kind == "category"]


def feature_sentence(name: str, value: float | str | None) -> str:
    """The catalogue's plain-language sentence for a feature's value (unknown when NaN)."""
    try:
        feature = FEATURES[name]
    except KeyError:
        raise KeyError(f"unknown feature {name!r}; see features/CATALOG.md") from None
    return feature.sentence(value)


def source_features(names: Sequence[str]) -> dict[str, list[int]]:
    """Positions in ``names`` of the features read from each single source table, tables in
    catalogue order (a feature needing two tables counts for neither)."""
    return {table: list(idx) for table, idx in _source_features(tuple(names))}


@lru_cache(maxsize=32)
def _source_features(names: tuple[str, ...]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    out: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        tables = FEATURES[name].tables
        if len(tables) == 1:
            out.setdefault(tables[0], []).append(i)
    return tuple((table, tuple(idx)) for table, idx in out.items())


def data_completeness(known: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Per row of ``known`` (rows x ``names``, True where the value is known): the share of the
    features that are known (0-1) and the missing sources, comma-separated ("surveys,
    tickets"; empty when none). A source table is missing for a row when every feature read
    from it alone is unknown: the table is absent, or it has nothing for the account that a
    feature could be computed from."""
    import numpy as np

    known = np.asarray(known, dtype=bool).reshape(-1, len(names))
    share = known.mean(axis=1) if len(names) else np.ones(len(known))
    sources = _source_features(tuple(names))  # cached per feature list
    if len(known) < 16:  # the API's few rows: plain Python beats numpy's per-call set-up
        rows = known.tolist()
        return share, [
            ", ".join(t for t, idx in sources if not any(row[i] for i in idx)) for row in rows
        ]
    tables = [(table, list(idx)) for table, idx in sources]
    code = np.zeros(len(known), dtype=np.int64)  # bit t: table t is missing
    for bit, (_table, idx) in enumerate(tables):
        code |= (~known[:, idx].any(axis=1)).astype(np.int64) << bit
    distinct, inverse = np.unique(code, return_inverse=True)
    texts = [
        ", ".join(t for bit, (t, _idx) in enumerate(tables) if int(c) >> bit & 1)
        for c in distinct.tolist()
    ]
    return share, [texts[i] for i in inverse.reshape(-1).tolist()]


def family_features(family: str) -> list[Feature]:
    """The features of one family, in catalogue order."""
    if family not in FAMILIES:
        raise KeyError(f"unknown family {family!r}; known: {list(FAMILIES)}")
    return [f for f in CATALOG if f.family == family]


def basis_features(basis: str) -> list[Feature]:
    """The features of one basis (``level`` or ``baseline``), in catalogue order."""
    if basis not in BASES:
        raise KeyError(f"unknown basis {basis!r}; known: {list(BASES)}")
    return [f for f in CATALOG if f.basis == basis]


def catalog_records() -> list[dict[str, object]]:
    """The catalogue as JSON-serialisable records (model bundle, ``GET /v1/model``)."""
    records = []
    for feature in CATALOG:
        record = asdict(feature)
        record["tables"] = list(feature.tables)
        record["labels"] = list(feature.labels)
        records.append(record)
    return records


def _cell(text: str | None) -> str:
    return "" if not text else text.replace("|", "\\|")


def catalog_markdown() -> str:
    """The catalogue as Markdown: ``features/CATALOG.md`` and ``churn features --catalog``."""
    counts = {fam: len(family_features(fam)) for fam in FAMILIES}
    lines = [
        "# Feature catalogue",
        "",
        "Generated from `features/catalog.py` by `python -m features.catalog`; do not edit.",
        "",
        f"{len(CATALOG)} features ({len(MODEL_FEATURES)} model inputs) in {len(FAMILIES)} "
        "families: "
        + ", ".join(f"{fam} {n}" for fam, n in counts.items())
        + "; "
        + ", ".join(f"{len(basis_features(b))} {b}" for b in BASES)
        + ".",
        "",
        "Every feature of a snapshot is computed only from records stamped strictly before its",
        '`as_of` date. Windows "last N days" are `[as_of - N days, as_of)`. A feature whose',
        "source table is missing is absent (empty), never 0. Flags are 1 / 0. *Risk* says which",
        "way of the value signals more churn risk. The sentences explain the feature in",
        "reasons: `{value}` is the feature's value (`{s}` a plural s, `{label}` the level's",
        "name). Below the first sentence come, where defined, the one for negative values",
        "(formatted with the absolute value) and the one for 0 (for a flag: when it is off).",
        "Numbers are rounded honestly: a value that is not exactly 0 or a bound of its range is",
        'never printed as one ("Discounts 0.5%", not "0%"). *Valid range* is what the API',
        "accepts (a value outside is a 422 naming the field and the range) and what snapshots",
        "built from valid data stay within. A `share_change` (a difference of two shares) is",
        "stored and sent as a fraction (0.04) and shown in sentences in percentage points",
        '("4 percentage points"). *Basis* says whether the feature is a level or a',
        "change against the client's own baseline: the last 90 days against the 365 days",
        'before them (docs/domain.md, "Against the client\'s own normal").',
        "",
    ]
    for fam in FAMILIES:
        lines += [f"## {fam}", "", FAMILY_DESCRIPTIONS[fam], ""]
        lines += [
            "| feature | basis | unit | kind | model input | risk | valid range | tables | "
            "description | sentence |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for f in family_features(fam):
            templates = (f.template, f.template_negative, f.template_zero)
            sentence = "<br>".join(f"`{_cell(t)}`" for t in templates if t)
            lines.append(
                f"| `{f.name}` | {f.basis} | {f.unit} | {f.kind} | {'yes' if f.model else 'no'} | "
                f"{f.direction or ''} | {'' if f.kind == 'category' else f.range_text()} | "
                f"{', '.join(f.tables)} | {_cell(f.description)} | "
                f"{sentence} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(catalog_markdown(), end="")
