"""Modbus TCP driver: one shared connection per host:port, one polling/writing driver per device.

ModbusEndpoint owns the connection (every unit id behind a gateway shares it), serialises
requests with a lock, reconnects with its own backoff, and turns every failure into a
FieldError. pymodbus's own retries and auto-reconnect are disabled and its response wait is a
distant backstop, so exactly one policy (ours) decides timeouts and reconnects.

ModbusDevice implements the FieldDevice port: it polls the planned read blocks on absolute
deadlines into the InputTable, and writes staged outputs from a separate task: on change
(woken by an Event), on the periodic refresh, and as failsafe values when the scan stops
staging for longer than an output's max_hold_s.
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

from edge_runtime.config.schema import DeviceConfig, PointSpec, Table
from edge_runtime.core.clock import Clock
from edge_runtime.core.points import Quality, Sample
from edge_runtime.io.blocks import ReadBlock, WriteItem, minimum_requests, plan_reads, plan_writes
from edge_runtime.io.codec import CodecError, encode
from edge_runtime.io.ports import InputTable

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


def _output_words(spec: PointSpec | None, value: object) -> tuple[int, ...]:
    """Registers for a staged output value; CodecError says why it is refused."""
    if spec is None:
        raise CodecError("not an output of this device")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CodecError("not a finite number")
    lo = -math.inf if spec.minimum is None else spec.minimum
    hi = math.inf if spec.maximum is None else spec.maximum
    if not lo <= value <= hi:
        raise CodecError(f"outside {lo:g}..{hi:g}")
    return tuple(encode(value, spec.encoding))


class ModbusDevice:
    """FieldDevice over Modbus TCP: polls inputs into the InputTable, writes staged outputs."""

    def __init__(self, config: DeviceConfig, endpoint: ModbusEndpoint, table: InputTable,
                 clock: Clock) -> None:
        self._config, self.endpoint, self.table, self.clock = config, endpoint, table, clock
        inputs = config.io_map.inputs
        self.blocks: list[ReadBlock] = plan_reads(inputs, max_gap=config.max_gap)
        self._minimum = minimum_requests(inputs)
        self._keys = {p.name: f"{config.name}.{p.name}" for p in inputs}
        self._block_reason = [""] * len(self.blocks)  # last error per block, to log transitions
        self._outputs: dict[str, PointSpec] = {p.name: p for p in config.io_map.outputs}
        self._failsafe: dict[str, tuple[int, ...]] = {}
        for p in self._outputs.values():
            if p.failsafe is not None:
                try:
                    self._failsafe[p.name] = tuple(encode(p.failsafe, p.encoding))
                except CodecError as exc:  # a config bug: refuse to start rather than guess
                    raise ValueError(f"{config.name}.{p.name}: failsafe {exc}") from None
        self._values: dict[str, float] = {}  # accepted engineering values, by output name
        self._commanded: dict[str, tuple[int, ...]] = {}  # their registers
        self._written: dict[str, tuple[int, ...]] = {}  # registers last written successfully
        self._written_gen = -1  # endpoint generation those writes went to
        self._refused_last: dict[str, object] = {}
        self._held: set[str] = set()  # outputs at failsafe because staging stopped
        self._last_stage: float | None = None
        self._last_refresh = -math.inf
        self._retry_at = math.inf
        self._wake = asyncio.Event()
        self.polls = self.writes = self.refused = self.overruns = 0
        self.errors: Counter[str] = Counter()
        self.last_error = ""
        self.last_poll_ms = 0.0

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

    # -- polling ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Poll on absolute deadlines and write outputs until cancelled; never raises."""
        writer = asyncio.create_task(self._write_loop(), name=f"{self._config.name}-writer")
        period = self._config.poll_s
        deadline = self.clock.monotonic()
        try:
            while True:
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

    async def poll_once(self) -> None:
        """Read every planned block once and publish the samples."""
        cfg, ep, table = self._config, self.endpoint, self.table
        if ep.generation != self._written_gen and self._last_stage is not None:
            self._wake.set()  # (re)connected since the last write: rewrite every output
        if not await ep.ensure_connected():
            reason = "disconnected" if ep.ever_connected else "not connected"
            self._error(reason.replace(" ", "_"), f"{reason}: {ep.last_error}")
            self._mark_bad(self._keys, reason)
            return
        t0 = time.perf_counter()
        wall, good = self.clock.wall, Quality.GOOD
        for i, block in enumerate(self.blocks):
            try:
                words = await ep.read(block.table, block.start, block.count,
                                      unit_id=cfg.unit_id, timeout_s=cfg.timeout_s)
                values = block.decode(words)
            except FieldError as err:
                self._block_failed(i, err.kind, err.reason)
                if err.kind == DISCONNECTED:
                    self._mark_bad(self._keys, "disconnected")
                    break
                continue
            except CodecError as exc:
                self._block_failed(i, "decode", f"decode error: {exc}")
                continue
            if self._block_reason[i]:
                log.info("%s: %s", self._config.name, f"{self._where(block)} reads again")
                self._block_reason[i] = ""
            ts, keys = wall(), self._keys
            for name, value in values.items():
                table[keys[name]] = (Sample(value, good, ts) if math.isfinite(value)
                                     else Sample.bad("not a finite number", ts))
        self.polls += 1
        self.last_poll_ms = (time.perf_counter() - t0) * 1000

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

    def _error(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        self.last_error = message

    # -- outputs ----------------------------------------------------------------------------
    def stage(self, values: Mapping[str, float], now: float) -> None:
        """Take the scan's output values; refuse bad ones; wake the writer on change."""
        changed = False
        for name, value in values.items():
            if self._values.get(name, math.nan) == value and type(value) is not bool:
                continue  # unchanged: the common case every scan
            try:
                words = _output_words(self._outputs.get(name), value)
            except CodecError as exc:
                self._refuse(name, value, str(exc))
                continue
            self._values[name] = value
            self._refused_last.pop(name, None)
            if self._commanded.get(name) != words:
                self._commanded[name] = words
                changed = True
        self._last_stage = now
        if self._held:
            log.info("%s: outputs staged again; leaving failsafe for %s",
                     self._config.name, ", ".join(sorted(self._held)))
            self._held.clear()
            changed = True
        if changed:
            self._wake.set()

    def _refuse(self, name: str, value: object, why: str) -> None:
        self.refused += 1
        self.errors["refused"] += 1
        message = f"output {name} = {value!r} refused: {why}; keeping the previous value"
        self.last_error = message
        if self._refused_last.get(name, object()) != value:  # log once per refused value
            self._refused_last[name] = value
            log.warning("%s: %s", self._config.name, message)

    def _next_wake(self) -> float:
        if self._last_stage is None:
            return math.inf
        wake = min(self._last_refresh + self._config.refresh_s, self._retry_at)
        for name, spec in self._outputs.items():
            if spec.max_hold_s is not None and name not in self._held:
                wake = min(wake, self._last_stage + spec.max_hold_s)
        return wake

    async def _write_loop(self) -> None:
        while True:
            delay = self._next_wake() - self.clock.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if math.isinf(delay) else delay):
                        await self._wake.wait()
            self._wake.clear()
            try:
                await self.write_due()
            except Exception as exc:  # a driver bug must not end writing
                self._error("internal", repr(exc))
                log.exception("%s: write failed", self._config.name)
                self._retry_at = self.clock.monotonic() + self._config.poll_s

    def _targets(self, now: float) -> dict[str, tuple[int, ...]]:
        assert self._last_stage is not None
        silent = now - self._last_stage
        targets: dict[str, tuple[int, ...]] = {}
        for name, spec in self._outputs.items():
            failsafe = self._failsafe.get(name)
            if spec.max_hold_s is not None and failsafe is not None and silent > spec.max_hold_s:
                if name not in self._held:
                    self._held.add(name)
                    self.errors["max_hold"] += 1
                    self.last_error = (f"output {name}: no new value for {silent * 1e3:.0f} ms "
                                       f"(max_hold_s {spec.max_hold_s:g}): "
                                       f"failsafe {spec.failsafe:g}")
                    log.warning("%s: %s", self._config.name, self.last_error)
                targets[name] = failsafe
            elif name in self._commanded:
                targets[name] = self._commanded[name]
        return targets

    async def write_due(self) -> None:
        """Write outputs that changed, are due a refresh, or must go to failsafe."""
        if self._last_stage is None:
            return  # nothing is driven until the scan has decided something
        cfg, ep = self._config, self.endpoint
        now = self.clock.monotonic()
        targets = self._targets(now)
        refresh = now >= self._last_refresh + cfg.refresh_s
        if ep.generation != self._written_gen:
            self._written.clear()  # new connection (maybe a rebooted device): write everything
        items = [WriteItem(n, self._outputs[n].address, w) for n, w in targets.items()
                 if refresh or self._written.get(n) != w]
        if not items:
            self._retry_at = math.inf
            return
        if not await ep.ensure_connected():
            self._retry_at = now + cfg.poll_s
            return
        self._written_gen, ok = ep.generation, True
        for block in plan_writes(items):
            try:
                await ep.write(block.start, block.words, unit_id=cfg.unit_id,
                               timeout_s=cfg.timeout_s)
            except FieldError as err:
                ok = False
                self._error(err.kind, f"write unit {cfg.unit_id} holding {block.start}: "
                                      f"{err.reason}")
                log.warning("%s: write %s failed: %s", cfg.name, ",".join(block.names), err)
                if err.kind == DISCONNECTED:
                    break
                continue
            self.writes += 1
            for name in block.names:
                self._written[name] = targets[name]
        if refresh and ok:
            self._last_refresh = now
        self._retry_at = math.inf if ok else now + cfg.poll_s

    def get_status(self) -> dict[str, Any]:
        """Connection, polling, request and error figures for every status reader."""
        cfg = self._config
        return {
            "connected": self.endpoint.connected, "endpoint": cfg.endpoint,
            "unit_id": cfg.unit_id, "polls": self.polls,
            "requests_per_poll": self.requests_per_poll, "minimum_requests": self._minimum,
            "last_poll_ms": round(self.last_poll_ms, 3), "overruns": self.overruns,
            "writes": self.writes, "refused_writes": self.refused,
            "outputs_at_failsafe": sorted(self._held), "errors": dict(self.errors),
            "last_error": self.last_error, "connection": self.endpoint.get_status(),
        }
