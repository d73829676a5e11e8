"""The process image on the OPC UA variables, every scan, without the scan waiting.

`ScanTap` is a read-only scan observer (core/scan.py): after the outputs are flushed it keeps
references to the scan's latched inputs (an immutable mapping the image replaces at each
latch) and copies the staged outputs and their qualities (a few dozen floats): a few
microseconds; the server runs in its own thread and event loop (server.py).
`Binding`, in that loop, takes the newest snapshot every scan period (polling: the scan
never wakes the server's thread) and writes what changed into the address space (value,
StatusCode from the point's quality, the sample's source timestamp), yielding to its loop
every few writes so client requests are served meanwhile. The tap keeps the last RECENT
scans, so each poll writes every scan since the last one, in order (a change that lasted one
scan still reaches subscribers and history) when the scan is no faster than the poll
(20 ms); a faster scan shows its newest scan per poll. `skipped_scans` counts scans not
written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asyncua import ua

from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality, Sample
from edge_runtime.servers.opcua.model import Derived
from edge_runtime.servers.opcua.uatypes import Server, StatusCodes, status
from edge_runtime.servers.opcua_model import bound_value

RECENT = 16  # scans the tap keeps for the next poll
YIELD_EVERY = 32  # address-space writes between two yields to the server's loop


def status_of(quality: Quality, reason: str = "", value: float | None = 0.0) -> int:
    """The OPC UA StatusCode of a point quality (and its reason, for the sub-status)."""
    why = reason.lower()
    if quality is Quality.GOOD:
        return StatusCodes.Good if value is not None else StatusCodes.BadWaitingForInitialData
    if quality is Quality.FORCED:
        return StatusCodes.GoodLocalOverride  # a technician's value, not the process's
    if quality is Quality.SUBSTITUTED:
        return StatusCodes.UncertainSubstituteValue
    if quality is Quality.UNCERTAIN:
        if "stale" in why or "old" in why:
            return StatusCodes.UncertainLastUsableValue
        if "range" in why:
            return StatusCodes.UncertainEngineeringUnitsExceeded
        return StatusCodes.Uncertain
    if "not read" in why or "never read" in why:
        return StatusCodes.BadWaitingForInitialData
    if any(w in why for w in ("sensor", "fault", "broken", "wire", "range")):
        return StatusCodes.BadSensorFailure
    return StatusCodes.BadNoCommunication  # timeouts, refused connections, device exceptions


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One finished scan as the server sees it."""

    seq: int
    inputs: Mapping[str, Sample]
    outputs: dict[str, float]
    output_quality: dict[str, Quality]
    wall: float


class ScanTap:
    """Scan observer: snapshot the finished scan; wake a command waiting for it."""

    name = "opcua"

    def __init__(self, wall: Callable[[], float]) -> None:
        self._wall = wall
        self.latest: Snapshot | None = None
        # The last scans, so a poll writes each one it has not seen (every scan's values
        # reach the variables while the server keeps up within RECENT scans).
        self.recent: deque[Snapshot] = deque(maxlen=RECENT)
        self.seq = 0
        self._waiters: list[asyncio.Future[int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the server's loop (own thread)
        self.step_ns_total = 0
        self.step_ns_max = 0

    def step(self, image: ProcessImage, now: float, dt_s: float) -> None:
        """Keep this scan's image; never writes it."""
        t0 = time.perf_counter_ns()
        self.seq += 1
        self.latest = Snapshot(self.seq, image.inputs, dict(image.outputs),
                               dict(image.output_quality), self._wall())
        self.recent.append(self.latest)  # deque append: safe beside the server's reader
        # Only a command waiting for its scan wakes the server's loop from here: waking it
        # every scan (a write to its self-pipe) hands the GIL to the server's thread in the
        # middle of the scan, which then waits out the interpreter's switch interval
        # (milliseconds). The binding polls the newest snapshot on its own clock instead.
        loop = self._loop
        if self._waiters and loop is not None:
            try:
                loop.call_soon_threadsafe(self._scanned, self.seq)
            except RuntimeError:  # the server's loop has closed: nobody to tell any more
                self._loop = None
        spent = time.perf_counter_ns() - t0
        self.step_ns_total += spent
        self.step_ns_max = max(self.step_ns_max, spent)

    def attach(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Wake `loop` (the server's) after every scan from now on; None: stop."""
        self._loop = loop

    def _scanned(self, seq: int) -> None:
        """In the server's loop: a scan has finished (a command is waiting for it)."""
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(seq)

    async def next_scan(self, timeout: float) -> int:
        """Wait until one more scan has finished (TimeoutError after `timeout`)."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return await asyncio.wait_for(fut, timeout)

    def get_status(self) -> dict[str, Any]:
        """Scans seen and what observing them cost the scan."""
        return {"scans": self.seq, "step_us_mean": self.step_ns_total / max(self.seq, 1) / 1e3,
                "step_us_max": self.step_ns_max / 1e3}


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


_VARIANT = {"Double": ua.VariantType.Double, "Boolean": ua.VariantType.Boolean,
            "String": ua.VariantType.String, "UInt16": ua.VariantType.UInt16,
            "UInt32": ua.VariantType.UInt32, "UInt64": ua.VariantType.UInt64}


class Binding:
    """Writes each new snapshot into the point variables (only what changed), and into the
    variables the devices' types declare that those points feed (a pump's Speed, Running)."""

    def __init__(self, server: Server, tap: ScanTap, points: Mapping[str, ua.NodeId],
                 image: ProcessImage, derived: Sequence[Derived] = (), *,
                 every_scan: bool = True) -> None:
        self.server = server
        # Every scan, or only the newest at each poll: writing each scan of a 10 ms scan
        # doubled the server's work and, through the interpreter's lock, cost that scan
        # overruns here; at such rates the variables show the newest scan per poll.
        self.every_scan = every_scan
        self.tap = tap
        self.points = dict(points)
        self.derived: dict[str, list[Derived]] = {}
        for d in derived:
            self.derived.setdefault(d.point, []).append(d)
        self._inputs = {p for p in points if p in image.inputs_info}
        self._last: dict[str, tuple[float | None, int, float]] = {}
        self.writes = 0
        self.snapshots = 0
        self.last_seq = 0
        self.skipped = 0  # scans the server fell too far behind to write


    async def follow(self) -> int:
        """Write every scan since the last call, oldest first; how many were written."""
        pending = [s for s in list(self.tap.recent) if s.seq > self.last_seq]
        if not self.every_scan:
            pending = pending[-1:]
        if pending and self.last_seq and pending[0].seq > self.last_seq + 1:
            self.skipped += pending[0].seq - self.last_seq - 1
        for snap in pending:
            await self.write(snap)
        return len(pending)

    async def write(self, snap: Snapshot) -> None:
        """Write one snapshot's changed points."""
        now = dt.datetime.now(dt.UTC)
        n = 0
        for point, nodeid in self.points.items():
            if point in self._inputs:
                s = snap.inputs.get(point)
                if s is None:
                    continue
                value, code, ts = s.value, status_of(s.quality, s.reason, s.value), s.ts
            else:
                value = snap.outputs.get(point)
                q = snap.output_quality.get(point, Quality.GOOD)
                code, ts = status_of(q, "", value), snap.wall
            key = (value, code, ts)
            last = self._last.get(point)
            if last is not None and last[0] == value and last[1] == code:
                continue  # unchanged: no new notification, no history row
            self._last[point] = key
            variant = (ua.Variant(None, ua.VariantType.Null) if value is None
                       else ua.Variant(float(value), ua.VariantType.Double))
            source: Any = _utc(ts) if ts > 0 else now
            server_ts: Any = now
            dv = ua.DataValue(Value=variant, StatusCode=status(code), SourceTimestamp=source,
                              ServerTimestamp=server_ts)
            await self.server.write_attribute_value(nodeid, dv)
            for d in self.derived.get(point, ()):
                await self.server.write_attribute_value(d.nodeid, self._derived(d, value, dv))
                n += 1
            self.writes += 1
            n += 1
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # serve clients between two batches
        self.snapshots += 1
        self.last_seq = snap.seq

    @staticmethod
    def _derived(d: Derived, value: float | None, dv: ua.DataValue) -> ua.DataValue:
        """The declared variable's DataValue for the point's (same status and timestamps)."""
        code = dv.StatusCode
        if value is None:
            variant = ua.Variant(None, ua.VariantType.Null)
        else:
            try:
                variant = ua.Variant(bound_value(d.binding, d.var, value),
                                     _VARIANT.get(d.var.data_type, ua.VariantType.Double))
            except ValueError:
                variant, code = ua.Variant(None, ua.VariantType.Null), status(
                    StatusCodes.BadOutOfRange)
        return ua.DataValue(Value=variant, StatusCode=code, SourceTimestamp=dv.SourceTimestamp,
                            ServerTimestamp=dv.ServerTimestamp)

    def get_status(self) -> dict[str, Any]:
        """Snapshots written, variable writes and the last scan written."""
        return {"snapshots": self.snapshots, "writes": self.writes, "last_scan": self.last_seq,
                "skipped_scans": self.skipped}
