"""The time split: latest dates for test, no account-date on two sides, a one-horizon gap, and
no label window reaching into the next period."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from churn.errors import ChurnError
from training.config import SplitConfig
from training.split import time_split


def monthly_frame(
    months: int,
    accounts: int = 20,
    horizon: int = 90,
    unlabeled_tail: int = 3,
    extra_window: np.ndarray | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """A snapshot-shaped frame: every account at every month start, labels 0/1 (a few 1s per
    date), the last ``unlabeled_tail`` months unlabeled, label windows = as_of + horizon
    (+ ``extra_window`` days per row, as in inactivity mode)."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2022-01-01", periods=months, freq="MS")
    as_of = np.repeat(dates.to_numpy(), accounts)
    ids = np.tile([f"A-{i}" for i in range(accounts)], months)
    churned = (rng.random(len(as_of)) < 0.2).astype(float)
    churned[np.arange(len(as_of)) % accounts == 0] = 1.0  # every date has a churner ...
    churned[np.arange(len(as_of)) % accounts == 1] = 0.0  # ... and a non-churner
    churned[as_of >= dates[months - unlabeled_tail].to_datetime64()] = np.nan
    extra = np.zeros(len(as_of)) if extra_window is None else extra_window
    window_end = pd.to_datetime(as_of) + pd.to_timedelta(horizon + extra, unit="D")
    return pd.DataFrame(
        {"account_id": ids, "as_of": as_of, "churned": churned, "label_window_end": window_end}
    )


def test_test_period_is_the_latest_labeled_months_and_validation_precedes_it():
    frame = monthly_frame(36)
    split = time_split(frame, SplitConfig(test_months=6, validation_months=6), horizon_days=90)
    train, valid, test = split.frames(frame)
    labeled_dates = sorted(frame.loc[frame["churned"].notna(), "as_of"].unique())
    assert sorted(test["as_of"].unique()) == labeled_dates[-6:]
    assert valid["as_of"].nunique() == 6
    assert train["as_of"].max() < valid["as_of"].min() < valid["as_of"].max() < test["as_of"].min()
    assert split.periods["test"].rows == len(test)


def test_no_unlabeled_row_is_used():
    frame = monthly_frame(30, unlabeled_tail=4)
    split = time_split(frame, SplitConfig(), horizon_days=90)
    used = split.train | split.validation | split.test
    assert frame.loc[used, "churned"].notna().all()


def test_gap_of_one_horizon_between_periods():
    frame = monthly_frame(36)
    split = time_split(frame, SplitConfig(), horizon_days=90)
    train, valid, test = split.frames(frame)
    assert (valid["as_of"].min() - train["as_of"].max()).days >= 90
    assert (test["as_of"].min() - valid["as_of"].max()).days >= 90
    assert split.gap_days == 90
    assert split.purged_rows > 0


def test_gap_days_setting_overrides_the_horizon():
    frame = monthly_frame(36)
    split = time_split(frame, SplitConfig(gap_days=150), horizon_days=90)
    train, valid, test = split.frames(frame)
    assert (test["as_of"].min() - valid["as_of"].max()).days >= 150
    assert (valid["as_of"].min() - train["as_of"].max()).days >= 150


def test_rows_with_long_label_windows_are_dropped_before_the_next_period():
    # In inactivity mode a row's window can exceed the horizon: such a row must not be kept
    # when its window reaches into the next period, even if its as_of is before the gap.
    frame = monthly_frame(36, seed=1)
    frame["label_window_end"] += pd.to_timedelta(
        np.where(np.arange(len(frame)) % 3 == 0, 200, 0), unit="D"
    )
    split = time_split(frame, SplitConfig(), horizon_days=90)
    train, valid, test = split.frames(frame)
    assert train["label_window_end"].max() <= valid["as_of"].min()
    assert valid["label_window_end"].max() <= test["as_of"].min()


@pytest.mark.parametrize(
    ("months", "message"),
    [(16, "train period of the time split holds no labeled rows"), (22, r"covers 3 month\(s\)")],
)
def test_too_little_history_for_the_configured_periods_is_a_clear_error(months, message):
    # time_split builds the configured periods or refuses; the trainer then falls back to a
    # smaller split (test_split_choice.py).
    frame = monthly_frame(months)
    with pytest.raises(ChurnError, match=message) as info:
        time_split(frame, SplitConfig(), horizon_days=90)
    assert "test_months" in info.value.hint


def test_a_period_without_churners_is_a_clear_error():
    frame = monthly_frame(36)
    frame.loc[frame["churned"].notna(), "churned"] = 0.0
    with pytest.raises(ChurnError, match="no churned account"):
        time_split(frame, SplitConfig(), horizon_days=90)


def test_no_labels_at_all_is_a_clear_error():
    frame = monthly_frame(36)
    frame["churned"] = np.nan
    with pytest.raises(ChurnError, match="no labeled snapshots"):
        time_split(frame, SplitConfig(), horizon_days=90)


@settings(max_examples=40, deadline=None)
@given(
    months=st.integers(24, 60),
    test_months=st.integers(1, 6),
    validation_months=st.integers(1, 6),
    horizon=st.sampled_from([30, 60, 90, 180]),
    extra=st.integers(0, 200),
    seed=st.integers(0, 1000),
)
def test_split_invariants(months, test_months, validation_months, horizon, extra, seed):
    rng = np.random.default_rng(seed)
    accounts = 8
    extra_window = np.where(rng.random(months * accounts) < 0.3, extra, 0)
    frame = monthly_frame(
        months, accounts, horizon=horizon, unlabeled_tail=1, extra_window=extra_window, seed=seed
    )
    cfg = SplitConfig(
        test_months=test_months, validation_months=validation_months, min_train_months=1
    )
    try:
        split = time_split(frame, cfg, horizon_days=horizon)
    except ChurnError:
        return  # too little history for these settings: refused, never a bad split
    masks = (split.train, split.validation, split.test)
    # No row, and no account-date, on two sides.
    assert sum(m.astype(int) for m in masks).max() == 1
    keys = [set(zip(frame.loc[m, "account_id"], frame.loc[m, "as_of"], strict=True)) for m in masks]
    assert not (keys[0] & keys[1]) and not (keys[1] & keys[2]) and not (keys[0] & keys[2])
    train, valid, test = split.frames(frame)
    # Gap of one horizon and no label window reaching into the next period.
    assert (valid["as_of"].min() - train["as_of"].max()).days >= horizon
    assert (test["as_of"].min() - valid["as_of"].max()).days >= horizon
    assert train["label_window_end"].max() <= valid["as_of"].min()
    assert valid["label_window_end"].max() <= test["as_of"].min()
    # The test period is the latest labeled dates.
    labeled = frame.loc[frame["churned"].notna(), "as_of"]
    assert test["as_of"].max() == labeled.max()
    assert test["as_of"].nunique() == min(test_months, labeled.nunique())
