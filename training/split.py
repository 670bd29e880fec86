"""The split of labeled snapshots into train, validation and test rows: the configured time
periods when the data holds them, else the largest leakage-safe split that fits
(docs/split.md).

**Time periods** (:func:`time_split`), counted back from the latest labeled ``as_of``: the test
period is the last ``test_months``, the validation period the ``validation_months`` that end
``gap`` days before the test period starts, and training everything up to ``gap`` days before
the validation period starts. A row also needs its whole label window to end on or before the
first ``as_of`` of the next period (``label_window_end <= next_start``), so no label of one
period covers a day the next period is evaluated on; in inactivity mode, where a window can be
longer than the horizon, this drops the rows whose own window is too long. Periods are sets of
``as_of`` dates, so an account-date is never on two sides. Unlabeled rows (``churned`` NaN) are
on no side.

**Choosing a split** (:func:`choose_split`): the configured periods if they fit; else the same
periods with shorter lengths (test and validation months down to one); else a **group
holdout**: the test period is still the latest labeled months (as many as fit), training is
every labeled row whose label window ends on or before the first test ``as_of`` (one label
window between training and test), and validation is the rows of a fixed share of accounts
(chosen by a hash of the account id, so the same accounts on every run) held out of that
training period: no account is on both train and validation. Only when even one test month
with one training month before it cannot be built is it an error.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from churn.errors import ChurnError
from training.config import SplitConfig

_HINT = (
    "use a source with more history, or lower split.test_months / split.validation_months / "
    "split.min_train_months in the training config (--config FILE)"
)
_SMALLEST_HINT = (
    "use a source with a longer history of labeled dates, a shorter --horizon-days, or (in "
    "inactivity mode) fewer snapshots.purchase_cycles / a lower snapshots.min_silence_days"
)
#: Average days of a month, to count a gap in grid months.
_MONTH_DAYS = 365.25 / 12

TIME = "time"
GROUP_HOLDOUT = "group_holdout"


@dataclass(frozen=True)
class Period:
    """One side of the split: its as_of range and sizes."""

    name: str
    start: pd.Timestamp
    end: pd.Timestamp
    dates: int
    rows: int
    positives: int

    def to_dict(self) -> dict[str, object]:
        return {
            "start": self.start.date().isoformat(),
            "end": self.end.date().isoformat(),
            "as_of_dates": self.dates,
            "rows": self.rows,
            "positives": self.positives,
        }

    def describe(self) -> str:
        return (
            f"{self.start.date()} to {self.end.date()} ({self.dates} dates, {self.rows} rows, "
            f"{self.positives} churned)"
        )


@dataclass(frozen=True)
class TimeSplit:
    """Boolean row masks (positions of the split frame) and the periods they cover, with the
    kind of split (``time`` or ``group_holdout``), whether it is the configured one, and one
    line saying which split it is and why."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    periods: dict[str, Period]
    gap_days: int
    purged_rows: int
    kind: str = TIME
    configured: bool = True
    description: str = ""

    def frames(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """The train, validation and test rows of ``frame`` (the frame that was split)."""
        return (
            frame[self.train].reset_index(drop=True),
            frame[self.validation].reset_index(drop=True),
            frame[self.test].reset_index(drop=True),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            **{name: p.to_dict() for name, p in self.periods.items()},
            "gap_days": self.gap_days,
            "purged_rows": self.purged_rows,
            "kind": self.kind,
            "configured": self.configured,
            "description": self.description,
        }


def _window_end(frame: pd.DataFrame, horizon_days: int) -> pd.Series:
    as_of = pd.to_datetime(frame["as_of"])
    fallback = as_of + pd.Timedelta(days=horizon_days)
    if "label_window_end" not in frame:
        return fallback
    return pd.to_datetime(frame["label_window_end"]).fillna(fallback)


def _period(name: str, frame: pd.DataFrame, mask: np.ndarray) -> Period:
    rows = frame.loc[mask]
    if rows.empty:
        raise ChurnError(f"the {name} period of the time split holds no labeled rows", hint=_HINT)
    as_of = pd.to_datetime(rows["as_of"])
    return Period(
        name=name,
        start=as_of.min(),
        end=as_of.max(),
        dates=int(as_of.nunique()),
        rows=len(rows),
        positives=int((rows["churned"] == 1).sum()),
    )


def _check_labels(frame: pd.DataFrame) -> None:
    if frame.empty or "churned" not in frame or frame["churned"].notna().sum() == 0:
        raise ChurnError(
            "no labeled snapshots to train on",
            hint="the label needs churn_events (events mode) or invoices/interactions "
            "(--label-mode inactivity), and history longer than the horizon",
        )


def _check_classes(periods: dict[str, Period], min_churners: int, hint: str = _HINT) -> None:
    """Training needs both classes; validation and test at least ``min_churners`` churned and
    as many retained rows (their metrics, early stopping and calibration need both)."""
    for name in ("train", "validation", "test"):
        p = periods[name]
        need = 1 if name == "train" else min_churners
        retained = p.rows - p.positives
        if p.positives < need or retained < need:
            if p.positives == 0 or retained == 0:
                what = "no churned account" if p.positives == 0 else "only churned accounts"
                end = "its metrics are undefined"
            else:
                short = "churned" if p.positives < need else "retained"
                what = f"{min(p.positives, retained)} {short} row(s)"
                end = f"at least {need} of each class are required (split.min_churners)"
            raise ChurnError(f"the {name} period ({p.describe()}) has {what}: {end}", hint=hint)


class _Inputs:
    """What every candidate split reads, computed once."""

    def __init__(self, frame: pd.DataFrame, cfg: SplitConfig, horizon_days: int) -> None:
        _check_labels(frame)
        self.frame = frame
        self.cfg = cfg
        self.gap = pd.Timedelta(days=horizon_days if cfg.gap_days is None else cfg.gap_days)
        self.as_of = pd.to_datetime(frame["as_of"])
        self.labeled = frame["churned"].notna().to_numpy()
        self.window_end = _window_end(frame, horizon_days)
        self.last = self.as_of[self.labeled].max()
        months = self.as_of[self.labeled].dt.to_period("M")
        self.labeled_months = int(months.nunique())
        self.first = self.as_of[self.labeled].min()

    def test_mask(self, months: int) -> np.ndarray:
        since = self.last + pd.Timedelta(days=1) - pd.DateOffset(months=months)
        return self.labeled & (self.as_of >= since).to_numpy()

    def gap_months(self) -> int:
        """Grid months a gap leaves out between two periods (at least the gap's length)."""
        return max(0, math.ceil(self.gap.days / _MONTH_DAYS) - 1)


def time_split(frame: pd.DataFrame, cfg: SplitConfig, horizon_days: int) -> TimeSplit:
    """Split the labeled rows of a snapshot frame into the configured time periods (see the
    module docstring).

    Raises ChurnError when a period is empty, training covers fewer than
    ``cfg.min_train_months`` months, training has one class only, or the validation or test
    period has fewer than ``cfg.min_churners`` churned or retained rows.
    """
    return _time_split(_Inputs(frame, cfg, horizon_days), cfg.test_months, cfg.validation_months)


def _time_split(data: _Inputs, test_months: int, validation_months: int) -> TimeSplit:
    frame, cfg, gap, as_of, labeled = data.frame, data.cfg, data.gap, data.as_of, data.labeled
    window_end = data.window_end
    one_day = pd.Timedelta(days=1)

    test = data.test_mask(test_months)
    test_period = _period("test", frame, test)
    test_first = test_period.start

    valid_to = test_first - gap
    valid_from = valid_to + one_day - pd.DateOffset(months=validation_months)
    in_valid = labeled & ((as_of >= valid_from) & (as_of <= valid_to)).to_numpy()
    validation = in_valid & (window_end <= test_first).to_numpy()
    valid_period = _period("validation", frame, validation)
    valid_first = valid_period.start

    in_train = labeled & (as_of <= valid_first - gap).to_numpy()
    train = in_train & (window_end <= valid_first).to_numpy()
    periods = {
        "train": _period("train", frame, train),
        "validation": valid_period,
        "test": test_period,
    }
    months = as_of[train].dt.to_period("M").nunique()
    if months < cfg.min_train_months:
        raise ChurnError(
            f"the training period covers {months} month(s) "
            f"({periods['train'].describe()}); at least {cfg.min_train_months} are required",
            hint=_HINT,
        )
    return _checked(data, (train, validation, test), periods)


def _checked(
    data: _Inputs,
    masks: tuple[np.ndarray, np.ndarray, np.ndarray],
    periods: dict[str, Period],
    kind: str = TIME,
    configured: bool = True,
) -> TimeSplit:
    """The split of the train, validation and test ``masks`` once each period holds both
    classes (:func:`_check_classes`)."""
    _check_classes(periods, data.cfg.min_churners)
    train, validation, test = masks
    # Labeled rows on no side: the gaps, and rows whose label window reaches into the next period.
    purged = int((data.labeled & ~(train | validation | test)).sum())
    return TimeSplit(
        train, validation, test, periods, data.gap.days, purged, kind=kind, configured=configured
    )


def _holdout_accounts(accounts: pd.Series, share: float) -> set[str]:
    """A fixed ``share`` of the distinct ``accounts`` (at least one): those with the smallest
    hash of their id, so the choice depends on the ids only, never on row order or a run."""
    ids = sorted({str(a) for a in accounts})
    digest = sorted((hashlib.sha256(f"holdout:{a}".encode()).hexdigest(), a) for a in ids)
    count = max(1, round(share * len(ids)))
    return {a for _, a in digest[:count]}


def _holdout_split(data: _Inputs, test_months: int, min_train_months: int) -> TimeSplit:
    """The group holdout with the latest ``test_months`` as test (see the module docstring)."""
    frame, cfg, as_of, labeled = data.frame, data.cfg, data.as_of, data.labeled
    test = data.test_mask(test_months)
    test_period = _period("test", frame, test)
    test_first = test_period.start
    pool = (
        labeled
        & (as_of <= test_first - data.gap).to_numpy()
        & (data.window_end <= test_first).to_numpy()
    )
    if not pool.any():
        raise ChurnError("the training period of the holdout split holds no labeled rows")
    months = as_of[pool].dt.to_period("M").nunique()
    if months < min_train_months:
        raise ChurnError(
            f"the training period of the holdout split covers {months} month(s); at least "
            f"{min_train_months} are required"
        )
    accounts = frame["account_id"].astype(str)
    held = _holdout_accounts(accounts[pool], cfg.holdout_share)
    in_held = accounts.isin(held).to_numpy()
    validation = pool & in_held
    train = pool & ~in_held
    periods = {
        "train": _period("train", frame, train),
        "validation": _period("validation", frame, validation),
        "test": test_period,
    }
    return _checked(data, (train, validation, test), periods, kind=GROUP_HOLDOUT, configured=False)


def _needed_months(data: _Inputs, test: int, validation: int) -> int:
    """Labeled months a time split with these lengths needs at least (two gaps)."""
    return test + validation + data.cfg.min_train_months + 2 * data.gap_months()


def _smallest_months(data: _Inputs) -> int:
    """Labeled months the smallest split needs: one test month, one training month, one gap."""
    return 2 + data.gap_months()


def _month(stamp: pd.Timestamp) -> str:
    return stamp.strftime("%Y-%m")


def _describe(split: TimeSplit, data: _Inputs, reason: str) -> str:
    p, cfg = split.periods, data.cfg
    if split.kind == TIME:
        what = (
            f"time periods: train {_month(p['train'].start)} to {_month(p['train'].end)}, "
            f"validation {p['validation'].dates} month(s) to {_month(p['validation'].end)}, "
            f"test {p['test'].dates} month(s) to {_month(p['test'].end)}"
        )
    else:
        what = (
            f"test = last {p['test'].dates} month(s) ({_month(p['test'].start)} to "
            f"{_month(p['test'].end)}); training = {_month(p['train'].start)} to "
            f"{_month(p['train'].end)}; validation = {cfg.holdout_share:.0%} of the accounts "
            "held out of the training period"
        )
    return f"{what}{', ' + reason if reason else ' (as configured)'}"


def choose_split(frame: pd.DataFrame, cfg: SplitConfig, horizon_days: int) -> TimeSplit:
    """The configured time split if the data holds it, else the largest leakage-safe split
    that fits (module docstring), with its ``description`` saying which and why.

    Raises ChurnError when there are no labels, or when even the smallest split (one test
    month, one training month) cannot be built.
    """
    data = _Inputs(frame, cfg, horizon_days)
    try:
        split = _time_split(data, cfg.test_months, cfg.validation_months)
    except ChurnError as exc:
        first_failure = exc
    else:
        return replace(split, description=_describe(split, data, ""))
    need = _needed_months(data, cfg.test_months, cfg.validation_months)
    reason = (
        f"because the configured {cfg.test_months}/{cfg.validation_months}-month split "
        f"needs {need} months of labeled dates and the data holds {data.labeled_months}"
        if data.labeled_months < need
        else f"because the configured split does not fit: {first_failure}"
    )
    for size in range(max(cfg.test_months, cfg.validation_months) - 1, 0, -1):
        try:
            split = _time_split(data, min(cfg.test_months, size), min(cfg.validation_months, size))
        except ChurnError:
            continue
        return replace(split, configured=False, description=_describe(split, data, reason))
    # Group holdout: keep as many training months as the config asks for, up to them, and
    # within that the longest test period.
    for min_train in range(cfg.min_train_months, 0, -1):
        for test_months in range(cfg.test_months, 0, -1):
            try:
                split = _holdout_split(data, test_months, min_train)
            except ChurnError as exc:
                last_failure = exc
                continue
            return replace(split, description=_describe(split, data, reason))
    smallest = _smallest_months(data)
    span = f"{data.first.date()} to {data.last.date()}"
    if data.labeled_months < smallest:
        raise ChurnError(
            f"no training split fits the data: it holds {data.labeled_months} month(s) of "
            f"labeled as_of dates ({span}) and the smallest split needs {smallest} (one test "
            f"month, one training month and the {data.gap.days}-day label window between them)",
            hint=_SMALLEST_HINT,
        )
    raise ChurnError(
        f"no training split fits the data ({data.labeled_months} month(s) of labeled as_of "
        f"dates, {span}): the configured split: {first_failure}; the smallest "
        f"(one test month, accounts held out for validation): {last_failure}",
        hint=_SMALLEST_HINT,
    )


# ------------------------------------------------------------------- the split as model inputs


@dataclass(frozen=True)
class PeriodRows:
    """The rows of one period: the snapshot rows, their model inputs (``features`` order) and
    their labels (1 churned, 0 retained)."""

    frame: pd.DataFrame
    x: np.ndarray
    y: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame, features: Sequence[str]) -> PeriodRows:
        from training.evaluate import feature_matrix

        return cls(frame, feature_matrix(frame, list(features)), frame["churned"].to_numpy(float))


@dataclass(frozen=True)
class SplitParts:
    """A time split of the training frame: the split itself and the rows of each period."""

    split: TimeSplit
    train: PeriodRows
    validation: PeriodRows
    test: PeriodRows
    features: tuple[str, ...]


def split_by_time(
    frame: pd.DataFrame, cfg: SplitConfig, horizon_days: int, features: Sequence[str]
) -> SplitParts:
    """Split the labeled rows of ``frame`` (:func:`choose_split`: the configured time periods,
    else the largest split that fits) and prepare each period's model inputs."""
    split = choose_split(frame, cfg, horizon_days)
    train, validation, test = split.frames(frame)
    return SplitParts(
        split=split,
        train=PeriodRows.of(train, features),
        validation=PeriodRows.of(validation, features),
        test=PeriodRows.of(test, features),
        features=tuple(features),
    )
