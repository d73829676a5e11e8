"""Modbus TCP driver: one shared connection per host:port, one polling/writing driver per device.

ModbusEndpoint owns the connection (every unit id behind a gateway shares it), serialises
requests with a lock, reconnects with its own backoff, and turns every failure into a
FieldError. pymodbus's own retries and auto-reconnect are disabled and its response wait is a
distant backstop, so exactly one policy (ours) decides timeouts and reconnects.

ModbusDevice implements the FieldDevice port: it polls the planned read blocks on absolute
deadlines into the InputTable, and writes staged outputs from a separate task, woken by an
Event on change and by a timer for the periodic refresh and max_hold_s expiry; which writes
are due is decided by the sans-IO blocks.OutputSchedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from edge_runtime.config.codec import CodecError
from edge_runtime.config.schema import DeviceConfig, Table
from edge_runtime.core.clock import Clock
from edge_runtime.core.points import Quality, Sample
from edge_runtime.core.ports import InputTable
from edge_runtime.io.blocks import (
    OutputSchedule,
    ReadBlock,
    minimum_requests,
    plan_reads,
    plan_writes,
)
from edge_runtime.io.output_loop import OutputWriter, raise_if_cancel_was_swallowed

log = logging.getLogger(__name__)

EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "server device failure", 5: "acknowledge", 6: "server device busy",
    7: "negative acknowledge", 8: "memory parity error", 10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
_BACKSTOP_S = 60.0  # pymodbus's own wait: our asyncio.timeout always fires long before it
_TIMEOUTS_BEFORE_RECONNECT = 3  # a silent peer may be a half-open TCP connection: start over
DISCONNECTED = "disconnected"


class FieldError(Exception):
    """A failed request; `kind` (timeout, exception, disconnected, protocol) keys the counters."""

    def __init__(self, kind: str, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.kind, self.reason, self.code = kind, reason, code


def exception_reason(code: int) -> str:
    """Reason text for a Modbus exception code, e.g. 'modbus exception 2 (illegal data address)'."""
    return f"modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown code')})"


class ModbusEndpoint:
    """One TCP connection to host:port, shared by every device behind it; one request at a time."""

    def __init__(self, host: str, port: int, *, timeout_s: float = 1.0,
                 backoff_min_s: float = 0.1, backoff_max_s: float = 5.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()  # held for a connect or one request: never two in flight
        self._backoff = backoff_min_s
        self._next_attempt = 0.0
        self._timeouts_in_row = 0
        self.generation = 0  # +1 per successful connect, so drivers know to rewrite outputs
        self.ever_connected = False
        self.connects = self.connect_failures = self.requests = 0
        self.last_error = ""

    @property
    def name(self) -> str:
        """host:port."""
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """True while the TCP connection is up."""
        return self._client is not None and self._client.connected

    async def ensure_connected(self) -> bool:
        """True when connected; otherwise one connect attempt if the backoff allows it."""
        if self.connected:
            return True
        if time.monotonic() < self._next_attempt:
            return False
        async with self._lock:
            if self.connected:
                return True
            if time.monotonic() < self._next_attempt:
                return False
            return await self._connect()

    async def _connect(self) -> bool:
        self._drop()
        client = AsyncModbusTcpClient(self.host, port=self.port, name=self.name,
                                      timeout=_BACKSTOP_S, retries=0, reconnect_delay=0)
        try:
            async with asyncio.timeout(self.timeout_s):
                ok = await client.connect()
            error = "" if ok else "connection refused or unreachable"
        except TimeoutError:
            ok, error = False, f"connect timeout after {self.timeout_s * 1000:.0f} ms"
        except (OSError, ModbusException) as exc:
            ok, error = False, f"connect failed: {exc}"
        if not ok:
            client.close()
            self.connect_failures += 1
            if self.connect_failures == 1 or self._backoff >= self.backoff_max_s:
                log.warning("%s: %s; retrying in %.1f s", self.name, error, self._backoff)
            self.last_error = error
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.backoff_max_s)
            return False
        self._client = client
        self._backoff, self._next_attempt, self._timeouts_in_row = self.backoff_min_s, 0.0, 0
        self.generation += 1
        self.connects += 1
        self.ever_connected = True
        log.info("%s: connected", self.name)
        return True

    def _drop(self, reason: str = "") -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            if reason:
                self.last_error = reason
                log.warning("%s: connection dropped: %s", self.name, reason)

    async def _request(self, timeout_s: float,
                       call: Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]]) -> ModbusPDU:
        async with self._lock:
            client = self._client
            if client is None or not client.connected:
                self._drop()
                raise FieldError(DISCONNECTED, "disconnected")
            self.requests += 1
            try:
                async with asyncio.timeout(timeout_s):
                    rsp = await call(client)
            except (TimeoutError, ModbusException, OSError) as exc:
                raise self._failure(client, exc, timeout_s) from None
        self._timeouts_in_row = 0  # any answer, even an exception response, proves the link
        if rsp.isError():
            code = rsp.exception_code
            raise FieldError("exception", exception_reason(code), code)
        return rsp

    def _failure(self, client: AsyncModbusTcpClient, exc: Exception,
                 timeout_s: float) -> FieldError:
        # TimeoutError is an OSError: test for the lost connection first, then the timeout.
        lost = isinstance(exc, ConnectionException | OSError) and not isinstance(exc, TimeoutError)
        if lost or not client.connected:
            self._drop(f"connection lost: {exc!r}")
            return FieldError(DISCONNECTED, "disconnected")
        if isinstance(exc, TimeoutError):
            self._timeouts_in_row += 1
            if self._timeouts_in_row >= _TIMEOUTS_BEFORE_RECONNECT:
                self._drop(f"{self._timeouts_in_row} timeouts in a row")
            return FieldError("timeout", f"timeout after {timeout_s * 1000:.0f} ms")
        return FieldError("protocol", f"protocol error: {exc}")

    async def read(self, table: Table, start: int, count: int, *, unit_id: int,
                   timeout_s: float) -> Sequence[int]:
        """Read `count` registers (FC3 holding / FC4 input); raises FieldError."""
        if table is Table.HOLDING:
            rsp = await self._request(timeout_s, lambda c: c.read_holding_registers(
                start, count=count, device_id=unit_id))
        else:
            rsp = await self._request(timeout_s, lambda c: c.read_input_registers(
                start, count=count, device_id=unit_id))
        if len(rsp.registers) != count:
            raise FieldError("protocol", f"asked for {count} registers, got {len(rsp.registers)}")
        return rsp.registers

    async def write(self, start: int, words: Sequence[int], *, unit_id: int,
                    timeout_s: float) -> None:
        """Write holding registers with FC16; raises FieldError."""
        await self._request(timeout_s, lambda c: c.write_registers(
            start, list(words), device_id=unit_id))

    def close(self) -> None:
        """Close the connection (the next ensure_connected reconnects)."""
        self._drop()

    def get_status(self) -> dict[str, Any]:
        """Connection state and counters."""
        return {"endpoint": self.name, "connected": self.connected, "connects": self.connects,
                "connect_failures": self.connect_failures, "requests": self.requests,
                "last_error": self.last_error}


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a read task's exception as seen: a cancelled poll may never await it."""
    if not task.cancelled():
        task.exception()


class ModbusDevice(OutputWriter):
    """FieldDevice over Modbus TCP: polls inputs into the InputTable, writes staged outputs."""

    def __init__(self, config: DeviceConfig, endpoint: ModbusEndpoint, table: InputTable,
                 clock: Clock) -> None:
        self._config, self.endpoint, self.table, self.clock = config, endpoint, table, clock
        inputs = config.io_map.inputs
        self.blocks: list[ReadBlock] = plan_reads(inputs, max_gap=config.max_gap)
        self._minimum = minimum_requests(inputs)
        self._keys = {p.name: f"{config.name}.{p.name}" for p in inputs}
        self._block_reason = [""] * len(self.blocks)  # last error per block, to log transitions
        self.outputs = OutputSchedule(config.name, config.io_map.outputs, config.refresh_s)
        self._written_gen = -1  # endpoint generation the last writes went to
        self._write_reason = ""  # last write error, to log transitions
        self._wake = asyncio.Event()
        self.polls = self.writes = self.overruns = 0
        self.errors: Counter[str] = Counter()
        self.last_error = ""
        self.last_poll_ms = 0.0
        # The safety layer's safe image (ProcessImage.safe_values): what an output falls back
        # to when staging stops for max_hold_s. None: the io_map failsafe.
        self.safe_source: Callable[[], Mapping[str, float]] | None = None
        self._safe_seen: Mapping[str, float] | None = None

    @property
    def config(self) -> DeviceConfig:
        """The device's configuration."""
        return self._config

    @property
    def requests_per_poll(self) -> int:
        """Read requests one poll makes."""
        return len(self.blocks)

    @property
    def minimum_requests(self) -> int:
        """Fewest read requests that could cover the inputs (for comparison)."""
        return self._minimum

    async def run(self) -> None:
        """Poll on absolute deadlines and write outputs until cancelled; never raises."""
        writer = asyncio.create_task(self._write_loop(), name=f"{self._config.name}-writer")
        period = self._config.poll_s
        deadline = self.clock.monotonic()
        try:
            while True:
                raise_if_cancel_was_swallowed()
                try:
                    await self.poll_once()
                except Exception as exc:  # a driver bug must not end polling
                    self._error("internal", repr(exc))
                    log.exception("%s: poll failed", self._config.name)
                deadline += period
                now = self.clock.monotonic()
                if now >= deadline:  # overran: skip the missed deadlines, keep the phase
                    missed = math.floor((now - deadline) / period) + 1
                    self.overruns += missed
                    deadline += missed * period
                # asyncio.sleep rather than clock.sleep_until: a poll needs no sub-ms wake-up,
                # and sleep_until spins for its last 2 ms on every call.
                await asyncio.sleep(deadline - now)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    # -- inputs -----------------------------------------------------------------------------
    async def poll_once(self) -> None:
        """Read every planned block once and publish the samples."""
        ep, blocks = self.endpoint, self.blocks
        if ep.generation != self._written_gen and self.outputs.last_stage is not None:
            self._wake.set()  # (re)connected since the last write: rewrite every output
        if not await ep.ensure_connected():
            reason = "disconnected" if ep.ever_connected else "not connected"
            self._error(reason.replace(" ", "_"), f"{reason}: {ep.last_error}")
            self._mark_bad(self._keys, reason)
            return
        t0 = time.perf_counter()
        # Pipelined: block i+1's request goes out before block i is decoded and published, so
        # that CPU work overlaps the device's response time. The endpoint lock still keeps
        # exactly one request in flight.
        pending = self._read(blocks[0]) if blocks else None
        try:
            for i, block in enumerate(blocks):
                assert pending is not None
                try:
                    words, error = await pending, None
                except FieldError as err:
                    words, error = (), err
                pending = None
                if error is not None and error.kind == DISCONNECTED:
                    self._block_failed(i, error.kind, error.reason)
                    self._mark_bad(self._keys, "disconnected")
                    break
                if i + 1 < len(blocks):
                    pending = self._read(blocks[i + 1])
                    await asyncio.sleep(0)  # let it send before the CPU work below
                if error is not None:
                    self._block_failed(i, error.kind, error.reason)
                else:
                    self._publish(i, block, words)
        finally:
            if pending is not None:
                pending.cancel()
        self.polls += 1
        self.last_poll_ms = (time.perf_counter() - t0) * 1000

    def _read(self, block: ReadBlock) -> asyncio.Task[Sequence[int]]:
        cfg = self._config
        task = asyncio.ensure_future(self.endpoint.read(
            block.table, block.start, block.count, unit_id=cfg.unit_id, timeout_s=cfg.timeout_s))
        task.add_done_callback(_retrieve)
        return task

    def _publish(self, i: int, block: ReadBlock, words: Sequence[int]) -> None:
        try:
            values = block.decode(words)
        except CodecError as exc:
            self._block_failed(i, "decode", f"decode error: {exc}")
            return
        if self._block_reason[i]:
            log.info("%s: %s reads again", self._config.name, self._where(block))
            self._block_reason[i] = ""
        ts, keys, table, good = self.clock.wall(), self._keys, self.table, Quality.GOOD
        for name, value in values.items():
            table[keys[name]] = (Sample(value, good, ts) if math.isfinite(value)
                                 else Sample.bad("not a finite number", ts))

    def _where(self, block: ReadBlock) -> str:
        return f"unit {self._config.unit_id} {block.table.value} {block.start}+{block.count}"

    def _block_failed(self, i: int, kind: str, reason: str) -> None:
        block = self.blocks[i]
        self._error(kind, f"{self._where(block)}: {reason}")
        if self._block_reason[i] != reason:  # log transitions, not every poll
            log.warning("%s: %s: %s", self._config.name, self._where(block), reason)
            self._block_reason[i] = reason
        self._mark_bad(block.names, reason)

    def _mark_bad(self, names: Mapping[str, str] | Sequence[str], reason: str) -> None:
        ts = self.clock.wall()
        for name in names:
            key = self._keys[name]
            prev = self.table.get(key)  # keep the last value for display; BAD is never used
            self.table[key] = Sample.bad(reason, ts, prev.value if prev is not None else None)

    # -- outputs (stage and the writer loop: io/output_loop.py) -----------------------------
    async def write_due(self) -> None:
        """Write outputs that changed, are due a refresh, or must go to failsafe (FC16)."""
        cfg, ep, outputs = self._config, self.endpoint, self.outputs
        now = self.clock.monotonic()
        self._use_safe_image()
        held = len(outputs.held)
        items = outputs.due(now)
        if len(outputs.held) > held:
            self._error("max_hold", f"outputs at failsafe: {', '.join(sorted(outputs.held))}")
        if ep.generation != self._written_gen and await ep.ensure_connected():
            outputs.written.clear()  # new connection (maybe a rebooted device): write everything
            self._written_gen = ep.generation
            items = outputs.due(now)
        if not items or not await ep.ensure_connected():
            outputs.finished(now, not items, cfg.poll_s)
            return
        ok = True
        for block in plan_writes(items):
            try:
                await ep.write(block.start, block.words, unit_id=cfg.unit_id,
                               timeout_s=cfg.timeout_s)
            except FieldError as err:
                ok = False
                where = f"write unit {cfg.unit_id} holding {block.start}+{len(block.words)}"
                self._error(err.kind, f"{where}: {err.reason}")
                if err.reason != self._write_reason:  # log transitions, not every retry
                    log.warning("%s: %s (%s): %s", cfg.name, where, ",".join(block.names), err)
                    self._write_reason = err.reason
                if err.kind == DISCONNECTED:
                    break
                continue
            self.writes += 1
            outputs.acknowledged(block.names)
        if ok:
            self._write_reason = ""
        outputs.finished(now, ok, cfg.poll_s)

    def get_status(self) -> dict[str, Any]:
        """Connection, polling, request and error figures for every status reader."""
        cfg = self._config
        return {
            "connected": self.endpoint.connected, "endpoint": cfg.endpoint,
            "unit_id": cfg.unit_id, "polls": self.polls,
            "requests_per_poll": self.requests_per_poll, "minimum_requests": self._minimum,
            "last_poll_ms": round(self.last_poll_ms, 3), "overruns": self.overruns,
            "writes": self.writes, "refused_writes": self.outputs.refused,
            "outputs_at_failsafe": sorted(self.outputs.held), "errors": dict(self.errors),
            "last_error": self.last_error, "connection": self.endpoint.get_status(),
        }
