"""Time-based split of labeled snapshots into train, validation and test periods.

Counted back from the latest labeled ``as_of``: the test period is the last ``test_months``,
the validation period the ``validation_months`` that end ``gap`` days before the test period
starts, and training everything up to ``gap`` days before the validation period starts. A row
also needs its whole label window to end on or before the first ``as_of`` of the next period
(``label_window_end <= next_start``), so no label of one period covers a day the next period
is evaluated on; in inactivity mode, where a window can be longer than the horizon, this
drops the rows whose own window is too long. Periods are sets of ``as_of`` dates, so an
account-date is never on two sides. Unlabeled rows (``churned`` NaN) are on no side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churn.errors import ChurnError
from training.config import SplitConfig

_HINT = (
    "use a source with more history, or lower split.test_months / split.validation_months / "
    "split.min_train_months in the training config (--config FILE)"
)


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
    """Boolean row masks (positions of the split frame) and the periods they cover."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    periods: dict[str, Period]
    gap_days: int
    purged_rows: int

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


def time_split(frame: pd.DataFrame, cfg: SplitConfig, horizon_days: int) -> TimeSplit:
    """Split the labeled rows of a snapshot frame by time (see the module docstring).

    Raises ChurnError when a period is empty, training covers fewer than
    ``cfg.min_train_months`` months, or the validation or test period has no churner or no
    non-churner (its metrics would be undefined).
    """
    if frame.empty or "churned" not in frame or frame["churned"].notna().sum() == 0:
        raise ChurnError(
            "no labeled snapshots to train on",
            hint="the label needs churn_events (events mode) or invoices/interactions "
            "(--label-mode inactivity), and history longer than the horizon",
        )
    gap = pd.Timedelta(days=horizon_days if cfg.gap_days is None else cfg.gap_days)
    as_of = pd.to_datetime(frame["as_of"])
    labeled = frame["churned"].notna().to_numpy()
    window_end = _window_end(frame, horizon_days)
    last = as_of[labeled].max()
    one_day = pd.Timedelta(days=1)

    test = labeled & (as_of >= last + one_day - pd.DateOffset(months=cfg.test_months)).to_numpy()
    test_first = _period("test", frame, test).start

    valid_to = test_first - gap
    valid_from = valid_to + one_day - pd.DateOffset(months=cfg.validation_months)
    in_valid = labeled & ((as_of >= valid_from) & (as_of <= valid_to)).to_numpy()
    validation = in_valid & (window_end <= test_first).to_numpy()
    valid_first = _period("validation", frame, validation).start

    in_train = labeled & (as_of <= valid_first - gap).to_numpy()
    train = in_train & (window_end <= valid_first).to_numpy()
    periods = {
        "train": _period("train", frame, train),
        "validation": _period("validation", frame, validation),
        "test": _period("test", frame, test),
    }
    months = as_of[train].dt.to_period("M").nunique()
    if months < cfg.min_train_months:
        raise ChurnError(
            f"the training period covers {months} month(s) "
            f"({periods['train'].describe()}); at least {cfg.min_train_months} are required",
            hint=_HINT,
        )
    for name in ("train", "validation", "test"):
        p = periods[name]
        if p.positives == 0 or p.positives == p.rows:
            what = "no churned account" if p.positives == 0 else "only churned accounts"
            raise ChurnError(
                f"the {name} period ({p.describe()}) has {what}: its metrics are undefined",
                hint=_HINT,
            )
    # Labeled rows on no side: the gaps, and rows whose label window reaches the next period.
    purged = int((labeled & ~(train | validation | test)).sum())
    return TimeSplit(train, validation, test, periods, gap.days, purged)


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
    """Split the labeled rows of ``frame`` by time (:func:`time_split`) and prepare each
    period's model inputs."""
    split = time_split(frame, cfg, horizon_days)
    train, validation, test = split.frames(frame)
    return SplitParts(
        split=split,
        train=PeriodRows.of(train, features),
        validation=PeriodRows.of(validation, features),
        test=PeriodRows.of(test, features),
        features=tuple(features),
    )
