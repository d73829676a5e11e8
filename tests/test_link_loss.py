"""Site-link watchdog: outputs the site held over MQTT go back to local control when the link
has been down for `[mqtt] link_loss_s` (or are held at failsafe, or kept), with an alarm;
local holds and technician forces stay.

Against a real Mosquitto that the tests kill and restart, on the shipped rack config (the
smoothing block is the local control of battery.w_set_kw) with fake drivers whose inputs a
feeder block keeps GOOD, so the safety layer has no reason of its own to touch the outputs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.core.clock import VirtualClock, WallClock
from edge_runtime.core.commands import ForceOutput, ReleaseOutput, SetOutput
from edge_runtime.core.events import Event
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality, Sample
from edge_runtime.federation.config import MqttConfig
from edge_runtime.federation.link import NodeLink
from edge_runtime.federation.link_loss import LinkLossGuard, LinkLossWatchdog
from edge_runtime.federation.mqtt import MqttClient
from edge_runtime.federation.topics import NodeTopics
from edge_runtime.node import Node
from tests.fakes import FakeDevice
from tests.mosquitto import Broker, free_port, mosquitto_fixture  # noqa: F401
from tests.test_link_state import running

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RACK = load_node_config(EXAMPLES / "rack.toml")
T = NodeTopics(RACK.site, RACK.name)
STAMP = "2026-11-27T00:00:00Z"
SETPOINT, ENABLE, HEARTBEAT = "battery.w_set_kw", "battery.w_set_ena", "battery.ctrl_hb"
SITE_KW = 40.0  # the site's dispatch: discharge 40 kW
LOSS_S = 1.0

# A healthy inverter and meter: SoC at its target, no fault, remote control, 20 kW rack load.
INPUTS = {"rack_meter.power_kw": 20.0, "battery.soc_pct": 60.0, "battery.w_cha_max_kw": 100.0,
          "battery.w_dis_cha_max_kw": 150.0, "battery.inv_st": 4.0, "battery.loc_rem_ctl": 0.0,
          "battery.evt1": 0.0, "battery.ac_w_kw": 0.0}


class Feeder:
    """Keeps every input GOOD (as a polling driver would), before the smoothing block."""

    name = "feeder"

    def __init__(self, node: Node) -> None:
        self.node = node

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        wall = self.node.clock.wall()
        for point in image.inputs_info:
            self.node.live[point] = Sample(INPUTS.get(point, 0.0), Quality.GOOD, wall)


def rack_node() -> Node:
    cfg = dataclasses.replace(RACK, scan_period_s=0.02)  # 20 ms: two shared cores
    node = assemble(cfg, clock=WallClock(), watchdog_thread=False,
                driver_factory=lambda c, live, clock: {d.name: FakeDevice(d, live)
                                                       for d in c.devices})
    node.engine.blocks.insert(0, Feeder(node))  # inputs of scan n+1 (latched before blocks)
    return node


def wire(node: Node, point: str) -> float:
    """What the last scan handed the driver for `point`."""
    device, name = point.split(".")
    driver = node.drivers[device]
    assert isinstance(driver, FakeDevice) and driver.staged
    return driver.staged[-1][1][name]


def events(node: Node, code: str) -> list[Event]:
    return [e for e in node.events.recent(1000) if e.code == code]


async def until(pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll a condition on node state with a bound (the link offers no event to await)."""
    async def _poll() -> None:
        while not pred():
            await asyncio.sleep(0.02)
    try:
        await asyncio.wait_for(_poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"{what} not met within {timeout} s") from None


def site_command(point: str, value: float) -> bytes:
    return json.dumps({"PSWD_version": "1.0", "timestamp": STAMP, "action": "set_output",
                       "point": point, "value": value}).encode()


async def site_holds_setpoint(cfg: MqttConfig, node: Node, link: NodeLink) -> None:
    """The site dispatches SITE_KW on battery_control; wait until it is on the wire."""
    await until(lambda: bool(link.get_status()["online"]), "link online")
    site = MqttClient(cfg, client_id="site-01")
    site.start()
    try:
        await site.wait_connected(5)
        await site.publish_acked(T.cmd("battery_control"), site_command(SETPOINT, SITE_KW), 1,
                                 timeout=5)
    finally:
        await site.stop()
    await until(lambda: node.manual.holds().get(SETPOINT) == "mqtt.battery_control"
                and wire(node, SETPOINT) == SITE_KW, "site setpoint applied")


@pytest.mark.timeout(30)
async def test_link_loss_releases_site_holds_only(mosquitto: Broker, tmp_path: Path) -> None:
    # no coordinator here (test_coordinator_liveness.py has them): the broker is the link
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state", link_loss_s=LOSS_S,
                                require_coordinator=False)
    node = rack_node()
    async with running(node, cfg) as link:
        # A local operator enables the inverter by hand; a technician forces the heartbeat.
        node.commands.submit(SetOutput(ENABLE, 1.0, source="local"))
        node.commands.submit(ForceOutput(HEARTBEAT, 7.0, role="infrastructure_manager",
                                         source="local"))
        await site_holds_setpoint(cfg, node, link)
        assert node.role_blocks[0].degraded == "operator"  # smoothing follows the site's value

        mosquitto.kill()
        killed = node.clock.monotonic()
        await until(lambda: bool(events(node, "site_link_lost")), "site link lost alarm")
        lost_after = node.clock.monotonic() - killed
        assert LOSS_S <= lost_after < LOSS_S + 2.0, lost_after
        [alarm] = events(node, "site_link_lost")
        assert alarm.message == (f"site link lost for {LOSS_S:g} s: released {SETPOINT} "
                                 "to local control")
        assert alarm.source == "link_loss" and alarm.severity == "alarm"

        # Back under local control: the smoothing block writes it again, bumplessly from the
        # site's 40 kW towards what it computes (0 kW at SoC target), ramp-limited.
        await until(lambda: SETPOINT not in node.manual.holds(), "site hold released")
        await until(lambda: wire(node, SETPOINT) < SITE_KW - 1.0, "smoothing moving it")
        assert node.role_blocks[0].degraded == ""
        await until(lambda: abs(wire(node, SETPOINT)) < 1.0, "setpoint back near 0 kW")
        release = [a for a in node.commands.audit if a.source == "link_loss"]
        assert len(release) == 1 and release[0].accepted and SETPOINT in release[0].command
        # Untouched: the operator's hold and the technician's force.
        assert node.manual.holds() == {ENABLE: "local"}
        assert wire(node, ENABLE) == 1.0 and wire(node, HEARTBEAT) == 7.0
        status = link.get_status()
        assert status["link_lost"] and status["released_on_loss"] == [SETPOINT]

        mosquitto.start()
        await until(lambda: bool(events(node, "site_link_restored")), "link restored event",
                    timeout=8.0)
        assert not link.get_status()["link_lost"]
        [back] = events(node, "site_link_restored")
        assert back.message.startswith("site link back after ")
        assert len(events(node, "site_link_lost")) == 1  # once per outage
        # The site can hold it again once it is back.
        await site_holds_setpoint(cfg, node, link)


@pytest.mark.timeout(30)
async def test_hold_policy_keeps_the_site_value(mosquitto: Broker, tmp_path: Path) -> None:
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state", link_loss_s=LOSS_S,
                                on_link_loss="hold", require_coordinator=False)
    node = rack_node()
    async with running(node, cfg) as link:
        await site_holds_setpoint(cfg, node, link)
        mosquitto.kill()
        await until(lambda: bool(events(node, "site_link_lost")), "site link lost alarm")
        [alarm] = events(node, "site_link_lost")
        assert alarm.message == (f"site link lost for {LOSS_S:g} s: holding {SETPOINT} as the "
                                 "site set them (on_link_loss = hold)")
        # Several scans later: still held, still on the wire, nothing submitted.
        scans = node.engine.stats.cycles
        await until(lambda: node.engine.stats.cycles >= scans + 10, "10 scans")
        assert node.manual.holds() == {SETPOINT: "mqtt.battery_control"}
        assert wire(node, SETPOINT) == SITE_KW
        assert not any(a.source == "link_loss" for a in node.commands.audit)
        mosquitto.start()
        await until(lambda: bool(events(node, "site_link_restored")), "link restored event",
                    timeout=8.0)


@pytest.mark.timeout(15)
async def test_never_connected_counts_as_lost(tmp_path: Path) -> None:
    cfg = MqttConfig(port=free_port(), state_dir=tmp_path / "state", reconnect_min_s=0.1,
                     reconnect_max_s=0.5, link_loss_s=LOSS_S)  # nothing listens there
    node = rack_node()
    async with running(node, cfg):
        await until(lambda: bool(events(node, "site_link_lost")), "site link lost alarm")
    [alarm] = events(node, "site_link_lost")
    assert alarm.message == f"site link lost for {LOSS_S:g} s: no output held by the site"


# -- the pieces, without a broker ------------------------------------------------------------

def test_watchdog_fires_once_per_outage_and_reports_the_return() -> None:
    wd = LinkLossWatchdog(10.0, now=0.0)  # down from start-up
    assert not wd.due(9.99)
    assert wd.due(10.0) and not wd.due(11.0)
    assert wd.link(True, 12.5) == 12.5  # back after the declared loss: how long it lasted
    assert not wd.due(100.0)  # up: nothing due however long
    assert wd.link(False, 100.0) is None
    assert wd.link(False, 105.0) is None  # a second "down" does not restart the outage
    assert not wd.due(109.9) and wd.due(110.0)
    # A short outage is forgotten, and a return without a declared loss reports nothing.
    assert wd.link(True, 111.0) == 11.0
    assert wd.link(False, 200.0) is None and wd.link(True, 205.0) is None
    assert not wd.due(1000.0)


def test_zero_disables_the_watchdog() -> None:
    wd = LinkLossWatchdog(0.0, now=0.0)
    assert not wd.due(1e9) and wd.link(True, 1e9) is None


def test_conditional_release_leaves_other_holds() -> None:
    node = assemble(RACK, clock=VirtualClock(), watchdog_thread=False,
                driver_factory=lambda c, live, clock: {d.name: FakeDevice(d, live)
                                                       for d in c.devices})
    q = node.commands
    q.submit(SetOutput(SETPOINT, 40.0, source="mqtt.battery_control", role="grid_operator"))
    q.submit(SetOutput(ENABLE, 1.0, source="local"))
    node.engine.scan_once(1000.0)
    assert node.manual.holds() == {SETPOINT: "mqtt.battery_control", ENABLE: "local"}
    # An operator takes the setpoint over between the watchdog's look and the next scan.
    q.submit(SetOutput(SETPOINT, 10.0, source="local"))
    for point in (SETPOINT, ENABLE, HEARTBEAT):
        q.submit(ReleaseOutput(point, source="link_loss", held_by="mqtt."))
    q.submit(ReleaseOutput("battery.nope", source="link_loss", held_by="mqtt."))
    q.submit(SetOutput(SETPOINT, 0.0, source="link_loss", held_by="mqtt."))  # failsafe policy
    q.submit(SetOutput(SETPOINT, 999.0, source="link_loss", held_by="mqtt."))
    node.engine.scan_once(1000.01)
    assert node.manual.holds() == {SETPOINT: "local", ENABLE: "local"}
    assert node.manual.manual == {SETPOINT: 10.0, ENABLE: 1.0}
    audit = [(a.accepted, a.reason) for a in node.commands.audit if a.source == "link_loss"]
    assert audit == [(True, "held by local: left as is"), (True, "held by local: left as is"),
                     (True, "not held: left as is"), (False, "unknown point 'battery.nope'"),
                     (True, "held by local: left as is"),
                     (False, "battery.w_set_kw: 999 kW outside -500.0..500.0")]
    # A plain release (no held_by) still releases whoever holds it.
    q.submit(ReleaseOutput(SETPOINT))
    node.engine.scan_once(1000.02)
    assert node.manual.holds() == {ENABLE: "local"}


def test_guard_in_simulated_time_acts_at_link_loss_s_on_the_node_clock() -> None:
    clock = VirtualClock(start=1000.0)
    node = assemble(RACK, clock=clock, watchdog_thread=False,
                driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                     for d in c.devices})
    guard = LinkLossGuard(node, after_s=10.0)
    node.engine.observers.append(guard)
    guard.link(True)
    node.commands.submit(SetOutput(SETPOINT, SITE_KW, source="mqtt.battery_control",
                                   role="grid_operator"))
    node.engine.scan_once(clock.monotonic())
    clock.advance(5.0)
    guard.link(False)  # at 1005
    for t in (1005.0, 1010.0, 1014.99):
        clock.advance(t - clock.monotonic())
        node.engine.scan_once(t)
    assert not guard.lost and not events(node, "site_link_lost")
    assert node.manual.holds() == {SETPOINT: "mqtt.battery_control"}
    clock.advance(1015.0 - clock.monotonic())
    node.engine.scan_once(1015.0)  # the observer queues the release: applied next scan
    assert guard.lost and guard.released == [SETPOINT]
    [alarm] = events(node, "site_link_lost")
    assert alarm.ts == clock.wall()
    node.engine.scan_once(1015.01)
    assert node.manual.holds() == {}
    node.engine.scan_once(1016.0)
    assert len(events(node, "site_link_lost")) == 1  # once per outage
    clock.advance(1020.0 - clock.monotonic())
    guard.link(True)
    [back] = events(node, "site_link_restored")
    assert back.message == "site link back after 15.0 s"


def test_failsafe_policy_holds_site_outputs_at_their_failsafe_value() -> None:
    clock = VirtualClock(start=1000.0)
    node = assemble(RACK, clock=clock, watchdog_thread=False,
                driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                     for d in c.devices})
    guard = LinkLossGuard(node, after_s=2.0, policy="failsafe")
    node.engine.observers.append(guard)
    guard.link(True)
    node.commands.submit(SetOutput(SETPOINT, SITE_KW, source="mqtt.battery_control",
                                   role="grid_operator"))
    node.commands.submit(SetOutput(ENABLE, 1.0, source="mqtt.battery_control",
                                   role="grid_operator"))
    node.engine.scan_once(1000.0)
    guard.link(False)
    clock.advance(2.0)
    node.engine.scan_once(1002.0)
    [alarm] = events(node, "site_link_lost")
    assert alarm.message == ("site link lost for 2 s: held at failsafe battery.w_set_ena = 0, "
                             "battery.w_set_kw = 0 kW")
    node.engine.scan_once(1002.01)
    # Held by the guard at the io_map failsafe (0 kW, disabled), not by the site any more.
    assert node.manual.holds() == {SETPOINT: "link_loss", ENABLE: "link_loss"}
    assert wire(node, SETPOINT) == 0.0 and wire(node, ENABLE) == 0.0
    assert node.role_blocks[0].degraded == "operator"  # smoothing follows, bumpless later
    guard.link(True)  # back: the failsafe hold stays until someone releases it
    node.engine.scan_once(1003.0)
    assert node.manual.holds() == {SETPOINT: "link_loss", ENABLE: "link_loss"}
