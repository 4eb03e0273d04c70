"""The overview's chart: executions per time bucket, stacked by status, one per workflow.

Drawn server-side as a small SVG (no chart library, nothing to download); every bar segment
has a tooltip, and the page shows the same numbers as a table beside it, so the chart is
never the only way to read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

from hub.api.service import StatusChart, StatusSeries


@dataclass(frozen=True)
class StatusStyle:
    colour: str
    icon: str
    label: str


RUN_STATUSES: dict[str, StatusStyle] = {
    "pending": StatusStyle("#9ca3af", "○", "pending"),
    "running": StatusStyle("#2563eb", "▶", "running"),
    "waiting": StatusStyle("#d97706", "‖", "waiting"),
    "succeeded": StatusStyle("#16a34a", "✓", "succeeded"),
    "compensated": StatusStyle("#7c3aed", "↩", "compensated"),
    "cancelled": StatusStyle("#6b7280", "⊘", "cancelled"),
    "compensation_failed": StatusStyle("#b91c1c", "‼", "compensation failed"),
}
"""Run statuses with their colour, icon and words (badges, chart and legend)."""

_W, _H, _PAD_L, _PAD_B = 360, 96, 30, 16


def render_series(chart: StatusChart, series: StatusSeries) -> Markup:
    """Stacked bars of one workflow: the bar's height is the executions started in the
    bucket, its segments their statuses now."""
    n = len(chart.buckets)
    totals = series.per_bucket or [0] * n
    top = max(totals) or 1
    bar_w = (_W - _PAD_L) / n
    scale = (_H - _PAD_B - 4) / top
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" '
        f'role="img" aria-label="{escape(series.workflow)}: executions started per '
        f'{escape(_span(chart))}, by status; the table beside lists the numbers">',
        f'<line x1="{_PAD_L}" y1="{_H - _PAD_B}" x2="{_W}" y2="{_H - _PAD_B}" '
        'stroke="#9ca3af"/>',
        f'<text x="{_PAD_L - 4}" y="10" text-anchor="end" class="axis">{top}</text>',
        f'<text x="{_PAD_L - 4}" y="{_H - _PAD_B}" text-anchor="end" class="axis">0</text>',
    ]
    for i, start in enumerate(chart.buckets):
        y = float(_H - _PAD_B)
        x = _PAD_L + i * bar_w + 1
        for status, counts in series.counts.items():
            count = counts[i]
            if not count:
                continue
            h = count * scale
            y -= h
            style = RUN_STATUSES.get(status, RUN_STATUSES["pending"])
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{style.colour}"><title>{escape(style.label)}: '
                f'{count} started from {start:%Y-%m-%d %H:%M} UTC</title></rect>')
    first, last = chart.buckets[0], chart.buckets[-1]
    parts.append(f'<text x="{_PAD_L}" y="{_H - 3}" class="axis">{first:%H:%M}</text>')
    parts.append(f'<text x="{_W}" y="{_H - 3}" text-anchor="end" class="axis">'
                 f'{last:%H:%M} UTC</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _span(chart: StatusChart) -> str:
    seconds = int(chart.bucket.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h" if seconds > 3600 else "hour"
    return f"{seconds // 60} min"
