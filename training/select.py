"""Feature selection that stays honest (docs/feature-selection.md): the configured exclusions
and the optional pruning, decided on the validation period only.

**Exclusion** (:func:`resolve_features`, called by ``training.config.plan_run``): the model's
features are the catalogue's model inputs minus the ``features.exclude`` entries, each a
feature name, a family or a basis, in catalogue order.

**Pruning** (:func:`prune_and_refit`, in ``training.pipeline.run`` right after the first fit):
each feature, or each group of features whose absolute Spearman correlation on the validation
rows is at least ``group_correlation`` (joined transitively), is permuted on the validation
rows ``repeats`` times (one seeded row permutation per repeat, the same for every group, the
group's columns moved together); its importance is the mean rise of the validation log loss
over the repeats. A group is kept when its importance minus ``standard_errors`` times its
standard error (rows clustered by account: an account's monthly rows are not independent) is
above ``min_gain``; the others are dropped and the model is refitted on the kept features
with the same parameters and the same early stopping, through ``training.fit.fit_model`` (so
on the run's engine, Dask included). The refit is kept only if its validation log loss is not
higher than the first model's; else every feature stays. Only the fitted models and the
validation rows are read: the test period plays no part in the choice, so its metrics stay an
unbiased estimate.

The importance is computed here rather than with ``sklearn.inspection.permutation_importance``
(scikit-learn 1.9): that function permutes one column at a time, with no way to move a group's
columns together, so two near-copies of one signal would each look useless (the trees fall
back on the other copy) and both be dropped; it returns one score per repeat, not the per-row
losses the account-clustered standard error needs; and it would need an estimator wrapper
around the booster and score the features the trees never split on, whose importance is
exactly zero. Like it, every group sees the same seeded permutations (common random numbers:
a difference between two features is not a difference between draws).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from churn.errors import ConfigError

if TYPE_CHECKING:
    import lightgbm as lgb

    from churn.engine import Engine
    from features.catalog import Feature
    from features.distributed import PartitionedSnapshots
    from training.config import PruneConfig, RunPlan
    from training.fit import FittedModel
    from training.progress import Progress
    from training.split import SplitParts

_log = logging.getLogger(__name__)

#: Probabilities are clipped to this distance from 0 and 1 in the log loss.
_EPS = 1e-15


# ------------------------------------------------------------------------------- exclusion


def resolve_features(
    exclude: Sequence[str], catalog: Sequence[Feature] | None = None
) -> tuple[str, ...]:
    """The model inputs of ``catalog`` (default: the feature catalogue) minus the ``exclude``
    entries, in catalogue order. An entry is a model feature's name, a family or a basis; an
    unknown entry, or exclusions that leave no feature, is a ConfigError naming it."""
    from features.catalog import BASES, CATALOG, FAMILIES

    features = [f for f in (CATALOG if catalog is None else catalog) if f.model]
    names = {f.name for f in features}
    dropped: set[str] = set()
    for entry in exclude:
        if entry in names:
            dropped.add(entry)
        elif entry in FAMILIES:
            dropped |= {f.name for f in features if f.family == entry}
        elif entry in BASES:
            dropped |= {f.name for f in features if f.basis == entry}
        else:
            close = difflib.get_close_matches(entry, [*names, *FAMILIES, *BASES], n=1)
            raise ConfigError(
                f"features.exclude: unknown entry {entry!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; an entry is a model feature's name (features/CATALOG.md), a family "
                f"({', '.join(FAMILIES)}) or a basis ({', '.join(BASES)})",
                hint="fix or remove the entry in the training config's features.exclude",
            )
    kept = tuple(f.name for f in features if f.name not in dropped)
    if not kept:
        raise ConfigError(
            f"features.exclude: {list(exclude)} leaves the model no feature; an entry is a model "
            f"feature's name, a family ({', '.join(FAMILIES)}) or a basis ({', '.join(BASES)})",
            hint="exclude fewer features in the training config's features.exclude",
        )
    return kept


def excluded_features(kept: Sequence[str], catalog: Sequence[Feature] | None = None) -> list[str]:
    """The catalogue's model inputs (catalogue order) that are not in ``kept``."""
    from features.catalog import CATALOG

    chosen = set(kept)
    source = CATALOG if catalog is None else catalog
    return [f.name for f in source if f.model and f.name not in chosen]


# ------------------------------------------------------------------------------ importance


def row_log_loss(y: np.ndarray, p: Any) -> np.ndarray:
    """Each row's log loss (probabilities clipped away from 0 and 1)."""
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def clustered_standard_error(values: np.ndarray, clusters: np.ndarray) -> float:
    """Standard error of the mean of ``values`` when rows of the same cluster (an account's
    monthly snapshots) are not independent: the spread of the clusters' sums."""
    codes = np.unique(clusters, return_inverse=True)[1].reshape(-1)
    counts = np.bincount(codes)
    k, n = len(counts), len(values)
    if k < 2:
        return 0.0
    sums = np.bincount(codes, weights=values)
    resid = sums - counts * values.mean()
    return float(np.sqrt(k / (k - 1) * np.sum(resid**2)) / n)


def feature_groups(x: np.ndarray, threshold: float | None) -> list[list[int]]:
    """Column indices grouped by ``|Spearman correlation| >= threshold`` (joined transitively,
    pairwise-complete rows; a constant column joins no group); each group in column order,
    groups ordered by their first column. ``None``: every column alone."""
    import pandas as pd
    from scipy.sparse.csgraph import connected_components

    n = x.shape[1]
    if threshold is None or n < 2:
        return [[j] for j in range(n)]
    corr = pd.DataFrame(x).corr(method="spearman", min_periods=3).abs().to_numpy()
    _, label = connected_components(np.nan_to_num(corr, nan=0.0) >= threshold, directed=False)
    groups: dict[int, list[int]] = {}
    for j in range(n):
        groups.setdefault(int(label[j]), []).append(j)
    return sorted(groups.values(), key=lambda g: g[0])


@dataclass(frozen=True)
class Importances:
    """Permutation importances of groups of columns on some rows: the model's log loss there,
    and per group the rise of it in each repeat (groups x repeats) and the standard error of
    the mean rise (rows clustered by account)."""

    log_loss: float
    rises: np.ndarray
    standard_errors: np.ndarray

    @property
    def means(self) -> np.ndarray:
        return np.asarray(self.rises.mean(axis=1))

    @property
    def spreads(self) -> np.ndarray:
        """Standard deviation of the rise over the repeats (0 with one repeat)."""
        if self.rises.shape[1] < 2:
            return np.zeros(len(self.rises))
        return np.asarray(self.rises.std(axis=1, ddof=1))


def permutation_importance(
    booster: lgb.Booster,
    x: np.ndarray,
    y: np.ndarray,
    groups: list[list[int]],
    accounts: np.ndarray,
    *,
    repeats: int,
    seed: int,
) -> Importances:
    """The rise of the booster's log loss on (x, y) when each group's columns are moved
    together by ``repeats`` seeded row permutations (the same permutations for every group).
    A group the trees never split on has exactly zero rise and is not scored."""
    base = row_log_loss(y, booster.predict(x, num_threads=1))
    used = np.asarray(booster.feature_importance(importance_type="split")) > 0
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(y)) for _ in range(repeats)]
    rises = np.zeros((len(groups), repeats))
    errors = np.zeros(len(groups))
    work = np.array(x, dtype=float, copy=True)
    for g, cols in enumerate(groups):
        if not used[cols].any():
            continue
        per_row = np.zeros(len(y))
        for r, order in enumerate(orders):
            work[:, cols] = x[np.ix_(order, np.asarray(cols))]
            rise = row_log_loss(y, booster.predict(work, num_threads=1)) - base
            rises[g, r] = rise.mean()
            per_row += rise / repeats
        work[:, cols] = x[:, cols]
        errors[g] = clustered_standard_error(per_row, accounts)
    return Importances(float(base.mean()), rises, errors)


# ------------------------------------------------------------------------------ the record


@dataclass(frozen=True)
class FeatureImportance:
    """One feature's validation importance: the mean rise of the validation log loss when its
    group is permuted, its spread (standard deviation) over the repeats, its standard error
    (rows clustered by account), its group's members and whether it was kept."""

    feature: str
    importance: float
    spread: float
    standard_error: float
    group: tuple[str, ...]
    kept: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"group": list(self.group)}


@dataclass(frozen=True)
class Selection:
    """The run's features: those the config excluded, and the pruning's result (when
    enabled): the kept and pruned features, each feature's validation importance, the
    validation log loss before pruning and after the refit, and a note when pruning was
    skipped."""

    excluded: tuple[str, ...]
    exclude_entries: tuple[str, ...]
    kept: tuple[str, ...]
    pruned: tuple[str, ...] = ()
    enabled: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    importances: tuple[FeatureImportance, ...] = ()
    validation: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The content of ``feature_selection.json``."""
        return {
            "kept": list(self.kept),
            "pruned": list(self.pruned),
            "excluded": list(self.excluded),
            "exclude_entries": list(self.exclude_entries),
            "prune": {"enabled": self.enabled, **self.settings},
            "validation": self.validation,
            "importances": [i.to_dict() for i in self.importances],
            "note": self.note,
        }

    def card_lines(self) -> list[str]:
        """The model card's line on the features (:meth:`card_line`) when the config excluded
        some or pruning ran; else none."""
        return [self.card_line()] if self.excluded or self.enabled else []

    def card_line(self) -> str:
        """One line for the model card: the feature count, exclusions and pruning."""
        total = len(self.kept) + len(self.pruned) + len(self.excluded)
        parts = [f"The model uses {len(self.kept)} of the catalogue's {total} model inputs"]
        if self.excluded:
            why = (
                f"excluded by the training config ({', '.join(self.exclude_entries)})"
                if self.exclude_entries
                else "left out of the run's plan"
            )
            parts.append(f"{why}: {len(self.excluded)}")
        if self.enabled and self.pruned:
            parts.append(
                "pruned on the validation period (permutation importance of the log loss not "
                f"clearly above {self.settings.get('min_gain', 0):g}): "
                f"{', '.join(self.pruned)}. Early stopping, calibration and this selection all "
                "used the validation period; the test period, used by none of them, is what "
                "the metrics report"
            )
        elif self.enabled:
            parts.append("pruning on the validation period dropped none" + self._noted())
        return "; ".join(parts) + "."

    def _noted(self) -> str:
        return f" ({self.note})" if self.note else ""


# -------------------------------------------------------------------------- pruning step


def keep_features(parts: SplitParts, kept: Sequence[str]) -> SplitParts:
    """``parts`` with only the ``kept`` features' columns (in ``kept`` order) in every
    period's model inputs."""
    from training.split import PeriodRows

    index = [parts.features.index(name) for name in kept]

    def rows(period: PeriodRows) -> PeriodRows:
        return PeriodRows(period.frame, period.x[:, index], period.y)

    return replace(
        parts,
        train=rows(parts.train),
        validation=rows(parts.validation),
        test=rows(parts.test),
        features=tuple(kept),
    )


def _accounts(frame: Any, rows: int) -> np.ndarray:
    if "account_id" in frame:
        return np.asarray(frame["account_id"].astype(str))
    return np.arange(rows)


def prune_features(
    model: FittedModel, parts: SplitParts, cfg: PruneConfig, seed: int
) -> tuple[tuple[str, ...], tuple[FeatureImportance, ...], float, str]:
    """Which of ``parts.features`` to keep, judged on the validation period only: the kept
    features (in ``parts.features`` order), each feature's importance (largest first), the
    validation log loss of ``model`` and a note (empty unless pruning was skipped)."""
    features = list(parts.features)
    x, y = parts.validation.x, parts.validation.y
    groups = feature_groups(x, cfg.group_correlation)
    found = permutation_importance(
        model.booster,
        x,
        y,
        groups,
        _accounts(parts.validation.frame, len(y)),
        repeats=cfg.repeats,
        seed=seed,
    )
    means, spreads, errors = found.means, found.spreads, found.standard_errors
    keep_group = means - cfg.standard_errors * errors > cfg.min_gain
    note = ""
    if not keep_group.any():
        note = (
            "no feature's importance was clearly above the threshold, so all were kept: the "
            "validation period confirms nothing the model learnt"
        )
        _log.warning("feature pruning skipped: %s", note)
        keep_group[:] = True
    rows = [
        FeatureImportance(
            feature=features[j],
            importance=float(means[g]),
            spread=float(spreads[g]),
            standard_error=float(errors[g]),
            group=tuple(features[i] for i in cols),
            kept=bool(keep_group[g]),
        )
        for g, cols in enumerate(groups)
        for j in cols
    ]
    rows.sort(key=lambda r: (-r.importance, features.index(r.feature)))
    kept_names = {r.feature for r in rows if r.kept}
    return tuple(f for f in features if f in kept_names), tuple(rows), found.log_loss, note


def prune_and_refit(
    engine: Engine,
    snapshots: PartitionedSnapshots,
    parts: SplitParts,
    plan: RunPlan,
    model: FittedModel,
    progress: Progress,
) -> tuple[FittedModel, SplitParts, Selection]:
    """The pipeline's selection step, after ``fit_model``: with ``features.prune`` enabled,
    prune on the validation period (:func:`prune_features`) and refit on the kept features
    (same parameters, same early stopping, on ``engine``). The refit replaces the first model
    only if its validation log loss is not higher (dropping many small contributions at once
    can cost more than each shows alone); else every feature stays, with a note. Returns the
    model and split parts the rest of the run uses (only the kept features) and the record of
    the selection."""
    from training.fit import fit_model

    cfg = plan.config.features
    selection = Selection(
        excluded=tuple(excluded_features(plan.features)),
        exclude_entries=tuple(cfg.exclude),
        kept=tuple(parts.features),
    )
    if not cfg.prune.enabled:
        return model, parts, selection
    prune = cfg.prune
    with progress.step("pruning features on the validation period"):
        kept, importances, log_loss, note = prune_features(model, parts, prune, plan.seed)
    pruned = tuple(f for f in parts.features if f not in kept)
    validation: dict[str, Any] = {
        "rows": len(parts.validation.y),
        "positives": int(parts.validation.y.sum()),
        "accounts": len(np.unique(_accounts(parts.validation.frame, len(parts.validation.y)))),
        "log_loss": log_loss,
        "best_iteration": model.best_iteration,
    }
    if pruned:
        kept_parts = keep_features(parts, kept)
        refit = fit_model(engine, snapshots, kept_parts, plan, progress, params=model.params)
        after = row_log_loss(
            kept_parts.validation.y, refit.booster.predict(kept_parts.validation.x, num_threads=1)
        ).mean()
        validation["refit_log_loss"] = float(after)
        validation["refit_best_iteration"] = refit.best_iteration
        if after <= log_loss:
            model = replace(refit, search_score=model.search_score)
            parts = kept_parts
        else:
            # Many small contributions can add up to more than each one shows alone.
            note = (
                f"the refit on the {len(kept)} kept features had a higher validation log loss "
                f"({after:.5f} > {log_loss:.5f}), so the run keeps all {len(parts.features)}"
            )
            _log.warning("feature pruning undone: %s", note)
            validation["refit_dropped"] = list(pruned)
            kept, pruned = tuple(parts.features), ()
            importances = tuple(replace(i, kept=True) for i in importances)
    settings = {
        "method": "permutation",
        "metric": "log_loss",
        "period": "validation",
        **prune.model_dump(exclude={"enabled"}),
        "seed": plan.seed,
    }
    return (
        model,
        parts,
        replace(
            selection,
            kept=kept,
            pruned=pruned,
            enabled=True,
            settings=settings,
            importances=importances,
            validation=validation,
            note=note,
        ),
    )


__all__ = [
    "FeatureImportance",
    "Importances",
    "Selection",
    "clustered_standard_error",
    "excluded_features",
    "feature_groups",
    "keep_features",
    "permutation_importance",
    "prune_and_refit",
    "prune_features",
    "resolve_features",
    "row_log_loss",
]
