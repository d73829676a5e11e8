"""Terminal view of running nodes: scan statistics, key points, recent events (rich).

The view draws `NodeView` snapshots, not live nodes: the demo runs each node in its own
process and sends a snapshot over a pipe a few times a second (`snapshot()` takes one).
The whole screen fits 40 rows of 100 columns (tests/test_demo.py renders it and counts):
borderless tables, a handful of points per node, the last five events, and long lines cut
with an ellipsis, never wrapped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from edge_runtime.node import Node

_QUALITY_STYLE = {"good": "green", "bad": "red", "uncertain": "yellow", "forced": "magenta",
                  "substituted": "cyan"}


@dataclass(frozen=True, slots=True)
class PointView:
    """One point as the view shows it."""

    name: str
    value: Any
    unit: str
    quality: str = ""  # "" for outputs
    reason: str = ""


@dataclass(frozen=True, slots=True)
class EventView:
    """One event as the view shows it."""

    ts: float
    source: str
    severity: str
    message: str


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the view (and the demo's summary) needs of a node: plain, picklable data."""

    name: str
    role: str
    scan: dict[str, Any]  # ScanEngine.get_status()
    watchdog_tripped: bool
    points: tuple[PointView, ...] = ()
    events: tuple[EventView, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def snapshot(node: Node, names: Sequence[str], n_events: int = 6) -> NodeView:
    """A NodeView of `node` now, with the points `names` and its last `n_events` events."""
    image = node.image
    points: list[PointView] = []
    for name in names:
        if name in image.inputs:
            s = image.inputs[name]
            points.append(PointView(name, s.value, image.inputs_info[name].unit,
                                    s.quality.value, s.reason or ""))
        elif name in image.outputs_info:
            points.append(PointView(name + " (out)", image.outputs[name],
                                    image.outputs_info[name].unit))
    events = tuple(EventView(e.ts, e.source, e.severity.value, e.message)
                   for e in node.events.recent(n_events))
    return NodeView(node.config.name, node.config.role, node.engine.get_status(),
                    node.watchdog.tripped, tuple(points), events)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.2f}"
    return str(value)


def _table(title: str | None, *cols: str | tuple[str, int]) -> Table:
    """A compact table; a column given as (name, min_width) keeps at least that width, the
    last column takes what is left and is cut with an ellipsis."""
    t = Table(title=title, expand=True, box=box.SIMPLE_HEAD, pad_edge=False,
              title_justify="left", show_edge=False)
    for i, col in enumerate(cols):
        name, width = (col, None) if isinstance(col, str) else col
        last = i == len(cols) - 1
        t.add_column(name, no_wrap=True, overflow="ellipsis", min_width=width,
                     ratio=1 if last else None)
    return t


def scan_table(nodes: Sequence[NodeView]) -> Table:
    """One row per node: cycles, overruns, execution and jitter figures, watchdog."""
    t = _table(None, ("node", 8), ("role", 4), ("scan ms", 7), ("cycles", 7), ("overruns", 8),
               ("exec p99/max ms", 15), ("jitter p99/max ms", 17), "watchdog")
    for node in nodes:
        s = node.scan
        ex, ji = s["exec_ms"], s["jitter_ms"]
        wd = "TRIPPED" if node.watchdog_tripped else "ok"
        t.add_row(node.name, node.role, f"{s['period_ms']:g}", str(s["cycles"]),
                  Text(str(s["overruns"]), style="red" if s["overruns"] else ""),
                  f"{ex['p99']:.2f} / {ex['max']:.2f}", f"{ji['p99']:.2f} / {ji['max']:.2f}",
                  Text(wd, style="red" if node.watchdog_tripped else "green"))
    return t


def points_table(node: NodeView) -> Table:
    """A node's chosen points with value, unit and quality."""
    t = _table(f"{node.name} points", ("point", 30), ("value", 12), ("unit", 6), "quality")
    for p in node.points:
        q = p.quality + (f" ({p.reason})" if p.reason else "")
        t.add_row(p.name, _fmt(p.value), p.unit, Text(q, style=_QUALITY_STYLE.get(p.quality, "")))
    return t


def events_table(nodes: Sequence[NodeView], n: int = 5) -> Table:
    """The most recent events across nodes, one line each."""
    t = _table("events", ("node", 8), ("source", 22), ("severity", 8), "message")
    rows = [(e.ts, node.name, e) for node in nodes for e in node.events]
    for _, name, e in sorted(rows, key=lambda r: r[0])[-n:]:
        t.add_row(name, e.source, e.severity, e.message)
    return t


def render(nodes: Sequence[NodeView], header: str, extra: Sequence[str] = ()) -> Group:
    """The whole screen; `extra` lines (the site, the grid) go under the header."""
    return Group(Text(header, style="bold", no_wrap=True, overflow="ellipsis"),
                 *(Text(x, no_wrap=True, overflow="ellipsis") for x in extra),
                 scan_table(nodes), *(points_table(n) for n in nodes if n.points),
                 events_table(nodes))
