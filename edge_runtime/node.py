"""A running node: field drivers, scan engine, safety layer and watchdog, plus attached services.

Built only by the assembler (edge_runtime/assembly/), which decides what a role's node holds
and in which scan order; this module is what every node does at run time: run the scan and the
drivers, watch the scan, drive the plant safe when it stops, and report its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_runtime import __version__
from edge_runtime.config.schema import DeviceConfig
from edge_runtime.core.clock import Clock, WallClock
from edge_runtime.core.commands import CommandQueue, LinkCommand, ManualOutputs
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Sample
from edge_runtime.core.ports import Endpoint, FieldDevice
from edge_runtime.core.realtime import (
    apply_realtime_priority,
    current_scheduling,
    restore_scheduling,
)
from edge_runtime.core.scan import ControlBlock, ScanEngine
from edge_runtime.io.failsafe import BlockingWriter, write_failsafe_blocking
from edge_runtime.safety.interlocks import SafetyLayer
from edge_runtime.safety.watchdog import Watchdog, WatchdogThread, monitor

log = logging.getLogger(__name__)

# Drivers start their poll cycles half a scan period ahead of the scan's own cycle, so each
# scan latches samples read at most half a period before it, and a sensor change reaches the
# outputs within ~1.5 scans (at most one period waiting for the poll, half for the scan)
# even when a loaded machine delays a poll's answer by a few ms. Devices polled slower than
# the scan start a little later, so the fast polls get the shared connection first.
POLL_LEAD = 0.5
SLOW_POLL_DELAY = 0.05


class NodeSettings(Protocol):
    """What a running node reads of its config (assembly.config.NodeConfig has it all)."""

    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def site(self) -> str: ...
    @property
    def scan_period_s(self) -> float: ...
    @property
    def watchdog_s(self) -> float: ...
    @property
    def devices(self) -> tuple[DeviceConfig, ...]: ...
    @property
    def realtime_priority(self) -> int: ...


@dataclass(frozen=True, slots=True)
class NodeParts:
    """Everything the assembler built for one node, in the order the scan runs it."""

    config: NodeSettings
    clock: Clock
    live: dict[str, Sample]  # the drivers' latest samples (the image latches from it)
    events: EventLog
    commands: CommandQueue
    drivers: dict[str, FieldDevice]
    endpoints: Sequence[Endpoint]  # shared connections (Modbus, OPC UA), closed at shutdown
    image: ProcessImage
    safety: SafetyLayer
    manual: ManualOutputs
    blocks: Sequence[ControlBlock]  # commands, heartbeat, estimation, the role's blocks
    role_blocks: Sequence[ControlBlock]  # the role's control blocks alone (status, commands)
    interlocks: Sequence[ControlBlock] = ()  # before the safety layer, which runs last
    # Safe-image writers for devices that are not Modbus, by protocol (io/failsafe.py).
    failsafe_writers: Mapping[str, BlockingWriter] = field(default_factory=dict)


class LinkSwitch:
    """Scan observer for the cabinet's link switches (`[node] disconnect_input`,
    `reconnect_input`): a rising edge (value >= 0.5, usable quality) queues a LinkCommand from
    the local panel, checked and audited at the next scan like any command. An input that goes
    bad is not an edge: a broken wire neither cuts nor restores the links."""

    name = "link_switch"

    def __init__(self, commands: CommandQueue, disconnect_input: str = "",
                 reconnect_input: str = "") -> None:
        self._commands = commands
        self._inputs = {p: a for p, a in ((disconnect_input, "disconnect"),
                                          (reconnect_input, "reconnect")) if p}
        self._last: dict[str, bool] = {}

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Queue a LinkCommand on each rising edge."""
        for point, action in self._inputs.items():
            value = image.value(point)
            if value is None:
                continue
            on = value >= 0.5
            if on and self._last.get(point) is False:
                self._commands.submit(LinkCommand(action, source=f"local.input:{point}",
                                                  reason=f"local input {point}"))
            self._last[point] = on


class Service(Protocol):
    """Something attached to a node that runs beside its scan (the MQTT link, a server)."""

    async def run(self) -> None:
        """Run until cancelled."""
        ...

    def get_status(self) -> dict[str, Any]:
        """Status for node.get_status()[name]."""
        ...


class Node:
    """One controller at run time; see the module docstring. Build it with assembly.assemble."""

    def __init__(self, parts: NodeParts, *, watchdog_thread: bool = True) -> None:
        self.config = parts.config
        self.clock = parts.clock
        self.live = parts.live
        self.events = parts.events
        self.commands = parts.commands
        self.drivers = parts.drivers
        self._endpoints = list(parts.endpoints)
        self._failsafe_writers = dict(parts.failsafe_writers)
        self.image = parts.image
        self.safety = parts.safety
        self.manual = parts.manual
        self.role_blocks = list(parts.role_blocks)
        self.watchdog = Watchdog(self.config.watchdog_s, self._on_watchdog)
        self._use_thread = watchdog_thread
        self.services: dict[str, Service] = {}
        self._external: set[str] = set()  # services an emergency disconnect cuts
        self._rebuild: dict[str, Callable[[], Service]] = {}
        self._service_tasks: dict[str, asyncio.Task[Any]] = {}
        self.links_cut = ""  # why the external links are cut ("" while they are up)
        self.engine = ScanEngine(
            clock=self.clock,
            period_s=self.config.scan_period_s,
            image=self.image,
            drivers=self.drivers,
            blocks=parts.blocks,
            interlocks=[*parts.interlocks, self.safety],  # the safety layer has the last word
            events=self.events,
            watchdog=self.watchdog,
        )
        # Before anything is written: journaled latches re-engaged, the safe image published
        # and staged, the drivers' max-hold expiry pointed at it (safety/interlocks.py).
        self.manual.links = self  # LinkCommand: emergency disconnect and reconnect
        self.safety.held = self.manual.manual
        self.safety.start(self.image, self.watchdog, self.drivers)

    def attach(self, name: str, service: Service, *, external: bool = True,
               rebuild: Callable[[], Service] | None = None) -> None:
        """Run `service` beside the scan (started by run(), cancelled when the node stops);
        its status appears as get_status()[name]. An `external` service (a link to the
        outside: MQTT, OPC UA, HTTPS) is cut by an emergency disconnect; `rebuild` makes a
        fresh one for the reconnect (a service that cannot restart stays cut, with an alarm)."""
        if name in self.services:
            raise ValueError(f"a service named {name!r} is already attached")
        self.services[name] = service
        if external:
            self._external.add(name)
        if rebuild is not None:
            self._rebuild[name] = rebuild

    def _start_service(self, name: str) -> None:
        task = asyncio.create_task(self.services[name].run(), name=name)
        task.add_done_callback(self._service_ended)
        self._service_tasks[name] = task

    async def _restart(self, name: str, old: asyncio.Task[Any]) -> None:
        await asyncio.gather(old, return_exceptions=True)
        if self.links_cut:
            return  # cut again meanwhile
        self.services[name] = self._rebuild[name]()
        self._start_service(name)

    def disconnect(self, reason: str) -> None:
        """Emergency disconnection (spec 10.4 c): cancel every external service now; the scan,
        its drivers and the safety layer run on. Stays cut until reconnect()."""
        if self.links_cut:
            return
        self.links_cut = reason
        cut = sorted(n for n in self._external if n in self._service_tasks)
        for name in cut:
            self._service_tasks[name].cancel()
        self.events.raise_event(self.clock.wall(), "node", Severity.CRITICAL,
                                f"emergency disconnect: {reason}; external links cut "
                                f"({', '.join(cut) or 'none running'}); local control and "
                                "safety carry on; reconnection needs an explicit local command",
                                "emergency_disconnect")

    def reconnect(self) -> None:
        """Restore the links cut by disconnect(), each from a fresh service."""
        if not self.links_cut:
            return
        self.links_cut = ""
        restored, stuck = [], []
        for name in sorted(self._external):
            old = self._service_tasks.get(name)
            if old is None:
                continue  # never started: the node is not running
            if name not in self._rebuild:
                stuck.append(name)
                continue
            # The cut service may still be closing (publishing its death): the fresh one
            # starts once it has.
            self._service_tasks[name] = asyncio.create_task(self._restart(name, old),
                                                            name=f"restart-{name}")
            restored.append(name)
        self.events.raise_event(
            self.clock.wall(), "node", Severity.ALARM if stuck else Severity.INFO,
            f"external links reconnected ({', '.join(restored) or 'none'})"
            + (f"; cannot restart {', '.join(stuck)}" if stuck else ""), "links_reconnected")

    def _service_ended(self, task: asyncio.Task[Any]) -> None:
        # A service that dies while the node runs (a bug in the link, say) is an alarm now,
        # not a surprise at shutdown; the scan and its safety layer carry on without it.
        if task.cancelled() or (exc := task.exception()) is None:
            return
        log.error("service %s stopped: %r", task.get_name(), exc, exc_info=exc)
        self.events.raise_event(self.clock.wall(), f"service.{task.get_name()}", Severity.ALARM,
                                f"stopped with {exc!r}; the node runs on without it",
                                "service_failed")

    def _on_watchdog(self, reason: str, from_thread: bool) -> None:
        self.events.raise_event(self.clock.wall(), "watchdog", Severity.CRITICAL,
                                f"scan watchdog tripped: {reason}; outputs to the safe image",
                                "watchdog")
        if from_thread:
            # The loop is frozen: the drivers cannot act, so write over fresh connections the
            # safe image the last scan published (engaged isolations included).
            for err in write_failsafe_blocking(self.config.devices, 0.5,
                                               self.image.safe_values(),
                                               self._failsafe_writers):
                log.error("watchdog failsafe write: %s", err)
        else:
            self.image.stage_failsafe()  # the safe image, not the bare io_map failsafe
            for device, values in self.image.flush_plan():
                self.drivers[device].stage(values, self.clock.monotonic())

    def reset_watchdog(self, role: str = "infrastructure_manager") -> bool:
        """Local reset of a latched watchdog trip: the same role-checked, audited, journaled
        path as ResetTrip(interlock="watchdog"). True when accepted."""
        outcomes = self.safety.reset(role, "watchdog", source="local")
        return all(o.accepted for o in outcomes)

    async def run(self, duration_s: float | None = None) -> None:
        """Run drivers and scan until cancelled or for `duration_s`; outputs to failsafe at exit."""
        log.info("node %s (%s) starting: %d devices, scan %.0f ms", self.config.name,
                 self.config.role, len(self.drivers), self.config.scan_period_s * 1000)
        saved_scheduling = current_scheduling()
        if self.config.realtime_priority:
            why = apply_realtime_priority(self.config.realtime_priority)
            self.events.raise_event(
                self.clock.wall(), "node", Severity.WARNING if why else Severity.INFO,
                f"real-time priority {self.config.realtime_priority} not applied: {why}" if why
                else f"running at SCHED_FIFO priority {self.config.realtime_priority}",
                "realtime")
        period, start = self.config.scan_period_s, self.clock.monotonic()
        scan = asyncio.create_task(self.engine.run(), name="scan")
        await asyncio.sleep(0)  # the scan fixes its first deadline (start + period) now
        first = start + period * (1.0 - POLL_LEAD)
        tasks = [asyncio.create_task(self._run_driver(d, first if d.config.poll_s <= period
                                                      else first + period * SLOW_POLL_DELAY),
                                     name=f"driver-{n}")
                 for n, d in self.drivers.items()]
        tasks.append(asyncio.create_task(
            monitor(self.watchdog, self.clock, self.config.watchdog_s / 4), name="watchdog"))
        for name in self.services:
            if not (self.links_cut and name in self._external):
                self._start_service(name)
        thread = WatchdogThread(self.watchdog, self.config.watchdog_s / 4)
        if self._use_thread:
            thread.start()
        try:
            if duration_s is None:
                await scan
            else:
                done, _ = await asyncio.wait({scan}, timeout=duration_s)
                if scan in done:
                    scan.result()
        finally:
            scan.cancel()
            thread.stop()
            await self.shutdown(tasks)
            # Services last: the MQTT link then still reports the failsafe outputs, stores
            # what is unsent and publishes the death.
            services = list(self._service_tasks.values())
            for t in services:
                t.cancel()
            await asyncio.gather(*services, return_exceptions=True)
            # The thread goes back to how it ran before: a node run inside a longer-lived
            # process (a test session, a tool) must not leave it real-time behind.
            restore_scheduling(saved_scheduling)

    async def _run_driver(self, driver: FieldDevice, first_poll: float) -> None:
        # Phase only matters in real time; a virtual clock must not be moved by a driver.
        if isinstance(self.clock, WallClock):
            await asyncio.sleep(max(0.0, first_poll - self.clock.monotonic()))
        await driver.run()

    async def shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Stop the drivers, then leave the plant in its failsafe state."""
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for ep in self._endpoints:
            ep.close()
        if self._endpoints or self._failsafe_writers:
            errors = await asyncio.to_thread(write_failsafe_blocking, self.config.devices, 0.5,
                                             self.image.safe_values(), self._failsafe_writers)
            for err in errors:
                log.warning("failsafe at shutdown: %s", err)
        log.info("node %s stopped", self.config.name)

    def get_status(self) -> dict[str, Any]:
        """Everything a status reader needs: node, scan, image, drivers, events, commands."""
        return {
            "node": {"name": self.config.name, "role": self.config.role,
                     "site": self.config.site, "version": __version__},
            "scan": self.engine.get_status(),
            "safety": self.safety.get_status(),
            "control": {b.name: status() for b in self.role_blocks
                        if callable(status := getattr(b, "get_status", None))},
            "devices": {n: d.get_status() for n, d in self.drivers.items()},
            "events": self.events.get_status(),
            "commands": self.commands.get_status(),
            "links_cut": self.links_cut,
            **{name: service.get_status() for name, service in self.services.items()},
        }
