"""A simulated field device that speaks OPC UA: an asyncua server over one device of the rig.

A plant config declares an endpoint with `protocol = "opcua"` and puts a device on it whose
io_map is an OPC UA one (`[device] protocol = "opcua"`, a `ref` per point). The device is
simulated by the Modbus model whose point names it shares (SIMULATED_BY: a battery system
controller is the battery inverter's element behind a PLC), so the rig, its register bank
(device-side checks, max_hold_s reversion, comms-loss registers) and its faults are the same
code as for every Modbus device; this module only serves that bank over OPC UA:

- every point is a variable at its ref (a NodeId, "nsu=URI;..." or a browse path from Root),
  the variant type from the io_map type; namespaces are registered so the refs' indices exist;
- a task copies the bank's values into the variables every `update_ms` (only changes, with the
  source timestamp of the change), so subscriptions see data changes;
- client writes to outputs go through the bank's checks (Bad_OutOfRange when it refuses, as a
  strict PLC answers); inputs answer Bad_NotWritable;
- an `offline` fault: "exception" gives every variable Bad_NoCommunication (a PLC whose field
  device went quiet), "silent" closes the listener and every session until it is cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from asyncua import ua
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.address_space import AttributeService
from asyncua.server.binary_server_asyncio import BinaryServer
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509

from edge_runtime.config.codec import CodecError, DataType, encode
from edge_runtime.config.schema import IoMap, PointSpec
from pswd_plant_sim.registers import ILLEGAL_ADDRESS, ILLEGAL_VALUE
from pswd_plant_sim.rig import Rig, Unit

log = logging.getLogger(__name__)

# OPC UA io_map model -> the simulated (Modbus) model whose element and points back it.
SIMULATED_BY = {"bess_controller_opcua": "battery_inverter"}
SECURITY = {"Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
            "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt}
_TYPES = {DataType.INT16: ua.VariantType.Int16, DataType.UINT16: ua.VariantType.UInt16,
          DataType.INT32: ua.VariantType.Int32, DataType.UINT32: ua.VariantType.UInt32,
          DataType.FLOAT32: ua.VariantType.Float}


@dataclass(frozen=True, slots=True)
class OpcUaEndpointSpec:
    """An OPC UA listener of the simulator: name (devices reference it), host, port, path."""

    name: str
    host: str
    port: int
    path: str = ""
    update_s: float = 0.05
    # "none", or a Basic256Sha256 mode (SECURITY) with the server's certificate and key and a
    # trust list (a file or folder of client certificates); untrusted clients are refused.
    security: str = "none"
    cert: Path | None = None
    key: Path | None = None
    trust: Path | None = None

    @property
    def url(self) -> str:
        """opc.tcp://host:port/path."""
        return f"opc.tcp://{self.host}:{self.port}{self.path}"

    @property
    def address(self) -> str:
        """The URL (as EndpointSpec.address, for the CLI)."""
        return self.url


@dataclass(frozen=True, slots=True)
class OpcUaDeviceSpec:
    """A rig device served over OPC UA: the rig unit's name, where, and its OPC UA io_map."""

    device: str
    endpoint: OpcUaEndpointSpec
    io_map: IoMap


def backing_error(opcua_map: IoMap, backing: IoMap) -> str | None:
    """Why `backing` cannot simulate `opcua_map` (a point missing or not an output there)."""
    for p in opcua_map.points:
        try:
            b = backing.point(p.name)
        except KeyError:
            return f"point {p.name!r} of {opcua_map.model!r} is not in {backing.model!r}"
        if p.access.writable and not b.access.writable:
            return f"output {p.name!r} of {opcua_map.model!r} is not an output of {backing.model!r}"
    return None


_ADMIN = User(role=UserRole.Admin)  # asyncua's own default for a server-side write


def _now() -> ua.DateTime:
    return cast(ua.DateTime, dt.datetime.now(dt.UTC))  # ua.DateTime is a marker for datetime


class _DeviceWrites(AttributeService):
    """The server's attribute service, with writes to the device's variables checked by the
    device (its register bank) instead of stored as they come."""

    def __init__(self, server: OpcUaDeviceServer, base: AttributeService) -> None:
        super().__init__(server.server.iserver.aspace)
        self.device, self.base = server, base

    async def write(self, params: ua.WriteParameters,
                    user: User = _ADMIN) -> list[ua.StatusCode]:
        """Device variables answered here, everything else by asyncua."""
        results: list[ua.StatusCode | None] = []
        others: list[ua.WriteValue] = []
        for wv in params.NodesToWrite:
            spec = self.device.points.get(wv.NodeId)
            if spec is not None and wv.AttributeId == AttributeIds.Value:
                results.append(self.device.client_write(spec, wv.Value))
            else:
                results.append(None)
                others.append(wv)
        rest = iter(await self.base.write(ua.WriteParameters(NodesToWrite=others), user)
                    if others else [])
        return [r if r is not None else next(rest) for r in results]


class OpcUaDeviceServer:
    """One asyncua server serving one rig unit's bank at its io_map refs."""

    def __init__(self, rig: Rig, spec: OpcUaDeviceSpec) -> None:
        self.rig, self.spec = rig, spec
        self.unit: Unit = rig.units[spec.device]
        self.server = Server()
        self.points: dict[ua.NodeId, PointSpec] = {}  # variable -> the point it serves
        self.nodes: dict[str, Node] = {}
        self._shown: dict[str, tuple[Any, int]] = {}  # point -> (value, status) last served
        self._task: asyncio.Task[None] | None = None
        self._listener = asyncio.Lock()  # one pause or resume at a time
        self.paused = False  # listener closed, by pause() or by a "silent" offline fault
        self._held = False  # paused by pause() or hang(): only resume() opens it again
        self._hung = False  # hang(): connections kept open but no longer read
        self.writes = self.refused = 0

    @property
    def url(self) -> str:
        """The endpoint URL."""
        return self.spec.endpoint.url

    async def start(self) -> None:
        """Build the address space and listen; OSError when the port is taken."""
        srv, ep = self.server, self.spec.endpoint
        await srv.init()
        srv.set_endpoint(ep.url)
        srv.set_server_name(f"PSWD plant simulator: {self.spec.device}")
        await self._secure(srv, ep)
        await self._build()
        srv.iserver.attribute_service = _DeviceWrites(self, srv.iserver.attribute_service)
        try:
            await srv.start()
        except Exception as exc:
            raise OSError(f"cannot listen on {ep.url} ({ep.name}): {exc}") from exc
        self._task = asyncio.create_task(self._sync_loop(), name=f"opcua-{self.spec.device}")
        log.info("OPC UA endpoint %s serving %s at %s", ep.name, self.spec.device, ep.url)

    @staticmethod
    async def _secure(srv: Server, ep: OpcUaEndpointSpec) -> None:
        """SecurityPolicy None, or one Basic256Sha256 endpoint with a trust list checked."""
        if ep.security == "none" or ep.cert is None or ep.key is None or ep.trust is None:
            srv.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            return
        await srv.load_certificate(str(ep.cert))
        await srv.load_private_key(str(ep.key))
        uri = _certificate_uri(ep.cert)
        if uri:
            await srv.set_application_uri(uri)
        srv.set_security_policy([SECURITY[ep.security]])
        store = TrustStore([ep.trust], [])
        await store.load()
        options = (CertificateValidatorOptions.TRUSTED_VALIDATION
                   | CertificateValidatorOptions.PEER_CLIENT)
        srv.set_certificate_validator(CertificateValidator(options, store).validate)

    async def stop(self) -> None:
        """Stop syncing and close the server; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.server.stop()

    async def pause(self) -> None:
        """Close the listener and every session (a PLC pulled off the network) until
        resume()."""
        self._held = True
        await self._close()

    async def hang(self) -> None:
        """Stop answering without closing anything (a PLC whose CPU hung, a cable cut behind
        a switch): open connections are no longer read, new ones are not accepted."""
        self._held = True
        async with self._listener:
            bs = self.server.bserver
            if self.paused or bs is None:
                return
            for transport in list(self.server.iserver.asyncio_transports):
                transport.pause_reading()
            if bs._server is not None:  # asyncua keeps its listener private; close only it
                bs._server.close()
            self.paused = self._hung = True
            log.warning("%s: OPC UA endpoint %s hung", self.spec.device, self.url)

    async def resume(self) -> None:
        """Listen again on the same port (the address space was kept)."""
        self._held = False
        if self.unit.offline != "silent":
            await self._open()

    async def _close(self) -> None:
        async with self._listener:
            if self.paused or self.server.bserver is None:
                return
            await self.server.bserver.stop()
            self.paused = True
            log.warning("%s: OPC UA endpoint %s closed", self.spec.device, self.url)

    async def _open(self) -> None:
        async with self._listener:
            old = self.server.bserver
            if not self.paused or old is None:
                return
            if self._hung:  # the hung connections go, as when such a PLC restarts
                await old.stop()
                self._hung = False
            fresh = BinaryServer(self.server.iserver, old.hostname, old.port,
                                 self.server.limits)
            fresh.set_policies(old._policies)
            await fresh.start()
            self.server.bserver = fresh
            self.paused = False
            log.warning("%s: OPC UA endpoint %s open again", self.spec.device, self.url)

    # -- address space ------------------------------------------------------------------------
    async def _build(self) -> None:
        refs = [p.ref for p in self.spec.io_map.points]
        await self._namespaces(refs)
        folders: dict[tuple[str, ...], Node] = {}
        default = await self._folder(folders, ("0:Objects", f"1:{self.spec.device}"))
        for p in self.spec.io_map.points:
            vtype = _TYPES[p.encoding.dtype]
            if p.ref.startswith("/"):
                *parents, leaf = p.ref.split("/")[1:]
                parent = await self._folder(folders, tuple(parents))
                node = await parent.add_variable(_path_nodeid(p.ref), leaf, self._raw(p, 0),
                                                 vtype)
            else:
                nodeid = ua.NodeId.from_string(await self._nodeid_text(p.ref))
                node = await default.add_variable(nodeid, f"{nodeid.NamespaceIndex}:{p.name}",
                                                  self._raw(p, 0), vtype)
            if p.access.writable:
                await node.set_writable()
            self.points[node.nodeid] = p
            self.nodes[p.name] = node

    async def _namespaces(self, refs: Sequence[str]) -> None:
        """Register namespaces until every index the refs use exists, and every nsu= URI."""
        wanted = 1
        for ref in refs:
            for part in ref.replace("/", ";").split(";"):
                head, sep, _ = part.partition(":" if not part.startswith("ns=") else "=")
                if part.startswith("ns="):
                    wanted = max(wanted, int(part[3:]))
                elif sep and head.isdigit():
                    wanted = max(wanted, int(head))
        names = await self.server.get_namespace_array()
        for i in range(len(names), wanted + 1):
            await self.server.register_namespace(f"urn:pswd:plant-sim:{self.spec.device}:{i}")
        for ref in refs:
            if ref.startswith("nsu="):
                await self.server.register_namespace(ref[4:].partition(";")[0])

    async def _nodeid_text(self, ref: str) -> str:
        if not ref.startswith("nsu="):
            return ref
        uri, _, ident = ref[4:].partition(";")
        return f"ns={await self.server.get_namespace_index(uri)};{ident}"

    async def _folder(self, folders: dict[tuple[str, ...], Node], path: tuple[str, ...]) -> Node:
        """The object at a browse path from Root, created (as folders) where missing."""
        if path in folders:
            return folders[path]
        if path == ("0:Objects",) or path == ("Objects",):
            node = self.server.nodes.objects
        elif not path:
            node = self.server.get_node(ua.NodeId(ua.Int32(ObjectIds.RootFolder)))
        else:
            parent = await self._folder(folders, path[:-1])
            node = await parent.add_folder(_path_nodeid("/" + "/".join(path)), path[-1])
        folders[path] = node
        return node

    # -- values -------------------------------------------------------------------------------
    def _raw(self, p: PointSpec, value: float) -> Any:
        enc = p.encoding
        raw = (value - enc.offset) / enc.scale
        return float(raw) if enc.dtype is DataType.FLOAT32 else round(raw)

    async def _sync_loop(self) -> None:
        period = self.spec.endpoint.update_s
        while True:
            try:
                await self.sync()
            except Exception:  # the simulator keeps serving whatever one update did
                log.exception("%s: OPC UA update failed", self.spec.device)
            await asyncio.sleep(period)

    async def sync(self) -> None:
        """Serve the bank's current values (and the offline fault) at the variables."""
        offline = self.unit.offline
        if offline == "silent":
            await self._close()
            return
        if self.paused and not self._held:
            await self._open()
        bank, now = self.unit.bank, _now()
        status = StatusCodes.BadNoCommunication if offline else StatusCodes.Good
        for name, node in self.nodes.items():
            p = self.points[node.nodeid]
            try:
                value = self._raw(p, bank.get(name))
            except (CodecError, ValueError, OverflowError):
                value = None
            if self._shown.get(name) == (value, status):
                continue
            self._shown[name] = (value, status)
            vtype = _TYPES[p.encoding.dtype]
            dv = ua.DataValue(ua.Variant(value if status == StatusCodes.Good else None,
                                         vtype if status == StatusCodes.Good
                                         else ua.VariantType.Null),
                              StatusCode=ua.StatusCode(ua.UInt32(status)),
                              SourceTimestamp=now, ServerTimestamp=now)
            await self.server.write_attribute_value(node.nodeid, dv)

    def client_write(self, p: PointSpec, dv: ua.DataValue) -> ua.StatusCode:
        """A client's write of one variable, judged and applied by the device's bank."""
        code = self._judge(p, dv)
        if code == StatusCodes.Good:
            self.writes += 1
            self._shown.pop(p.name, None)  # serve the new value on the next update
        else:
            self.refused += 1
        return ua.StatusCode(ua.UInt32(code))

    def _judge(self, p: PointSpec, dv: ua.DataValue) -> int:
        if not p.access.writable:
            return int(StatusCodes.BadNotWritable)
        if self.unit.offline:
            return int(StatusCodes.BadNoCommunication)
        raw = dv.Value.Value if dv.Value is not None else None
        if isinstance(raw, bool):
            raw = int(raw)
        if not isinstance(raw, int | float):
            return int(StatusCodes.BadTypeMismatch)
        value = raw * p.encoding.scale + p.encoding.offset
        if ((p.minimum is not None and value < p.minimum)
                or (p.maximum is not None and value > p.maximum)):
            return int(StatusCodes.BadOutOfRange)
        backing = self.unit.bank.point(p.name)
        try:
            words = encode(value, backing.encoding)
        except CodecError:
            return int(StatusCodes.BadOutOfRange)
        result = self.unit.bank.write(backing.address, words, self.rig.t)
        if result is None:
            return int(StatusCodes.Good)
        return int(StatusCodes.BadOutOfRange if result == ILLEGAL_VALUE
                   else StatusCodes.BadNotWritable if result == ILLEGAL_ADDRESS
                   else StatusCodes.BadDeviceFailure)

    def get_status(self) -> dict[str, Any]:
        """Where it serves, whether it is paused, client writes taken and refused."""
        return {"url": self.url, "paused": self.paused, "writes": self.writes,
                "refused": self.refused}


def _certificate_uri(path: Path) -> str | None:
    """The SubjectAltName URI of a certificate (PEM or DER): the server's ApplicationUri must
    equal it. (Read here, not with the driver's helper: the simulator stays independent.)"""
    data = path.read_bytes()
    cert = (x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_certificate(data))
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = alt.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _path_nodeid(path: str) -> ua.NodeId:
    """A string NodeId for a node created at a browse path, in its last element's namespace."""
    head, sep, _ = path.rsplit("/", 1)[-1].partition(":")
    ns = int(head) if sep and head.isdigit() else 1
    return ua.NodeId(ua.String(f"path:{path}"), ua.Int16(ns))
