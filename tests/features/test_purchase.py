"""Purchase-cycle features: values on hand-built invoices worked out by hand, the NaN rules,
their sentences, and the point-in-time and account-subset properties on dense invoices."""

from __future__ import annotations

import itertools
import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churn.settings import SnapshotSettings
from features.catalog import FEATURES, family_features
from features.contract import Tables
from features.snapshots import build_features, build_snapshots, observed_end
from tests.support.purchase_reference import purchase_reference
from tests.support.signal_tables import make_tables

AS_OF = date(2024, 7, 1)
PURCHASE = [f.name for f in family_features("purchase")]


def rows(tables: Tables, as_of: date = AS_OF) -> pd.DataFrame:
    frame = build_snapshots(tables, [as_of], SnapshotSettings(), with_health=False)
    return frame.set_index("account_id")


_IDS = itertools.count()


def invoice(account: str, issued: str, amount: float) -> dict:
    return dict(account_id=account, invoice_id=f"I{next(_IDS)}", issued_at=issued,
                due_at=issued, amount=amount)  # fmt: skip


ACCOUNTS = [dict(account_id=a, started_at="2020-01-01") for a in "ABCD"]


def hand_built() -> Tables:
    return make_tables(
        accounts=ACCOUNTS,
        invoices=[
            # A: purchases on 1 Jan (two invoices), 10 Feb, 1 Mar, 30 Apr and 1 Jun 2024
            invoice("A", "2024-01-01", 300.0),
            invoice("A", "2024-01-01", 100.0),
            invoice("A", "2024-02-10", 200.0),
            invoice("A", "2024-03-01", 100.0),
            invoice("A", "2024-04-30", 400.0),
            invoice("A", "2024-06-01", 500.0),
            invoice("A", "2024-07-01", 9999.0),  # on as_of: not yet known
            invoice("A", "2024-09-01", 1.0),
            # B: one purchase
            invoice("B", "2024-05-02", 800.0),
            # C: three purchases, three invoices
            invoice("C", "2024-03-01", 100.0),
            invoice("C", "2024-04-01", 100.0),
            invoice("C", "2024-06-01", 400.0),
            # D: invoices only after as_of
            invoice("D", "2024-07-02", 50.0),
        ],
    )


def test_values_on_hand_built_invoices():
    got = rows(hand_built())
    a = got.loc["A"]
    # gaps between the five purchase days: 40, 20 (leap February), 60 and 32 days
    assert a.purchases_to_date == 5
    assert a.days_since_last_purchase == 30
    assert a.purchase_gap_days == 36  # median of 20, 32, 40, 60
    assert a.purchase_cycles_since_last == pytest.approx(30 / 36)
    # mean 38; squared deviations 4 + 324 + 484 + 36 = 848 over 4 gaps
    assert a.purchase_gap_variation == pytest.approx(math.sqrt(848 / 4) / 38)
    assert a.months_since_first_purchase == pytest.approx(182 / 30.4375)
    assert a.avg_invoice_value == pytest.approx(1600 / 6)
    # by time (same day: by amount): 100, 300, 200 | 100, 400, 500
    assert a.invoice_value_trend == pytest.approx((1000 / 3 - 200) / 200)

    b = got.loc["B"]
    assert b.purchases_to_date == 1 and b.days_since_last_purchase == 60
    assert b.months_since_first_purchase == pytest.approx(60 / 30.4375)
    assert b.avg_invoice_value == 800
    for name in (
        "purchase_gap_days",
        "purchase_cycles_since_last",
        "purchase_gap_variation",
        "invoice_value_trend",
    ):
        assert np.isnan(b[name]), name  # one purchase: no gap, no cycle, no trend

    c = got.loc["C"]
    assert c.purchases_to_date == 3 and c.purchase_gap_days == (31 + 61) / 2
    assert c.purchase_cycles_since_last == pytest.approx(30 / 46)
    assert c.purchase_gap_variation == pytest.approx(15 / 46)  # gaps 31, 61: sd 15, mean 46
    assert c.avg_invoice_value == 200 and np.isnan(c.invoice_value_trend)  # three invoices

    d = got.loc["D"]
    assert d.purchases_to_date == 0  # the table is there: none yet
    for name in set(PURCHASE) - {"purchases_to_date"}:
        assert np.isnan(d[name]), name


def test_the_usual_gap_is_the_one_the_inactivity_window_scales():
    # window N = max(20-day floor, 1 x the 46-day usual gap): C, silent for 30 days on 1 July,
    # is active then only by its usual gap, and no longer 50 days after its last purchase
    cfg = SnapshotSettings(label_mode="inactivity", min_silence_days=20, purchase_cycles=1)
    frame = build_snapshots(hand_built(), [AS_OF, date(2024, 7, 21)], cfg, with_health=False)
    active = frame[frame.account_id == "C"].set_index("as_of")
    assert list(active.index) == [pd.Timestamp(AS_OF)]
    assert active.purchase_gap_days.iloc[0] == 46


def test_without_an_invoices_table_every_purchase_feature_is_absent():
    tables = make_tables(accounts=ACCOUNTS, interactions=[])
    got = rows(tables)
    assert got[PURCHASE].isna().all().all()


def test_invoices_without_amounts_leave_only_the_value_features_unknown():
    tables = make_tables(
        accounts=ACCOUNTS[:1],
        invoices={
            "account_id": ["A", "A"],
            "invoice_id": ["I1", "I2"],
            "issued_at": ["2024-05-01", "2024-06-01"],
            "due_at": ["2024-05-01", "2024-06-01"],
            "amount": [None, None],
        },
    )
    got = rows(tables).loc["A"]
    assert got.purchases_to_date == 2 and got.purchase_gap_days == 31
    assert np.isnan(got.avg_invoice_value) and np.isnan(got.invoice_value_trend)


@pytest.mark.parametrize(
    ("name", "value", "sentence"),
    [
        ("purchase_cycles_since_last", 2.4, "No purchase for 2.4 of its usual cycles"),
        ("purchase_cycles_since_last", 0.004, "No purchase for 0.004 of its usual cycles"),
        ("purchase_gap_days", 45.0, "Usual gap between purchases: 45 days"),
        ("days_since_last_purchase", 1.0, "No purchase for 1 day"),
        ("purchases_to_date", 0.0, "No purchases on record"),
        ("purchases_to_date", 12.0, "12 purchases on record"),
        (
            "purchase_gap_variation",
            0.35,
            "Gaps between purchases vary by 35% around the average gap",
        ),
        ("months_since_first_purchase", 14.2, "First purchase on record 14 months ago"),
        ("avg_invoice_value", 12345.6, "Invoices average 12,346"),
        ("invoice_value_trend", -0.25, "Last three invoices 25% below the earlier average"),
        ("invoice_value_trend", 0.0, "Last three invoices level with the earlier average"),
        ("purchase_gap_days", math.nan, FEATURES["purchase_gap_days"].description + ": unknown"),
    ],
)
def test_sentences_read_well(name: str, value: float, sentence: str):
    assert FEATURES[name].sentence(value) == sentence


def test_overdue_cycles_say_so_against_the_typical_client():
    feature = FEATURES["purchase_cycles_since_last"]
    text = feature.sentence(2.4, typical=0.8, impact=5.0)
    assert text == "No purchase for 2.4 of its usual cycles, above the 0.8 typical of your clients"
    assert FEATURES["purchase_cycles_since_last"].valid_range == (0.0, None)
    assert not feature.in_range(-0.1)


# ------------------------------------------------------------------ properties on dense invoices

BASE = pd.Timestamp("2023-01-01")
CORE = ("A", "B")


def at(day: int, second: int = 0) -> pd.Timestamp:
    return BASE + timedelta(days=day, seconds=second)


@st.composite
def invoices(draw, accounts: tuple[str, ...], lo: int, hi: int, size: int) -> list[dict]:
    """Invoices issued on days in [lo, hi] at any second, several a day now and then, with
    amounts in whole cents (and a missing one at times)."""
    out = []
    for _ in range(draw(st.integers(0, size))):
        day = at(draw(st.integers(lo, hi)), draw(st.integers(0, 86399)))
        amount = draw(st.none() | st.integers(0, 100_000).map(lambda c: c / 100))
        out.append(
            dict(account_id=draw(st.sampled_from(accounts)), issued_at=day, due_at=day,
                 amount=amount)
        )  # fmt: skip
    return out


def assemble(rows: list[dict], accounts: tuple[str, ...]) -> Tables:
    ordered = [{**r, "invoice_id": f"I{i}"} for i, r in enumerate(rows)]
    return make_tables(
        accounts=[dict(account_id=a, started_at=BASE - timedelta(days=400)) for a in accounts],
        invoices=ordered,
    )


@st.composite
def past_and_futures(draw):
    as_of_day = draw(st.integers(30, 400))
    past = draw(invoices(CORE, 0, as_of_day - 1, 25))
    first = draw(invoices(CORE, as_of_day, 500, 8))
    second = draw(invoices(CORE, as_of_day, 500, 8))
    return at(as_of_day), past, first, second


PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(past_and_futures())
def test_invoices_on_or_after_as_of_never_change_the_purchase_features(case):
    as_of, past, first, second = case
    cfg = SnapshotSettings()
    # the later invoices come first in one source, last in the other: row order never matters
    one = build_features(assemble([*first, *past], CORE), [as_of.date()], cfg)
    two = build_features(assemble([*past, *second], CORE), [as_of.date()], cfg)
    pd.testing.assert_frame_equal(one[PURCHASE], two[PURCHASE])


@PROPERTY
@given(past_and_futures())
def test_the_engine_matches_the_literal_definitions(case):
    as_of, past, later, _ = case
    tables = assemble([*past, *later], CORE)
    got = build_features(tables, [as_of.date()], SnapshotSettings()).set_index("account_id")
    frame = tables.invoices
    assert frame is not None
    for account in CORE:
        want = purchase_reference(frame[frame.account_id == account], as_of)
        for name in PURCHASE:
            have = got.loc[account, name]
            assert (np.isnan(want[name]) and np.isnan(have)) or have == pytest.approx(
                want[name], rel=1e-9
            ), (account, name, want[name], have)
            assert np.isnan(have) or FEATURES[name].in_range(have), (name, have)


@PROPERTY
@given(st.integers(30, 400), invoices(("A", "B", "C", "D"), 0, 500, 40))
def test_a_subset_of_accounts_gives_the_same_purchase_rows(as_of_day, rows_):
    accounts = ("A", "B", "C", "D")
    tables = assemble(rows_, accounts)
    end = observed_end(tables)
    dates = [at(as_of_day).date(), at(as_of_day + 45).date()]
    whole = build_features(tables, dates, SnapshotSettings(), data_end=end)
    keep = {"B", "D"}
    part = make_tables(
        accounts=[dict(account_id=a, started_at=BASE - timedelta(days=400)) for a in sorted(keep)],
        invoices=[
            {**r, "invoice_id": f"I{i}"} for i, r in enumerate(rows_) if r["account_id"] in keep
        ],
    )
    subset = build_features(part, dates, SnapshotSettings(), data_end=end)
    expected = whole[whole["account_id"].isin(keep)].reset_index(drop=True)
    pd.testing.assert_frame_equal(subset[PURCHASE], expected[PURCHASE])
