"""Charts as inline SVG, drawn on the server: no JavaScript, no CDN, and they survive being
saved into a single HTML file (``churn report``).

Colours come from CSS classes (``serving/dashboard/static/dashboard.css``), and only SVG
presentation attributes are used (never ``style=``), so the pages keep a strict
Content-Security-Policy.
Every chart has a ``<title>`` and ``<desc>`` for screen readers and native hover tooltips on
its points and bars.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import count

from markupsafe import Markup, escape

Number = float | int | None
Formatter = Callable[[float], str]

_ids = count(1)


def _num(value: Number) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _f(value: float) -> str:
    """Compact coordinates (two decimals) keep the SVG small."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def percent(value: float) -> str:
    return f"{value * 100:.0f} %"


def percent1(value: float) -> str:
    return f"{value * 100:.1f} %"


def plain(value: float) -> str:
    return f"{value:,.0f}"


def _open(kind: str, width: float, height: float, title: str, desc: str) -> tuple[str, str]:
    uid = f"chart-{next(_ids)}"
    head = (
        f'<svg class="chart chart-{kind}" viewBox="0 0 {_f(width)} {_f(height)}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" role="img" '
        f'aria-labelledby="{uid}-t {uid}-d" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{uid}-t">{escape(title)}</title><desc id="{uid}-d">{escape(desc)}</desc>'
    )
    return head, uid


def _nice_step(raw: float) -> float:
    """The smallest 1 / 2 / 2.5 / 5 x 10^k at or above ``raw``."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    magnitude: float = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-12))


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    step = _nice_step((hi - lo) / max(n - 1, 1))
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 10))
    return ticks


@dataclass(frozen=True)
class Series:
    """One line of a line chart; ``css`` names its colour class (``series-<css>``);
    ``right`` puts it on the chart's second (right-hand) axis."""

    name: str
    values: Sequence[Number]
    css: str
    right: bool = False


@dataclass(frozen=True)
class Zone:
    """A shaded horizontal band of the y axis (e.g. the health score's critical zone)."""

    lo: float
    hi: float
    css: str
    label: str = ""


def line_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    y_min: float | None = None,
    y_max: float | None = None,
    y_format: Formatter = plain,
    zones: Sequence[Zone] = (),
    reference: float | None = None,
    y2_format: Formatter = plain,
    width: float = 640,
    height: float = 260,
) -> Markup:
    """Lines over categorical x labels (dates, quarters); gaps where a value is None.

    Series marked ``right`` use a second axis from 0, scaled so that its ticks sit on the
    left axis's grid lines (a 3 % probability stays readable beside a 0-100 score).
    """
    has_right = any(s.right for s in series)
    left, right, top, bottom = 48.0, 52.0 if has_right else 12.0, 30.0, 30.0
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for s in series if not s.right for v in map(_num, s.values) if v is not None]
    lo = y_min if y_min is not None else min([*values, reference or math.inf], default=0.0)
    hi = y_max if y_max is not None else max([*values, reference or -math.inf], default=1.0)
    if y_min is None or y_max is None:
        pad = (hi - lo) * 0.1 or 0.05
        lo = lo - pad if y_min is None else lo
        hi = hi + pad if y_max is None else hi
    ticks = _nice_ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    n = len(labels)

    def x(i: int) -> float:
        return left + (plot_w * (i + 0.5) / n if n else 0)

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - lo) / (hi - lo))

    right_values = [v for s in series if s.right for v in map(_num, s.values) if v is not None]
    step2 = _nice_step(max([*right_values, 0.0]) * 1.1 / max(len(ticks) - 1, 1))
    hi2 = step2 * max(len(ticks) - 1, 1)

    def y2(v: float) -> float:
        return top + plot_h * (1 - v / hi2)

    desc = "; ".join(
        f"{s.name}: "
        + ", ".join(
            f"{label} {(y2_format if s.right else y_format)(v)}"
            for label, v in zip(labels, map(_num, s.values), strict=False)
            if v is not None
        )
        for s in series
    )
    head, _ = _open("line", width, height, title, desc or "no data")
    parts = [head]
    for zone in zones:
        z_lo, z_hi = max(zone.lo, lo), min(zone.hi, hi)
        if z_hi > z_lo:
            parts.append(
                f'<rect class="zone zone-{zone.css}" x="{_f(left)}" y="{_f(y(z_hi))}" '
                f'width="{_f(plot_w)}" height="{_f(y(z_lo) - y(z_hi))}"/>'
            )
    for k, tick in enumerate(ticks):
        parts.append(
            f'<line class="grid" x1="{_f(left)}" x2="{_f(left + plot_w)}" '
            f'y1="{_f(y(tick))}" y2="{_f(y(tick))}"/>'
            f'<text class="axis" x="{_f(left - 6)}" y="{_f(y(tick) + 4)}" '
            f'text-anchor="end">{escape(y_format(tick))}</text>'
        )
        if has_right:
            parts.append(
                f'<text class="axis axis-right" x="{_f(left + plot_w + 6)}" '
                f'y="{_f(y(tick) + 4)}">{escape(y2_format(k * step2))}</text>'
            )
    if reference is not None and lo <= reference <= hi:
        parts.append(
            f'<line class="reference" x1="{_f(left)}" x2="{_f(left + plot_w)}" '
            f'y1="{_f(y(reference))}" y2="{_f(y(reference))}"/>'
        )
    step = max(1, math.ceil(n / 8))  # at most about eight x labels
    for i, label in enumerate(labels):
        if i % step == 0 or i == n - 1:
            parts.append(
                f'<text class="axis" x="{_f(x(i))}" y="{_f(height - 10)}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    for s in series:
        to_y = y2 if s.right else y
        fmt = y2_format if s.right else y_format
        points = [(i, _num(v)) for i, v in enumerate(s.values)]
        path, pen_down = [], False
        for i, v in points:
            if v is None:
                pen_down = False
                continue
            path.append(f"{'L' if pen_down else 'M'}{_f(x(i))} {_f(to_y(v))}")
            pen_down = True
        if path:
            parts.append(f'<path class="line series-{s.css}" d="{" ".join(path)}"/>')
        for i, v in points:
            if v is not None:
                parts.append(
                    f'<circle class="dot series-{s.css}" cx="{_f(x(i))}" cy="{_f(to_y(v))}" '
                    f'r="3"><title>{escape(s.name)}, {escape(labels[i])}: {escape(fmt(v))}'
                    "</title></circle>"
                )
    legend_x = left
    for s in series:
        parts.append(
            f'<rect class="legend series-{s.css}" x="{_f(legend_x)}" y="8" width="12" '
            f'height="12" rx="2"/><text class="legend-text" x="{_f(legend_x + 17)}" '
            f'y="18">{escape(s.name)}</text>'
        )
        legend_x += 24 + 7.5 * len(s.name)
    for zone in zones:
        if zone.label:
            parts.append(
                f'<rect class="legend zone zone-{zone.css}" x="{_f(legend_x)}" y="8" '
                f'width="12" height="12" rx="2"/><text class="legend-text" '
                f'x="{_f(legend_x + 17)}" y="18">{escape(zone.label)}</text>'
            )
            legend_x += 24 + 7.5 * len(zone.label)
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    labels: Sequence[str],
    values: Sequence[Number],
    *,
    title: str,
    value_format: Formatter = plain,
    notes: Sequence[str] | None = None,
    max_value: float | None = None,
    css: str | Sequence[str] = "primary",
    width: float = 560,
    label_width: float = 210,
    row_height: float = 30,
) -> Markup:
    """Horizontal bars, one row per label, the value (and an optional note) after the bar."""
    nums = [_num(v) for v in values]
    top = max([v for v in nums if v is not None] + [max_value or 0.0, 1e-12])
    value_w = 120.0
    bar_w = width - label_width - value_w
    height = row_height * max(len(labels), 1) + 6
    desc = "; ".join(
        f"{label}: {'n/a' if v is None else value_format(v)}"
        for label, v in zip(labels, nums, strict=False)
    )
    head, _ = _open("bar", width, height, title, desc or "no data")
    parts = [head]
    classes = [css] * len(labels) if isinstance(css, str) else list(css)
    for i, (label, v) in enumerate(zip(labels, nums, strict=False)):
        y0 = 3 + i * row_height
        mid = y0 + row_height / 2
        length = 0.0 if v is None else max(bar_w * max(v, 0.0) / top, 0.0)
        shown = "n/a" if v is None else value_format(v)
        note = f" · {notes[i]}" if notes and notes[i] else ""
        parts.append(
            f'<text class="bar-label" x="{_f(label_width - 8)}" y="{_f(mid + 4)}" '
            f'text-anchor="end">{escape(label)}</text>'
            f'<rect class="bar-track" x="{_f(label_width)}" y="{_f(y0 + 6)}" '
            f'width="{_f(bar_w)}" height="{_f(row_height - 12)}" rx="3"/>'
            f'<rect class="bar bar-{classes[i]}" x="{_f(label_width)}" y="{_f(y0 + 6)}" '
            f'width="{_f(length)}" height="{_f(row_height - 12)}" rx="3">'
            f"<title>{escape(label)}: {escape(shown)}{escape(note)}</title></rect>"
            f'<text class="bar-value" x="{_f(label_width + bar_w + 8)}" y="{_f(mid + 4)}">'
            f"{escape(shown)}{escape(note)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def stacked_bar(
    labels: Sequence[str],
    values: Sequence[Number],
    css: Sequence[str],
    *,
    title: str,
    width: float = 560,
    height: float = 58,
) -> Markup:
    """One horizontal bar split into parts (e.g. accounts by health band), with a legend."""
    nums = [max(_num(v) or 0.0, 0.0) for v in values]
    total = sum(nums) or 1.0
    desc = "; ".join(f"{label}: {v:g}" for label, v in zip(labels, nums, strict=False))
    head, _ = _open("stacked", width, height, title, desc)
    parts = [head]
    x0 = 0.0
    for label, v, cls in zip(labels, nums, css, strict=False):
        w = width * v / total
        if w > 0:
            parts.append(
                f'<rect class="bar bar-{cls}" x="{_f(x0)}" y="0" width="{_f(w)}" height="26">'
                f"<title>{escape(label)}: {v:g}</title></rect>"
            )
            if w > 28:
                parts.append(
                    f'<text class="stack-value" x="{_f(x0 + w / 2)}" y="17" '
                    f'text-anchor="middle">{v:g}</text>'
                )
        x0 += w
    lx = 0.0
    for label, v, cls in zip(labels, nums, css, strict=False):
        parts.append(
            f'<rect class="legend bar-{cls}" x="{_f(lx)}" y="38" width="12" height="12" rx="2"/>'
            f'<text class="legend-text" x="{_f(lx + 17)}" y="48">{escape(label)} ({v:g})</text>'
        )
        lx += 40 + 7.5 * len(label)
    parts.append("</svg>")
    return Markup("".join(parts))


def impact_bar(
    impact_pts: Number, scale: float, *, width: float = 160, height: float = 14
) -> Markup:
    """A small diverging bar for one reason: right (red) raises churn risk, left (green) lowers
    it; ``scale`` is the largest absolute impact shown beside it."""
    value = _num(impact_pts) or 0.0
    half = width / 2
    length = half * min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    x0 = half if value >= 0 else half - length
    direction = "raises" if value >= 0 else "lowers"
    css = "risk-up" if value >= 0 else "risk-down"
    label = f"{direction} churn risk by {abs(value):.1f} points"
    return Markup(
        f'<svg class="impact" viewBox="0 0 {_f(width)} {_f(height)}" width="{_f(width)}" '
        f'height="{_f(height)}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<rect class="bar-track" x="0" y="2" width="{_f(width)}" height="{_f(height - 4)}" '
        f'rx="2"/><rect class="bar bar-{css}" x="{_f(x0)}" y="2" width="{_f(length)}" '
        f'height="{_f(height - 4)}" rx="2"><title>{escape(label)}</title></rect>'
        f'<line class="axis-zero" x1="{_f(half)}" x2="{_f(half)}" y1="0" y2="{_f(height)}"/>'
        "</svg>"
    )


def gauge(value: Number, maximum: float, *, css: str, width: float = 120) -> Markup:
    """A thin horizontal meter (e.g. a health component out of its maximum)."""
    v = max(_num(value) or 0.0, 0.0)
    length = width * min(v / maximum, 1.0) if maximum > 0 else 0.0
    label = f"{v:g} of {maximum:g}"
    return Markup(
        f'<svg class="gauge" viewBox="0 0 {_f(width)} 8" width="{_f(width)}" height="8" '
        f'preserveAspectRatio="none" role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect class="bar-track" x="0" y="0" width="{_f(width)}" height="8" rx="4"/>'
        f'<rect class="bar bar-{css}" x="0" y="0" width="{_f(length)}" height="8" rx="4"/>'
        "</svg>"
    )
