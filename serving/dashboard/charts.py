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

    The legend is HTML above the plot (it wraps on a narrow screen), and the plot is drawn
    ``width`` wide for wide screens and :data:`NARROW_WIDTH` wide for phones (plus
    :data:`MEDIUM_WIDTH` wide for tablets when ``width`` is much wider), the stylesheet showing
    one of them, so that axis text keeps its size (at least 11 px on a 390 px phone and a
    1400 px desktop).
    """
    legend = [(s.name, f"series-{s.css}") for s in series]
    legend += [(z.label, f"zone zone-{z.css}") for z in zones if z.label]
    args = (labels, series, title, y_min, y_max, y_format, zones, reference, y2_format)
    plots = [_line_plot(*args, width=width, height=height, variant="wide")]
    css = "chart chart-line"
    if width > MEDIUM_WIDTH * 1.2:  # a full-width chart: a tablet gets one of its own
        plots.append(_line_plot(*args, width=MEDIUM_WIDTH, height=height, variant="medium"))
        css += " has-medium"
    narrow_height = max(200.0, height * 0.8)
    plots.append(_line_plot(*args, width=NARROW_WIDTH, height=narrow_height, variant="narrow"))
    return Markup(f'<figure class="{css}">{_legend(legend)}{"".join(plots)}</figure>')


#: The width of the phone variant of a line chart, in the SVG's units: about the width of a
#: card's content on a 360 px screen, so one unit is at least one pixel on any wider phone.
NARROW_WIDTH = 310.0
#: The width of the tablet variant of a wide (full-width) line chart.
MEDIUM_WIDTH = 640.0
#: Font size of axis text, in the SVG's units (``svg .axis`` in the stylesheet).
AXIS_FONT = 11.0


def _legend(items: Sequence[tuple[str, str]]) -> str:
    """An HTML legend: a swatch of each item's CSS class and its name."""
    if not items:
        return ""
    entries = "".join(
        f'<li><svg class="swatch" viewBox="0 0 12 12" width="12" height="12" aria-hidden="true">'
        f'<rect class="legend {escape(css)}" width="12" height="12" rx="2"/></svg>'
        f"{escape(name)}</li>"
        for name, css in items
    )
    return f'<ul class="chart-legend">{entries}</ul>'


def x_label_indices(labels: Sequence[str], plot_width: float) -> list[int]:
    """Which x labels a plot ``plot_width`` wide shows: every k-th one counted back from the
    last (so the latest date is always labelled), k the smallest step at which labels of
    :data:`AXIS_FONT` text do not touch."""
    n = len(labels)
    if n == 0:
        return []
    widest = max(len(label) for label in labels) * AXIS_FONT * 0.62 + AXIS_FONT
    step = max(1, math.ceil(widest / (plot_width / n)))
    return [i for i in range(n) if (n - 1 - i) % step == 0]


def _line_plot(
    labels: Sequence[str],
    series: Sequence[Series],
    title: str,
    y_min: float | None,
    y_max: float | None,
    y_format: Formatter,
    zones: Sequence[Zone],
    reference: float | None,
    y2_format: Formatter,
    *,
    width: float,
    height: float,
    variant: str,
) -> str:
    has_right = any(s.right for s in series)
    narrow = variant == "narrow"
    left = 40.0 if narrow else 48.0
    right = (46.0 if narrow else 56.0) if has_right else 12.0
    top, bottom = 10.0, 28.0
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
    head, _ = _open(f"line chart-{variant}", width, height, title, desc or "no data")
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
    for i in x_label_indices(labels, plot_w):
        parts.append(
            f'<text class="axis axis-x" x="{_f(x(i))}" y="{_f(height - 9)}" '
            f'text-anchor="middle">{escape(labels[i])}</text>'
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
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[Number],
    *,
    title: str,
    value_format: Formatter = plain,
    notes: Sequence[str] | None = None,
    max_value: float | None = None,
    css: str | Sequence[str] = "primary",
) -> Markup:
    """Horizontal bars, one row per label, the value (and an optional note) after the bar.

    Labels and values are HTML text beside each bar (a long label wraps, it is never cut, and
    keeps the page's font size at any width); each bar is a small SVG stretched to its cell.
    """
    nums = [_num(v) for v in values]
    top = max([v for v in nums if v is not None] + [max_value or 0.0, 1e-12])
    desc = "; ".join(
        f"{label}: {'n/a' if v is None else value_format(v)}"
        for label, v in zip(labels, nums, strict=False)
    )
    uid = f"chart-{next(_ids)}"
    parts = [
        f'<figure class="chart chart-bar" aria-labelledby="{uid}-t">'
        f'<figcaption class="sr-only" id="{uid}-t">{escape(title)}: '
        f"{escape(desc or 'no data')}</figcaption>"
    ]
    classes = [css] * len(labels) if isinstance(css, str) else list(css)
    for i, (label, v) in enumerate(zip(labels, nums, strict=False)):
        share = 0.0 if v is None else min(max(v, 0.0) / top, 1.0)
        shown = "n/a" if v is None else value_format(v)
        note = f" · {notes[i]}" if notes and notes[i] else ""
        parts.append(
            f'<div class="bar-row"><span class="bar-label">{escape(label)}</span>'
            f'<svg class="bar-svg" viewBox="0 0 100 10" preserveAspectRatio="none" '
            f'aria-hidden="true" xmlns="http://www.w3.org/2000/svg">'
            f'<rect class="bar-track" x="0" y="0" width="100" height="10"/>'
            f'<rect class="bar bar-{classes[i]}" x="0" y="0" width="{_f(100 * share)}" '
            f'height="10"><title>{escape(label)}: {escape(shown)}{escape(note)}</title></rect>'
            f'</svg><span class="bar-value">{escape(shown)}{escape(note)}</span></div>'
        )
    parts.append("</figure>")
    return Markup("".join(parts))


def stacked_bar(
    labels: Sequence[str],
    values: Sequence[Number],
    css: Sequence[str],
    *,
    title: str,
) -> Markup:
    """One horizontal bar split into parts (e.g. accounts by health band), with an HTML legend
    giving each part's count."""
    nums = [max(_num(v) or 0.0, 0.0) for v in values]
    total = sum(nums) or 1.0
    desc = "; ".join(f"{label}: {v:g}" for label, v in zip(labels, nums, strict=False))
    uid = f"chart-{next(_ids)}"
    parts = [
        f'<figure class="chart chart-stacked" aria-labelledby="{uid}-t">'
        f'<figcaption class="sr-only" id="{uid}-t">{escape(title)}: {escape(desc)}</figcaption>'
        '<svg class="stack-svg" viewBox="0 0 1000 10" preserveAspectRatio="none" '
        'aria-hidden="true" xmlns="http://www.w3.org/2000/svg">'
    ]
    x0 = 0.0
    for label, v, cls in zip(labels, nums, css, strict=False):
        w = 1000 * v / total
        if w > 0:
            parts.append(
                f'<rect class="bar bar-{cls}" x="{_f(x0)}" y="0" width="{_f(w)}" height="10">'
                f"<title>{escape(label)}: {v:g}</title></rect>"
            )
        x0 += w
    parts.append("</svg>")
    parts.append(
        _legend(
            [
                (f"{label} ({v:g})", f"bar-{cls}")
                for label, v, cls in zip(labels, nums, css, strict=False)
            ]
        )
    )
    parts.append("</figure>")
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
