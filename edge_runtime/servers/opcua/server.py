"""The node's OPC UA server (a Service the assembler attaches as node.attach("opcua", ...)).

Security: endpoints Basic256Sha256 and Aes256_Sha256_RsaPss (Sign, SignAndEncrypt) only, no
None endpoint; a client's application certificate is validated against the trust list
(state_dir/trusted; TRUSTED_VALIDATION | PEER_CLIENT, so an untrusted one gets
BadCertificateUntrusted); sessions authenticate by username/password or user certificate
(users.py), anonymous only when configured, and then as the read-only viewer. The server's
own RSA-2048 certificate is made at first start (security/opcua_certs.py), signed by the site
CA when [opcua] ca_cert/ca_key name one, self-signed otherwise.

Data: the scan's observer (binding.ScanTap) snapshots each finished scan; the server runs in
its own thread and event loop, where one task writes the snapshot into the variables, then
brings the alarm conditions in step: the scan never waits on OPC UA work. Writes of output variables
and method calls go through methods.CommandGate into the command queue; SignedCommand
(signed.py) takes the signed envelope of MQTT and HTTPS, verified by the node's one verifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.security_policies import SecurityPolicyFactory, SecurityPolicyNone
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.address_space import AttributeService
from cryptography import x509

from edge_runtime.core.realtime import apply_realtime_priority, current_scheduling
from edge_runtime.federation.inbound import Verifier
from edge_runtime.node import Node
from edge_runtime.security.ids import IntrusionDetector
from edge_runtime.security.opcua_certs import (
    ServerCertFiles,
    Signer,
    ensure_server_cert,
    load_signer,
)
from edge_runtime.servers.opcua.alarms import AlarmBridge
from edge_runtime.servers.opcua.binding import Binding, ScanTap
from edge_runtime.servers.opcua.config import OpcUaConfig
from edge_runtime.servers.opcua.history import historize, key_points, storage
from edge_runtime.servers.opcua.methods import (
    Answer,
    CommandGate,
    DiscoveryOnly,
    MethodHandlers,
    SessionRoles,
)
from edge_runtime.servers.opcua.model import NODESET, AddressSpace, build
from edge_runtime.servers.opcua.signed import SignedCommands
from edge_runtime.servers.opcua.uatypes import (
    AttributeIds,
    ObjectIds,
    Server,
    StatusCodes,
    nodeid,
    status,
)
from edge_runtime.servers.opcua.users import RoleUserManager, UserStore

log = logging.getLogger(__name__)
MIN_POLL_S = 0.02  # the binding takes the newest scan at most every 20 ms (50 Hz)
_NUMERIC = (ua.VariantType.Double, ua.VariantType.Float, ua.VariantType.Int16,
            ua.VariantType.Int32, ua.VariantType.Int64, ua.VariantType.UInt16,
            ua.VariantType.UInt32, ua.VariantType.UInt64, ua.VariantType.Byte,
            ua.VariantType.SByte)


def application_uri(config: OpcUaConfig, site: str, node: str) -> str:
    """The server's application URI (the SubjectAltName URI of its certificate)."""
    return config.application_uri or f"urn:pswd-edge:{site}:{node}"


class GatedWrites(AttributeService):
    """asyncua's attribute service, with client writes of output variables sent through the
    command gate (the server's own writes, as Admin, go straight to the address space)."""

    def __init__(self, base: AttributeService, gate: CommandGate,
                 outputs: dict[ua.NodeId, str]) -> None:
        super().__init__(base._aspace)
        self.gate = gate
        self.outputs = outputs

    async def write(self, params: ua.WriteParameters,
                    user: User = User(role=UserRole.Admin)) -> list[ua.StatusCode]:  # noqa: B008
        """One status per item, the gate's for output values."""
        out: list[ua.StatusCode] = []
        for wv in params.NodesToWrite:
            point = self.outputs.get(wv.NodeId)
            if point is None or user.role is UserRole.Admin or (
                    wv.AttributeId != AttributeIds.Value):
                out += await super().write(ua.WriteParameters(NodesToWrite=[wv]), user)
                continue
            variant = wv.Value.Value if wv.Value is not None else None
            value: Any = variant.Value if isinstance(variant, ua.Variant) else None
            if not isinstance(variant, ua.Variant) or variant.VariantType not in _NUMERIC:
                value = str(getattr(variant, "VariantType", "none"))  # refused as a type
            try:
                await self.gate.set_output(user, point, value)
            except Answer as ans:
                out.append(status(ans.code))
                continue
            out.append(status(StatusCodes.Good))
        return out


class ReloadingValidator:
    """The certificate validator over the trust list, reloaded when the list changes (a
    client trusted by `pswd-edge opcua trust` while the node runs is accepted at once)."""

    def __init__(self, store: UserStore, guard: IntrusionDetector | None = None) -> None:
        self.users = store
        self.guard = guard
        self.trust = TrustStore([store.trusted_dir], [])
        self.validator = CertificateValidator(
            CertificateValidatorOptions.TRUSTED_VALIDATION
            | CertificateValidatorOptions.PEER_CLIENT, self.trust)
        self._stamp: tuple[float, int] | None = None
        self.refused = 0

    def _current(self) -> tuple[float, int]:
        d = self.users.trusted_dir
        files = list(d.iterdir()) if d.exists() else []
        return (max([d.stat().st_mtime, *(f.stat().st_mtime for f in files)])
                if d.exists() else 0.0, len(files))

    async def __call__(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        """Raise ServiceError (BadCertificateUntrusted, ...) unless `cert` is acceptable."""
        stamp = self._current()
        if stamp != self._stamp:
            self._stamp = stamp
            await self.trust.load()
            self.users.reload()
        try:
            await self.validator.validate(cert, app)
        except Exception:
            self.refused += 1
            subject = cert.subject.rfc4514_string()
            log.warning("OPC UA: client certificate %s refused", subject)
            if self.guard is not None:
                self.guard.record(f"opcua:app:{subject[:80]}", "auth_failure",
                                  "application certificate not trusted")
            raise


class OpcUaServer:
    """The node's OPC UA server: built at run(), stopped when cancelled."""

    def __init__(self, node: Node, config: OpcUaConfig, *, nodeset: Path | None = NODESET,
                 command_timeout_s: float = 5.0,
                 guard: IntrusionDetector | None = None,
                 verifier: Verifier | None = None) -> None:
        """`guard`: the node's intrusion detector (failed logins, untrusted certificates,
        refused signed commands); `verifier`: the node's one CommandVerifier, shared with
        MQTT and HTTPS (None: no command keys, SignedCommand refused)."""
        self.node = node
        self.guard = guard
        self.config = config
        self.nodeset = nodeset
        self.uri = application_uri(config, node.config.site, node.config.name)
        self.users = UserStore(config.state_dir)
        preload()
        self.tap = ScanTap(node.clock.wall)  # a scan observer while run() runs
        self.gate = CommandGate(node, self.tap, timeout_s=command_timeout_s,
                                require_signed=config.require_signed_commands)
        self.signed = SignedCommands(self.gate, verifier, guard=guard)
        if config.require_signed_commands and verifier is None:
            log.error("%s: [opcua] require_signed_commands is true but the node holds no "
                      "command keys: no output can be moved over OPC UA", node.config.name)
        self.server: Server | None = None
        self.space: AddressSpace | None = None
        self.binding: Binding | None = None
        self.alarms: AlarmBridge | None = None
        self.validator = ReloadingValidator(self.users, guard)
        self.cert: ServerCertFiles | None = None
        self.historized: list[str] = []
        self.started = threading.Event()  # set in the server's thread once it listens
        self.error = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._ended = threading.Event()
        self._failure: BaseException | None = None
        self._priority = 0

    def ensure_certificate(self) -> ServerCertFiles:
        """The server certificate, made at first start (site CA if configured)."""
        signer: Signer | None = None
        if self.config.ca_cert is not None and self.config.ca_key is not None:
            signer = load_signer(self.config.ca_cert, self.config.ca_key)
        hosts = sorted({"localhost", socket.gethostname()})
        ips = sorted({"127.0.0.1", *([self.config.host] if _is_ip(self.config.host)
                                     and self.config.host != "0.0.0.0" else [])})
        return ensure_server_cert(self.config.state_dir, self.uri,
                                  f"PSWD Edge {self.node.config.name}", hostnames=hosts,
                                  ip_addresses=ips, ca=signer)

    async def build(self) -> Server:
        """Everything but listening: certificate, policies, users, model, methods, alarms."""
        cfg, node = self.config, self.node
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.users.trusted_dir.mkdir(parents=True, exist_ok=True)
        server = Server(user_manager=RoleUserManager(self.users,
                                                     allow_anonymous=cfg.allow_anonymous,
                                                     guard=self.guard))
        server.iserver.bind_condition_methods = True  # ConditionRefresh
        # A controller serves a few BMS clients: floods are refused, not served.
        server.iserver.max_connections = cfg.max_connections
        server.iserver.max_pending_activation_seconds = 10.0
        server.iserver.history_manager.set_storage(storage(cfg.state_dir))
        await server.init()
        server.set_endpoint(cfg.endpoint)
        server.set_server_name(f"PSWD Edge {node.config.name}")
        server.product_uri = "urn:pswd-edge"
        server.manufacturer_name = "PSWD Edge"
        server.application_type = ua.ApplicationType.Server
        await server.set_application_uri(self.uri)
        self.cert = self.ensure_certificate()
        await server.load_certificate(str(self.cert.cert))
        await server.load_private_key(str(self.cert.key))
        server.set_security_policy([getattr(ua.SecurityPolicyType, s) for s in cfg.security],
                                   permission_ruleset=SessionRoles())
        tokens: list[type] = [ua.UserNameIdentityToken, ua.X509IdentityToken]
        if cfg.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        server.set_certificate_validator(self.validator)
        models = {d.name: d.io_map.model for d in node.config.devices}
        loops = sorted(getattr(node.manual.controls, "loops", None) or {})
        space = await build(server, node.config.name, node.image, models, self.nodeset, loops)
        server.iserver.attribute_service = GatedWrites(server.iserver.attribute_service,
                                                       self.gate, space.outputs)
        for name, handler in MethodHandlers(self.gate, self.signed).table().items():
            server.link_method(space.methods[name], handler)
        alarms = AlarmBridge(server, node, space.controller, space.ns, space.points)
        await alarms.setup()
        server.iserver.isession.add_method_callback(
            nodeid(ObjectIds.AcknowledgeableConditionType_Acknowledge), alarms.acknowledge)
        points = (list(cfg.history) if cfg.history is not None
                  else key_points(node.image, node.safety.monitors))
        self.historized = await historize(server, points, space.points, cfg.history_hours)
        # the clients' subscriptions on top of the server's own (history keeps one)
        server.iserver.max_subscriptions = (
            len(server.iserver.subscription_service.subscriptions) + cfg.max_subscriptions)
        self.server, self.space, self.alarms = server, space, alarms
        self.binding = Binding(server, self.tap, space.points, node.image, space.derived,
                               every_scan=node.config.scan_period_s >= MIN_POLL_S)
        return server

    def start(self) -> None:
        """Start the server's thread now (idempotent): it builds the address space and
        listens. run() calls it; a caller that wants the build paid before the node scans
        (the demo) calls it first and waits for `started`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name=f"opcua-{self.node.config.name}",
                                        daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # raised again by run()
            self.error = self.error or f"{type(exc).__name__}: {exc}"
            self._failure = exc
        finally:
            self._ended.set()

    async def run(self) -> None:
        """Serve until cancelled. The server runs in its own thread and event loop: building
        the address space (the NodeSet import alone takes a second) and serving clients never
        hold up the scan's loop; only the scan tap crosses over. Under a real-time node the
        server's thread runs SCHED_FIFO one below the scan: never preempted by ordinary
        processes while it holds the interpreter's lock the scan waits for."""
        observers = self.node.engine.observers
        observers.append(self.tap)  # read-only, after the outputs are flushed
        scheduling = current_scheduling()
        if scheduling is not None and scheduling[0] == getattr(os, "SCHED_FIFO", -1):
            self._priority = max(1, scheduling[1] - 1)
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._apply_priority)
        self.start()
        try:
            while not self._ended.is_set():  # cheap: the node's loop looks 5 times a second
                await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            self.stop()
            if self._thread is not None:
                await asyncio.to_thread(self._thread.join, 10.0)
            raise
        finally:
            if self.tap in observers:
                observers.remove(self.tap)  # a rebuilt server brings its own
        if self._failure is not None:
            raise RuntimeError(f"OPC UA server stopped: {self.error}") from self._failure

    def _apply_priority(self) -> None:
        """In the server's thread: take the priority run() chose (if any)."""
        if self._priority:
            why = apply_realtime_priority(self._priority)
            if why:
                log.warning("OPC UA server thread: SCHED_FIFO %d not applied: %s",
                            self._priority, why)

    def stop(self) -> None:
        """Ask the server's thread to stop (from any thread)."""
        self._stop_requested = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested:
            return
        # The address space is tens of thousands of objects made at once: with the collector
        # on, its full passes over them stall every thread (the scan's too) for 200-400 ms
        # here. Off while building, then the whole lot frozen out of its sight for good.
        collecting = gc.isenabled()
        gc.disable()
        try:
            server = await self.build()
            await server.start()
            # An unsecured channel (opened for GetEndpoints) gets the discovery-only rules:
            # a factory for it, appended after start so it adds no None endpoint.
            server._policies.append(SecurityPolicyFactory(
                SecurityPolicyNone, ua.MessageSecurityMode.None_,
                permission_ruleset=DiscoveryOnly()))  # type: ignore[no-untyped-call]
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("OPC UA server of %s failed to start: %s", self.node.config.name,
                      self.error)
            raise
        finally:
            gc.freeze()
            if collecting:
                gc.enable()
        log.info("OPC UA server of %s at %s (%s), certificate %s", self.node.config.name,
                 self.config.endpoint, ", ".join(self.config.security),
                 "self-signed" if self.cert and self.cert.signed_by == "self"
                 else f"signed by {self.cert.signed_by if self.cert else '?'}")
        self.tap.attach(self._loop)
        self._apply_priority()
        follower = asyncio.create_task(self._follow_scans())
        self.started.set()
        try:
            await self._stopping.wait()
        finally:
            self.tap.attach(None)
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            with contextlib.suppress(Exception):
                await server.stop()

    async def _follow_scans(self) -> None:
        binding, alarms = self.binding, self.alarms
        assert binding is not None and alarms is not None
        period = max(self.node.config.scan_period_s, MIN_POLL_S)
        stats_due = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            if loop.time() >= stats_due:
                stats_due = loop.time() + 1.0
                with contextlib.suppress(Exception):
                    await self._controller_vars()
            try:
                if await binding.follow():
                    await alarms.refresh()
            except Exception:  # one bad write must not end the server: log, go on
                log.exception("OPC UA: updating the address space failed")

    async def _controller_vars(self) -> None:
        """The controller object's scan, watchdog and trip variables (once a second)."""
        space, server = self.space, self.server
        if space is None or server is None or not space.controller_vars:
            return
        node = self.node
        stats = node.engine.stats.snapshot()
        safety = node.safety.get_status()
        tripped = node.watchdog.tripped
        latched = sorted(set(safety["latched"]))
        values: dict[str, ua.Variant] = {
            "ScanPeriod": ua.Variant(node.config.scan_period_s * 1000, ua.VariantType.Double),
            "ScanCount": ua.Variant(int(stats["cycles"]), ua.VariantType.UInt64),
            "ExecTimeP99": ua.Variant(float(stats["exec_ms"]["p99"]), ua.VariantType.Double),
            "JitterP99": ua.Variant(float(stats["jitter_ms"]["p99"]), ua.VariantType.Double),
            "Overruns": ua.Variant(int(stats["overruns"]), ua.VariantType.UInt64),
            "Mode": ua.Variant("SafeImage" if tripped else "Disconnected"
                               if getattr(node, "links_cut", "") else "Running",
                               ua.VariantType.String),
            "WatchdogTripped": ua.Variant(tripped, ua.VariantType.Boolean),
            "SafeImageActive": ua.Variant(tripped or bool(safety["safe_image"]["engaged"]),
                                          ua.VariantType.Boolean),
            "ActiveTrips": ua.Variant(latched + (["watchdog"] if tripped else []),
                                      ua.VariantType.String),
        }
        for name, var in space.controller_vars.items():
            if name in values:
                await server.write_attribute_value(var, ua.DataValue(values[name]))
        snap = self.tap.latest
        if snap is not None:
            for device, var in space.comm_state.items():
                state = comm_state([s for n, s in snap.inputs.items()
                                    if n in node.image.inputs_info
                                    and node.image.inputs_info[n].device == device])
                await server.write_attribute_value(var, ua.DataValue(
                    ua.Variant(state, ua.VariantType.String)))
        blocks = getattr(node.manual.controls, "loops", None) or {}
        for loop, ids in space.loops.items():
            block = blocks.get(loop)
            top = block.get_status() if block is not None and hasattr(block, "get_status") else {}
            inner = top.get("loop")  # a block around a loop says it under "loop"
            st = {**top, **inner} if isinstance(inner, dict) else top
            mode = st.get("ControlMode", st.get("mode"))
            found = {"Mode": mode if isinstance(mode, str) else None,
                     "Setpoint": _number(st.get("SetPoint", st.get("setpoint"))),
                     "ProcessValue": _number(top.get("pv", st.get("pv"))),
                     "Output": _number(st.get("output"))}
            for name, var in ids.items():
                value = found.get(name)
                if value is not None:
                    vt = ua.VariantType.String if name == "Mode" else ua.VariantType.Double
                    await server.write_attribute_value(var, ua.DataValue(ua.Variant(value, vt)))

    def get_status(self) -> dict[str, Any]:
        """Endpoint, security, certificate, users, binding, commands, alarms, history."""
        space = self.space
        return {
            "endpoint": self.config.endpoint, "running": self.started.is_set(),
            "error": self.error, "security": list(self.config.security),
            "application_uri": self.uri,
            "certificate": None if self.cert is None else {
                "path": str(self.cert.cert), "signed_by": self.cert.signed_by},
            "anonymous": self.config.allow_anonymous,
            "users": len(self.users.users()), "certificates": len(self.users.certificates()),
            "refused_certificates": self.validator.refused,
            "model": None if space is None else {"typed": space.typed,
                                                  "missing_types": space.missing_types},
            "scan_tap": self.tap.get_status(),
            "binding": None if self.binding is None else self.binding.get_status(),
            "commands": self.gate.get_status(),
            "signed_commands": {**self.signed.get_status(),
                                "required": self.config.require_signed_commands,
                                "keys": self.signed.verifier is not None},
            "alarms": None if self.alarms is None else self.alarms.get_status(),
            "history": self.historized,
        }


# Modules asyncua imports only when a server starts: the standard address space alone is 20
# generated modules whose unmarshalling holds the interpreter's lock in C for 100-300 ms at a
# time. Imported with the server object (by the assembler, before the node scans), not in the
# server's thread while the scan runs (measured: 3-4 overruns of 120-330 ms at start).
PRELOAD = ("asyncua.server.standard_address_space.standard_address_space",
           "asyncua.ua.relative_path", "anyio.to_thread", "anyio.streams.memory",
           "anyio._backends._asyncio", "_strptime", "cryptography.hazmat.backends.openssl")


def preload() -> None:
    """Import what starting a server would import (once per process)."""
    for name in PRELOAD:
        importlib.import_module(name)


def comm_state(samples: list[Any]) -> str:
    """FieldDeviceType.CommState from a device's input samples: Online when every one is
    usable, Offline when none is, Degraded between (a device with no inputs is Online)."""
    usable = sum(1 for s in samples if s.quality.usable)
    if usable == len(samples):
        return "Online"
    return "Offline" if usable == 0 else "Degraded"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def _is_ip(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True
