"""Interop with node-opcua (issue 12 item 4, "done when"): a BMS session from a stock Node.js
client over SignAndEncrypt against the example CDU node, assembled by `assemble` and running
against the plant simulator over Modbus TCP. Browse, read, subscribe, a trip alarm arriving and
acknowledged, HistoryRead, every method (reset a trip, force an output with an expiry and see
it expire), and the refusals: wrong role, untrusted certificate, out of range, wrong type.

The client is tests/opcua_client_session.mjs (node-opcua from tests/npm, installed by `make
peers`); it prints one JSON line per step and waits on stdin where the plant must change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.assembly import assemble
from edge_runtime.servers.opcua.config import OpcUaConfig
from pswd_plant_sim.simulator import Simulator
from tests.conftest import free_port
from tests.opcua_helpers import NPM, POLICIES, ROOT, SIGN_AND_ENCRYPT, node_bin, provision
from tests.test_end_to_end import node_config, plant, sim_ports, wait_for

__all__ = ["plant"]  # the plant simulator fixture of the end-to-end tests

SCRIPT = ROOT / "tests" / "opcua_client_session.mjs"


async def _line(proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not raw:
            err = await proc.stderr.read() if proc.stderr else b""
            pytest.fail(f"node-opcua client ended early: {err.decode()[-2000:]}")
        text = raw.decode().strip()
        if text.startswith("PSWD "):
            result: dict[str, Any] = json.loads(text[5:])
            return result


async def check_loops_with_asyncua(server: Any, trusted: Any, password: str) -> None:
    """The CDU's control loops as ControlLoopType objects, and the controller's Mode."""
    from asyncua import Client

    c = Client(server.config.endpoint, timeout=10)
    c.application_uri = trusted.uri
    await c.set_security(POLICIES["Basic256Sha256"], str(trusted.der), str(trusted.key),
                         server_certificate=str(server.cert.cert), mode=SIGN_AND_ENCRYPT)
    c.set_user("bms")
    c.set_password(password)
    await c.connect()
    try:
        ns = await c.get_namespace_index("http://pswd-edge.org/UA/")
        ctrl = await c.nodes.objects.get_child([f"{ns}:PSWD", f"{ns}:cdu-01"])
        loop = await ctrl.get_child([f"{ns}:Loops", f"{ns}:supply_temp"])
        mode, setpoint = (await loop.get_child(f"{ns}:Mode"),
                          await loop.get_child(f"{ns}:Setpoint"))
        deadline = asyncio.get_running_loop().time() + 10
        while await mode.read_value() != "Automatic":
            assert asyncio.get_running_loop().time() < deadline, "loop mode not shown"
            await asyncio.sleep(0.1)
        assert await setpoint.read_value() == pytest.approx(30.0)  # examples/cdu.toml
        mode_now = await (await ctrl.get_child(f"{ns}:Mode")).read_value()
        assert mode_now in ("Running", "SafeImage"), mode_now
    finally:
        await c.disconnect()


@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_a_bms_session_with_node_opcua(plant: Simulator, tmp_path: Path) -> None:
    exe = node_bin()
    state = tmp_path / "opcua"
    cfg = replace(node_config(tmp_path, "cdu.toml", sim_ports(plant)),
                  opcua=OpcUaConfig(state_dir=state, host="127.0.0.1", port=free_port()))
    passwords, trusted, stranger = provision(state, tmp_path)
    node = assemble(cfg, watchdog_thread=False)
    server = node.services["opcua"]
    runner = asyncio.create_task(node.run())
    results: dict[str, Any] = {}
    try:
        await wait_for(lambda: server.started.is_set() or bool(server.error)  # type: ignore[attr-defined]
                       or runner.done(), 60, "the OPC UA server")
        assert server.started.is_set(), server.error  # type: ignore[attr-defined]
        await wait_for(lambda: node.image.value("flow.flow") is not None
                       and not node.safety.starting, 20, "the plant read and start-up over")
        await check_loops_with_asyncua(server, trusted, passwords["bms"])
        conf = tmp_path / "client.json"
        conf.write_text(json.dumps({
            "url": server.config.endpoint, "node": cfg.name,  # type: ignore[attr-defined]
            "workdir": str(tmp_path / "nodeopcua"), "passwords": passwords,
            "serverCertDer": str(server.cert.cert),  # type: ignore[attr-defined]
            "trusted": {"uri": trusted.uri, "pem": str(trusted.pem), "key": str(trusted.key)},
            "stranger": {"uri": stranger.uri, "pem": str(stranger.pem), "key": str(stranger.key)},
        }))
        proc = await asyncio.create_subprocess_exec(
            exe, str(SCRIPT), str(conf), cwd=str(NPM.parent), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdin is not None
        try:
            while True:
                msg = await _line(proc, 90)
                if "error" in msg:
                    pytest.fail(f"node-opcua client failed: {msg['error']}\n{results}")
                if msg.get("wait") == "trip":
                    plant.inject("leak", "leak", position_m=2.5)
                    await wait_for(lambda: node.safety.states["leak_isolate"].latched, 10,
                                   "the leak isolation")
                elif msg.get("wait") == "dry":
                    plant.clear("leak")
                    await wait_for(lambda: not node.safety.states["leak_isolate"].present
                                   and not node.safety.states["leak_isolate"].unknown, 10,
                                   "the leak gone")
                else:
                    results.update(msg)
                    if msg.get("done"):
                        break
                    continue
                proc.stdin.write(b"go\n")
                await proc.stdin.drain()
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    print(json.dumps(results))
    # browse: the controller (ControllerType) with its devices and methods
    assert {"pump1", "pump2", "valve", "supply_temp", "leak", "ResetTrip", "Force", "Release",
            "SetMode", "SetSetpoint"} <= set(results["browse"]), results["browse"]
    assert results["typeDefinition"] == ["ControllerType"]
    read = results["read"]
    assert read["status"] == "Good" and 10 < read["value"] < 60 and read["sourceTimestamp"]
    assert read["unit"] == "°C" and read["unitId"] == int.from_bytes(b"CEL", "big")
    assert results["distinct"] >= 2  # data changes arrived
    assert results["alarm"]["ack"] == "Good"
    assert results["resetWhilePresent"]["status"] == "BadInvalidState"
    assert results["reset"] == {"status": "Good", "out": [["leak_isolate"]]}
    assert results["force"] == "Good" and results["expiredSeen"]
    assert results["releaseNotForced"]["status"] == "BadInvalidState"
    assert results["forceHeld"]["status"] == "Good" and results["release"]["status"] == "Good"
    assert results["setSetpoint"]["status"] == "Good"
    assert results["setMode"]["status"] == "Good"
    assert results["outOfRange"]["status"] == "BadOutOfRange"
    assert results["wrongType"]["status"] == "BadTypeMismatch"
    assert results["unknownPoint"]["status"] == "BadInvalidArgument"
    assert results["writeWrongType"] == "BadTypeMismatch"
    assert results["setpointOutOfRange"]["status"] == "BadOutOfRange"
    assert results["history"]["status"] == "Good" and results["history"]["count"] >= 1
    assert results["gridForce"]["status"] == "BadUserAccessDenied"
    assert results["gridWrite"] == "BadUserAccessDenied"
    assert "BadCertificateUntrusted" in results["untrusted"] or (
        "untrusted" in results["untrusted"].lower()), results["untrusted"]
    # every command from the session is in the queue's audit, the refusals with their reason
    audit = [a for a in node.commands.audit if a.source.startswith("opcua.")]
    assert any(a.accepted and "ForceOutput" in a.command and "interop test" in a.command
               for a in audit)
    assert any(not a.accepted and a.source == "opcua.grid" for a in audit)
    assert any(e.code == "force_expired" for e in node.events.recent(500))
    assert any(e.code == "alarm_ack" and "node-opcua" in e.message
               for e in node.events.recent(500))
