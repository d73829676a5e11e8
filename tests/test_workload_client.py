"""Workload client and `pswd-edge announce` against a real Mosquitto and coordinator: timeouts
that name the workload and topic, MQTT 3.1.1 fallback, CLI exit codes; clock round trips."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.federation.config import MqttConfig
from edge_runtime.federation.mqtt import Message, MqttClient
from edge_runtime.federation.timesync import ClockMonitor
from edge_runtime.federation.workload_client import (
    EXIT_INVALID,
    EXIT_NO_ANSWER,
    EXIT_OK,
    EXIT_REJECTED,
    AnnounceTimeout,
    WorkloadClient,
)
from edge_runtime.messages.models import ApprovalStatus
from tests.mosquitto import Broker, mosquitto_tls_fixture  # noqa: F401
from tests.test_site_coordinator import NODELAY, SITE, announcement, coordinators, plant

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(40)]
BASE = f"pswd/v1/{SITE}"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """Mosquitto with TCP_NODELAY, as for the coordinator tests."""
    with Broker(tmp_path / "mosquitto", extra_config=NODELAY) as broker:
        yield broker


@pytest.mark.parametrize(("protocol", "topic"), [
    ("5", f"{BASE}/workload/reply/wl-timeout"),
    ("3.1.1", f"{BASE}/workload/response/job-t")])
async def test_timeout_names_workload_and_topic(mosquitto: Broker, protocol: str,
                                                topic: str) -> None:
    wc = WorkloadClient(mosquitto.mqtt_config(protocol=protocol), site=SITE,
                        client_id="wl-timeout")
    await wc.start()
    try:
        with pytest.raises(AnnounceTimeout) as info:
            await wc.announce(announcement("job-t"), timeout_s=0.2)
    finally:
        await wc.stop()
    assert str(info.value) == (f"no infrastructure response for workload 'job-t' within "
                               f"0.2 s on {topic}")
    assert (info.value.workload_id, info.value.topic) == ("job-t", topic)


async def test_mqtt_311_client_gets_its_answer_on_the_response_topic(mosquitto: Broker) -> None:
    async with plant(mosquitto), coordinators(mosquitto):
        wc = WorkloadClient(mosquitto.mqtt_config(protocol="3.1.1"), site=SITE,
                            client_id="wl311")
        await wc.start()
        try:
            answers = await asyncio.gather(*(wc.announce(announcement(f"v3-{i}", 0.1), 1.0)
                                             for i in range(5)))
        finally:
            await wc.stop()
    assert [a.workload_id for a in answers] == [f"v3-{i}" for i in range(5)]
    assert {a.approval_status for a in answers} == {ApprovalStatus.APPROVED}


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys\nfrom edge_runtime.federation.workload_client import "
        "announce_main\nsys.exit(announce_main(sys.argv[1:]))", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_announce_cli_exit_codes(mosquitto: Broker, tmp_path: Path) -> None:
    small, big = tmp_path / "small.json", tmp_path / "big.json"
    small.write_text(announcement("cli-1").to_json())
    big.write_text(announcement("cli-2", peak_mw=5.0).to_json())
    bad = tmp_path / "bad.json"
    bad.write_text('{"PSWD_version": "1.0", "message_type": "workload_announcement"}')
    port = ["--port", str(mosquitto.port), "--site", SITE]
    # nobody answers yet
    code, _, err = await _cli(str(small), *port, "--timeout", "0.3")
    assert code == EXIT_NO_ANSWER
    assert "workload 'cli-1' within 0.3 s on pswd/v1/demo/workload/reply/announce-" in err
    async with plant(mosquitto), coordinators(mosquitto):
        code, out, err = await _cli(str(small), *port)
        assert code == EXIT_OK, err
        assert json.loads(out)["approval_status"] == "approved"
        assert err.startswith("approved in ") and err.strip().endswith(" ms")
        code, out, _ = await _cli(str(big), *port)
        assert code == EXIT_REJECTED and json.loads(out)["approval_status"] == "rejected"
    code, _, err = await _cli(str(bad), *port)
    assert code == EXIT_INVALID
    assert f"{bad}: (root): required field 'workload_id' missing" in err.splitlines()


async def test_clock_offset_over_mqtt_round_trips(mosquitto: Broker) -> None:
    """No chrony or linuxptp here: the node's ClockMonitor estimates against the coordinator.
    Same machine, same clock: the estimate must come out well inside ±1 ms."""
    import time

    monitor: ClockMonitor | None = None

    def on_message(msg: Message) -> None:
        assert monitor is not None
        monitor.handle(msg)

    async def no_daemons(argv: list[str]) -> str | None:
        return None

    async with plant(mosquitto), coordinators(mosquitto):
        node = MqttClient(mosquitto.mqtt_config(), client_id="rack-clock", on_message=on_message)
        monitor = ClockMonitor(node, site=SITE, node="rack-01", wall=time.time, run=no_daemons)
        node.start()
        await node.wait_subscribed(5)
        try:
            status = await monitor.measure()
        finally:
            await node.stop()
    assert monitor.status is status and status.source == "mqtt"
    assert status.offset_s is not None and "round trips to the site" in status.detail
    assert abs(status.offset_s) < 0.001 and not status.uncertain, status


class _Amqtt:
    """The embedded broker seen through the Broker interface the helpers use."""

    def __init__(self, port: int) -> None:
        self.port = port

    def mqtt_config(self, **overrides: Any) -> MqttConfig:
        return dataclasses.replace(MqttConfig(host="127.0.0.1", port=self.port,
                                              protocol="3.1.1"), **overrides)


async def test_demo_path_over_the_embedded_amqtt_broker() -> None:
    """`pswd-edge demo` without Mosquitto: amqtt, MQTT 3.1.1, one coordinator, no $share."""
    from edge_runtime.federation.embedded_broker import EmbeddedBroker

    async with EmbeddedBroker(port=0) as broker:
        amqtt: Any = _Amqtt(broker.port)
        async with plant(amqtt), coordinators(amqtt) as (coord,):
            wc = WorkloadClient(amqtt.mqtt_config(), site=SITE, client_id="wl-amqtt")
            await wc.start()
            try:
                ok = await wc.announce(announcement("demo-1"), 2.0)
                no = await wc.announce(announcement("demo-2", peak_mw=5.0), 2.0)
            finally:
                await wc.stop()
    assert ok.approval_status is ApprovalStatus.APPROVED
    assert no.approval_status is ApprovalStatus.REJECTED
    assert coord.handler.counts["announcements"] == 2


async def test_announce_over_tls_13_with_client_certificates(mosquitto_tls: Broker) -> None:
    async with plant(mosquitto_tls), coordinators(mosquitto_tls):
        wc = WorkloadClient(mosquitto_tls.mqtt_config(), site=SITE, client_id="wl-tls")
        await wc.start()
        try:
            resp = await wc.announce(announcement("tls-1"), 0.5)
        finally:
            await wc.stop()
    assert resp.approval_status is ApprovalStatus.APPROVED
