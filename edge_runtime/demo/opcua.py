"""The demo's OPC UA endpoint: the CDU node serves its plant to a BMS client.

Not the rack: it scans at 10 ms, and an OPC UA server shares its node's interpreter, whose
lock the scan then waits for (bench/opcua_items.py measures it; the demo's rack overran and its
battery let load edges through to the grid). The CDU scans at 100 ms with room to spare.
Its `[opcua]` (off in examples/*.toml) is turned on with its state under the demo's
temporary directory, a `bms` user (infrastructure_manager) gets a password made for this run
(never a default), and the server is built before the node scans, so its start costs the
measured run nothing. The parent prints how to connect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import socket
from pathlib import Path
from typing import Any

from edge_runtime.assembly import NodeConfig
from edge_runtime.node import Node
from edge_runtime.servers.opcua.server import OpcUaServer
from edge_runtime.servers.opcua.users import UserStore

ROLES = ("cdu",)
USER = "bms"
START_S = 60.0  # a loaded 2-core machine builds an address space in 2-10 s


def _port(wanted: int) -> int:
    """`wanted` if free on loopback, else any free port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", wanted))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_opcua(config: NodeConfig, state_dir: Path) -> NodeConfig:
    """The node's config with its OPC UA server on (the CDU node, when it has an [opcua])."""
    if config.role not in ROLES or config.opcua is None:
        return config
    return dataclasses.replace(config, opcua=dataclasses.replace(
        config.opcua, enabled=True, host="127.0.0.1", port=_port(config.opcua.port),
        state_dir=state_dir / "opcua"))


async def serve_early(node: Node) -> dict[str, Any] | None:
    """Provision the demo user, start the node's OPC UA server and wait until it listens;
    what a client needs to connect (None: no server, or it did not start)."""
    server = node.services.get("opcua")
    if not isinstance(server, OpcUaServer):
        return None
    password = secrets.token_urlsafe(12)
    UserStore(server.config.state_dir).add_user(USER, "infrastructure_manager", password)
    server.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_S
    while not server.started.is_set():
        if server.error or loop.time() > deadline:
            return {"node": node.config.name, "error": server.error or "did not start in time"}
        await asyncio.sleep(0.1)
    return {"node": node.config.name, "url": server.config.endpoint, "user": USER,
            "password": password, "state_dir": str(server.config.state_dir),
            "server_cert": str(server.cert.cert) if server.cert else ""}


def connect_lines(infos: list[dict[str, Any]]) -> list[str]:
    """How to connect a BMS client to each node's endpoint."""
    if not infos:
        return []
    out = ["OPC UA (BMS): Basic256Sha256 or Aes256_Sha256_RsaPss, Sign or SignAndEncrypt:"]
    for info in infos:
        if "error" in info:
            out.append(f"  {info['node']}: OPC UA server not started: {info['error']}")
            continue
        out.append(f"  {info['node']}: {info['url']}  user {info['user']} password "
                   f"{info['password']}  (server certificate {info['server_cert']})")
    first = next((i for i in infos if "error" not in i), None)
    if first is not None:
        out.append("  trust your client's certificate first (the trust list reloads live):")
        out.append(f"    pswd-edge opcua trust CLIENT.pem --role infrastructure_manager "
                   f"--state-dir {first['state_dir']}")
        out.append("  a client without one: pswd-edge opcua client-cert bms --uri "
                   "urn:example.org:FreeOpcUa:opcua-asyncio --out bms   (README: BMS over OPC UA)")
    return out
