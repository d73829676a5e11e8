"""A running node: drivers, process image, scan engine, safety layer, watchdog, from a NodeConfig.

Scan order: commands (operator values) -> heartbeat -> estimation (redundancy voting) ->
the role's control blocks -> role interlocks -> the safety layer, always last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from edge_runtime import __version__
from edge_runtime.config.schema import NodeConfig
from edge_runtime.control.heartbeat import Heartbeat
from edge_runtime.core.clock import Clock, WallClock
from edge_runtime.core.commands import CommandQueue, ManualOutputs
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Sample
from edge_runtime.core.realtime import apply_realtime_priority
from edge_runtime.core.scan import ControlBlock, ScanEngine
from edge_runtime.io.failsafe import write_failsafe_blocking
from edge_runtime.io.modbus import ModbusDevice, ModbusEndpoint
from edge_runtime.io.ports import FieldDevice, InputTable
from edge_runtime.roles import ROLE_BLOCKS, ROLE_INTERLOCKS, RoleContext, RoleControls
from edge_runtime.safety.config import build_safety_layer
from edge_runtime.safety.interlocks import SafetyLayer
from edge_runtime.safety.redundancy import RedundancyBlock
from edge_runtime.safety.watchdog import Watchdog, WatchdogThread, monitor

log = logging.getLogger(__name__)

# Drivers start their poll cycles half a scan period ahead of the scan's own cycle, so each
# scan latches samples read at most half a period before it, and a sensor change reaches the
# outputs within ~1.5 scans (at most one period waiting for the poll, half for the scan)
# even when a loaded machine delays a poll's answer by a few ms. Devices polled slower than
# the scan start a little later, so the fast polls get the shared connection first.
POLL_LEAD = 0.5
SLOW_POLL_DELAY = 0.05

# Builds a node's drivers around its input table; tests pass one that builds fakes.
DriverFactory = Callable[[NodeConfig, InputTable, Clock], dict[str, FieldDevice]]


def build_modbus_drivers(
    config: NodeConfig, live: InputTable, clock: Clock
) -> tuple[dict[str, FieldDevice], list[ModbusEndpoint]]:
    """One endpoint per host:port (shared by its unit ids), one driver per device."""
    endpoints: dict[tuple[str, int], ModbusEndpoint] = {}
    drivers: dict[str, FieldDevice] = {}
    for dev in config.devices:
        key = (dev.host, dev.port)
        if key not in endpoints:
            endpoints[key] = ModbusEndpoint(dev.host, dev.port, timeout_s=dev.timeout_s)
        drivers[dev.name] = ModbusDevice(dev, endpoints[key], live, clock)
    return drivers, list(endpoints.values())


class Node:
    """One controller: role blocks over a process image over field drivers."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        clock: Clock | None = None,
        driver_factory: DriverFactory | None = None,
        blocks: Sequence[ControlBlock] | None = None,
        interlocks: Sequence[ControlBlock] | None = None,
        watchdog_thread: bool = True,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or WallClock()
        self.live: dict[str, Sample] = {}
        self.events = EventLog()
        self.commands = CommandQueue()
        self._endpoints: list[ModbusEndpoint] = []
        if driver_factory is None:
            self.drivers, self._endpoints = build_modbus_drivers(config, self.live, self.clock)
        else:
            self.drivers = driver_factory(config, self.live, self.clock)
        self.image = ProcessImage(config.devices, self.live)
        self.watchdog = Watchdog(config.watchdog_s, self._on_watchdog)
        self._use_thread = watchdog_thread
        self.safety: SafetyLayer = build_safety_layer(config.safety, self.events,
                                                      wall=self.clock.wall)
        self.manual = ManualOutputs(self.commands, self.events, self.clock.wall,
                                    safety=self.safety)
        heartbeats = [n for n, i in self.image.outputs_info.items() if i.spec.name == "ctrl_hb"]
        # Estimation before control, so control blocks read the voted inputs by name.
        groups = list(self.safety.groups.values())
        estimation: list[ControlBlock] = [RedundancyBlock(groups)] if groups else []
        ctx = RoleContext(events=self.events, wall=self.clock.wall,
                          wall_offset=self.clock.wall() - self.clock.monotonic(),
                          held=self.manual.manual)
        role_blocks = ROLE_BLOCKS[config.role](config, ctx) if blocks is None else list(blocks)
        role_interlocks = (ROLE_INTERLOCKS[config.role](config, ctx) if interlocks is None
                           else list(interlocks))
        self.role_blocks = role_blocks
        # Status of things attached to the node from outside (the MQTT link), by section name.
        self.status_sources: dict[str, Callable[[], dict[str, Any]]] = {}
        self.manual.controls = RoleControls(role_blocks)
        self.engine = ScanEngine(
            clock=self.clock,
            period_s=config.scan_period_s,
            image=self.image,
            drivers=self.drivers,
            blocks=[self.manual, Heartbeat(heartbeats), *estimation, *role_blocks],
            interlocks=[*role_interlocks, self.safety],  # the safety layer has the last word
            events=self.events,
            watchdog=self.watchdog,
        )

    def _on_watchdog(self, reason: str, from_thread: bool) -> None:
        self.events.raise_event(self.clock.wall(), "watchdog", Severity.CRITICAL,
                                f"scan watchdog tripped: {reason}; outputs to failsafe",
                                "watchdog")
        if from_thread:
            # The loop is frozen: the drivers cannot act, so write over fresh connections.
            for err in write_failsafe_blocking(self.config.devices, timeout_s=0.5):
                log.error("watchdog failsafe write: %s", err)
        else:
            self.image.stage_failsafe()
            for device, values in self.image.flush_plan():
                self.drivers[device].stage(values, self.clock.monotonic())

    def reset_watchdog(self) -> None:
        """Operator reset of a latched watchdog trip."""
        self.watchdog.reset(self.clock.monotonic())
        self.events.raise_event(self.clock.wall(), "watchdog", Severity.INFO,
                                "watchdog reset by operator", "watchdog_reset")

    async def run(self, duration_s: float | None = None) -> None:
        """Run drivers and scan until cancelled or for `duration_s`; outputs to failsafe at exit."""
        log.info("node %s (%s) starting: %d devices, scan %.0f ms", self.config.name,
                 self.config.role, len(self.drivers), self.config.scan_period_s * 1000)
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
        if self._endpoints:
            errors = await asyncio.to_thread(write_failsafe_blocking, self.config.devices, 0.5)
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
            **{name: source() for name, source in self.status_sources.items()},
        }
