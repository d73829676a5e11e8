"""Injected clocks: wall clock for production, virtual clock for tests and benchmarks.

Nothing in control code reads time.time(); it is handed `now` from one of these.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Time source of a node."""

    def monotonic(self) -> float:
        """Seconds on a monotonic timeline (deadlines, durations)."""
        ...

    def wall(self) -> float:
        """UTC seconds since the epoch (timestamps for people and other systems)."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return at (not before) monotonic time `deadline`."""
        ...


class WallClock:
    """Real time, with a precise wake-up for the scan.

    The event loop rounds its timers up to whole milliseconds (about 1 ms late on this
    kernel, see STACK-NOTES), so the scan sleeps until `spin_s` before the deadline and then
    yields to the loop until the deadline: other tasks still run, and the scan starts within
    microseconds of its deadline, at the cost of a short busy wait each period.
    """

    def __init__(self, spin_s: float = 0.002) -> None:
        self.spin_s = spin_s

    def monotonic(self) -> float:
        """time.monotonic()."""
        return time.monotonic()

    def wall(self) -> float:
        """time.time()."""
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        """Coarse sleep, then yield until the deadline."""
        coarse = deadline - time.monotonic() - self.spin_s
        if coarse > 0:
            await asyncio.sleep(coarse)
        while time.monotonic() < deadline:
            await asyncio.sleep(0)


class VirtualClock:
    """Simulated time: sleeping jumps the clock forward, so scenarios run as fast as the CPU."""

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset

    def monotonic(self) -> float:
        """Current simulated time."""
        return self._now

    def wall(self) -> float:
        """Simulated UTC time, a fixed offset from monotonic."""
        return self._now + self._wall_offset

    def advance(self, dt: float) -> None:
        """Move time forward (e.g. a control block that 'takes' dt to run)."""
        if dt < 0:
            raise ValueError("time does not run backwards")
        self._now += dt

    async def sleep_until(self, deadline: float) -> None:
        """Jump to the deadline and let other tasks run once."""
        if deadline > self._now:
            self._now = deadline
        await asyncio.sleep(0)
