"""A running node through its OPC UA server: Force, Release, ResetTrip and point reads.

The node's ControllerType object is Objects/PSWD/<node> in namespace http://pswd-edge.org/UA/,
with methods Force(Point, Value, ExpirySeconds, Reason), Release(Point) and
ResetTrip(Interlock), and each point at Objects/PSWD/<node>/<device>/<point>. The session is
Basic256Sha256 SignAndEncrypt with the technician's RSA certificate, which is also the user
identity (an X.509 token; the node maps a trusted certificate to its role), unless --user is
given (then the password comes from $PSWD_OPCUA_PASSWORD, never from the command line).
The server certificate must be issued by the site CA (--ca) or equal a pinned one
(--server-cert); anything else is refused before a secret crosses the wire. The node judges
every command (rights table, precedence, the safety layer: a force never beats a trip).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node as UaNode
from asyncua.crypto import uacrypto
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaStatusCodeError
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from pswd_commission.session import BAD_INPUT, FAILED, UNREACHABLE, CommissionError

NAMESPACE_URI = "http://pswd-edge.org/UA/"
PASSWORD_ENV = "PSWD_OPCUA_PASSWORD"
_CREDENTIALS = ("BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid")
_UNTRUSTED = ("BadCertificateUntrusted", "BadSecurityChecksFailed", "BadCertificateInvalid")


@dataclass(frozen=True, slots=True)
class NodeTarget:
    """Where and as whom."""

    url: str
    cert: Path  # the technician's RSA certificate (PEM or DER)
    key: Path
    ca: Path | None = None  # site CA the server certificate must chain to
    server_cert: Path | None = None  # or a pinned server certificate
    node: str = ""  # controller name ("" = the only one under PSWD)
    user: str = ""
    timeout_s: float = 5.0


def _load_cert(path: Path, what: str) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommissionError(f"{what} {path}: {exc.strerror or exc}") from None
    try:
        return (x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----")
                else x509.load_der_x509_certificate(data))
    except ValueError as exc:
        raise CommissionError(f"{what} {path}: not a certificate ({exc})") from None


def _uri(cert: x509.Certificate, path: Path) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return str(san.get_values_for_type(x509.UniformResourceIdentifier)[0])
    except (x509.ExtensionNotFound, IndexError):
        raise CommissionError(f"--cert {path}: no application URI (SubjectAltName URI); make "
                              f"one with pswd-commission provision --technician-cert") from None


def _status_name(exc: BaseException) -> str:
    if isinstance(exc, UaStatusCodeError):
        return ua.StatusCode(exc.code).name
    return type(exc).__name__


def explain(exc: BaseException, url: str) -> CommissionError:
    """One line for whatever went wrong talking to the node."""
    name = _status_name(exc)
    if isinstance(exc, CommissionError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return CommissionError(f"{url}: no answer (timeout)", UNREACHABLE)
    if isinstance(exc, ConnectionError | OSError) and not isinstance(exc, UaStatusCodeError):
        return CommissionError(f"cannot connect to {url}: {exc.strerror or exc}"
                               if isinstance(exc, OSError) else f"{url}: {exc}", UNREACHABLE)
    if name in _UNTRUSTED:
        return CommissionError(f"{url}: the node refused our certificate ({name}): have it "
                               f"trusted on the node first", BAD_INPUT)
    if name in _CREDENTIALS:
        return CommissionError(f"{url}: wrong credentials ({name})", BAD_INPUT)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    return CommissionError(f"{url}: {name}: {text}" if name not in text else f"{url}: {text}",
                           FAILED)


class NodeSession:
    """An open session to a running node; use as `async with NodeSession(target) as s:`."""

    def __init__(self, target: NodeTarget) -> None:
        self.target = target
        self.client: Client | None = None
        self.ns = 0
        self._controller: UaNode | None = None
        self.identity = ""

    async def __aenter__(self) -> NodeSession:
        try:
            await self._open()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
                raise
            raise explain(exc, self.target.url) from None
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _server_cert(self, client: Client) -> bytes:
        t = self.target
        pinned = None if t.server_cert is None else _load_cert(t.server_cert, "--server-cert")
        endpoints = await asyncio.wait_for(client.connect_and_get_server_endpoints(),
                                           t.timeout_s)
        offered = [e for e in endpoints if e.SecurityPolicyUri == SecurityPolicyBasic256Sha256.URI
                   and e.SecurityMode == ua.MessageSecurityMode.SignAndEncrypt]
        if not offered:
            raise CommissionError(f"{t.url}: no Basic256Sha256 SignAndEncrypt endpoint")
        der = bytes(offered[0].ServerCertificate)
        server = x509.load_der_x509_certificate(der)
        if pinned is not None:
            if pinned.fingerprint(hashes.SHA256()) != server.fingerprint(hashes.SHA256()):
                raise CommissionError(f"{t.url}: untrusted server certificate (not the one "
                                      f"pinned in {t.server_cert})")
        elif t.ca is not None:
            ca = _load_cert(t.ca, "--ca")
            try:
                server.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                raise CommissionError(f"{t.url}: untrusted server certificate "
                                      f"({server.subject.rfc4514_string()} is not issued by "
                                      f"the site CA {t.ca})") from None
        else:
            raise CommissionError("give --ca (the site CA) or --server-cert (a pinned "
                                  "certificate): the node's certificate must be checked")
        return server.public_bytes(serialization.Encoding.DER)

    async def _open(self) -> None:
        t = self.target
        cert = _load_cert(t.cert, "--cert")
        cert_is_der = not t.cert.read_bytes().lstrip().startswith(b"-----")
        if not t.key.exists():
            raise CommissionError(f"--key {t.key}: not found")
        client = Client(t.url, timeout=t.timeout_s)
        self.client = client
        client.application_uri = _uri(cert, t.cert)
        server_der = await self._server_cert(client)
        # asyncua picks PEM or DER by file extension: say which, whatever the file is named.
        fmt = "der" if cert_is_der else "pem"
        await client.set_security(SecurityPolicyBasic256Sha256,
                                  uacrypto.CertProperties(str(t.cert), fmt),
                                  uacrypto.CertProperties(str(t.key), "pem"),
                                  server_certificate=server_der,
                                  mode=ua.MessageSecurityMode.SignAndEncrypt)
        if t.user:
            password = os.environ.get(PASSWORD_ENV)
            if not password:
                raise CommissionError(f"--user {t.user}: set ${PASSWORD_ENV} (passwords are "
                                      f"never taken on the command line)")
            client.set_user(t.user)
            client.set_password(password)
            self.identity = f"user {t.user}"
        else:
            await client.load_client_certificate(str(t.cert), fmt)
            await client.load_private_key(t.key, extension="pem")
            self.identity = ("certificate "
                             + cert.fingerprint(hashes.SHA256()).hex(":").upper()[:23] + "...")
        await asyncio.wait_for(client.connect(), t.timeout_s)
        self.ns = await client.get_namespace_index(NAMESPACE_URI)

    async def close(self) -> None:
        """End the session (quietly: the outcome is already known)."""
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):  # a failed goodbye changes nothing
                await asyncio.wait_for(client.disconnect(), 2.0)

    async def controller(self) -> UaNode:
        """Objects/PSWD/<node>."""
        if self._controller is not None:
            return self._controller
        assert self.client is not None
        root = await self._child(self.client.nodes.objects, "PSWD")
        if self.target.node:
            self._controller = await self._child(root, self.target.node)
        else:
            kids = await root.get_children()
            if len(kids) != 1:
                raise CommissionError(f"{self.target.url}: {len(kids)} controllers under PSWD; "
                                      f"name one with --node")
            self._controller = kids[0]
        return self._controller

    async def _child(self, parent: UaNode, name: str) -> UaNode:
        try:
            return await parent.get_child(ua.QualifiedName(name, self.ns))
        except UaStatusCodeError:
            raise CommissionError(f"{self.target.url}: no {name!r} under "
                                  f"{(await parent.read_browse_name()).Name}") from None

    async def _call(self, method: str, *args: ua.Variant) -> Any:
        ctrl = await self.controller()
        try:
            return await ctrl.call_method(ua.QualifiedName(method, self.ns), *args)
        except UaStatusCodeError as exc:
            raise explain(exc, self.target.url) from None

    async def force(self, point: str, value: float, expiry_s: float, reason: str) -> None:
        """Force(Point, Value, ExpirySeconds, Reason); CommissionError with the node's answer."""
        await self._call("Force", ua.Variant(point, ua.VariantType.String),
                         ua.Variant(float(value), ua.VariantType.Double),
                         ua.Variant(float(expiry_s), ua.VariantType.Double),
                         ua.Variant(reason, ua.VariantType.String))

    async def release(self, point: str) -> None:
        """Release(Point)."""
        await self._call("Release", ua.Variant(point, ua.VariantType.String))

    async def reset(self, interlock: str) -> list[str]:
        """ResetTrip(Interlock) -> the latches reset."""
        out = await self._call("ResetTrip", ua.Variant(interlock, ua.VariantType.String))
        return [str(x) for x in out] if isinstance(out, list) else ([] if out is None
                                                                     else [str(out)])

    async def holding(self) -> list[str]:
        """What holds outputs against commands now: the latched trips (ActiveTrips) and the
        safe image (SafeImageActive); [] when the controller shows neither."""
        ctrl = await self.controller()
        out: list[str] = []
        for name in ("ActiveTrips", "SafeImageActive"):
            try:
                node = await ctrl.get_child(ua.QualifiedName(name, self.ns))
                value = await node.read_value()
            except UaStatusCodeError:
                continue
            if name == "ActiveTrips" and value:
                out += [f"trip {t}" for t in value]
            elif name == "SafeImageActive" and value:
                out.append("the safe image")
        return out

    async def read(self, point: str) -> float | None:
        """A point's value as the node's image has it (None when bad)."""
        device, _, name = point.partition(".")
        node = await self._child(await self._child(await self.controller(), device), name)
        try:
            dv = await node.read_data_value(raise_on_bad_status=False)
        except UaStatusCodeError as exc:
            raise explain(exc, self.target.url) from None
        if dv.StatusCode is None or not dv.StatusCode.is_good() or dv.Value is None \
                or dv.Value.Value is None:
            return None
        return float(dv.Value.Value)
