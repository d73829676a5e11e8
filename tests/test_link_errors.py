"""Invalid messages on a node's command topics: each answered on its error topic with the
reason and the field, counted, and the link keeps working (a valid command still applies)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_runtime.federation.mqtt import MqttClient
from tests.mosquitto import Broker, mosquitto_fixture  # noqa: F401
from tests.test_link_state import make_node, running, topics, watching

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

T = topics()
STAMP = "2026-11-27T00:00:00Z"


def command(**fields: object) -> bytes:
    doc = {"PSWD_version": "1.0", "timestamp": STAMP, "action": "set_output",
           "point": "pump1.speed_ref", "value": 55.0}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


# (topic, payload, retain, category, words in the reason, field)
BAD: list[tuple[str, bytes, bool, str, str, str | None]] = [
    (T.cmd("thermal_control"), b"{not json", False, "malformed", "not valid JSON", None),
    (T.cmd("thermal_control"), b"\xff\xfe", False, "malformed", "UTF-8", None),
    (T.cmd("battery_control"), b"[1, 2]", False, "malformed", "JSON object", "$"),
    (T.cmd("grid_signal"), b"{" + b" " * 70_000 + b"}", False, "oversized", "65536-byte", None),
    (T.cmd("thermal_control"), command(action=...), False, "schema", "action", "action"),
    (T.cmd("thermal_control"), command(timestamp="yesterday"), False, "schema",
     "RFC 3339", "timestamp"),
    (T.cmd("thermal_control"), command(PSWD_version="2.0"), False, "schema", "'1.0'",
     "PSWD_version"),
    (T.cmd("thermal_control"), command(value="fast"), False, "schema", "finite number",
     "value"),
    (T.cmd("thermal_control"), command(action="explode"), False, "schema", "set_output",
     "action"),
    (T.cmd("thermal_control"), command(colour="red"), False, "schema", "colour", "colour"),
    (T.cmd("thermal_control"), command(point="pump9.speed_ref"), False, "refused",
     "unknown point", "point"),
    (T.cmd("thermal_control"), command(value=150.0), False, "refused", "outside", "value"),
    (T.cmd("thermal_control"), command(), True, "retained", "retained", "retain"),
    (T.cmd("workload"), b'{"PSWD_version": "1.0"}', False, "schema", "required", None),
    (f"{T.base}/cmd/reboot", b"{}", False, "unknown_topic", "unknown command kind", "topic"),
]


async def test_invalid_commands_answered_counted_and_harmless(mosquitto: Broker,
                                                              tmp_path: Path) -> None:
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state")
    node = make_node(tmp_path)
    async with watching(cfg, T.error) as errors, running(node, cfg) as link:
        sender = MqttClient(cfg, client_id="operator")
        sender.start()
        try:
            await sender.wait_connected(5)
            await errors.wait_until(lambda _: link.get_status()["online"], what="link online")
            for i, (topic, payload, retain, *_rest) in enumerate(BAD):
                await sender.publish_acked(topic, payload, retain=retain,
                                           correlation_data=f"c{i}".encode())
            answers = await errors.wait_for(len(BAD), T.error)
            for (topic, _p, _r, category, words, field), msg in zip(BAD, answers, strict=True):
                doc = json.loads(msg.payload)
                assert (doc["topic"], doc["category"]) == (topic, category), doc
                assert words in doc["error"], doc
                if field is not None:
                    assert doc["field"] == field, doc
                assert doc["PSWD_version"] == "1.0" and doc["timestamp"].endswith("Z")
            assert answers[-1].correlation_data == f"c{len(BAD) - 1}".encode()
            assert json.loads(answers[-1].payload)["invalid_total"] == len(BAD)
            expected: dict[str, int] = {}
            for *_x, category, _w, _f in BAD:
                expected[category] = expected.get(category, 0) + 1
            assert link.get_status()["invalid"] == expected
            # Still alive: a valid command reaches the scan and moves the output.
            await sender.publish_acked(T.cmd("thermal_control"), command(value=42.0))
            await errors.wait_until(lambda _: node.image.output("pump1.speed_ref") == 42.0,
                                    what="output at 42 %")
            assert node.commands.audit[-1].accepted
            assert node.commands.audit[-1].source == "mqtt.thermal_control"
            assert len(errors.on(T.error)) == len(BAD)  # nothing answered for the valid one
            assert node.engine.stats.block_faults == 0
        finally:
            await sender.stop()


async def test_error_answers_are_rate_limited_but_counted(mosquitto: Broker,
                                                          tmp_path: Path) -> None:
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state")
    async with watching(cfg, T.error) as errors, running(make_node(tmp_path), cfg) as link:
        sender = MqttClient(cfg, client_id="flooder")
        sender.start()
        try:
            await sender.wait_connected(5)
            await errors.wait_until(lambda _: link.get_status()["online"], what="link online")
            for _ in range(200):
                sender.publish(T.cmd("grid_signal"), b"garbage", qos=1)
            await sender.publish_acked(T.cmd("grid_signal"), b"garbage")
            await errors.wait_until(lambda _: link.invalid["malformed"] == 201,
                                    what="201 counted")
            answered = 201 - link.invalid["unanswered"]
            await errors.wait_for(answered, T.error)  # every answer sent arrives
            assert 50 <= answered <= 2 * 50  # at most 50 answers per second
            assert len(errors.on(T.error)) == answered
        finally:
            await sender.stop()


async def test_valid_workload_forward_becomes_an_event(mosquitto: Broker,
                                                       tmp_path: Path) -> None:
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state")
    vector = Path(__file__).parent / "vectors/annex_a/valid_workload_announcement_minimal.json"
    doc = {**json.loads(vector.read_text()),
           "site_decision": {"approval_status": "approved", "conditions": []}}
    node = make_node(tmp_path)
    async with watching(cfg, T.error) as errors, running(node, cfg) as link:
        await errors.wait_until(lambda _: link.get_status()["online"], what="link online")
        await link.client.publish_acked(T.cmd("workload"), json.dumps(doc).encode())
        await errors.wait_until(
            lambda _: any(e.code == "workload_announced" for e in node.events.recent(50)),
            what="workload event")
        (event,) = [e for e in node.events.recent(50) if e.code == "workload_announced"]
        assert "train-llm-0042" in event.message and "approved" in event.message
        # ... and handed to the scan as a command, audited there with the channel's role
        await errors.wait_until(lambda _: any("AnnounceWorkload" in r.command
                                              for r in node.commands.audit),
                                what="AnnounceWorkload audited")
        (record,) = [r for r in node.commands.audit if "AnnounceWorkload" in r.command]
        assert "train-llm-0042" in record.command and "infrastructure_manager" in record.command
        assert record.source == "mqtt.workload"
        assert errors.messages == [] and link.invalid == {}
