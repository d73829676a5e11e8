"""`pswd-edge demo`: a whole simulated site on this machine, on loopback, no broker, no root.

- The plant simulator (examples/plant.toml) serves the CDU and the rack over Modbus TCP.
- A CDU node and a rack node (examples/cdu.toml, rack.toml) scan against it exactly as they
  would against real devices: thermal control, pump staging, battery smoothing, safety layer.
- An embedded MQTT 3.1.1 broker (amqtt) carries their federation: births, CBOR telemetry,
  alarms, and the site coordinator (examples/site.toml) that admits workloads.
- Part-way through, an AI training job announces itself (Annex A.1); the coordinator answers
  (A.2) and forwards it to the rack and the CDU, which prepare for the load.

The live view shows scans, key points and the site; the closing summary says what the grid
saw with and without smoothing, how far the supply temperature strayed, and the announcement.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge_runtime.config.loader import load_node_config
from edge_runtime.config.reader import ConfigError
from edge_runtime.config.schema import NodeConfig
from edge_runtime.federation.config import MqttConfig
from edge_runtime.messages.annex_a import parse_message
from edge_runtime.node import Node

log = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SITE = "demo"

# Points shown in the live view, per node.
VIEW_POINTS = {
    "cdu-01": ("supply_temp.temperature", "return_temp.temperature", "flow.flow",
               "pump1.speed_ref", "pump1.speed_actual", "pump2.speed_actual",
               "valve.position_cmd", "valve.position_fb", "leak.status"),
    "rack-01": ("rack_meter.power_kw", "battery.soc_pct", "battery.w_set_kw", "battery.ctrl_hb"),
}
# The first seconds show the registers' start-up values, not the plant: not summarised.
WARMUP_S = 2.0
ANNOUNCE_AT_FRAC = 0.3  # the training job announces itself at this share of the run
START_AFTER_FRAC = 0.2  # ...to start this share of the run later


@dataclass
class Announcement:
    """The workload's announcement as the demo saw it."""

    workload_id: str
    sent_at: float
    latency_ms: float | None = None
    status: str = "pending"
    conditions: tuple[str, ...] = ()
    error: str = ""


@dataclass
class Record:
    """What the demo keeps for its summary: key values every tick."""

    t: list[float] = field(default_factory=list)
    supply: list[float | None] = field(default_factory=list)
    # Grid-side power in 100 ms means (as a utility meter integrates it), from 10 ms samples:
    # the IT load alone (what the grid would see without smoothing) and with the battery.
    grid_t: list[float] = field(default_factory=list)
    it_kw: list[float | None] = field(default_factory=list)
    grid_kw: list[float | None] = field(default_factory=list)
    announcement: Announcement | None = None
    _bin: int | None = None
    _acc: list[tuple[float, float]] = field(default_factory=list)

    def add(self, t: float, cdu: Node) -> None:
        self.t.append(t)
        self.supply.append(cdu.image.value("supply_temp.temperature"))

    def add_power(self, t: float, it_kw: float, grid_kw: float) -> None:
        b = int(t * 10)
        if self._bin is not None and b != self._bin and self._acc:
            self.grid_t.append(self._bin / 10)
            self.it_kw.append(sum(a for a, _ in self._acc) / len(self._acc))
            self.grid_kw.append(sum(g for _, g in self._acc) / len(self._acc))
            self._acc.clear()
        self._bin = b
        self._acc.append((it_kw, grid_kw))


def largest_change(t: list[float], values: list[float | None], window_s: float) -> float:
    """Largest max - min of the values inside any window of window_s (None values skipped)."""
    lo: deque[tuple[float, float]] = deque()  # monotonic queues of the window's min and max
    hi: deque[tuple[float, float]] = deque()
    best = 0.0
    for ti, v in zip(t, values, strict=True):
        if v is None:
            continue
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


def supply_setpoint(cfg: NodeConfig) -> float | None:
    """The CDU's configured supply-temperature setpoint, if it runs that loop."""
    supply = cfg.control.supply_temp if cfg.control is not None else None
    return supply.loop.setpoint if supply is not None else None


def summary_lines(nodes: list[Node], rec: Record, duration_s: float,
                  setpoint_c: float | None) -> list[str]:
    """The closing summary: scans, then what the grid and the plant saw."""
    out = [f"PSWD Edge demo: {duration_s:g} s on loopback"]
    for node in nodes:
        s = node.engine.get_status()
        ex, ji = s["exec_ms"], s["jitter_ms"]
        out.append(
            f"  {node.config.name:8} scan {s['period_ms']:g} ms: {s['cycles']} cycles, "
            f"{s['overruns']} overruns, exec p99 {ex['p99']:.3f} ms, "
            f"start jitter p50 {ji['p50']:.3f} / p99 {ji['p99']:.3f} / max {ji['max']:.3f} ms, "
            f"watchdog {'TRIPPED' if node.watchdog.tripped else 'ok'}")
    if rec.grid_t:
        raw = largest_change(rec.grid_t, rec.it_kw, 1.0)
        smooth = largest_change(rec.grid_t, rec.grid_kw, 1.0)
        cut = f" ({(1 - smooth / raw) * 100:.0f} % less)" if raw > 0 else ""
        out.append(f"  grid: largest change of the 100 ms mean power in any 1 s window "
                   f"{raw:.1f} kW without smoothing, {smooth:.1f} kW with the battery{cut}")
    temps = [v for v in rec.supply if v is not None]
    if temps:
        line = f"  supply temperature: {min(temps):.2f} .. {max(temps):.2f} °C"
        if setpoint_c is not None:
            worst = max(abs(v - setpoint_c) for v in temps)
            line += f", largest excursion {worst:.2f} K from the {setpoint_c:g} °C setpoint"
        out.append(line)
    ann = rec.announcement
    if ann is None:
        out.append("  workload announcement: not sent (run too short)")
    else:
        answer = (f"'{ann.status}' in {ann.latency_ms:.1f} ms"
                  if ann.latency_ms is not None else f"no answer ({ann.error or ann.status})")
        cond = f", conditions {', '.join(ann.conditions)}" if ann.conditions else ""
        out.append(f"  workload {ann.workload_id}: A.1 sent at t={ann.sent_at:.1f} s, "
                   f"A.2 {answer}{cond}")
        for node in nodes:
            seen = [e for e in node.events.recent(200) if ann.workload_id in e.message]
            if seen:
                out.append(f"    {node.config.name}: {seen[0].message}")
    return out


def training_job(now: datetime, start_in_s: float, rack_kw: float) -> Any:
    """An Annex A.1 announcement for a training job on the demo rack."""
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    start = (now + timedelta(seconds=start_in_s)).isoformat(timespec="seconds")
    doc = {
        "PSWD_version": "1.0", "message_type": "workload_announcement", "timestamp": stamp,
        "workload_id": f"demo-train-{int(now.timestamp())}", "workload_type": "ai_training",
        "power_profile": {"peak_power_mw": rack_kw * 0.25 / 1000,
                          "baseline_power_mw": rack_kw * 0.1 / 1000,
                          "ramp_rate_mw_per_sec": 0.02, "duration_estimate_sec": 3600,
                          "temporal_resolution_ms": 100},
        "thermal_profile": {"heat_generation_kw": rack_kw * 0.25,
                            "preferred_operating_temp_c": 30.0,
                            "critical_temp_threshold_c": 45.0},
        "flexibility_parameters": {"throttling_capability": True, "delay_tolerance_sec": 600,
                                   "migration_capable": False, "priority_level": "high"},
        "timing_constraints": {"earliest_start_time": start.replace("+00:00", "Z")},
    }
    return parse_message(json.dumps(doc).encode())


async def run_demo(duration_s: float = 60.0, ui: bool = True,
                   print_line: Callable[[str], None] = print) -> int:
    """Run the demo site for duration_s; returns the exit code (0, 1 if it could not start)."""
    from pswd_plant_sim.config import load_sim_config
    from pswd_plant_sim.simulator import Simulator

    try:
        sim_cfg = load_sim_config(EXAMPLES / "plant.toml")
        configs = [load_node_config(EXAMPLES / "cdu.toml"),
                   load_node_config(EXAMPLES / "rack.toml")]
        from edge_runtime.site.config import load_site_config

        site_cfg = load_site_config(EXAMPLES / "site.toml")
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
    from edge_runtime.federation.embedded_broker import EmbeddedBroker
    from edge_runtime.federation.link import NodeLink
    from edge_runtime.site.coordinator import SiteCoordinator

    stack = contextlib.AsyncExitStack()
    nodes = [Node(cfg) for cfg in configs]
    cdu = nodes[0]
    rec = Record()
    tasks: list[asyncio.Task[Any]] = []
    try:
        state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pswd-demo-")))
        broker = await stack.enter_async_context(EmbeddedBroker(port=0))
        # amqtt speaks MQTT 3.1.1 only: no shared subscription, one coordinator instance.
        mqtt = MqttConfig(host=broker.host, port=broker.port, protocol="3.1.1",
                          state_dir=state_dir)
        coordinator = SiteCoordinator(dataclasses.replace(mqtt, client_id="site-01"),
                                      site=SITE, node="site-01", config=site_cfg)
        await coordinator.start()
        stack.push_async_callback(coordinator.stop)
        links = [NodeLink(n, dataclasses.replace(mqtt, client_id=n.config.name,
                                                 state_dir=state_dir / n.config.name))
                 for n in nodes]
        tasks.append(asyncio.create_task(sim.run_realtime(), name="plant-sim"))
        tasks += [asyncio.create_task(link.run(), name=f"link-{link.node.config.name}")
                  for link in links]
        node_tasks = [asyncio.create_task(n.run(duration_s), name=f"node-{n.config.name}")
                      for n in nodes]
        try:
            await _play(nodes, sim, coordinator, mqtt, rec, duration_s, ui, print_line)
        finally:
            for task in node_tasks:  # nodes first: they write failsafe while the sim serves
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        for task in reversed(tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await stack.aclose()
        await sim.stop()
    for line in summary_lines(nodes, rec, duration_s, supply_setpoint(cdu.config)):
        print_line(line)
    return 0


async def _announce(mqtt: MqttConfig, rec: Record, t: float, start_in_s: float,
                    rack_kw: float) -> None:
    """The workload side: send the A.1, wait for the A.2, note the latency."""
    from edge_runtime.federation.workload_client import WorkloadClient

    msg = training_job(datetime.now(UTC), start_in_s, rack_kw)
    ann = rec.announcement = Announcement(msg.workload_id, t)
    try:
        async with WorkloadClient(dataclasses.replace(mqtt, client_id="workload-demo"),
                                  site=SITE) as client:
            t0 = time.perf_counter()
            answer = await client.announce(msg, timeout_s=2.0)
            ann.latency_ms = (time.perf_counter() - t0) * 1000
            ann.status = str(answer.approval_status.value)
            ann.conditions = tuple(answer.conditions or ())
    except Exception as exc:  # the demo reports it; the site keeps running
        ann.status, ann.error = "failed", str(exc)
        log.warning("workload announcement failed: %s", exc)


async def _play(nodes: list[Node], sim: Any, coordinator: Any, mqtt: MqttConfig, rec: Record,
                duration_s: float, ui: bool, print_line: Callable[[str], None]) -> None:
    """Run the view until duration_s has passed; announce the workload on the way."""
    cdu, rack = nodes
    t0 = time.monotonic()
    tick = 0.1
    last_line = -1.0
    announcer: asyncio.Task[None] | None = None
    sampler = asyncio.create_task(_sample_power(sim, rec, t0))
    live = None
    if ui:
        from rich.live import Live

        from edge_runtime.view import render

        live = Live(refresh_per_second=4, transient=False)
        live.start()
    try:
        while (t := time.monotonic() - t0) < duration_s:
            if announcer is None and t >= ANNOUNCE_AT_FRAC * duration_s:
                rack_kw = sim.config.plant.trace.rack_kw
                announcer = asyncio.create_task(
                    _announce(mqtt, rec, t, START_AFTER_FRAC * duration_s, rack_kw))
            if t >= WARMUP_S:
                rec.add(t, cdu)
            if live is not None:
                live.update(render(nodes, VIEW_POINTS,
                                   f"PSWD Edge demo  t={t:5.1f}/{duration_s:g} s  (Ctrl-C stops)",
                                   extra=_site_lines(coordinator, rec, sim)))
            elif t - last_line >= 1.0:
                last_line = t
                print_line(_status_line(t, cdu, rack, sim))
            await asyncio.sleep(tick)
    finally:
        sampler.cancel()
        if live is not None:
            live.stop()
        if announcer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await announcer


async def _sample_power(sim: Any, rec: Record, t0: float) -> None:
    """Grid and IT power from the model every 10 ms (the view's tick is too coarse)."""
    while True:
        t = time.monotonic() - t0
        if t >= WARMUP_S:
            rec.add_power(t, sim.state.it_power_kw, sim.state.grid_kw)
        await asyncio.sleep(0.01)


def _site_lines(coordinator: Any, rec: Record, sim: Any) -> list[str]:
    """The site panel of the live view."""
    s = sim.state
    lines = [f"grid {s.grid_kw:7.1f} kW   IT {s.it_power_kw:7.1f} kW   battery "
             f"{s.battery_ac_kw:+7.1f} kW   SoC {s.soc_pct:5.1f} %"]
    ann = rec.announcement
    if ann is not None:
        answer = (f"{ann.status} in {ann.latency_ms:.1f} ms" if ann.latency_ms is not None
                  else ann.error or ann.status)
        lines.append(f"workload {ann.workload_id}: A.2 {answer}"
                     + (f" ({', '.join(ann.conditions)})" if ann.conditions else ""))
    status = coordinator.get_status()
    counts = status.get("counts") or status.get("counters") or {}
    if counts:
        lines.append("site coordinator: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return lines


def _status_line(t: float, cdu: Node, rack: Node, sim: Any) -> str:
    def v(node: Node, name: str) -> str:
        value = node.image.value(name)
        return "-" if value is None else f"{value:.1f}"

    c, r = cdu.engine.get_status(), rack.engine.get_status()
    return (f"t={t:5.1f}s supply {v(cdu, 'supply_temp.temperature')} °C, "
            f"flow {v(cdu, 'flow.flow')} L/min, pump1 {v(cdu, 'pump1.speed_actual')} %, "
            f"valve {v(cdu, 'valve.position_fb')} %, rack {v(rack, 'rack_meter.power_kw')} kW, "
            f"grid {sim.state.grid_kw:.1f} kW, SoC {sim.state.soc_pct:.1f} %, "
            f"scans {c['cycles']}/{r['cycles']}, overruns {c['overruns']}/{r['overruns']}")
