"""Charts as inline SVG, written in Python: the month report opens offline and carries no script.

Three shapes cover the report: horizontal bars (PSI per feature, timings per stage) with optional
threshold lines, two overlaid distributions over the same bins, and lines over the months. Every text
is escaped; sizes are in user units with a viewBox, so the charts scale with the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

BEFORE, AFTER = "#8c96a8", "#2f6fd6"
OUTCOME_COLORS = {"pass": "#3a9a5b", "warn": "#d99a1e", "fail": "#c9372c", "error": "#c9372c"}
FONT = "font-family:system-ui,sans-serif;font-size:11px"


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(title)}" style="{FONT}">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def hbars(
    items: Sequence[tuple[str, float, str]],
    title: str,
    thresholds: Sequence[tuple[float, str]] = (),
    unit: str = "",
    label_width: int = 230,
) -> str:
    """Horizontal bars, one per (label, value, color), in the given order; a dashed vertical line at
    each (value, name) of ``thresholds``."""
    bar, gap, plot = 16, 4, 420
    height = 24 + len(items) * (bar + gap) + 10
    top = max([v for _, v, _ in items] + [t for t, _ in thresholds] + [1e-9])
    scale = plot / (top * 1.1)
    body = []
    for i, (label, value, color) in enumerate(items):
        y = 20 + i * (bar + gap)
        w = max(value * scale, 0.5 if value > 0 else 0)
        body.append(
            f'<text x="{label_width - 6}" y="{y + 12}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{w:.1f}" height="{bar}" fill="{color}">'
            f"<title>{escape(label)}: {_fmt(value)}{unit}</title></rect>"
            f'<text x="{label_width + w + 4:.1f}" y="{y + 12}">{_fmt(value)}{escape(unit)}</text>'
        )
    for value, name in thresholds:
        x = label_width + value * scale
        body.append(
            f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{height - 6}" stroke="#c9372c" stroke-dasharray="4 3"/>'
            f'<text x="{x + 3:.1f}" y="11" fill="#c9372c">{escape(name)} {_fmt(value)}</text>'
        )
    return _svg(label_width + plot + 70, height, body, title)


def overlaid(
    labels: Sequence[str], before: Sequence[float], after: Sequence[float], title: str, names: tuple[str, str]
) -> str:
    """Two distributions over the same bins (shares), drawn over each other: the previous month as
    wide grey bars, this month as narrower blue bars inside them."""
    width, height, left, bottom = 560, 230, 40, 150
    plot_w, plot_h = width - left - 10, bottom - 20
    n = max(len(labels), 1)
    step = plot_w / n
    top = max([*before, *after, 1e-9])
    body = [f'<line x1="{left}" y1="{bottom}" x2="{width - 10}" y2="{bottom}" stroke="#999"/>']
    body.append(f'<text x="{left - 4}" y="24" text-anchor="end">{top:.0%}</text>')
    for i, label in enumerate(labels):
        x = left + i * step
        for share, color, pad, who in ((before[i], BEFORE, 0.1, names[0]), (after[i], AFTER, 0.3, names[1])):
            h = share / top * plot_h
            body.append(
                f'<rect x="{x + step * pad:.1f}" y="{bottom - h:.1f}" width="{step * (1 - 2 * pad):.1f}" '
                f'height="{h:.1f}" fill="{color}" fill-opacity="0.85"><title>{escape(label)}, {escape(who)}: '
                f"{share:.1%}</title></rect>"
            )
        body.append(
            f'<text transform="translate({x + step / 2:.1f},{bottom + 8}) rotate(35)" font-size="9">'
            f"{escape(label[:28])}</text>"
        )
    body.append(
        f'<rect x="{width - 190}" y="4" width="10" height="10" fill="{BEFORE}"/>'
        f'<text x="{width - 176}" y="13">{escape(names[0])}</text>'
        f'<rect x="{width - 100}" y="4" width="10" height="10" fill="{AFTER}"/>'
        f'<text x="{width - 86}" y="13">{escape(names[1])}</text>'
    )
    return _svg(width, height, body, title)


def lines(xs: Sequence[str], series: dict[str, Sequence[float | None]], title: str, percent: bool = False) -> str:
    """One line per series over the months ``xs``; a point per value (None: no point)."""
    width, height, left, bottom = 520, 180, 60, 140
    plot_w, plot_h = width - left - 50, bottom - 30  # room on the right for the last month's label
    values = [v for vs in series.values() for v in vs if v is not None]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high == low:
        low, high = low - (abs(low) * 0.1 or 1), high + (abs(high) * 0.1 or 1)
    step = plot_w / max(len(xs) - 1, 1)

    def y(v: float) -> float:
        return bottom - (v - low) / (high - low) * plot_h

    def text(v: float) -> str:
        return f"{v:.1%}" if percent else f"{v:,.0f}" if abs(v) >= 100 else _fmt(v)

    body = [
        f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{y(high) + 4:.1f}" text-anchor="end">{text(high)}</text>',
        f'<text x="{left - 4}" y="{y(low) + 4:.1f}" text-anchor="end">{text(low)}</text>',
    ]
    for i, x_label in enumerate(xs):
        body.append(f'<text x="{left + i * step:.1f}" y="{bottom + 16}" text-anchor="middle">{escape(x_label)}</text>')
    colors = [AFTER, "#d9651e", "#3a9a5b", BEFORE]
    for k, (name, vs) in enumerate(series.items()):
        color = colors[k % len(colors)]
        points = [(left + i * step, y(v), v) for i, v in enumerate(vs) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in points)
            body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for px, py, v in points:
            body.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{color}">'
                f"<title>{escape(name)}: {text(v)}</title></circle>"
            )
        body.append(f'<text x="{left + 8 + 120 * k}" y="12" fill="{color}">{escape(name)}</text>')
    return _svg(width, height, body, title)
