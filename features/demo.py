"""Demo data: a simulated professional-services firm, every contract table filled.

The firm has client accounts in three tiers by annual contract value (lognormal, so about 20 %
of clients bring about 80 % of revenue): A clients get quarterly business reviews and regular
meetings, B clients half-yearly reviews, C clients rare touch points. Accounts started before
the data window (tenures of 0 to 20 years) or are won during it. Churn follows a piecewise
constant hazard, higher in the first year (onboarding), and every churner has a reason
(taken_for_granted 35 %, service_quality 25 %, competitor 20 %, budget_cut 10 %,
key_contact_left 10 %, a few ``other``) whose precursors ramp up over weeks to months before
the churn date with a strength that varies per account (about 15 % are quiet churners with
hardly any precursor), plus a milder general drift (their problems compound). Every account
also lives through temporary episodes of the same kinds that recover (a quiet spell, a
service incident, a competitor pitch, a budget squeeze), and key contacts change in healthy
accounts too, so no single signal is perfect: on the default data a LightGBM model reaches a
test ROC AUC of about 0.8 for a 90-day horizon against about 0.63 for the health score.

How a signal is simulated: per account and week of the window, one intensity per precursor
kind (``_Firm.E``: 0 = none, 1 = full) is built from the churn ramp and the episodes; every
table reads it at each record's week (interaction rates, cancellations, sentiment, survey
scores, ticket rates and severities, project budgets and kinds, invoice amounts, discounts and
payment delays, contact departures). Everything is vectorised over (account, week) matrices.

Scale: accounts are generated in chunks of ``chunk_size``, each with its own RNG spawned from
``SeedSequence(seed)`` by chunk number, and each chunk is written (appended) before the next
is built, so memory is bounded by the chunk size and 100x the accounts is 100x the chunks.
A chunk's accounts depend on the seed, its number and its size (the total only sets the id
width and the unknown ids of messy rows).

Messy rows: each chunk adds about 0.35 % extra rows per table (never more than 0.75 %):
exact duplicates of keyed rows, unparsable dates, unknown account ids and out-of-range survey
scores, so that validation has real work while staying under the 1 % reject threshold. They
are extra rows; the clean data is complete without them. In Parquet output, whose columns are
typed, an unparsable date is written as an empty required date.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np
import pandas as pd

from churn.errors import ChurnError
from features.contract import TABLE_NAMES, TABLES, Table

if TYPE_CHECKING:
    import pyarrow as pa
    from rich.table import Table as RichTable

FORMATS: tuple[str, ...] = ("csv", "parquet")
DEFAULT_CHUNK_SIZE = 500

# --- the firm's parameters -------------------------------------------------------------------

DAYS_PER_YEAR = 365.25
# New clients won per year, as a share of the book at the start of the window.
NEW_CLIENTS_PER_YEAR = 0.11
# Contract values: lognormal; sigma 1.55 (with the spread of project work on top) puts ~80 %
# of invoiced revenue in the top 20 % of clients.
CONTRACT_MEDIAN = 32_000.0
CONTRACT_SIGMA = 1.55
TIER_Z = 0.8416  # standard normal 80th percentile: A above, C below minus it
TIERS = ("A", "B", "C")
# Churn hazard per year: first year (onboarding) and afterwards, times a tier factor.
HAZARD_FIRST_YEAR = 0.30
HAZARD_LATER = 0.105
TIER_HAZARD = np.array([0.7, 1.0, 1.35])
MIN_DAYS_BEFORE_CHURN = 30
SNAP_TO_RENEWAL = 0.4  # share of retainer churners who leave at a renewal date

# Reasons: design shares of the five named reasons, plus a few "other".
REASON_MIX: dict[str, float] = {
    "taken_for_granted": 0.35,
    "service_quality": 0.25,
    "competitor": 0.20,
    "budget_cut": 0.10,
    "key_contact_left": 0.10,
}
OTHER_SHARE = 0.03
# Reasons laid on one axis; new clients lean to service fit, long-term ones to budget and people.
REASON_AXIS = (
    "service_quality",
    "competitor",
    "taken_for_granted",
    "key_contact_left",
    "budget_cut",
)
STAGE_TILT = np.array([-0.3, 0.0, 0.15])  # new, established, long_term
QUIET_CHURNERS = 0.15
SECONDARY_SHARE = 0.5

# Effect kinds (rows of the effect cube).
TFG, SVC, COMP, BUDGET, KCL, OTHER = range(6)
KIND_OF_REASON = {
    "taken_for_granted": TFG,
    "service_quality": SVC,
    "competitor": COMP,
    "budget_cut": BUDGET,
    "key_contact_left": KCL,
    "other": OTHER,
}
# Temporary episodes that recover: per account-year, and their kind mix.
EPISODES_PER_YEAR = 0.1
EPISODE_KINDS = np.array([TFG, SVC, COMP, BUDGET, OTHER])
EPISODE_MIX = np.array([0.35, 0.25, 0.15, 0.15, 0.10])

# Held-or-not interactions per 90 days by tier (A, B, C), before business reviews.
INTERACTION_RATES_90D: dict[str, tuple[float, float, float]] = {
    "meeting": (3.0, 1.0, 0.25),
    "call": (3.0, 1.5, 0.5),
    "email": (6.0, 3.0, 1.0),
    "check_in": (1.0, 0.5, 0.15),
}
REVIEW_WEEKS = (13, 26, 52)  # A quarterly, B half-yearly, C yearly (only some C clients)
C_WITH_REVIEWS = 0.3
PROJECTS_PER_YEAR = (2.5, 1.2, 0.5)
TICKETS_PER_YEAR = (4.0, 2.0, 0.7)
SURVEY_RESPONSE = (0.7, 0.5, 0.35)

ACCOUNT_MANAGERS = (
    "Avery Quinn",
    "Jordan Blake",
    "Morgan Ellis",
    "Riley Carter",
    "Taylor Brooks",
    "Jamie Fletcher",
    "Drew Hollis",
    "Sam Whitaker",
    "Alex Renner",
    "Parker Lane",
    "Rowan Ashby",
    "Casey Harlow",
)
# Industry -> name endings that fit it.
INDUSTRIES: dict[str, tuple[str, ...]] = {
    "Financial services": ("Capital", "Finance", "Insurance", "Wealth"),
    "Healthcare": ("Health", "Clinics", "Care", "Medical"),
    "Manufacturing": ("Manufacturing", "Industries", "Works", "Components"),
    "Retail": ("Retail", "Stores", "Outfitters", "Markets"),
    "Technology": ("Systems", "Labs", "Software", "Analytics"),
    "Public sector": ("Council", "Authority", "Agency", "Trust"),
    "Energy": ("Energy", "Power", "Renewables", "Utilities"),
    "Real estate": ("Estates", "Properties", "Developments", "Homes"),
    "Logistics": ("Logistics", "Freight", "Transport", "Shipping"),
    "Media": ("Media", "Studios", "Publishing", "Broadcasting"),
    "Education": ("Academy", "College", "Learning", "Institute"),
    "Hospitality": ("Hotels", "Hospitality", "Resorts", "Dining"),
}
NAME_STEMS = (
    "Arden", "Bellmont", "Calder", "Dunmore", "Elstree", "Fairholt", "Glenrow", "Harwick",
    "Ivers", "Juniper", "Kestrel", "Larkspur", "Marlow", "Norcott", "Oakhurst", "Pembry",
    "Quillon", "Rivermead", "Sallow", "Thornbury", "Umberly", "Vantor", "Westerly", "Yardley",
    "Ashcombe", "Brightwell", "Copperline", "Driftmoor", "Emberly", "Granby", "Hollins",
    "Ironvale", "Lowther", "Millbrook", "Northgate", "Pinecrest", "Redfern", "Silverton",
    "Tidewater", "Valemont", "Whitlow", "Corrigan", "Blackwood", "Stonebridge", "Merriweather",
)  # fmt: skip
NAME_MIDDLES = ("", "", "", "North", "Blue", "Grand", "Prime", "Summit", "Harbor", "Crest")

# Share of each optional column left empty (realistic gaps).
GAPS: dict[tuple[str, str], float] = {
    ("accounts", "industry"): 0.04,
    ("accounts", "contract_value"): 0.03,
    ("accounts", "renewal_at"): 0.05,
    ("interactions", "initiated_by"): 0.05,
    ("interactions", "client_seniority"): 0.06,
    ("interactions", "response_hours"): 0.05,
    ("interactions", "sentiment"): 0.08,
    ("interactions", "competitor_mentioned"): 0.04,
    ("contacts", "role"): 0.04,
    ("invoices", "discount"): 0.04,
    ("projects", "planned_end_at"): 0.04,
    ("projects", "budget"): 0.03,
    ("projects", "kind"): 0.05,
    ("surveys", "kind"): 0.05,
    ("tickets", "is_complaint"): 0.03,
}

# Messy rows per table: target share and hard cap (of the clean rows of a chunk).
MESSY_SHARE = 0.0035
MESSY_CAP = 0.0075
BAD_DATES = ("2025-13-45", "not a date", "31/02/2024", "2024-02-30")


# --- result ----------------------------------------------------------------------------------


@dataclass
class DemoSummary:
    """What ``generate_demo`` wrote: rows per table (messy rows included), messy rows injected
    per table, the number of churned accounts, the folder, and the simulated period."""

    out: Path
    fmt: str
    seed: int
    accounts: int
    churned: int
    period_start: date
    period_end: date
    rows: dict[str, int] = field(default_factory=dict)
    messy_rows: dict[str, int] = field(default_factory=dict)

    def render(self) -> RichTable:
        """A rich table for the CLI: rows and messy rows per table, with a caption."""
        from rich.table import Table as RichTable

        table = RichTable(
            title=f"Demo data in {self.out}",
            caption=(
                f"{self.accounts} accounts, {self.churned} churned, "
                f"{self.period_start} to {self.period_end}, seed {self.seed}; "
                "messy rows are deliberate contract breaks for validation to reject"
            ),
        )
        table.add_column("table")
        table.add_column("rows", justify="right")
        table.add_column("messy rows", justify="right")
        for name in TABLE_NAMES:
            table.add_row(name, f"{self.rows.get(name, 0):,}", f"{self.messy_rows.get(name, 0):,}")
        return table


# --- entry point -----------------------------------------------------------------------------


def generate_demo(
    out: Path,
    accounts: int = 1500,
    seed: int = 42,
    years: int = 4,
    fmt: str = "csv",
    end: date = date(2026, 9, 30),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> DemoSummary:
    """Write one ``<table>.csv`` (or ``.parquet``) per contract table into ``out``.

    Deterministic for (seed, accounts, years, end, chunk_size): the same bytes every time,
    whatever today's date. Existing table files in ``out`` (either format) are replaced.
    """
    check_options(fmt, accounts, ("years", years, 1, 50), chunk_size, examples=(1500, 4))
    from churn.console import track

    window = _Window.ending(end, years)
    out = make_out_folder(out)
    n_chunks = -(-accounts // chunk_size)
    id_width = account_id_width(accounts)
    summary = DemoSummary(
        out=out,
        fmt=fmt,
        seed=seed,
        accounts=accounts,
        churned=0,
        period_start=window.first_date,
        period_end=window.last_date,
        rows=dict.fromkeys(TABLE_NAMES, 0),
        messy_rows=dict.fromkeys(TABLE_NAMES, 0),
    )
    writers = {name: _Writer(out, TABLES[name], fmt) for name in TABLE_NAMES}
    try:
        chunks = chunk_plan(accounts, seed, chunk_size)
        for first, size, rng in track(chunks, "generating demo data (chunks)", total=n_chunks):
            firm = _Firm(rng, window, first, size, id_width, accounts)
            frames = firm.tables()
            summary.churned += int(firm.churned.sum())
            for name in TABLE_NAMES:
                clean = frames[name]
                text = _to_text(TABLES[name], clean) if fmt == "csv" else clean
                messy, position = _messy_rows(rng, TABLES[name], text, firm, fmt)
                merged = _interleave(text, messy, position)
                writers[name].write(merged)
                summary.rows[name] += len(merged)
                summary.messy_rows[name] += len(messy)
    finally:
        for writer in writers.values():
            writer.close()
    return summary


def check_options(
    fmt: str,
    accounts: int,
    history: tuple[str, int, int, int],
    chunk_size: int,
    examples: tuple[int, int],
) -> None:
    """The options every demo generator checks, in this order: the format, ``accounts``, the
    length of ``history`` (option name, value, lowest, highest) and ``chunk_size``;
    ``examples`` are the accounts and history the hints suggest."""
    name, length, low, high = history
    if fmt not in FORMATS:
        raise ChurnError(f"unknown demo data format {fmt!r}", hint="use csv or parquet")
    if accounts < 1:
        raise ChurnError(
            f"--accounts {accounts} must be at least 1", hint=f"e.g. --accounts {examples[0]}"
        )
    if not low <= length <= high:
        raise ChurnError(
            f"--{name} {length} must be between {low} and {high}",
            hint=f"e.g. --{name} {examples[1]}",
        )
    if chunk_size < 1:
        raise ChurnError(f"chunk_size {chunk_size} must be at least 1", hint="e.g. 500")


def make_out_folder(out: Path) -> Path:
    """``out`` as a Path, created with its parents (a ChurnError when that fails)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ChurnError(
            f"cannot create the demo data folder {out}: {exc.strerror or exc}",
            hint="choose a writable --out folder",
        ) from exc
    return out


def chunk_plan(
    accounts: int, seed: int, chunk_size: int
) -> Iterator[tuple[int, int, np.random.Generator]]:
    """Per chunk of ``chunk_size`` accounts: its first account's index, its size and its RNG,
    the chunk number's child of ``SeedSequence(seed)`` (made when the chunk's turn comes)."""
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(-(-accounts // chunk_size))):
        first = i * chunk_size
        yield first, min(chunk_size, accounts - first), np.random.default_rng(child)


def account_id_width(accounts: int) -> int:
    """Digits of an account number in its id: five, more when ``accounts`` needs them."""
    return max(5, len(str(accounts)))


# --- time window -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """The simulated period: day 0 is its first day, ``days`` its length (last day included)."""

    start: np.datetime64
    days: int

    @classmethod
    def ending(cls, end: date, years: int) -> _Window:
        last = pd.Timestamp(end)
        first = last - pd.DateOffset(years=years) + pd.Timedelta(days=1)
        return cls(np.datetime64(first.date(), "D"), int((last - first).days) + 1)

    @property
    def first_date(self) -> date:
        return cast(date, pd.Timestamp(self.start).date())

    @property
    def last_date(self) -> date:
        return cast(date, pd.Timestamp(self.start + np.timedelta64(self.days - 1, "D")).date())

    @property
    def weeks(self) -> int:
        return -(-self.days // 7)

    def dates(self, day: np.ndarray) -> np.ndarray:
        """Whole days (float NaN = missing) -> datetime64[s] at midnight (NaT)."""
        day = np.asarray(day, dtype=np.float64)
        ok = np.isfinite(day)
        secs = np.where(ok, np.floor(np.where(ok, day, 0)) * 86_400, 0).astype(np.int64)
        out = self.start.astype("datetime64[s]") + secs.astype("timedelta64[s]")
        return np.where(ok, out, np.datetime64("NaT", "s"))

    def stamps(self, day: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """Whole days plus seconds into the day -> datetime64[s] (NaN day = NaT)."""
        day = np.asarray(day, dtype=np.float64)
        ok = np.isfinite(day)
        secs = np.where(ok, np.floor(np.where(ok, day, 0)) * 86_400 + seconds, 0).astype(np.int64)
        out = self.start.astype("datetime64[s]") + secs.astype("timedelta64[s]")
        return np.where(ok, out, np.datetime64("NaT", "s"))

    def weekday(self, day: np.ndarray) -> np.ndarray:
        """0 Monday .. 6 Sunday."""
        epoch = (self.start - np.datetime64("1970-01-01", "D")).astype(np.int64)
        return (epoch + np.asarray(day, dtype=np.int64) + 3) % 7

    def week_season(self) -> np.ndarray:
        """Activity factor per week: August and the year-end holidays are quiet."""
        starts = pd.DatetimeIndex(self.dates(np.arange(self.weeks) * 7 + 3))
        factor = np.ones(self.weeks)
        factor[starts.month == 8] = 0.7
        factor[(starts.month == 12) & (starts.day >= 20)] = 0.5
        return factor


# --- the simulation of one chunk of accounts --------------------------------------------------


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell (row, col) repeated by its count: one entry per simulated event."""
    rows, cols = np.nonzero(counts)
    k = counts[rows, cols]
    return np.repeat(rows, k), np.repeat(cols, k)


def _choice(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category index per row of a (rows x categories) probability matrix."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cum[:, -1:]
    return cast(np.ndarray, np.minimum((u > cum).sum(axis=1), probs.shape[1] - 1))


def _gaps(rng: np.random.Generator, table: str, column: str, n: int) -> np.ndarray:
    """Mask of the rows whose optional column is left empty."""
    return rng.random(n) < GAPS.get((table, column), 0.0)


def _largest_remainder(total: int, shares: np.ndarray) -> np.ndarray:
    raw = shares / shares.sum() * total
    counts: np.ndarray = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def make_ids(
    prefix: str, numbers: np.ndarray, width: int, suffix: np.ndarray | None = None
) -> np.ndarray:
    """Ids ``prefix`` + the number zero-padded to ``width`` (+ ``-`` and the suffix padded to
    three digits), as an object array."""
    if not len(numbers):
        return np.empty(0, dtype=object)
    text = np.char.zfill(np.asarray(numbers).astype(str), width)
    out = np.char.add(prefix, text)
    if suffix is not None:
        out = np.char.add(np.char.add(out, "-"), np.char.zfill(suffix.astype(str), 3))
    return out.astype(object)


def client_names(rng: np.random.Generator, industry_idx: np.ndarray) -> np.ndarray:
    """A company name per client: a stem, an optional middle word and an ending of its
    industry (draws the endings, stems and middles from ``rng``, in that order)."""
    n = len(industry_idx)
    endings = np.array(list(INDUSTRIES.values()))[industry_idx, rng.integers(0, 4, n)]
    stems = np.array(NAME_STEMS)[rng.integers(0, len(NAME_STEMS), n)]
    middles = np.array(NAME_MIDDLES)[rng.integers(0, len(NAME_MIDDLES), n)]
    spaced = np.char.add(middles, np.where(middles == "", "", " "))
    return np.char.add(np.char.add(np.char.add(stems, " "), spaced), endings)


class _Firm:
    """One chunk of accounts: their attributes, churn, precursor effects and every table."""

    def __init__(
        self,
        rng: np.random.Generator,
        window: _Window,
        first: int,
        n: int,
        id_width: int,
        total_accounts: int,
    ) -> None:
        self.rng = rng
        self.window = window
        self.n = n
        self.numbers = np.arange(first + 1, first + n + 1)
        self.id_width = id_width
        self.total_accounts = total_accounts
        self.ids = self._ids("A-", self.numbers)
        self._accounts()
        self._churn()
        self._effects()

    # --- identifiers and helpers

    def _ids(
        self, prefix: str, numbers: np.ndarray, suffix: np.ndarray | None = None
    ) -> np.ndarray:
        return make_ids(prefix, numbers, self.id_width, suffix)

    def ids_beyond(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Account ids that no account has (numbers above the total): unknown accounts."""
        numbers = self.total_accounts + 1 + rng.integers(0, 9 * self.total_accounts, count)
        return self._ids("A-", numbers)

    def effect(self, kind: int, acc: np.ndarray, day: np.ndarray) -> np.ndarray:
        week = np.clip(np.floor(np.asarray(day) / 7).astype(np.int64), 0, self.window.weeks - 1)
        return cast(np.ndarray, self.E[kind, acc, week])

    def alive(self, acc: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Records may fall on days from the account's start (and the window's) before its churn."""
        day = np.asarray(day, dtype=np.float64)
        lo = np.maximum(self.start[acc], 0)
        keep: np.ndarray = (day >= lo) & (day < self.stop[acc]) & (day <= self.window.days - 1)
        return keep

    def weekly_events(self, rate_per_week: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Poisson events per (account, week) at the given rate, only while the account is
        alive; returns (account, whole day)."""
        w = np.arange(self.window.weeks) * 7
        lo = np.maximum(np.maximum(self.start, 0)[:, None], w[None, :])
        hi = np.minimum(np.minimum(self.stop, self.window.days)[:, None], w[None, :] + 7)
        frac = np.clip(hi - lo, 0, 7) / 7.0
        counts = self.rng.poisson(rate_per_week * frac)
        acc, week = _expand(counts)
        day = week * 7 + np.floor(self.rng.random(len(acc)) * 7)
        keep = self.alive(acc, day)
        return acc[keep], day[keep].astype(np.int64)

    def business_days(self, acc: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weekend days moved to the Friday before or Monday after, then kept if still alive."""
        wd = self.window.weekday(day)
        day = day - (wd == 5) + (wd == 6)
        keep = self.alive(acc, day)
        return acc[keep], day[keep]

    # --- accounts

    def _accounts(self) -> None:
        rng, n, days = self.rng, self.n, self.window.days
        years = days / DAYS_PER_YEAR
        p_new = NEW_CLIENTS_PER_YEAR * years / (1 + NEW_CLIENTS_PER_YEAR * years)
        self.is_new = rng.random(n) < p_new
        tenure0 = _book_tenures(rng, n)
        self.start = np.where(
            self.is_new,
            rng.integers(0, max(days - 45, 1), n),
            -np.ceil(tenure0 * DAYS_PER_YEAR),
        ).astype(np.int64)
        z = rng.standard_normal(n)
        self.contract_value = np.round(CONTRACT_MEDIAN * np.exp(CONTRACT_SIGMA * z), -2)
        self.tier = np.where(z > TIER_Z, 0, np.where(z < -TIER_Z, 2, 1))
        u = rng.random(n)
        # billing: 0 monthly retainer, 1 quarterly retainer, 2 projects only
        monthly = np.array([0.95, 0.75, 0.2])[self.tier]
        quarterly = np.array([0.0, 0.15, 0.4])[self.tier]
        self.billing = np.where(u < monthly, 0, np.where(u < monthly + quarterly, 1, 2))
        self.engagement = np.exp(rng.normal(-0.045, 0.3, n))
        self.growth = rng.normal(0.03, 0.08, n)
        self.base_sentiment = np.clip(rng.normal(0.35, 0.15, n), -0.3, 0.9)
        self.base_score = np.clip(rng.normal(8.0, 0.9, n), 4.5, 10)
        habitual_late = rng.random(n) < 0.1
        self.pay_delay = np.where(habitual_late, rng.normal(15, 6, n), rng.normal(0, 3, n))
        self.terms = rng.choice(np.array([30, 30, 30, 14, 45, 60]), n)
        standing = rng.random(n)
        self.discount = np.where(
            standing < 0.75, 0.0, np.where(standing < 0.95, rng.uniform(0.03, 0.08, n), 0.1)
        )
        self.renewal = self.start + 365  # first anniversary; features roll it forward

    def accounts_frame(self) -> pd.DataFrame:
        rng, n = self.rng, self.n
        industries = np.array(list(INDUSTRIES), dtype=object)
        industry_idx = rng.integers(0, len(industries), n)
        names = client_names(rng, industry_idx)
        industry = industries[industry_idx].copy()
        industry[_gaps(rng, "accounts", "industry", n)] = None
        value = self.contract_value.copy()
        value[_gaps(rng, "accounts", "contract_value", n)] = np.nan
        renewal = self.renewal.astype(np.float64)
        renewal[(self.billing == 2) | _gaps(rng, "accounts", "renewal_at", n)] = np.nan
        managers = np.array(ACCOUNT_MANAGERS, dtype=object)[rng.integers(0, 12, n)]
        return pd.DataFrame(
            {
                "account_id": self.ids,
                "name": names.astype(object),
                "account_manager": managers,
                "industry": industry,
                "started_at": self.window.dates(self.start),
                "renewal_at": self.window.dates(renewal),
                "contract_value": value,
            }
        )

    # --- churn

    def _churn(self) -> None:
        rng, n, days = self.rng, self.n, self.window.days
        mult = TIER_HAZARD[self.tier] * np.exp(rng.normal(-0.06, 0.35, n))
        tenure0 = np.where(self.is_new, 0.0, -self.start / DAYS_PER_YEAR)
        a1 = mult * HAZARD_FIRST_YEAR
        h0 = a1 * np.minimum(tenure0, 1) + mult * HAZARD_LATER * np.maximum(tenure0 - 1, 0)
        target = h0 + rng.exponential(1.0, n)
        tenure_c = np.where(target <= a1, target / a1, 1 + (target - a1) / (mult * HAZARD_LATER))
        churn = self.start + np.round(tenure_c * DAYS_PER_YEAR).astype(np.int64)
        # Retainer clients often leave by not renewing: move some churn dates to a renewal.
        k = np.round((churn - self.renewal) / DAYS_PER_YEAR)
        snapped = self.renewal + np.round(np.maximum(k, 0) * DAYS_PER_YEAR).astype(np.int64)
        snap = (self.billing < 2) & (rng.random(n) < SNAP_TO_RENEWAL)
        churn = np.where(snap & (snapped >= 1), snapped, churn)
        churn = np.maximum(churn, np.maximum(self.start, 0) + MIN_DAYS_BEFORE_CHURN)
        self.churned = churn <= days - 1
        self.churn_day = np.where(self.churned, churn, -1)
        self.stop = np.where(self.churned, churn, days)
        self.reason = np.full(n, "", dtype=object)
        idx = np.flatnonzero(self.churned)
        tenure_at_churn = (churn[idx] - self.start[idx]) / DAYS_PER_YEAR
        stage = np.select([tenure_at_churn < 1, tenure_at_churn < 3], [0, 1], 2)
        self.reason[idx] = _assign_reasons(rng, stage)
        self.strength = np.zeros(n)
        quiet = rng.random(n) < QUIET_CHURNERS
        self.strength[idx] = np.where(
            quiet[idx], rng.uniform(0, 0.15, len(idx)), rng.uniform(0.5, 1.0, len(idx))
        )
        lead = np.clip(rng.lognormal(np.log(20), 0.45, n), 4, 52)
        lead_kcl = rng.uniform(4, 26, n)
        self.lead_weeks = np.where(self.reason == "key_contact_left", lead_kcl, lead)
        self.onset_day = np.where(self.churned, churn - self.lead_weeks * 7, np.inf)

    def churn_frame(self) -> pd.DataFrame:
        idx = np.flatnonzero(self.churned)
        return pd.DataFrame(
            {
                "account_id": self.ids[idx],
                "churned_at": self.window.dates(self.churn_day[idx]),
                "reason": self.reason[idx],
            }
        ).sort_values(["churned_at", "account_id"], kind="stable", ignore_index=True)

    # --- precursor and episode effects: (kind, account, week) in [0, 1]

    def _effects(self) -> None:
        rng, n, weeks = self.rng, self.n, self.window.weeks
        E = np.zeros((6, n, weeks), dtype=np.float32)
        centre = np.arange(weeks) + 0.5
        idx = np.flatnonzero(self.churned)
        if len(idx):
            cw = self.churn_day[idx][:, None] / 7.0
            lead = self.lead_weeks[idx][:, None]
            kinds = pd.Series(self.reason[idx]).map(KIND_OF_REASON).to_numpy(dtype=np.int64)
            # key contact left: the departure is the onset and the damage comes quickly
            span = np.where(kinds == KCL, 0.5, 1.0)[:, None] * lead
            ramp = np.clip((centre[None, :] - (cw - lead)) / span, 0, 1) ** 0.6
            ramp[centre[None, :] > cw + 1] = 0
            E[kinds, idx] = (self.strength[idx][:, None] * ramp).astype(np.float32)
            # Leaving clients also drift in general (their problems compound), which a single
            # temporary episode does not show: half the strength as generic disengagement.
            generic = kinds != OTHER
            E[OTHER, idx[generic]] = np.maximum(
                E[OTHER, idx[generic]], SECONDARY_SHARE * E[kinds[generic], idx[generic]]
            )
        # Temporary episodes: rise, plateau, recover; they hit churners and non-churners alike.
        lo = np.maximum(self.start, 0) / 7.0
        hi = self.stop / 7.0
        alive_years = np.maximum(hi - lo, 0) / 52.18
        k = rng.poisson(EPISODES_PER_YEAR * alive_years)
        acc = np.repeat(np.arange(n), k)
        m = len(acc)
        if m:
            kind = EPISODE_KINDS[_choice(rng, np.tile(EPISODE_MIX, (m, 1)))]
            begin = lo[acc] + rng.random(m) * (hi[acc] - lo[acc])
            length = rng.integers(6, 31, m)
            peak = rng.uniform(0.2, 0.75, m)
            e_acc = np.repeat(acc, length)
            e_kind = np.repeat(kind, length)
            offset = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
            frac = (offset + 0.5) / np.repeat(length, length)
            shape = np.minimum(np.minimum(frac / 0.4, 1.0), (1 - frac) / 0.3)
            week = np.floor(np.repeat(begin, length)).astype(np.int64) + offset
            ok = (week >= 0) & (week < weeks)
            flat = (e_kind * n + e_acc) * weeks + week
            np.maximum.at(
                E.reshape(-1), flat[ok], (np.repeat(peak, length) * np.clip(shape, 0, 1))[ok]
            )
        self.E = np.clip(E, 0, 1)
        season = self.window.week_season()
        weeks_in = centre[None, :] - self.start[:, None] / 7.0
        onboarding = np.where((weeks_in >= 0) & (weeks_in < 13), 1.5, 1.0)
        self.engagement_wk = (
            self.engagement[:, None]
            * season[None, :]
            * onboarding
            * (1 - 0.85 * E[TFG])
            * (1 - 0.2 * E[SVC])
            * (1 - 0.3 * E[COMP])
            * (1 - 0.2 * E[BUDGET])
            * (1 - 0.45 * E[KCL])
            * (1 - 0.4 * E[OTHER])
        )

    # --- interactions

    def interactions_frame(self) -> pd.DataFrame:
        rng = self.rng
        # (account, day, channel, planned status: "" = drawn below)
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for ch, rates in INTERACTION_RATES_90D.items():
            rate = np.array(rates)[self.tier][:, None] / (90 / 7) * self.engagement_wk
            if ch == "meeting":
                rate = rate * (1 - 0.3 * self.E[TFG])
            acc, day = self.weekly_events(rate)
            parts.append((acc, day, np.full(len(acc), ch, dtype=object), np.full(len(acc), "")))
        parts.append(self._reviews())
        parts.append(self._onboarding_check_ins())
        acc = np.concatenate([p[0] for p in parts])
        day = np.concatenate([p[1] for p in parts]).astype(np.int64)
        channel = np.concatenate([p[2] for p in parts])
        planned = np.concatenate([p[3] for p in parts]).astype(object)
        wd = self.window.weekday(day)
        day = day - (wd == 5) + (wd == 6)
        keep = self.alive(acc, day)
        acc, day, channel, planned = acc[keep], day[keep], channel[keep], planned[keep]
        m = len(acc)
        tfg, svc, comp = (self.effect(k, acc, day) for k in (TFG, SVC, COMP))
        budget, kcl, other = (self.effect(k, acc, day) for k in (BUDGET, KCL, OTHER))
        # Status: emails are always held; reviews come with theirs (see _reviews).
        p_off = np.clip(0.10 + 0.35 * tfg + 0.15 * other + 0.15 * kcl, 0, 0.8)
        off = (rng.random(m) < p_off) & (channel != "email")
        off_kind = np.array(["cancelled", "rescheduled", "no_show"], dtype=object)[
            _choice(rng, np.tile([0.4, 0.45, 0.15], (m, 1)))
        ]
        status = np.where(off, off_kind, "held").astype(object)
        status = np.where(planned != "", planned, status).astype(object)
        firm_led = np.isin(channel, ["business_review", "check_in"])
        p_client = np.clip(0.45 - 0.3 * tfg - 0.1 * kcl + 0.15 * svc, 0.05, 0.9)
        p_client = np.where(firm_led, 0.1, p_client)
        initiated = np.where(rng.random(m) < p_client, "client", "firm").astype(object)
        initiated[_gaps(rng, "interactions", "initiated_by", m)] = None
        base = np.array([[0.2, 0.35, 0.35, 0.1], [0.1, 0.3, 0.4, 0.2], [0.05, 0.2, 0.45, 0.3]])
        shift = np.clip(0.6 * (tfg + kcl), 0, 0.8)[:, None]
        junior = np.array([0.0, 0.1, 0.4, 0.5])[None, :]
        probs = (1 - shift) * base[self.tier[acc]] + shift * junior
        levels = np.array(["executive", "senior", "middle", "junior"], dtype=object)
        seniority = levels[_choice(rng, probs)]
        review = channel == "business_review"
        seniority[review & (rng.random(m) < 0.7)] = "executive"
        seniority[_gaps(rng, "interactions", "client_seniority", m)] = None
        responsive = np.isin(channel, ["email", "call", "check_in"])
        hours = rng.lognormal(np.log(5) + 0.9 * tfg + 0.4 * svc + 0.3 * kcl, 0.8)
        hours = np.round(hours, 1)
        hours[~responsive | _gaps(rng, "interactions", "response_hours", m)] = np.nan
        held = status == "held"
        sentiment = (
            self.base_sentiment[acc]
            + rng.normal(0, 0.22, m)
            - 0.45 * svc
            - 0.2 * tfg
            - 0.25 * comp
            - 0.25 * kcl
            - 0.1 * budget
            - 0.2 * other
        )
        sentiment = np.round(np.clip(sentiment, -1, 1), 2)
        sentiment[~held | _gaps(rng, "interactions", "sentiment", m)] = np.nan
        mentioned = rng.random(m) < (0.008 + 0.3 * comp + 0.03 * budget)
        competitor = pd.array(mentioned & held, dtype="boolean")
        competitor[_gaps(rng, "interactions", "competitor_mentioned", m)] = pd.NA
        hour = rng.integers(8, 18, m)
        minute = np.where(channel == "email", rng.integers(0, 60, m), rng.integers(0, 4, m) * 15)
        occurred = self.window.stamps(day, hour * 3600 + minute * 60)
        frame = pd.DataFrame(
            {
                "account_id": self.ids[acc],
                "occurred_at": occurred,
                "channel": channel,
                "status": status,
                "initiated_by": initiated,
                "client_seniority": seniority,
                "response_hours": hours,
                "sentiment": sentiment,
                "competitor_mentioned": competitor,
            }
        )
        return frame.sort_values(["occurred_at", "account_id"], kind="stable", ignore_index=True)

    def _reviews(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Business reviews at the tier's cadence (A quarterly, B half-yearly, some C yearly);
        a review the client lets slide is logged as cancelled or never scheduled at all."""
        rng, n = self.rng, self.n
        period = np.array(REVIEW_WEEKS)[self.tier] * 7
        has = (self.tier < 2) | (rng.random(n) < C_WITH_REVIEWS)
        first = np.maximum(self.start, 0) + rng.integers(0, period)
        count = np.where(has, np.maximum(self.stop - first, 0) // period + 1, 0)
        acc = np.repeat(np.arange(n), count)
        k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        day = first[acc] + k * period[acc] + rng.integers(-5, 6, len(acc))
        keep = self.alive(acc, day)
        acc, day = acc[keep], day[keep]
        tfg = self.effect(TFG, acc, day)
        other = self.effect(OTHER, acc, day)
        held = rng.random(len(acc)) < 0.92 * (1 - 0.95 * tfg) * (1 - 0.3 * other)
        logged = held | (rng.random(len(acc)) < 0.5)
        status = np.where(held, "held", "cancelled")[logged]
        acc, day = acc[logged], day[logged]
        return acc, day, np.full(len(acc), "business_review", dtype=object), status

    def _onboarding_check_ins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """New clients: check-ins at 30 and 90 days (weak onboarding skips some)."""
        rng = self.rng
        new = np.flatnonzero(self.start >= 0)
        acc = np.repeat(new, 2)
        day = self.start[acc] + np.tile([30, 90], len(new)) + rng.integers(-3, 4, len(acc))
        p = 0.9 * (1 - 0.5 * self.effect(SVC, acc, day))
        keep = (rng.random(len(acc)) < p) & self.alive(acc, day)
        acc, day = acc[keep], day[keep]
        return acc, day, np.full(len(acc), "check_in", dtype=object), np.full(len(acc), "")

    # --- contacts

    def contacts_frame(self) -> pd.DataFrame:
        rng, n, days = self.rng, self.n, self.window.days
        lo = np.maximum(self.start, 0)
        # client slots: 0 sponsor, 1 decision maker, 2 procurement, then operational people
        n_client = np.select(
            [self.tier == 0, self.tier == 1],
            [np.minimum(3 + rng.poisson(2.0, n), 8), np.minimum(2 + rng.poisson(1.0, n), 5)],
            1 + rng.binomial(2, 0.35, n),
        )
        n_firm = np.select(
            [self.tier == 0, self.tier == 1],
            [rng.integers(3, 6, n), rng.integers(2, 4, n)],
            rng.integers(1, 3, n),
        )
        s_acc = np.concatenate([np.repeat(np.arange(n), n_client), np.repeat(np.arange(n), n_firm)])
        rank = np.concatenate(
            [
                np.arange(n_client.sum()) - np.repeat(np.cumsum(n_client) - n_client, n_client),
                np.arange(n_firm.sum()) - np.repeat(np.cumsum(n_firm) - n_firm, n_firm),
            ]
        )
        client = np.arange(len(s_acc)) < n_client.sum()
        # later slots open over time (introductions to new stakeholders)
        opens = np.where(
            rank >= 2, self.start[s_acc] + rng.exponential(250, len(s_acc)), self.start[s_acc]
        )
        cut = np.full(len(s_acc), np.inf)
        onset = self.onset_day[s_acc]
        lead_days = self.lead_weeks[s_acc] * 7
        reason = self.reason[s_acc]
        strength = self.strength[s_acc]
        u = rng.random(len(s_acc))
        when = onset + rng.uniform(0.1, 0.8, len(s_acc)) * lead_days
        # taken for granted: the relationship shrinks to one client contact
        shrink = client & (reason == "taken_for_granted") & (rank >= 1) & (u < 1.1 * strength)
        cut[shrink] = when[shrink]
        # inconsistent service: the firm's team changes
        first_firm = ~client & (rank == rng.integers(0, 2, len(s_acc)))
        team = first_firm & (reason == "service_quality") & (u < 0.7 * strength)
        cut[team] = when[team]
        # key contact left: the sponsor or decision maker goes at the onset
        key_rank = (rng.integers(0, 2, n) % np.minimum(n_client, 2))[s_acc]
        left = client & (reason == "key_contact_left") & (rank == key_rank) & (strength >= 0.2)
        cut[left] = onset[left]
        # replacement slots: a new team member after a team change; a new executive sponsor
        # or procurement lead after the key contact left
        new_exec = left & (rng.random(len(s_acc)) < 0.8)
        extra_acc = np.concatenate([s_acc[team], s_acc[new_exec]])
        extra_open = np.concatenate(
            [
                cut[team] + rng.uniform(5, 30, team.sum()),
                cut[new_exec] + rng.uniform(7, 45, new_exec.sum()),
            ]
        )
        extra_client = np.concatenate([np.zeros(team.sum(), bool), np.ones(new_exec.sum(), bool)])
        extra_rank = np.concatenate(
            [np.full(team.sum(), 1), np.where(rng.random(new_exec.sum()) < 0.7, 0, 2)]
        )
        s_acc = np.concatenate([s_acc, extra_acc])
        rank = np.concatenate([rank, extra_rank])
        client = np.concatenate([client, extra_client])
        opens = np.concatenate([opens, extra_open])
        cut = np.concatenate([cut, np.full(len(extra_acc), np.inf)])
        executive_slot = np.concatenate([np.zeros(len(cut) - len(extra_acc), bool), extra_client])
        # each slot has a chain of holders: people come and go
        holders = 4
        mean_tenure = np.where(client, 8.0, 4.0)[:, None] * DAYS_PER_YEAR
        tenure = rng.exponential(1.0, (len(s_acc), holders)) * mean_tenure
        gap = rng.uniform(5, 60, (len(s_acc), holders))
        gap[:, 0] = 0
        before = np.hstack([np.zeros((len(s_acc), 1)), tenure[:, :-1]])  # predecessor's tenure
        starts = opens[:, None] + np.cumsum(gap + before, axis=1)
        ends = starts + tenure
        ends = np.minimum(ends, cut[:, None])
        slot = np.repeat(np.arange(len(s_acc)), holders)
        start_d = starts.reshape(-1)
        end_d = ends.reshape(-1)
        acc = s_acc[slot]
        stop = self.stop[acc]
        keep = (start_d < cut[slot]) & (start_d < stop) & (start_d <= days - 1) & (end_d > lo[acc])
        slot, start_d, end_d, acc, stop = (
            slot[keep],
            start_d[keep],
            end_d[keep],
            acc[keep],
            stop[keep],
        )
        # CRM history starts with the window: older relationships carry its first day
        start_d = np.floor(np.maximum(start_d, lo[acc]))
        at_churn = end_d >= stop
        closed_at_churn = at_churn & self.churned[acc] & (rng.random(len(acc)) < 0.4)
        end_d = np.where(at_churn, np.where(closed_at_churn, stop, np.nan), np.floor(end_d))
        end_d[end_d > days - 1] = np.nan
        end_d = np.where(np.isfinite(end_d), np.maximum(end_d, start_d), np.nan)
        m = len(acc)
        r = rank[slot]
        c = client[slot]
        role_names = np.array(
            ["sponsor", "decision_maker", "procurement", "operational", "technical", "other"],
            dtype=object,
        )
        later = 3 + _choice(rng, np.tile([0.6, 0.3, 0.1], (m, 1)))
        firm_role = np.where(r == 0, 0, 3 + (rng.random(m) < 0.3))
        role = role_names[np.where(c, np.where(r < 3, r, later), firm_role)]
        role[_gaps(rng, "contacts", "role", m)] = None
        levels = np.array(["junior", "middle", "senior", "executive"], dtype=object)
        by_rank = np.array(
            [
                [0.0, 0.05, 0.3, 0.65],
                [0.0, 0.1, 0.6, 0.3],
                [0.0, 0.5, 0.4, 0.1],
                [0.4, 0.5, 0.1, 0.0],
            ]
        )
        firm_rank = np.array([[0, 0, 0, 1.0], [0, 0, 1.0, 0], [0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0]])
        probs = np.where(c[:, None], by_rank[np.minimum(r, 3)], firm_rank[np.minimum(r, 3)])
        small = c & (self.tier[acc] == 2) & (r == 0)
        probs[small] = [0.0, 0.3, 0.5, 0.2]
        seniority = levels[_choice(rng, probs)]
        seniority[executive_slot[slot]] = "executive"
        frame = pd.DataFrame(
            {
                "acc": acc,
                "account_id": self.ids[acc],
                "side": np.where(c, "client", "firm").astype(object),
                "seniority": seniority,
                "role": role,
                "started_at": self.window.dates(start_d),
                "ended_at": self.window.dates(end_d),
            }
        ).sort_values(["acc", "started_at", "side"], kind="stable", ignore_index=True)
        seq = frame.groupby("acc", sort=False).cumcount().to_numpy() + 1
        frame.insert(1, "contact_id", self._ids("CT-", self.numbers[frame["acc"]], seq))
        frame = frame.drop(columns="acc")
        return frame.sort_values(["started_at", "account_id"], kind="stable", ignore_index=True)

    # --- projects

    def _projects(self) -> pd.DataFrame:
        rng = self.rng
        base = np.array(PROJECTS_PER_YEAR)[self.tier] * np.where(self.billing == 2, 2.0, 1.0)
        rate = (
            base[:, None]
            / 52.18
            * np.sqrt(self.engagement_wk)
            * (1 - 0.7 * self.E[BUDGET])
            * (1 - 0.3 * self.E[TFG])
        )
        acc, day = self.weekly_events(rate)
        acc, day = self.business_days(acc, day)
        m = len(acc)
        tfg, svc, comp = (self.effect(k, acc, day) for k in (TFG, SVC, COMP))
        budget_e = self.effect(BUDGET, acc, day)
        per_year = np.array(PROJECTS_PER_YEAR)[self.tier[acc]] * 2
        size = np.where(
            self.billing[acc] == 2,
            self.contract_value[acc] / per_year,
            self.contract_value[acc] * rng.uniform(0.1, 0.5, m),
        )
        years_in = day / DAYS_PER_YEAR
        budget = size * rng.lognormal(0, 0.35, m) * np.exp(self.growth[acc] * years_in)
        budget = np.round(budget * (1 - 0.6 * comp) * (1 - 0.3 * budget_e), -2) + 500
        # shorter commitments when budgets are cut
        planned = np.round(rng.uniform(30, 270, m) * (1 - 0.5 * budget_e))
        strategic = np.array([0.55, 0.4, 0.25])[self.tier[acc]] * (1 - 0.8 * comp) * (1 - 0.5 * tfg)
        kind = np.where(rng.random(m) < strategic, "strategic", "tactical").astype(object)
        # delivery problems show while the project runs: the effect at its planned end counts
        planned_end = np.minimum(day + planned, self.stop[acc] - 1)
        svc = np.maximum(svc, self.effect(SVC, acc, planned_end))
        late = np.maximum(rng.normal(-10, 12, m), 0) + 75 * svc * rng.random(m)
        ended = day + planned + np.round(late)
        overrun = rng.normal(-0.05, 0.06, m) + 0.5 * svc * rng.random(m)
        cost = np.round(budget * (1 + overrun), 2)
        stop = self.stop[acc].astype(np.float64)
        # a leaving client stops a running project before the churn date: it ends there, with
        # the cost of the part delivered (billing then runs at the planned monthly pace)
        stopped = (ended >= stop) & self.churned[acc]
        full = ended - day + 1
        ended = np.where(ended >= stop, np.where(self.churned[acc], stop - 1, np.nan), ended)
        ended[ended > self.window.days - 1] = np.nan
        ended = np.where(np.isfinite(ended), np.maximum(ended, day), np.nan)
        done = np.where(stopped, (ended - day + 1) / full, 1.0)
        cost = np.round(cost * done, 2)
        seq = pd.Series(acc).groupby(acc).cumcount().to_numpy() + 1
        return pd.DataFrame(
            {
                "acc": acc,
                "day": day,
                "planned_days": planned,
                "ended_day": ended,
                "cost": cost,
                "project_id": self._ids("P-", self.numbers[acc], seq),
                "budget": budget,
                "kind": kind,
            }
        )

    def projects_frame(self, projects: pd.DataFrame) -> pd.DataFrame:
        rng = self.rng
        m = len(projects)
        acc = projects["acc"].to_numpy()
        day = projects["day"].to_numpy()
        planned_end = day + projects["planned_days"].to_numpy()
        planned_end = np.where(_gaps(rng, "projects", "planned_end_at", m), np.nan, planned_end)
        budget = projects["budget"].to_numpy().copy()
        budget[_gaps(rng, "projects", "budget", m)] = np.nan
        ended = projects["ended_day"].to_numpy()
        cost = np.where(np.isfinite(ended), projects["cost"].to_numpy(), np.nan)
        kind = projects["kind"].to_numpy().copy()
        kind[_gaps(rng, "projects", "kind", m)] = None
        frame = pd.DataFrame(
            {
                "account_id": self.ids[acc],
                "project_id": projects["project_id"].to_numpy(),
                "started_at": self.window.dates(day),
                "planned_end_at": self.window.dates(planned_end),
                "ended_at": self.window.dates(ended),
                "budget": budget,
                "actual_cost": cost,
                "kind": kind,
            }
        )
        return frame.sort_values(["started_at", "project_id"], kind="stable", ignore_index=True)

    # --- invoices

    def invoices_frame(self, projects: pd.DataFrame) -> pd.DataFrame:
        rng, n, days = self.rng, self.n, self.window.days
        # retainers: on the first of each month (quarterly: every third month)
        months = pd.date_range(pd.Timestamp(self.window.start), periods=days // 28 + 2, freq="MS")
        month_day = (
            (months.values - self.window.start.astype("datetime64[ns]")) // 86_400e9
        ).astype(np.int64)
        month_day = month_day[(month_day >= 0) & (month_day <= days - 1)]
        phase = rng.integers(0, 3, n)
        grid = np.broadcast_to(month_day, (n, len(month_day)))
        mi = np.arange(len(month_day))[None, :]
        due_month = (self.billing[:, None] == 0) | (
            (self.billing[:, None] == 1) & ((mi - phase[:, None]) % 3 == 0)
        )
        on = due_month & (grid >= np.maximum(self.start, 0)[:, None]) & (grid < self.stop[:, None])
        r_acc, r_col = np.nonzero(on)
        r_day = month_day[r_col].astype(np.float64)
        per = np.where(self.billing[r_acc] == 0, 12.0, 4.0)
        list_price = (
            self.contract_value[r_acc] / per * np.exp(self.growth[r_acc] * r_day / DAYS_PER_YEAR)
        )
        budget_e = self.effect(BUDGET, r_acc, r_day)
        comp_e = self.effect(COMP, r_acc, r_day)
        # budget cuts renegotiate the retainer down in steps of 10 %
        factor = 1 - 0.9 * np.floor(10 * budget_e) / 10 - 0.15 * comp_e
        r_list = list_price * factor * rng.normal(1, 0.02, len(r_acc))
        # projects: billed at each month end while running, remainder on completion
        p_acc = projects["acc"].to_numpy()
        p_start = projects["day"].to_numpy().astype(np.float64)
        p_end = projects["ended_day"].to_numpy()
        p_last = np.where(np.isfinite(p_end), p_end, np.minimum(self.stop[p_acc], days) - 1)
        n_bills = np.maximum(np.ceil((p_last - p_start + 1) / 30.4), 1).astype(np.int64)
        b_proj = np.repeat(np.arange(len(p_acc)), n_bills)
        b_k = np.arange(n_bills.sum()) - np.repeat(np.cumsum(n_bills) - n_bills, n_bills)
        b_day = np.minimum(p_start[b_proj] + (b_k + 1) * 30.4, p_last[b_proj])
        b_day = np.floor(b_day)
        total = projects["cost"].to_numpy()
        planned_bills = np.maximum(np.ceil((projects["planned_days"].to_numpy() + 1) / 30.4), 1)
        running = ~np.isfinite(p_end)
        total = np.where(running, projects["budget"].to_numpy(), total)
        per_bill = total / np.where(running, planned_bills, n_bills)
        b_acc = p_acc[b_proj]
        b_list = per_bill[b_proj]
        # a final invoice after churn for some retainer clients (wrap-up work)
        fin = np.flatnonzero(self.churned & (self.billing < 2) & (rng.random(n) < 0.35))
        f_day = self.churn_day[fin] + rng.integers(0, 21, len(fin))
        ok = f_day <= days - 1
        fin, f_day = fin[ok], f_day[ok].astype(np.float64)
        f_list = self.contract_value[fin] / 24
        acc = np.concatenate([r_acc, b_acc, fin])
        day = np.concatenate([r_day, b_day, f_day])
        gross = np.concatenate([r_list, b_list, f_list])
        final = np.arange(len(acc)) >= len(r_acc) + len(b_acc)
        wd = self.window.weekday(day.astype(np.int64))
        day = day + np.where(wd == 5, 2, np.where(wd == 6, 1, 0))
        # nothing is billed after the churn date but the final invoice
        keep = (day <= days - 1) & (gross > 0) & (final | (day < self.stop[acc]))
        acc, day, gross = acc[keep], day[keep], gross[keep]
        m = len(acc)
        comp, budget_e, svc = (self.effect(k, acc, day) for k in (COMP, BUDGET, SVC))
        rate = np.clip(self.discount[acc] + 0.25 * comp + 0.05 * budget_e, 0, 0.4)
        discount = np.round(gross * rate, 2)
        amount = np.round(gross - discount, 2)
        due = day + self.terms[acc]
        delay = (
            self.pay_delay[acc]
            + rng.normal(0, 4, m)
            + 60 * budget_e * (0.5 + rng.random(m))
            + 10 * svc * rng.random(m)
        )
        paid = np.maximum(np.round(due + delay), day + 1)
        never = rng.random(m) < 0.004 + 0.4 * budget_e * (budget_e > 0.5)
        paid[never | (paid > days - 1)] = np.nan
        discount[_gaps(rng, "invoices", "discount", m)] = np.nan
        frame = pd.DataFrame(
            {
                "acc": acc,
                "issued_at": self.window.dates(day),
                "due_at": self.window.dates(due),
                "paid_at": self.window.dates(paid),
                "amount": amount,
                "discount": discount,
            }
        ).sort_values(["acc", "issued_at"], kind="stable", ignore_index=True)
        seq = frame.groupby("acc", sort=False).cumcount().to_numpy() + 1
        frame.insert(0, "invoice_id", self._ids("INV-", self.numbers[frame["acc"]], seq))
        frame.insert(0, "account_id", self.ids[frame["acc"]])
        frame = frame.drop(columns="acc")
        return frame.sort_values(["issued_at", "invoice_id"], kind="stable", ignore_index=True)

    # --- surveys

    def surveys_frame(self, projects: pd.DataFrame) -> pd.DataFrame:
        rng, n, days = self.rng, self.n, self.window.days
        # relationship (NPS) surveys: quarterly for A and B clients, yearly for C clients
        period = np.where(self.tier == 2, 4, 1)
        quarters = np.arange(0, days // 91 + 1)
        q_day = quarters * 91 + 45
        grid = np.broadcast_to(q_day, (n, len(q_day)))
        sent = (quarters[None, :] % period[:, None] == 0) & (q_day <= days - 1)
        tfg = self.E[TFG][:, np.minimum(q_day // 7, self.window.weeks - 1)]
        p = np.array(SURVEY_RESPONSE)[self.tier][:, None] * (1 - 0.6 * tfg)
        answered = sent & (rng.random(grid.shape) < p)
        s_acc, col = np.nonzero(answered)
        s_day = q_day[col] + rng.integers(0, 21, len(s_acc))
        # CSAT after a project ends
        ended = projects["ended_day"].to_numpy()
        done = np.isfinite(ended) & (rng.random(len(ended)) < 0.5)
        c_acc = projects["acc"].to_numpy()[done]
        c_day = ended[done] + rng.integers(3, 30, done.sum())
        acc = np.concatenate([s_acc, c_acc])
        day = np.concatenate([s_day, c_day]).astype(np.int64)
        kind = np.concatenate([np.full(len(s_acc), "nps"), np.full(len(c_acc), "csat")])
        keep = self.alive(acc, day)
        acc, day, kind = acc[keep], day[keep], kind[keep].astype(object)
        m = len(acc)
        score = (
            self.base_score[acc]
            + rng.normal(0, 1.0, m)
            - 4.5 * self.effect(SVC, acc, day)
            - 1.2 * self.effect(TFG, acc, day)
            - 1.0 * self.effect(COMP, acc, day)
            - 0.8 * self.effect(KCL, acc, day)
            - 0.5 * self.effect(BUDGET, acc, day)
            - 0.8 * self.effect(OTHER, acc, day)
        )
        score = np.clip(np.round(score), 0, 10)
        kind[_gaps(rng, "surveys", "kind", m)] = None
        frame = pd.DataFrame(
            {
                "account_id": self.ids[acc],
                "answered_at": self.window.dates(day),
                "score": score,
                "kind": kind,
            }
        )
        return frame.sort_values(["answered_at", "account_id"], kind="stable", ignore_index=True)

    # --- tickets

    def tickets_frame(self) -> pd.DataFrame:
        rng, days = self.rng, self.window.days
        rate = (
            np.array(TICKETS_PER_YEAR)[self.tier][:, None]
            / 52.18
            * np.sqrt(self.engagement[:, None])
            * (1 + 5 * self.E[SVC])
        )
        acc, day = self.weekly_events(rate)
        m = len(acc)
        svc = self.effect(SVC, acc, day)
        shift = (0.5 * svc)[:, None]
        probs = (1 - shift) * np.array([0.5, 0.33, 0.13, 0.04]) + shift * np.array(
            [0.1, 0.3, 0.4, 0.2]
        )
        sev_idx = _choice(rng, probs)
        severity = np.array(["low", "medium", "high", "critical"], dtype=object)[sev_idx]
        complaint = rng.random(m) < 0.06 + 0.55 * svc + 0.1 * (sev_idx >= 2)
        is_complaint = pd.array(complaint, dtype="boolean")
        is_complaint[_gaps(rng, "tickets", "is_complaint", m)] = pd.NA
        opened_s = rng.integers(7 * 3600, 20 * 3600, m)
        median_h = np.array([30.0, 24.0, 12.0, 6.0])[sev_idx] * (1 + svc)
        hours = rng.lognormal(np.log(median_h), 0.9)
        closed_s = opened_s + np.round(hours * 3600)
        closed_day = day + closed_s // 86_400
        closed_s = closed_s % 86_400
        open_forever = rng.random(m) < 0.01
        closed_day = np.where(open_forever | (closed_day > days - 1), np.nan, closed_day)
        frame = pd.DataFrame(
            {
                "account_id": self.ids[acc],
                "opened_at": self.window.stamps(day, opened_s),
                "closed_at": self.window.stamps(closed_day, closed_s),
                "severity": severity,
                "is_complaint": is_complaint,
            }
        )
        return frame.sort_values(["opened_at", "account_id"], kind="stable", ignore_index=True)

    # --- all tables

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every contract table of this chunk, typed (string/object, datetime64, float, boolean)."""
        projects = self._projects()
        frames = {
            "accounts": self.accounts_frame(),
            "churn_events": self.churn_frame(),
            "interactions": self.interactions_frame(),
            "contacts": self.contacts_frame(),
            "invoices": self.invoices_frame(projects),
            "projects": self.projects_frame(projects),
            "surveys": self.surveys_frame(projects),
            "tickets": self.tickets_frame(),
        }
        return {name: _typed(TABLES[name], frames[name]) for name, frame in frames.items()}


def _book_tenures(rng: np.random.Generator, n: int) -> np.ndarray:
    """Tenures (years) of the clients on the books at the window start: the survivors of a
    steady intake under the churn hazard (so densities fall with tenure), up to 25 years."""
    grid = np.linspace(0, 25, 2501)
    hazard = TIER_HAZARD.mean()
    cum = hazard * (
        HAZARD_FIRST_YEAR * np.minimum(grid, 1) + HAZARD_LATER * np.maximum(grid - 1, 0)
    )
    density = np.exp(-cum)
    cdf = np.concatenate([[0], np.cumsum((density[1:] + density[:-1]) / 2)])
    cdf /= cdf[-1]
    return np.maximum(np.interp(rng.random(n), cdf, grid), 2 / DAYS_PER_YEAR)


def _assign_reasons(rng: np.random.Generator, stage: np.ndarray) -> np.ndarray:
    """Churn reasons with the design mix exactly (largest remainder) and a tilt by lifecycle
    stage at churn: new clients lean to service quality, long-term ones to budget and people."""
    m = len(stage)
    reasons = np.full(m, "other", dtype=object)
    if not m:
        return reasons
    shares = np.array([*(REASON_MIX[r] for r in REASON_AXIS), 0.0])
    shares = shares / shares.sum() * (1 - OTHER_SHARE)
    shares[-1] = OTHER_SHARE
    counts = _largest_remainder(m, shares)
    perm = rng.permutation(m)
    rest = perm[counts[-1] :]
    key = rng.random(len(rest)) + STAGE_TILT[stage[rest]]
    ordered = rest[np.argsort(key, kind="stable")]
    bounds = np.concatenate([[0], np.cumsum(counts[:-1])])
    for i, name in enumerate(REASON_AXIS):
        reasons[ordered[bounds[i] : bounds[i + 1]]] = name
    return reasons


# --- typing, messy rows and writing ----------------------------------------------------------


def _typed(table: Table, frame: pd.DataFrame) -> pd.DataFrame:
    """The table's columns, in contract order, with the demo's internal types: str columns as
    object, dates and timestamps as datetime64[s], floats as float64, bools as boolean."""
    out = {}
    for col in table.columns:
        values = frame[col.name]
        if col.kind in ("date", "timestamp"):
            out[col.name] = pd.Series(np.asarray(values, dtype="datetime64[s]"))
        elif col.kind == "float":
            out[col.name] = pd.Series(np.asarray(values, dtype=np.float64))
        elif col.kind == "bool":
            out[col.name] = pd.Series(pd.array(values, dtype="boolean"))
        else:
            out[col.name] = pd.Series(np.asarray(values, dtype=object))
    return pd.DataFrame(out)


def _to_text(table: Table, frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as written to CSV: ISO dates and timestamps, true/false, empty for null."""
    if frame.empty:  # numpy's string functions refuse empty arrays
        return pd.DataFrame({c: pd.Series(dtype=object) for c in table.column_names})
    out = {}
    for col in table.columns:
        values = frame[col.name]
        if col.kind in ("date", "timestamp"):
            unit: Literal["D", "s"] = "D" if col.kind == "date" else "s"
            arr = values.to_numpy(dtype="datetime64[s]")
            text = np.datetime_as_string(arr, unit=unit)
            text = np.char.replace(text, "T", " ") if col.kind == "timestamp" else text
            text = np.where(np.isnat(arr), "", text)
        elif col.kind == "float":
            arr = values.to_numpy(dtype=np.float64)
            text = np.where(np.isnan(arr), "", arr.astype(str))
        elif col.kind == "bool":
            text = values.map({True: "true", False: "false"}).fillna("").to_numpy(dtype=object)
        else:
            text = values.fillna("").to_numpy(dtype=object)
        out[col.name] = np.asarray(text, dtype=object)
    return pd.DataFrame(out)


def _messy_rows(
    rng: np.random.Generator, table: Table, frame: pd.DataFrame, firm: _Firm, fmt: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """A few extra rows that break the contract, and where each goes among the clean rows:
    duplicate keys (keyed tables; placed after their original), unparsable dates, unknown
    account ids and (surveys) out-of-range scores. The same rows whatever the format."""
    n = len(frame)
    count = min(int(np.floor(n * MESSY_SHARE + rng.random())), int(np.floor(n * MESSY_CAP)))
    if count == 0:
        return frame.iloc[:0], np.empty(0)
    kinds = ["bad_date"]
    if table.key:
        kinds.append("duplicate")
    if table.references_accounts:
        kinds.append("unknown_account")
    if table.name == "surveys":
        kinds.append("bad_score")
    source = rng.integers(0, n, count)
    rows = frame.iloc[source].reset_index(drop=True).copy()
    kind = np.array(kinds)[rng.integers(0, len(kinds), count)]
    # anywhere, except that a duplicate comes after the row it repeats
    anywhere = rng.integers(0, n, count)
    after = source + (rng.random(count) * (n - source)).astype(np.int64)
    position = np.where(kind == "duplicate", after, anywhere) + 0.5
    new_ids = firm.ids_beyond(rng, count)
    bad_dates = np.array(BAD_DATES, dtype=object)[rng.integers(0, len(BAD_DATES), count)]
    bad_scores = np.array([11.0, 42.0, -1.0, 100.0])[rng.integers(0, 4, count)]
    text = fmt == "csv"
    bad = kind == "bad_date"
    if bad.any():
        date_col = table.stamp or "started_at"
        rows[date_col] = rows[date_col].astype(object)
        # Parquet columns are typed: there an unreadable date becomes an empty required date
        rows.loc[bad, date_col] = bad_dates[bad] if text else None
        if table.name == "accounts":
            # a new, never referenced account whose start date cannot be read
            rows.loc[bad, "account_id"] = new_ids[bad]
    unknown = kind == "unknown_account"
    if unknown.any():
        rows.loc[unknown, "account_id"] = new_ids[unknown]
    score = kind == "bad_score"
    if score.any():
        rows["score"] = rows["score"].astype(object)
        values = bad_scores[score]
        rows.loc[score, "score"] = values.astype(str).astype(object) if text else values
    return rows, position


def _interleave(frame: pd.DataFrame, messy: pd.DataFrame, position: np.ndarray) -> pd.DataFrame:
    """The clean rows with the messy rows inserted at their positions."""
    if messy.empty:
        return frame
    pos = np.concatenate([np.arange(len(frame)), position])
    merged = pd.concat([frame.astype(object), messy.astype(object)], ignore_index=True)
    return merged.iloc[np.argsort(pos, kind="stable")].reset_index(drop=True)


class _Writer:
    """Appends chunk after chunk to one table file (CSV text, or Parquet row groups)."""

    def __init__(self, folder: Path, table: Table, fmt: str) -> None:
        self.table = table
        for other in FORMATS:
            (folder / f"{table.name}.{other}").unlink(missing_ok=True)
        self.path = folder / f"{table.name}.{fmt}"
        self._handle = None
        self._parquet = None
        if fmt == "csv":
            self._handle = self.path.open("w", encoding="utf-8", newline="")
            self._handle.write(",".join(table.column_names) + "\n")
        else:
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(self.path, _arrow_schema(table))

    def write(self, frame: pd.DataFrame) -> None:
        if self._handle is not None:
            frame.to_csv(self._handle, header=False, index=False, lineterminator="\n")
        elif self._parquet is not None:
            import pyarrow as pa

            schema = _arrow_schema(self.table)
            arrays = [_arrow_column(frame[f.name], f.type) for f in schema]
            self._parquet.write_table(pa.Table.from_arrays(arrays, schema=schema))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        if self._parquet is not None:
            self._parquet.close()


def _arrow_schema(table: Table) -> pa.Schema:
    import pyarrow as pa

    types: dict[str, Callable[[], pa.DataType]] = {
        "str": pa.string,
        "date": pa.date32,
        "timestamp": lambda: pa.timestamp("s"),
        "float": pa.float64,
        "bool": pa.bool_,
    }
    return pa.schema([pa.field(c.name, types[c.kind]()) for c in table.columns])


def _arrow_column(values: pd.Series, kind: pa.DataType) -> pa.Array:
    """One column of a chunk (typed, or object where messy rows were mixed in) as Arrow."""
    import pyarrow as pa

    if pa.types.is_date32(kind) or pa.types.is_timestamp(kind):
        stamps = pd.to_datetime(values, errors="coerce").to_numpy(dtype="datetime64[s]")
        arr = pa.array(stamps, type=pa.timestamp("s"), from_pandas=True)
        return arr.cast(kind) if pa.types.is_date32(kind) else arr
    if pa.types.is_floating(kind):
        return pa.array(pd.to_numeric(values, errors="coerce"), type=kind, from_pandas=True)
    if pa.types.is_boolean(kind):
        return pa.array(pd.array(values, dtype="boolean"), type=kind)
    return pa.array(values.astype(object).where(values.notna(), None), type=kind)
