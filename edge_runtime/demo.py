"""`pswd-edge demo`: a whole simulated site on this machine, on loopback, no broker, no root.

The plant simulator (examples/plant.toml) serves the CDU and the rack over Modbus TCP; a CDU
node and a rack node (examples/cdu.toml, rack.toml) run their scans against it exactly as they
would against real devices. An operator script plays a start-up of the coolant loop while the
AI-training trace swings the rack's power; the live view shows the scans and the key points,
and the closing summary says how the plant and the scans behaved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.config.loader import load_node_config
from edge_runtime.config.reader import ConfigError
from edge_runtime.core.commands import Command, SetOutput
from edge_runtime.node import Node

log = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Points shown in the live view, per node.
VIEW_POINTS = {
    "cdu-01": ("supply_temp.temperature", "return_temp.temperature", "flow.flow",
               "pump1.speed_ref", "pump1.speed_actual", "pump2.speed_actual",
               "valve.position_cmd", "valve.position_fb", "leak.status"),
    "rack-01": ("rack_meter.power_kw", "battery.soc_pct", "battery.w_set_kw", "battery.ctrl_hb"),
}


# The first seconds show the registers' start-up values, not the plant: not summarised.
WARMUP_S = 1.0


@dataclass(frozen=True, slots=True)
class Step:
    """One operator action of the demo script, at a fraction of the run."""

    at_frac: float
    node: str
    command: Command
    says: str


# A technician bringing the loop from its failsafe state (pumps 100 %, valve open) to duty.
SCRIPT = (
    Step(0.10, "cdu-01", SetOutput("pump2.control_word", 0, "demo"), "pump2 to standby"),
    Step(0.10, "cdu-01", SetOutput("pump1.control_word", 1, "demo"), "pump1 run"),
    Step(0.10, "cdu-01", SetOutput("pump1.speed_ref", 60.0, "demo"), "pump1 speed 60 %"),
    Step(0.10, "cdu-01", SetOutput("valve.position_cmd", 50.0, "demo"), "valve to 50 %"),
    Step(0.55, "cdu-01", SetOutput("pump1.speed_ref", 80.0, "demo"), "pump1 speed 80 %"),
)


@dataclass
class Record:
    """What the demo keeps for its summary: a sample of key values every tick."""

    t: list[float] = field(default_factory=list)
    flow: list[float | None] = field(default_factory=list)
    supply: list[float | None] = field(default_factory=list)
    rack_kw: list[float | None] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)

    def add(self, t: float, cdu: Node, rack: Node) -> None:
        self.t.append(t)
        self.flow.append(cdu.image.value("flow.flow"))
        self.supply.append(cdu.image.value("supply_temp.temperature"))
        self.rack_kw.append(rack.image.value("rack_meter.power_kw"))


def largest_change(t: list[float], values: list[float | None], window_s: float) -> float:
    """Largest |v(t2) - v(t1)| over all pairs with t2 - t1 <= window_s (None values skipped)."""
    pts = [(ti, v) for ti, v in zip(t, values, strict=True) if v is not None]
    lo: deque[tuple[float, float]] = deque()  # monotonic queues of the window's min and max
    hi: deque[tuple[float, float]] = deque()
    best = 0.0
    for ti, v in pts:
        while lo and lo[-1][1] >= v:
            lo.pop()
        while hi and hi[-1][1] <= v:
            hi.pop()
        lo.append((ti, v))
        hi.append((ti, v))
        while lo[0][0] < ti - window_s:
            lo.popleft()
        while hi[0][0] < ti - window_s:
            hi.popleft()
        best = max(best, hi[0][1] - lo[0][1])
    return best


def _mean(values: list[float | None]) -> float | None:
    good = [v for v in values if v is not None]
    return sum(good) / len(good) if good else None


def summary_lines(nodes: list[Node], rec: Record, duration_s: float) -> list[str]:
    """The closing summary: scans, then what the plant did."""
    out = [f"PSWD Edge demo: {duration_s:g} s on loopback"]
    for node in nodes:
        s = node.engine.get_status()
        ex, ji = s["exec_ms"], s["jitter_ms"]
        out.append(
            f"  {node.config.name:8} scan {s['period_ms']:g} ms: {s['cycles']} cycles, "
            f"{s['overruns']} overruns, exec p99 {ex['p99']:.3f} ms, "
            f"start jitter p50 {ji['p50']:.3f} / p99 {ji['p99']:.3f} / max {ji['max']:.3f} ms, "
            f"watchdog {'TRIPPED' if node.watchdog.tripped else 'ok'}")
    for t_mark, text in rec.marks:
        out.append(f"  t={t_mark:5.1f} s  operator: {text}")
    # Flow before and after the second speed step (the last mark), each over 2 s.
    if len(rec.marks) >= 2 and rec.t:
        t_step = rec.marks[-1][0]
        before = [f for t, f in zip(rec.t, rec.flow, strict=True) if t_step - 2 <= t < t_step]
        after = [f for t, f in zip(rec.t, rec.flow, strict=True) if t > rec.t[-1] - 2]
        b, a = _mean(before), _mean(after)
        if b is not None and a is not None:
            out.append(f"  coolant flow: {b:.1f} L/min before the speed step, {a:.1f} L/min "
                       f"at the end ({(a - b) / b * 100:+.1f} %)")
    temps = [v for v in rec.supply if v is not None]
    if temps:
        out.append(f"  supply temperature: {min(temps):.2f} .. {max(temps):.2f} °C")
    power = [v for v in rec.rack_kw if v is not None]
    if power:
        out.append(f"  rack power: {min(power):.1f} .. {max(power):.1f} kW; largest change "
                   f"in any 1 s window {largest_change(rec.t, rec.rack_kw, 1.0):.1f} kW")
    return out


async def run_demo(duration_s: float = 60.0, ui: bool = True,
                   print_line: Callable[[str], None] = print) -> int:
    """Run the demo site for duration_s; returns the exit code (0, or 1 if it could not start)."""
    from pswd_plant_sim.config import load_sim_config
    from pswd_plant_sim.simulator import Simulator

    try:
        sim_cfg = load_sim_config(EXAMPLES / "plant.toml")
        configs = [load_node_config(EXAMPLES / "cdu.toml"),
                   load_node_config(EXAMPLES / "rack.toml")]
    except ConfigError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return 2
    sim = Simulator(sim_cfg)
    try:
        await sim.start()
    except OSError as exc:
        ports = ", ".join(e.address for e in sim.endpoints)
        print(f"demo: cannot open the simulator's Modbus ports ({ports}): {exc}. "
              "Is another demo or pswd-plant-sim running?", file=sys.stderr)
        return 1
    nodes = [Node(cfg) for cfg in configs]
    by_name = {n.config.name: n for n in nodes}
    cdu, rack = by_name["cdu-01"], by_name["rack-01"]
    tasks = [asyncio.create_task(sim.run_realtime(), name="plant-sim")]
    tasks += [asyncio.create_task(n.run(duration_s), name=f"node-{n.config.name}") for n in nodes]
    rec = Record()
    t0 = time.monotonic()
    try:
        await _play(nodes, by_name, cdu, rack, rec, t0, duration_s, ui, print_line)
    finally:
        for task in tasks[1:]:  # nodes first: they write failsafe at exit while the sim serves
            with contextlib.suppress(asyncio.CancelledError):
                await task
        tasks[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[0]
        await sim.stop()
    for line in summary_lines(nodes, rec, duration_s):
        print_line(line)
    return 0


async def _play(nodes: list[Node], by_name: dict[str, Node], cdu: Node, rack: Node, rec: Record,
                t0: float, duration_s: float, ui: bool,
                print_line: Callable[[str], None]) -> None:
    """Run the operator script and the view until duration_s has passed."""
    pending = list(SCRIPT)
    tick = 0.1
    last_line = -1.0
    live = None
    if ui:
        from rich.live import Live

        from edge_runtime.view import render

        live = Live(refresh_per_second=4, transient=False)
        live.start()
    try:
        while (t := time.monotonic() - t0) < duration_s:
            while pending and t >= pending[0].at_frac * duration_s:
                step = pending.pop(0)
                by_name[step.node].commands.submit(step.command)
                if not rec.marks or rec.marks[-1][1] != step.says:
                    rec.marks.append((t, step.says))
            if t >= WARMUP_S:
                rec.add(t, cdu, rack)
            if live is not None:
                live.update(render(nodes, VIEW_POINTS,
                                   f"PSWD Edge demo  t={t:5.1f}/{duration_s:g} s  (Ctrl-C stops)"))
            elif t - last_line >= 1.0:
                last_line = t
                print_line(_status_line(t, cdu, rack))
            await asyncio.sleep(tick)
    finally:
        if live is not None:
            live.stop()


def _status_line(t: float, cdu: Node, rack: Node) -> str:
    def v(node: Node, name: str) -> str:
        value = node.image.value(name)
        return "-" if value is None else f"{value:.1f}"

    c, r = cdu.engine.get_status(), rack.engine.get_status()
    return (f"t={t:5.1f}s supply {v(cdu, 'supply_temp.temperature')} °C, "
            f"flow {v(cdu, 'flow.flow')} L/min, pump1 {v(cdu, 'pump1.speed_actual')} %, "
            f"valve {v(cdu, 'valve.position_fb')} %, rack {v(rack, 'rack_meter.power_kw')} kW, "
            f"scans {c['cycles']}/{r['cycles']}, overruns {c['overruns']}/{r['overruns']}")
