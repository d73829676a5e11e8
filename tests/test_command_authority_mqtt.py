"""Authority over MQTT, end to end through a real Mosquitto (issue 8, findings 2 and 9): what a
command moves decides, not its topic; refusals name the rule on the error topic and in the
audit; with command_keys nothing unsigned changes anything, the workload kinds included; the
site coordinator signs workload/prepare; a command captured before a restart is refused
after it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.core.clock import WallClock
from edge_runtime.core.commands import SetOutput
from edge_runtime.federation.config import MqttConfig
from edge_runtime.federation.link import NodeLink
from edge_runtime.federation.topics import NodeTopics, SiteTopics
from edge_runtime.node import Node
from edge_runtime.security.signing import CommandVerifier, generate_key, sign
from edge_runtime.site.coordinator import SiteCoordinator, prepare_key, sign_prepare
from edge_runtime.site.handler import Outgoing
from tests.fakes import FakeDevice
from tests.mosquitto import Broker, Inbox, mosquitto_fixture  # noqa: F401
from tests.test_link_state import running, watching
from tests.test_rights import NODE

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(40)]

SITE = "s1"
T = NodeTopics(SITE, "cdu-01")
S = SiteTopics(SITE)
VECTOR = Path(__file__).parent / "vectors/annex_a/valid_workload_announcement_minimal.json"


def wall_node(tmp_path: Path) -> Node:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "node.toml"
    path.write_text(NODE.replace("scan_period_ms = 100", "scan_period_ms = 20"))
    return assemble(load_node_config(path), clock=WallClock(), watchdog_thread=False,
                    blocks=[], federate=False,
                    driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                         for d in c.devices})


def keyed(mosquitto: Broker, tmp_path: Path) -> tuple[MqttConfig, dict[str, bytes]]:
    keys = tmp_path / "keys"
    made = {role: generate_key(keys / f"{role}.key")
            for role in ("grid_operator", "infrastructure_manager", "workload_operator")}
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state", command_keys=keys,
                                require_coordinator=False)
    return cfg, made


def order(point: str, value: float | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"PSWD_version": "1.0", "point": point,
                           "action": "set_output" if value is not None else "release_output"}
    if value is not None:
        doc["value"] = value
    return doc


def errors_of(inbox: Inbox) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in inbox.on(T.error)]


async def online(inbox: Inbox, link: NodeLink) -> None:
    await inbox.wait_until(lambda _: link.get_status()["online"], what="link online")


async def test_a_signed_grid_signal_cannot_stop_a_pump(mosquitto: Broker,
                                                      tmp_path: Path) -> None:
    """Finding 2: accepted as a SetOutput on today's main (pump1.control_word = 0 on the wire)."""
    cfg, keys = keyed(mosquitto, tmp_path)
    node = wall_node(tmp_path)
    async with watching(cfg, T.error) as inbox, running(node, cfg) as link:
        await online(inbox, link)
        stop = sign(keys["grid_operator"], "cdu-01", "grid_signal",
                    order("pump1.control_word", 0), role="grid_operator", now=time.time())
        await link.client.publish_acked(T.cmd("grid_signal"), json.dumps(stop).encode())
        (err,) = [json.loads(m.payload) for m in await inbox.wait_for(1, T.error)]
        assert err["error"] == ("rights: grid_operator may not set_output on class pump "
                                "(pump1.control_word)")
        assert (err["field"], err["category"]) == ("role", "refused")
        (rec,) = [r for r in node.commands.audit if "control_word" in r.command]
        assert not rec.accepted and rec.reason == err["error"]  # the audit names it too
        # the same role on its own class goes through
        dispatch = sign(keys["grid_operator"], "cdu-01", "grid_signal",
                        order("battery.w_set_kw", -25.0), role="grid_operator", now=time.time())
        await link.client.publish_acked(T.cmd("grid_signal"), json.dumps(dispatch).encode())
        await inbox.wait_until(lambda _: node.image.output("battery.w_set_kw") == -25.0,
                               what="the grid operator's battery dispatch applied")
        assert node.image.output("pump1.control_word") == 1.0
        assert len(errors_of(inbox)) == 1


async def test_a_remote_release_leaves_a_local_hold(mosquitto: Broker, tmp_path: Path) -> None:
    """Finding 2: an MQTT release_output (no holder) dropped the local operator's hold."""
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state", require_coordinator=False)
    node = wall_node(tmp_path)
    async with watching(cfg, T.error) as inbox, running(node, cfg) as link:
        await online(inbox, link)
        node.commands.submit(SetOutput("battery.w_set_kw", 30.0, source="hmi"))
        await inbox.wait_until(lambda _: node.manual.holds() == {"battery.w_set_kw": "hmi"},
                               what="local hold")
        stamp = {"timestamp": "2026-01-01T00:00:00Z"}
        for doc in ({**order("battery.w_set_kw"), **stamp},
                    {**order("battery.w_set_kw", -400.0), **stamp}):
            await link.client.publish_acked(T.cmd("battery_control"), json.dumps(doc).encode())
        answers = await inbox.wait_for(2, T.error)
        assert [json.loads(m.payload)["error"] for m in answers] == [
            "precedence: battery.w_set_kw is held by a local operator (hmi); a remote command "
            "never releases a local hold",
            "precedence: battery.w_set_kw is held by a local operator (hmi); a remote command "
            "never replaces a local hold"]
        # refused at the link (and audited there): nothing was queued that could change it
        assert [r.accepted for r in node.commands.audit if r.source == "mqtt.battery_control"
                ] == [False, False]
        assert node.commands.get_status()["pending"] == 0
        assert node.manual.holds() == {"battery.w_set_kw": "hmi"}
        assert node.image.output("battery.w_set_kw") == 30.0


async def test_with_keys_nothing_unsigned_changes_anything(mosquitto: Broker,
                                                           tmp_path: Path) -> None:
    """Finding 9: an unsigned A.1 on workload/prepare or cmd/workload was applied as if from the
    infrastructure manager. Refused now; the coordinator's signed prepare is taken."""
    cfg, keys = keyed(mosquitto, tmp_path)
    node = wall_node(tmp_path)
    a1 = {**json.loads(VECTOR.read_text()),
          "site_decision": {"approval_status": "approved", "conditions": []}}
    async with watching(cfg, T.error) as inbox, running(node, cfg) as link:
        await online(inbox, link)
        await link.client.publish_acked(S.prepare, json.dumps(a1).encode())
        await link.client.publish_acked(T.cmd("workload"), json.dumps(a1).encode())
        answers = [json.loads(m.payload) for m in await inbox.wait_for(2, T.error)]
        assert {a["topic"] for a in answers} == {S.prepare, T.cmd("workload")}
        assert all(a["error"].startswith("signature: required") for a in answers)
        assert not any("AnnounceWorkload" in r.command for r in node.commands.audit)
        assert not any(e.code == "workload_announced" for e in node.events.recent(50))

        # what the coordinator publishes with the infrastructure manager's key in its
        # command_keys directory: one signature for every node of the site
        key = prepare_key(cfg)
        assert key == keys["infrastructure_manager"]
        out = sign_prepare(Outgoing(S.prepare, json.dumps(a1).encode()), key, SITE, time.time())
        await link.client.publish_acked(out.topic, out.payload)
        await inbox.wait_until(lambda _: any("AnnounceWorkload" in r.command
                                             for r in node.commands.audit),
                               what="signed prepare handed to the scan")
        (rec,) = [r for r in node.commands.audit if "AnnounceWorkload" in r.command]
        assert rec.source == "mqtt.prepare" and "infrastructure_manager" in rec.command
        # a workload operator's own announcement to this node, signed, is taken as theirs
        mine = sign(keys["workload_operator"], "cdu-01", "workload", a1,
                    role="workload_operator", now=time.time())
        await link.client.publish_acked(T.cmd("workload"), json.dumps(mine).encode())
        await inbox.wait_until(lambda _: sum("AnnounceWorkload" in r.command
                                             for r in node.commands.audit) == 2,
                               what="signed workload handed to the scan")
        last = [r for r in node.commands.audit if "AnnounceWorkload" in r.command][-1]
        assert last.source == "mqtt.workload" and "workload_operator" in last.command
        assert len(errors_of(inbox)) == 2


async def test_a_command_captured_before_a_restart_is_refused_after_it(
        mosquitto: Broker, tmp_path: Path) -> None:
    """Finding 9: the nonce cache lived in memory; a restart forgot it."""
    cfg, keys = keyed(mosquitto, tmp_path)
    captured = json.dumps(sign(keys["infrastructure_manager"], "cdu-01", "thermal_control",
                               order("pump1.speed_ref", 55.0), role="infrastructure_manager",
                               now=time.time())).encode()
    first = wall_node(tmp_path / "a")
    async with watching(cfg, T.error) as inbox, running(first, cfg) as link:
        await online(inbox, link)
        await link.client.publish_acked(T.cmd("thermal_control"), captured)
        await inbox.wait_until(lambda _: any(r.accepted and "55.0" in r.command
                                             for r in first.commands.audit),
                               what="applied before the restart")
    second = wall_node(tmp_path / "b")  # a new process on the same state dir
    async with watching(cfg, T.error) as inbox, running(second, cfg) as link:
        await online(inbox, link)
        await link.client.publish_acked(T.cmd("thermal_control"), captured)
        (err,) = [json.loads(m.payload) for m in await inbox.wait_for(1, T.error)]
        assert (err["error"], err["field"]) == ("nonce: already used (a replay)", "nonce")
        assert not any("55.0" in r.command for r in second.commands.audit)


async def test_the_coordinator_signs_what_it_publishes_on_prepare(mosquitto: Broker,
                                                                 tmp_path: Path) -> None:
    """With the infrastructure manager's key in its [mqtt] command_keys, the coordinator's
    workload/prepare carries an envelope every node of the site verifies."""
    from tests import test_site_coordinator as sc

    keys = tmp_path / "keys"
    infra = generate_key(keys / "infrastructure_manager.key")
    coordinator = SiteCoordinator(mosquitto.mqtt_config(command_keys=keys), site=sc.SITE,
                                  node="site-0", config=sc.CONFIG)
    async with sc.plant(mosquitto) as node_cmds:
        await coordinator.start()
        try:
            await sc.until(lambda: coordinator.snapshot().power_known
                           and len(coordinator.handler.aggregate.nodes) >= 2)
            async with sc.workload_client(mosquitto) as wc:
                await wc.announce(sc.announcement("train-s"), timeout_s=2.0)
            (msg,) = await node_cmds.wait_for(1, f"{sc.BASE}/workload/prepare")
        finally:
            await coordinator.stop()
    doc = json.loads(msg.payload)
    assert doc["workload_id"] == "train-s" and doc["role"] == "infrastructure_manager"
    for node_name in ("rack-01", "cdu-01"):  # one signature, good on every node of the site
        verify = CommandVerifier({"infrastructure_manager": infra}, node=node_name,
                                 site=sc.SITE, wall=time.time)
        assert verify("prepare", dict(doc)) is None
    other_site = CommandVerifier({"infrastructure_manager": infra}, node="cdu-01", site="x",
                                 wall=time.time)
    assert (other_site("prepare", dict(doc)) or "").startswith("signature: does not match")


async def test_prepare_is_taken_only_on_the_sites_topic(mosquitto: Broker,
                                                        tmp_path: Path) -> None:
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state", require_coordinator=False)
    node = wall_node(tmp_path)
    async with watching(cfg, T.error) as inbox, running(node, cfg) as link:
        await online(inbox, link)
        await link.client.publish_acked(f"{T.base}/cmd/prepare", VECTOR.read_bytes())
        (err,) = [json.loads(m.payload) for m in await inbox.wait_for(1, T.error)]
        assert (err["category"], err["field"]) == ("unknown_topic", "topic")
