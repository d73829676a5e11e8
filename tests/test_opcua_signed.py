"""OPC UA SignedCommand (issue 10 item 4): the MQTT/HTTPS signed envelope over OPC UA.

A real assembled node (wall clock, a battery inverter and the CDU devices of
tests/test_opcua_server.py over FakeDevices), the real asyncua server and client over
SignAndEncrypt, a real CommandVerifier with its nonce journal (the one the assembler shares
between MQTT, HTTPS and OPC UA) and the node's intrusion detector.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.ua.uaerrors import UaStatusCodeError

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.config.reader import ConfigError
from edge_runtime.core.authority import USER_ROLES
from edge_runtime.core.points import Quality, Sample
from edge_runtime.federation.inbound import Invalid, parse_command
from edge_runtime.node import Node
from edge_runtime.security.ids import IntrusionDetector
from edge_runtime.security.signing import CommandVerifier, generate_key, load_keys, sign
from edge_runtime.servers.opcua.users import VIEWER
from tests.fakes import FakeDevice
from tests.opcua_helpers import USERS, serving
from tests.test_opcua_server import NODE, bad, call, point, set_input

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

BATTERY = """
[devices.battery]
io_map = "battery_inverter"
endpoint = "127.0.0.1:15020"
unit_id = 4
"""
POINT = "battery.w_set_kw"
NODE_NAME = "cdu-01"


def build_node(tmp: Path) -> Node:
    """tests/test_opcua_server.py's CDU node, plus a battery inverter."""
    path = tmp / "node.toml"
    path.write_text(NODE + BATTERY)
    node = assemble(load_node_config(path), watchdog_thread=False, blocks=[],
                    driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                         for d in c.devices})
    for name in node.image.inputs_info:
        node.live[name] = Sample(0.0, Quality.GOOD, node.clock.wall())
    set_input(node, "supply_temp.temperature", 30.0)
    return node


class Keys:
    """Command keys of two roles, the node's verifier (journal in tmp) and its detector."""

    def __init__(self, tmp: Path, node: Node) -> None:
        self.dir = tmp / "command_keys"
        for role in ("grid_operator", "infrastructure_manager"):
            generate_key(self.dir / f"{role}.key")
        self.keys = load_keys(self.dir)
        self.journal = tmp / "state" / "nonces"
        self.verifier = self.new_verifier(node)
        self.ids = IntrusionDetector(node.events, node.clock.monotonic, wall=node.clock.wall)

    def new_verifier(self, node: Node) -> CommandVerifier:
        return CommandVerifier(self.keys, node=NODE_NAME, site="s1", wall=node.clock.wall,
                               journal=self.journal, rights=node.manual.rights)

    def envelope(self, value: float, *, role: str = "grid_operator",
                 kind: str = "battery_control", **extra: Any) -> dict[str, Any]:
        doc = {"PSWD_version": "1.0", "action": "set_output", "point": POINT, "value": value,
               **extra}
        return sign(self.keys[role], NODE_NAME, kind, doc, role=role, now=time.time())


def refusals(node: Node, text: str) -> list[str]:
    return [r.reason for r in node.commands.audit if not r.accepted and text in r.reason]


async def signed(client: Any, envelope: dict[str, Any] | str,
                 kind: str = "battery_control") -> dict[str, Any]:
    text = envelope if isinstance(envelope, str) else json.dumps(envelope)
    result = await call(client, "SignedCommand", kind, text)
    assert isinstance(result, str), result
    doc: dict[str, Any] = json.loads(result)
    return doc


async def test_signed_command_applied_replay_refused_on_every_transport(tmp_path: Path) -> None:
    node = build_node(tmp_path)
    keys = Keys(tmp_path, node)
    async with serving(node, tmp_path, guard=keys.ids, verifier=keys.verifier) as rig:
        grid = await rig.client("grid")
        try:
            env = keys.envelope(-120.0, command_id="c-1")
            result = await signed(grid, env)
            # applied by the scan before the call was answered, as the signer's hold
            assert node.image.output(POINT) == -120.0
            assert node.manual.holds()[POINT] == "opcua.battery_control"
            assert result["accepted"] and result["role"] == "grid_operator"
            assert result["session_role"] == "grid_operator" and result["command_id"] == "c-1"
            # the same envelope again over OPC UA: a replay
            with pytest.raises(UaStatusCodeError) as err:
                await signed(grid, env)
            assert bad(err) == "BadRequestNotAllowed"
            assert refusals(node, "nonce: already used")
            # ... and over MQTT (the link's parse with the node's one verifier)
            with pytest.raises(Invalid) as inv:
                parse_command("battery_control", json.dumps(env).encode(), retain=False,
                              max_bytes=65536, image=node.image, verify=keys.verifier)
            assert inv.value.field == "nonce" and "already used" in inv.value.reason
            # the other way: taken over MQTT first, then refused over OPC UA
            env2 = keys.envelope(-80.0)
            cmd = parse_command("battery_control", json.dumps(env2).encode(), retain=False,
                                max_bytes=65536, image=node.image, verify=keys.verifier)
            assert cmd.source == "mqtt.battery_control"  # type: ignore[union-attr]
            with pytest.raises(UaStatusCodeError) as err:
                await signed(grid, env2)
            assert bad(err) == "BadRequestNotAllowed"
            assert node.image.output(POINT) == -120.0  # the replay moved nothing
            # the nonce store survives a restart: a verifier reading the journal refuses it
            assert keys.new_verifier(node)("battery_control", env) == \
                "nonce: already used (a replay)"
            offences = keys.ids.get_status()["offences"]["opcua:user:grid"]
            assert offences == {"replay": 2}, offences
        finally:
            await grid.disconnect()
    assert rig.server.get_status()["signed_commands"]["accepted"] == 1


async def test_refusals_answer_precise_codes_and_count(tmp_path: Path) -> None:
    node = build_node(tmp_path)
    keys = Keys(tmp_path, node)
    async with serving(node, tmp_path, guard=keys.ids, verifier=keys.verifier) as rig:
        grid, tenant, watcher = (await rig.client("grid"), await rig.client("tenant"),
                                 await rig.client("watcher"))
        try:
            # a forged signature: refused, audited, counted as an authentication failure
            env = keys.envelope(-50.0)
            forged = {**env, "signature": ("0" if env["signature"][0] != "0" else "1")
                      + env["signature"][1:]}
            with pytest.raises(UaStatusCodeError) as err:
                await signed(grid, forged)
            assert bad(err) == "BadUserAccessDenied"
            assert refusals(node, "signature: does not match")
            assert keys.ids.get_status()["offences"]["opcua:user:grid"] == {"auth_failure": 1}
            # the session must hold the right too: a tenant relaying the grid operator's
            # genuine envelope is refused before the nonce is taken ...
            with pytest.raises(UaStatusCodeError) as err:
                await signed(tenant, env)
            assert bad(err) == "BadUserAccessDenied"
            assert refusals(node, "the session's role")
            assert node.image.output(POINT) != -50.0
            # ... so its sender can still deliver it
            assert (await signed(grid, env))["accepted"]
            assert node.image.output(POINT) == -50.0
            with pytest.raises(UaStatusCodeError) as err:  # the viewer: never
                await signed(watcher, keys.envelope(-40.0))
            assert bad(err) == "BadUserAccessDenied"
            # malformed: not JSON, an unknown kind, a missing field
            for kind, text in (("battery_control", "{not json"),
                               ("pump_control", json.dumps(keys.envelope(-30.0))),
                               ("battery_control", json.dumps(
                                   {k: v for k, v in keys.envelope(-30.0).items()
                                    if k != "action"}))):
                with pytest.raises(UaStatusCodeError) as err:
                    await signed(grid, text, kind)
                assert bad(err) == "BadInvalidArgument", (kind, text)
            # out of the point's range (signed and genuine): an operator's mistake, no offence
            with pytest.raises(UaStatusCodeError) as err:
                await signed(grid, keys.envelope(900.0))
            assert bad(err) == "BadOutOfRange"
            # a channel the session's role may not use (a grid session relaying a
            # thermal_control envelope): refused with the rule, counted
            with pytest.raises(UaStatusCodeError) as err:
                await signed(grid, keys.envelope(-20.0, role="infrastructure_manager",
                                                 kind="thermal_control"), "thermal_control")
            assert bad(err) == "BadUserAccessDenied"  # thermal_control: not the grid session's
            offences = keys.ids.get_status()["offences"]
            assert offences["opcua:user:grid"] == {"auth_failure": 2, "malformed": 3}, offences
            assert offences["opcua:user:tenant"] == {"auth_failure": 1}
        finally:
            for c in (grid, tenant, watcher):
                await c.disconnect()
    status = rig.server.get_status()["signed_commands"]
    assert status["accepted"] == 1 and status["refused"] == 8, status


async def test_require_signed_commands_refuses_plain_output_commands(tmp_path: Path) -> None:
    node = build_node(tmp_path)
    keys = Keys(tmp_path, node)
    async with serving(node, tmp_path, guard=keys.ids, verifier=keys.verifier,
                       require_signed_commands=True) as rig:
        bms = await rig.client("bms")
        try:
            with pytest.raises(UaStatusCodeError) as err:
                await call(bms, "Force", POINT, -10.0, 60.0, "commissioning")
            assert bad(err) == "BadUserAccessDenied"
            assert POINT not in node.safety.forces
            with pytest.raises(UaStatusCodeError) as err:
                var = await point(bms, POINT)
                await var.write_value(ua.DataValue(ua.Variant(-10.0, ua.VariantType.Double)))
            assert bad(err) == "BadUserAccessDenied"
            assert len(refusals(node, "require_signed_commands")) == 2
            # ResetTrip stays open: it reaches the scan (nothing latched: BadInvalidState)
            with pytest.raises(UaStatusCodeError) as err:
                await call(bms, "ResetTrip", "")
            assert bad(err) == "BadInvalidState"
            # and a signed command moves the output
            env = keys.envelope(-10.0, role="infrastructure_manager")
            assert (await signed(bms, env))["session_role"] == "infrastructure_manager"
            assert node.image.output(POINT) == -10.0
            assert not keys.ids.get_status()["offences"]  # refusing plain writes is no offence
        finally:
            await bms.disconnect()
    assert rig.server.get_status()["signed_commands"]["required"] is True


def test_assembler_hands_the_opcua_server_the_nodes_one_verifier(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_key(keys / "grid_operator.key")
    path = tmp_path / "node.toml"
    path.write_text(NODE + BATTERY + f"""
[mqtt]
host = "127.0.0.1"
state_dir = "{tmp_path / 'state'}"
command_keys = "{keys}"

[opcua]
host = "127.0.0.1"
port = 4840
state_dir = "{tmp_path / 'opcua'}"
require_signed_commands = true
""")
    node = assemble(load_node_config(path), watchdog_thread=False, blocks=[],
                    driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                         for d in c.devices})
    opcua, link = node.services["opcua"], node.services["mqtt"]
    verifier = opcua.signed.verifier  # type: ignore[attr-defined]
    assert isinstance(verifier, CommandVerifier)
    assert verifier is link._verify  # type: ignore[attr-defined]
    assert opcua.gate.require_signed  # type: ignore[attr-defined]


def test_require_signed_commands_is_off_by_default_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(NODE + "[opcua]\nport = 48402\n")
    cfg = load_node_config(path)
    assert cfg.opcua is not None and cfg.opcua.require_signed_commands is False
    path.write_text(NODE + '[opcua]\nrequire_signed_commands = "yes"\n')
    with pytest.raises(ConfigError) as err:
        load_node_config(path)
    assert any("require_signed_commands" in line for line in err.value.lines), err.value.lines


async def test_every_signer_through_every_session_takes_the_stricter(tmp_path: Path) -> None:
    """Each role signs a battery_control set_output; each session (the three roles the
    helpers provision and the viewer) delivers it: Good exactly when the one rights table
    lets both the signer and the session do set_output and battery_control on class battery."""
    node = build_node(tmp_path)
    keys = Keys(tmp_path, node)
    for role in USER_ROLES:
        if role not in keys.keys:
            generate_key(keys.dir / f"{role}.key")
    keys.keys = load_keys(keys.dir)
    keys.verifier = keys.new_verifier(node)
    rights = node.manual.rights

    def may(role: str) -> bool:
        return all(rights.allows(role, k, "battery") for k in ("set_output", "battery_control"))

    async with serving(node, tmp_path, guard=keys.ids, verifier=keys.verifier) as rig:
        sessions = {user: await rig.client(user) for user in USERS}
        try:
            value, good = -100.0, 0
            for user, session in USERS.items():
                for signer in USER_ROLES:
                    value += 1.0
                    want = session != VIEWER and may(session) and may(signer)
                    try:
                        await signed(sessions[user], keys.envelope(value, role=signer))
                        code = "Good"
                    except UaStatusCodeError as exc:
                        code = ua.StatusCode(exc.code).name
                    assert code == ("Good" if want else "BadUserAccessDenied"), (
                        user, signer, code)
                    assert (node.image.output(POINT) == value) == want, (user, signer)
                    good += want
            assert good == 4  # {bms, grid} x {infrastructure_manager, grid_operator}
        finally:
            for c in sessions.values():
                await c.disconnect()
