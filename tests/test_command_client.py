"""Signed control commands end to end: `pswd-edge command` -> real Mosquitto -> a node whose
link verifies HMAC-SHA256 envelopes (security/signing.py). Accepted ones reach the scan;
unsigned, forged, replayed and wrong-role ones are refused on the error topic."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from edge_runtime.federation.command_client import command_main
from edge_runtime.federation.mqtt import MqttClient
from edge_runtime.security.signing import CommandVerifier, generate_key, load_keys, sign
from tests.mosquitto import Broker, mosquitto_fixture  # noqa: F401
from tests.test_link_state import SITE, make_node, running, topics, watching

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(40)]

T = topics()


def order(value: float) -> dict[str, object]:
    return {"PSWD_version": "1.0", "action": "set_output", "point": "pump1.speed_ref",
            "value": value}


async def test_signed_commands_apply_and_everything_else_is_refused(
        mosquitto: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    infra = generate_key(keys / "infrastructure_manager.key")
    generate_key(keys / "grid_operator.key")
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state")
    node = make_node(tmp_path)
    verifier = CommandVerifier(load_keys(keys), node="cdu-1", wall=node.clock.wall)
    cli = ["--host", "127.0.0.1", "--port", str(mosquitto.port), "--site", SITE,
           "--node", "cdu-1", "--keys", str(keys), "--kind", "thermal_control",
           "--point", "pump1.speed_ref", "--wait", "1.0"]
    async with watching(cfg, T.error) as errors, running(node, cfg, verify=verifier) as link:
        await errors.wait_until(lambda _: link.get_status()["online"], what="link online")

        # the operator's tool, signed as infrastructure manager: applied at the next scan
        assert await asyncio.to_thread(command_main, [
            *cli, "--value", "55", "--role", "infrastructure_manager"]) == 0
        await errors.wait_until(lambda _: any(
            r.accepted and r.source == "mqtt.thermal_control" and "55.0" in r.command
            for r in node.commands.audit), what="the signed command applied")

        # the grid operator's key does not move pumps: refused, and the tool says why
        assert await asyncio.to_thread(command_main, [
            *cli, "--value", "60", "--role", "grid_operator"]) == 1
        assert "role: grid_operator may not send thermal_control" in capsys.readouterr().err

        sender = MqttClient(cfg, client_id="intruder")
        sender.start()
        try:
            await sender.wait_connected(5)
            signed = sign(infra, "cdu-1", "thermal_control", order(70.0),
                          role="infrastructure_manager", now=time.time())
            forged = {**signed, "value": 100.0}
            stale = sign(infra, "cdu-1", "thermal_control", order(70.0),
                         role="infrastructure_manager", now=time.time() - 120)
            for doc in ({**order(80.0), "timestamp": signed["timestamp"]}, forged, stale,
                        signed, signed):
                await sender.publish_acked(T.cmd("thermal_control"), json.dumps(doc))
            answers = await errors.wait_for(5, T.error)
        finally:
            await sender.stop()
        reasons = [json.loads(m.payload)["error"] for m in answers]
        assert reasons[0].startswith("role: grid_operator may not")  # the tool's attempt
        assert reasons[1].startswith("signature: required")  # unsigned
        assert reasons[2].startswith("signature: does not match")  # value altered
        assert reasons[3].startswith("timestamp: issued 120.")  # two minutes old
        assert reasons[4] == "nonce: already used (a replay)"  # the second copy only
        assert {json.loads(m.payload)["category"] for m in answers} == {"refused"}
        assert [json.loads(m.payload)["field"] for m in answers] == [
            "role", "signature", "signature", "timestamp", "nonce"]
        # the one good copy of `signed` was applied; nothing forged ever was
        await errors.wait_until(lambda _: any(
            r.accepted and "70.0" in r.command for r in node.commands.audit),
            what="the signed 70 % applied")
        assert not any("100.0" in r.command or "80.0" in r.command or "60.0" in r.command
                       for r in node.commands.audit)
    assert verifier.refused == 5


def test_the_tool_needs_a_key_for_its_role(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keys").mkdir()
    code = command_main(["--node", "cdu-1", "--kind", "battery_control", "--point",
                         "battery.w_set_kw", "--value", "1", "--role", "grid_operator",
                         "--keys", str(tmp_path / "keys"), "--port", "1"])
    assert code == 2
    assert "no grid_operator.key" in capsys.readouterr().err


async def test_a_node_with_command_keys_in_its_config_refuses_unsigned_commands(
        mosquitto: Broker, tmp_path: Path) -> None:
    """[mqtt] command_keys is all it takes: NodeLink then checks every control command."""
    import dataclasses

    keys = tmp_path / "keys"
    infra = generate_key(keys / "infrastructure_manager.key")
    cfg = dataclasses.replace(mosquitto.mqtt_config(state_dir=tmp_path / "state"),
                              command_keys=keys)
    node = make_node(tmp_path)
    async with watching(cfg, T.error) as errors, running(node, cfg) as link:
        await errors.wait_until(lambda _: link.get_status()["online"], what="link online")
        unsigned = {**order(40.0), "timestamp": "2026-11-27T00:00:00Z"}
        await link.client.publish_acked(T.cmd("thermal_control"), json.dumps(unsigned))
        (answer,) = await errors.wait_for(1, T.error)
        assert json.loads(answer.payload)["error"].startswith("signature: required")
        good = sign(infra, "cdu-1", "thermal_control", order(45.0),
                    role="infrastructure_manager", now=time.time())
        await link.client.publish_acked(T.cmd("thermal_control"), json.dumps(good))
        await errors.wait_until(lambda _: any(
            r.accepted and "45.0" in r.command for r in node.commands.audit),
            what="the signed command applied")
        assert not any("40.0" in r.command for r in node.commands.audit)
