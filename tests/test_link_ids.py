"""Intrusion detection on the MQTT command path, through a real Mosquitto: a run of forged
signatures on one command topic raises an "intrusion" alarm and blocks that topic, so even a
genuine command on it is refused (answered with category "blocked") until the block ends,
while other topics and the scan carry on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge_runtime.security.ids import IntrusionDetector
from edge_runtime.security.signing import sign
from tests.mosquitto import Broker, mosquitto_fixture  # noqa: F401
from tests.test_command_authority_mqtt import T, errors_of, keyed, online, order, wall_node
from tests.test_link_state import running, watching

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(40)]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def test_forged_commands_block_the_topic_and_raise_an_alarm(mosquitto: Broker,
                                                                  tmp_path: Path) -> None:
    cfg, keys = keyed(mosquitto, tmp_path)
    node = wall_node(tmp_path)
    clock = Clock()  # the detector's own clock: the block's end is stepped, not waited for
    ids = IntrusionDetector(node.events, clock, block_s=300.0)
    async with watching(cfg, T.error) as inbox, running(node, cfg, ids=ids) as link:
        await online(inbox, link)
        wrong = b"\x01" * 32  # not the grid operator's key: a forgery
        for i in range(5):
            forged = sign(wrong, "cdu-01", "grid_signal", order("battery.w_set_kw", -10.0 - i),
                          role="grid_operator", now=time.time())
            await link.client.publish_acked(T.cmd("grid_signal"), json.dumps(forged).encode())
        await inbox.wait_for(5, T.error)
        assert [e["category"] for e in errors_of(inbox)] == ["refused"] * 5
        assert ids.blocked("mqtt:grid_signal") == pytest.approx(300.0)
        assert [e for e in node.events.recent(50) if e.code == "intrusion"]
        # each forgery is an audit-worthy event (security/audit.py mirrors "auth_failure")
        failures = [e for e in node.events.recent(50) if e.code == "auth_failure"]
        assert len(failures) == 5 and "signature" in failures[0].message

        genuine = sign(keys["grid_operator"], "cdu-01", "grid_signal",
                       order("battery.w_set_kw", -25.0), role="grid_operator", now=time.time())
        await link.client.publish_acked(T.cmd("grid_signal"), json.dumps(genuine).encode())
        await inbox.wait_for(6, T.error)
        last = errors_of(inbox)[-1]
        assert (last["category"], last["field"]) == ("blocked", "topic")
        assert "blocked for 300 s" in last["error"]
        assert node.image.output("battery.w_set_kw") != -25.0

        # another topic is not blocked: the infrastructure manager's battery command applies
        other = sign(keys["infrastructure_manager"], "cdu-01", "battery_control",
                     order("battery.w_set_kw", -15.0), role="infrastructure_manager",
                     now=time.time())
        await link.client.publish_acked(T.cmd("battery_control"), json.dumps(other).encode())
        await inbox.wait_until(lambda _: node.image.output("battery.w_set_kw") == -15.0,
                               what="a command on an unblocked topic applied")

        clock.t += 301  # the block ends by itself
        again = sign(keys["grid_operator"], "cdu-01", "grid_signal",
                     order("battery.w_set_kw", -25.0), role="grid_operator", now=time.time())
        await link.client.publish_acked(T.cmd("grid_signal"), json.dumps(again).encode())
        await inbox.wait_until(lambda _: node.image.output("battery.w_set_kw") == -25.0,
                               what="the genuine command applied after the block")
        assert link.get_status()["invalid"] == {"refused": 5, "blocked": 1}
