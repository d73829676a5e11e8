"""The demo's child processes: the plant simulator and each node in a process of its own.

In one process the 10 ms rack scan shared its event loop and the GIL with the simulator's
10 ms steps, the broker and the view, and overran on a 2-core machine. Each child talks to the
demo over a pipe: it says `ready` (or `error`), waits for `go`, sends what the demo shows and
measures (a NodeView every SNAPSHOT_S, the simulator's samples every SAMPLES_S), and ends with
`final`; `stop` ends it early (Ctrl-C reaches the whole process group, so children ignore
SIGINT and the demo stops them in order: nodes first, so their failsafe writes reach a
simulator still serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from edge_runtime import PSWD_VERSION
from edge_runtime.assembly import NodeConfig, assemble, load_node_config
from edge_runtime.config.reader import ConfigError
from edge_runtime.demo.opcua import serve_early, with_opcua
from edge_runtime.demo.view import NodeView, snapshot
from edge_runtime.federation.config import MqttConfig
from edge_runtime.messages.annex_a import parse_message
from edge_runtime.node import Node
from edge_runtime.security.secure_default import InsecureNotice

log = logging.getLogger(__name__)

# Points shown in the live view, per node.
VIEW_POINTS = {
    "cdu-01": ("supply_temp.temperature", "return_temp.temperature", "flow.flow",
               "pump1.speed_ref", "pump1.speed_actual", "pump2.speed_actual",
               "valve.position_cmd", "valve.position_fb", "leak.status"),
    "rack-01": ("rack_meter.power_kw", "battery.soc_pct", "battery.w_set_kw", "battery.ctrl_hb"),
}
SNAPSHOT_S = 0.25  # how often a node process sends its NodeView
SNAPSHOT_BACKLOG = 4  # snapshots waiting to be sent beyond which new ones are dropped
SAMPLES_S = 0.2  # how often the simulator process sends its samples
# SCHED_FIFO when this user may (root or CAP_SYS_NICE; else normal scheduling): the rack
# asks for it in rack.toml ([node] realtime_priority = 50); the CDU and the site node get it
# here, because tests run the shared cdu.toml and site.toml in their own process, which must
# stay an ordinary one; the simulator answers the rack's polls, so it runs just below the
# rack node. This process (the broker, the view) keeps normal scheduling.
NODE_OVERRIDES: dict[str, dict[str, Any]] = {"cdu": {"node": {"realtime_priority": 45}},
                                             "site": {"node": {"realtime_priority": 30}}}
SIM_REALTIME_PRIORITY = 40


def assemble_node(config: NodeConfig, mqtt: MqttConfig) -> Node:
    """The demo's one wiring of a node: the assembler's, on the demo's broker (its MQTT link,
    and for the site role its coordinator, are services that `node.run()` runs)."""
    return assemble(dataclasses.replace(config, mqtt=mqtt))


def training_job(now: datetime, start_in_s: float, rack_kw: float) -> Any:
    """An Annex A.1 announcement for a training job on the demo rack (the demo sends it;
    each node parses one before it starts, see _node_main)."""
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    start = (now + timedelta(seconds=start_in_s)).isoformat(timespec="seconds")
    doc = {
        "PSWD_version": PSWD_VERSION, "message_type": "workload_announcement", "timestamp": stamp,
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


# -- the parent --------------------------------------------------------------------------------
class _Inbox:
    """Messages from a pipe, awaited on the event loop (the reader runs only when data is
    there, so a quiet pipe costs the loop nothing)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        asyncio.get_running_loop().add_reader(conn.fileno(), self._read)

    def _read(self) -> None:
        try:
            while self.conn.poll():
                self.queue.put_nowait(self.conn.recv())
        except (EOFError, OSError):  # the other side is gone: stop as if told to
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self.queue.put_nowait(("stop",))

    async def get(self) -> Any:
        return await self.queue.get()


class _Outbox:
    """A child's messages to the parent, sent from a thread: a busy parent that reads late
    fills the pipe, and a send that blocks must block this thread, never the scan's loop.
    Snapshots are dropped while SNAPSHOT_BACKLOG wait (the next one says the same, newer)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.queue: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._send, name="demo-outbox", daemon=True)
        self.thread.start()

    def put(self, msg: tuple[Any, ...], droppable: bool = False) -> None:
        if droppable and self.queue.qsize() >= SNAPSHOT_BACKLOG:
            return
        self.queue.put(msg)

    def _send(self) -> None:
        while (msg := self.queue.get()) is not None:
            try:
                self.conn.send(msg)
            except OSError:  # the parent is gone
                return

    async def close(self) -> None:
        """Send what is queued, then stop the thread."""
        self.queue.put(None)
        await asyncio.to_thread(self.thread.join, 5.0)


def _child_setup(log_level: int) -> None:
    # Ctrl-C reaches the whole process group; the parent stops its children in order (nodes
    # first, so their failsafe writes reach a simulator still serving).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def node_process(path: Path, role: str, mqtt: MqttConfig, conn: Connection,
                 log_level: int) -> None:
    """Child process: one node from its config file, until its duration ends or it is told to
    stop; sends `ready`, then a NodeView every SNAPSHOT_S, then `final`."""
    _child_setup(log_level)
    asyncio.run(_node_main(path, role, mqtt, conn))


async def _node_main(path: Path, role: str, mqtt: MqttConfig, conn: Connection) -> None:
    inbox = _Inbox(conn)
    try:
        config = with_opcua(load_node_config(path, overrides=NODE_OVERRIDES.get(role)),
                            mqtt.state_dir / path.stem)
        node = assemble_node(config, dataclasses.replace(
            mqtt, client_id=config.name, state_dir=mqtt.state_dir / config.name))
    except ConfigError as exc:
        conn.send(("error", "\n".join(exc.lines)))
        return
    if config.security.insecure:  # the same INSECURE alarm as `pswd-edge run` raises
        node.attach("insecure", InsecureNotice(node.events, node.clock, [
            "lab demo: no certificates, plain MQTT, unsigned commands"]), external=False)
    # The first announcement a process parses compiles the Annex A validators: ~16 ms holding
    # the GIL, enough to make the scan overrun when it happens mid-run. Paid here, at start.
    training_job(datetime.now(UTC), 60.0, 100.0)
    points = VIEW_POINTS.get(config.name, ())
    opcua = await serve_early(node)  # built before the scan starts: the run pays nothing
    conn.send(("ready", config.name if opcua is None else {"name": config.name,
                                                            "opcua": opcua}))
    msg = await inbox.get()
    if msg[0] != "go":
        return
    task = asyncio.create_task(node.run(msg[1]), name=f"node-{config.name}")
    await asyncio.sleep(0)  # node.run applies its real-time priority before its first await
    # The sending thread starts only now, so it inherits that priority: a thread at normal
    # priority holding the GIL while other processes take the CPU kept the SCHED_FIFO scan
    # waiting for the GIL for 600 ms (priority inversion) on a busy machine.
    out = _Outbox(conn)
    stop = asyncio.create_task(inbox.get())
    while not task.done():
        done, _ = await asyncio.wait({task, stop}, timeout=SNAPSHOT_S)
        if stop in done:
            task.cancel()
            break
        out.put(("snap", _view(node, points)), droppable=True)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    stop.cancel()
    out.put(("final", _view(node, points, n_events=200)))
    await out.close()


def _view(node: Node, points: Sequence[str], n_events: int = 6) -> NodeView:
    """The node's NodeView; a site node's carries its coordinator's counters as well."""
    view = snapshot(node, points, n_events)
    coordinator = node.services.get("coordinator")
    if coordinator is not None:
        view.extra["counts"] = dict(coordinator.get_status().get("counts", {}))
    return view


def sim_process(path: Path, conn: Connection, log_level: int) -> None:
    """Child process: the plant simulator, stepping in real time until told to stop; sends
    `ready` (or `error`), its samples every SAMPLES_S, then `final`."""
    _child_setup(log_level)
    from edge_runtime.core.realtime import apply_realtime_priority

    apply_realtime_priority(SIM_REALTIME_PRIORITY)  # '' or why not: normal priority then
    asyncio.run(_sim_main(path, conn))


async def _sim_main(path: Path, conn: Connection) -> None:
    from pswd_plant_sim.config import load_sim_config
    from pswd_plant_sim.simulator import Simulator

    class RecordingSimulator(Simulator):
        """The simulator, keeping the truth after every step for the closing table."""

        samples: list[tuple[float, float, float, float, float]]

        def step(self, dt: float | None = None) -> None:
            super().step(dt)
            s = self.plant
            self.samples.append((time.monotonic(), s.it_power_kw, s.grid_kw,
                                 s.battery.ac_kw, s.loop.supply_c))

    class AnnouncedLoad:
        """The trace plus the announced job once it starts: the load the site was told of
        arrives (an announcement whose load never came would leave the CDU's feedforward
        cooling for nothing)."""

        def __init__(self, base: Any) -> None:
            self.base = base
            self.jobs: list[tuple[float, float, float]] = []  # start (model s), kW, kW/s

        def power_at(self, t: float) -> float:
            extra = sum(min(kw, ramp * (t - start)) for start, kw, ramp in self.jobs
                        if t > start)
            return float(self.base.power_at(t)) + extra

    inbox = _Inbox(conn)
    try:
        sim = RecordingSimulator(load_sim_config(path))
        sim.samples = []
        load = AnnouncedLoad(sim.plant.power)
        sim.plant.power = load
    except ConfigError as exc:
        conn.send(("error", "\n".join(exc.lines)))
        return
    try:
        await sim.start()
    except OSError as exc:
        ports = ", ".join(e.address for e in sim.endpoints)
        conn.send(("error", f"demo: cannot open the simulator's Modbus ports ({ports}): "
                            f"{exc}. Is another demo or pswd-plant-sim running?"))
        return
    out = _Outbox(conn)
    out.put(("ready", {"rack_kw": sim.config.plant.trace.rack_kw}))
    runner = asyncio.create_task(sim.run_realtime(), name="plant-sim")
    stop = asyncio.create_task(inbox.get())
    while True:
        await asyncio.wait({stop}, timeout=SAMPLES_S)
        if stop.done() and stop.result()[0] == "job":  # ("job", start monotonic, kW, kW/s)
            _, at, kw, ramp = stop.result()
            load.jobs.append((sim.plant.t + at - time.monotonic(), kw, ramp))
            stop = asyncio.create_task(inbox.get())
        s = sim.state
        batch, sim.samples = sim.samples, []
        out.put(("samples", batch, {"grid_kw": s.grid_kw, "it_kw": s.it_power_kw,
                                      "battery_kw": s.battery_ac_kw, "soc_pct": s.soc_pct}))
        if stop.done():
            break
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    await sim.stop()
    out.put(("final", {"steps": sim.steps, "overruns": sim.overruns}))
    await out.close()


@dataclass
class Child:
    """One child process and the parent's end of its pipe."""

    name: str
    process: Any  # multiprocessing.Process (its type depends on the context)
    conn: Connection


class Children:
    """The demo's child processes and their messages, read on the event loop."""

    def __init__(self) -> None:
        # A fork server that has imported the demo once forks each child ready to run
        # (three spawned interpreters importing the runtime each took ~6 s of 2 busy cores);
        # it is single-threaded, so forking it is safe where forking this process is not.
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload([__name__, "pswd_plant_sim.simulator"])
        self.children: dict[str, Child] = {}
        self.messages: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def start(self, name: str, target: Callable[..., None], *args: Any) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=target, args=(*args, child, logging.getLogger().level),
                                name=f"pswd-demo-{name}", daemon=True)
        proc.start()
        child.close()
        self.children[name] = c = Child(name, proc, parent)
        asyncio.get_running_loop().add_reader(parent.fileno(), self._read, c)

    def _read(self, c: Child) -> None:
        try:
            while c.conn.poll():
                self.messages.put_nowait((c.name, c.conn.recv()))
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(c.conn.fileno())
            self.messages.put_nowait((c.name, ("exit",)))

    def send(self, name: str, *msg: Any) -> None:
        with contextlib.suppress(OSError):
            self.children[name].conn.send(msg)

    async def wait_ready(self, names: Sequence[str], timeout_s: float) -> dict[str, Any]:
        """Each child's `ready` payload; RuntimeError with the child's `error` line (or its
        exit, or the timeout)."""
        ready: dict[str, Any] = {}
        deadline = time.monotonic() + timeout_s
        while len(ready) < len(names):
            try:
                name, msg = await asyncio.wait_for(self.messages.get(),
                                                   max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise RuntimeError("demo: a process did not start in time: "
                                   + ", ".join(n for n in names if n not in ready)) from None
            if msg[0] == "ready":
                ready[name] = msg[1]
            elif msg[0] in ("error", "exit"):
                raise RuntimeError(msg[1] if msg[0] == "error" else f"demo: {name} exited")
        return ready

    async def stop(self, names: Sequence[str], timeout_s: float) -> None:
        """Tell these children to stop and wait (bounded) for their `final` and exit."""
        for name in names:
            self.send(name, "stop")
        deadline = time.monotonic() + timeout_s
        for name in names:
            c = self.children[name]
            while c.process.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if c.process.is_alive():
                log.warning("demo: %s did not stop in %.0f s; terminated", name, timeout_s)
                c.process.terminate()
            await asyncio.sleep(0)
            self._read(c)  # what it sent last

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for c in self.children.values():
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(c.conn.fileno())
            if c.process.is_alive():
                c.process.terminate()
            c.process.join(2.0)
            c.conn.close()
