"""Score a request's accounts: rule-based scores always, model probability and reasons when a
model is loaded, escalations and playbook actions on top.

The per-request path avoids pandas: the accounts become one float matrix in the model's
feature order, scored and explained in one LightGBM call; the health rules run on the plain
feature dicts (``features.health.score_health_records``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from churn.bundle import DEFAULT_OPERATING_POINTS, OperatingPoints
from churn.model_terms import REVENUE_BASIS, annual_revenue, risk_bands
from features.catalog import FEATURES, MODEL_FEATURES, data_completeness
from features.health import (
    ESCALATION_CODES,
    Escalation,
    HealthConfig,
    escalations,
    fired_escalations,
    load_health_config,
    score_health_records,
)
from serving.explain import listed, reasons_for_row, top_factors
from serving.model_holder import LoadedModel
from serving.playbook import Playbook, load_playbook, recommend
from serving.priority import fired_matrix, priorities
from serving.schemas import PREDICTION_KEYS, EscalationEvidence
from serving.score_record import api_values

MAX_ACTIONS = 5
# Below this many accounts the per-row escalation check beats building three pandas Series.
_VECTOR_ESCALATIONS_FROM = 32
_ACTION_CACHE_SIZE = 4096
_EVIDENCE_KEYS: tuple[str, ...] = tuple(EscalationEvidence.model_fields)


# Escalation codes, the drivers that push risk up (in order), lifecycle stage, the variant
# conditions met.
_ActionKey = tuple[tuple[str, ...], tuple[str, ...], str | None, tuple[bool, ...]]


@dataclass(frozen=True)
class Rules:
    """The validated health rules and playbook the service scores with."""

    health: HealthConfig
    escalations: Mapping[str, Escalation]
    playbook: Playbook
    _actions: dict[_ActionKey, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    def actions(
        self,
        codes: Sequence[str],
        drivers: Sequence[tuple[str, float]],
        stage: str | None,
        features: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The playbook's actions as dicts (without ``because_text``), memoised.

        The answer depends only on the escalation codes, the order of the drivers that push
        risk up, the stage and which variant conditions the ``features`` meet, and few such
        combinations occur, so a batch of a thousand accounts renders a handful of distinct
        action lists.
        """
        rising = tuple(f for f, v in sorted(drivers, key=lambda d: -d[1]) if v > 0)
        met = self.playbook.conditions_met(features)
        key = (tuple(codes), rising, stage, met)
        cached = self._actions.get(key)
        if cached is None:
            ranked = [(f, float(len(rising) - i)) for i, f in enumerate(rising)]
            actions = recommend(
                self.playbook,
                ranked,
                codes,
                max_actions=MAX_ACTIONS,
                lifecycle_stage=stage,
                features=features,
            )
            cached = [a.model_dump() for a in actions]
            if len(self._actions) >= _ACTION_CACHE_SIZE:
                self._actions.clear()
            self._actions[key] = cached
        return cached


def load_rules(health_config: Any = None, playbook_config: Any = None) -> Rules:
    """Load ``configs/health.yaml`` and ``configs/playbook.yaml`` (or the given paths)."""
    health = load_health_config(health_config, known_features=FEATURES)
    playbook = load_playbook(playbook_config, known_features=FEATURES)
    return Rules(health, {e.code: e for e in health.escalation_rules()}, playbook)


@dataclass(frozen=True)
class AccountInput:
    """What scoring needs of one account (the API's validated ``AccountIn``)."""

    account_id: str
    features: Mapping[str, float | str | None]
    health_score_30d_ago: float | None = None
    revenue: float | None = None
    # the invoice escalation's evidence: {"invoice_id", "amount", "days_late"} of the unpaid
    # invoice that most recently became 30+ days late; None: overdue_days stands in
    late_invoice: Mapping[str, Any] | None = None
    days_since_last_scoring: float | None = None


def _revenues(accounts: Sequence[AccountInput]) -> list[float | None]:
    """Each account's annual revenue: the request's ``revenue``, else from its features."""
    columns = {name: [a.features.get(name) for a in accounts] for name in REVENUE_BASIS}
    basis = annual_revenue(columns, len(accounts)).tolist()
    return [
        a.revenue if a.revenue is not None else None if math.isnan(b) else b
        for a, b in zip(accounts, basis, strict=True)
    ]


def _matrix(accounts: Sequence[AccountInput], model: LoadedModel) -> np.ndarray:
    explainer = model.explainer
    x = explainer.empty_rows(len(accounts))
    index = explainer.index
    for i, account in enumerate(accounts):
        for name, value in account.features.items():
            j = index.get(name)
            if j is not None and value is not None:
                x[i, j] = value
    return x


def _flags(
    accounts: Sequence[AccountInput],
    probability: Sequence[float | None],
    health: Sequence[Mapping[str, Any]],
    reasons: Sequence[Sequence[Mapping[str, Any]]],
    points: OperatingPoints,
    rules: Rules,
) -> list[list[dict[str, Any]]]:
    """Each account's flags (``serving.flags``) with the reasons of both sides."""
    from serving.flags import FLAG_READS, MODEL_REASONS, FlagContext, flag_rows, rule_reasons

    columns: dict[str, Any] = {
        name: [a.features.get(name) for a in accounts] for name in FLAG_READS
    }
    columns.update(
        {name: [h[name] for h in health] for name in FLAG_READS if name in health[0]}
        if health
        else {}
    )
    columns["churn_probability"] = list(probability)
    stale_days = rules.health.escalations.esc_invoice_30d_late.stale_days
    ctx = FlagContext(columns, points, len(accounts), stale_days)
    return flag_rows(
        ctx,
        lambda i: [
            r["sentence"] for r in reasons[i] if r["impact_pts"] > 0 and r["value"] is not None
        ][:MODEL_REASONS],
        lambda i: rule_reasons(accounts[i].features, health[i], rules.health),
    )


def score_accounts(
    accounts: Sequence[AccountInput],
    model: LoadedModel | None,
    rules: Rules,
    top_reasons: int = 5,
) -> list[dict[str, Any]]:
    """One prediction dict per account, shaped like ``serving.schemas.Prediction``.

    Without ``model``: churn_probability, base_rate, revenue_at_risk and the impacts are
    None, reasons are empty, the risk band follows the health band and the actions come from
    the escalations alone.
    """
    health = score_health_records([a.features for a in accounts], rules.health)
    probability: list[float | None] = [None] * len(accounts)
    reasons: list[list[dict[str, Any]]] = [[] for _ in accounts]
    other: list[float | None] = [None] * len(accounts)
    base_rate = None
    version = None
    names: Sequence[str] = MODEL_FEATURES
    known: np.ndarray | None = None
    if model is not None:
        explainer = model.explainer
        names = explainer.feature_names
        explanation = explainer.explain(_matrix(accounts, model))
        columns = top_factors(explanation, top_reasons)
        # Everything not listed (unknown values included): the total minus the listed ones,
        # so the sums stay exact. (Fancy indexing is what np.take_along_axis does, without
        # its checks and set-up.)
        rows = np.arange(len(accounts))[:, None]
        shown = np.where(listed(explanation, columns), explanation.impacts[rows, columns], 0.0)
        rest = (explanation.impacts.sum(axis=1) - shown.sum(axis=1)) * 100.0
        probability = explanation.probability.tolist()
        other = rest.tolist()
        reasons = [
            reasons_for_row(explanation, i, columns[i], explainer.features, explainer.typical)
            for i in range(len(accounts))
        ]
        base_rate = explanation.base_rate
        known = ~np.isnan(explanation.values)  # the matrix the model saw: NaN where unknown
        version = model.version
    completeness, missing_sources = (
        _completeness(accounts, names) if known is None else data_completeness(known, names)
    )

    fired = _fired_escalations(accounts, health, rules.health)
    health_bands = [h["health_band"] for h in health]
    bands = risk_bands(probability, health_bands).tolist()
    points = model.bundle.operating_points if model is not None else DEFAULT_OPERATING_POINTS
    priority = priorities(probability, health_bands, fired_matrix(fired), points).tolist()
    revenues = _revenues(accounts)
    flags = _flags(accounts, probability, health, reasons, points, rules)
    out = []
    for i, account in enumerate(accounts):
        h = health[i]
        features = account.features
        codes = fired[i]
        ago = account.health_score_30d_ago
        escalation_list = [
            {
                "code": c,
                "rule": rules.escalations[c].rule,
                "action": rules.escalations[c].action,
                "severity": rules.escalations[c].severity,
                "evidence": _evidence(c, account, ago, cast(float, h["health_score"])),
            }
            for c in codes
        ]
        sentences = {r["feature"]: r["sentence"] for r in reasons[i]}
        stage = features.get("lifecycle_stage")
        actions = rules.actions(
            codes,
            [(r["feature"], r["impact_pts"]) for r in reasons[i]],
            stage if isinstance(stage, str) else None,
            features,
        )
        p = probability[i]
        revenue = revenues[i]
        scores = {
            **h,
            "churn_probability": p,
            "risk_band": bands[i],
            "priority": priority[i],
            "base_rate": base_rate,
            "health_drop_30d": None
            if ago is None
            else round(ago - cast(float, h["health_score"]), 6),
            "revenue_at_risk": None if p is None or revenue is None else p * revenue,
            "model_version": version,
            "data_completeness": float(completeness[i]),
            "missing_sources": missing_sources[i],
        }
        prediction = {
            "account_id": account.account_id,
            **api_values(scores, "prediction"),
            "escalations": escalation_list,
            "reasons": reasons[i],
            "other_impact_pts": other[i],
            "actions": [
                {**a, "because_text": _because_text(a["because"], sentences, rules)}
                for a in actions
            ],
            "flags": flags[i],
        }
        out.append({key: prediction[key] for key in PREDICTION_KEYS})
    return out


def _completeness(
    accounts: Sequence[AccountInput], names: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """Each account's share of known ``names`` (the model's features) and missing sources."""
    known = np.array(
        [[a.features.get(n) is not None for n in names] for a in accounts], dtype=bool
    ).reshape(len(accounts), len(names))
    return data_completeness(known, names)


def _evidence(
    code: str, account: AccountInput, ago: float | None, now: float
) -> dict[str, Any] | None:
    """The evidence of one fired escalation (``serving.schemas.EscalationEvidence``, every
    key present)."""
    found: dict[str, Any]
    if code == "esc_invoice_30d_late":
        late = account.late_invoice
        if late is not None:
            found = {k: late.get(k) for k in ("invoice_id", "amount", "days_late")}
            found["days_late"] = _float_or_none(found["days_late"])
        else:
            found = {"days_late": _float_or_none(account.features.get("overdue_days"))}
    elif code == "esc_health_drop" and ago is not None:
        found = {"previous_score": ago, "score_drop": round(ago - now, 6)}
    else:
        return None
    return {key: found.get(key) for key in _EVIDENCE_KEYS}


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _because_text(because: str, sentences: Mapping[str, str], rules: Rules) -> str:
    if because in sentences:
        return sentences[because]
    if because in rules.escalations:
        return rules.escalations[because].rule
    return because


def _fired_escalations(
    accounts: Sequence[AccountInput], health: Sequence[Mapping[str, Any]], cfg: HealthConfig
) -> list[list[str]]:
    """Codes of the escalations fired per account, most severe first."""
    ago = [a.health_score_30d_ago for a in accounts]
    overdue = [a.features.get("overdue_days") for a in accounts]
    late = [None if a.late_invoice is None else a.late_invoice.get("days_late") for a in accounts]
    since = [a.days_since_last_scoring for a in accounts]
    if len(accounts) < _VECTOR_ESCALATIONS_FROM:
        return [
            fired_escalations(
                {
                    "health_score": h["health_score"],
                    "health_score_30d_ago": a,
                    "overdue_days": o,
                    "late_invoice_days_late": d,
                    "days_since_last_scoring": w,
                },
                cfg,
            )
            for h, a, o, d, w in zip(health, ago, overdue, late, since, strict=True)
        ]
    import pandas as pd  # only for large batches, where its fixed cost is amortised

    def series(values: list[Any]) -> pd.Series:
        return pd.Series(np.array([np.nan if v is None else v for v in values], dtype=float))

    flags = escalations(
        series([h["health_score"] for h in health]),
        series(ago),
        series(overdue),
        cfg,
        late_invoice_days_late=series(late),
        days_since_last_scoring=series(since),
    )[list(ESCALATION_CODES)].to_numpy(dtype=bool)
    return [[c for c, hit in zip(ESCALATION_CODES, row, strict=True) if hit] for row in flags]
