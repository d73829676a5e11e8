"""A node with its HTTPS server, as the assembler builds it, for the HTTPS tests: a real
TLS 1.3 server on 127.0.0.1 (certificates from security/pki.py), real JWTs from the site's
token keys, signed command envelopes, and an aiohttp client with a TLS 1.3 client context."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.node import Node
from edge_runtime.security.pki import PkiFiles, write_pki
from edge_runtime.security.signing import ROLES, generate_key, sign
from edge_runtime.security.tls import client_context
from edge_runtime.security.tokens import KeyRing
from edge_runtime.servers.https.service import HttpsService
from tests.conftest import free_port
from tests.fakes import FakeDevice

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
START_TIMEOUT_S = 10.0


def fakes(config, live, clock):  # type: ignore[no-untyped-def]
    return {d.name: FakeDevice(d, live) for d in config.devices}


@dataclass
class Env:
    """Keys and certificates of one test site."""

    root: Path
    pki: PkiFiles
    ring: KeyRing
    keys: dict[str, bytes]

    @classmethod
    def create(cls, root: Path) -> Env:
        pki = write_pki(root / "pki")
        ring = KeyRing.create(root / "token_keys")
        keys = {role: generate_key(root / "keys" / f"{role}.key") for role in ROLES}
        return cls(root, pki, ring, keys)

    def token(self, role: str, audience: str, *, ttl_s: float = 600.0,
              now: float | None = None) -> str:
        issued = now if now is not None else time.time()
        return self.ring.issuer(now=lambda: issued).issue(sub=f"test-{role}", role=role,
                                                          audience=audience, ttl_s=ttl_s)

    def https_overrides(self, **https: Any) -> dict[str, Any]:
        table = {"host": "127.0.0.1", "port": free_port(), "cert": str(self.pki.server_cert),
                 "key": str(self.pki.server_key), "ca": str(self.pki.ca),
                 "token_keys": str(self.root / "token_keys"),
                 "command_keys": str(self.root / "keys"),
                 "state_dir": str(self.root / "state"), **https}
        return {"https": table, "audit": {"path": str(self.root / "audit.log")}}

    def client_ssl(self, *, tls12: bool = False, cert: bool = True) -> Any:
        ctx = client_context(self.pki.ca, cert=self.pki.client_cert if cert else None,
                             key=self.pki.client_key if cert else None)
        if tls12:  # a client that speaks TLS 1.2 at most
            import ssl

            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def signed(self, role: str, node: str, kind: str, body: dict[str, Any],
               **kw: Any) -> dict[str, Any]:
        return sign(self.keys[role], node, kind, {"PSWD_version": "1.0", **body}, role=role,
                    now=kw.pop("now", time.time()), **kw)


@dataclass
class Running:
    """A running node and an HTTPS client for it."""

    node: Node
    env: Env
    session: aiohttp.ClientSession
    base: str

    @property
    def https(self) -> HttpsService:
        service = self.node.services["https"]
        assert isinstance(service, HttpsService)
        return service

    async def call(self, method: str, path: str, *, role: str | None = None,
                   token: str | None = None, body: Any = None, raw: bytes | None = None,
                   ) -> tuple[int, Any, dict[str, str]]:
        headers = {}
        if token is None and role is not None:
            token = self.env.token(role, self.node.config.name)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, self.base + path, data=data,
                                        headers=headers) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None, dict(resp.headers)

    async def until(self, predicate: Any, timeout_s: float = 5.0) -> None:
        """Wait (bounded) until predicate() holds, checking every scan or so."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout_s} s")
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(env: Env, example: str, *, overrides: dict[str, Any] | None = None,
                  drop: tuple[str, ...] = (), **https: Any) -> AsyncIterator[Running]:
    """The example node with [https] (and [audit]) running, and a client session; `drop`
    leaves keys out of [https]."""
    extra = env.https_overrides(**https)
    for key in drop:
        del extra["https"][key]
    extra["node"] = {"realtime_priority": 0}
    # The fake devices are never read: without a long start-up grace the safety layer would
    # judge them lost after its startup_s and drive their outputs safe mid-test (409s).
    extra["safety"] = {"startup_s": 600.0}
    for key, value in (overrides or {}).items():
        extra[key] = {**extra.get(key, {}), **value}
    node = assemble(load_node_config(EXAMPLES / example, overrides=extra),
                    driver_factory=fakes, watchdog_thread=False)
    task = asyncio.create_task(node.run())
    service = node.services["https"]
    assert isinstance(service, HttpsService)
    try:
        await asyncio.wait_for(service.started.wait(), START_TIMEOUT_S)
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=env.client_ssl())) as session:
            yield Running(node, env, session, f"https://127.0.0.1:{service.bound_port}")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
