"""A workflow's graph drawn server-side as SVG: a layered layout of its static definition.

The input is ``Graph.to_dict()`` (what ``GET /workflows/{name}`` returns), so the drawing is
of the definition an execution runs on, never of what it happened to do. Layers are the
longest path from a first step; within a layer, steps sit near the mean position of the
steps they follow (two sweeps of the barycentre heuristic), which keeps edges short for
the small DAGs workflows are. Each node carries its state as a colour, an icon and a word,
so colour is never the only cue, and links to the step's details.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape


@dataclass(frozen=True)
class StateStyle:
    fill: str
    stroke: str
    icon: str
    label: str


STEP_STATES: dict[str, StateStyle] = {
    "not_started": StateStyle("#f3f4f6", "#9ca3af", "○", "not started"),
    "invoking": StateStyle("#dbeafe", "#2563eb", "▶", "running"),
    "waiting": StateStyle("#fef3c7", "#b45309", "‖", "waiting"),
    "temp_failure": StateStyle("#ffedd5", "#c2410c", "↻", "retrying"),
    "done": StateStyle("#dcfce7", "#15803d", "✓", "done"),
    "skipped": StateStyle("#f3f4f6", "#6b7280", "↷", "skipped"),
    "permanent_failure": StateStyle("#fee2e2", "#b91c1c", "✗", "failed"),
    "timeout": StateStyle("#fee2e2", "#b91c1c", "◷", "timed out"),
    "compensating": StateStyle("#ede9fe", "#6d28d9", "↶", "compensating"),
    "waiting_to_compensate": StateStyle("#ede9fe", "#6d28d9", "‖", "compensation waiting"),
    "reverted": StateStyle("#e0e7ff", "#4338ca", "↩", "compensated"),
    "failed": StateStyle("#fecaca", "#7f1d1d", "‼", "compensation failed"),
}
"""Every step state with its colours, icon and words: the nodes and the legend use these."""

DEFINITION = StateStyle("#ffffff", "#374151", "□", "step")
"""A node of a definition drawn without an execution."""

_NODE_H = 48
_LAYER_GAP = 44
_NODE_GAP = 22
_PAD = 12
_CHAR_W = 7.4
_MIN_W = 132


@dataclass
class _Node:
    id: str
    label: str
    sub: str
    style: StateStyle
    width: float
    layer: int = 0
    x: float = 0.0
    y: float = 0.0
    href: str | None = None
    tooltip: str = ""


def _step_sources(graph: Mapping[str, Any]) -> dict[str, set[str]]:
    """Per step, the steps whose output it reads, through transforms and conditions too."""
    steps = {s["id"] for s in graph.get("steps", [])}
    via: dict[str, list[str]] = {t["id"]: t.get("reads", []) for t in graph.get("transforms", [])}
    via.update({c["id"]: c.get("reads", []) for c in graph.get("conditions", [])})

    def resolve(source: str, seen: set[str]) -> set[str]:
        if source in steps:
            return {source}
        if source in seen or source not in via:
            return set()
        seen.add(source)
        return set().union(*(resolve(r, seen) for r in via[source])) if via[source] else set()

    out: dict[str, set[str]] = {}
    for s in graph.get("steps", []):
        found: set[str] = set()
        for r in [*s.get("reads", []), *s.get("when", [])]:
            found |= resolve(r, set())
        out[s["id"]] = found - {s["id"]}
    return out


def render_graph(graph: Mapping[str, Any], states: Mapping[str, str] | None = None, *,
                 href: str | None = "#step-{id}", title: str = "") -> Markup:
    """The SVG of ``graph``; ``states`` (step id -> state) colours the nodes of an
    execution; ``href`` (with ``{id}``) makes each node a link."""
    specs = list(graph.get("steps", []))
    if not specs:
        return Markup('<p class="muted">This workflow has no steps.</p>')
    order = {s["id"]: i for i, s in enumerate(specs)}
    after = {s["id"]: [a for a in s.get("after", []) if a in order] for s in specs}
    data = _step_sources(graph)
    preds = {sid: sorted(set(after[sid]) | {d for d in data[sid] if d in order},
                         key=order.__getitem__) for sid in order}
    nodes: dict[str, _Node] = {}
    for s in specs:
        sid = s["id"]
        state = (states or {}).get(sid)
        style = STEP_STATES.get(state or "", DEFINITION) if states is not None else DEFINITION
        sub = style.label if states is not None else _definition_label(s)
        label = f"{style.icon} {sid}"
        width = max(_MIN_W, _CHAR_W * max(len(label), len(sub)) + 28)
        tip = f"{sid}: {style.label}" if states is not None else f"{sid} ({s.get('step', sid)})"
        nodes[sid] = _Node(sid, label, sub, style, width,
                           href=href.format(id=quote(sid)) if href else None, tooltip=tip)
    for sid in order:  # definition order is a topological order (a step follows its inputs)
        nodes[sid].layer = max((nodes[p].layer + 1 for p in preds[sid] if p in nodes),
                               default=0)
    layers: dict[int, list[str]] = {}
    for sid in order:
        layers.setdefault(nodes[sid].layer, []).append(sid)
    pos = {sid: float(i) for members in layers.values() for i, sid in enumerate(members)}
    for _ in range(2):
        for depth in sorted(layers)[1:]:
            members = layers[depth]
            members.sort(key=lambda sid: (
                sum(pos[p] for p in preds[sid]) / len(preds[sid]) if preds[sid] else pos[sid],
                order[sid]))
            for i, sid in enumerate(members):
                pos[sid] = float(i)
    widths = {d: sum(nodes[s].width for s in m) + _NODE_GAP * (len(m) - 1)
              for d, m in layers.items()}
    total_w = max(widths.values()) + 2 * _PAD
    for depth, members in layers.items():
        x = _PAD + (total_w - 2 * _PAD - widths[depth]) / 2
        for sid in members:
            n = nodes[sid]
            n.x, n.y = x, _PAD + depth * (_NODE_H + _LAYER_GAP)
            x += n.width + _NODE_GAP
    total_h = _PAD * 2 + len(layers) * _NODE_H + (len(layers) - 1) * _LAYER_GAP
    parts = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-labelledby="graph-title" viewBox="0 0 {total_w:.0f} {total_h:.0f}" '
        f'width="{total_w:.0f}" height="{total_h:.0f}">',
        f'<title id="graph-title">{escape(title or "workflow graph")}</title>',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#6b7280"/></marker></defs>',
    ]
    for sid in order:
        child = nodes[sid]
        for p in preds[sid]:
            parent = nodes[p]
            x1, y1 = parent.x + parent.width / 2, parent.y + _NODE_H
            x2, y2 = child.x + child.width / 2, child.y - 2
            mid = (y1 + y2) / 2
            dashed = ' stroke-dasharray="4 3"' if p not in after[sid] else ""
            parts.append(f'<path class="edge" d="M {x1:.1f} {y1:.1f} C {x1:.1f} {mid:.1f}, '
                         f'{x2:.1f} {mid:.1f}, {x2:.1f} {y2:.1f}" fill="none" stroke="#6b7280" '
                         f'stroke-width="1.4"{dashed} marker-end="url(#arrow)"/>')
    for sid in order:
        n = nodes[sid]
        cls = f"node state-{escape((states or {}).get(sid, 'definition'))}"
        body = (
            f'<title>{escape(n.tooltip)}</title>'
            f'<rect x="{n.x:.1f}" y="{n.y:.1f}" width="{n.width:.1f}" height="{_NODE_H}" '
            f'rx="7" fill="{n.style.fill}" stroke="{n.style.stroke}" stroke-width="2"/>'
            f'<text x="{n.x + n.width / 2:.1f}" y="{n.y + 20:.1f}" text-anchor="middle" '
            f'class="node-label">{escape(n.label)}</text>'
            f'<text x="{n.x + n.width / 2:.1f}" y="{n.y + 38:.1f}" text-anchor="middle" '
            f'class="node-state">{escape(n.sub)}</text>'
        )
        if n.href:
            parts.append(f'<a class="{cls}" href="{escape(n.href)}">{body}</a>')
        else:
            parts.append(f'<g class="{cls}">{body}</g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _definition_label(step: Mapping[str, Any]) -> str:
    options = step.get("options") or {}
    bits = []
    if step.get("kind") == "hook":
        bits.append("hook")
    fanout = step.get("map")
    if isinstance(fanout, Mapping):  # one node for the whole fan-out
        bits.append(f"each: {fanout.get('step')}, {fanout.get('max_concurrency')} at once")
    if step.get("child"):
        bits.append(f"child {step['child']}")
    if options.get("is_async") and not step.get("child"):
        bits.append("async")
    if options.get("max_retries"):
        bits.append(f"retries {options['max_retries']}")
    if step.get("compensates"):
        bits.append("compensates")
    return ", ".join(bits) or "step"
