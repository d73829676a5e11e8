"""TLS refusals (security/tls.py): a TLS 1.2 client, a client without a certificate, a client of
another CA and a revoked client are refused, checked with Python's ssl and with `openssl
s_client`, against a server built from our contexts and against a real Mosquitto."""

from __future__ import annotations

import contextlib
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_runtime.security import pki
from edge_runtime.security.ca import SiteCA
from edge_runtime.security.tls import (
    CertWatcher,
    client_context,
    peer_common_name,
    server_context,
)
from tests.mosquitto import Broker

OPENSSL = shutil.which("openssl")


@dataclass
class Outcome:
    """What the server saw of one connection: the client's common name, or the error."""

    ok: bool
    detail: str


class TlsServer:
    """A TLS server on 127.0.0.1 built from one of our contexts; answers b"OK <cn>\\n"."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.outcomes: queue.Queue[Outcome] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return  # closed: the test is over
            raw.settimeout(5)
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as tls:
                    cn = peer_common_name(tls)
                    tls.sendall(f"OK {cn}\n".encode())
                    self.outcomes.put(Outcome(True, f"{tls.version()} {cn}"))
                    with contextlib.suppress(OSError):
                        tls.recv(1)  # until the client closes: no EOF under its feet
            except (ssl.SSLError, OSError) as exc:
                raw.close()
                self.outcomes.put(Outcome(False, str(exc)))

    def outcome(self) -> Outcome:
        """The next connection's outcome (bounded wait)."""
        return self.outcomes.get(timeout=10)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self.thread.join(timeout=5)


@dataclass
class Site:
    ca: SiteCA
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture
def site(tmp_path: Path) -> Site:
    ca = SiteCA.init(tmp_path / "ca", name="Test site CA")
    srv = ca.issue_node("localhost", tmp_path / "srv", server=True, client=False,
                        dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    cli = ca.issue_node("operator-1", tmp_path / "cli", server=False, client=True)
    return Site(ca, srv.cert, srv.key, cli.cert, cli.key)


@pytest.fixture
def server(site: Site) -> Iterator[TlsServer]:
    srv = TlsServer(server_context(site.server_cert, site.server_key, site.ca.cert_path,
                                   crl=site.ca.crl_path))
    yield srv
    srv.close()


def _connect(ctx: ssl.SSLContext, port: int) -> bytes:
    """Connect, then read the greeting: a TLS 1.3 refusal of the client's certificate comes
    after the client's side of the handshake, on the first read."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        return tls.recv(64)


def _python_client(site: Site, *, cert: bool = True, tls12: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(site.ca.cert_path))
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(site.client_cert, site.client_key)
    return ctx


def test_python_clients(site: Site, server: TlsServer) -> None:
    # Our own client context, with the certificate: accepted, the server knows who it is.
    ours = client_context(site.ca.cert_path, site.client_cert, site.client_key,
                          crl=site.ca.crl_path)
    assert _connect(ours, server.port) == b"OK operator-1\n"
    assert server.outcome() == Outcome(True, "TLSv1.3 operator-1")
    # TLS 1.2, even with a good certificate.
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        _connect(_python_client(site, tls12=True), server.port)
    assert "UNSUPPORTED_PROTOCOL" in server.outcome().detail
    # TLS 1.3 without a certificate.
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
        _connect(_python_client(site, cert=False), server.port)
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in server.outcome().detail


def test_foreign_and_revoked_clients(site: Site, server: TlsServer, tmp_path: Path) -> None:
    foreign_ca = pki.make_ca("Another CA")
    foreign = pki.issue(foreign_ca, "intruder", client=True)
    ctx = ssl.create_default_context(cafile=str(site.ca.cert_path))
    ctx.load_cert_chain(pki.write_pem(tmp_path / "f.crt", foreign.cert_pem),
                        pki.write_pem(tmp_path / "f.key", foreign.key_pem, private=True))
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        _connect(ctx, server.port)
    assert "certificate verify failed" in server.outcome().detail


def test_revocation_and_rotation_reach_a_live_server(site: Site, tmp_path: Path) -> None:
    ctx = server_context(site.server_cert, site.server_key, site.ca.cert_path,
                         crl=site.ca.crl_path)
    events: list[str] = []
    watcher = CertWatcher(ctx, site.server_cert, site.server_key, crl=site.ca.crl_path,
                          on_reload=events.append)
    srv = TlsServer(ctx)
    try:
        client = _python_client(site)
        assert _connect(client, srv.port) == b"OK operator-1\n"
        srv.outcome()
        assert not watcher.check()
        site.ca.revoke(site.client_cert, reason="key_compromise")
        assert watcher.check() and events == ["crl"]
        with pytest.raises(ssl.SSLError, match="REVOKED"):
            _connect(client, srv.port)
        assert "revoked" in srv.outcome().detail
        # Rotation: the node's certificate renewed on disk, the running server serves it.
        before = _served_serial(site, srv.port)
        site.ca.issue_node("localhost", site.server_cert.parent, server=True, client=False,
                           dns_names=["localhost"], ip_addresses=["127.0.0.1"])
        assert watcher.check() and events[-1] == "cert"
        after = _served_serial(site, srv.port)
        assert before != after
    finally:
        srv.close()


def _served_serial(site: Site, port: int) -> bytes:
    """The certificate the server presents (a fresh client, a still-valid client cert)."""
    other = site.ca.issue_node("operator-2", site.client_cert.parent.parent / "cli2",
                               server=False, client=True)
    ctx = client_context(site.ca.cert_path, other.cert, other.key)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
        tls.recv(64)
    assert der is not None
    return der


def test_optional_client_certificate_lets_the_endpoint_decide(site: Site) -> None:
    ctx = server_context(site.server_cert, site.server_key, site.ca.cert_path,
                         crl=site.ca.crl_path, client_cert="optional")
    srv = TlsServer(ctx)
    try:
        assert _connect(_python_client(site, cert=False), srv.port) == b"OK None\n"
        assert _connect(_python_client(site), srv.port) == b"OK operator-1\n"
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
            _connect(_python_client(site, tls12=True), srv.port)
    finally:
        srv.close()
    with pytest.raises(ValueError, match="client_cert"):
        server_context(site.server_cert, site.server_key, site.ca.cert_path,
                       client_cert="maybe")  # type: ignore[arg-type]


def test_our_client_refuses_a_tls12_server(site: Site) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(site.server_cert, site.server_key)
    srv = TlsServer(ctx)
    try:
        ours = client_context(site.ca.cert_path, site.client_cert, site.client_key)
        with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL"):
            _connect(ours, srv.port)
    finally:
        srv.close()


def _s_client(port: int, site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    """`openssl s_client`; give "-ign_eof" where the server is to end the connection (a
    refusal), or s_client may leave at its stdin's end before reading the alert."""
    if OPENSSL is None:
        pytest.fail("openssl is missing; install it: make peers (apt-get install -y openssl)",
                    pytrace=False)
    return subprocess.run([OPENSSL, "s_client", "-brief", "-connect", f"127.0.0.1:{port}",
                           "-CAfile", str(site.ca.cert_path), *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)


def _with_cert(site: Site) -> tuple[str, ...]:
    return ("-cert", str(site.client_cert), "-key", str(site.client_key))


def test_openssl_s_client_against_our_server(site: Site, server: TlsServer) -> None:
    ok = _s_client(server.port, site, *_with_cert(site))
    assert ok.returncode == 0, ok.stderr
    assert "Protocol version: TLSv1.3" in ok.stderr
    assert server.outcome().ok
    old = _s_client(server.port, site, "-tls1_2", *_with_cert(site))
    assert old.returncode != 0 and "alert protocol version" in old.stderr, old.stderr
    assert not server.outcome().ok
    anonymous = _s_client(server.port, site, "-ign_eof")
    assert "alert certificate required" in anonymous.stderr, anonymous.stderr
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in server.outcome().detail


def test_openssl_s_client_against_mosquitto(site: Site, tmp_path: Path) -> None:
    """Mosquitto with the site CA's certificates and its CRL: the same refusals, and a revoked
    client refused once the CRL is published and the broker has had a SIGHUP."""
    broker = Broker(tmp_path / "mosq")
    broker.config_path.write_text(broker.config_path.read_text() + "\n".join([
        f"cafile {site.ca.cert_path}", f"certfile {site.server_cert}",
        f"keyfile {site.server_key}", "tls_version tlsv1.3", "require_certificate true",
        "use_identity_as_username true", f"crlfile {site.ca.crl_path}", ""]))
    broker.start()
    try:
        ok = _s_client(broker.port, site, *_with_cert(site))
        assert ok.returncode == 0 and "Protocol version: TLSv1.3" in ok.stderr, ok.stderr
        old = _s_client(broker.port, site, "-tls1_2", *_with_cert(site))
        assert old.returncode != 0 and "alert protocol version" in old.stderr, old.stderr
        anonymous = _s_client(broker.port, site, "-ign_eof")
        assert "alert certificate required" in anonymous.stderr, anonymous.stderr
        # Revoked, and the broker told with SIGHUP (it re-reads its CRL; no restart).
        site.ca.revoke(site.client_cert)
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:  # the reload is logged as it starts: the first handshake may race it
            revoked = _s_client(broker.port, site, "-ign_eof", *_with_cert(site))
            if "alert certificate revoked" in revoked.stderr or time.monotonic() > deadline:
                break
        assert "Reloading config" in broker.log_tail()
        assert "alert certificate revoked" in revoked.stderr, revoked.stderr
        with pytest.raises(ssl.SSLError, match="REVOKED"):
            _connect(_python_client(site), broker.port)
    finally:
        broker.kill()
