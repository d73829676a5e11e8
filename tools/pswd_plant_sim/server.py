"""Modbus TCP endpoints for the rig: one pymodbus server per endpoint, one unit per device.

Each device is a pymodbus `SimDevice` whose holding/input blocks span the io_map's
addresses. Its `action` hook (called on every request, before the block is read or
written) makes the device's RegisterBank the single source of truth: reads copy the bank
into the block, writes go through the bank's checks (outputs only, within min..max) and are
time-stamped for the device-side max-hold. An offline device answers exception 11 (gateway
target failed to respond) or, with `response = "silent"`, nothing at all. A unit id nobody
configured answers exception 10 (gateway path unavailable), as a gateway does, instead of
pymodbus's default (an error log and exception 4).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_runtime.config.schema import Table
from pswd_plant_sim.faults import misorder_words
from pswd_plant_sim.registers import RegisterBank
from pswd_plant_sim.rig import Rig, Unit

log = logging.getLogger(__name__)

# pymodbus reads back after a write with the write's function code (FC6 echoes the register)
_READ_TABLE = {3: Table.HOLDING, 4: Table.INPUT, 6: Table.HOLDING, 16: Table.HOLDING,
               22: Table.HOLDING, 23: Table.HOLDING}
_WRITE_CODES = (6, 16)


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """A TCP listener: name (referenced by devices), host and port."""

    name: str
    host: str
    port: int

    @property
    def address(self) -> str:
        """host:port."""
        return f"{self.host}:{self.port}"


def _block(bank: RegisterBank, table: Table) -> list[SimData]:
    span = bank.span(table)
    if span is None:  # the device has no such table: every address is illegal
        return [SimData(0, datatype=DataType.INVALID)]
    return [SimData(span[0], count=span[1], values=0, datatype=DataType.REGISTERS)]


class _Handler:
    """The `action` of one simulated unit."""

    def __init__(self, rig: Rig, unit: Unit) -> None:
        self.rig = rig
        self.unit = unit

    async def __call__(self, function_code: int, start_address: int, address: int, count: int,
                       registers: list[int], set_values: list[int] | list[bool] | None,
                       ) -> ExcCodes | None:
        offline = self.unit.offline
        if offline == "silent":
            raise NoSuchIdException(f"{self.unit.spec.name} is offline")  # no answer at all
        if offline is not None:
            return ExcCodes.GATEWAY_NO_RESPONSE
        bank = self.unit.bank
        if set_values is None:
            table = _READ_TABLE.get(function_code)
            if table is None:
                return ExcCodes.ILLEGAL_FUNCTION
            data = bank.read(table, address, count)
            if data is None:
                return ExcCodes.ILLEGAL_ADDRESS
            if self.unit.faults:
                data = misorder_words(data, table, address, bank, self.unit.faults)
            off = address - start_address
            registers[off:off + count] = data
            return None
        if function_code not in _WRITE_CODES:
            return ExcCodes.ILLEGAL_FUNCTION
        code = bank.write(address, [int(v) for v in set_values], self.rig.t)
        return None if code is None else ExcCodes(code)


async def _unknown_unit(function_code: int, start_address: int, address: int, count: int,
                        registers: list[int], set_values: list[int] | list[bool] | None,
                        ) -> ExcCodes | None:
    return ExcCodes.GATEWAY_PATH_UNAVIABLE


def _catch_all() -> SimDevice:
    """Unit id 0 stands for "every id not listed" in pymodbus; it must accept any address so
    the action (not the range check) answers."""
    every = [SimData(0, count=65536, values=0, datatype=DataType.REGISTERS)]
    bits = [SimData(0, values=False, datatype=DataType.BITS)]
    return SimDevice(id=0, simdata=(bits, list(bits), every, list(every)), action=_unknown_unit)


class ModbusEndpoints:
    """The pymodbus servers of a rig; `start()` binds them all, `stop()` closes them."""

    def __init__(self, rig: Rig, endpoints: Sequence[EndpointSpec]) -> None:
        self.rig = rig
        self.endpoints = tuple(endpoints)
        self._servers: list[ModbusTcpServer] = []

    def _devices(self, endpoint: str) -> list[SimDevice]:
        devices = []
        for unit in self.rig.units.values():
            if unit.spec.endpoint != endpoint:
                continue
            bank = unit.bank
            # coils / discrete inputs: one dummy bit block; the action refuses those codes
            bits = [SimData(0, values=False, datatype=DataType.BITS)]
            devices.append(SimDevice(
                id=unit.spec.unit_id,
                simdata=(bits, list(bits), _block(bank, Table.HOLDING), _block(bank, Table.INPUT)),
                action=_Handler(self.rig, unit).__call__,
            ))
        return devices

    async def start(self) -> None:
        """Bind every endpoint that has devices; OSError when a port is taken."""
        try:
            for ep in self.endpoints:
                devices = self._devices(ep.name)
                if not devices:
                    log.warning("endpoint %s (%s) has no devices; not served", ep.name,
                                ep.address)
                    continue
                server = ModbusTcpServer([*devices, _catch_all()], address=(ep.host, ep.port),
                                         ignore_missing_devices=True)
                try:
                    await server.serve_forever(background=True)
                except RuntimeError as exc:
                    raise OSError(f"cannot listen on {ep.address} ({ep.name}): {exc}") from exc
                self._servers.append(server)
                log.info("endpoint %s listening on %s with unit ids %s", ep.name, ep.address,
                         sorted(d.id for d in devices))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close every listener and its connections."""
        servers, self._servers = self._servers, []
        for server in servers:
            await server.shutdown()  # type: ignore[no-untyped-call]
