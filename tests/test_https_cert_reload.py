"""The HTTPS listener takes a renewed certificate and a new CRL without a restart (issue 10
item 1: rotation before expiry, revocation checked by every server of ours): its CertWatcher
re-loads the live TLS context, and each reload is a node event the audit log keeps."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from edge_runtime.security.ca import SiteCA
from edge_runtime.security.tls import client_context
from tests.https_env import Env, running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(40)]


async def served_serial(port: int, ctx: ssl.SSLContext) -> int:
    """The serial of the certificate the listener presents now (a fresh handshake)."""
    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 5)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()
        await writer.wait_closed()


async def refused(port: int, ctx: ssl.SSLContext) -> bool:
    """True when the server ends a TLS 1.3 session for this client (a revoked certificate
    fails after the handshake, on the first read)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx), 5)
        writer.write(b"GET /PSWD/power/realtime HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(100), 5)
        writer.close()
        return data == b""
    except (ssl.SSLError, ConnectionError):
        return True


async def test_a_renewed_certificate_and_a_new_crl_are_served_without_a_restart(
        tmp_path: Path) -> None:
    env = Env.create(tmp_path)
    ca = SiteCA.init(tmp_path / "site_ca")
    server = ca.issue_node("rack-01", tmp_path / "node", client=False,
                           dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    tech = ca.issue_node("technician", tmp_path / "clients", server=False)
    crl = ca.publish_crl()
    files = {"cert": str(server.cert), "key": str(server.key), "ca": str(ca.cert_path),
             "crl": str(crl)}
    ctx = client_context(ca.cert_path, cert=tech.cert, key=tech.key)
    async with running(env, "rack.toml", **files) as r:
        https = r.https
        assert https.watcher is not None
        port = https.bound_port
        assert port is not None
        first = await served_serial(port, ctx)
        assert first == server.serial

        renewed = ca.renew(server.cert, server.key)
        assert renewed.serial != first
        assert https.watcher.check()  # what the service's watch task does every watch_s
        assert await served_serial(port, ctx) == renewed.serial

        assert not await refused(port, ctx)
        ca.revoke(tech.cert, reason="key_compromise")
        assert https.watcher.check()
        assert await refused(port, ctx)  # the technician's revoked certificate, live

        reloads = [e for e in r.node.events.recent(50) if e.source == "https.certs"]
        assert [e.message for e in reloads] == ["TLS cert reloaded without a restart",
                                                "TLS crl reloaded without a restart"]
        assert https.get_status()["certs"]["reloads"] == 2
