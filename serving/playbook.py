"""The retention playbook: from an account's risk drivers and escalations to next steps.

The mapping lives in the versioned ``configs/playbook.yaml``, validated on load into
:class:`Playbook`. :func:`recommend` turns one account's escalation codes and model drivers
(feature, signed impact) into a short, de-duplicated, deterministic list of :class:`Action`;
:meth:`Playbook.situation_action` gives the action of a client's situation (``lapsed``: the
win-back of the lapsed clients list, ``features.lapsed``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeGuard, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from churn.config_files import load_yaml_model
from churn.errors import ConfigError
from churn.settings import PROJECT_ROOT
from features.health import ESCALATION_CODES

DEFAULT_PLAYBOOK = PROJECT_ROOT / "configs" / "playbook.yaml"

Owner = Literal["account manager", "partner", "delivery lead"]
Priority = Literal["critical", "high", "medium", "low"]
Stage = Literal["new", "established", "long_term"]
Source = Literal["escalation", "driver", "situation"]
Situation = Literal["lapsed"]
#: The situations an action can be for; each has exactly one action (checked on load).
SITUATIONS: tuple[str, ...] = get_args(Situation)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    """A variant's own condition on one snapshot feature: ``at_least <= value < below``
    (either bound may be left out). An unknown value never meets it."""

    feature: str = Field(min_length=1)
    at_least: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Condition:
        if self.at_least is None and self.below is None:
            raise ValueError(f"condition on {self.feature}: give at_least, below or both")
        if self.at_least is not None and self.below is not None and self.at_least >= self.below:
            raise ValueError(
                f"condition on {self.feature}: at_least ({self.at_least:g}) must be below "
                f"below ({self.below:g})"
            )
        return self

    def holds(self, value: object) -> bool:
        """Whether one value meets the condition (None, NaN or a non-number never does)."""
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        if math.isnan(number):
            return False
        if self.at_least is not None and number < self.at_least:
            return False
        return self.below is None or number < self.below


class Variant(_Strict):
    """Wording of an action for one lifecycle stage; unset fields keep the general wording.
    With ``when`` the variant applies only to accounts meeting that condition too."""

    title: str | None = None
    steps: str | None = None
    due: str | None = None
    when: Condition | None = None


class ActionSpec(_Strict):
    """One playbook entry: what to do, who, by when, and what triggers it."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str = Field(min_length=1)
    steps: str = Field(min_length=1)
    owner: Owner
    due: str = Field(min_length=1)
    priority: Priority
    drivers: list[str] = Field(default_factory=list)
    escalations: list[str] = Field(default_factory=list)
    situations: list[Situation] = Field(default_factory=list)
    variants: dict[Stage, Variant] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_trigger(self) -> ActionSpec:
        if not self.drivers and not self.escalations and not self.situations:
            raise ValueError(f"action {self.id} has no drivers, escalations or situations")
        unknown = sorted(set(self.escalations) - set(ESCALATION_CODES))
        if unknown:
            raise ValueError(
                f"action {self.id}: unknown escalation codes {unknown}; "
                f"known: {list(ESCALATION_CODES)}"
            )
        return self


class Action(_Strict):
    """A recommended next step for one account; ``because`` names what triggered it."""

    id: str
    title: str
    steps: str
    owner: Owner
    due: str
    priority: Priority
    because: str = Field(
        description="the driver feature, escalation code or situation behind the action"
    )
    source: Source


class Playbook(_Strict):
    """The validated content of ``configs/playbook.yaml``."""

    version: int = Field(ge=1)
    actions: list[ActionSpec] = Field(min_length=1)

    _by_driver: dict[str, ActionSpec] = PrivateAttr(default_factory=dict)
    _by_escalation: dict[str, ActionSpec] = PrivateAttr(default_factory=dict)
    _by_situation: dict[str, ActionSpec] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _unambiguous(self) -> Playbook:
        ids = [a.id for a in self.actions]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"action ids repeat: {repeated}")
        by_driver: dict[str, ActionSpec] = {}
        by_escalation: dict[str, ActionSpec] = {}
        by_situation: dict[str, ActionSpec] = {}
        for action in self.actions:
            for situation in action.situations:
                if situation in by_situation:
                    raise ValueError(
                        f"situation {situation} triggers both {by_situation[situation].id} "
                        f"and {action.id}"
                    )
                by_situation[situation] = action
            for feature in action.drivers:
                if feature in by_driver:
                    raise ValueError(
                        f"driver {feature} triggers both {by_driver[feature].id} and {action.id}"
                    )
                by_driver[feature] = action
            for code in action.escalations:
                if code in by_escalation:
                    raise ValueError(
                        f"escalation {code} triggers both {by_escalation[code].id} and {action.id}"
                    )
                by_escalation[code] = action
        uncovered = [c for c in ESCALATION_CODES if c not in by_escalation]
        if uncovered:
            raise ValueError(f"escalations without an action: {uncovered}")
        alone = [s for s in SITUATIONS if s not in by_situation]
        if alone:
            raise ValueError(f"situations without an action: {alone}")
        self._by_driver = by_driver
        self._by_escalation = by_escalation
        self._by_situation = by_situation
        return self

    def situation_action(self, situation: str, lifecycle_stage: str | None = None) -> Action:
        """The action of a client's situation (``because`` = the situation), in the wording of
        its lifecycle stage where the action has one (a variant with a ``when`` condition on a
        feature keeps the general wording: no features are at hand here)."""
        if situation not in self._by_situation:
            raise KeyError(f"unknown situation {situation!r}; known: {list(SITUATIONS)}")
        return _render(self._by_situation[situation], situation, "situation", lifecycle_stage, None)

    def driver_features(self) -> list[str]:
        """Every feature that triggers an action."""
        return list(self._by_driver)

    def condition_features(self) -> list[str]:
        """Every feature a variant's condition reads, in order."""
        names = [
            v.when.feature for a in self.actions for v in a.variants.values() if v.when is not None
        ]
        return list(dict.fromkeys(names))

    def conditions_met(self, features: Mapping[str, object] | None) -> tuple[bool, ...]:
        """Whether each variant condition (in playbook order) holds for one account."""
        values = features or {}
        return tuple(
            v.when.holds(values.get(v.when.feature))
            for a in self.actions
            for v in a.variants.values()
            if v.when is not None
        )


def load_playbook(
    path: Path | None = None, known_features: Iterable[str] | None = None
) -> Playbook:
    """Load and validate the playbook (default ``configs/playbook.yaml``).

    With ``known_features`` every driver must be one of them (a misspelt feature would
    otherwise never trigger its action).
    """
    path = Path(path) if path is not None else DEFAULT_PLAYBOOK
    playbook = load_yaml_model(
        path,
        Playbook,
        "playbook config",
        hint="see the comments at the top of configs/playbook.yaml for the expected layout",
    )
    if known_features is not None:
        known = set(known_features)
        for i, action in enumerate(playbook.actions):
            unknown = [f for f in action.drivers if f not in known]
            if unknown:
                raise ConfigError(
                    f"{path}: actions.{i} ({action.id}).drivers: unknown features {unknown}",
                    hint="use feature names from the feature catalogue",
                )
            for stage, variant in action.variants.items():
                if variant.when is not None and variant.when.feature not in known:
                    raise ConfigError(
                        f"{path}: actions.{i} ({action.id}).variants.{stage}.when.feature: "
                        f"unknown feature {variant.when.feature!r}",
                        hint="use a feature name from the feature catalogue",
                    )
    return playbook


def _is_stage(value: str | None) -> TypeGuard[Stage]:
    return value in get_args(Stage)


def _render(
    spec: ActionSpec,
    because: str,
    source: Source,
    stage: str | None,
    features: Mapping[str, object] | None,
) -> Action:
    variant = spec.variants.get(stage) if _is_stage(stage) else None
    when = None if variant is None else variant.when
    if when is not None and not when.holds((features or {}).get(when.feature)):
        variant = None
    return Action(
        id=spec.id,
        title=(variant and variant.title) or spec.title,
        steps=(variant and variant.steps) or spec.steps,
        owner=spec.owner,
        due=(variant and variant.due) or spec.due,
        priority=spec.priority,
        because=because,
        source=source,
    )


def recommend(
    playbook: Playbook,
    drivers: Sequence[tuple[str, float]],
    escalations: Sequence[str],
    max_actions: int = 5,
    lifecycle_stage: str | None = None,
    features: Mapping[str, object] | None = None,
) -> list[Action]:
    """Next steps for one account, at most ``max_actions``, each action once.

    Escalation actions come first, most severe first (``ESCALATION_CODES`` order); then the
    actions of drivers with a positive impact (pushing risk up), largest impact first (ties
    keep the given order). An action triggered twice keeps its first trigger as ``because``.
    ``lifecycle_stage`` (new / established / long_term) picks stage-specific wording, for a
    variant with a condition (``when``) only where the account's ``features`` meet it.
    Unknown codes and features trigger nothing.
    """
    if max_actions <= 0:
        return []
    out: list[Action] = []
    seen: set[str] = set()

    def add(spec: ActionSpec | None, because: str, source: Source) -> None:
        if spec is None or spec.id in seen:
            return
        seen.add(spec.id)
        out.append(_render(spec, because, source, lifecycle_stage, features))

    fired = set(escalations)
    for code in ESCALATION_CODES:
        if code in fired:
            add(playbook._by_escalation.get(code), code, "escalation")

    rising = [(f, float(v)) for f, v in drivers if math.isfinite(float(v)) and float(v) > 0]
    for feature, _ in sorted(rising, key=lambda d: -d[1]):
        add(playbook._by_driver.get(feature), feature, "driver")
    return out[:max_actions]
