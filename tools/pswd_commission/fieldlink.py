"""Direct Modbus TCP access for the tool: the runtime's ModbusEndpoint behind a rate limit,
with the statistics the report shows (requests, answers, exceptions, timeouts, latency)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from edge_runtime.config.codec import CodecError, decode, encode
from edge_runtime.config.schema import PointSpec, Table
from edge_runtime.io.modbus import FieldError, ModbusEndpoint

__all__ = ["FieldError", "FieldLink", "LinkStats", "PointRead"]

T = TypeVar("T")


@dataclass(slots=True)
class LinkStats:
    """Request counters of one run of the tool."""

    requests: int = 0
    answered: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # kind -> count
    latencies_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """Counts and latency percentiles."""
        lat = sorted(self.latencies_ms)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else None

        return {"requests": self.requests, "answered": self.answered,
                "errors": dict(self.errors), "latency_p50_ms": pct(0.5),
                "latency_p99_ms": pct(0.99), "latency_max_ms": round(lat[-1], 3) if lat else None}


@dataclass(frozen=True, slots=True)
class PointRead:
    """One point as read: value (None when the read failed), raw words, error text."""

    value: float | None
    words: tuple[int, ...] = ()
    error: str = ""
    kind: str = ""  # FieldError kind: timeout, exception, disconnected, protocol, codec


class FieldLink:
    """Connections to every host:port the tool talks to; at most `rate` requests a second."""

    def __init__(self, *, timeout_s: float = 0.5, rate: float = 200.0) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError("rate must be > 0 requests per second")
        self.timeout_s = timeout_s
        self.interval = 1.0 / rate
        self._next = 0.0
        self._endpoints: dict[tuple[str, int], ModbusEndpoint] = {}
        self.stats = LinkStats()

    async def _pace(self) -> None:
        now = time.monotonic()
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next = max(now, self._next) + self.interval

    def endpoint(self, host: str, port: int) -> ModbusEndpoint:
        """The shared endpoint for host:port (not connected yet)."""
        key = (host, port)
        if key not in self._endpoints:
            # No backoff between the tool's own attempts: each connect is a deliberate probe.
            self._endpoints[key] = ModbusEndpoint(host, port, timeout_s=self.timeout_s,
                                                  backoff_min_s=0.0, backoff_max_s=0.0)
        return self._endpoints[key]

    async def connect(self, host: str, port: int) -> str:
        """'' when connected, else why not (one line)."""
        ep = self.endpoint(host, port)
        await self._pace()
        if await ep.ensure_connected():
            return ""
        return f"cannot connect to {host}:{port}: {ep.last_error or 'refused'}"

    async def read(self, host: str, port: int, unit_id: int, table: Table, start: int,
                   count: int) -> list[int]:
        """Registers, or FieldError (kind timeout / exception / disconnected / protocol)."""
        ep = self.endpoint(host, port)
        if not ep.connected:
            why = await self.connect(host, port)
            if why:
                raise FieldError("disconnected", why)
        await self._pace()
        return list(await self._timed(ep.read(table, start, count, unit_id=unit_id,
                                              timeout_s=self.timeout_s)))

    async def write(self, host: str, port: int, unit_id: int, start: int,
                    words: Sequence[int]) -> None:
        """Write holding registers (FC16); FieldError on failure."""
        ep = self.endpoint(host, port)
        if not ep.connected:
            why = await self.connect(host, port)
            if why:
                raise FieldError("disconnected", why)
        await self._pace()
        await self._timed(ep.write(start, words, unit_id=unit_id, timeout_s=self.timeout_s))

    async def _timed(self, call: Awaitable[T]) -> T:
        self.stats.requests += 1
        t0 = time.perf_counter()
        try:
            result = await call
        except FieldError as exc:
            self.stats.errors[exc.kind] += 1
            if exc.kind == "exception":  # an exception response is still an answer
                self.stats.answered += 1
            raise
        self.stats.answered += 1
        self.stats.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
        return result

    async def read_point(self, host: str, port: int, unit_id: int, spec: PointSpec) -> PointRead:
        """One point, decoded; never raises for field problems (they land in `error`)."""
        try:
            words = await self.read(host, port, unit_id, spec.table, spec.address, spec.count)
        except FieldError as exc:
            return PointRead(None, (), exc.reason, exc.kind)
        try:
            return PointRead(float(decode(words, spec.encoding)), tuple(words))
        except CodecError as exc:
            return PointRead(None, tuple(words), str(exc), "codec")

    async def write_point(self, host: str, port: int, unit_id: int, spec: PointSpec,
                          value: float) -> None:
        """Encode and write one output; FieldError, or CodecError for a value it cannot hold."""
        await self.write(host, port, unit_id, spec.address, encode(value, spec.encoding))

    def close(self) -> None:
        """Close every connection."""
        for ep in self._endpoints.values():
            ep.close()
