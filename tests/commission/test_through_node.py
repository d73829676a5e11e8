"""force / release / reset and loopcheck --url through a running node's OPC UA server: the
node (examples/cdu.toml, no control blocks) scans the plant simulator over Modbus TCP, its OPC
UA server's certificate is signed by the site CA that `provision` made, and the technician's
certificate (provision --technician-cert) is in its trust list as an infrastructure manager.
What the tool forces reaches the plant; a force never beats the leak trip; a reset is refused
while the leak lasts and accepted after; an untrusted certificate is one line."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.node import Node
from edge_runtime.servers.opcua.config import OpcUaConfig
from edge_runtime.servers.opcua.server import OpcUaServer
from edge_runtime.servers.opcua.users import UserStore
from pswd_plant_sim.simulator import Simulator
from tests.commission.rig import cdu_config, flowing, rows, running_plant, tool, tool_json
from tests.conftest import free_port


async def until(condition: object, timeout: float, what: str) -> None:
    """Poll (the plant has no event to await) with a bound."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def engaged(node: Node) -> list[str]:
    """The safety rules holding outputs now."""
    return [name for name, st in node.safety.states.items() if st.engaged]


@contextlib.asynccontextmanager
async def node_with_opcua(tmp_path: Path, sim: Simulator, work: Path,
                          technician_cert: Path) -> AsyncIterator[tuple[Node, str]]:
    """The CDU node on the simulator with its OPC UA server, the technician trusted."""
    # Generous Modbus timeouts: on a loaded test machine a 250 ms poll timeout marks the
    # supply temperature BAD and its trip (rightly) holds the pumps at full speed.
    path = cdu_config(tmp_path, sim)
    path.write_text(path.read_text().replace("poll_ms = 100\n",
                                             "poll_ms = 100\ntimeout_ms = 3000\n"))
    node = assemble(load_node_config(path), watchdog_thread=False, blocks=[])
    # The server's state dir is where provision put its certificate: the node serves that.
    cfg = OpcUaConfig(state_dir=work / "pki" / "cdu-01" / "opcua", host="127.0.0.1",
                      port=free_port())
    UserStore(cfg.state_dir).trust("ada", "infrastructure_manager",
                                   technician_cert.read_bytes())
    server = OpcUaServer(node, cfg)
    node.attach("opcua", server)
    runner = asyncio.create_task(node.run())
    try:
        await until(lambda: server.started.is_set() or server.error or runner.done(), 60,
                    "the OPC UA server")
        assert not server.error, server.error
        assert server.cert is not None and not server.cert.created  # provision's certificate
        yield node, cfg.endpoint
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_force_release_reset_and_loopcheck_through_the_node(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    common = ("--work-dir", str(work), "--technician", "Ada Field")
    async with running_plant() as sim:
        config = str(cdu_config(tmp_path, sim))
        code, prov = await tool_json(capsys, "provision", "--config", config,
                                     "--technician-cert", *common)
        assert code == 0, prov
        tech = work / "technician" / "ada-field.crt"
        assert tech.exists()
        await flowing(sim)
        async with node_with_opcua(tmp_path, sim, work, tech) as (node, url):
            # past start-up: every device heard from, no rule engaged (a loaded machine may
            # take a while; until then the safety layer rightly holds the outputs)
            await until(lambda: all(node.image.value(p) is not None for p in
                                    ("pump1.speed_actual", "pump2.speed_actual",
                                     "supply_temp.temperature", "leak.leak_state"))
                        and not engaged(node), 30, "the node clear of start-up and trips")
            pump1 = sim.rig.units["pump1"].bank
            code, doc = await tool_json(capsys, "force", "--url", url, "--point",
                                        "pump1.speed_ref", "--value", "55", "--expiry-s", "60",
                                        "--reason", "rotation check", *common)
            assert code == 0, (doc, engaged(node))
            assert "certificate" in doc["identity"]
            await until(lambda: pump1.get("speed_ref") == pytest.approx(55.0), 5,
                        "the forced speed on the wire")
            code, doc = await tool_json(capsys, "release", "--url", url, "--point",
                                        "pump1.speed_ref", *common)
            assert code == 0, doc

            code, lc = await tool_json(capsys, "loopcheck", "--config", config, "--url", url,
                                       "--output", "pump2.speed_ref", "--timeout-s", "8",
                                       *common)
            assert code == 0, (lc["outputs"][0]["reason"], engaged(node))
            row = rows(lc, "outputs", "output")["pump2.speed_ref"]
            assert row["status"] == "PASS" and lc["mode"] == "node"

            sim.inject("leak", "leak", position_m=3.0)
            await until(lambda: node.safety.states["leak_isolate"].engaged, 5, "isolation")
            code, doc = await tool_json(capsys, "force", "--url", url, "--point",
                                        "pump1.control_word", "--value", "1", "--expiry-s",
                                        "30", "--reason", "try to beat the trip", *common)
            assert code == 1 and "trip leak_isolate" in doc["holding"], doc
            assert "wins over a force" in doc["summary"]
            await asyncio.sleep(0.5)  # a few scans: the trip must still hold the pump
            assert pump1.get("control_word") == 0.0  # a force never beats a trip
            code, out, err = await tool(capsys, "reset", "--url", url, "--interlock",
                                        "leak_isolate", *common)
            assert code != 0 and len(err.strip().splitlines()) == 1, (out, err)
            sim.clear("leak")
            await until(lambda: node.image.value("leak.leak_state") == 0, 5,
                        "the node to see the leak gone")
            code, doc = await tool_json(capsys, "reset", "--url", url, "--interlock",
                                        "leak_isolate", *common)
            assert code == 0, doc
            assert "leak_isolate" in doc["reset"]

            # a certificate the node does not trust: one line, non-zero, no traceback
            code, out, err = await tool(capsys, "provision", "--config", config,
                                        "--technician-cert", "--work-dir", str(work),
                                        "--technician", "Stranger")
            code, out, err = await tool(capsys, "release", "--url", url, "--point",
                                        "pump1.speed_ref", "--work-dir", str(work),
                                        "--technician", "Stranger")
            assert code == 2 and "Traceback" not in err
            assert len(err.strip().splitlines()) == 1 and "refused our certificate" in err, err
            # wrong credentials: a user the node does not know
            monkeypatch.setenv("PSWD_OPCUA_PASSWORD", "not-the-password")
            code, out, err = await tool(capsys, "release", "--url", url, "--point",
                                        "pump1.speed_ref", "--user", "nobody", *common)
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert "wrong credentials" in err

    code, rep = await tool_json(capsys, "report", *common)
    text = Path(rep["path"]).read_text()
    assert "Forces, releases and trip resets" in text and "rotation check" in text
