"""Flags: what a scored account's numbers disagree about, said out loud (docs/metrics.md#flags).

Each flag is one :class:`FlagRule` in :data:`FLAG_RULES`, the one place to add another: its
``code``, the columns it reads, when it fires (a boolean per row, vectorised) and the sentence
it shows. A flag that fires carries the reasons of both sides: ``model_reasons``, the
sentences of the model's top reasons that raise the risk (on a known value), and
``rule_reasons``, the health components that lose the most points with the sub-rules that
cost them, as sentences ("Relationship depth 7 of 25 points: Single-threaded: only one
client contact (0 of 2)").

The API (``serving.scoring``) and the batch (``serving.batch``) build a :class:`FlagContext`
over their rows and call :func:`flag_rows`; the batch stores them in the ``flags`` table with
the reason lists as JSON arrays (:func:`flags_frame`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churn.bundle import OperatingPoints
from features.catalog import FEATURES
from features.health import HealthConfig, sub_rule_points
from serving.priority import BAND_LABELS, floats, one_of
from serving.score_record import label

#: How many sentences each side contributes to a flag.
MODEL_REASONS = 3
RULE_COMPONENTS = 2
RULE_SUB_RULES = 3

#: The columns of the store's ``flags`` table, in the batch's frames.
FLAG_COLUMNS: tuple[str, ...] = ("account_id", "code", "text", "model_reasons", "rule_reasons")


class FlagContext:
    """The rows flags are computed over: named columns (arrays, lists or pandas Series of
    equal length; a DataFrame works as well), the model's operating points and the health
    rules' age at which an unpaid invoice is stale (``stale_days``)."""

    def __init__(
        self, columns: Any, points: OperatingPoints, rows: int, stale_days: float = 365.0
    ) -> None:
        self._columns = columns
        self.points = points
        self.rows = rows
        self.stale_days = stale_days
        self._floats: dict[str, np.ndarray] = {}
        self._values: dict[str, np.ndarray] = {}

    def floats(self, name: str) -> np.ndarray:
        """The column as floats; NaN where unknown (or when the rows lack the column)."""
        if name not in self._floats:
            if name not in self._columns:
                out = np.full(self.rows, np.nan)
            else:
                out = floats(self._columns[name])
            self._floats[name] = out
        return self._floats[name]

    def values(self, name: str) -> np.ndarray:
        """The column as objects; None where unknown (or when the rows lack the column)."""
        if name not in self._values:
            if name not in self._columns:
                out = np.full(self.rows, None, dtype=object)
            else:
                values = self._columns[name]
                if isinstance(values, pd.Series):
                    out = values.astype(object).where(values.notna(), None).to_numpy(dtype=object)
                else:
                    out = np.empty(self.rows, dtype=object)
                    out[:] = list(values)
            self._values[name] = out
        return self._values[name]

    def row(self, i: int, names: Sequence[str]) -> dict[str, Any]:
        """Row ``i``'s values of the named columns, as plain Python (None when unknown)."""
        out: dict[str, Any] = {}
        for name in names:
            value = self.values(name)[i]
            if isinstance(value, float) and math.isnan(value):
                value = None
            out[name] = value.item() if hasattr(value, "item") else value
        return out


@dataclass(frozen=True)
class FlagRule:
    """One flag: ``fires(context)`` gives a boolean per row; ``text(row, points)`` the
    sentence for one row that fired (``row``: the values of ``reads`` for that row, None
    when unknown). ``reasons`` False leaves both reason lists empty (a data-quality flag
    needs no model or rule reasons)."""

    code: str
    reads: tuple[str, ...]
    fires: Callable[[FlagContext], np.ndarray]
    text: Callable[[Mapping[str, Any], OperatingPoints], str]
    reasons: bool = True


def _pct(p: float) -> str:
    """A probability as people read it: one decimal under 10 %, none above."""
    return f"{p:.1%}" if p < 0.1 else f"{p:.0%}"


def _quiet_risk(ctx: FlagContext) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        high = ctx.floats("churn_probability") >= ctx.points.watch
    healthy = np.asarray(ctx.values("health_band") == "healthy", dtype=bool)
    out: np.ndarray = high & healthy
    return out


def _quiet_risk_text(row: Mapping[str, Any], points: OperatingPoints) -> str:
    p = float(row["churn_probability"])
    name, threshold = (
        ("act now", points.act_now) if p >= points.act_now else ("watch", points.watch)
    )
    return (
        f"The model gives a {_pct(p)} churn probability, at or above its {name} point "
        f"({_pct(threshold)}), while the health score is {row['health_score']:g} (Healthy): "
        "the model sees a risk the health rules do not."
    )


def _rule_only_risk(ctx: FlagContext) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        low = ctx.floats("churn_probability") < ctx.points.watch  # NaN (no model): False
    out: np.ndarray = low & one_of(ctx.values("health_band"), ("at_risk", "critical"))
    return out


def _rule_only_risk_text(row: Mapping[str, Any], points: OperatingPoints) -> str:
    band = BAND_LABELS.get(str(row["health_band"]), str(row["health_band"]))
    return (
        f"The health score is {row['health_score']:g} ({band}) while the model gives a "
        f"{_pct(float(row['churn_probability']))} churn probability, below its watch point "
        f"({_pct(points.watch)}): the health rules see a risk the model does not."
    )


def _stale_invoice(ctx: FlagContext) -> np.ndarray:
    """An invoice unpaid ``stale_days`` or more past due: the batch counts them
    (``stale_invoices``); a request without that count is judged by its oldest unpaid invoice
    (``overdue_days``), which is stale exactly when some invoice is."""
    count = ctx.floats("stale_invoices")
    with np.errstate(invalid="ignore"):
        oldest = ctx.floats("overdue_days") >= ctx.stale_days
    out: np.ndarray = np.where(np.isnan(count), oldest, count > 0)
    return out


def _stale_invoice_text(row: Mapping[str, Any], points: OperatingPoints) -> str:
    count = row.get("stale_invoices")
    days = row.get("stale_invoice_days_late")
    if days is None:
        days = row.get("overdue_days")
    days = float(days) if isinstance(days, int | float) else math.nan
    which = f"Invoice {row['stale_invoice_id']}" if row.get("stale_invoice_id") else "An invoice"
    amount = row.get("stale_invoice_amount")
    money = f" ({amount:,.0f})" if isinstance(amount, int | float) else ""
    more = f" and {int(count) - 1} more" if isinstance(count, int | float) and count > 1 else ""
    return (
        f"{which}{money}{more} unpaid for {days:,.0f} days past due: too old to be a "
        "payment escalation; check the billing data (written off, disputed or paid but not "
        "recorded)."
    )


_SCORES = ("churn_probability", "health_score", "health_band")
_STALE = (
    "stale_invoices",
    "stale_invoice_id",
    "stale_invoice_amount",
    "stale_invoice_days_late",
    "overdue_days",
)

#: Every flag, in the order they are shown. Add a flag here: a FlagRule whose ``reads`` names
#: the score or snapshot columns it needs (the batch takes them from the scored snapshot,
#: the API from the request's scores and features).
FLAG_RULES: tuple[FlagRule, ...] = (
    FlagRule("quiet_risk", _SCORES, _quiet_risk, _quiet_risk_text),
    FlagRule("rule_only_risk", _SCORES, _rule_only_risk, _rule_only_risk_text),
    FlagRule("stale_invoice", _STALE, _stale_invoice, _stale_invoice_text, reasons=False),
)

#: Every column some flag reads.
FLAG_READS: tuple[str, ...] = tuple(dict.fromkeys(c for r in FLAG_RULES for c in r.reads))


def rule_reasons(
    features: Mapping[str, object], components: Mapping[str, object], cfg: HealthConfig
) -> list[str]:
    """The health components losing the most points (at most :data:`RULE_COMPONENTS`), each
    as a sentence naming its points and the sub-rules with a known value that cost the most
    ("Relationship depth 7 of 25 points: Single-threaded: only one client contact (0 of
    2)"). An unknown value is never named (it earns the rules' neutral share).

    ``features``: the account's feature values; ``components``: its component points by
    column (``health_relationship``)."""
    parts = sub_rule_points(features, cfg)
    lost = []
    for name, component in cfg.components.items():
        column = f"health_{name}"
        got = components.get(column)
        pts = float(got) if isinstance(got, int | float) else math.nan
        if math.isfinite(pts) and component.max_points - pts > 1e-9:
            lost.append((component.max_points - pts, name, column, pts, component.max_points))
    lost.sort(key=lambda item: -item[0])
    out = []
    for _, name, column, pts, maximum in lost[:RULE_COMPONENTS]:
        costly = sorted(
            (
                (rule.points - earned, rule, value, earned)
                for rule, value, earned in parts[name]
                if math.isfinite(value) and rule.points - earned > 1e-9
            ),
            key=lambda item: -item[0],
        )
        named = [
            f"{_sentence(rule.feature, value)} ({earned:g} of {rule.points:g})"
            for _, rule, value, earned in costly[:RULE_SUB_RULES]
        ]
        head = f"{label(column)} {pts:g} of {maximum:g} points"
        out.append(f"{head}: {'; '.join(named)}" if named else head)
    return out


def _sentence(feature: str, value: float) -> str:
    spec = FEATURES.get(feature)
    return spec.sentence(value) if spec is not None else f"{feature} {value:g}"


def flag_rows(
    ctx: FlagContext,
    model_reasons: Callable[[int], list[str]],
    rule_reasons_of: Callable[[int], list[str]],
    rules: Sequence[FlagRule] = FLAG_RULES,
) -> list[list[dict[str, Any]]]:
    """Each row's flags as dicts ``{code, text, model_reasons, rule_reasons}``, in the order
    of ``rules``. The reason callables are asked only for rows with a flag."""
    out: list[list[dict[str, Any]]] = [[] for _ in range(ctx.rows)]
    cache: dict[int, tuple[list[str], list[str]]] = {}
    for rule in rules:
        fired = np.flatnonzero(np.asarray(rule.fires(ctx), dtype=bool))
        for i in fired.tolist():
            if rule.reasons and i not in cache:
                cache[i] = (model_reasons(i), rule_reasons_of(i))
            model, rule_side = cache[i] if rule.reasons else ([], [])
            out[i].append(
                {
                    "code": rule.code,
                    "text": rule.text(ctx.row(i, rule.reads), ctx.points),
                    "model_reasons": list(model),
                    "rule_reasons": list(rule_side),
                }
            )
    return out


def flags_frame(
    account_ids: Sequence[object], flags: Sequence[list[dict[str, Any]]]
) -> pd.DataFrame:
    """The rows' flags as the store's ``flags`` table (:data:`FLAG_COLUMNS`; the reason
    lists as JSON arrays)."""
    records = [
        {
            "account_id": account,
            "code": f["code"],
            "text": f["text"],
            "model_reasons": json.dumps(f["model_reasons"]),
            "rule_reasons": json.dumps(f["rule_reasons"]),
        }
        for account, row in zip(account_ids, flags, strict=True)
        for f in row
    ]
    if not records:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in FLAG_COLUMNS})
    return pd.DataFrame(records, columns=list(FLAG_COLUMNS))


def decode_flags(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Stored flags (rows of the ``flags`` table) as the API's flag dicts."""
    out = []
    for row in frame.itertuples(index=False):
        out.append(
            {
                "code": str(row.code),
                "text": str(row.text),
                "model_reasons": _json_list(row.model_reasons),
                "rule_reasons": _json_list(row.rule_reasons),
            }
        )
    return out


def _json_list(value: object) -> list[str]:
    if not isinstance(value, str) or not value:
        return []
    try:
        loaded = json.loads(value)
    except json.JSONDecodeError:
        return []
    return [str(v) for v in loaded] if isinstance(loaded, list) else []
