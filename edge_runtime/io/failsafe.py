"""Safe-image writes over fresh, blocking Modbus connections, for when the event loop is stuck.

The scan watchdog's thread calls write_failsafe_blocking when the loop itself is frozen (and
node shutdown when the drivers are gone), so nothing here touches asyncio: pymodbus's
synchronous client on its own sockets, one thread per endpoint so a dead gateway does not delay
the others. The caller passes the values to write: the safety layer's safe image (io_map
failsafes overlaid by every engaged trip and isolation), never the bare io_map failsafes; a
point missing from it falls back to its failsafe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from pymodbus.client import ModbusTcpClient

from edge_runtime.config.codec import encode
from edge_runtime.config.schema import DeviceConfig
from edge_runtime.io.blocks import WriteItem, plan_writes

log = logging.getLogger(__name__)

# A blocking safe-image writer for the devices of one protocol: (devices, timeout_s, values)
# -> error strings; never raises, never touches asyncio. Modbus is below; the assembler hands
# the node one per protocol its drivers speak (an OPC UA device gets its own).
BlockingWriter = Callable[[Sequence[DeviceConfig], float, Mapping[str, float]], list[str]]


def failsafe_writes(device: DeviceConfig,
                    values: Mapping[str, float]) -> list[tuple[int, list[int]]]:
    """(start address, registers) FC16 blocks that put every output of `device` at its safe
    value (`values` by full name "device.point"; the io_map failsafe where absent).

    Raises CodecError if a value cannot be encoded (a configuration error).
    """
    items = []
    for p in device.io_map.outputs:
        value = values.get(f"{device.name}.{p.name}", p.failsafe)
        if value is not None:
            items.append(WriteItem(p.name, p.address, tuple(encode(value, p.encoding))))
    return [(b.start, list(b.words)) for b in plan_writes(items)]


def _write_endpoint(host: str, port: int, devices: Sequence[DeviceConfig],
                    timeout_s: float, values: Mapping[str, float]) -> list[str]:
    errors: list[str] = []
    client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)
    try:
        if not client.connect():  # type: ignore[no-untyped-call]  # untyped in pymodbus 3.16
            return [f"{d.name}: cannot connect to {host}:{port}" for d in devices]
        for dev in devices:
            try:
                blocks = failsafe_writes(dev, values)
            except ValueError as exc:  # CodecError is a ValueError
                errors.append(f"{dev.name}: failsafe not encodable: {exc}")
                continue
            for start, words in blocks:
                try:
                    rsp = client.write_registers(start, words, device_id=dev.unit_id)
                except Exception as exc:  # pymodbus raises several kinds; report them all
                    errors.append(f"{dev.name}: write {start}+{len(words)} failed: {exc}")
                    if not client.connected:
                        break
                    continue
                if rsp.isError():
                    errors.append(f"{dev.name}: write {start}+{len(words)}: "
                                  f"modbus exception {rsp.exception_code}")
    except Exception as exc:  # never raise into the watchdog thread
        errors.append(f"{host}:{port}: {exc!r}")
    finally:
        client.close()  # type: ignore[no-untyped-call]
    return errors


def write_failsafe_blocking(devices: Sequence[DeviceConfig], timeout_s: float,
                            values: Mapping[str, float],
                            writers: Mapping[str, BlockingWriter] | None = None) -> list[str]:
    """Write every output's safe value (`values`, the safe image) to every device, Modbus
    here and other protocols through `writers`; returns error strings, never raises.

    Each protocol writes in a thread of its own, at once: a hung OPC UA server or an absent
    sensor node must not hold back the Modbus safe image (nor the other way round)."""
    jobs: list[tuple[str, BlockingWriter, list[DeviceConfig]]] = [
        ("modbus", _write_modbus, [d for d in devices if d.protocol == "modbus"])]
    for protocol, writer in (writers or {}).items():
        devs = [d for d in devices if d.protocol == protocol and d.io_map.outputs]
        if devs and protocol != "modbus":
            jobs.append((protocol, writer, devs))
    if len(jobs) == 1:
        return _write_modbus(devices, timeout_s, values)
    errors: list[str] = []
    try:
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="failsafe") as pool:
            futures = [(protocol, pool.submit(writer, devs, timeout_s, values))
                       for protocol, writer, devs in jobs]
            for protocol, fut in futures:
                try:
                    errors.extend(fut.result())
                except Exception as exc:  # a writer must not raise; if it does, report it
                    errors.append(f"{protocol} failsafe writer: {exc!r}")
    except Exception as exc:  # e.g. no thread could be started: still report, never raise
        errors.append(f"failsafe writers: {exc!r}")
    return errors


def _write_modbus(devices: Sequence[DeviceConfig], timeout_s: float,
                  values: Mapping[str, float]) -> list[str]:
    by_endpoint: dict[tuple[str, int], list[DeviceConfig]] = {}
    for dev in devices:
        if dev.protocol == "modbus" and dev.io_map.outputs:
            by_endpoint.setdefault((dev.host, dev.port), []).append(dev)
    if not by_endpoint:
        return []
    errors: list[str] = []
    try:
        with ThreadPoolExecutor(max_workers=len(by_endpoint),
                                thread_name_prefix="failsafe") as pool:
            futures = [pool.submit(_write_endpoint, host, port, devs, timeout_s, values)
                       for (host, port), devs in by_endpoint.items()]
            for fut in futures:
                errors.extend(fut.result())
    except Exception as exc:  # e.g. no thread could be started: still report, never raise
        errors.append(f"failsafe writer: {exc!r}")
    log.debug("failsafe written to %d endpoint(s), %d error(s)", len(by_endpoint), len(errors))
    return errors
