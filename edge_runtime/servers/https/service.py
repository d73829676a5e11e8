"""The HTTPS server as a node service: `await run()` beside the scan, `get_status()`.

It listens with the TLS 1.3-only context the assembler made (security/tls.py), runs the
100 ms power sampler of /PSWD/power/realtime, and stops cleanly when cancelled (the node
stops its services after the plant is safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from aiohttp import web

from edge_runtime.security.tls import CertWatcher
from edge_runtime.servers.https.app import HttpsApi

log = logging.getLogger(__name__)


class HttpsService:
    """One node's HTTPS server."""

    def __init__(self, api: HttpsApi, *, host: str, port: int,
                 ssl_context: ssl.SSLContext, watcher: CertWatcher | None = None,
                 watch_s: float = 5.0) -> None:
        """`watcher` re-loads the context's certificate and CRL when their files change
        (a renewal by CertMonitor or `pswd-edge certs rotate`, a new CRL): checked every
        `watch_s` seconds, so neither needs a restart."""
        if ssl_context.minimum_version < ssl.TLSVersion.TLSv1_3:
            raise ValueError("the HTTPS server takes TLS 1.3 only (security/tls.py "
                             "server_context)")
        self.api = api
        self.host = host
        self.port = port  # 0: any free port; `bound_port` says which once started
        self.ssl_context = ssl_context
        self.watcher = watcher
        self.watch_s = watch_s
        self.bound_port: int | None = None
        self.started = asyncio.Event()
        self.error = ""

    async def run(self) -> None:
        """Serve until cancelled."""
        runner = web.AppRunner(self.api.application(), access_log=None,
                               handle_signals=False)
        await runner.setup()
        sampler = asyncio.create_task(self.api.p.history.run(), name="https-power-sampler")
        watching = (asyncio.create_task(self.watcher.run(self.watch_s), name="https-certs")
                    if self.watcher is not None else None)
        try:
            site = web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context,
                               reuse_address=True)
            try:
                await site.start()
            except OSError as exc:
                self.error = f"cannot listen on {self.host}:{self.port}: {exc}"
                raise
            addresses = runner.addresses
            self.bound_port = int(addresses[0][1]) if addresses else self.port
            log.info("HTTPS server on %s:%s (TLS 1.3)", self.host, self.bound_port)
            self.started.set()
            await asyncio.Event().wait()
        finally:
            for task in (sampler, watching):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await runner.cleanup()

    def get_status(self) -> dict[str, Any]:
        """Where it listens and what it answered."""
        return {"listening": self.started.is_set(), "host": self.host,
                "port": self.bound_port or self.port, "error": self.error,
                "certs": self.watcher.get_status() if self.watcher is not None else None,
                **self.api.get_status()}
