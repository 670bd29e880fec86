"""Model quality on a large sample: today's features against all of them, with intervals, and
what each family and basis of features adds.

The sample is the demo generator at ten times the demo's size with another seed
(``bench.data.LARGE``: 15,000 accounts, 4 years, seed 7), so that a gain of 0.01 in a test
metric is larger than its sampling noise. Everything is measured in this run:

* **Headline**: two runs of the real training pipeline (``training.pipeline.run``, each into a
  fresh MLflow store under ``workdir/quality``) on the sample, one with today's features (the
  55 inputs of the model before the baseline-relative features, :func:`today_features`) and
  one with all of them. Rows:
  test ROC AUC of all features (target: at least 0.86; the ratio column is all / today), PR AUC
  and top-decile lift (target: above today's), and the expected calibration error of all
  features (at most 0.01). Both runs split the same labeled frame, so their test rows are the
  same; each figure's 95 % bootstrap interval (accounts resampled with all their rows) and the
  paired interval of the gain (all - today, the same draws for both) are in the row's name and
  ``extra``.
* **Ablation** (a table): the labeled frame is built and split once, and LightGBM is fitted
  (``training.fit.fit_booster``: the pipeline's parameters, early stopping on the validation
  period) on all features, on all but each family, on the level features only and on the
  baseline features only. Each set's test ROC AUC and PR AUC (of the booster's raw scores; the
  pipeline's calibration keeps the ranking) and the paired interval of its gain against all
  features (negative: the features left out were worth that much).
* **Importance** (a table): each family's and each basis's share of the total split gain of the
  all-features model of the ablation, and its top features.

The fits of the ablation run side by side on the machine's cores (LightGBM releases Python's
lock; each fit keeps the pipeline's one thread). The tables are printed and stored in
``bench/results.json`` under ``tables.quality``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from bench.common import Result, SuiteOutput, ratio_up
from bench.data import LARGE, DemoSpec, bench_settings, bench_store_only, demo_source, fresh_store

if TYPE_CHECKING:
    import lightgbm as lgb

    from churn.settings import Settings
    from training import bootstrap as training_bootstrap
    from training.config import RunPlan
    from training.pipeline import TrainResult
    from training.progress import Progress
    from training.split import SplitParts

ROC_AUC_TARGET = 0.86
ECE_LIMIT = 0.01
# The suite's wall time is reported against ten minutes for scale; no target is set for it.
BUDGET_SECONDS = 600.0
TOP_FEATURES = 15
ALL = "all features"
#: The headline's figures: ROC AUC, PR AUC, top-decile lift and calibration error.
HEADLINE_METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "lift_top_decile", "ece")
#: The ablation's figures: ranking quality of each feature set.
ABLATION_METRICS: tuple[str, ...] = ("roc_auc", "pr_auc")
_EPS = 1e-9


# ------------------------------------------------------------------------------ feature sets


#: The three levels added with the baseline-relative features (the share of interactions the
#: client initiated, client contacts who left in the last year, the discount share of the last
#: 90 days). Today's feature set is the level features without them: the 55 model inputs of the
#: model before the baseline-relative features.
ADDED_LEVELS: frozenset[str] = frozenset(
    {
        "client_initiated_share_90d",
        "client_contacts_left_365d",
        "discount_share_90d",
    }
)


def today_features(features: Sequence[str]) -> list[str]:
    """Today's feature set: ``features`` without the baseline-relative ones and the three
    levels added with them (:data:`ADDED_LEVELS`), catalogue order kept."""
    from features.catalog import FEATURES

    return [f for f in features if FEATURES[f].basis == "level" and f not in ADDED_LEVELS]


def feature_sets(features: Sequence[str]) -> dict[str, list[str]]:
    """The ablation's feature sets, each a sub-list of ``features`` in its order: all of them,
    all but each family (``minus <family>``), and each basis alone (``<basis> only``). A set
    may be empty (a basis with no feature yet)."""
    from features.catalog import BASES, FAMILIES, FEATURES

    sets = {ALL: list(features)}
    for family in FAMILIES:
        sets[f"minus {family}"] = [f for f in features if FEATURES[f].family != family]
    for basis in BASES:
        sets[f"{basis} only"] = [f for f in features if FEATURES[f].basis == basis]
    return sets


def _set_kind(name: str) -> str:
    if name == ALL:
        return "all"
    return "family" if name.startswith("minus ") else "basis"


# ------------------------------------------------------------------------------- the headline


@dataclass(frozen=True)
class Bootstrap:
    """How the intervals are drawn: resamples, level (0.95), seed and calibration bins."""

    samples: int
    level: float
    seed: int
    bins: int

    @classmethod
    def of(cls, plan: RunPlan) -> Bootstrap:
        evaluation = plan.config.evaluation
        samples = evaluation.bootstrap_samples or 200  # the bench always shows intervals
        return cls(samples, evaluation.interval_level, plan.seed, evaluation.ece_bins)

    def resample(
        self,
        y: np.ndarray,
        scores: Mapping[str, np.ndarray],
        accounts: np.ndarray,
        revenue: np.ndarray | None = None,
    ) -> Resampled:
        """Every metric of every scorer on the same resamples of the accounts."""
        from training.bootstrap import bootstrap_metrics
        from training.evaluate import evaluate

        boot = bootstrap_metrics(
            y, dict(scores), accounts, revenue, samples=self.samples, seed=self.seed, bins=self.bins
        )
        points = {name: evaluate(y, s, revenue, bins=self.bins) for name, s in scores.items()}
        return Resampled(self.level, points, boot)


@dataclass(frozen=True)
class Resampled:
    """Scorers measured on the same resamples: each figure's interval, and the paired
    interval of the difference of two scorers. One resampling for many scorers gives exactly
    what ``training.bootstrap.account_bootstrap`` and ``paired_gain_interval`` give for each
    (the draws depend only on the accounts and the seed), without resampling again for every
    pair."""

    level: float
    points: dict[str, dict[str, float]]
    boot: training_bootstrap.Bootstrap

    @property
    def accounts(self) -> int:
        return self.boot.accounts

    def interval(self, scorer: str, metric: str) -> tuple[float, float]:
        return self.boot.interval(scorer, metric, self.level)

    def gain(self, base: str, new: str, metric: str) -> tuple[float, float, float]:
        """(new - base, low, high) of ``metric``."""
        point = self.points[new][metric] - self.points[base][metric]
        low, high = self.boot.gain_interval(base, new, metric, self.level)
        return float(point), float(low), float(high)


def paired_test_rows(today: pd.DataFrame, every: pd.DataFrame) -> pd.DataFrame:
    """The two runs' test frames side by side (``account_id``, ``as_of``, ``churned``,
    ``revenue``, ``p_today``, ``p_all``); a ValueError unless they hold the same rows."""
    from training.evaluate import revenue_of

    keys = ["account_id", "as_of"]
    left = today[[*keys, "churned", "churn_probability"]].rename(
        columns={"churn_probability": "p_today"}
    )
    right = every[[*keys, "churned", "churn_probability"]].rename(
        columns={"churn_probability": "p_all", "churned": "churned_all"}
    )
    right["revenue"] = revenue_of(every)
    both = left.merge(right, on=keys, how="inner", validate="one_to_one")
    if len(both) != len(today) or len(both) != len(every):
        raise ValueError(
            f"the two runs tested different rows ({len(today)} and {len(every)}, "
            f"{len(both)} shared): they must split the same labeled frame"
        )
    if not np.array_equal(both["churned"].to_numpy(float), both["churned_all"].to_numpy(float)):
        raise ValueError("the two runs' test rows carry different labels")
    return both.drop(columns="churned_all")


def headline_results(
    rows: pd.DataFrame,
    today: Mapping[str, float],
    every: Mapping[str, float],
    draws: Bootstrap,
    label: str,
) -> list[Result]:
    """The headline rows from the paired test rows (:func:`paired_test_rows`) and each run's
    test metrics of the model (``TrainResult.metrics["model"]``): each figure with its
    interval and the paired interval of the gain."""
    y = rows["churned"].to_numpy(float)
    accounts = rows["account_id"].to_numpy()
    scores = {"today": rows["p_today"].to_numpy(float), "all": rows["p_all"].to_numpy(float)}
    boot = draws.resample(y, scores, accounts, rows["revenue"].to_numpy(float))
    intervals = {k: {m: boot.interval(k, m) for m in HEADLINE_METRICS} for k in scores}
    gains = {m: boot.gain("today", "all", m) for m in HEADLINE_METRICS}
    pct = f"{100 * draws.level:g} %"

    def facts(metric: str) -> dict[str, Any]:
        point, low, high = gains[metric]
        return {
            "all": every[metric],
            "today": today[metric],
            "interval_all": list(intervals["all"][metric]),
            "interval_today": list(intervals["today"][metric]),
            "gain": point,
            "gain_interval": [low, high],
            "level": draws.level,
            "bootstrap_samples": draws.samples,
            "test_rows": len(rows),
            "test_accounts": boot.accounts,
        }

    def name(metric: str, title: str) -> str:
        (lo_a, hi_a), (lo_t, hi_t) = intervals["all"][metric], intervals["today"][metric]
        point, low, high = gains[metric]
        return (
            f"quality ({label}): test {title}, all features vs today's: "
            f"{every[metric]:.3f} [{lo_a:.3f}, {hi_a:.3f}] vs {today[metric]:.3f} "
            f"[{lo_t:.3f}, {hi_t:.3f}], gain {point:+.3f} ({pct} interval {low:+.3f} to "
            f"{high:+.3f})"
        )

    return [
        Result(
            name=name("roc_auc", "ROC AUC"),
            unit="ROC AUC",
            ours=every["roc_auc"],
            reference=today["roc_auc"],
            reference_name="today's features",
            target=ratio_up(ROC_AUC_TARGET, today["roc_auc"]),
            extra={**facts("roc_auc"), "required": f"all >= {ROC_AUC_TARGET}"},
        ),
        *(
            Result(
                name=name(metric, title),
                unit=unit,
                ours=every[metric],
                reference=today[metric],
                reference_name="today's features",
                target=1.0 + _EPS,
                extra={**facts(metric), "required": "all > today"},
            )
            for metric, title, unit in (
                ("pr_auc", "PR AUC", "PR AUC"),
                ("lift_top_decile", "top-decile lift", "lift"),
            )
        ),
        Result(
            name=name("ece", "expected calibration error"),
            unit="ECE",
            ours=every["ece"],
            reference=ECE_LIMIT,
            reference_name="ECE limit",
            target=1.0,
            higher_is_better=False,
            extra={**facts("ece"), "required": f"all <= {ECE_LIMIT}"},
        ),
    ]


def pipeline_run(
    folder: Path, settings: Settings, features: Sequence[str], progress: bool = True
) -> TrainResult:
    """One run of the training pipeline on ``folder`` with ``features`` as the model's
    inputs, into the settings' MLflow store."""
    from churn.engine import open_engine
    from training.config import plan_run
    from training.pipeline import run
    from training.progress import Progress

    plan = dataclasses.replace(plan_run(settings), features=tuple(features))
    with bench_store_only(), open_engine(settings) as engine:
        return run(str(folder), settings, plan, engine, progress=Progress(progress))


# ------------------------------------------------------------------- ablation and importance


@dataclass(frozen=True)
class SetFit:
    """One feature set fitted on the split: its booster and its raw test scores."""

    features: list[str]
    booster: lgb.Booster
    scores: np.ndarray


def fit_sets(
    parts: SplitParts,
    plan: RunPlan,
    sets: Mapping[str, Sequence[str]],
    workers: int,
    progress: Progress,
) -> dict[str, SetFit]:
    """Fit LightGBM on each non-empty set of ``sets`` (the pipeline's parameters, early
    stopping on the validation period), ``workers`` fits at a time; the same boosters on any
    number of workers. Sets of the same features share one fit (today, with no baseline
    feature in the catalogue, "level only" is all features)."""
    from training.fit import fit_booster

    column = {name: i for i, name in enumerate(parts.features)}
    params = plan.config.lgb_params(plan.seed)

    def fit(names: Sequence[str]) -> SetFit:
        cols = [column[n] for n in names]
        booster = fit_booster(
            params,
            (parts.train.x[:, cols], parts.train.y),
            (parts.validation.x[:, cols], parts.validation.y),
            list(names),
            plan.config.lightgbm,
        )
        scores = np.asarray(booster.predict(parts.test.x[:, cols]), dtype=float)
        return SetFit(list(names), booster, scores)

    distinct = list(dict.fromkeys(tuple(names) for names in sets.values() if names))
    done: dict[tuple[str, ...], SetFit] = {}
    with (
        progress.bar(f"ablation: {len(distinct)} LightGBM fits", len(distinct)) as advance,
        ThreadPoolExecutor(max(1, workers)) as pool,
    ):
        futures = {pool.submit(fit, names): names for names in distinct}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            advance()
    return {name: done[tuple(names)] for name, names in sets.items() if names}


def ablation_table(
    parts: SplitParts,
    sets: Mapping[str, Sequence[str]],
    fits: Mapping[str, SetFit],
    draws: Bootstrap,
    progress: Progress,
) -> list[dict[str, Any]]:
    """One record per feature set: its size, early-stopping round, test ROC AUC and PR AUC and
    the paired gain of each against all features (point, low, high; None for all features and
    for an empty set, whose ``note`` says why). Every set is measured on the same resamples."""
    y, accounts = parts.test.y, parts.test.frame["account_id"].to_numpy()
    distinct = {id(fit): name for name, fit in reversed(fits.items())}  # first name per fit
    with progress.step(f"ablation: bootstrap intervals ({draws.samples} resamples)"):
        boot = draws.resample(y, {name: fits[name].scores for name in distinct.values()}, accounts)
    records = []
    for name, names in sets.items():
        record: dict[str, Any] = {
            "set": name,
            "kind": _set_kind(name),
            "features": len(names),
            "best_iteration": None,
            "note": "",
        }
        fit = fits.get(name)
        if fit is None:
            basis = name.removesuffix(" only")
            record["note"] = f"no {basis} features in the catalogue yet"
            record |= {m: None for m in ABLATION_METRICS}
            record |= {f"{m}_gain": None for m in ABLATION_METRICS}
        else:
            same = distinct[id(fit)]  # the name its scores were resampled under
            record["best_iteration"] = int(fit.booster.best_iteration)
            for metric in ABLATION_METRICS:
                record[metric] = boot.points[same][metric]
                gain = None if name == ALL else boot.gain(distinct[id(fits[ALL])], same, metric)
                record[f"{metric}_gain"] = None if gain is None else list(gain)
            if same != name:
                record["note"] = f"same features as {same}"
        records.append(record)
    return records


def importance_tables(
    booster: lgb.Booster, features: Sequence[str], top: int = TOP_FEATURES
) -> dict[str, list[dict[str, Any]]]:
    """Shares of the total split gain of ``booster`` (trained on ``features``): per family
    and per basis (every one of the catalogue, 0 when it has no feature) and the ``top``
    features. The shares of each grouping add up to 1."""
    from features.catalog import BASES, FAMILIES, FEATURES

    gain = np.asarray(booster.feature_importance(importance_type="gain"), dtype=float)
    total = gain.sum()
    share = gain / total if total > 0 else np.full(len(gain), 1.0 / max(1, len(gain)))
    frame = pd.DataFrame(
        {
            "feature": list(features),
            "family": [FEATURES[f].family for f in features],
            "basis": [FEATURES[f].basis for f in features],
            "share": share,
        }
    )

    def grouped(column: str, keys: Sequence[str]) -> list[dict[str, Any]]:
        by = frame.groupby(column)["share"]
        sums, counts = by.sum(), by.size()
        return [
            {
                column: key,
                "features": int(counts.get(key, 0)),
                "share": float(sums.get(key, 0.0)),
            }
            for key in keys
        ]

    ranked = frame.sort_values("share", ascending=False, kind="stable").head(top)
    return {
        "importance_by_family": grouped("family", FAMILIES),
        "importance_by_basis": grouped("basis", BASES),
        "importance_top_features": [
            {k: (float(v) if k == "share" else v) for k, v in row.items()}
            for row in ranked.to_dict("records")
        ],
    }


def labeled_split(
    folder: Path, settings: Settings, features: Sequence[str], progress: Progress
) -> tuple[RunPlan, SplitParts]:
    """The plan (the pipeline's, with ``features``) and the split labeled frame of ``folder``,
    built as ``training.pipeline.run`` builds them."""
    from churn.engine import open_engine
    from training.config import plan_run
    from training.frame import build_training_frame, load_source
    from training.split import split_by_time

    plan = dataclasses.replace(plan_run(settings), features=tuple(features))
    loaded = load_source(str(folder), settings, plan)
    with progress.step("ablation: building the labeled snapshots"), open_engine(settings) as e:
        data = build_training_frame(loaded, plan, e)
    parts = split_by_time(data.frame, plan.config.split, plan.snapshots.horizon_days, features)
    return plan, parts


def ablation_and_importance(
    parts: SplitParts, plan: RunPlan, workers: int, progress: Progress
) -> dict[str, list[dict[str, Any]]]:
    """Fit every feature set of :func:`feature_sets` (of the split's features) and return the
    ablation table, the importance tables and the split's description."""
    sets = feature_sets(parts.features)
    fits = fit_sets(parts, plan, sets, workers, progress)
    tables = {"ablation": ablation_table(parts, sets, fits, Bootstrap.of(plan), progress)}
    tables |= importance_tables(fits[ALL].booster, fits[ALL].features)
    tables["ablation_split"] = [
        {
            "split": parts.split.description,
            "test_rows": len(parts.test.y),
            "fits": len({id(fit) for fit in fits.values()}),
        }
    ]
    return tables


# ---------------------------------------------------------------------------------- printing


def _num(value: float | None, fmt: str = ".4f") -> str:
    return "" if value is None else format(value, fmt)


def _gain(gain: Sequence[float] | None) -> str:
    if gain is None:
        return ""
    point, low, high = gain
    return f"{point:+.4f} [{low:+.4f}, {high:+.4f}]"


def render_tables(tables: Mapping[str, list[dict[str, Any]]]) -> list[Table]:
    """The ablation and importance tables as rich tables, in that order."""
    ablation = Table(title="Quality: ablation (test period; gain = set - all features, 95 % CI)")
    for col in ("feature set", "features", "rounds", "ROC AUC", "gain", "PR AUC", "gain", "note"):
        ablation.add_column(col, justify="left" if col in ("feature set", "note") else "right")
    for r in tables["ablation"]:
        ablation.add_row(
            r["set"],
            str(r["features"]),
            "" if r["best_iteration"] is None else str(r["best_iteration"]),
            _num(r["roc_auc"]),
            _gain(r["roc_auc_gain"]),
            _num(r["pr_auc"]),
            _gain(r["pr_auc_gain"]),
            r["note"],
        )
    out = [ablation]
    for key, column in (("importance_by_family", "family"), ("importance_by_basis", "basis")):
        table = Table(title=f"Quality: share of the split gain by {column} (all features)")
        for col in (column, "features", "share"):
            table.add_column(col, justify="left" if col == column else "right")
        for r in tables[key]:
            table.add_row(r[column], str(r["features"]), f"{100 * r['share']:.1f} %")
        out.append(table)
    top = Table(title=f"Quality: top {TOP_FEATURES} features by share of the split gain")
    for col in ("feature", "family", "basis", "share"):
        top.add_column(col, justify="right" if col == "share" else "left")
    for r in tables["importance_top_features"]:
        top.add_row(r["feature"], r["family"], r["basis"], f"{100 * r['share']:.1f} %")
    out.append(top)
    return out


# ------------------------------------------------------------------------------------- suite


@contextmanager
def _timed(clock: dict[str, dict[str, float]], step: str) -> Iterator[None]:
    """Wall and CPU seconds of the block (CPU: every thread of this process; on a busy
    machine the wall time grows, the CPU time hardly)."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    clock[step] = {
        "wall": round(time.perf_counter() - wall, 1),
        "cpu": round(time.process_time() - cpu, 1),
    }


def run(
    workdir: Path,
    spec: DemoSpec = LARGE,
    workers: int | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> SuiteOutput:
    from features.catalog import MODEL_FEATURES
    from training.progress import Progress

    if console is None:
        console = Console()
        if not console.is_terminal:  # a log file: wide enough for the tables' columns
            console = Console(width=150)
    clock: dict[str, dict[str, float]] = {}
    started, cpu = time.perf_counter(), time.process_time()
    with _timed(clock, "sample"):
        folder = demo_source(workdir, spec)
    every, today = list(MODEL_FEATURES), today_features(MODEL_FEATURES)
    root = Path(workdir) / "quality"
    runs: dict[str, TrainResult] = {}
    for key, names in (("today", today), ("all", every)):
        console.print(f"quality: training pipeline, {key} features ({len(names)})")
        with _timed(clock, f"pipeline_{key}"):
            settings = bench_settings(workdir, fresh_store(root / key))
            runs[key] = pipeline_run(folder, settings, names, progress)
    ui = Progress(progress)
    with _timed(clock, "ablation_frame"):
        plan, parts = labeled_split(folder, settings, every, ui)
    draws = Bootstrap.of(plan)
    with _timed(clock, "headline_intervals"):
        rows = paired_test_rows(runs["today"].test_frame, runs["all"].test_frame)
        label = f"{spec.accounts:,} accounts, seed {spec.seed}"
        model = {key: r.metrics["model"] for key, r in runs.items()}
        results = headline_results(rows, model["today"], model["all"], draws, label)
    cores = workers or min(2, os.cpu_count() or 1)
    with _timed(clock, "ablation_fits"):
        tables = ablation_and_importance(parts, plan, cores, ui)
    for table in render_tables(tables):
        console.print(table)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    fits = tables["ablation_split"][0]["fits"]
    steps = ", ".join(f"{k} {v['wall']:.0f} s (cpu {v['cpu']:.0f} s)" for k, v in clock.items())
    console.print(f"quality: whole suite {seconds:.0f} s, cpu {cpu_seconds:.0f} s; {steps}")
    results.append(
        Result(
            name=f"quality: whole suite wall time (2 pipeline runs, {fits} ablation fits)",
            unit="s",
            ours=seconds,
            reference=BUDGET_SECONDS,
            reference_name="ten minutes, for scale; no target",
            target=None,
            higher_is_better=False,
            extra={
                "steps_seconds": clock,
                "cpu_seconds": round(cpu_seconds, 1),
                "workers": cores,
                "features_all": len(every),
                "features_today": len(today),
                "split": runs["all"].split.description,
            },
        )
    )
    tables["headline_runs"] = [
        {
            "run": key,
            "features": len(r.feature_names),
            "best_iteration": r.best_iteration,
            "seconds": round(r.seconds, 1),
            **{m: r.metrics["model"][m] for m in HEADLINE_METRICS},
        }
        for key, r in runs.items()
    ]
    return SuiteOutput(results, tables)
