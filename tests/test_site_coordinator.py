"""Site coordinator against a real Mosquitto: A.1 in, A.2 out within 500 ms, by MQTT 5 response
topic and on workload/response/{id}; rejections and conditions from live telemetry; two
instances on one shared subscription; invalid announcements answered on the error topic."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.core.points import Quality, Sample
from edge_runtime.federation import state
from edge_runtime.federation.mqtt import MqttClient
from edge_runtime.federation.workload_client import AnnounceInvalid, WorkloadClient
from edge_runtime.messages.annex_a import (
    InfrastructureResponse,
    WorkloadAnnouncement,
    parse_as,
    validate,
)
from edge_runtime.messages.models import ApprovalStatus
from edge_runtime.messages.telemetry import (
    PointType,
    declare_points,
    encode_batch,
    make_batch,
)
from edge_runtime.site.config import SiteConfig
from edge_runtime.site.coordinator import SiteCoordinator
from tests.mosquitto import Broker, Inbox

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

NODELAY = "set_tcp_nodelay true\n"  # as production should: no 40 ms delayed-ACK stalls


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto configured as coordinator/workload traffic needs it (TCP_NODELAY)."""
    with Broker(tmp_path / "mosquitto", extra_config=NODELAY) as broker:
        yield broker


SITE = "demo"
BASE = f"pswd/v1/{SITE}"
CONFIG = SiteConfig(power_limit_kw=1000.0, ramp_limit_kw_per_s=500.0,
                    cooling_capacity_kw={"cdu-01": 1000.0})
RACK_POINTS = declare_points([("rack_meter.power_kw", "kW", PointType.FLOAT),
                              ("battery.soc_pct", "%", PointType.FLOAT),
                              ("battery.w_dis_cha_max_kw", "kW", PointType.FLOAT)])


def announcement(workload_id: str, peak_mw: float = 0.2, *, throttle: bool = False,
                 ramp_mw_s: float = 0.1) -> WorkloadAnnouncement:
    return parse_as(WorkloadAnnouncement, {
        "PSWD_version": "1.0", "message_type": "workload_announcement",
        # now: the coordinator refuses timestamps beyond [site] max_clock_skew_s
        "timestamp": state.timestamp(time.time()), "workload_id": workload_id,
        "workload_type": "ai_training",
        "power_profile": {"peak_power_mw": peak_mw, "baseline_power_mw": peak_mw / 5,
                          "ramp_rate_mw_per_sec": ramp_mw_s},
        "flexibility_parameters": {"throttling_capability": throttle,
                                   "priority_level": "normal"}})


@asynccontextmanager
async def plant(broker: Broker, load_kw: float = 300.0) -> AsyncIterator[Inbox]:
    """A rack node and a CDU node: retained births, rack telemetry; yields the inbox of
    their cmd topics and the site's workload/prepare."""
    inbox = Inbox()
    node = MqttClient(broker.mqtt_config(), client_id="plant-nodes", on_message=inbox)
    node.subscribe(f"{BASE}/+/cmd/+", 1)
    node.subscribe(f"{BASE}/workload/prepare", 1)
    node.start()
    await node.wait_subscribed(5)
    for name, role, points in (("rack-01", "rack", RACK_POINTS), ("cdu-01", "cdu", ())):
        who = state.Identity(SITE, name, role, "test")
        await node.publish_acked(f"{BASE}/{name}/state", state.birth_json(
            who, session=1, wall_s=time.time(), points=points, period_ms=100), 1, retain=True)
    plant_node = PlantNode(node)

    async def telemetry() -> None:  # like a node's scan: a batch every 100 ms
        while True:
            plant_node.publish(load_kw)
            await asyncio.sleep(0.1)

    task = asyncio.create_task(telemetry())
    try:
        yield inbox
    finally:
        task.cancel()
        await node.stop()


class PlantNode:
    def __init__(self, client: MqttClient) -> None:
        self.client, self.seq = client, 0

    def publish(self, load_kw: float) -> None:
        now = time.time()
        samples = [(0, Sample(load_kw, Quality.GOOD, now)), (1, Sample(80.0, Quality.GOOD, now)),
                   (2, Sample(100.0, Quality.GOOD, now))]
        self.client.publish(f"{BASE}/rack-01/telemetry",
                            encode_batch(make_batch(samples, session=1, seq=self.seq)), 0)
        self.seq += 1


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) for state another task changes; polls because the state has no event."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def coordinators(broker: Broker, n: int = 1,
                       config: SiteConfig = CONFIG) -> AsyncIterator[list[SiteCoordinator]]:
    """n coordinator instances, started, with the plant's state and telemetry ingested."""
    coords = [SiteCoordinator(broker.mqtt_config(), site=SITE, node=f"site-{i}", config=config)
              for i in range(n)]
    for c in coords:
        await c.start()
    try:
        await until(lambda: all(c.snapshot().power_known
                                and len(c.handler.aggregate.nodes) >= 2 for c in coords))
        yield coords
    finally:
        for c in coords:
            await c.stop()


@asynccontextmanager
async def workload_client(broker: Broker, **cfg: Any) -> AsyncIterator[WorkloadClient]:
    wc = WorkloadClient(broker.mqtt_config(**cfg), site=SITE, client_id="wl-test")
    await wc.start()
    try:
        yield wc
    finally:
        await wc.stop()


@asynccontextmanager
async def watcher(broker: Broker, *topics: str) -> AsyncIterator[Inbox]:
    inbox = Inbox()
    c = MqttClient(broker.mqtt_config(), client_id="watcher", on_message=inbox)
    for t in topics:
        c.subscribe(t, 1)
    c.start()
    await c.wait_subscribed(5)
    try:
        yield inbox
    finally:
        await c.stop()


async def test_announcement_answered_within_500_ms_both_ways_and_forwarded(
        mosquitto: Broker) -> None:
    async with plant(mosquitto) as node_cmds, coordinators(mosquitto), \
            watcher(mosquitto, f"{BASE}/workload/response/+") as responses, \
            workload_client(mosquitto) as wc:
        t0 = time.perf_counter()
        resp = await wc.announce(announcement("train-1"), timeout_s=0.5)
        latency_ms = (time.perf_counter() - t0) * 1000
        print(f"A.1 -> A.2 round trip through Mosquitto: {latency_ms:.2f} ms")
        assert latency_ms < 500
        assert resp.workload_id == "train-1" and resp.approval_status is ApprovalStatus.APPROVED
        assert resp.approved_power_mw == pytest.approx(0.2)
        cap = resp.infrastructure_capacity
        assert cap is not None and cap.available_power_mw == pytest.approx(0.7)  # 1000-300 kW
        assert cap.battery_storage_available is True
        # the same A.2 on workload/response/{id}, for everyone else
        msgs = await responses.wait_for(1)
        assert msgs[0].topic == f"{BASE}/workload/response/train-1"
        assert parse_as(InfrastructureResponse, json.loads(msgs[0].payload)) == resp
        # rack and CDU told to prepare: one message, on the topic every node subscribes to
        cmds = await node_cmds.wait_for(1, f"{BASE}/workload/prepare")
        body = json.loads(cmds[0].payload)
        assert validate(body) == []  # the A.1 itself, plus the site's decision
        assert body["workload_id"] == "train-1"
        assert body["site_decision"]["approved_power_kw"] == pytest.approx(200.0)
        assert body["site_decision"]["approval_status"] == "approved"
        assert body["site_decision"]["roles"] == ["rack", "cdu"]
        assert not [m for m in node_cmds.messages if m.topic.endswith("/cmd/workload")]
        # no rebirth needed: the state birth carried the telemetry aliases
        assert not [m for m in node_cmds.messages if m.topic.endswith("/cmd/rebirth")]


async def test_rejection_with_reason_and_conditions_from_live_telemetry(
        mosquitto: Broker) -> None:
    async with plant(mosquitto, load_kw=600.0), coordinators(mosquitto), \
            workload_client(mosquitto) as wc:
        rejected = await wc.announce(announcement("big-1", peak_mw=0.9), timeout_s=0.5)
        assert rejected.approval_status is ApprovalStatus.REJECTED
        assert rejected.conditions == ("reason:peak 900 kW exceeds power headroom 400 kW and "
                                       "the workload cannot throttle",)
        assert rejected.approved_power_mw == 0
        capped = await wc.announce(announcement("big-2", peak_mw=0.9, throttle=True), 0.5)
        assert capped.approval_status is ApprovalStatus.APPROVED_WITH_CONDITIONS
        assert capped.conditions is not None and "power_cap_kw:400" in capped.conditions
        assert capped.approved_power_mw == pytest.approx(0.4)
        # the headroom is now reserved: the next one no longer fits
        third = await wc.announce(announcement("small-3", peak_mw=0.1), 0.5)
        assert third.approval_status is ApprovalStatus.REJECTED
        assert third.conditions is not None and "power headroom 0 kW" in third.conditions[0]


async def test_two_instances_split_a_shared_subscription(mosquitto: Broker) -> None:
    big = SiteConfig(power_limit_kw=1e6, ramp_limit_kw_per_s=1e6,
                     cooling_capacity_kw={"cdu-01": 1e6})
    n = 40
    async with plant(mosquitto), coordinators(mosquitto, 2, big) as coords, \
            watcher(mosquitto, f"{BASE}/workload/response/+") as responses, \
            workload_client(mosquitto) as wc:
        answers = await asyncio.gather(*(wc.announce(announcement(f"job-{i}"), 2.0)
                                         for i in range(n)))
        assert sorted(a.workload_id for a in answers) == sorted(f"job-{i}" for i in range(n))
        await responses.wait_for(n)
        handled = [c.handler.counts["announcements"] for c in coords]
        assert sum(handled) == n and all(h > 0 for h in handled), handled
        # each instance books what the other admitted
        await until(lambda: all(len(c.handler.aggregate.reservations) == n for c in coords))
    ids = [m.topic.rsplit("/", 1)[1] for m in responses.messages]
    assert sorted(ids) == sorted(f"job-{i}" for i in range(n))  # each answered exactly once


async def test_invalid_announcements_answered_on_error_topic(mosquitto: Broker) -> None:
    async with plant(mosquitto), coordinators(mosquitto) as (coord,), \
            watcher(mosquitto, f"{BASE}/+/error") as errors, \
            workload_client(mosquitto) as wc:
        raw = MqttClient(mosquitto.mqtt_config(), client_id="raw")
        raw.start()
        await raw.wait_connected(5)
        await raw.publish_acked(f"{BASE}/workload/announce", b"{not json", 1)
        wrong = announcement("bad-2").to_dict()
        del wrong["power_profile"]
        wrong["workload_type"] = "mining"
        await raw.publish_acked(f"{BASE}/workload/announce", json.dumps(wrong).encode(), 1)
        await raw.stop()
        msgs = await errors.wait_for(2)
        assert {m.topic for m in msgs} == {f"{BASE}/site-0/error"}
        first, second = (json.loads(m.payload) for m in msgs[:2])
        assert first["errors"][0]["field"] == "(root)"
        assert first["errors"][0]["reason"].startswith("not valid JSON")
        assert second["workload_id"] == "bad-2"
        assert {(e["field"], e["reason"]) for e in second["errors"]} == {
            ("(root)", "required field 'power_profile' missing"),
            ("workload_type", "must be one of ai_training, ai_inference, hpc, "
                              "traditional_compute, got 'mining'")}
        # with a response topic the requester hears it at once instead of timing out
        with pytest.raises(AnnounceInvalid, match="workload_type: must be one of"):
            await wc.announce_raw("bad-2", json.dumps(wrong).encode(), 0.5)
        # an A.2 sent to the announce topic, and an id that cannot be a topic level
        a2 = parse_as(InfrastructureResponse, {
            "PSWD_version": "1.0", "message_type": "infrastructure_response",
            "timestamp": "2027-01-15T08:00:00Z", "workload_id": "x",
            "approval_status": "approved"})
        with pytest.raises(AnnounceInvalid, match="message_type: must be workload_announcement"):
            await wc.announce_raw("x", a2.to_json().encode(), 0.5)
        with pytest.raises(AnnounceInvalid, match="workload_id"):
            await wc.announce(announcement("a/b#"), 0.5)
        assert coord.handler.counts["invalid"] == 5
        # and the coordinator still answers valid ones
        ok = await wc.announce(announcement("good-1"), 0.5)
        assert ok.approval_status is ApprovalStatus.APPROVED


def site_toml(tmp_path: Path, port: int, *, role: str = "site", extra: str = "") -> Path:
    path = tmp_path / "site.toml"
    path.write_text(f'[node]\nname = "site-9"\nrole = "{role}"\nsite = "{SITE}"\n'
                    f'scan_period_ms = 100\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
                    f'client_id = "site-9"\n[site]\npower_limit_kw = 1000.0\n'
                    f'ramp_limit_kw_per_s = 500.0\n{extra}[site.cooling_capacity_kw]\n'
                    'cdu-01 = 900.0\n')
    return path


async def test_site_role_runs_from_its_config_file(mosquitto: Broker, tmp_path: Path) -> None:
    from edge_runtime.assembly import assemble, load_node_config

    path = site_toml(tmp_path, mosquitto.port)
    async with plant(mosquitto), workload_client(mosquitto) as wc:
        task = asyncio.create_task(assemble(load_node_config(path)).run())
        try:
            answer = None
            for _ in range(50):  # until the coordinator is up and has read the plant
                try:
                    answer = await wc.announce(announcement("from-file"), 0.2)
                except TimeoutError:
                    continue
                if answer.approval_status is ApprovalStatus.APPROVED:
                    break
            assert answer is not None and answer.approval_status is ApprovalStatus.APPROVED
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def test_site_config_file_errors(tmp_path: Path) -> None:
    from edge_runtime.assembly import load_node_config
    from edge_runtime.config.reader import ConfigError

    path = site_toml(tmp_path, 1883, role="rack", extra="bogus = 1\n")
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert info.value.lines == [f"{path}: [site] (table): only for role site, not 'rack'"]
    path = site_toml(tmp_path, 1883, extra="bogus = 1\n")
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert info.value.lines == [f"{path}: [site] bogus: unknown key"]
    no_mqtt = tmp_path / "nomqtt.toml"
    no_mqtt.write_text('[node]\nname = "s"\nrole = "site"\n')
    with pytest.raises(ConfigError, match=r"\[mqtt\] \(table\): required for role site"):
        load_node_config(no_mqtt)


async def test_forward_reaches_a_real_node_link(mosquitto: Broker, tmp_path: Path) -> None:
    """A CDU node on NodeLink gets the accepted announcement as cmd/workload and records it."""
    from edge_runtime.assembly import NodeConfig, assemble
    from edge_runtime.core.clock import WallClock
    from tests.fakes import FakeDevice, device, load_map, write_io_map
    from tests.test_link_state import running

    (tmp_path / "cdu").mkdir()
    io_map = load_map(write_io_map(tmp_path / "cdu"))
    node_cfg = NodeConfig(name="cdu-02", role="cdu", site=SITE, scan_period_s=0.05,
                          watchdog_s=2.0, devices=(device(io_map),),
                          source=tmp_path / "cdu" / "n.toml", io_maps_dir=tmp_path / "cdu")
    node = assemble(node_cfg, clock=WallClock(), watchdog_thread=False, blocks=[], interlocks=[],
                driver_factory=lambda c, live, clock: {d.name: FakeDevice(d, live)
                                                       for d in c.devices})
    cfg = dataclasses.replace(mosquitto.mqtt_config(), state_dir=tmp_path / "cdu-state")
    async with plant(mosquitto), running(node, cfg), coordinators(mosquitto) as (coord,), \
            workload_client(mosquitto) as wc:
        await until(lambda: "cdu-02" in coord.handler.aggregate.nodes)
        resp = await wc.announce(announcement("to-cdu"), 0.5)
        assert resp.approval_status is ApprovalStatus.APPROVED
        await until(lambda: any(e.code == "workload_announced"
                                for e in node.events.recent(50)))
        # a site-wide notice for the racks only is ignored by the CDU; the next one is not
        for wid, roles in (("racks-only", ["rack"]), ("cdus-too", ["rack", "cdu"])):
            doc = {**json.loads(announcement(wid).to_json()),
                   "site_decision": {"approval_status": "approved", "roles": roles}}
            await wc.client.publish_acked(f"{BASE}/workload/prepare", json.dumps(doc), 1)
        await until(lambda: any("cdus-too" in e.message for e in node.events.recent(50)))
        assert not any("racks-only" in e.message for e in node.events.recent(50))
    assert coord.handler.aggregate.nodes["cdu-02"].role == "cdu"


async def test_coordinator_answers_again_after_a_broker_restart(mosquitto: Broker) -> None:
    """Broker killed and restarted: the coordinator reconnects, resubscribes (the shared
    announce subscription and the No Local peer one) and answers again."""
    async with plant(mosquitto), coordinators(mosquitto, 2) as coords, \
            workload_client(mosquitto) as wc:
        first = await wc.announce(announcement("before"), 0.5)
        assert first.approval_status is ApprovalStatus.APPROVED
        mosquitto.restart()  # SIGKILL: retained states are gone with it (no persistence)
        await wc.client.wait_subscribed(10)
        for c in coords:
            await c.client.wait_subscribed(10)
        answers = await asyncio.gather(*(
            wc.announce(announcement(f"after-{i}", 0.05, ramp_mw_s=0.05), 2.0)
            for i in range(6)))
        assert {a.workload_id for a in answers} == {f"after-{i}" for i in range(6)}
        # the plant kept publishing telemetry, so the state is known: all fit
        assert {a.approval_status for a in answers} == {ApprovalStatus.APPROVED}
        # and peer bookings flow again between the instances (No Local resubscribed)
        await until(lambda: all(f"after-{i}" in c.handler.aggregate.reservations
                                for c in coords for i in range(6)))


def test_shipped_site_example_loads() -> None:
    from edge_runtime.assembly import assemble, load_node_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_node_config(root / "examples" / "site.toml")
    node, site, mqtt, config = cfg.name, cfg.site, cfg.mqtt, cfg.coordinator
    assert mqtt is not None and config is not None
    assert (node, site, mqtt.protocol) == ("site-01", "demo", "5")
    # The assembler gives a site node its coordinator (and no link: it has no devices)
    assert set(assemble(cfg).services) == {"coordinator", "ids"}
    assert config.cooling_capacity_kw == {"cdu-01": 180.0} and config.power_limit_kw == 200.0


async def test_signed_peers_book_each_other_and_nothing_forged(mosquitto: Broker) -> None:
    """Issue 8, finding 10, through the broker: with coordinator_keys, each instance books the
    other's signed decisions; a forged 1,000 MW A.2 dated 2099 on workload/response/+ and an
    unsigned decision on a coordinator's decision topic book nothing."""
    signed = SiteConfig(power_limit_kw=1e6, ramp_limit_kw_per_s=1e6,
                        cooling_capacity_kw={"cdu-01": 1e6}, peer_key=bytes(range(32)))
    n = 10
    async with plant(mosquitto), coordinators(mosquitto, 2, signed) as coords, \
            workload_client(mosquitto) as wc:
        rogue = MqttClient(mosquitto.mqtt_config(), client_id="rogue")
        rogue.start()
        await rogue.wait_connected(5)
        try:
            forged_a2 = {"PSWD_version": "1.0", "message_type": "infrastructure_response",
                         "timestamp": "2099-01-01T00:00:00Z", "workload_id": "forged-a2",
                         "approval_status": "approved", "approved_power_mw": 1000.0}
            await rogue.publish_acked(f"{BASE}/workload/response/forged-a2",
                                      json.dumps(forged_a2).encode(), 1)
            unsigned = {"PSWD_version": "1.0", "workload_id": "forged-peer",
                        "approval_status": "approved", "approved_power_kw": 900.0,
                        "heat_kw": 900.0, "start_time": state.timestamp(time.time()),
                        "ramp_kw_per_s": 1.0, "instance": "site-0",
                        "timestamp": state.timestamp(time.time())}
            await rogue.publish_acked(f"{BASE}/coordinator/site-0/decision",
                                      json.dumps(unsigned).encode(), 1)
        finally:
            await rogue.stop()
        answers = await asyncio.gather(*(wc.announce(announcement(f"s-{i}"), 2.0)
                                         for i in range(n)))
        assert all(a.approval_status is ApprovalStatus.APPROVED for a in answers)
        await until(lambda: all(len(c.handler.aggregate.reservations) == n for c in coords))
        await until(lambda: coords[1].handler.counts["peer_refused"] == 1)
        for c in coords:
            booked = c.handler.aggregate.reservations
            assert booked.get("forged-a2") is None and booked.get("forged-peer") is None
        assert coords[1].handler.peers.refused == {"signature": 1}
