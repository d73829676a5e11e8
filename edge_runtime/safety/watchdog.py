"""Scan watchdog: if the scan stops kicking it, every output goes to its failsafe.

Two checkers share one Watchdog: a task in the event loop (catches a scan task that hangs or
dies while the loop lives) and a thread (catches the loop itself frozen, e.g. a blocking call
in a control block). The thread writes failsafe values over its own Modbus connections because
the drivers live in the frozen loop. A trip latches until reset: a controller that just lost
its scan is not trusted to resume on its own. The outputs go to the safety layer's safe image
(failsafe overlaid by engaged trips), never the bare io_map failsafe; the latch is journaled and
reset through SafetyLayer.reset("watchdog") like any latched trip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edge_runtime.core.clock import Clock

log = logging.getLogger(__name__)


class Watchdog:
    """Sans-IO watchdog: kick(now) every scan; check(now) trips once after `timeout_s` silence."""

    def __init__(self, timeout_s: float, on_expire: Callable[[str, bool], None]) -> None:
        self.timeout_s = timeout_s
        self._on_expire = on_expire  # (reason, from_thread)
        self._last_kick: float | None = None
        self._lock = threading.Lock()
        self.tripped = False
        self.trips = 0
        self.last_reason = ""
        # Called with the new latched state after every trip and reset (the latch journal).
        self.listeners: list[Callable[[bool], None]] = []

    def kick(self, now: float) -> None:
        """The scan completed at `now`."""
        self._last_kick = now

    def check(self, now: float, *, from_thread: bool = False) -> bool:
        """Trip (once) if the last kick is older than the timeout; returns the tripped state."""
        with self._lock:
            last = self._last_kick
            if self.tripped or last is None or now - last <= self.timeout_s:
                return self.tripped
            self.tripped = True
            self.trips += 1
            self.last_reason = (f"scan silent for {(now - last) * 1000:.0f} ms "
                                f"(timeout {self.timeout_s * 1000:.0f} ms)")
        self._on_expire(self.last_reason, from_thread)  # outputs safe first, then the journal
        self._notify()
        return True

    def restore(self, reason: str) -> None:
        """Start latched (the latch journal says it was, or cannot say it was not)."""
        with self._lock:
            self.tripped = True
            self.last_reason = reason
        self._notify()

    def reset(self, now: float) -> None:
        """Clear a latched trip (routed through SafetyLayer.reset: role-checked, audited)."""
        with self._lock:
            self.tripped = False
            self._last_kick = now
        self._notify()

    def _notify(self) -> None:
        for listener in self.listeners:
            try:
                listener(self.tripped)
            except Exception:  # a journal failure must not stop the trip itself
                log.exception("watchdog listener failed")

    def get_status(self) -> dict[str, Any]:
        """Tripped state and counters."""
        return {"timeout_ms": self.timeout_s * 1000, "tripped": self.tripped,
                "trips": self.trips, "last_reason": self.last_reason}


async def monitor(watchdog: Watchdog, clock: Clock, poll_s: float) -> None:
    """In-loop checker; runs until cancelled."""
    while True:
        await clock.sleep_until(clock.monotonic() + poll_s)
        watchdog.check(clock.monotonic())


class WatchdogThread:
    """Out-of-loop checker on the real monotonic clock (production only)."""

    def __init__(self, watchdog: Watchdog, poll_s: float) -> None:
        self._watchdog = watchdog
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scan-watchdog", daemon=True)

    def start(self) -> None:
        """Start checking."""
        self._thread.start()

    def stop(self) -> None:
        """Stop checking and join."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                self._watchdog.check(time.monotonic(), from_thread=True)
            except Exception:  # the watchdog must outlive any bug in its action
                log.exception("watchdog action failed")
