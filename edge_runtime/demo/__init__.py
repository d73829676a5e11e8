"""`pswd-edge demo`: a whole simulated site on this machine, on loopback, no root needed.

- The plant simulator (examples/plant.toml) serves the CDU and the rack over Modbus TCP.
- A CDU node and a rack node (examples/cdu.toml, rack.toml) scan against it exactly as they
  would against real devices: thermal control, pump staging, battery smoothing, safety layer.
- The site node (examples/site.toml) runs the coordinator that admits workloads.
- MQTT carries their federation (births, CBOR telemetry, alarms, announcements): Mosquitto
  when it is installed, else an embedded amqtt broker in this process (MQTT 3.1.1 only).
- Part-way through, an AI training job announces itself (Annex A.1); the coordinator answers
  (A.2) and forwards it to the rack and the CDU, which prepare for the load; the job's load
  then arrives in the plant.

The simulator and each node run in a process of their own (processes.py); this one keeps
the broker, the workload and the view. The demo ends with a table of the spec's targets, scaled
to the demo (its 120 kW rack stands for the spec's 200 MW swing), against what this run
measured (targets.py); every row says met, NOT MET or not measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_runtime.assembly import NodeConfig, load_node_config
from edge_runtime.config.reader import ConfigError
from edge_runtime.demo.opcua import connect_lines
from edge_runtime.demo.processes import Children, node_process, sim_process, training_job
from edge_runtime.demo.targets import (
    SPEC_SWING_MW,
    Announcement,
    Record,
    format_table,
    target_rows,
)
from edge_runtime.demo.view import NodeView, render
from edge_runtime.federation.config import MqttConfig

log = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SITE = "demo"
NODE_FILES = ("site.toml", "cdu.toml", "rack.toml")
# The demo's nodes are lab nodes ([security] insecure = true in examples/*.toml): said at the
# start here, and by each node's INSECURE alarm (security/secure_default.py) in its events.
INSECURE_LINE = ("INSECURE lab demo: its nodes set [security] insecure = true (no certificates, "
                 "plain MQTT on loopback, unsigned commands); a production node refuses to "
                 "start like this (docs/security.md)")
ANNOUNCE_AT_FRAC = 0.3  # the training job announces itself at this share of the run
START_AFTER_FRAC = 0.2  # ...to start this share of the run later


def supply_setpoint(cfg: NodeConfig) -> float | None:
    """The CDU's configured supply-temperature setpoint, if it runs that loop."""
    supply = cfg.control.supply_temp if cfg.control is not None else None
    return supply.loop.setpoint if supply is not None else None


def summary_lines(rec: Record, duration_s: float, rack_kw: float,
                  setpoint_c: float | None) -> list[str]:
    """The closing summary: scans, the announcement, then the table of spec targets."""
    out = [f"PSWD Edge demo: {duration_s:g} s on loopback"]
    for view in rec.nodes.values():
        s = view.scan
        ex, ji = s["exec_ms"], s["jitter_ms"]
        out.append(
            f"  {view.name:8} scan {s['period_ms']:g} ms: {s['cycles']} cycles, "
            f"{s['overruns']} overruns, exec p99 {ex['p99']:.3f} ms, "
            f"start jitter p50 {ji['p50']:.3f} / p99 {ji['p99']:.3f} / max {ji['max']:.3f} ms, "
            f"watchdog {'TRIPPED' if view.watchdog_tripped else 'ok'}")
    if rec.sim:
        out.append(f"  simulator: {rec.sim.get('steps', 0)} steps, "
                   f"{rec.sim.get('overruns', 0)} late")
    ann = rec.announcement
    if ann is not None:
        answer = (f"'{ann.status}' in {ann.latency_ms:.1f} ms"
                  if ann.latency_ms is not None else f"no answer ({ann.error or ann.status})")
        cond = f", conditions {', '.join(ann.conditions)}" if ann.conditions else ""
        out.append(f"  workload {ann.workload_id}: A.1 sent at t={ann.sent_at:.1f} s, "
                   f"A.2 {answer}{cond}")
        for view in rec.nodes.values():
            seen = [e for e in view.events if ann.workload_id in e.message]
            if seen:
                out.append(f"    {view.name}: {seen[0].message}")
    out.append("")
    out.append(f"Spec targets, scaled to the demo: its {rack_kw:g} kW rack stands for the spec's "
               f"{SPEC_SWING_MW:g} MW swing (1 MW = {rack_kw / SPEC_SWING_MW:g} kW)")
    out += format_table(target_rows(rec, duration_s, rack_kw, setpoint_c))
    return out


async def run_demo(duration_s: float = 60.0, ui: bool = True,
                   print_line: Callable[[str], None] = print) -> int:
    """Run the demo site for duration_s; returns the exit code (0; 1 if it could not start;
    2 on a bad example config; 130 when interrupted, after the table of what ran)."""
    try:
        configs = [load_node_config(EXAMPLES / f) for f in NODE_FILES]
    except ConfigError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return 2
    if any(c.security.insecure for c in configs):
        print_line(INSECURE_LINE)
    rec = Record()
    interrupted = False
    children = Children()
    names = [c.name for c in configs]
    stack = contextlib.AsyncExitStack()
    try:
        state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pswd-demo-")))
        try:
            mqtt = await _broker(stack, state_dir)
            children.start("sim", sim_process, EXAMPLES / "plant.toml")
            for cfg, file in zip(configs, NODE_FILES, strict=True):
                children.start(cfg.name, node_process, EXAMPLES / file, cfg.role, mqtt)
            ready = await children.wait_ready(["sim", *names], 90.0)
            sim_info = ready["sim"]
        except RuntimeError as exc:  # EmbeddedBrokerError is one
            print(str(exc), file=sys.stderr)
            return 1
        for line in connect_lines([r["opcua"] for r in ready.values()
                                   if isinstance(r, dict) and "opcua" in r]):
            print_line(line)
        rec.t0 = time.monotonic()
        for name in names:
            children.send(name, "go", duration_s)
        try:
            await _play(children, mqtt, rec, duration_s, ui, print_line, sim_info["rack_kw"])
        except asyncio.CancelledError:  # Ctrl-C: stop in order, and still say what was measured
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            interrupted = True
        finally:
            # Nodes first: they write failsafe while the simulator still serves.
            await children.stop(names, 10.0)
            await children.stop(["sim"], 5.0)
            _drain(children, rec)
            rec.nodes = {n: rec.nodes[n] for n in names if n in rec.nodes}  # file order
    finally:
        children.close()
        await stack.aclose()
    setpoint = next((supply_setpoint(c) for c in configs if c.role == "cdu"), None)
    ran_s = round(min(duration_s, time.monotonic() - rec.t0), 1)
    for line in summary_lines(rec, ran_s, sim_info["rack_kw"], setpoint):
        print_line(line)
    return 130 if interrupted else 0


async def _broker(stack: contextlib.AsyncExitStack, state_dir: Path) -> MqttConfig:
    """The site's broker: Mosquitto when installed (a C process of its own, MQTT 5), else
    amqtt inside this process (MQTT 3.1.1 only: no shared subscription, one coordinator)."""
    from edge_runtime.federation.embedded_broker import EmbeddedBroker, find_mosquitto

    exe = find_mosquitto()
    if exe is None:
        broker = await stack.enter_async_context(EmbeddedBroker(port=0))
        return MqttConfig(host=broker.host, port=broker.port, protocol="3.1.1",
                          state_dir=state_dir)
    with socket.socket() as sock:  # a free port (mosquitto cannot be given port 0)
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    conf = state_dir / "mosquitto.conf"
    lines = ["allow_anonymous true", f"listener {port} 127.0.0.1", "log_dest none"]
    if os.geteuid() == 0:  # else it drops to user 'mosquitto'
        lines.append(f"user {getpass.getuser()}")
    conf.write_text("\n".join(lines) + "\n")
    proc = await asyncio.create_subprocess_exec(exe, "-c", str(conf),
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    stack.push_async_callback(_terminate, proc)
    deadline = time.monotonic() + 5.0
    while True:  # mosquitto says it listens in no other way than by accepting
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"demo: {exe} did not listen on port {port}") from None
            await asyncio.sleep(0.02)
    return MqttConfig(host="127.0.0.1", port=port, protocol="5", state_dir=state_dir)


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        await proc.wait()


def _drain(children: Children, rec: Record) -> dict[str, Any]:
    """Take every message waiting from the children into the record; the sim's last state."""
    state: dict[str, Any] = {}
    while not children.messages.empty():
        name, msg = children.messages.get_nowait()
        kind = msg[0]
        if kind == "samples":
            rec.samples.extend(msg[1])
            state = msg[2]
        elif kind in ("snap", "final") and name != "sim":
            rec.nodes[name] = msg[1]
        elif kind == "final":
            rec.sim = dict(msg[1])
    return state


async def _play(children: Children, mqtt: MqttConfig, rec: Record, duration_s: float,
                ui: bool, print_line: Callable[[str], None], rack_kw: float) -> None:
    """Run the view until duration_s has passed; announce the workload on the way."""
    tick = 0.25
    last_line = -1.0
    announcer: asyncio.Task[None] | None = None
    state: dict[str, Any] = {}
    live = None
    if ui:
        from rich.live import Live

        live = Live(refresh_per_second=4, transient=False)
        live.start()
    try:
        while (t := time.monotonic() - rec.t0) < duration_s:
            state = _drain(children, rec) or state
            if announcer is None and t >= ANNOUNCE_AT_FRAC * duration_s:
                announcer = asyncio.create_task(
                    _announce(mqtt, rec, t, START_AFTER_FRAC * duration_s, rack_kw,
                              lambda at, kw, ramp: children.send("sim", "job", at, kw, ramp)))
            views = sorted(rec.nodes.values(), key=lambda v: v.name)
            if live is not None:
                live.update(render(views,
                                   f"PSWD Edge demo  t={t:5.1f}/{duration_s:g} s  (Ctrl-C stops)",
                                   extra=_site_lines(views, rec, state)))
            elif t - last_line >= 1.0:
                last_line = t
                print_line(_status_line(t, views, state))
            await asyncio.sleep(tick)
    finally:
        if live is not None:
            live.stop()
        if announcer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await announcer


async def _announce(mqtt: MqttConfig, rec: Record, t: float, start_in_s: float,
                    rack_kw: float, start_job: Callable[[float, float, float], None]) -> None:
    """The workload side: send the A.1, wait for the A.2, note the latency; the job's load
    arrives in the plant when announced (`start_job(at monotonic, kW, kW/s)`)."""
    from edge_runtime.federation.workload_client import WorkloadClient

    msg = training_job(datetime.now(UTC), start_in_s, rack_kw)
    ann = rec.announcement = Announcement(msg.workload_id, t)
    profile = msg.power_profile
    start_job(time.monotonic() + start_in_s, profile.peak_power_mw * 1000,
              profile.ramp_rate_mw_per_sec * 1000)
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


def _site_lines(views: Sequence[NodeView], rec: Record, state: dict[str, Any]) -> list[str]:
    """The site panel of the live view."""
    lines = []
    if state:
        lines.append(f"grid {state['grid_kw']:7.1f} kW   IT {state['it_kw']:7.1f} kW   battery "
                     f"{state['battery_kw']:+7.1f} kW   SoC {state['soc_pct']:5.1f} %")
    ann = rec.announcement
    if ann is not None:
        answer = (f"{ann.status} in {ann.latency_ms:.1f} ms" if ann.latency_ms is not None
                  else ann.error or ann.status)
        lines.append(f"workload {ann.workload_id}: A.2 {answer}"
                     + (f" ({', '.join(ann.conditions)})" if ann.conditions else ""))
    counts = next((v.extra["counts"] for v in views if v.extra.get("counts")), None)
    if counts:
        lines.append("site coordinator: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return lines


def _status_line(t: float, views: Sequence[NodeView], state: dict[str, Any]) -> str:
    """One plain line a second (--no-ui)."""
    values = {p.name: p.value for v in views for p in v.points}

    def v(name: str) -> str:
        value = values.get(name)
        return "-" if not isinstance(value, (int, float)) else f"{value:.1f}"

    site = (f", grid {state['grid_kw']:.1f} kW, SoC {state['soc_pct']:.1f} %" if state else "")
    scans = "/".join(str(x.scan["cycles"]) for x in views)
    overruns = "/".join(str(x.scan["overruns"]) for x in views)
    return (f"t={t:5.1f}s supply {v('supply_temp.temperature')} °C, "
            f"flow {v('flow.flow')} L/min, pump1 {v('pump1.speed_actual')} %, "
            f"valve {v('valve.position_fb')} %, rack {v('rack_meter.power_kw')} kW{site}, "
            f"scans {scans}, overruns {overruns}")
