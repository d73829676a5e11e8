"""Terminal view of running nodes: scan statistics, key points, recent events (rich)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from edge_runtime.node import Node

_QUALITY_STYLE = {"good": "green", "bad": "red", "uncertain": "yellow", "forced": "magenta",
                  "substituted": "cyan"}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.2f}"
    return str(value)


def scan_table(nodes: Sequence[Node]) -> Table:
    """One row per node: cycles, overruns, execution and jitter figures, watchdog."""
    t = Table(title="Scan", expand=True)
    for col in ("node", "role", "period ms", "cycles", "overruns", "exec avg/p99/max ms",
                "jitter p50/p99/max ms", "watchdog"):
        t.add_column(col)
    for node in nodes:
        s = node.engine.get_status()
        ex, ji = s["exec_ms"], s["jitter_ms"]
        wd = "TRIPPED" if node.watchdog.tripped else "ok"
        t.add_row(node.config.name, node.config.role, f"{s['period_ms']:g}", str(s["cycles"]),
                  str(s["overruns"]),
                  f"{ex['avg']:.3f} / {ex['p99']:.3f} / {ex['max']:.3f}",
                  f"{ji['p50']:.3f} / {ji['p99']:.3f} / {ji['max']:.3f}",
                  Text(wd, style="red" if node.watchdog.tripped else "green"))
    return t


def points_table(node: Node, names: Sequence[str]) -> Table:
    """Chosen points of a node with value, unit and quality."""
    t = Table(title=f"{node.config.name} points", expand=True)
    for col in ("point", "value", "unit", "quality"):
        t.add_column(col)
    for name in names:
        if name in node.image.inputs:
            s = node.image.inputs[name]
            unit = node.image.inputs_info[name].unit
            q = s.quality.value
            t.add_row(name, _fmt(s.value), unit,
                      Text(q + (f" ({s.reason})" if s.reason else ""),
                           style=_QUALITY_STYLE.get(q, "")))
        elif name in node.image.outputs_info:
            t.add_row(name + " (out)", _fmt(node.image.outputs[name]),
                      node.image.outputs_info[name].unit, "")
    return t


def events_table(nodes: Sequence[Node], n: int = 6) -> Table:
    """The most recent events across nodes."""
    t = Table(title="Events", expand=True)
    for col in ("node", "source", "severity", "message"):
        t.add_column(col)
    rows = [(e.ts, node.config.name, e) for node in nodes for e in node.events.recent(n)]
    for _, name, e in sorted(rows, key=lambda r: r[0])[-n:]:
        t.add_row(name, e.source, e.severity.value, e.message)
    return t


def render(nodes: Sequence[Node], points: Mapping[str, Sequence[str]], header: str,
           extra: Sequence[str] = ()) -> Group:
    """The whole screen; `extra` lines (the site, the grid) go under the header."""
    parts: list[Any] = [Text(header, style="bold"), *(Text(x) for x in extra), scan_table(nodes)]
    for node in nodes:
        if node.config.name in points:
            parts.append(points_table(node, points[node.config.name]))
    parts.append(events_table(nodes))
    return Group(*parts)
