"""Demo data of a project-by-project business: a transaction log, accounts and invoices only.

``churn demo-data --business purchase`` writes what a firm that sells one-off projects (no
retainers, no contracts, no churn events, no CRM) has: one row per client and one invoice per
purchase, over ``months`` months (18 by default). Clients never say that they leave; they stop
buying. It is the data ``churn train --label-mode inactivity`` is for.

The clients (per account, seeded, vectorised over an (account x purchase) matrix):

* **Who.** Three sizes (small 60 %, medium 30 %, large 10 %), twelve industries, an account
  manager. ``started_at`` is the first invoice's date: all the log knows of a client.
  ``contract_value`` and ``renewal_at`` are left out (there are no contracts).
* **Arrival.** 35 % are on the book at the window's start (they bought before it; their first
  invoice in the log comes within their first gap), 65 % are won during the window at a
  uniform rate.
* **One-time buyers.** A client won in the window stops after its first purchase with
  probability 0.6 (odds times the attribute factors below); a client on the book does not.
* **Repeat buying.** Purchases come at a client's own rate: gamma distributed across clients
  (shape 2, mean 3.5 a year), times 0.8 / 1.0 / 1.4 for small / medium / large. The gap between
  two purchases is gamma distributed around 1 / rate with a per-client regularity (shape 1, 2
  or 4 for 40 / 35 / 25 % of clients: irregular to steady), at least 7 days, weekends moved to
  a weekday.
* **Lapse.** After each repeat purchase a client stops for good with probability 0.15 (odds
  times the attribute factors, and a per-client lognormal spread, sigma 0.3), so the number
  of purchases of a run is geometric: a buy-till-you-die client, as BG/NBD assumes, except for
  what follows.

Known effects beyond recency and frequency (what BG/NBD, with a constant purchase rate and a
constant dropout probability per purchase, and recency, with only the last date, cannot see):

1. **Observable attributes set the dropout odds** (first-purchase and repeat alike): small
   clients x1.3, large x0.6 (size shows in invoice values: median 1,500 / 6,000 / 25,000);
   habitual late payers (15 % of clients, paying 20 days late on average against 0) x1.8;
   discount takers (20 %, 5-15 % off every invoice) x1.5; steady buyers (regularity shape 4)
   x0.7 and irregular ones (shape 1) x1.25; industries from Public sector x0.75 to
   Hospitality x1.35 (``INDUSTRY_ODDS``).
2. **A lapse announces itself** (for 70 % of lapsing clients; 30 % stop without warning): over
   its last three purchases before it stops, a client's invoice values fall (x0.85, x0.70,
   x0.55 of its usual level, the last the lowest), the gaps before them lengthen (x1.27,
   x1.53, x1.8 of its usual gap) and it pays later (+4, +8, +12 days).
3. **Lapsed clients come back at a known rate**: 30 % of lapsed repeat buyers and 10 % of
   lapsed one-time buyers buy again after a long silence (150 days plus a gamma of shape 2 and
   scale 60 days: median about 250 days), once, then buy as before (rate, size, habits) with a
   fresh run of purchases.

On the default data (seed 42) 54 % of the clients buy once, 57 % have lapsed by the window's
end (38 % of the repeat buyers) and 4.6 % came back after a lapse. Inactivity snapshots
(90-day horizon, monthly from the fifth month): a LightGBM model of today's catalogue
features trained before 2026-04 reaches a ROC AUC of about 0.82 on the as_of dates from
2026-04 on, against 0.55 for the days since the last invoice and 0.76 for BG/NBD.

Invoices: amount = the client's median value x a lognormal spread (sigma 0.35) x the lapse
decline, net of the discount (``discount`` in currency, 0 for clients who get none); due 14,
30 or 45 days after issue; paid at due plus the client's delay (never before the day after
issue; empty while unpaid at the window's end, and for 0.5 % of invoices never paid). The data
has no messy rows: it is the clean shape of a purchase log (validation loads all of it).

Scale and determinism as the default demo (``features.demo``): accounts in chunks of
``chunk_size``, one RNG per chunk spawned from ``SeedSequence(seed)``, each chunk written
before the next is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.contract import TABLE_NAMES, TABLES, Table
from features.demo import (
    ACCOUNT_MANAGERS,
    DAYS_PER_YEAR,
    DEFAULT_CHUNK_SIZE,
    FORMATS,
    INDUSTRIES,
    _to_text,
    _typed,
    _Window,
    _Writer,
    account_id_width,
    check_options,
    chunk_plan,
    client_names,
    make_ids,
    make_out_folder,
)

if TYPE_CHECKING:
    from rich.table import Table as RichTable

BUSINESSES: tuple[str, ...] = ("retainer", "purchase")
DEFAULT_ACCOUNTS = 8000
DEFAULT_MONTHS = 18
MAX_MONTHS = 120

# Tables and columns written: a transaction log has no contracts (renewal, contract value).
WRITTEN: dict[str, tuple[str, ...]] = {
    "accounts": ("account_id", "name", "account_manager", "industry", "started_at"),
    "invoices": (
        "account_id",
        "invoice_id",
        "issued_at",
        "due_at",
        "paid_at",
        "amount",
        "discount",
    ),
}

# --- the clients' parameters -----------------------------------------------------------------

BOOK_SHARE = 0.35  # clients already buying when the window opens
SIZES = ("small", "medium", "large")
SIZE_MIX = np.array([0.6, 0.3, 0.1])
SIZE_VALUE = np.array([1_500.0, 6_000.0, 25_000.0])  # median invoice value
SIZE_RATE = np.array([0.8, 1.0, 1.4])
SIZE_ODDS = np.array([1.3, 1.0, 0.6])
VALUE_SIGMA = 0.35
RATE_SHAPE = 2.0
RATE_MEAN = 3.5  # purchases a year
REGULARITY = np.array([1.0, 2.0, 4.0])  # gamma shape of the gaps
REGULARITY_MIX = np.array([0.4, 0.35, 0.25])
REGULARITY_ODDS = np.array([1.25, 1.0, 0.7])
MIN_GAP_DAYS = 7
ONE_OFF = 0.6  # first-purchase dropout of a client won in the window
DROPOUT = 0.15  # dropout after each repeat purchase
DROPOUT_SIGMA = 0.3
LATE_PAYERS = 0.15
LATE_DAYS = 20.0
LATE_ODDS = 1.8
DISCOUNT_TAKERS = 0.2
DISCOUNT_RANGE = (0.05, 0.15)
DISCOUNT_ODDS = 1.5
INDUSTRY_ODDS: dict[str, float] = {
    "Financial services": 0.9,
    "Healthcare": 0.8,
    "Manufacturing": 0.9,
    "Retail": 1.25,
    "Technology": 1.1,
    "Public sector": 0.75,
    "Energy": 0.85,
    "Real estate": 1.15,
    "Logistics": 1.0,
    "Media": 1.3,
    "Education": 0.8,
    "Hospitality": 1.35,
}
# The lapse's warning over the last DECLINE_STEPS purchases (step 1 = third-last .. 3 = last).
DECLINE_STEPS = 3
ANNOUNCED = 0.7
VALUE_DECLINE = 0.45  # the last invoice at 1 - 0.45 of the usual value
GAP_STRETCH = 0.8  # the gap before the last purchase at 1 + 0.8 of the usual gap
LATE_DRIFT = 12.0  # days later paid at the last purchase
# Coming back after a lapse.
RETURN_REPEAT = 0.3
RETURN_ONE_TIME = 0.1
SILENCE_MIN = 150.0
SILENCE_SHAPE = 2.0
SILENCE_SCALE = 60.0
TERMS = np.array([14, 30, 30, 30, 45])
NEVER_PAID = 0.005


# --- result ----------------------------------------------------------------------------------


@dataclass
class PurchaseSummary:
    """What ``generate_purchase_demo`` wrote, and the clients' make-up in the window:
    one-time buyers (one invoice), repeat buyers, lapsed (stopped buying before the window's
    end and not back by then) and returned (bought again after a lapse, inside the window)."""

    out: Path
    fmt: str
    seed: int
    accounts: int
    months: int
    period_start: date
    period_end: date
    one_time: int = 0
    repeat: int = 0
    lapsed: int = 0
    returned: int = 0
    rows: dict[str, int] = field(default_factory=dict)

    def render(self) -> RichTable:
        """A rich table for the CLI: rows per table written, with the clients' make-up."""
        from rich.table import Table as RichTable

        table = RichTable(
            title=f"Purchase demo data in {self.out}",
            caption=(
                f"{self.accounts} accounts over {self.months} months "
                f"({self.period_start} to {self.period_end}), seed {self.seed}: "
                f"{self.one_time} one-time buyers, {self.repeat} repeat buyers, "
                f"{self.lapsed} lapsed, {self.returned} came back after a lapse"
            ),
        )
        table.add_column("table")
        table.add_column("rows", justify="right")
        for name in WRITTEN:
            table.add_row(name, f"{self.rows.get(name, 0):,}")
        return table


# --- entry points ----------------------------------------------------------------------------


def generate_purchase_demo(
    out: Path,
    accounts: int = DEFAULT_ACCOUNTS,
    seed: int = 42,
    months: int = DEFAULT_MONTHS,
    fmt: str = "csv",
    end: date = date(2026, 9, 30),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> PurchaseSummary:
    """Write ``accounts`` and ``invoices`` (``.csv`` or ``.parquet``) into ``out``.

    Deterministic for (seed, accounts, months, end, chunk_size). Every contract table file in
    ``out`` (either format) is replaced or removed, so the folder is a purchase log only.
    """
    _check(accounts, months, fmt, chunk_size)
    from churn.console import track

    window = _window(end, months)
    out = make_out_folder(out)
    for name in TABLE_NAMES:
        if name not in WRITTEN:
            for other in FORMATS:
                (out / f"{name}.{other}").unlink(missing_ok=True)
    summary = PurchaseSummary(
        out=out,
        fmt=fmt,
        seed=seed,
        accounts=accounts,
        months=months,
        period_start=window.first_date,
        period_end=window.last_date,
        rows=dict.fromkeys(WRITTEN, 0),
    )
    tables = {name: _written(name) for name in WRITTEN}
    writers = {name: _Writer(out, table, fmt) for name, table in tables.items()}
    n_chunks = -(-accounts // chunk_size)
    try:
        for buyers in track(
            _chunks(accounts, seed, window, chunk_size),
            "generating purchase demo data (chunks)",
            total=n_chunks,
        ):
            frames = buyers.tables()
            for name, table in tables.items():
                frame = frames[name]
                writers[name].write(_to_text(table, frame) if fmt == "csv" else frame)
                summary.rows[name] += len(frame)
            truth = buyers.truth()
            summary.one_time += int((truth["purchases"] == 1).sum())
            summary.repeat += int((truth["purchases"] >= 2).sum())
            summary.lapsed += int(truth["lapsed"].sum())
            summary.returned += int(truth["returned"].sum())
    finally:
        for writer in writers.values():
            writer.close()
    return summary


def simulate_purchases(
    accounts: int = DEFAULT_ACCOUNTS,
    seed: int = 42,
    months: int = DEFAULT_MONTHS,
    end: date = date(2026, 9, 30),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The same data as ``generate_purchase_demo`` in memory: the typed ``accounts`` and
    ``invoices`` frames (written columns only) and the per-account truth behind them
    (``account_id``, ``size``, ``on_book``, ``late_payer``, ``discount_taker``,
    ``regularity``, ``purchases``, ``lapsed``, ``announced``, ``returned``, and the first run of
    purchases: ``first_run`` purchases, the last on ``first_run_end``, either maybe after the
    window)."""
    _check(accounts, months, "csv", chunk_size)
    window = _window(end, months)
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in WRITTEN}
    truths = []
    for buyers in _chunks(accounts, seed, window, chunk_size):
        for name, frame in buyers.tables().items():
            parts[name].append(frame)
        truths.append(buyers.truth())
    frames = {name: pd.concat(p, ignore_index=True) for name, p in parts.items()}
    return frames, pd.concat(truths, ignore_index=True)


def _check(accounts: int, months: int, fmt: str, chunk_size: int) -> None:
    history = ("months", months, 3, MAX_MONTHS)
    check_options(fmt, accounts, history, chunk_size, examples=(DEFAULT_ACCOUNTS, DEFAULT_MONTHS))


def _window(end: date, months: int) -> _Window:
    """The ``months`` months ending on ``end`` (a month's end gives whole calendar months)."""
    last = pd.Timestamp(end)
    first = last + pd.Timedelta(days=1) - pd.DateOffset(months=months)
    return _Window(np.datetime64(first.date(), "D"), int((last - first).days) + 1)


def _written(name: str) -> Table:
    """The contract table restricted to the columns a purchase log has."""
    table = TABLES[name]
    return dataclasses.replace(
        table, columns=tuple(c for c in table.columns if c.name in WRITTEN[name])
    )


def _chunks(accounts: int, seed: int, window: _Window, chunk_size: int) -> Iterator[_Buyers]:
    id_width = account_id_width(accounts)
    for first, size, rng in chunk_plan(accounts, seed, chunk_size):
        yield _Buyers(rng, window, first, size, id_width)


# --- the simulation of one chunk of clients --------------------------------------------------


def _odds(p: np.ndarray | float, factor: np.ndarray) -> np.ndarray:
    """Probability p with its odds multiplied by factor."""
    o = np.asarray(p) / (1 - np.asarray(p)) * factor
    return np.asarray(o / (1 + o))


class _Buyers:
    """One chunk of clients: attributes, purchase runs, and the two tables."""

    def __init__(
        self, rng: np.random.Generator, window: _Window, first: int, n: int, id_width: int
    ) -> None:
        self.rng = rng
        self.window = window
        self.n = n
        self.numbers = np.arange(first + 1, first + n + 1)
        self.id_width = id_width
        self._attributes()
        self._purchases()

    def _ids(
        self, prefix: str, numbers: np.ndarray, suffix: np.ndarray | None = None
    ) -> np.ndarray:
        return make_ids(prefix, numbers, self.id_width, suffix)

    # --- who the clients are

    def _attributes(self) -> None:
        rng, n = self.rng, self.n
        self.size = rng.choice(3, n, p=SIZE_MIX)
        industries = np.array(list(INDUSTRIES), dtype=object)
        self.industry_idx = rng.integers(0, len(industries), n)
        self.industry = industries[self.industry_idx]
        self.regularity = rng.choice(3, n, p=REGULARITY_MIX)
        self.late_payer = rng.random(n) < LATE_PAYERS
        self.discount_taker = rng.random(n) < DISCOUNT_TAKERS
        self.on_book = rng.random(n) < BOOK_SHARE
        self.rate = rng.gamma(RATE_SHAPE, RATE_MEAN / RATE_SHAPE, n) * SIZE_RATE[self.size]
        self.value = SIZE_VALUE[self.size] * np.exp(rng.normal(0, 0.4, n))
        self.discount_rate = np.where(self.discount_taker, rng.uniform(*DISCOUNT_RANGE, n), 0.0)
        self.delay = np.where(
            self.late_payer, rng.normal(LATE_DAYS, 8, n), rng.normal(0, 3, n)
        ).clip(-10, None)
        self.terms = rng.choice(TERMS, n)
        industry_odds = np.array([INDUSTRY_ODDS[i] for i in industries])[self.industry_idx]
        factor = (
            SIZE_ODDS[self.size]
            * industry_odds
            * np.where(self.late_payer, LATE_ODDS, 1.0)
            * np.where(self.discount_taker, DISCOUNT_ODDS, 1.0)
            * REGULARITY_ODDS[self.regularity]
        )
        self.p_one_off = np.where(self.on_book, 0.0, _odds(ONE_OFF, factor))
        self.p_drop = _odds(DROPOUT, factor * np.exp(rng.normal(0, DROPOUT_SIGMA, n)))
        self.announced = rng.random(n) < ANNOUNCED

    # --- when they buy

    def _run_length(self, one_off: np.ndarray) -> np.ndarray:
        """Purchases of a run before the client stops: 1 for a one-off, else 1 + geometric."""
        more = self.rng.geometric(self.p_drop)  # purchases after the first, the last included
        return np.where(one_off, 1, 1 + more).astype(np.int64)

    def _run(
        self, start: np.ndarray, length: np.ndarray, kmax: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Purchase days of one run per client, (n x kmax) (NaN past the run's end), each
        purchase's steps into the lapse's warning (0 = none .. 3 = the last), and the run's
        last day."""
        rng, n = self.rng, self.n
        j = np.arange(kmax)[None, :]
        step = DECLINE_STEPS - (length[:, None] - 1 - j)  # 3 at the last purchase
        step = np.where((step >= 1) & (j < length[:, None]), step, 0) * self.announced[:, None]
        shape = REGULARITY[self.regularity][:, None]
        mean = DAYS_PER_YEAR / self.rate[:, None]
        gaps = rng.gamma(shape, mean / shape, (n, kmax)) * (1 + GAP_STRETCH * step / DECLINE_STEPS)
        gaps = np.maximum(np.round(gaps), MIN_GAP_DAYS)
        gaps[:, 0] = 0
        days = start[:, None] + np.cumsum(gaps, axis=1)
        days = np.where(j < length[:, None], days, np.nan)
        last = days[np.arange(n), np.minimum(length, kmax) - 1]
        return days, step, last

    def _purchases(self) -> None:
        rng, n, D = self.rng, self.n, self.window.days
        kmax = D // MIN_GAP_DAYS + 2
        shape = REGULARITY[self.regularity]
        first_gap = rng.gamma(shape, DAYS_PER_YEAR / self.rate / shape)
        start = np.where(
            self.on_book,
            np.floor(rng.random(n) * np.maximum(first_gap, MIN_GAP_DAYS)),
            rng.integers(0, D, n),
        )
        start = np.minimum(start, D - 1).astype(np.float64)
        one_off = rng.random(n) < self.p_one_off
        length = self._run_length(one_off)
        days1, step1, last1 = self._run(start, length, kmax)
        # Coming back: once, after a long silence, with a fresh run.
        p_back = np.where(length == 1, RETURN_ONE_TIME, RETURN_REPEAT)
        back = rng.random(n) < p_back
        silence = SILENCE_MIN + rng.gamma(SILENCE_SHAPE, SILENCE_SCALE, n)
        start2 = np.round(last1 + silence)
        length2 = self._run_length(np.zeros(n, dtype=bool))
        days2, step2, last2 = self._run(start2, length2, kmax)
        days2[~back] = np.nan
        days = np.concatenate([days1, days2], axis=1)
        steps = np.concatenate([step1, step2], axis=1)
        days[days > D - 1] = np.nan
        # weekends to the Friday before or the Monday after (the other way at the window's ends)
        wd = self.window.weekday(np.nan_to_num(days).astype(np.int64))
        moved = days - (wd == 5) + (wd == 6)
        outside = (moved < 0) | (moved > D - 1)
        days = np.where(outside, days + 2 * (wd == 5) - 2 * (wd == 6), moved)
        self.days, self.steps = days, steps
        self.first_run, self.first_run_end = length, last1
        self.purchases = np.isfinite(days).sum(axis=1)
        # the truth at the window's end
        self.returned = back & (start2 <= D - 1) & (self.purchases > 0)
        ended1 = last1 <= D - 1
        ended2 = last2 <= D - 1
        self.lapsed = np.where(self.returned, ended2, ended1 & (~back | (start2 > D - 1)))
        self.lapsed &= self.purchases > 0

    # --- the tables

    def tables(self) -> dict[str, pd.DataFrame]:
        """``accounts`` (clients with at least one invoice in the window) and ``invoices``."""
        rng = self.rng
        acc, col = np.nonzero(np.isfinite(self.days))
        day = self.days[acc, col]
        step = self.steps[acc, col]
        m = len(acc)
        gross = (
            self.value[acc]
            * np.exp(rng.normal(0, VALUE_SIGMA, m))
            * (1 - VALUE_DECLINE * step / DECLINE_STEPS)
        )
        discount = np.round(gross * self.discount_rate[acc], 2)
        amount = np.round(gross - discount, 2)
        due = day + self.terms[acc]
        delay = self.delay[acc] + rng.normal(0, 4, m) + LATE_DRIFT * step / DECLINE_STEPS
        paid = np.maximum(np.round(due + delay), day + 1)
        never = rng.random(m) < NEVER_PAID
        paid[never | (paid > self.window.days - 1)] = np.nan
        # np.nonzero goes account by account, and a client's columns are in date order
        seq = np.arange(m) - np.searchsorted(acc, acc) + 1
        invoice_ids = self._ids("INV-", self.numbers[acc], seq)
        invoices = pd.DataFrame(
            {
                "account_id": self._ids("A-", self.numbers[acc]),
                "invoice_id": invoice_ids,
                "issued_at": self.window.dates(day),
                "due_at": self.window.dates(due),
                "paid_at": self.window.dates(paid),
                "amount": amount,
                "discount": discount,
            }
        ).sort_values(["issued_at", "invoice_id"], kind="stable", ignore_index=True)
        accounts = self._accounts_frame()
        return {
            "accounts": _typed(_written("accounts"), accounts),
            "invoices": _typed(_written("invoices"), invoices),
        }

    def _accounts_frame(self) -> pd.DataFrame:
        rng, n = self.rng, self.n
        names = client_names(rng, self.industry_idx)
        managers = np.array(ACCOUNT_MANAGERS, dtype=object)[rng.integers(0, 12, n)]
        first = np.nanmin(np.where(np.isfinite(self.days), self.days, np.inf), axis=1)
        keep = self.purchases > 0
        return pd.DataFrame(
            {
                "account_id": self._ids("A-", self.numbers),
                "name": names.astype(object),
                "account_manager": managers,
                "industry": self.industry,
                "started_at": self.window.dates(np.where(keep, first, np.nan)),
            }
        )[keep].reset_index(drop=True)

    def truth(self) -> pd.DataFrame:
        """Per client with at least one invoice: what the simulation decided."""
        keep = self.purchases > 0
        return pd.DataFrame(
            {
                "account_id": self._ids("A-", self.numbers),
                "size": np.array(SIZES, dtype=object)[self.size],
                "industry": self.industry,
                "on_book": self.on_book,
                "late_payer": self.late_payer,
                "discount_taker": self.discount_taker,
                "regularity": REGULARITY[self.regularity],
                "purchases": self.purchases,
                "lapsed": self.lapsed,
                "announced": self.announced,
                "returned": self.returned,
                "first_run": self.first_run,
                "first_run_end": self.window.dates(self.first_run_end),
            }
        )[keep].reset_index(drop=True)
