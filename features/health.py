"""Rule-based scores: health score and band, escalations, client service score.

The health rules (sub-rule points, step thresholds, bands, escalation thresholds and their
action text) live in the versioned ``configs/health.yaml``, validated on load into
:class:`HealthConfig`. The service score is a fixed worksheet (see docs/domain.md).
Everything here is vectorised over rows; the API's few-account requests take a plain-float
path (``score_health_records``, ``fired_escalations``) that gives the same values.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from churn.config_files import load_yaml_model
from churn.errors import ConfigError
from churn.settings import PROJECT_ROOT

DEFAULT_HEALTH_CONFIG = PROJECT_ROOT / "configs" / "health.yaml"

# The shipped split of the health score's 100 points over the components
# (docs/domain.md#health-score); a config may split them otherwise, see ``component_maxima``.
HEALTH_SCORE_MAXIMUM = 100.0
COMPONENT_MAXIMA: Mapping[str, float] = {
    "engagement": 30.0,
    "relationship": 25.0,
    "financial": 25.0,
    "satisfaction": 20.0,
}
COMPONENT_COLUMNS: tuple[str, ...] = tuple(f"health_{name}" for name in COMPONENT_MAXIMA)

# Escalation codes are the flag columns; ordered most severe first (partner involvement, then
# executive outreach, then the review meeting, then the account manager's call).
ESCALATION_CODES: tuple[str, ...] = (
    "esc_below_40",
    "esc_invoice_30d_late",
    "esc_below_60",
    "esc_health_drop",
)

# The health bands, healthiest first; ``bands`` in the config sets their lower bounds.
HEALTH_BANDS: tuple[str, ...] = ("healthy", "at_risk", "critical")

# The parts of the client service score and their maximum points: one point each, the most
# senior client contact up to two (junior 0, middle 1, senior or executive 2).
SERVICE_PART_MAXIMA: Mapping[str, int] = {
    "service_client_contacts": 1,
    "service_firm_contacts": 1,
    "service_meetings": 1,
    "service_seniority": 2,
    "service_survey": 1,
}
SERVICE_PARTS: tuple[str, ...] = tuple(SERVICE_PART_MAXIMA)
# Inputs of the client service score (docs/domain.md#client-service-score).
SERVICE_FEATURES: tuple[str, ...] = (
    "client_contacts_active",
    "firm_contacts_active",
    "meetings_180d",
    "most_senior_client_level",
    "last_survey_score",
)

HEALTH_COLUMNS: tuple[str, ...] = (
    *COMPONENT_COLUMNS,
    "health_score",
    "health_band",
    "service_score",
    *SERVICE_PARTS,
)
ESCALATION_COLUMNS: tuple[str, ...] = (
    "health_drop_30d",
    "esc_health_drop",
    "esc_below_60",
    "esc_below_40",
    "esc_invoice_30d_late",
)

Segment = Literal["A", "B", "C"]

# The 15-point drop compares with the scoring "a month earlier": the latest scoring date
# DROP_COMPARE_DAYS[0] to DROP_COMPARE_DAYS[1] days before (calendar months are 28 to 31 days
# apart). The score store shows the change since that same date (docs/domain.md#escalations).
DROP_COMPARE_DAYS: tuple[int, int] = (28, 31)


@dataclass(frozen=True)
class Escalation:
    """One escalation rule as data: the API, dashboard and playbook show these words.

    ``severity`` 1 is the most severe.
    """

    code: str
    rule: str
    action: str
    threshold: float
    severity: int


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubRule(_Strict):
    """One sub-rule: a feature, its maximum points and the step function awarding them."""

    name: str = Field(min_length=1)
    feature: str = Field(min_length=1)
    points: float = Field(gt=0)
    steps: list[tuple[float, float]] = Field(min_length=1)
    below: float = Field(0.0, ge=0)
    missing_share: float | None = Field(None, ge=0, le=1)
    relative_to_cadence: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _steps_fit_points(self) -> SubRule:
        thresholds = [t for t, _ in self.steps]
        if not all(math.isfinite(t) for t in thresholds):
            raise ValueError(f"sub-rule {self.name}: step thresholds must be finite numbers")
        if any(b <= a for a, b in itertools.pairwise(thresholds)):
            raise ValueError(f"sub-rule {self.name}: step thresholds must strictly increase")
        awarded = [p for _, p in self.steps] + [self.below]
        if any(p < 0 or p > self.points for p in awarded):
            raise ValueError(
                f"sub-rule {self.name}: step points must lie in 0..{self.points:g} (its points)"
            )
        if max(awarded) != self.points:
            raise ValueError(
                f"sub-rule {self.name}: no step awards its {self.points:g} points "
                f"(highest is {max(awarded):g})"
            )
        return self


class Component(_Strict):
    """A health component: its maximum, the sub-rules sharing it, and reserve sub-rules that
    award nothing today (the backtest measures them and may give them points)."""

    max_points: float
    rules: list[SubRule] = Field(min_length=1)
    reserve: list[SubRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules_add_up(self) -> Component:
        names = [r.name for r in self.pool()]
        if len(set(names)) != len(names):
            raise ValueError(f"sub-rule names repeat: {sorted(names)}")
        total = sum(r.points for r in self.rules)
        if not math.isclose(total, self.max_points):
            raise ValueError(
                f"sub-rule points add up to {total:g}, but max_points is {self.max_points:g}"
            )
        return self

    def pool(self) -> list[SubRule]:
        """The sub-rules, then the reserve."""
        return [*self.rules, *self.reserve]


class Components(_Strict):
    """The four health components: non-negative maxima that add up to 100
    (docs/domain.md#health-score; the shipped split is ``COMPONENT_MAXIMA``)."""

    engagement: Component
    relationship: Component
    financial: Component
    satisfaction: Component

    @model_validator(mode="after")
    def _maxima_add_up(self) -> Components:
        for name in COMPONENT_MAXIMA:
            got = getattr(self, name).max_points
            if not (math.isfinite(got) and got >= 0):
                raise ValueError(f"component {name}: max_points is {got:g}, it must be 0 or more")
        total = sum(self.maxima().values())
        if not math.isclose(total, HEALTH_SCORE_MAXIMUM):
            split = ", ".join(f"{k} {v:g}" for k, v in self.maxima().items())
            raise ValueError(
                f"component max_points add up to {total:g} ({split}), they must add up to "
                f"{HEALTH_SCORE_MAXIMUM:g}"
            )
        return self

    def maxima(self) -> dict[str, float]:
        """Each component's maximum points, in the components' order."""
        return {name: float(getattr(self, name).max_points) for name in COMPONENT_MAXIMA}

    def items(self) -> list[tuple[str, Component]]:
        return [(name, getattr(self, name)) for name in COMPONENT_MAXIMA]


class Cadence(_Strict):
    """Expected held interactions per 90 days by revenue segment (A/B/C)."""

    segment_feature: str = "revenue_segment"
    expected: dict[Segment, float]
    default_segment: Segment = "B"

    @model_validator(mode="after")
    def _every_segment(self) -> Cadence:
        missing = sorted(set(get_args(Segment)) - set(self.expected))
        if missing:
            raise ValueError(f"cadence.expected lacks segments {missing}")
        if any(v <= 0 for v in self.expected.values()):
            raise ValueError("cadence.expected values must be positive")
        return self


class Bands(_Strict):
    """Lower bounds of the bands; below ``at_risk`` is critical."""

    healthy: float = 60.0
    at_risk: float = 40.0

    @model_validator(mode="after")
    def _ordered(self) -> Bands:
        if not 0 < self.at_risk < self.healthy <= 100:
            raise ValueError("bands need 0 < at_risk < healthy <= 100")
        return self


class EscalationRule(_Strict):
    """Threshold, rule text (may use ``{threshold:g}``) and action of one escalation."""

    threshold: float
    rule: str = Field(min_length=1)
    action: str = Field(min_length=1)

    @model_validator(mode="after")
    def _template_renders(self) -> EscalationRule:
        try:
            self.rule.format(threshold=self.threshold)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"rule text does not render: {exc}") from exc
        return self


class InvoiceEscalationRule(EscalationRule):
    """The invoice rule: fires when an invoice became ``threshold``+ days late since the
    previous scoring (``lookback_days`` stands in for the time since then when it is unknown:
    the first scoring, an API request without it, a training snapshot); an invoice unpaid
    ``stale_days`` or more past due is a data-quality matter, never this escalation."""

    lookback_days: float = Field(30.0, gt=0)
    stale_days: float = Field(365.0, gt=0)

    @model_validator(mode="after")
    def _stale_after_threshold(self) -> InvoiceEscalationRule:
        if not self.stale_days > self.threshold:
            raise ValueError(
                f"stale_days ({self.stale_days:g}) must be above the threshold ({self.threshold:g})"
            )
        if not float(self.stale_days).is_integer():
            raise ValueError(f"stale_days must be whole days, got {self.stale_days:g}")
        return self


class EscalationRules(_Strict):
    esc_health_drop: EscalationRule
    esc_below_60: EscalationRule
    esc_below_40: EscalationRule
    esc_invoice_30d_late: InvoiceEscalationRule


class HealthConfig(_Strict):
    """The validated content of ``configs/health.yaml``."""

    version: int = Field(ge=1)
    missing_share: float = Field(0.5, ge=0, le=1)
    cadence: Cadence
    components: Components
    bands: Bands = Field(default_factory=Bands)
    escalations: EscalationRules

    def missing_share_of(self, rule: SubRule) -> float:
        """The share of its points ``rule`` gives an unknown value: its own ``missing_share``,
        else the config's."""
        return self.missing_share if rule.missing_share is None else rule.missing_share

    def features(self) -> list[str]:
        """Every snapshot column the health score reads (sub-rules, cadence, service score)."""
        names = [r.feature for _, c in self.components.items() for r in c.rules]
        names += [self.cadence.segment_feature, *SERVICE_FEATURES]
        return list(dict.fromkeys(names))

    def escalation_rules(self) -> tuple[Escalation, ...]:
        """The escalations with this config's thresholds and words, most severe first."""
        out = []
        for severity, code in enumerate(ESCALATION_CODES, start=1):
            rule: EscalationRule = getattr(self.escalations, code)
            out.append(
                Escalation(
                    code=code,
                    rule=rule.rule.format(threshold=rule.threshold),
                    action=rule.action,
                    threshold=rule.threshold,
                    severity=severity,
                )
            )
        return tuple(out)


def load_health_config(
    path: Path | None = None, known_features: Iterable[str] | None = None
) -> HealthConfig:
    """Load and validate the health rules (default ``configs/health.yaml``).

    With ``known_features`` every feature a rule reads must be one of them, so a misspelt
    name fails here instead of silently scoring every account neutral.
    """
    path = Path(path) if path is not None else DEFAULT_HEALTH_CONFIG
    cfg = load_yaml_model(
        path,
        HealthConfig,
        "health config",
        hint="see the comments at the top of configs/health.yaml for the expected layout",
    )
    if known_features is not None:
        known = set(known_features)
        for name, component in cfg.components.items():
            for kind in ("rules", "reserve"):
                for i, rule in enumerate(getattr(component, kind)):
                    if rule.feature not in known:
                        raise ConfigError(
                            f"{path}: components.{name}.{kind}.{i}.feature: unknown feature "
                            f"{rule.feature!r}",
                            hint="use a feature name from the feature catalogue",
                        )
    return cfg


@lru_cache(maxsize=1)
def _default_config() -> HealthConfig:
    return load_health_config()


def component_maxima(cfg: HealthConfig | None = None) -> dict[str, float]:
    """The component maxima of ``cfg`` (default: the shipped config), for display."""
    return (cfg or _default_config()).components.maxima()


# The shipped escalation rules (code, rule text, action text), most severe first: the words the
# API, dashboard and playbook show. Declared for type checkers; __getattr__ reads the shipped
# config on first use rather than at import time.
ESCALATIONS: tuple[Escalation, ...]


def __getattr__(name: str) -> Any:
    if name == "ESCALATIONS":
        return _default_config().escalation_rules()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------- scoring


def step_points(values: np.ndarray, rule: SubRule, neutral_share: float) -> np.ndarray:
    """The points ``rule`` awards to each value; an unknown (NaN, +-inf) value earns
    ``neutral_share`` of its points."""
    thresholds = np.fromiter((t for t, _ in rule.steps), float, len(rule.steps))
    points = np.fromiter((p for _, p in rule.steps), float, len(rule.steps))
    idx = np.searchsorted(thresholds, values, side="right") - 1
    got = np.where(idx >= 0, points[np.maximum(idx, 0)], rule.below)
    # NaN and +-inf are not measurements: they earn the neutral share.
    return np.where(np.isfinite(values), got, rule.points * neutral_share)


def _score_arrays(
    column: Callable[[str], np.ndarray], expected: np.ndarray, cfg: HealthConfig
) -> dict[str, np.ndarray]:
    """The scores from float feature arrays; ``column(name)`` is NaN where unknown."""
    out: dict[str, np.ndarray] = {}
    total = np.zeros(len(expected))
    for name, component in cfg.components.items():
        pts = np.zeros(len(expected))
        for rule in component.rules:
            values = column(rule.feature)
            if rule.relative_to_cadence:
                values = values / expected
            share = cfg.missing_share_of(rule)
            pts += step_points(values, rule, share)
        pts = np.round(pts, 1)
        out[f"health_{name}"] = pts
        total += pts
    score = np.round(total, 1)
    out["health_score"] = score
    bands = cfg.bands
    out["health_band"] = np.where(
        score >= bands.healthy, "healthy", np.where(score >= bands.at_risk, "at_risk", "critical")
    )

    # Service score (docs/domain.md#client-service-score): unknown inputs count 0.
    with np.errstate(invalid="ignore"):
        level = column("most_senior_client_level")
        parts = {
            "service_client_contacts": column("client_contacts_active") > 1,
            "service_firm_contacts": column("firm_contacts_active") > 1,
            "service_meetings": column("meetings_180d") >= 2,
            "service_seniority": np.where(level >= 2, 2, np.where(level >= 1, 1, 0)),
            "service_survey": column("last_survey_score") > 8,
        }
    service = np.zeros(len(expected), dtype=np.int64)
    for key in SERVICE_PARTS:
        part = np.asarray(parts[key]).astype(np.int64)
        out[key] = part
        service += part
    out["service_score"] = service
    return out


def float_column(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A frame's column as floats (NaN where unknown or not a number; all NaN if absent)."""
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    col = frame[name]
    values: np.ndarray
    try:
        values = col.to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):
        numeric = pd.to_numeric(col, errors="coerce")
        values = numeric.to_numpy(dtype=float, na_value=np.nan)
    return values


def expected_cadence(frame: pd.DataFrame, cadence: Cadence) -> np.ndarray:
    """Each row's expected held interactions per 90 days, by its revenue segment."""
    expected = np.full(len(frame), cadence.expected[cadence.default_segment])
    if cadence.segment_feature in frame.columns:
        # Object array: NA becomes None, which equals no segment and keeps the default.
        segment = frame[cadence.segment_feature].to_numpy(dtype=object, na_value=None)
        for seg, value in cadence.expected.items():
            expected[segment == seg] = value
    return expected


def score_health(frame: pd.DataFrame, cfg: HealthConfig) -> pd.DataFrame:
    """Health components, score and band, and the client service score with its parts.

    Reads the snapshot columns named in the config (any may be NaN; an absent column counts
    as NaN) and returns a frame with the same index and the columns ``HEALTH_COLUMNS``.
    ``health_score`` is the sum of the four components (each rounded to 0.1).
    """
    cache: dict[str, np.ndarray] = {}

    def column(name: str) -> np.ndarray:
        if name not in cache:
            cache[name] = float_column(frame, name)
        return cache[name]

    arrays = _score_arrays(column, expected_cadence(frame, cfg.cadence), cfg)
    arrays["health_band"] = pd.array(arrays["health_band"], dtype="string")
    return pd.DataFrame({k: arrays[k] for k in HEALTH_COLUMNS}, index=frame.index)


def _to_float(value: object) -> float:
    if value is None or value is pd.NA:
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _round(value: float, scale: float) -> float:
    """``np.round(value, decimals)`` for one float (``scale`` = 10**decimals): numpy scales,
    rounds half to even (``rint``, keeping the sign of zero) and scales back; so does this."""
    scaled = value * scale
    if not math.isfinite(scaled):  # NaN and infinity stay as they are, as in numpy
        return scaled / scale
    return math.copysign(float(round(scaled)), value) / scale


@dataclass(frozen=True)
class _RulePlan:
    feature: str
    relative_to_cadence: bool
    thresholds: tuple[float, ...]
    points: tuple[float, ...]
    below: float
    neutral: float

    def award(self, value: float, expected: float) -> float:
        """The points for one value (NaN when unknown); ``expected`` is the account's cadence."""
        if self.relative_to_cadence:
            value = value / expected
        if math.isfinite(value):
            idx = bisect.bisect_right(self.thresholds, value) - 1
            return self.points[idx] if idx >= 0 else self.below
        return self.neutral  # NaN and +-inf are not measurements: they earn the neutral share


@dataclass(frozen=True)
class _Plan:
    """A config's rules as plain tuples, for scoring a few records without numpy."""

    components: tuple[tuple[str, tuple[_RulePlan, ...]], ...]
    segment_feature: str
    expected: Mapping[object, float]
    default_expected: float
    healthy: float
    at_risk: float


# Config -> plan; keyed by id() with the config kept alive alongside (configs are few).
_PLANS: dict[int, tuple[HealthConfig, _Plan]] = {}


def _plan(cfg: HealthConfig) -> _Plan:
    cached = _PLANS.get(id(cfg))
    if cached is not None and cached[0] is cfg:
        return cached[1]
    components = []
    for name, component in cfg.components.items():
        rules = []
        for rule in component.rules:
            share = cfg.missing_share_of(rule)
            rules.append(
                _RulePlan(
                    feature=rule.feature,
                    relative_to_cadence=rule.relative_to_cadence,
                    thresholds=tuple(float(t) for t, _ in rule.steps),
                    points=tuple(float(p) for _, p in rule.steps),
                    below=float(rule.below),
                    neutral=float(rule.points * share),
                )
            )
        components.append((f"health_{name}", tuple(rules)))
    cadence = cfg.cadence
    plan = _Plan(
        components=tuple(components),
        segment_feature=cadence.segment_feature,
        expected={segment: pts for segment, pts in cadence.expected.items()},
        default_expected=cadence.expected[cadence.default_segment],
        healthy=cfg.bands.healthy,
        at_risk=cfg.bands.at_risk,
    )
    if len(_PLANS) >= 16:
        _PLANS.clear()
    _PLANS[id(cfg)] = (cfg, plan)
    return plan


def _score_record(record: Mapping[str, object], plan: _Plan) -> dict[str, object]:
    """:func:`_score_arrays` for one record in plain floats: the same operations in the same
    order (IEEE float64 either way), so the same values to the last bit."""
    expected = plan.expected.get(record.get(plan.segment_feature), plan.default_expected)
    out: dict[str, object] = {}
    total = 0.0
    for key, rules in plan.components:
        pts = 0.0
        for rule in rules:
            pts += rule.award(_to_float(record.get(rule.feature)), expected)
        pts = _round(pts, 10.0)
        out[key] = pts
        total += pts
    score = _round(total, 10.0)
    out["health_score"] = score
    out["health_band"] = (
        "healthy" if score >= plan.healthy else "at_risk" if score >= plan.at_risk else "critical"
    )
    # Service score: unknown inputs count 0 (NaN compares False).
    level = _to_float(record.get("most_senior_client_level"))
    parts = (
        int(_to_float(record.get("client_contacts_active")) > 1),
        int(_to_float(record.get("firm_contacts_active")) > 1),
        int(_to_float(record.get("meetings_180d")) >= 2),
        2 if level >= 2 else 1 if level >= 1 else 0,
        int(_to_float(record.get("last_survey_score")) > 8),
    )
    out["service_score"] = sum(parts)
    out.update(zip(SERVICE_PARTS, parts, strict=True))
    return {k: out[k] for k in HEALTH_COLUMNS}


# Below this many records scoring each in plain Python beats numpy's per-call overhead.
_VECTOR_RECORDS_FROM = 16


def score_health_records(
    records: list[Mapping[str, object]], cfg: HealthConfig
) -> list[dict[str, object]]:
    """Same as :func:`score_health` for a list of feature dicts, without building a frame.

    Returns one plain dict per record (floats, ints and the band string).
    """
    n = len(records)
    if n < _VECTOR_RECORDS_FROM:
        plan = _plan(cfg)
        return [_score_record(r, plan) for r in records]

    def column(name: str) -> np.ndarray:
        return np.fromiter((_to_float(r.get(name)) for r in records), float, n)

    seg_col = cfg.cadence.segment_feature
    default = cfg.cadence.expected[cfg.cadence.default_segment]
    # A record's segment may be any value; one not in the config falls back to the default.
    by_segment = cast("Mapping[object, float]", cfg.cadence.expected)
    expected = np.fromiter(
        (by_segment.get(r.get(seg_col), default) for r in records), np.float64, n
    )
    arrays = _score_arrays(column, expected, cfg)
    columns = {k: arrays[k].tolist() for k in HEALTH_COLUMNS}
    return [{k: columns[k][i] for k in HEALTH_COLUMNS} for i in range(n)]


def sub_rule_points(
    record: Mapping[str, object], cfg: HealthConfig
) -> dict[str, list[tuple[SubRule, float, float]]]:
    """Each component's sub-rules with, for one record, the feature's value (NaN when
    unknown) and the points the sub-rule awards it: the parts :func:`score_health` adds up
    (before a component is rounded), to say which rules cost a score its points."""
    plan = _plan(cfg)
    expected = plan.expected.get(record.get(plan.segment_feature), plan.default_expected)
    out: dict[str, list[tuple[SubRule, float, float]]] = {}
    for (name, component), (_, rules) in zip(cfg.components.items(), plan.components, strict=True):
        parts = []
        for spec, rule in zip(component.rules, rules, strict=True):
            value = _to_float(record.get(rule.feature))
            parts.append((spec, value, rule.award(value, expected)))
        out[name] = parts
    return out


# ------------------------------------------------------------------------------- escalations


def _invoice_fires(days: np.ndarray, window: np.ndarray, rule: InvoiceEscalationRule) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return cast(
            np.ndarray,
            (days >= rule.threshold) & (days < rule.threshold + window) & (days < rule.stale_days),
        )


def _escalation_arrays(
    now: np.ndarray,
    ago: np.ndarray,
    invoice_days: np.ndarray,
    window: np.ndarray,
    cfg: HealthConfig,
) -> dict[str, np.ndarray]:
    rules = cfg.escalations
    # Scores carry one decimal; rounding away float noise keeps 75.1 -> 60.1 a 15-point drop.
    drop = np.round(ago - now, 6)
    with np.errstate(invalid="ignore"):
        return {
            "health_drop_30d": drop,
            "esc_health_drop": drop >= rules.esc_health_drop.threshold,
            "esc_below_60": now < rules.esc_below_60.threshold,
            "esc_below_40": now < rules.esc_below_40.threshold,
            "esc_invoice_30d_late": _invoice_fires(
                invoice_days, window, rules.esc_invoice_30d_late
            ),
        }


def _escalation_flags(
    now: float, ago: float, invoice_days: float, window: float, cfg: HealthConfig
) -> dict[str, bool]:
    """:func:`_escalation_arrays`' flags for one row, in plain floats (NaN never fires)."""
    rules = cfg.escalations
    invoice = rules.esc_invoice_30d_late
    drop = _round(ago - now, 1e6)
    return {
        "esc_health_drop": drop >= rules.esc_health_drop.threshold,
        "esc_below_60": now < rules.esc_below_60.threshold,
        "esc_below_40": now < rules.esc_below_40.threshold,
        "esc_invoice_30d_late": invoice.threshold <= invoice_days < invoice.threshold + window
        and invoice_days < invoice.stale_days,
    }


def _as_float_array(values: pd.Series | np.ndarray | float) -> np.ndarray:
    if isinstance(values, pd.Series):
        numeric: np.ndarray = pd.to_numeric(values, errors="coerce").to_numpy(
            dtype=float, na_value=np.nan
        )
        return numeric
    return np.atleast_1d(np.asarray(values, dtype=float))


def invoice_days(
    late_invoice_days_late: np.ndarray | pd.Series | None, overdue_days: np.ndarray | pd.Series
) -> np.ndarray:
    """The days late the invoice rule reads: ``late_invoice_days_late`` where known, else
    ``overdue_days`` (the oldest unpaid invoice: the fallback for a record without invoice
    evidence). Where the evidence was computed and is unknown, no invoice qualified, and the
    oldest unpaid invoice then lies outside the rule's window too, so the fallback agrees."""
    overdue = _as_float_array(overdue_days)
    if late_invoice_days_late is None:
        return overdue
    late = _as_float_array(late_invoice_days_late)
    return np.where(np.isnan(late), overdue, late)


def escalations(
    health_score: pd.Series,
    health_score_30d_ago: pd.Series,
    overdue_days: pd.Series,
    cfg: HealthConfig,
    *,
    late_invoice_days_late: pd.Series | None = None,
    days_since_last_scoring: pd.Series | np.ndarray | float | None = None,
) -> pd.DataFrame:
    """Escalation flags (docs/domain.md#escalations) per row, and the drop (``ago - now``).

    The series are aligned by position and must have the same length; the result has
    ``health_score``'s index. A NaN input never fires a rule (no earlier score: no drop).
    The invoice rule fires when the invoice days (:func:`invoice_days`) lie in
    ``[threshold, threshold + window)`` and below ``stale_days``; the window is
    ``days_since_last_scoring`` (per row or one number; NaN or None: ``lookback_days``).
    """
    now = _as_float_array(health_score)
    ago = _as_float_array(health_score_30d_ago)
    days = invoice_days(late_invoice_days_late, overdue_days)
    lookback = cfg.escalations.esc_invoice_30d_late.lookback_days
    if days_since_last_scoring is None:
        window = np.full(len(now), lookback)
    else:
        window = np.broadcast_to(_as_float_array(days_since_last_scoring), now.shape)
        window = np.where(np.isnan(window), lookback, window)
    if not len(now) == len(ago) == len(days):
        raise ValueError(
            "escalations: health_score, health_score_30d_ago and overdue_days differ in length "
            f"({len(now)}, {len(ago)}, {len(days)})"
        )
    arrays = _escalation_arrays(now, ago, days, window, cfg)
    return pd.DataFrame(arrays, index=health_score.index)[list(ESCALATION_COLUMNS)]


def _truthy(value: object) -> bool:
    if value is None or value is pd.NA:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(value)


def fired_escalations(row: Mapping[str, object], cfg: HealthConfig | None = None) -> list[str]:
    """Codes of the escalations fired for one record, most severe first.

    Uses the record's ``esc_*`` flags where present; a missing flag is evaluated from the
    record's ``health_score``, ``health_score_30d_ago`` (or ``health_drop_30d``),
    ``late_invoice_days_late`` (else ``overdue_days``) and ``days_since_last_scoring`` (else
    the invoice rule's ``lookback_days``) with ``cfg`` (default: the shipped config).
    """
    fired: list[str] = []
    computed: dict[str, bool] | None = None
    for code in ESCALATION_CODES:
        if code in row:
            hit = _truthy(row[code])
        else:
            if computed is None:
                now = _to_float(row.get("health_score"))
                ago = _to_float(row.get("health_score_30d_ago"))
                drop = _to_float(row.get("health_drop_30d"))
                if math.isnan(ago) and not math.isnan(drop):
                    ago = now + drop
                cfg = cfg or _default_config()
                days = _to_float(row.get("late_invoice_days_late"))
                if math.isnan(days):
                    days = _to_float(row.get("overdue_days"))
                window = _to_float(row.get("days_since_last_scoring"))
                if math.isnan(window):
                    window = cfg.escalations.esc_invoice_30d_late.lookback_days
                computed = _escalation_flags(now, ago, days, window, cfg)
            hit = computed[code]
        if hit:
            fired.append(code)
    return fired
