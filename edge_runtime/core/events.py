"""Alarm and event records: bounded in memory, mirrored to the log."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)


class Severity(StrEnum):
    """How urgent an event is."""

    INFO = "info"
    WARNING = "warning"
    ALARM = "alarm"
    CRITICAL = "critical"


_LEVELS = {
    Severity.INFO: logging.INFO,
    Severity.WARNING: logging.WARNING,
    Severity.ALARM: logging.ERROR,
    Severity.CRITICAL: logging.CRITICAL,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One alarm or event: when (UTC s), where from, how bad, what."""

    ts: float
    source: str
    severity: Severity
    message: str
    code: str = ""


class EventLog:
    """The node's recent events; subscribers (MQTT, OPC UA) read from `since`."""

    def __init__(self, capacity: int = 1000) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self.total = 0

    def raise_event(
        self, ts: float, source: str, severity: Severity, message: str, code: str = ""
    ) -> Event:
        """Record and log an event."""
        ev = Event(ts, source, severity, message, code)
        self._events.append(ev)
        self.total += 1
        log.log(_LEVELS[severity], "%s: %s", source, message)
        return ev

    def recent(self, n: int = 20) -> list[Event]:
        """The last n events, oldest first."""
        return list(self._events)[-n:]

    def since(self, total_seen: int) -> list[Event]:
        """Events recorded after a reader had seen `total_seen` of them."""
        new = self.total - total_seen
        if new <= 0:
            return []
        return list(self._events)[-min(new, len(self._events)):]

    def get_status(self) -> dict[str, Any]:
        """Counts and the last few events."""
        return {"total": self.total, "recent": [asdict(e) for e in self.recent(10)]}
