"""TLS 1.3-only contexts for our servers (HTTPS) and clients (MQTT, HTTPS), with CRL checking.

Every context made here refuses TLS 1.2 and below. A server asks for a client certificate:
`client_cert="required"` refuses a client without one in the handshake (the TLS 1.3 alert
"certificate required"); `"optional"` accepts it and leaves the decision to the endpoint
(an HTTPS server may serve a public read without a certificate and demand one for a command:
`peer_certificate(transport)` says what the client presented, already verified against the CA);
`"none"` never asks. A certificate that is presented is always verified against the site CA and,
with a CRL, refused when revoked (a CRL is then required: a missing one fails every handshake,
the safe way round).

Certificates rotate without a restart: `CertWatcher` re-loads the certificate chain (and the
CRL) into the live context when the files change; connections already open keep their session,
new ones get the new certificate.

    ctx = server_context(cert, key, ca, crl=crl)         # HTTPS server, client cert required
    ctx = client_context(ca, cert=cert, key=key)          # MQTT / HTTPS client of ours
    watcher = CertWatcher(ctx, cert, key, crl=crl)
    watcher.check()                                       # call every few seconds; True on reload
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

TLS_MIN = ssl.TLSVersion.TLSv1_3
ClientCert = Literal["required", "optional", "none"]
_VERIFY_MODES: dict[str, ssl.VerifyMode] = {"required": ssl.CERT_REQUIRED,
                                            "optional": ssl.CERT_OPTIONAL,
                                            "none": ssl.CERT_NONE}


def _pin_tls13(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = TLS_MIN
    ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def _load_crl(ctx: ssl.SSLContext, crl: Path) -> None:
    """Add `crl` (PEM) to the context's store; OpenSSL then uses the newest CRL of the CA."""
    if not crl.exists():
        raise FileNotFoundError(f"{crl}: CRL file missing (pswd-edge certs crl publishes one)")
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.load_verify_locations(cafile=str(crl))


def server_context(cert: Path, key: Path, ca: Path, crl: Path | None = None, *,
                   client_cert: ClientCert = "required") -> ssl.SSLContext:
    """A TLS 1.3-only server context with the node's certificate, verifying clients against `ca`."""
    if client_cert not in _VERIFY_MODES:
        raise ValueError(f"client_cert: {client_cert!r} is not one of "
                         f"{', '.join(_VERIFY_MODES)}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _pin_tls13(ctx)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(cafile=str(ca))
    ctx.verify_mode = _VERIFY_MODES[client_cert]
    if crl is not None:
        _load_crl(ctx, Path(crl))
    return ctx


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None,
                   crl: Path | None = None, *, check_hostname: bool = True) -> ssl.SSLContext:
    """A TLS 1.3-only client context trusting `ca` only, presenting `cert` when given."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs its key (give both or neither)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _pin_tls13(ctx)
    ctx.load_verify_locations(cafile=str(ca))
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    if crl is not None:
        _load_crl(ctx, Path(crl))
    return ctx


def peer_certificate(transport: Any) -> dict[str, Any] | None:
    """The verified certificate a TLS peer presented (ssl's dict form), or None.

    `transport` is an asyncio transport (aiohttp: `request.transport`), an SSLSocket or an
    SSLObject."""
    obj = transport.get_extra_info("ssl_object") if hasattr(transport, "get_extra_info") \
        else transport
    if obj is None:
        return None
    cert = obj.getpeercert()
    return cert or None


def peer_common_name(transport: Any) -> str | None:
    """The common name of the verified peer certificate, or None without one."""
    cert = peer_certificate(transport)
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class CertWatcher:
    """Re-loads a live context's certificate chain and CRL when their files change."""

    def __init__(self, ctx: ssl.SSLContext, cert: Path, key: Path, *, crl: Path | None = None,
                 on_reload: Callable[[str], None] | None = None) -> None:
        """`on_reload(what)` is told "cert", "crl" or "error: ..." (an event for the audit log)."""
        self.ctx, self.cert, self.key, self.crl = ctx, Path(cert), Path(key), crl
        self.on_reload = on_reload
        self._chain = (_stamp(self.cert), _stamp(self.key))
        self._crl = _stamp(crl)
        self.reloads = 0
        self.errors = 0
        self.last_error = ""

    def check(self) -> bool:
        """Reload what changed; True if something was reloaded. A half-written pair (new cert,
        old key) fails to load: the context keeps its old chain and the next check retries."""
        changed = False
        chain = (_stamp(self.cert), _stamp(self.key))
        if chain != self._chain:
            try:
                self.ctx.load_cert_chain(str(self.cert), str(self.key))
            except (ssl.SSLError, OSError) as exc:
                self._error(f"certificate reload failed, keeping the old one: {exc}")
            else:
                self._chain = chain
                changed = True
                self._tell("cert")
        if self.crl is not None:
            stamp = _stamp(self.crl)
            if stamp is not None and stamp != self._crl:
                try:
                    _load_crl(self.ctx, self.crl)
                except (ssl.SSLError, OSError) as exc:
                    self._error(f"CRL reload failed, keeping the old one: {exc}")
                else:
                    self._crl = stamp
                    changed = True
                    self._tell("crl")
        if changed:
            self.reloads += 1
        return changed

    def _error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        log.error("%s", message)
        if self.on_reload is not None:
            self.on_reload(f"error: {message}")

    def _tell(self, what: str) -> None:
        log.info("TLS %s reloaded from %s", what, self.crl if what == "crl" else self.cert)
        if self.on_reload is not None:
            self.on_reload(what)

    async def run(self, interval_s: float = 5.0) -> None:
        """Check every `interval_s` until cancelled."""
        while True:
            self.check()
            await asyncio.sleep(interval_s)

    def get_status(self) -> dict[str, Any]:
        """Reload counts and the last error, for the node's status."""
        return {"cert": str(self.cert), "crl": str(self.crl) if self.crl else None,
                "reloads": self.reloads, "errors": self.errors, "last_error": self.last_error}
