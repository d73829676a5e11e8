"""Safe-image writes to OPC UA devices over fresh sessions, for when the event loop is stuck.

The node calls this BlockingWriter from the scan watchdog's thread while its event loop is
frozen, and from a worker thread at shutdown. It never touches the node's loop: the writes run
on a fresh event loop (asyncio.run) in a thread of their own. That was chosen over asyncua's
sync Client, whose ThreadLoop starts a thread with its own loop too but keeps it until
stopped: asyncio.run gives the same isolation, bounds the whole write with one asyncio.timeout
(about 6 request timeouts: connect, resolve, write) and leaves nothing running afterwards.
Every endpoint is written concurrently, so a dead server does not delay the others.

The caller waits at most 2 request timeouts: io/failsafe.py runs the protocols' writers one
after the other, and an unreachable OPC UA server must not hold back the Modbus devices'
safe image. A write still going on then finishes in its thread (not a daemon: a process that
exits waits for it) and logs its own errors. Never raises; failures come back as strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Mapping, Sequence

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds

from edge_runtime.config.codec import CodecError, encode
from edge_runtime.config.schema import DeviceConfig
from edge_runtime.io.opcua_codec import device_refs, server_type, status_text, to_variant
from edge_runtime.io.opcua_endpoint import SESSION_TIMEOUT_MS, OpcUaEndpoint, resolve
from edge_runtime.io.opcua_security import apply_security

log = logging.getLogger(__name__)

_STEPS = 6  # connect (4 requests), resolve + types, write: the budget in request timeouts
_WAIT_STEPS = 2  # what the caller waits for, in request timeouts, before going on


def write_failsafe_opcua(devices: Sequence[DeviceConfig], timeout_s: float,
                         values: Mapping[str, float]) -> list[str]:
    """Write every output's safe value (`values` by "device.point", the io_map failsafe where
    absent) to every OPC UA device; returns error strings, never raises, returns within about
    2 x `timeout_s` (a slower write goes on in its thread and logs its own outcome)."""
    lock = threading.Lock()
    result: list[str] = []
    finished, abandoned = threading.Event(), threading.Event()

    def run() -> None:
        try:
            errors = asyncio.run(_write_all(devices, timeout_s, values))
        except Exception as exc:  # never raise, not even from a thread
            errors = [f"opcua failsafe writer: {exc!r}"]
        with lock:
            result.extend(errors)
            finished.set()
            late = abandoned.is_set()
        if late:
            for err in errors:
                log.error("opcua safe image (finished late): %s", err)
            log.warning("opcua safe image finished late with %d error(s)", len(errors))

    try:
        worker = threading.Thread(target=run, name="opcua-failsafe")
        worker.start()
        finished.wait(timeout_s * _WAIT_STEPS)
        with lock:
            if finished.is_set():
                return list(result)
            abandoned.set()
        return [f"opcua: safe image still being written after {timeout_s * _WAIT_STEPS:g} s "
                f"(slow or unreachable server); it goes on in the background"]
    except Exception as exc:  # e.g. no thread could be started: report, never raise
        return [f"opcua failsafe writer: {exc!r}"]


async def _write_all(devices: Sequence[DeviceConfig], timeout_s: float,
                     values: Mapping[str, float]) -> list[str]:
    groups: dict[tuple[str, object], list[DeviceConfig]] = {}
    for dev in devices:
        if dev.protocol == "opcua" and dev.io_map.outputs:
            groups.setdefault((dev.url, dev.security), []).append(dev)
    results = await asyncio.gather(*(_write_endpoint(devs, timeout_s, values)
                                     for devs in groups.values()), return_exceptions=True)
    errors: list[str] = []
    for devs, res in zip(groups.values(), results, strict=True):
        if isinstance(res, BaseException):
            errors.append(f"{devs[0].url}: {res!r}")
        else:
            errors.extend(res)
    log.debug("opcua failsafe written to %d endpoint(s), %d error(s)", len(groups), len(errors))
    return errors


async def _write_endpoint(devices: Sequence[DeviceConfig], timeout_s: float,
                          values: Mapping[str, float]) -> list[str]:
    first = devices[0]
    client = Client(first.url, timeout=timeout_s)
    client.session_timeout = SESSION_TIMEOUT_MS
    errors: list[str] = []
    try:
        async with asyncio.timeout(timeout_s * _STEPS):
            if first.security is not None:
                await apply_security(client, first.security)
            await client.connect(auto_reconnect=False)
            ep = OpcUaEndpoint(first)  # only for resolve(): reuse its ref handling
            ep.client, ep.namespaces = client, list(await client.get_namespace_array())
            for dev in devices:
                errors.extend(await _write_device(ep, dev, values))
    except TimeoutError:  # a request's own timeout or the whole budget
        errors.append(f"{first.url}: no answer in time (request timeout "
                      f"{timeout_s * 1000:.0f} ms, {timeout_s * _STEPS:g} s in all)")
    except Exception as exc:
        errors.append(f"{first.url}: cannot write the safe image: {exc!r}")
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout_s):
                await client.disconnect()
        client.disconnect_socket()
    return errors


async def _write_device(ep: OpcUaEndpoint, dev: DeviceConfig,
                        values: Mapping[str, float]) -> list[str]:
    outs = {p.name: p for p in dev.io_map.outputs}
    refs = {n: r for n, r in device_refs(dev).items() if n in outs}
    nodeids, problems = await resolve(ep, refs)
    errors = [f"{dev.name}.{n}: {why}" for n, why in problems.items()]
    names = list(nodeids)
    if not names:
        return errors
    types = await ep.request(lambda c: c.uaclient.read_attributes(
        [nodeids[n] for n in names], AttributeIds.DataType))
    write_names, dvs = [], []
    for name, tdv in zip(names, types, strict=True):
        spec = outs[name]
        value = values.get(f"{dev.name}.{name}", spec.failsafe)
        if value is None:
            continue
        try:
            variant = to_variant(spec, encode(value, spec.encoding), server_type(tdv))
        except CodecError as exc:
            errors.append(f"{dev.name}.{name}: safe value {value!r} not writable: {exc}")
            continue
        write_names.append(name)
        dvs.append(ua.DataValue(variant))
    if not write_names:
        return errors
    codes = await ep.request(lambda c: c.uaclient.write_attributes(
        [nodeids[n] for n in write_names], dvs, AttributeIds.Value))
    errors += [f"{dev.name}.{n}: write {status_text(code)}"
               for n, code in zip(write_names, codes, strict=True) if not code.is_good()]
    return errors
