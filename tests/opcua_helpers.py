"""Helpers for the OPC UA server tests: a node with its server, provisioned users and client
certificates (real RSA certificates, real asyncua server and clients on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import (
    SecurityPolicyAes256Sha256RsaPss,
    SecurityPolicyBasic256Sha256,
)

from edge_runtime.node import Node
from edge_runtime.security.opcua_certs import make_app_cert
from edge_runtime.security.pki import write_pem
from edge_runtime.servers.opcua.config import OpcUaConfig
from edge_runtime.servers.opcua.server import OpcUaServer
from edge_runtime.servers.opcua.users import UserStore
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
NPM = ROOT / "tests" / "npm"
NODE_OPCUA = NPM / "node_modules" / "node-opcua"
POLICIES = {"Basic256Sha256": SecurityPolicyBasic256Sha256,
            "Aes256Sha256RsaPss": SecurityPolicyAes256Sha256RsaPss}
SIGN_AND_ENCRYPT = ua.MessageSecurityMode.SignAndEncrypt
SIGN = ua.MessageSecurityMode.Sign
# Who the tests log in as: role of each user (passwords are made per test).
USERS = {"bms": "infrastructure_manager", "grid": "grid_operator", "watcher": "viewer",
         "tenant": "workload_operator"}


@dataclass(frozen=True, slots=True)
class ClientCert:
    """A client application certificate on disk (DER and PEM) with its key."""

    uri: str
    der: Path
    pem: Path
    key: Path


def client_cert(directory: Path, name: str) -> ClientCert:
    """A self-signed RSA-2048 client certificate for application URI urn:test:<name>."""
    uri = f"urn:test:{name}"
    made = make_app_cert(uri, name, client=True)
    return ClientCert(uri, write_pem(directory / f"{name}.der", made.cert_der),
                      write_pem(directory / f"{name}.pem", made.cert_pem),
                      write_pem(directory / f"{name}-key.pem", made.key_pem, private=True))


def expired_client_cert(directory: Path, name: str) -> ClientCert:
    """A client certificate like client_cert()'s that expired yesterday."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    fresh = make_app_cert(f"urn:test:{name}", name, client=True)
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(fresh.cert.subject)
               .issuer_name(fresh.cert.subject).public_key(fresh.key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=10))
               .not_valid_after(now - dt.timedelta(days=1)))
    for ext in fresh.cert.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    cert = builder.sign(fresh.key, hashes.SHA256())
    from cryptography.hazmat.primitives import serialization
    return ClientCert(f"urn:test:{name}",
                      write_pem(directory / f"{name}.der",
                                cert.public_bytes(serialization.Encoding.DER)),
                      write_pem(directory / f"{name}.pem",
                                cert.public_bytes(serialization.Encoding.PEM)),
                      write_pem(directory / f"{name}-key.pem", fresh.key_pem, private=True))


@dataclass(slots=True)
class Rig:
    """A node with its OPC UA server, users and client certificates."""

    node: Node
    server: OpcUaServer
    url: str
    tmp: Path
    passwords: dict[str, str] = field(default_factory=dict)
    trusted: ClientCert | None = None  # in the server's trust list (role infrastructure_manager)
    stranger: ClientCert | None = None  # not trusted

    @property
    def server_cert(self) -> Path:
        """The server's certificate (DER), made at first start."""
        assert self.server.cert is not None
        return self.server.cert.cert

    async def client(self, user: str | None = "bms", *, cert: ClientCert | None = None,
                     policy: str = "Basic256Sha256",
                     mode: ua.MessageSecurityMode = SIGN_AND_ENCRYPT,
                     password: str | None = None,
                     identity: ClientCert | None = None) -> Client:
        """A connected asyncua client: username token, or the `identity` certificate's token
        when `user` is None (anonymous when neither)."""
        cert = cert or self.trusted
        assert cert is not None
        c = Client(self.url, timeout=10)
        c.application_uri = cert.uri
        await c.set_security(POLICIES[policy], str(cert.der), str(cert.key),
                             server_certificate=str(self.server_cert), mode=mode)
        if user is not None:
            c.set_user(user)
            c.set_password(password if password is not None else self.passwords[user])
        elif identity is not None:  # an X509 user identity token (a certificate user)
            await c.load_client_certificate(str(identity.der))
            await c.load_private_key(identity.key)
        await c.connect()
        return c


def opcua_config(tmp: Path, **kw: Any) -> OpcUaConfig:
    """An [opcua] config on a free loopback port with its state under `tmp`."""
    return OpcUaConfig(state_dir=tmp / "opcua", host="127.0.0.1", port=free_port(), **kw)


def provision(state_dir: Path, tmp: Path) -> tuple[dict[str, str], ClientCert, ClientCert]:
    """Users of USERS with fresh passwords, one trusted and one untrusted client certificate."""
    store = UserStore(state_dir)
    passwords = {name: secrets.token_urlsafe(16) for name in USERS}
    for name, role in USERS.items():
        store.add_user(name, role, passwords[name])
    trusted = client_cert(tmp, "bms-client")
    store.trust("bms-client", "infrastructure_manager", trusted.pem.read_bytes())
    return passwords, trusted, client_cert(tmp, "stranger")


@contextlib.asynccontextmanager
async def serving(node: Node, tmp: Path, *, guard: Any = None, verifier: Any = None,
                  **kw: Any) -> AsyncIterator[Rig]:
    """Run `node` with an OPC UA server attached until the block ends (`guard`: an
    intrusion detector for the server, `verifier` a CommandVerifier, as the assembler hands
    it the node's)."""
    cfg = opcua_config(tmp, **kw)
    passwords, trusted, stranger = provision(cfg.state_dir, tmp)
    server = OpcUaServer(node, cfg, guard=guard, verifier=verifier)
    node.attach("opcua", server)
    runner = asyncio.create_task(node.run())
    try:
        deadline = time.monotonic() + 30
        while not server.started.is_set():
            if server.error or runner.done() or time.monotonic() > deadline:
                pytest.fail(f"OPC UA server did not start: {server.error or 'timeout'}")
            await asyncio.sleep(0.05)
        yield Rig(node, server, cfg.endpoint, tmp, passwords, trusted, stranger)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def wait_until(condition: Any, timeout: float, what: str) -> None:
    """Poll a condition with a bound (for state with no event to await)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def node_bin() -> str:
    """The `node` executable, and node-opcua installed; fails saying how to install them."""
    exe = shutil.which("node")
    if exe is None or not NODE_OPCUA.exists():
        pytest.fail("node-opcua interop needs Node.js and tests/npm/node_modules/node-opcua: "
                    "run `make peers` (tools/install-peers.sh)")
    return exe


def run_node_script(script: Path, env: dict[str, str],
                    timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a node-opcua client script; its stdout is JSON lines."""
    return subprocess.run([node_bin(), str(script)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=str(NPM), check=False)
