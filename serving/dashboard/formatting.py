"""How the dashboard words values: amounts, percentages, dates, changes and labels, as Jinja
filters of the one template environment shared by the pages and ``churn report``."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from functools import lru_cache
from typing import Any, NamedTuple

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from serving.dashboard import TEMPLATES_DIR
from serving.priority import BAND_LABELS, PRIORITY_LABELS
from serving.score_record import BY_COLUMN

# -- score field labels -----------------------------------------------------------------------
# Labels and maxima of score columns come from the score record (serving/score_record.py).


class FieldLabel(NamedTuple):
    """What the dashboard shows for one score column: its label and its maximum."""

    label: str
    maximum: float


STAGE_NAMES: Mapping[str, str] = {
    "new": "New",
    "established": "Established",
    "long_term": "Long-term",
}


class ServiceLevel(NamedTuple):
    """A range of the client service score (0-6) the portfolio can filter on."""

    label: str
    low: float
    high: float


#: The service score's levels, by query-string value: 0 is the worst worry (no point of the
#: worksheet), 1 to 4 are worry points, 5 and 6 are where firms want their top accounts.
SERVICE_LEVELS: Mapping[str, ServiceLevel] = {
    "0": ServiceLevel("0: worst", 0, 0),
    "1-4": ServiceLevel("1-4: worry", 1, 4),
    "0-4": ServiceLevel("0-4: any worry", 0, 4),
    "5-6": ServiceLevel("5-6: no worry", 5, 6),
}


class FlagWords(NamedTuple):
    """How the pages name a flag (``serving.flags``): a short marker for the portfolio's rows
    and filter, and the heading of the account page's flag box."""

    marker: str
    title: str


#: The words of each flag code; a code without words shows as its code in plain words.
FLAG_WORDS: Mapping[str, FlagWords] = {
    "quiet_risk": FlagWords("Model sees risk", "The model sees a risk the health rules do not"),
    "rule_only_risk": FlagWords("Rules see risk", "The health rules see a risk the model does not"),
    "stale_invoice": FlagWords("Check billing data", "Check the billing data"),
}


def flag_words(code: Any) -> FlagWords:
    """The marker and heading of flag ``code``."""
    text = str(code)
    if text in FLAG_WORDS:
        return FLAG_WORDS[text]
    plain = text.replace("_", " ").capitalize()
    return FlagWords(plain, plain)


class ServiceWorry(NamedTuple):
    """How the pages mark a service score: a CSS class (a band's colour) and a note."""

    css: str
    note: str


def service_worry(score: Any) -> ServiceWorry:
    """0 is the worst worry (critical), 1 to 4 a worry point (at risk), 5 and 6 none."""
    if is_missing(score):
        return ServiceWorry("", "client service worksheet")
    value = float(score)
    if value < 0.5:
        return ServiceWorry("critical", "worst worry: no point on the worksheet")
    if value < 4.5:
        return ServiceWorry("at_risk", "worry point (1-4)")
    return ServiceWorry("", "client service worksheet")


def field_label(column: str) -> FieldLabel:
    """The label and maximum the dashboard shows for the score column ``column`` (a bounded
    field of the score record)."""
    field = BY_COLUMN[column]
    if field.maximum is None:
        raise KeyError(f"score field {column} has no maximum to show")
    return FieldLabel(field.label, field.maximum)


# -- values -----------------------------------------------------------------------------------


def is_missing(value: Any) -> bool:
    """True for None, pandas' NA and NaT, and NaN: the values a page shows as a dash."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def fmt_money(value: Any) -> str:
    """Compact amounts: 1.25 M, 48.2 k, 950."""
    if is_missing(value):
        return "—"
    v = float(value)
    if abs(v) >= 1e6:
        return f"{v / 1e6:,.2f} M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:,.1f} k"
    return f"{v:,.0f}"


def fmt_pct(value: Any, digits: int = 0) -> str:
    """A share as a percentage: 0.125 -> "13 %" (or "12.5 %" with one digit)."""
    return "—" if is_missing(value) else f"{float(value) * 100:.{digits}f} %"


def fmt_num(value: Any) -> str:
    """A number without decimals when it is (nearly) whole, else with one."""
    if is_missing(value):
        return "—"
    v = float(value)
    return f"{v:,.0f}" if abs(v - round(v)) < 0.05 else f"{v:,.1f}"


def fmt_signed(value: Any) -> str:
    """A number with its sign and one decimal: +1.5, −2.0, 0.0."""
    if is_missing(value):
        return "—"
    v = float(value)
    return f"+{v:.1f}" if v > 0 else f"−{abs(v):.1f}" if v < 0 else "0.0"


def fmt_change(
    value: Any, pct_points: bool = False, higher_is_worse: bool = False, quiet: bool = False
) -> Markup:
    """An arrow and the change since last month, coloured better / worse (``quiet``: nothing
    when it did not change)."""
    if is_missing(value):
        return Markup("")
    v = float(value) * (100 if pct_points else 1)
    unit = " pts" if pct_points else ""
    if abs(v) < 0.5:
        if quiet:
            return Markup("")
        return Markup(f'<span class="change flat" title="change since last month">±0{unit}</span>')
    worse = (v > 0) == higher_is_worse
    arrow = "▲" if v > 0 else "▼"
    css = "worse" if worse else "better"
    return Markup(
        f'<span class="change {css}" title="change since last month">{arrow} '
        f"{abs(v):.0f}{unit}</span>"
    )


def change_between(now: Any, before: Any, *, pct_points: bool = False, worse_up: bool) -> Markup:
    """:func:`fmt_change` of ``now - before``; nothing when either is missing."""
    if is_missing(now) or is_missing(before):
        return Markup("")
    return fmt_change(float(now) - float(before), pct_points=pct_points, higher_is_worse=worse_up)


def fmt_day(value: Any) -> str:
    """A date as people write it: 1 Feb 2025."""
    if is_missing(value):
        return "—"
    day: str = pd.Timestamp(value).strftime("%-d %b %Y")
    return day


def fmt_prevday(value: Any) -> str:
    """The day before: periods are [start, end), people read them inclusive."""
    return "—" if is_missing(value) else fmt_day(pd.Timestamp(value) - timedelta(days=1))


def fmt_months(value: Any) -> str:
    """A number of months as years and months: "2 years 3 months"."""
    if is_missing(value):
        return "—"
    months = int(float(value))
    years, rest = divmod(months, 12)
    if years == 0:
        return f"{rest} month{'s' if rest != 1 else ''}"
    tail = f" {rest} month{'s' if rest != 1 else ''}" if rest else ""
    return f"{years} year{'s' if years != 1 else ''}{tail}"


def fmt_count(value: Any) -> str:
    """A whole count with thousands separators."""
    return "—" if is_missing(value) else f"{int(value):,}"


_PTS_SUFFIX = re.compile(r"\s*\([+\-−]?\d+(?:\.\d+)? pts\)$")


def bare_sentence(text: Any) -> str:
    """A reason's sentence without the "(+9 pts)" the API appends (the page draws the bar)."""
    return "" if is_missing(text) else _PTS_SUFFIX.sub("", str(text))


# -- templates --------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The Jinja environment shared by the dashboard and ``churn report``."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        money=fmt_money,
        pct=fmt_pct,
        pct1=lambda v: fmt_pct(v, 1),
        num=fmt_num,
        signed=fmt_signed,
        change=fmt_change,
        day=fmt_day,
        prevday=fmt_prevday,
        months=fmt_months,
        count=fmt_count,
        stage=lambda s: "—" if is_missing(s) else STAGE_NAMES.get(str(s), str(s)),
        bare=bare_sentence,
        capfirst=lambda t: "" if is_missing(t) else str(t)[:1].upper() + str(t)[1:],
        bandlabel=lambda b: "—" if is_missing(b) else BAND_LABELS.get(str(b), str(b)),
        priolabel=lambda p: "—" if is_missing(p) else PRIORITY_LABELS.get(str(p), str(p)),
        service=service_worry,
        flagmarker=lambda c: flag_words(c).marker,
    )
    return env


def render(template: str, **context: Any) -> str:
    """Render one template of ``serving/dashboard/templates`` to a string."""
    return environment().get_template(template).render(**context)
