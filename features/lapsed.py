"""Lapsed clients and win-backs (docs/domain.md#lapsed-clients-and-win-backs): pure functions
of the tables and a date.

A client is **lapsed** at a date ``as_of`` when it bought at least once before ``as_of`` and
is past its silence window: no activity (an invoice or interaction, :data:`ACTIVITY`, the
records the inactivity label counts) in ``[as_of - N days, as_of)``, where N is the
inactivity label's window (:func:`features.snapshots.silence_window`: max(min_silence_days,
purchase_cycles x the median gap between its distinct invoice days before ``as_of``)).
Records stamped on or after ``as_of`` are never read.

With its last activity on day ``l``, an account is still active on day ``l + N`` (the window
``[as_of - N, as_of)`` still holds day ``l``) and lapsed from day ``l + N + 1``: its
**lapse date** (``lapsed_on``). N is fixed from the day after ``l`` on, since no invoice
comes between ``l`` and the next activity.

A **lapse** runs from its lapse date to the day activity resumes (``back_on``, the first
activity after ``l``; the account is lapsed on every day from ``lapsed_on`` to ``back_on``).
It is a **win-back** when that day has an invoice: the client bought again. A lapse ended by
an interaction alone (a call, a meeting) is not one; if the client then stays silent it
lapses again, and a purchase after that second lapse is the win-back.

Per period ``[start, end)`` (quarters on the retention page): **lapsed** = clients lapsed on
some day of it (lapsed at ``start``, or lapsing before ``end``); **won back** = clients with
a win-back dated in it, always among the lapsed; **win-back rate** = won back / lapsed.

Everything works on whole days (day numbers since 1970) over whole tables: one sort and a
few grouped shifts, no loop over accounts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd

from churn.settings import SnapshotSettings
from features.contract import Tables
from features.signals.timeline import DAY, NAT, seconds
from features.snapshots import ACTIVITY, silence_window

PURCHASES = "invoices"
"""The activity that is a purchase: an invoice, dated by ``issued_at``."""
REVENUE_LOST_DAYS = 365
"""Revenue lost: invoiced in the 365 days ending with the last purchase (``revenue_365d`` the
day after it)."""

LAPSED_COLUMNS: tuple[str, ...] = (
    "account_id",
    "account_manager",
    "name",
    "last_purchase",
    "last_activity",
    "usual_cycle_days",
    "silence_days",
    "lapsed_on",
    "days_silent",
    "revenue_lost",
    "lifetime_revenue",
)
EPISODE_COLUMNS: tuple[str, ...] = (
    "account_id",
    "last_purchase",
    "last_activity",
    "usual_cycle_days",
    "silence_days",
    "lapsed_on",
    "back_on",
    "won_back",
)
ACTIVITY_COLUMNS: tuple[str, ...] = ("account_id", "day", "invoiced", "invoices", "interactions")


def _day_number(as_of: date | pd.Timestamp | str) -> int:
    stamp = pd.Timestamp(as_of)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return int(stamp.normalize().value // (DAY * 1_000_000_000))


def _to_dates(days: pd.Series | np.ndarray) -> pd.Series:
    """Day numbers (float, NaN for none) as ``datetime64[ns]`` dates (NaT for none)."""
    values = np.asarray(days, dtype=np.float64)
    out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    known = np.isfinite(values)
    out[known] = (values[known].astype(np.int64) * DAY).astype("datetime64[s]")
    return pd.Series(out)


def daily_activity(tables: Tables, as_of: date | pd.Timestamp | str | None = None) -> pd.DataFrame:
    """One row per account and day with activity (before ``as_of`` when given): the invoiced
    amount, the number of invoices and of interactions. Everything this module reads from the
    tables; :func:`activity_tables` turns it back into tables giving the same answers."""
    limit = None if as_of is None else _day_number(as_of) * DAY
    # Accounts as codes in id order: grouping on integers, rows still sorted by account id.
    known = pd.Index(pd.unique(tables.accounts["account_id"].astype("string"))).sort_values()
    parts = []
    for name, stamp in ACTIVITY:
        frame = tables.get(name)
        if frame is None or frame.empty:
            continue
        secs = seconds(frame[stamp])
        keep = secs != NAT
        if limit is not None:
            keep &= secs < limit
        code = known.get_indexer(frame["account_id"].astype("string"))
        keep &= code >= 0
        purchase = name == PURCHASES
        amount = (
            pd.to_numeric(frame["amount"], errors="coerce").fillna(0.0).to_numpy(np.float64)
            if purchase
            else np.zeros(len(frame))
        )
        parts.append(
            pd.DataFrame(
                {
                    "code": code[keep],
                    "day": secs[keep] // DAY,
                    "invoiced": amount[keep],
                    "invoices": np.full(int(keep.sum()), int(purchase)),
                    "interactions": np.full(int(keep.sum()), int(not purchase)),
                }
            )
        )
    if not parts:
        return pd.DataFrame(
            {
                "account_id": pd.Series(dtype="string"),
                "day": pd.Series(dtype="datetime64[ns]"),
                "invoiced": pd.Series(dtype="float64"),
                "invoices": pd.Series(dtype="int64"),
                "interactions": pd.Series(dtype="int64"),
            }
        )
    events = pd.concat(parts, ignore_index=True)
    daily = events.groupby(["code", "day"], as_index=False, sort=True).sum()
    daily["account_id"] = pd.array(known[daily["code"].to_numpy()], dtype="string")
    daily["day"] = _to_dates(daily["day"].to_numpy())
    return daily[list(ACTIVITY_COLUMNS)].reset_index(drop=True)


def activity_tables(accounts: pd.DataFrame, activity: pd.DataFrame) -> Tables:
    """Tables holding just what :func:`daily_activity` kept: one invoice per account and day
    with invoices (the day's amount) and one interaction per day with interactions. Every
    function of this module answers on them as on the original tables."""
    act = activity.reset_index(drop=True)
    day = pd.to_datetime(act["day"]).dt.normalize()
    bought = pd.to_numeric(act["invoices"], errors="coerce").fillna(0).to_numpy() > 0
    talked = pd.to_numeric(act["interactions"], errors="coerce").fillna(0).to_numpy() > 0
    ids = act["account_id"].astype("string")
    invoices = pd.DataFrame(
        {
            "account_id": ids[bought].reset_index(drop=True),
            "invoice_id": pd.Series([f"day-{i}" for i in range(int(bought.sum()))], dtype="string"),
            "issued_at": day[bought].reset_index(drop=True),
            "due_at": day[bought].reset_index(drop=True),
            "amount": pd.to_numeric(act["invoiced"], errors="coerce")[bought].reset_index(
                drop=True
            ),
        }
    )
    interactions = pd.DataFrame(
        {
            "account_id": ids[talked].reset_index(drop=True),
            "occurred_at": day[talked].reset_index(drop=True),
        }
    )
    frame = accounts.reset_index(drop=True).copy()
    for column in ("name", "account_manager"):
        if column not in frame:
            frame[column] = pd.Series(pd.NA, index=frame.index, dtype="string")
    return Tables(accounts=frame, invoices=invoices, interactions=interactions)


def lapse_episodes(
    tables: Tables, as_of: date | pd.Timestamp | str, cfg: SnapshotSettings
) -> pd.DataFrame:
    """Every lapse that began on or before ``as_of`` (records before ``as_of`` only), one row
    each (:data:`EPISODE_COLUMNS`): the last purchase and activity before it, the usual cycle
    and window N at that time, its lapse date, the day activity resumed (NaT: still lapsed at
    ``as_of``) and whether that day brought a purchase (a win-back). Sorted by account and
    lapse date."""
    return _episodes(tables, as_of, cfg, daily_activity(tables, as_of))


def _episodes(
    tables: Tables, as_of: date | pd.Timestamp | str, cfg: SnapshotSettings, daily: pd.DataFrame
) -> pd.DataFrame:
    limit = _day_number(as_of)
    if daily.empty:
        return _empty_episodes()
    day = (daily["day"].to_numpy("datetime64[s]").view(np.int64) // DAY).astype(np.int64)
    acc = daily["account_id"]
    same_next = acc.eq(acc.shift(-1)).fillna(False).to_numpy(dtype=bool)
    bought = daily["invoices"].to_numpy() > 0
    next_day = np.where(same_next, np.roll(day, -1), -1)
    next_bought = np.where(same_next, np.roll(bought, -1), False)
    has_bought = pd.Series(bought).groupby(acc.to_numpy()).cumsum().to_numpy() > 0
    last_purchase = (
        pd.Series(np.where(bought, day, np.nan)).groupby(acc.to_numpy()).ffill().to_numpy()
    )
    # The window the day after each active day: every invoice up to that day is known.
    after = pd.Series(((day + 1) * DAY).astype("datetime64[s]").astype("datetime64[ns]"))
    cycle, window = silence_window(tables, cfg, acc.reset_index(drop=True), after)
    lapse_day = day + window.astype(np.int64) + 1
    ended = same_next & (next_day >= lapse_day)
    still = ~same_next & (lapse_day <= limit)
    keep = has_bought & (ended | still)
    out = pd.DataFrame(
        {
            "account_id": acc.to_numpy()[keep],
            "last_purchase": _to_dates(last_purchase[keep]),
            "last_activity": _to_dates(day[keep].astype(np.float64)),
            "usual_cycle_days": cycle[keep],
            "silence_days": window[keep].astype(np.int64),
            "lapsed_on": _to_dates(lapse_day[keep].astype(np.float64)),
            "back_on": _to_dates(np.where(ended, next_day, np.nan)[keep]),
            "won_back": (ended & next_bought)[keep],
        }
    )
    out["account_id"] = out["account_id"].astype("string")
    return out.reset_index(drop=True)


def _empty_episodes() -> pd.DataFrame:
    dates = {"last_purchase", "last_activity", "lapsed_on", "back_on"}
    kinds = {"account_id": "string", "usual_cycle_days": "float64", "silence_days": "int64"}
    return pd.DataFrame(
        {
            c: pd.Series(dtype="datetime64[ns]" if c in dates else kinds.get(c, "bool"))
            for c in EPISODE_COLUMNS
        }
    )


def lapsed_accounts(
    tables: Tables, as_of: date | pd.Timestamp | str, cfg: SnapshotSettings
) -> pd.DataFrame:
    """The clients lapsed at ``as_of`` (:data:`LAPSED_COLUMNS`), most revenue lost first
    (then account id): manager and name from ``accounts``, last purchase and last activity,
    usual cycle and window N, lapse date, days since the last activity, revenue lost (invoiced
    in the 365 days ending with the last purchase) and lifetime revenue (invoiced before
    ``as_of``). Accounts starting on or after ``as_of`` are left out, as in the snapshots."""
    limit = _day_number(as_of)
    daily = daily_activity(tables, as_of)
    episodes = _episodes(tables, as_of, cfg, daily)
    current = episodes[episodes["back_on"].isna()].reset_index(drop=True)
    accounts = tables.accounts.reset_index(drop=True)
    ids = accounts["account_id"].astype("string")
    started = pd.to_datetime(accounts["started_at"])
    late = ~(started < pd.Timestamp(limit * DAY, unit="s"))  # as the snapshots: NaT is late
    current = current[~current["account_id"].isin(ids[late])].reset_index(drop=True)
    lifetime = daily.groupby("account_id")["invoiced"].sum()
    spans = current[["account_id", "last_purchase"]].merge(
        daily[["account_id", "day", "invoiced"]], on="account_id"
    )
    recent = spans["day"] > spans["last_purchase"] - pd.Timedelta(days=REVENUE_LOST_DAYS)
    lost = spans[recent & (spans["day"] <= spans["last_purchase"])]
    lost_by = lost.groupby("account_id")["invoiced"].sum()
    facts = pd.DataFrame(
        {
            "account_manager": accounts.get("account_manager", pd.Series(pd.NA, index=ids.index))
            .astype("string")
            .to_numpy(),
            "name": accounts.get("name", pd.Series(pd.NA, index=ids.index))
            .astype("string")
            .to_numpy(),
        },
        index=ids.to_numpy(),
    )
    out = pd.DataFrame(
        {
            "account_id": current["account_id"],
            "account_manager": current["account_id"].map(facts["account_manager"]),
            "name": current["account_id"].map(facts["name"]),
            "last_purchase": current["last_purchase"],
            "last_activity": current["last_activity"],
            "usual_cycle_days": current["usual_cycle_days"],
            "silence_days": current["silence_days"],
            "lapsed_on": current["lapsed_on"],
            "days_silent": (pd.Timestamp(limit * DAY, unit="s") - current["last_activity"]).dt.days,
            # Sums of amounts in cents: no float residue (743928.9700000001) in the API.
            "revenue_lost": current["account_id"]
            .map(lost_by)
            .fillna(0.0)
            .astype("float64")
            .round(2),
            "lifetime_revenue": current["account_id"]
            .map(lifetime)
            .fillna(0.0)
            .astype("float64")
            .round(2),
        }
    )
    out["account_manager"] = out["account_manager"].astype("string")
    out["name"] = out["name"].astype("string")
    out = out.sort_values(
        ["revenue_lost", "account_id"], ascending=[False, True], kind="stable", ignore_index=True
    )
    return out[list(LAPSED_COLUMNS)]


def winbacks_by_period(
    episodes: pd.DataFrame, periods: Sequence[tuple[date, date]]
) -> pd.DataFrame:
    """Per period ``[start, end)``: clients lapsed on some day of it (``lapsed``), clients won
    back in it (``won_back``) and ``win_back_rate`` = won_back / lapsed (NaN without lapsed
    clients). ``episodes`` from :func:`lapse_episodes` at a date on or after every ``end``."""
    rows = []
    lapsed_on, back_on = episodes["lapsed_on"], episodes["back_on"]
    for start, end in periods:
        s, e = pd.Timestamp(start), pd.Timestamp(end)
        lapsed = (lapsed_on < e) & (back_on.isna() | (back_on >= s))
        won = episodes["won_back"].astype(bool) & (back_on >= s) & (back_on < e)
        rows.append(
            {
                "start": s.date(),
                "end": e.date(),
                "lapsed": int(episodes.loc[lapsed, "account_id"].nunique()),
                "won_back": int(episodes.loc[won, "account_id"].nunique()),
            }
        )
    out = pd.DataFrame(rows, columns=["start", "end", "lapsed", "won_back"])
    out["win_back_rate"] = (out["won_back"] / out["lapsed"].where(out["lapsed"] > 0)).astype(
        "float64"
    )
    return out


__all__ = [
    "ACTIVITY_COLUMNS",
    "EPISODE_COLUMNS",
    "LAPSED_COLUMNS",
    "PURCHASES",
    "REVENUE_LOST_DAYS",
    "activity_tables",
    "daily_activity",
    "lapse_episodes",
    "lapsed_accounts",
    "winbacks_by_period",
]
