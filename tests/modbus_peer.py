"""A real pymodbus TCP server for driver tests, with fault injection and request counting.

Uses pymodbus's SimDevice model (the non-deprecated one): one SimDevice per unit id with
separate holding and input tables, and an `action` hook that pymodbus awaits on every access.
The hook counts requests and injects faults: a delay (to force client timeouts) or an
exception code over an address range. Tests read and write registers from the application
side through the server's async_getValues / async_setValues.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_runtime.config.codec import Encoding, encode
from edge_runtime.config.schema import Table

FC_READ_HOLDING, FC_READ_INPUT, FC_WRITE_MULTIPLE = 3, 4, 16
_TABLE_FC = {Table.HOLDING: (FC_READ_HOLDING, FC_WRITE_MULTIPLE),
             Table.INPUT: (FC_READ_INPUT, FC_READ_INPUT)}


async def wait_for(cond: Callable[[], object], timeout: float = 2.0, what: str = "") -> None:
    """Poll `cond` every 10 ms until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        await asyncio.sleep(0.01)


class _Handler(ServerRequestHandler):
    """Request handler that captures each request before awaiting the datastore.

    pymodbus 3.16.1's handle_request reads `self.last_pdu` again after the await, so when a
    second request arrives while the first is delayed, the first response goes out with the
    second request's transaction id (and the client accepts it as the wrong answer).
    """

    tasks: set[asyncio.Task[None]]

    def handle_later(self) -> None:
        pdu, addr = self.last_pdu, self.last_addr
        if pdu is None:
            return
        if not hasattr(self, "tasks"):
            self.tasks = set()
        task = asyncio.ensure_future(self._handle(pdu, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, pdu: ModbusPDU, addr: Any) -> None:
        try:
            response = await pdu.datastore_update(self.server.context, pdu.dev_id)
        except Exception:  # a crashed datastore answers "server device failure", like pymodbus
            response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        if self.transport:  # the connection may have closed while the response was delayed
            self.server_send(response, addr)  # type: ignore[no-untyped-call]


class _Server(ModbusTcpServer):
    def callback_new_connection(self) -> _Handler:
        return _Handler(  # type: ignore[no-untyped-call]
            self, self.trace_packet, self.trace_pdu, self.trace_connect)


@dataclass
class _Fault:
    unit: int
    start: int
    end: int  # exclusive
    code: int


class ModbusPeer:
    """Modbus TCP server on 127.0.0.1:port with unit ids, holding and input registers."""

    def __init__(self, port: int, unit_ids: Sequence[int] = (1,), size: int = 1024) -> None:
        self.port = port
        self.unit_ids = tuple(unit_ids)
        self.size = size
        self.requests: Counter[tuple[int, int]] = Counter()  # (unit, function code) -> count
        self.writes: list[tuple[float, int, int, list[int]]] = []  # (monotonic, unit, addr, words)
        self.delays: dict[int, float] = {}  # unit -> seconds to hold each response
        self.faults: list[_Fault] = []
        self._regs = {(u, t): [0] * size for u in self.unit_ids for t in Table}
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._app_access = False

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen (again), with the register contents the server had when stopped."""
        devices = [SimDevice(u, simdata=(
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, values=list(self._regs[(u, Table.HOLDING)]), datatype=DataType.REGISTERS)],
            [SimData(0, values=list(self._regs[(u, Table.INPUT)]), datatype=DataType.REGISTERS)],
        ), action=partial(self._action, u)) for u in self.unit_ids]
        self._server = _Server(devices, address=("127.0.0.1", self.port))
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        """Close the listener and every client connection, keeping the register contents."""
        if self._server is None:
            return
        for u in self.unit_ids:
            for t in Table:
                self._regs[(u, t)] = await self.get_registers(u, t, 0, self.size)
        server, self._server = self._server, None
        await server.shutdown()  # type: ignore[no-untyped-call]

    async def restart(self) -> None:
        """Stop and start again on the same port."""
        await self.stop()
        await self.start()

    async def __aenter__(self) -> ModbusPeer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- application-side register access -------------------------------------------------
    async def set_registers(self, unit: int, table: Table, address: int, words: Sequence[int]
                            ) -> None:
        """Write registers from the device's side (not counted, never faulted)."""
        if self._server is None:
            self._regs[(unit, table)][address:address + len(words)] = list(words)
            return
        self._app_access = True
        try:
            await self._server.async_setValues(unit, _TABLE_FC[table][1], address, list(words))
        finally:
            self._app_access = False

    async def get_registers(self, unit: int, table: Table, address: int, count: int
                            ) -> list[int]:
        """Read registers from the device's side (not counted, never faulted)."""
        if self._server is None:
            return list(self._regs[(unit, table)][address:address + count])
        self._app_access = True
        try:
            values = await self._server.async_getValues(unit, _TABLE_FC[table][0], address, count)
        finally:
            self._app_access = False
        return [int(v) for v in values]

    async def set_value(self, unit: int, table: Table, address: int, value: float,
                        enc: Encoding) -> None:
        """Encode an engineering value and write it from the device's side."""
        await self.set_registers(unit, table, address, encode(value, enc))

    # -- faults and counters --------------------------------------------------------------
    def fail(self, unit: int, start: int, count: int, code: int) -> None:
        """Answer requests touching [start, start+count) of `unit` with exception `code`."""
        self.faults.append(_Fault(unit, start, start + count, code))

    def clear_faults(self) -> None:
        """No more injected exceptions or delays."""
        self.faults.clear()
        self.delays.clear()

    def count(self, unit: int | None = None, fc: int | None = None) -> int:
        """Requests received, optionally for one unit and/or function code."""
        return sum(n for (u, f), n in self.requests.items()
                   if (unit is None or u == unit) and (fc is None or f == fc))

    def reset_counts(self) -> None:
        """Forget counted requests and logged writes."""
        self.requests.clear()
        self.writes.clear()

    async def _action(self, unit: int, function_code: int, _start_address: int, address: int,
                      count: int, _registers: list[int], set_values: Any) -> ExcCodes | None:
        if self._app_access:
            return None
        self.requests[(unit, function_code)] += 1
        if function_code == FC_WRITE_MULTIPLE and set_values is not None:
            self.writes.append((time.monotonic(), unit, address, [int(v) for v in set_values]))
        delay = self.delays.get(unit)
        if delay:
            await asyncio.sleep(delay)
        for f in self.faults:
            if f.unit == unit and address < f.end and f.start < address + count:
                return ExcCodes(f.code)
        return None
