"""Commands from outside the scan: queued, checked and applied at the start of the next scan.

Every command, accepted or refused, leaves an audit record saying who asked for what and why
it was refused, so an operator can always reconstruct what was done to the plant.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import OutOfRange, ProcessImage, UnknownPoint

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SetOutput:
    """Operator value for an output; held until released (manual mode for that output)."""

    point: str
    value: float
    source: str = "local"


@dataclass(frozen=True, slots=True)
class ReleaseOutput:
    """Give an output back to automatic control."""

    point: str
    source: str = "local"


Command = SetOutput | ReleaseOutput


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What was asked, by whom, and what became of it."""

    ts: float
    source: str
    command: str
    accepted: bool
    reason: str = ""


class CommandQueue:
    """Commands waiting for the next scan (deque append/popleft are thread-safe)."""

    def __init__(self, audit_capacity: int = 1000) -> None:
        self._pending: deque[Command] = deque()
        self.audit: deque[AuditRecord] = deque(maxlen=audit_capacity)

    def submit(self, cmd: Command) -> None:
        """Queue a command; it is checked and applied at the start of the next scan."""
        self._pending.append(cmd)

    def drain(self) -> list[Command]:
        """Take every pending command, oldest first."""
        out: list[Command] = []
        while self._pending:
            out.append(self._pending.popleft())
        return out

    def record(self, ts: float, cmd: Command, accepted: bool, reason: str = "") -> AuditRecord:
        """Append an audit record."""
        rec = AuditRecord(ts, cmd.source, repr(cmd), accepted, reason)
        self.audit.append(rec)
        return rec

    def get_status(self) -> dict[str, Any]:
        """Pending count and the last audit records."""
        return {"pending": len(self._pending), "audit": [asdict(r) for r in list(self.audit)[-10:]]}


class ManualOutputs:
    """First block of every scan: applies queued commands and holds operator output values."""

    name = "commands"

    def __init__(self, queue: CommandQueue, events: EventLog, wall: Any) -> None:
        self.queue = queue
        self.events = events
        self._wall = wall  # callable giving UTC seconds for audit records
        self.manual: dict[str, float] = {}

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Apply pending commands, then write every held operator value."""
        for cmd in self.queue.drain():
            self._apply(cmd, image)
        for point, value in self.manual.items():
            image.write(point, value)

    def _apply(self, cmd: Command, image: ProcessImage) -> None:
        ts = self._wall()
        try:
            if isinstance(cmd, SetOutput):
                image.check_output(cmd.point, cmd.value)
                self.manual[cmd.point] = float(cmd.value)
            elif cmd.point in self.manual:
                del self.manual[cmd.point]
            elif cmd.point not in image.outputs_info:
                raise UnknownPoint(cmd.point)
        except (UnknownPoint, OutOfRange, TypeError) as exc:
            self.queue.record(ts, cmd, False, str(exc))
            self.events.raise_event(ts, f"command.{cmd.source}", Severity.WARNING,
                                    f"refused {cmd!r}: {exc}", "command_refused")
            return
        self.queue.record(ts, cmd, True)
        log.info("applied %r", cmd)
