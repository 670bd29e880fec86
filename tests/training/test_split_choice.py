"""Choosing the split: the configured time periods when they fit, else shorter periods, else a
group holdout, and an error naming the months only when even the smallest split cannot be built.
Every split the trainer can choose keeps training and validation labels before the test period
and no account-date on two sides."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from churn.errors import ChurnError
from tests.training.test_split import monthly_frame
from training.config import SplitConfig
from training.split import GROUP_HOLDOUT, TIME, TimeSplit, choose_split, time_split


def _keys(frame: pd.DataFrame, mask: np.ndarray) -> set[tuple[str, pd.Timestamp]]:
    return set(zip(frame.loc[mask, "account_id"], frame.loc[mask, "as_of"], strict=True))


def assert_leakage_safe(frame: pd.DataFrame, split: TimeSplit) -> None:
    """No row or account-date on two sides, only labeled rows, every training and validation
    label known before the test period, the test period the latest labeled dates, and in a
    holdout no account on both train and validation."""
    masks = (split.train, split.validation, split.test)
    assert sum(m.astype(int) for m in masks).max() == 1
    keys = [_keys(frame, m) for m in masks]
    assert not (keys[0] & keys[1]) and not (keys[1] & keys[2]) and not (keys[0] & keys[2])
    used = split.train | split.validation | split.test
    assert frame.loc[used, "churned"].notna().all()
    train, valid, test = split.frames(frame)
    test_first = test["as_of"].min()
    assert train["label_window_end"].max() <= test_first
    assert valid["label_window_end"].max() <= test_first
    assert test["as_of"].max() == frame.loc[frame["churned"].notna(), "as_of"].max()
    if split.kind == TIME:
        assert train["label_window_end"].max() <= valid["as_of"].min()
        assert train["as_of"].max() < valid["as_of"].min()
    else:
        assert split.kind == GROUP_HOLDOUT
        assert not set(train["account_id"]) & set(valid["account_id"])
    for rows in (valid, test):
        assert 0 < rows["churned"].sum() < len(rows)


def test_the_configured_split_is_chosen_when_it_fits():
    frame = monthly_frame(36)
    split = choose_split(frame, SplitConfig(), horizon_days=90)
    strict = time_split(frame, SplitConfig(), horizon_days=90)
    assert (split.kind, split.configured) == (TIME, True)
    for chosen, configured in zip(
        (split.train, split.validation, split.test),
        (strict.train, strict.validation, strict.test),
        strict=True,
    ):
        assert np.array_equal(chosen, configured)
    assert split.description.startswith("time periods: train 2022-01 to")
    assert split.description.endswith("(as configured)")
    assert split.to_dict()["kind"] == TIME


def test_a_source_too_short_for_the_periods_gets_shorter_time_periods():
    # 18 labeled months: 6/6 with 6 training months and two 90-day gaps needs 22, 4/4 needs 18.
    frame = monthly_frame(21)
    split = choose_split(frame, SplitConfig(), horizon_days=90)
    assert (split.kind, split.configured) == (TIME, False)
    assert split.periods["test"].dates == 4
    assert split.periods["validation"].dates == 4
    assert "the configured 6/6-month split needs 22 months" in split.description
    assert "the data holds 18" in split.description
    assert_leakage_safe(frame, split)


def test_a_shorter_source_gets_a_group_holdout_with_a_fifth_of_the_accounts():
    # 11 labeled months: no time split with 6 training months fits; a holdout with 3 test
    # months keeps 6 training months (a 90-day window leaves out two month starts).
    frame = monthly_frame(14, accounts=40)
    split = choose_split(frame, SplitConfig(), horizon_days=90)
    assert (split.kind, split.configured) == (GROUP_HOLDOUT, False)
    assert split.periods["test"].dates == 3
    train, valid, _ = split.frames(frame)
    assert train["as_of"].dt.to_period("M").nunique() == 6
    assert valid["account_id"].nunique() == 8  # 20 % of 40
    assert train["account_id"].nunique() == 32
    assert split.description.startswith("test = last 3 month(s)")
    assert "20% of the accounts held out of the training period" in split.description
    assert "needs 22 months of labeled dates and the data holds 11" in split.description
    assert_leakage_safe(frame, split)


def test_the_held_out_accounts_do_not_depend_on_row_order():
    frame = monthly_frame(14, accounts=40)
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    held = [
        set(f.loc[choose_split(f, SplitConfig(), horizon_days=90).validation, "account_id"])
        for f in (frame, shuffled)
    ]
    assert held[0] == held[1]


def test_validation_with_too_few_churners_is_not_chosen():
    frame = monthly_frame(36)
    with pytest.raises(ChurnError, match="at least 1000 of each class"):
        time_split(frame, SplitConfig(min_churners=1000), horizon_days=90)


def test_too_short_even_for_the_smallest_split_names_the_months():
    # 3 labeled months: one test month, two left out by the 90-day window, one training month
    # need 4.
    frame = monthly_frame(6)
    with pytest.raises(ChurnError) as info:
        choose_split(frame, SplitConfig(), horizon_days=90)
    message = str(info.value)
    assert "holds 3 month(s) of labeled as_of dates" in message
    assert "the smallest split needs 4" in message
    assert "\n" not in message
    assert "--horizon-days" in info.value.hint


def test_one_class_only_is_still_an_error_naming_the_class():
    frame = monthly_frame(36)
    frame.loc[frame["churned"].notna(), "churned"] = 0.0
    with pytest.raises(ChurnError, match="no training split fits the data.*no churned account"):
        choose_split(frame, SplitConfig(), horizon_days=90)


# -------------------------------------------------------------------------------- property


def cycle_frame(
    months: int, horizon: int, cycles: list[int], silence_cycles: int, seed: int
) -> pd.DataFrame:
    """Snapshot-shaped rows of accounts with purchase cycles ``cycles`` (days) at every month
    start of ``months``, with inactivity-style label windows ``max(horizon, silence_cycles x
    cycle)`` and rows whose window passes the end of the data unlabeled."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2023-01-01", periods=months, freq="MS")
    data_end = dates[-1] + pd.Timedelta(days=27)
    rows = []
    for i, cycle in enumerate(cycles):
        window = pd.Timedelta(days=max(horizon, silence_cycles * cycle))
        for d in dates:
            end = d + window
            label = float(rng.random() < 0.3) if end <= data_end else np.nan
            rows.append((f"A-{i:03d}", d, label, end))
    frame = pd.DataFrame(rows, columns=["account_id", "as_of", "churned", "label_window_end"])
    # Every labeled date has a churner and a retained account (as in a real portfolio).
    first_two = frame["account_id"].isin(["A-000", "A-001"]) & frame["churned"].notna()
    frame.loc[first_two, "churned"] = (frame.loc[first_two, "account_id"] == "A-000").astype(float)
    return frame


@settings(max_examples=60, deadline=None)
@given(
    months=st.integers(4, 48),
    horizon=st.sampled_from([30, 60, 90, 180]),
    cycles=st.lists(st.integers(7, 150), min_size=12, max_size=40),
    silence_cycles=st.integers(1, 4),
    test_months=st.integers(1, 6),
    validation_months=st.integers(1, 6),
    min_train_months=st.integers(1, 6),
    gap_days=st.none() | st.integers(0, 120),
    seed=st.integers(0, 1000),
)
def test_every_split_the_trainer_can_choose_is_leakage_safe(
    months,
    horizon,
    cycles,
    silence_cycles,
    test_months,
    validation_months,
    min_train_months,
    gap_days,
    seed,
):
    frame = cycle_frame(months, horizon, cycles, silence_cycles, seed)
    cfg = SplitConfig(
        test_months=test_months,
        validation_months=validation_months,
        min_train_months=min_train_months,
        gap_days=gap_days,
        min_churners=1,
    )
    try:
        configured = time_split(frame, cfg, horizon_days=horizon)
    except ChurnError:
        configured = None
    try:
        split = choose_split(frame, cfg, horizon_days=horizon)
    except ChurnError as exc:
        assert configured is None
        assert "no labeled snapshots" in str(exc) or "no training split fits" in str(exc)
        return
    assert_leakage_safe(frame, split)
    if configured is not None:  # the configured split is used whenever it fits
        assert split.configured and split.kind == TIME
        assert np.array_equal(split.train, configured.train)
        assert np.array_equal(split.validation, configured.validation)
        assert np.array_equal(split.test, configured.test)
    else:
        assert not split.configured
        assert "because the configured" in split.description
