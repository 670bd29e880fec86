"""Intervals of the test metrics: a bootstrap by account (docs/metrics.md#intervals).

The test rows are monthly snapshots of the same accounts, so rows of one account are
correlated; resampling rows would treat them as independent and give intervals that are too
narrow. Each resample draws the test **accounts** with replacement (as many as there are),
and every row of a drawn account comes along as often as the account was drawn. Every scorer
is measured on the same draws (paired), so the difference of two scorers has an interval too.
An interval is the percentile interval of the resampled values at ``level``.

A resample is a vector of draw counts per account, so each row carries a weight (its
account's count) and every metric of :data:`training.evaluate.METRICS` is computed as its
weighted form: exactly :func:`training.evaluate.evaluate` on the rows repeated by their
weights (ties in ROC AUC counted 1/2, average precision over distinct scores, equal-frequency
bins at the numpy "linear" quantiles of the repeated scores, the top decile with ties shared
pro rata). Each scorer's rows are sorted once and grouped by distinct score; a block of
resamples is then a few matrix products and cumulative sums, with no per-resample sort.

A resample that holds one class only (no churner, or no retained row) has no ROC AUC; it is
left out of every interval and counted (:attr:`Bootstrap.skipped`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from training.evaluate import METRICS, NOT_PROBABILITIES, TOP_FRACTION, evaluate

#: Bound on the cells of one block of resamples x distinct scores (memory, ~8 bytes each).
_BLOCK_CELLS = 2_000_000
#: Resamples drawn at a time (the draws of a seed do not depend on the data's size).
_DRAW_BLOCK = 100


@dataclass(frozen=True)
class Bootstrap:
    """Each scorer's metrics on every resample (``values[scorer][metric]``, one value per
    resample; NaN for a skipped resample or an undefined metric), with the resampling's
    facts."""

    values: dict[str, dict[str, np.ndarray]]
    samples: int
    accounts: int
    skipped: int
    seed: int

    @property
    def used(self) -> int:
        """Resamples that hold both classes (those the intervals are taken over)."""
        return self.samples - self.skipped

    def interval(self, scorer: str, metric: str, level: float) -> tuple[float, float]:
        """The percentile interval of ``scorer``'s ``metric`` at ``level``."""
        return percentile_interval(self.values[scorer][metric], level)

    def gain_interval(self, base: str, new: str, metric: str, level: float) -> tuple[float, float]:
        """The percentile interval at ``level`` of ``new``'s ``metric`` minus ``base``'s, both
        measured on each resample (paired)."""
        return percentile_interval(self.values[new][metric] - self.values[base][metric], level)

    def intervals(self, level: float) -> dict[str, dict[str, tuple[float, float]]]:
        """``{scorer: {metric: (low, high)}}`` at ``level``."""
        return {
            scorer: {m: percentile_interval(v, level) for m, v in metrics.items()}
            for scorer, metrics in self.values.items()
        }


@dataclass(frozen=True)
class IntervalNote:
    """How a run's intervals were made, for the card, the report and the summary."""

    samples: int
    level: float
    accounts: int
    skipped: int

    def describe(self) -> str:
        """One sentence: ``95 % bootstrap intervals by account (200 resamples of the 1,203
        test accounts)``, naming the skipped resamples when there are any."""
        text = (
            f"{100 * self.level:g} % bootstrap intervals by account ({self.samples} resamples "
            f"of the {self.accounts:,} test accounts"
        )
        if self.skipped:
            text += f"; {self.skipped} with one class only left out"
        return text + ")"

    def to_dict(self) -> dict[str, float | int]:
        return {
            "samples": self.samples,
            "level": self.level,
            "accounts": self.accounts,
            "skipped": self.skipped,
        }


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of the finite ``values`` (NaN, NaN when
    there are none)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        return (float("nan"), float("nan"))
    tail = (100.0 - 100.0 * level) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return (float(low), float(high))


def account_codes(accounts: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's account index, accounts numbered in sorted order (so the draws depend on
    the accounts and the seed, not on the order of the rows), and the number of accounts."""
    codes, uniques = pd.factorize(pd.Series(np.asarray(accounts)), sort=True)
    if (codes < 0).any():
        raise ValueError("every row needs an account (no missing account ids)")
    return codes.astype(np.intp), len(uniques)


def draw_blocks(n_accounts: int, samples: int, seed: int) -> Iterator[np.ndarray]:
    """``samples`` draws of ``n_accounts`` accounts with replacement, as counts per account
    (resamples x accounts), in blocks of at most :data:`_DRAW_BLOCK` resamples from one
    seeded generator (memory stays bounded however many resamples are asked for)."""
    rng = np.random.default_rng(seed)
    uniform = np.full(n_accounts, 1.0 / n_accounts)
    for start in range(0, samples, _DRAW_BLOCK):
        yield rng.multinomial(n_accounts, uniform, size=min(_DRAW_BLOCK, samples - start))


def draw_accounts(accounts: np.ndarray, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's account index and all the draws of :func:`bootstrap_metrics` for these
    accounts and ``seed``, as counts (resamples x accounts)."""
    codes, n_accounts = account_codes(accounts)
    return codes, np.vstack(list(draw_blocks(n_accounts, samples, seed)))


def bootstrap_metrics(
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    accounts: np.ndarray,
    revenue: np.ndarray | None = None,
    *,
    samples: int,
    seed: int,
    bins: int = 10,
) -> Bootstrap:
    """Every metric of :data:`METRICS` for each scorer on ``samples`` resamples of the
    accounts (the same resamples for every scorer). Scorers in
    :data:`training.evaluate.NOT_PROBABILITIES` get NaN Brier score and calibration error,
    as in the point figures."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    if np.isnan(y).any() or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if len(accounts) != n:
        raise ValueError(f"{len(accounts)} account ids for {n} rows")
    if samples < 1:
        raise ValueError("samples must be at least 1")
    account_of, n_accounts = account_codes(accounts)
    rev = (
        np.zeros(n)
        if revenue is None
        else np.nan_to_num(np.asarray(revenue, dtype=float), nan=0.0).clip(min=0)
    )
    prepared = {}
    for name, score in scores.items():
        p = np.asarray(score, dtype=float)
        if p.shape != y.shape:
            raise ValueError(f"scores of {name!r} {p.shape} and labels {y.shape} differ")
        if np.isnan(p).any():
            raise ValueError(f"scores of {name!r} must not contain NaN")
        prepared[name] = _Sorted.of(y, p, rev, account_of, n_accounts)
    # Totals of each resample: rows, churners, revenue of the churners.
    per_account = np.zeros((n_accounts, 3))
    np.add.at(per_account, account_of, np.column_stack([np.ones(n), y, rev * y]))
    values = {name: {m: np.full(samples, np.nan) for m in METRICS} for name in scores}
    usable = np.zeros(samples, dtype=bool)
    start = 0
    for counts in draw_blocks(n_accounts, samples, seed):
        block = slice(start, start + len(counts))
        start += len(counts)
        rows, positives, at_risk = (counts @ per_account).T
        usable[block] = (positives > 0) & (positives < rows)
        for name, sorted_scores in prepared.items():
            sorted_scores.measure(counts, rows, positives, at_risk, bins, values[name], block)
    for name, out in values.items():
        if revenue is None:
            out["revenue_captured_top_decile"][:] = np.nan
        if name in NOT_PROBABILITIES:
            out["brier"][:] = np.nan
            out["ece"][:] = np.nan
        for metric in METRICS:
            out[metric][~usable] = np.nan
    return Bootstrap(
        values=values,
        samples=samples,
        accounts=n_accounts,
        skipped=int((~usable).sum()),
        seed=seed,
    )


def account_bootstrap(
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    accounts: np.ndarray,
    revenue: np.ndarray | None,
    *,
    samples: int,
    level: float,
    seed: int,
    bins: int = 10,
) -> dict[str, dict[str, tuple[float, float]]]:
    """``{scorer: {metric: (low, high)}}``: the ``level`` percentile interval of every metric
    of :data:`METRICS` over ``samples`` resamples of the accounts with replacement (every row
    of a drawn account comes along), the same resamples for every scorer. NaN bounds where
    the metric is undefined (see :func:`bootstrap_metrics`)."""
    boot = bootstrap_metrics(y, scores, accounts, revenue, samples=samples, seed=seed, bins=bins)
    return boot.intervals(level)


def paired_gain_interval(
    y: np.ndarray,
    base: np.ndarray,
    new: np.ndarray,
    accounts: np.ndarray,
    *,
    metric: str,
    samples: int,
    level: float,
    seed: int,
    bins: int = 10,
) -> tuple[float, float, float]:
    """``(gain, low, high)``: ``metric`` of ``new`` minus that of ``base`` on the same rows,
    and the ``level`` percentile interval of that difference over ``samples`` resamples of
    the accounts, both scorers measured on each resample (paired)."""
    if metric not in METRICS or metric == "revenue_captured_top_decile":
        raise ValueError(f"paired gain of {metric!r}: choose one of {METRICS[:-1]}")
    point = evaluate(y, new, bins=bins)[metric] - evaluate(y, base, bins=bins)[metric]
    boot = bootstrap_metrics(
        y, {"base": base, "new": new}, accounts, samples=samples, seed=seed, bins=bins
    )
    low, high = boot.gain_interval("base", "new", metric, level)
    return (float(point), low, high)


# ----------------------------------------------------------------------- weighted metrics


@dataclass(frozen=True)
class _Sorted:
    """One scorer's rows grouped by distinct score (ascending), as (quantity, distinct score)
    x account sums of rows, churners, scores and churners' revenue: a resample's sums by
    distinct score are these times its draw counts."""

    values: np.ndarray
    by_group: sparse.csr_matrix
    squared: np.ndarray  # each account's sum of (clip(p) - y)^2

    @classmethod
    def of(
        cls, y: np.ndarray, p: np.ndarray, rev: np.ndarray, account_of: np.ndarray, accounts: int
    ) -> _Sorted:
        order = np.argsort(p, kind="stable")
        ps = p[order]
        first = np.r_[True, ps[1:] != ps[:-1]]
        group = np.empty(len(p), dtype=np.intp)
        group[order] = np.cumsum(first) - 1
        values = ps[first]
        n_groups = len(values)
        quantities = (np.ones(len(p)), y, p, y * rev)
        by_group = sparse.csr_matrix(
            (
                np.concatenate(quantities),
                (
                    np.concatenate([group + k * n_groups for k in range(len(quantities))]),
                    np.tile(account_of, len(quantities)),
                ),
            ),
            shape=(len(quantities) * n_groups, accounts),
        )
        squared = np.zeros(accounts)
        np.add.at(squared, account_of, (np.clip(p, 0, 1) - y) ** 2)
        return cls(values, by_group, squared)

    def measure(
        self,
        counts: np.ndarray,
        rows: np.ndarray,
        positives: np.ndarray,
        at_risk: np.ndarray,
        bins: int,
        out: dict[str, np.ndarray],
        into: slice,
    ) -> None:
        """Every metric on the resamples ``counts`` (resamples x accounts, with their totals
        of rows, churners and churners' revenue), written to ``out[metric][into]``. The sums
        by distinct score are laid out (distinct scores, resamples), so the cumulative sums
        run over contiguous rows."""
        n_groups = len(self.values)
        step = max(1, _BLOCK_CELLS // max(4 * n_groups, 1))
        q = np.linspace(0, 1, bins + 1)[1:-1]
        for start in range(0, len(counts), step):
            part = slice(start, min(start + step, len(counts)))
            target = slice(into.start + part.start, into.start + part.stop)
            c = np.ascontiguousarray(counts[part].T, dtype=float)  # accounts x resamples
            sums = np.asarray(self.by_group @ c).reshape(4, n_groups, -1)
            cums = np.cumsum(sums, axis=1)
            w, pos, _, rpos = sums
            cum_w, cum_pos, cum_p, cum_rpos = cums
            total, tp, risk = rows[part], positives[part], at_risk[part]
            with np.errstate(invalid="ignore", divide="ignore"):
                # ROC AUC: each churner counts the retained rows scored below it, ties 1/2.
                neg = w - pos
                neg_below = (cum_w - cum_pos) - neg
                pairs = (pos * (neg_below + 0.5 * neg)).sum(axis=0)
                out["roc_auc"][target] = pairs / (tp * (total - tp))
                # Average precision: the precision at each distinct score from the top,
                # weighted by the churners recalled there.
                pos_at_or_above = tp - cum_pos + pos
                rows_at_or_above = total - cum_w + w
                precision = np.where(rows_at_or_above > 0, pos_at_or_above / rows_at_or_above, 0.0)
                out["pr_auc"][target] = (pos * precision).sum(axis=0) / tp
                out["brier"][target] = (self.squared @ c) / total
                out["ece"][target] = _ece(self.values, cum_w, cum_pos - cum_p, total, q)
                captured, revenue = _top_decile(cum_w, pos, rpos, cum_pos, cum_rpos, total)
                k = TOP_FRACTION * total
                out["lift_top_decile"][target] = captured / k / (tp / total)
                out["recall_top_decile"][target] = captured / tp
                out["revenue_captured_top_decile"][target] = np.where(
                    risk > 0, revenue / risk, np.nan
                )


def _ece(
    values: np.ndarray, cum_w: np.ndarray, cum_gap: np.ndarray, total: np.ndarray, q: np.ndarray
) -> np.ndarray:
    """ECE of each resample (column): bin edges at the "linear" quantiles ``q`` of its
    repeated scores (as ``np.quantile`` computes them), a score equal to an edge in the lower
    bin (as ``np.searchsorted(edges, p, side="left")``), then ``sum_b |sum(y - p)_b| / n``;
    ``cum_gap`` is the cumulative sum of ``y - p`` over the distinct scores."""
    n_groups, samples = cum_w.shape
    # Each bin's last distinct score (index), per resample; the last bin ends at the top.
    ends = np.empty((len(q) + 1, samples), dtype=np.intp)
    ends[-1] = n_groups - 1
    for i in range(samples):
        n = total[i]
        cw = np.ascontiguousarray(cum_w[:, i])
        virtual = (n - 1) * q
        lo = np.floor(virtual)
        gamma = virtual - lo
        last = virtual >= n - 1
        lo_idx = np.where(last, n - 1, lo)
        hi_idx = np.where(last, n - 1, lo + 1)
        # Repeated position j lies in the first distinct score whose cumulative weight
        # exceeds j.
        a = values[np.searchsorted(cw, lo_idx, side="right")]
        b = values[np.searchsorted(cw, hi_idx, side="right")]
        diff = b - a
        edges = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
        ends[:-1, i] = np.searchsorted(values, edges, side="right") - 1
    ends = np.maximum.accumulate(ends, axis=0)
    at_end = np.take_along_axis(cum_gap, ends, axis=0)
    before = np.vstack([np.zeros((1, samples)), np.where(ends[:-1] >= 0, at_end[:-1], 0.0)])
    return np.abs(at_end - before).sum(axis=0) / total


def _top_decile(
    cum_w: np.ndarray,
    pos: np.ndarray,
    rpos: np.ndarray,
    cum_pos: np.ndarray,
    cum_rpos: np.ndarray,
    total: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Churners and their revenue in the top decile of each resample (column), as
    :func:`training.evaluate.top_weights` counts them: rows above the cut-off score fully,
    rows tied at it sharing the remaining places."""
    k = TOP_FRACTION * total
    take = np.minimum(np.ceil(k), total)
    # The cut-off is the score at repeated position take - 1 from the top, that is at
    # position total - take from the bottom.
    cut = np.array(
        [
            np.searchsorted(np.ascontiguousarray(cum_w[:, i]), total[i] - take[i], side="right")
            for i in range(len(total))
        ]
    )
    cols = np.arange(len(total))
    at_or_below = cum_w[cut, cols]
    tied = at_or_below - np.where(cut > 0, cum_w[np.maximum(cut - 1, 0), cols], 0.0)
    share = (k - (total - at_or_below)) / tied
    pos_above = cum_pos[-1] - cum_pos[cut, cols]
    rpos_above = cum_rpos[-1] - cum_rpos[cut, cols]
    return pos_above + share * pos[cut, cols], rpos_above + share * rpos[cut, cols]
