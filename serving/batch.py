"""Batch scoring: every active account of one or more dates, scored, explained and
shaped like the score store's tables.

For each date: the point-in-time snapshot with health scores and escalations
(``features.snapshots.build_snapshots``, so ``health_score_30d_ago`` comes from the account's
own history), the calibrated churn probability and its explanation from the model bundle
(``serving.explain``, the same code the API uses) over the whole matrix at once, the top
reasons as sentences, the escalations that fired and the playbook's actions. Without a model
the rule-based scores are stored and the probability is null.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from churn.bundle import DEFAULT_OPERATING_POINTS, OperatingPoints
from churn.model_terms import annual_revenue, risk_bands
from features.health import ESCALATION_CODES, HealthConfig
from serving.playbook import Playbook
from serving.priority import priorities
from serving.score_record import from_snapshot

if TYPE_CHECKING:
    from churn.bundle import Bundle
    from churn.engine import Engine
    from churn.settings import Settings, SnapshotSettings
    from features.catalog import Feature
    from features.contract import Tables

ACTION_COLUMNS: tuple[str, ...] = (
    "account_id",
    "rank",
    "action_id",
    "title",
    "steps",
    "owner",
    "due",
    "priority",
    "because",
    "because_text",
    "source",
)


@dataclass
class ScoredBatch:
    """One scored date: frames shaped like the store's tables (``serving.store.STORE_SCHEMA``)."""

    as_of: date
    scores: pd.DataFrame
    reasons: pd.DataFrame
    escalations: pd.DataFrame
    actions: pd.DataFrame
    model_version: str | None = None
    flags: pd.DataFrame = field(default_factory=lambda: _no_flags())


def _no_flags() -> pd.DataFrame:
    from serving.flags import flags_frame

    return flags_frame([], [])


# -- the playbook, over every account at once ------------------------------------------------


def _playbook_triggers(playbook: Playbook) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trigger table, wording table) of the playbook: which feature or escalation code calls
    for which action, and each action's title / steps / due per lifecycle stage."""
    triggers, wording = [], []
    for spec in playbook.actions:
        for code in spec.escalations:
            triggers.append({"source": "escalation", "key": code, "action_id": spec.id})
        for feature in spec.drivers:
            triggers.append({"source": "driver", "key": feature, "action_id": spec.id})
        wording.append(
            {
                "action_id": spec.id,
                "stage": pd.NA,
                "title": spec.title,
                "steps": spec.steps,
                "due": spec.due,
                "owner": spec.owner,
                "priority": spec.priority,
            }
        )
        for stage, variant in spec.variants.items():
            when = variant.when
            wording.append(
                {
                    "action_id": spec.id,
                    "stage": stage,
                    "title": variant.title or spec.title,
                    "steps": variant.steps or spec.steps,
                    "due": variant.due or spec.due,
                    "owner": spec.owner,
                    "priority": spec.priority,
                    "when_feature": None if when is None else when.feature,
                    "when_at_least": np.nan
                    if when is None or when.at_least is None
                    else when.at_least,
                    "when_below": np.nan if when is None or when.below is None else when.below,
                }
            )
    return pd.DataFrame(triggers), pd.DataFrame(wording)


def recommend_frame(
    playbook: Playbook,
    reasons: pd.DataFrame,
    escalations: pd.DataFrame,
    stages: pd.Series,
    max_actions: int = 5,
    features: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``serving.playbook.recommend`` for every account at once.

    ``reasons``: account_id, rank, feature, impact_pts, sentence (the drivers, in rank order);
    ``escalations``: account_id, code, rule; ``stages``: lifecycle stage by account_id;
    ``features``: the features variant conditions read, indexed by account_id (absent: unknown,
    so a variant with a condition does not apply).
    Returns ``ACTION_COLUMNS``: per account at most ``max_actions`` actions, escalations first
    (most severe first), then drivers with a positive impact (largest first, ties in rank
    order), each action once with its first trigger as ``because``.
    """
    triggers, wording = _playbook_triggers(playbook)
    severity = {code: i for i, code in enumerate(ESCALATION_CODES)}
    esc = escalations.rename(columns={"code": "key", "rule": "because_text"})
    esc = esc.merge(triggers[triggers["source"] == "escalation"], on="key")
    esc["k1"], esc["k2"], esc["k3"] = 0, esc["key"].map(severity).astype(float), 0.0

    impact = pd.to_numeric(reasons["impact_pts"], errors="coerce")
    rising = reasons[np.isfinite(impact) & (impact > 0)]
    drv = rising.rename(columns={"feature": "key", "sentence": "because_text"})
    drv = drv.merge(triggers[triggers["source"] == "driver"], on="key")
    drv["k1"], drv["k2"], drv["k3"] = 1, -drv["impact_pts"].astype(float), drv["rank"]

    cols = ["account_id", "action_id", "key", "because_text", "source", "k1", "k2", "k3"]
    cand = pd.concat([esc[cols], drv[cols]], ignore_index=True)
    if cand.empty or max_actions <= 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ACTION_COLUMNS})
    cand["stage"] = cand["account_id"].map(stages).astype(object)
    general = wording[wording["stage"].isna()].drop(columns="stage")
    cand = cand.sort_values(["account_id", "k1", "k2", "k3"], kind="stable")
    cand = cand.drop_duplicates(["account_id", "action_id"], keep="first")
    cand["rank"] = cand.groupby("account_id").cumcount() + 1
    cand = cand[cand["rank"] <= max_actions]

    staged = wording[wording["stage"].notna()]
    out = cand.merge(general, on="action_id", how="left")
    variant = cand[["account_id", "action_id", "stage"]].merge(
        staged, on=["action_id", "stage"], how="left"
    )
    has_variant = variant["title"].notna().to_numpy() & _conditions_hold(variant, features)
    for col in ("title", "steps", "due"):
        out.loc[has_variant, col] = variant.loc[has_variant, col].to_numpy()
    out = out.rename(columns={"key": "because"})
    return out[list(ACTION_COLUMNS)].reset_index(drop=True)


def _conditions_hold(variant: pd.DataFrame, features: pd.DataFrame | None) -> np.ndarray:
    """Per row (account_id, a variant's when_* columns): whether its condition holds (True
    without one; an unknown value never meets one)."""
    ok = np.ones(len(variant), dtype=bool)
    if "when_feature" not in variant:
        return ok
    feature = variant["when_feature"]
    for name in feature.dropna().unique():
        rows = (feature == name).to_numpy()
        if features is None or name not in features:
            ok[rows] = False
            continue
        values = pd.to_numeric(
            variant.loc[rows, "account_id"].map(features[name]), errors="coerce"
        ).to_numpy(dtype=float, na_value=np.nan)
        low = variant.loc[rows, "when_at_least"].to_numpy(dtype=float)
        high = variant.loc[rows, "when_below"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            ok[rows] = (
                ~np.isnan(values)
                & (np.isnan(low) | (values >= low))
                & (np.isnan(high) | (values < high))
            )
    return ok


# -- escalations -----------------------------------------------------------------------------


# The evidence of an escalation (columns of the store's ``escalations`` table, the API's
# ``evidence``): the invoice of the invoice rule; the earlier stored score, its date and the
# drop of the drop rule. Null where it does not apply.
INVOICE_EVIDENCE_FIELDS: tuple[str, ...] = ("invoice_id", "amount", "days_late")
DROP_EVIDENCE_FIELDS: tuple[str, ...] = ("previous_score", "previous_as_of", "score_drop")
ESCALATION_EVIDENCE: tuple[str, ...] = (*INVOICE_EVIDENCE_FIELDS, *DROP_EVIDENCE_FIELDS)


def escalations_frame(snapshot: pd.DataFrame, cfg: HealthConfig) -> pd.DataFrame:
    """One row per (account, escalation that fired): as_of, account_id, code, rule, action,
    severity (1 = most severe) and the evidence (``ESCALATION_EVIDENCE``)."""
    rules = {e.code: e for e in cfg.escalation_rules()}
    flags = snapshot[["as_of", "account_id", *ESCALATION_CODES]]
    long = flags.melt(id_vars=["as_of", "account_id"], var_name="code", value_name="fired")
    long = long[long["fired"].fillna(False).astype(bool)].drop(columns="fired")
    long["rule"] = long["code"].map({c: r.rule for c, r in rules.items()})
    long["action"] = long["code"].map({c: r.action for c, r in rules.items()})
    long["severity"] = long["code"].map({c: r.severity for c, r in rules.items()}).astype(int)
    evidence = _evidence(snapshot)
    long = long.merge(evidence, on=["as_of", "account_id"], how="left")
    invoice = long["code"] == "esc_invoice_30d_late"
    drop = long["code"] == "esc_health_drop"
    for name in INVOICE_EVIDENCE_FIELDS:
        long[name] = long[name].where(invoice)
    for name in DROP_EVIDENCE_FIELDS:
        long[name] = long[name].where(drop)
    return long.sort_values(["as_of", "account_id", "severity"]).reset_index(drop=True)


def _evidence(snapshot: pd.DataFrame) -> pd.DataFrame:
    """Per row of the snapshot: the evidence both rules could show."""
    from features.health import invoice_days

    def col(name: str) -> pd.Series:
        if name in snapshot:
            return snapshot[name]
        return pd.Series(np.nan, index=snapshot.index)

    previous = col("previous_as_of")
    return pd.DataFrame(
        {
            "as_of": snapshot["as_of"],
            "account_id": snapshot["account_id"],
            "invoice_id": col("late_invoice_id").astype(object),
            "amount": pd.to_numeric(col("late_invoice_amount"), errors="coerce"),
            "days_late": invoice_days(col("late_invoice_days_late"), col("overdue_days")),
            "previous_score": pd.to_numeric(col("health_score_30d_ago"), errors="coerce"),
            "previous_as_of": pd.to_datetime(previous),
            "score_drop": pd.to_numeric(col("health_drop_30d"), errors="coerce"),
        }
    )


def with_history(
    snapshot: pd.DataFrame,
    dates: Sequence[date],
    previous: pd.DataFrame | None,
    health: HealthConfig,
) -> pd.DataFrame:
    """The snapshot with its escalations read against the scorings around it, as stored.

    The scorings are ``dates`` (the snapshot's) and the stored ones in ``previous`` (as_of,
    account_id, health_score: ``serving.store.Store.scores_before``). For each date:
    ``previous_as_of`` is the scoring a month earlier (``serving.store.compare_date``, the
    date the dashboard's change compares with), ``health_score_30d_ago`` the account's score
    then (NaN when it was not scored then) and ``days_since_last_scoring`` the days since the
    latest earlier scoring (NaN for the first). The escalation flags are computed again from
    them (``features.health.escalations``).
    """
    from features.health import ESCALATION_COLUMNS, escalations
    from serving.store import compare_date

    if previous is None:
        previous = pd.DataFrame(columns=["as_of", "account_id", "health_score"])
    own = snapshot[["as_of", "account_id", "health_score"]]
    days = sorted({pd.Timestamp(d).normalize() for d in dates})
    prior = previous[~pd.to_datetime(previous["as_of"]).isin(days)]
    known = pd.concat([own, prior.assign(as_of=pd.to_datetime(prior["as_of"]))], ignore_index=True)
    every = sorted({d.date() for d in days} | {pd.Timestamp(d).date() for d in prior["as_of"]})
    compare: dict[pd.Timestamp, pd.Timestamp | None] = {}
    since: dict[pd.Timestamp, float] = {}
    for day in days:
        found = compare_date(day.date(), every)
        compare[day] = None if found is None else pd.Timestamp(found)
        earlier = [d for d in every if pd.Timestamp(d) < day]
        since[day] = float((day - pd.Timestamp(earlier[-1])).days) if earlier else np.nan
    out = snapshot.copy()
    as_of = pd.to_datetime(out["as_of"]).dt.normalize()
    out["previous_as_of"] = pd.to_datetime(as_of.map(compare)).astype("datetime64[ns]")
    out["days_since_last_scoring"] = as_of.map(since).astype(float)
    key = {"account_id": "string", "previous_as_of": "datetime64[ns]"}
    scores = known.rename(columns={"as_of": "previous_as_of", "health_score": "_previous"})
    scores = scores.astype(key).drop_duplicates(["previous_as_of", "account_id"])
    looked = out[["previous_as_of", "account_id"]].astype(key)
    ago = looked.merge(scores, on=["previous_as_of", "account_id"], how="left")["_previous"]
    out["health_score_30d_ago"] = pd.to_numeric(ago, errors="coerce").to_numpy(dtype=float)
    late = out.get("late_invoice_days_late")
    flags = escalations(
        out["health_score"],
        out["health_score_30d_ago"],
        out["overdue_days"],
        health,
        late_invoice_days_late=late,
        days_since_last_scoring=out["days_since_last_scoring"],
    )
    out[list(ESCALATION_COLUMNS)] = flags
    return out


def load_champion(settings: Settings) -> Bundle | None:
    """The champion bundle under ``settings.models_dir``, loaded and test-predicted exactly as
    the API loads it (``serving.model_holder.load_model``); None when there is none yet.

    A bundle that exists but fails its checks is an error, never silently skipped.
    """
    from churn.bundle import CHAMPION_DIR
    from serving.model_holder import load_model

    folder = Path(settings.models_dir) / CHAMPION_DIR
    if not folder.exists():
        return None
    return load_model(folder).bundle


def default_as_of(tables: Tables) -> date:
    """The date ``churn score`` scores by default: the last day the data records anything.

    A snapshot uses records stamped strictly before its as_of, so this covers every complete
    day of the data and leaves out the last day, which an extract may have caught half-way.
    """
    from features.snapshots import observed_end

    end: date = observed_end(tables).date()
    return end


def history_dates(as_of: date, months: int) -> list[date]:
    """The ``months`` dates one calendar month apart before ``as_of``, then ``as_of``."""
    stamp = pd.Timestamp(as_of)
    return [(stamp - pd.DateOffset(months=k)).date() for k in range(months, -1, -1)]


# The score columns copied from the snapshot: the account, then the score record's fields that
# come from the snapshot (features and rule-based scores).
SCORE_COLUMNS: tuple[str, ...] = ("account_id", *from_snapshot())


REASON_COLUMNS = (
    "as_of",
    "account_id",
    "rank",
    "feature",
    "family",
    "value",
    "impact_pts",
    "sentence",
)


def explained_reasons(
    snapshot: pd.DataFrame, bundle: Bundle, top: int
) -> tuple[np.ndarray, pd.DataFrame]:
    """Churn probability of every row and its ``top`` reasons, exactly as the API gives them
    (``serving.explain``: one LightGBM call over the whole matrix; the same factors, values,
    impacts and sentences as ``reasons_for_row``: an unknown value is never a reason)."""
    from serving.explain import Explainer, format_pts_array, listed, top_factors

    explainer = Explainer(bundle)
    names = np.asarray(explainer.feature_names)
    x = snapshot.reindex(columns=list(names)).to_numpy(dtype=float, na_value=np.nan)
    explanation = explainer.explain(x)
    columns = top_factors(explanation, top)
    n, k = columns.shape
    # Known values come first in each row, so keeping them keeps the ranks 1, 2, ...
    keep = listed(explanation, columns).ravel()
    rows = np.repeat(np.arange(n), k)[keep]
    cols = columns.ravel()[keep]
    ranks = np.tile(np.arange(1, k + 1), n)[keep]
    values = explanation.values[rows, cols]
    impacts = explanation.impacts[rows, cols] * 100.0
    families = np.asarray([f.family for f in explainer.features])
    sentences = _sentences(explainer.features, cols, values, explainer.typical, impacts > 0)
    out = pd.DataFrame(
        {
            "as_of": snapshot["as_of"].to_numpy()[rows],
            "account_id": snapshot["account_id"].to_numpy()[rows],
            "rank": ranks,
            "feature": names[cols],
            "family": families[cols],
            "value": values,
            "impact_pts": impacts,
            "sentence": sentences + " (" + format_pts_array(impacts) + ")",
        }
    )
    return explanation.probability, out[list(REASON_COLUMNS)]


def _sentences(
    features: Sequence[Feature],
    cols: np.ndarray,
    values: np.ndarray,
    typical: np.ndarray | None = None,
    rising: np.ndarray | None = None,
) -> np.ndarray:
    """``features[c].sentence(v, typical=typical[c], impact=...)`` for every pair of ``cols``
    and ``values`` (an object array), with one catalogue call per distinct (feature, value,
    impact raising the risk or not): pairs are keyed by the value's bits, so every NaN reads
    "unknown" and each value keeps its own sentence."""
    if not len(cols):
        return np.empty(0, dtype=object)
    up = np.zeros(len(cols), dtype=np.int64) if rising is None else rising.astype(np.int64)
    bits, distinct_bits = pd.factorize(np.ascontiguousarray(values).view(np.int64))
    pair, distinct = pd.factorize((cols.astype(np.int64) * len(distinct_bits) + bits) * 2 + up)
    example = np.empty(len(distinct), dtype=np.intp)
    example[pair] = np.arange(len(pair))  # any row of a pair stands for it: all are equal
    usual = np.full(len(features), np.nan) if typical is None else typical
    texts = [
        features[c].sentence(
            None if math.isnan(v) else v,
            typical=None if math.isnan(usual[c]) else float(usual[c]),
            impact=float(r),
        )
        for c, v, r in zip(
            cols[example].tolist(), values[example].tolist(), up[example].tolist(), strict=True
        )
    ]
    per_row: np.ndarray = np.asarray(texts, dtype=object)[pair]
    return per_row


def completeness_columns(
    snapshot: pd.DataFrame, bundle: Bundle | None
) -> tuple[np.ndarray, list[str]]:
    """Each row's data completeness and missing sources over the model's features (the
    catalogue's model inputs without a model): ``features.catalog.data_completeness``."""
    from features.catalog import MODEL_FEATURES, data_completeness

    names = bundle.feature_names if bundle is not None else MODEL_FEATURES
    known = snapshot.reindex(columns=names).notna().to_numpy(dtype=bool)
    return data_completeness(known, names)


def model_snapshots(cfg: SnapshotSettings, bundle: Bundle | None) -> SnapshotSettings:
    """``cfg`` with the label mode and horizon the bundle's model was trained with (``cfg``
    itself without a bundle, or for a bundle exported without them)."""
    if bundle is None:
        return cfg
    update = {
        key: bundle.metadata[key]
        for key in ("label_mode", "horizon_days")
        if bundle.metadata.get(key) is not None
    }
    return cfg.model_copy(update=update) if update else cfg


def score_batches(
    tables: Tables,
    dates: Sequence[date],
    bundle: Bundle | None,
    settings: Settings,
    *,
    engine: Engine | None = None,
    health: HealthConfig | None = None,
    playbook: Playbook | None = None,
    previous: pd.DataFrame | None = None,
) -> list[ScoredBatch]:
    """Score every active account at each of ``dates`` in one vectorised pass per partition of
    accounts on ``engine`` (default: this process); one batch per date, oldest first (a date
    without active accounts gives an empty batch). ``previous``: the stored scores the dates
    compare with (:func:`with_history`; ``serving.store.Store.scores_before``).

    The accounts scored are the ones active under the model's own label (its ``label_mode``
    and ``horizon_days`` in the bundle's metadata, over the settings'): a model trained on
    purchase-cycle silence scores the clients still within their silence window, not the
    lapsed ones it never saw as rows."""
    from churn.engine import LocalEngine
    from features.catalog import FEATURES
    from features.health import load_health_config
    from serving.distributed import score_partitions
    from serving.playbook import load_playbook

    health = health or load_health_config(settings.health_config)
    playbook = playbook or load_playbook(settings.playbook_config, known_features=FEATURES)
    return score_partitions(
        engine or LocalEngine(),
        tables,
        dates,
        bundle,
        model_snapshots(settings.snapshots, bundle),
        health=health,
        playbook=playbook,
        top=settings.serve.top_reasons,
        previous=previous,
    )


# Split out of score_batches for the dask engine: everything below reads only an
# account's own snapshot rows, so serving.distributed runs it per partition of accounts.
def score_snapshot(
    snapshot: pd.DataFrame,
    dates: Sequence[date],
    bundle: Bundle | None,
    *,
    health: HealthConfig,
    playbook: Playbook,
    top: int,
    previous: pd.DataFrame | None = None,
) -> list[ScoredBatch]:
    """Scores, reasons, escalations and actions of the rows of a snapshot frame (with health
    scores); one batch per date of ``dates``, oldest first. The escalations are read against
    the snapshot's dates and the stored scores in ``previous`` (:func:`with_history`)."""
    snapshot = with_history(snapshot.reset_index(drop=True), dates, previous, health)

    scores = snapshot[list(SCORE_COLUMNS)].copy()
    scores.insert(0, "as_of", snapshot["as_of"])
    if bundle is not None and len(snapshot):
        probability, reasons = explained_reasons(snapshot, bundle, top)
        scores["revenue_at_risk"] = probability * annual_revenue(snapshot, len(snapshot))
        scores["model_version"] = bundle.version
    else:
        probability = np.full(len(snapshot), np.nan)
        reasons = pd.DataFrame({c: pd.Series(dtype=object) for c in REASON_COLUMNS})
        scores["revenue_at_risk"] = np.nan
        scores["model_version"] = pd.NA
    scores["churn_probability"] = probability
    scores["risk_band"] = risk_bands(probability, snapshot["health_band"])
    points = bundle.operating_points if bundle is not None else DEFAULT_OPERATING_POINTS
    scores["priority"] = priorities(
        probability, snapshot["health_band"], {c: snapshot[c] for c in ESCALATION_CODES}, points
    )
    scores["data_completeness"], scores["missing_sources"] = completeness_columns(snapshot, bundle)

    escalations = escalations_frame(snapshot, health)
    stages = snapshot.set_index(["as_of", "account_id"])["lifecycle_stage"]
    actions = _actions_by_date(playbook, reasons, escalations, stages, snapshot)
    version = bundle.version if bundle is not None else None
    flags = _flags_frame(snapshot, scores, reasons, points, health)
    batches = []
    for day in sorted({pd.Timestamp(d).normalize() for d in dates}):
        batches.append(
            ScoredBatch(
                as_of=day.date(),
                scores=scores[scores["as_of"] == day].drop(columns="as_of"),
                reasons=reasons[reasons["as_of"] == day].drop(columns="as_of"),
                escalations=escalations[escalations["as_of"] == day].drop(columns="as_of"),
                actions=actions[actions["as_of"] == day].drop(columns="as_of"),
                model_version=version,
                flags=flags[flags["as_of"] == day].drop(columns="as_of"),
            )
        )
    return batches


def _flags_frame(
    snapshot: pd.DataFrame,
    scores: pd.DataFrame,
    reasons: pd.DataFrame,
    points: OperatingPoints,
    health: HealthConfig,
) -> pd.DataFrame:
    """Every row's flags (``serving.flags``) as the store's ``flags`` table, with as_of."""
    from serving.flags import MODEL_REASONS, FlagContext, flag_rows, flags_frame, rule_reasons

    columns = {"churn_probability": scores["churn_probability"]}
    stale_days = health.escalations.esc_invoice_30d_late.stale_days
    ctx = FlagContext(_Columns(snapshot, columns), points, len(snapshot), stale_days)
    # Reasons that raise the risk, on a known value (an unknown value is never a reason).
    rising = reasons[
        (pd.to_numeric(reasons["impact_pts"], errors="coerce") > 0)
        & pd.to_numeric(reasons["value"], errors="coerce").notna()
    ]
    by_row = rising.sort_values("rank", kind="stable").groupby(["as_of", "account_id"])["sentence"]
    top = {key: list(values)[:MODEL_REASONS] for key, values in by_row}
    as_of, ids = snapshot["as_of"].to_numpy(), snapshot["account_id"].to_numpy()

    def model_reasons(i: int) -> list[str]:
        return top.get((pd.Timestamp(as_of[i]), ids[i]), [])

    def rules_of(i: int) -> list[str]:
        row = snapshot.iloc[i]
        values = {k: (None if _missing(v) else v) for k, v in row.items()}
        return rule_reasons(values, values, health)

    per_row = flag_rows(ctx, model_reasons, rules_of)
    out = flags_frame(ids, per_row)
    out.insert(0, "as_of", pd.to_datetime(np.repeat(as_of, [len(f) for f in per_row])))
    return out


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


class _Columns:
    """The scored snapshot's columns, with some replaced or added (the model's scores)."""

    def __init__(self, frame: pd.DataFrame, extra: dict[str, pd.Series]) -> None:
        self.frame, self.extra = frame, extra

    def __contains__(self, name: object) -> bool:
        return name in self.extra or name in self.frame.columns

    def __getitem__(self, name: str) -> pd.Series:
        return self.extra[name] if name in self.extra else self.frame[name]


def _actions_by_date(
    playbook: Playbook,
    reasons: pd.DataFrame,
    escalations: pd.DataFrame,
    stages: pd.Series,
    snapshot: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``recommend_frame`` over (as_of, account) pairs, keyed by one combined id."""

    def key(frame: pd.DataFrame) -> pd.Series:
        return frame["as_of"].astype("int64").astype(str) + "|" + frame["account_id"].astype(str)

    r = reasons.assign(account_id=key(reasons))
    e = escalations.assign(account_id=key(escalations))
    index = stages.index.to_frame(index=False)
    s = pd.Series(stages.to_numpy(dtype=object), index=key(index))
    features = None
    if snapshot is not None:
        names = [n for n in playbook.condition_features() if n in snapshot]
        features = snapshot[names].set_axis(key(snapshot)) if names else None
    actions = recommend_frame(playbook, r, e, s, features=features)
    parts = actions["account_id"].str.split("|", n=1, expand=True)
    if actions.empty:
        return actions.assign(as_of=pd.Series(dtype="datetime64[ns]"))
    actions["as_of"] = pd.to_datetime(parts[0].astype("int64"))
    actions["account_id"] = parts[1]
    return actions


def score_batch(
    tables: Tables, as_of: date, bundle: Bundle | None, settings: Settings
) -> ScoredBatch:
    """Score every account active at ``as_of`` (see :func:`score_batches`)."""
    return score_batches(tables, [as_of], bundle, settings)[0]
