"""Safe-image writes to OPC UA devices over fresh sessions, for when the event loop is stuck.

The node calls this BlockingWriter from the scan watchdog's thread while its event loop is
frozen, and from a worker thread at shutdown. It never touches the node's loop: it runs a
fresh event loop of its own with asyncio.run in the calling thread (or, if that thread already
runs a loop, in a short-lived thread of its own). That was chosen over asyncua's sync Client,
whose ThreadLoop starts one more thread with its own loop anyway and keeps it until stopped:
asyncio.run gives the same isolation, bounds the whole write with one asyncio.timeout, and
leaves nothing running when it returns. Every endpoint is written concurrently, so a dead
server does not delay the others. It never raises; failures come back as error strings.
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


def write_failsafe_opcua(devices: Sequence[DeviceConfig], timeout_s: float,
                         values: Mapping[str, float]) -> list[str]:
    """Write every output's safe value (`values` by "device.point", the io_map failsafe where
    absent) to every OPC UA device; returns error strings, never raises, never blocks longer
    than about `timeout_s` x 6."""
    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_write_all(devices, timeout_s, values))
        out: list[str] = [f"opcua failsafe: no answer within {timeout_s * _STEPS:g} s"]

        def run() -> None:
            out[:] = asyncio.run(_write_all(devices, timeout_s, values))

        worker = threading.Thread(target=run, name="opcua-failsafe", daemon=True)
        worker.start()
        worker.join(timeout_s * _STEPS + 1.0)
        return list(out)
    except Exception as exc:  # never raise into the watchdog thread
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
    except TimeoutError:
        errors.append(f"{first.url}: no answer within {timeout_s * _STEPS:g} s")
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
