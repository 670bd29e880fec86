"""Point-in-time snapshots: one row per account active at each ``as_of`` date, with
every catalogue feature, the label and the rule-based scores.

Point in time. A record is known from its stamp (``Table.stamp``): only records stamped strictly
before ``as_of`` count, and a record's later dates count only once they are before ``as_of``
too (an invoice is paid when ``paid_at < as_of``, a contact or project ended when
``ended_at < as_of``, a ticket closed when ``closed_at < as_of``). ``accounts.renewal_at`` and
``contract_value`` are static attributes. Adding, removing or changing records stamped on or
after ``as_of`` never changes a row's features or scores (tests/test_point_in_time.py).

Active accounts and labels, with horizon h (``cfg.horizon_days``):

* ``events`` mode: active when ``started_at < as_of`` and no churn event before ``as_of``;
  ``churned`` is 1.0 when ``churned_at`` falls in ``(as_of, as_of + h]`` (whole days), else
  0.0. An account churning exactly on ``as_of`` is still active at ``as_of`` (its churn is not
  strictly before it) and labelled 0.0 there, since the label interval is open at ``as_of``;
  the snapshots of the months before carry its 1.0.
* ``inactivity`` mode: with N = max(``cfg.min_silence_days``, ``cfg.purchase_cycles`` x the
  median gap in days between the account's distinct invoice dates before ``as_of``; the floor
  when it has fewer than two), rounded up to whole days: active when ``started_at < as_of`` and
  an invoice or interaction (any status) was stamped in ``[as_of - N days, as_of)``;
  ``churned`` is 1.0 when none is stamped in ``(as_of, as_of + W]`` with W = max(h, N), the
  last day counted whole (an invoice dated exactly ``as_of`` is in neither window).

``churned`` is NaN (unlabeled: scored, never trained on) when ``label_window_end`` = as_of + h
(or + W) is after the end of the observed data (:func:`observed_end`), or in events mode when
the source has no ``churn_events``.

Engine: every feature family runs over whole tables with sorted int64 keys and
``np.searchsorted`` (:mod:`features.signals.timeline`): no loop over accounts or dates, cost
O((events + rows) log events). Rows depend only on their own account's records, so
:func:`build_features` gives identical rows on any subset of accounts (one Dask partition)
when given the same ``data_end``. Two steps look across accounts and run on the whole grid
afterwards: :func:`assign_segments` (``revenue_segment`` ranks the accounts of an as_of) and
:func:`add_health` (the health score reads the segment's expected cadence, and
``health_score_30d_ago`` is the row of the same account 30 days earlier). A partitioned run
calls :func:`build_features` per partition for the as_of dates and the dates 30 days before
(:func:`history_dates`), concatenates, then calls :func:`assign_segments` and
:func:`add_health` once; :func:`build_snapshots` does exactly that in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd

from churn.errors import ChurnError, ConfigError, DataContractError
from churn.settings import SnapshotSettings
from features.catalog import CATALOG, FAMILIES, FEATURES
from features.contract import TABLE_NAMES, TABLES, Tables
from features.signals import compute_features
from features.signals.financial import INVOICE_EVIDENCE, invoice_evidence
from features.signals.purchase import purchase_days
from features.signals.timeline import DAY, NAT, Grid, Timeline, seconds

if TYPE_CHECKING:
    from features.health import HealthConfig

logger = logging.getLogger("features.snapshots")

IDENTITY: tuple[str, ...] = ("account_id", "as_of", "account_manager")
LABELS: tuple[str, ...] = ("churned", "label_window_end")
HEALTH_LOOKBACK_DAYS = 30
# History before the first as_of when ``snapshots.history_months`` is unset: a quarter of the
# data's span in whole months, at least 1 and at most HISTORY_MONTHS (docs/split.md).
HISTORY_MONTHS = 6
HISTORY_SHARE_OF_SPAN = 4


# ------------------------------------------------------------------------------ the data's span


def absent_features(tables: Tables) -> dict[str, list[str]]:
    """Missing table -> the catalogue features it leaves absent (NaN)."""
    return {
        name: [f.name for f in CATALOG if name in f.tables]
        for name in tables.missing
        if any(name in f.tables for f in CATALOG)
    }


def absent_families(tables: Tables) -> dict[str, list[str]]:
    """Family -> the missing tables some of its features need (families with none left out)."""
    out: dict[str, list[str]] = {}
    missing = set(tables.missing)
    for family in FAMILIES:
        needs = {t for f in CATALOG if f.family == family for t in f.tables}
        gone = [t for t in TABLE_NAMES if t in needs & missing]
        if gone:
            out[family] = gone
    return out


def _log_absent(tables: Tables, cfg: SnapshotSettings) -> None:
    for table, names in absent_features(tables).items():
        logger.warning(
            "table %s is missing: %d features absent (NaN): %s", table, len(names), ", ".join(names)
        )
    if cfg.label_mode == "events" and tables.churn_events is None:
        logger.warning(
            "table churn_events is missing: labels (events mode) are absent; "
            "use label_mode inactivity for sources without churn events"
        )


def _stamp_bounds(tables: Tables) -> tuple[list[pd.Timestamp], list[pd.Timestamp]]:
    lows, highs = [], []
    for name, frame in tables:
        stamp = TABLES[name].stamp
        if stamp is None or stamp not in frame.columns or not len(frame):
            continue
        values = pd.to_datetime(frame[stamp])
        if values.notna().any():
            lows.append(values.min())
            highs.append(values.max())
    return lows, highs


def observed_end(tables: Tables) -> pd.Timestamp:
    """The last day the source recorded something (:meth:`Tables.data_end`: record stamps
    only, since due dates, planned ends and renewals may lie in the future). Label windows
    must end on or before it."""
    return tables.data_end()


def _observed_start(tables: Tables) -> pd.Timestamp:
    lows, _ = _stamp_bounds(tables)
    if not lows:
        lows = [pd.to_datetime(tables.accounts["started_at"]).min()]
    if pd.isna(lows[0]):
        raise DataContractError(
            "the source holds no dated records", hint="check that accounts.started_at is filled"
        )
    return pd.Timestamp(min(lows)).tz_localize(None).normalize()


def _whole_months(start: pd.Timestamp, end: pd.Timestamp) -> int:
    months = int((end.year - start.year) * 12 + end.month - start.month)
    return max(0, months - (1 if end.day < start.day else 0))


def history_months(tables: Tables, cfg: SnapshotSettings) -> int:
    """Months of data before the first as_of: ``cfg.history_months``, or when unset a quarter
    of the whole months from the first to the last record, between 1 and ``HISTORY_MONTHS`` (two
    years or more keep six months, eighteen months of invoices four)."""
    if cfg.history_months is not None:
        return cfg.history_months
    span = _whole_months(_observed_start(tables), observed_end(tables).tz_localize(None))
    return min(HISTORY_MONTHS, max(1, span // HISTORY_SHARE_OF_SPAN))


def as_of_grid(
    tables: Tables,
    cfg: SnapshotSettings,
    start: date | None = None,
    end: date | None = None,
) -> list[date]:
    """The as_of dates at ``cfg.frequency`` (month starts by default) from the first month with
    data plus :func:`history_months` (or ``start``) to the end of the data (or ``end``)."""
    first = (
        pd.Timestamp(start)
        if start is not None
        else _observed_start(tables) + pd.DateOffset(months=history_months(tables, cfg))
    )
    last = pd.Timestamp(end) if end is not None else observed_end(tables)
    try:
        dates = pd.date_range(first.normalize(), last.normalize(), freq=cfg.frequency)
    except ValueError as exc:
        raise ConfigError(
            f"snapshots.frequency {cfg.frequency!r} is not a pandas offset alias",
            hint="use e.g. MS (month starts), W-MON (Mondays) or QS (quarter starts)",
        ) from exc
    return [d.date() for d in dates]


def history_dates(as_of: Sequence[date | pd.Timestamp | str]) -> list[pd.Timestamp]:
    """The dates ``HEALTH_LOOKBACK_DAYS`` before each as_of (for ``health_score_30d_ago``)."""
    return [d - pd.Timedelta(days=HEALTH_LOOKBACK_DAYS) for d in _dates(as_of)]


# ---------------------------------------------------------------------------- grid and labels


def _dates(as_of: Sequence[date | pd.Timestamp | str]) -> list[pd.Timestamp]:
    out = set()
    for value in as_of:
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError) as exc:
            raise ChurnError(f"as_of {value!r} is not a date", hint="use YYYY-MM-DD") from exc
        if pd.isna(stamp):
            raise ChurnError(f"as_of {value!r} is not a date", hint="use YYYY-MM-DD")
        out.add(stamp.tz_localize(None).normalize() if stamp.tzinfo else stamp.normalize())
    return sorted(out)


def _accounts(tables: Tables) -> pd.DataFrame:
    accounts = tables.accounts.reset_index(drop=True)
    ids = accounts["account_id"].astype("string")
    if ids.duplicated().any():
        raise DataContractError(
            f"accounts: account_id repeats ({ids[ids.duplicated()].nunique()} ids)",
            hint="load the source through features.validate, which rejects duplicate keys",
        )
    return accounts


ACTIVITY: tuple[tuple[str, str], ...] = (("invoices", "issued_at"), ("interactions", "occurred_at"))
"""The records (table, stamp) that count as an account's activity in the inactivity mode."""


def _usual_cycles(invoices: pd.DataFrame | None, grid: Grid) -> Timeline:
    """The running median of the gaps between an account's distinct invoice days
    (:func:`features.signals.purchase.purchase_days`), each known from the later invoice's
    day."""
    if invoices is None:
        return Timeline(np.empty(0, np.int64), np.empty(0, np.int64), {"median": []})
    acc, issued = grid.code(invoices["account_id"]), seconds(invoices["issued_at"])
    keep = (acc >= 0) & (issued != NAT)
    days = purchase_days(acc[keep], issued[keep]).dropna(subset=["gap"])
    return Timeline(
        days["acc"].to_numpy(), days["day"].to_numpy() * DAY, {"median": days["median"]}
    )


def _window_days(cfg: SnapshotSettings, cycle: np.ndarray) -> np.ndarray:
    """The inactivity window N in whole days from the usual cycles (NaN: the floor)."""
    scaled = np.ceil(cfg.purchase_cycles * cycle)
    return cast(np.ndarray, np.fmax(float(cfg.min_silence_days), scaled))


class _Activity:
    """Invoices and interactions of every account, for the inactivity mode."""

    def __init__(self, tables: Tables, grid: Grid, cfg: SnapshotSettings) -> None:
        accs, whens = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
        for name, col in ACTIVITY:
            frame = tables.get(name)
            if frame is not None:
                accs.append(grid.code(frame["account_id"]))
                whens.append(seconds(frame[col]))
        self.events = Timeline(np.concatenate(accs), np.concatenate(whens))
        self.cycles = _usual_cycles(tables.invoices, grid)
        self.cfg = cfg

    def silence_days(self, acc: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The inactivity window N of each row, in whole days."""
        return _window_days(self.cfg, self.cycles.value_at("median", self.cycles.last(acc, t)))

    def active(self, acc: np.ndarray, t: np.ndarray) -> np.ndarray:
        window = self.silence_days(acc, t)
        return self.events.count(acc, t - (window * DAY).astype(np.int64), t) > 0


def silence_window(
    tables: Tables, cfg: SnapshotSettings, account_id: pd.Series, at: pd.Series
) -> tuple[np.ndarray, np.ndarray]:
    """The inactivity mode's window at each (account, instant), as the label computes it:
    the usual cycle (median gap in days between the account's distinct invoice days before
    ``at``; NaN with fewer than two) and N in whole days (``cfg.min_silence_days`` at least).
    Unknown accounts get the floor."""
    empty = np.empty(0, np.int64)
    grid = Grid(empty, empty, _accounts(tables))
    cycles = _usual_cycles(tables.invoices, grid)
    cycle = cycles.value_at("median", cycles.last(grid.code(account_id), seconds(at)))
    return cycle, _window_days(cfg, cycle)


def _churn_events(tables: Tables, grid: Grid) -> Timeline | None:
    if tables.churn_events is None:
        return None
    frame = tables.churn_events
    return Timeline(grid.code(frame["account_id"]), seconds(frame["churned_at"]))


def _active_grid(
    tables: Tables, accounts: pd.DataFrame, dates: list[pd.Timestamp], cfg: SnapshotSettings
) -> tuple[Grid, _Activity | None, Timeline | None]:
    n_acc = len(accounts)
    t_dates = seconds(pd.Series(dates, dtype="datetime64[ns]"))
    acc = np.tile(np.arange(n_acc, dtype=np.int64), len(dates))
    t = np.repeat(t_dates, n_acc)
    started = seconds(pd.to_datetime(accounts["started_at"]))[acc]
    keep = (started != NAT) & (started < t)
    grid = Grid(acc[keep], t[keep], accounts)
    churn = _churn_events(tables, grid)
    if cfg.label_mode == "inactivity":
        activity = _Activity(tables, grid, cfg)
        alive = activity.active(grid.acc, grid.t)
    else:
        activity = None
        alive = (
            np.ones(len(grid), bool) if churn is None else churn.count(grid.acc, None, grid.t) == 0
        )
    return Grid(grid.acc[alive], grid.t[alive], accounts), activity, churn


def _labels(
    grid: Grid,
    cfg: SnapshotSettings,
    end: pd.Timestamp,
    activity: _Activity | None,
    churn: Timeline | None,
) -> dict[str, np.ndarray]:
    a, t = grid.acc, grid.t
    if activity is not None:
        window = np.fmax(float(cfg.horizon_days), activity.silence_days(a, t))
    else:
        window = np.full(len(grid), float(cfg.horizon_days))
    span = (window * DAY).astype(np.int64)
    # (as_of, as_of + window], the last day whole: [as_of + 1 s, as_of + window + 1 day)
    after, until = t + 1, t + span + DAY
    if activity is not None:
        churned = (activity.events.count(a, after, until) == 0).astype(np.float64)
    elif churn is not None:
        churned = (churn.count(a, after, until) > 0).astype(np.float64)
    else:
        churned = np.full(len(grid), np.nan)
    window_end = t + span
    churned[window_end > seconds(pd.Series([end]))[0]] = np.nan
    return {
        "churned": churned,
        "label_window_end": window_end.view("datetime64[s]").astype("datetime64[ns]"),
    }


def build_features(
    tables: Tables,
    as_of: Sequence[date | pd.Timestamp | str],
    cfg: SnapshotSettings,
    data_end: pd.Timestamp | None = None,
    health: HealthConfig | None = None,
) -> pd.DataFrame:
    """Identity, features and labels of every account active at each as_of; ``revenue_segment``
    is left empty for :func:`assign_segments`. Rows are account-local: a subset of accounts gives
    the same rows (pass the whole source's ``data_end``, default :func:`observed_end`).

    With ``health`` the invoice evidence of the escalations (``INVOICE_EVIDENCE``, not model
    features) follows the features, with that config's invoice thresholds."""
    dates = _dates(as_of)
    accounts = _accounts(tables)
    end = observed_end(tables) if data_end is None else pd.Timestamp(data_end).normalize()
    grid, activity, churn = _active_grid(tables, accounts, dates, cfg)
    features = compute_features(tables, grid)
    if health is not None:
        rule = health.escalations.esc_invoice_30d_late
        evidence = invoice_evidence(tables, grid, rule.threshold, rule.stale_days)
        extra = pd.DataFrame(
            {
                name: pd.array(values, dtype="string") if values.dtype == object else values
                for name, values in evidence.items()
            }
        )
        features = pd.concat([features, extra], axis=1)
    labels = _labels(grid, cfg, end, activity, churn)
    identity = pd.DataFrame(
        {
            "account_id": grid.account_values("account_id").astype("string"),
            "as_of": grid.t.view("datetime64[s]").astype("datetime64[ns]"),
            "account_manager": grid.account_values("account_manager").astype("string"),
        }
    )
    frame = pd.concat([identity, features, pd.DataFrame(labels)], axis=1)
    return frame.sort_values(["as_of", "account_id"], kind="stable", ignore_index=True)


# ---------------------------------------------------------------------- cross-account steps


def assign_segments(frame: pd.DataFrame) -> pd.DataFrame:
    """Set ``revenue_segment`` (A top 20 %, B middle 60 %, C bottom 20 %) by ranking the rows of
    each as_of on ``revenue_365d`` (``contract_value`` where no row of that date has revenue,
    i.e. the source has no invoices). Ties share a segment (average percentile rank); a row
    without a value gets none. Needs the whole grid of a date: run it after any partitioning.
    Returns a new frame (the input is left as it is).
    """
    has_revenue = frame.groupby("as_of")["revenue_365d"].transform("count") > 0
    basis = frame["revenue_365d"].where(has_revenue, frame["contract_value"])
    pct = basis.groupby(frame["as_of"]).rank(method="average", pct=True)
    segment = np.select(
        [pct > 0.8, pct <= 0.2, pct.notna()],
        ["A", "C", "B"],
        default=None,  # type: ignore[call-overload]  # numpy accepts None (an object array)
    )
    return frame.assign(revenue_segment=pd.array(segment, dtype="string"))


def add_health(
    frame: pd.DataFrame, history: pd.DataFrame, health: HealthConfig | None = None
) -> pd.DataFrame:
    """Add the rule-based scores (``features.health``) to ``frame``, with
    ``health_score_30d_ago`` taken from ``history`` (rows at as_of - 30 days, segments
    assigned; NaN where the account was not active then) and the escalation flags."""
    from features.health import escalations, load_health_config, score_health

    cfg = load_health_config() if health is None else health
    frame = frame.reset_index(drop=True)
    scores = score_health(frame, cfg)
    past = history[["account_id", "as_of"]].copy()
    past["health_score_30d_ago"] = score_health(history, cfg)["health_score"].to_numpy()
    past["as_of"] = past["as_of"] + pd.Timedelta(days=HEALTH_LOOKBACK_DAYS)
    ago = frame[["account_id", "as_of"]].merge(
        past.drop_duplicates(["account_id", "as_of"]), how="left", on=["account_id", "as_of"]
    )["health_score_30d_ago"]
    ago = ago.astype("float64").set_axis(frame.index)
    late = frame.get("late_invoice_days_late")
    flags = escalations(
        scores["health_score"], ago, frame["overdue_days"], cfg, late_invoice_days_late=late
    )
    return pd.concat([frame, scores, ago.rename("health_score_30d_ago"), flags], axis=1)


def build_snapshots(
    tables: Tables,
    as_of: Sequence[date],
    cfg: SnapshotSettings,
    health: HealthConfig | None = None,
    with_health: bool = True,
    data_end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The snapshot frame of FEATURES.md for the given as_of dates: identity, features,
    labels and (``with_health``) health and service scores with escalations. Sorted by as_of,
    then account_id. See the module docstring for the point-in-time and label rules."""
    from features.health import load_health_config

    dates = _dates(as_of)
    _log_absent(tables, cfg)
    if not with_health:
        return assign_segments(build_features(tables, dates, cfg, data_end))
    health = load_health_config() if health is None else health
    past = history_dates(dates)
    every = build_features(tables, sorted(set(dates) | set(past)), cfg, data_end, health)
    every = assign_segments(every)
    frame = every[every["as_of"].isin(dates)]
    history = every[every["as_of"].isin(past)]
    return add_health(frame, history, health)


# ------------------------------------------------------------------------------------ output


def output_format(path: Path) -> str:
    """``"parquet"`` or ``"csv"`` from a file's extension; anything else is a ChurnError naming
    it (call this before a long run so a wrong name fails at once)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ChurnError(
            f"cannot write {path}: unknown extension {path.suffix or '(none)'!r}",
            hint="name the output file .parquet or .csv",
        )
    return suffix[1:]


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    """Write a frame as Parquet or CSV, chosen by the file's extension (folders created)."""
    path = Path(path)
    fmt = output_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, date_format="%Y-%m-%d")


def feature_columns() -> list[str]:
    """The feature columns of a snapshot, in catalogue order."""
    return list(FEATURES)


__all__ = [
    "ACTIVITY",
    "IDENTITY",
    "INVOICE_EVIDENCE",
    "LABELS",
    "absent_families",
    "absent_features",
    "add_health",
    "as_of_grid",
    "assign_segments",
    "build_features",
    "build_snapshots",
    "feature_columns",
    "history_dates",
    "history_months",
    "observed_end",
    "output_format",
    "silence_window",
    "write_frame",
]
