"""The scan engine: fixed period on absolute deadlines, PLC phases, statistics, overruns.

Each scan: latch inputs -> control blocks in order -> interlocks (last word) -> flush outputs
to the drivers -> statistics and watchdog kick. Blocks and interlocks are plain objects with
no I/O, so the same engine runs on the wall clock in the field and in simulated time in tests.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from edge_runtime.core.clock import Clock
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.ports import FieldDevice
from edge_runtime.core.stats import ScanStats

log = logging.getLogger(__name__)


class ControlBlock(Protocol):
    """One step of control logic; runs every scan, reads and writes the image, never awaits."""

    name: str

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Advance by dt seconds at monotonic time now."""
        ...


class ScanWatchdog(Protocol):
    """What the scan needs of its watchdog (edge_runtime/safety/watchdog.py)."""

    @property
    def tripped(self) -> bool:
        """True while a trip is latched."""
        ...

    def kick(self, now: float) -> None:
        """The scan completed at `now`."""
        ...

    def get_status(self) -> dict[str, Any]:
        """State and counters."""
        ...


class ScanEngine:
    """Runs the scan of one node."""

    def __init__(
        self,
        *,
        clock: Clock,
        period_s: float,
        image: ProcessImage,
        drivers: Mapping[str, FieldDevice],
        blocks: Sequence[ControlBlock] = (),
        interlocks: Sequence[ControlBlock] = (),
        events: EventLog | None = None,
        watchdog: ScanWatchdog | None = None,
    ) -> None:
        self.clock = clock
        self.period_s = period_s
        self.image = image
        self.drivers = drivers
        self.blocks = list(blocks)
        self.interlocks = list(interlocks)
        # Read-only watchers of the finished scan (the telemetry recorder): after the outputs,
        # so they see exactly what went to the drivers and can never change it.
        self.observers: list[ControlBlock] = []
        self.events = events or EventLog()
        self.watchdog = watchdog
        self.stats = ScanStats()
        self.running = False
        self._last_start: float | None = None
        self._faulted: set[str] = set()
        self._overrun_events_at = -math.inf

    def scan_once(self, now: float) -> None:
        """One complete scan at monotonic time `now` (also used directly by stepped tests)."""
        dt = self.period_s if self._last_start is None else now - self._last_start
        self._last_start = now
        image = self.image
        image.latch()
        for block in self.blocks:
            self._run_block(block, now, dt)
        for interlock in self.interlocks:
            self._run_block(interlock, now, dt)
        if self.watchdog is not None and self.watchdog.tripped:
            image.stage_failsafe()  # latched until an operator resets the watchdog
        for device, values in image.flush_plan():
            try:
                self.drivers[device].stage(values, now)
            except Exception as exc:  # a driver bug must not stop the other devices' outputs
                self._report_fault(f"driver.{device}", exc)
        for observer in self.observers:
            self._run_block(observer, now, dt)

    def _report_fault(self, source: str, exc: Exception) -> None:
        self.stats.block_faults += 1
        if source not in self._faulted:
            self._faulted.add(source)
            log.error("%s failed: %r", source, exc, exc_info=exc)
            self.events.raise_event(self.clock.wall(), source, Severity.ALARM,
                                    f"failed during the scan: {exc!r}", "scan_fault")

    def _run_block(self, block: ControlBlock, now: float, dt: float) -> None:
        # A faulty block must not take the scan (and the interlocks after it) down with it.
        try:
            block.step(self.image, now, dt)
        except Exception as exc:
            self._report_fault(f"block.{block.name}", exc)
        else:
            self._faulted.discard(f"block.{block.name}")

    async def run(self, *, cycles: int | None = None) -> None:
        """Scan on absolute deadlines until cancelled (or for `cycles` scans)."""
        clock, period = self.clock, self.period_s
        # Everything built so far (drivers, maps, libraries) lives as long as the node: freeze it
        # so the collector's full passes, which stall the whole process, never walk it again.
        # (Before the freeze, bench/scan_jitter saw full collections of up to 27 ms here.)
        gc.collect()
        gc.freeze()
        deadline = clock.monotonic() + period
        done = 0
        self.running = True
        try:
            while cycles is None or done < cycles:
                await clock.sleep_until(deadline)
                start = clock.monotonic()
                self.scan_once(start)
                end = clock.monotonic()
                self.stats.record(start - deadline, end - start)
                if self.watchdog is not None:
                    self.watchdog.kick(end)
                done += 1
                deadline += period
                if end > deadline:
                    self._overrun(end, deadline)
                    skipped = math.floor((end - deadline) / period) + 1
                    deadline += skipped * period
        finally:
            self.running = False

    def _overrun(self, end: float, deadline: float) -> None:
        skipped = math.floor((end - deadline) / self.period_s) + 1
        self.stats.record_overrun(skipped)
        # One event per second at most: an overloaded scan must not also flood the log.
        if end - self._overrun_events_at >= 1.0:
            self._overrun_events_at = end
            self.events.raise_event(
                self.clock.wall(), "scan", Severity.WARNING,
                f"scan overrun: ran {(end - deadline + self.period_s) * 1000:.1f} ms past its "
                f"start deadline, {skipped} deadline(s) skipped "
                f"({self.stats.overruns} overruns so far)", "overrun")

    def get_status(self) -> dict[str, Any]:
        """Period, running state and statistics."""
        status = {"period_ms": self.period_s * 1000, "running": self.running,
                  **self.stats.snapshot()}
        if self.watchdog is not None:
            status["watchdog"] = self.watchdog.get_status()
        return status
