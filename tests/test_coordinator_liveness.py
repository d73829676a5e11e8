"""Coordinator liveness (issue 8, finding 7): a site coordinator that dies while the broker stays
up is a lost site link for the nodes. Against a real Mosquitto: a coordinator process killed
with SIGKILL (its will fires), one stopped cleanly (it publishes offline), the grace at start,
and the lab opt-out; then the pieces in simulated time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_runtime.assembly import assemble
from edge_runtime.core.clock import VirtualClock
from edge_runtime.core.commands import SetOutput
from edge_runtime.federation.coordinator_state import (
    CoordinatorPresence,
    parse_state,
    state_json,
)
from edge_runtime.federation.link_loss import LinkLossGuard
from edge_runtime.federation.topics import RESERVED_NODES, NodeTopics, SiteTopics
from edge_runtime.site.config import SiteConfig
from edge_runtime.site.coordinator import SiteCoordinator
from tests.fakes import FakeDevice
from tests.mosquitto import Broker, mosquitto_fixture  # noqa: F401
from tests.test_link_loss import (
    LOSS_S,
    RACK,
    SETPOINT,
    SITE_KW,
    events,
    rack_node,
    site_holds_setpoint,
    until,
    wire,
)
from tests.test_link_state import running

pytestmark = pytest.mark.anyio
TOPICS = SiteTopics(RACK.site)
ROOT = Path(__file__).resolve().parents[1]


def coordinator(broker: Broker, name: str = "site-01") -> SiteCoordinator:
    return SiteCoordinator(broker.mqtt_config(keepalive_s=5), site=RACK.site, node=name,
                           config=SiteConfig())


def coordinator_process(broker: Broker, name: str) -> subprocess.Popen[bytes]:
    """A coordinator in a process of its own, so it can be killed like a crash."""
    code = textwrap.dedent(f"""
        import asyncio
        from edge_runtime.federation.config import MqttConfig
        from edge_runtime.site.config import SiteConfig
        from edge_runtime.site.coordinator import SiteCoordinator
        cfg = MqttConfig(host={broker.host!r}, port={broker.port}, keepalive_s=5)
        asyncio.run(SiteCoordinator(cfg, site={RACK.site!r}, node={name!r},
                                    config=SiteConfig()).run())
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def lost(node: object) -> list[str]:
    return [e.message for e in events(node, "site_link_lost")]  # type: ignore[arg-type]


@pytest.mark.timeout(40)
async def test_a_killed_coordinator_is_a_lost_link(mosquitto: Broker, tmp_path: Path) -> None:
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state", link_loss_s=LOSS_S)
    proc = coordinator_process(mosquitto, "site-01")
    try:
        # up before the node starts (a process takes a while on a loaded machine): the node's
        # grace at start is only LOSS_S
        await _retained(mosquitto, TOPICS.coordinator_state("site-01"), timeout=20.0)
        node = rack_node()
        async with running(node, cfg) as link:
            await until(lambda: link.link_loss.coordinators.online == ("site-01",),
                        "coordinator online")
            await site_holds_setpoint(cfg, node, link)
            assert not lost(node) and link.get_status()["coordinators_online"] == ["site-01"]
            os.kill(proc.pid, signal.SIGKILL)  # the broker stays up; the will fires
            killed = node.clock.monotonic()
            await until(lambda: not link.link_loss.coordinators.online, "will seen")
            await until(lambda: bool(lost(node)), "site link lost alarm")
            after = node.clock.monotonic() - killed
            assert LOSS_S <= after < LOSS_S + 2.0, after
            assert lost(node) == [f"site link lost for {LOSS_S:g} s (no site coordinator "
                                  f"online): released {SETPOINT} to local control"]
            await until(lambda: SETPOINT not in node.manual.holds(), "site hold released")
            assert link.get_status()["link_lost"]
            # another instance comes up: the link is back
            back = coordinator(mosquitto, "site-02")
            await back.start()
            try:
                await until(lambda: bool(events(node, "site_link_restored")), "restored")
                assert len(lost(node)) == 1
            finally:
                await back.stop()
    finally:
        proc.kill()
        proc.wait(5)


@pytest.mark.timeout(30)
async def test_a_cleanly_stopped_coordinator_says_offline(mosquitto: Broker,
                                                         tmp_path: Path) -> None:
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state", link_loss_s=LOSS_S,
                                on_link_loss="failsafe")
    coord = coordinator(mosquitto)
    await coord.start()
    node = rack_node()
    async with running(node, cfg) as link:
        await until(lambda: link.link_loss.coordinators.online == ("site-01",), "online")
        await site_holds_setpoint(cfg, node, link)
        await coord.stop()  # publishes its retained offline state, then disconnects
        stopped = node.clock.monotonic()
        await until(lambda: not link.link_loss.coordinators.online, "offline seen", 2.0)
        await until(lambda: bool(lost(node)), "site link lost alarm")
        assert LOSS_S <= node.clock.monotonic() - stopped < LOSS_S + 2.0
        assert "(no site coordinator online): held at failsafe" in lost(node)[0]
        failsafe = float(node.image.outputs_info[SETPOINT].spec.failsafe or 0.0)
        await until(lambda: wire(node, SETPOINT) == failsafe, "failsafe on the wire")
        assert failsafe != SITE_KW
    # the retained offline state is what a node starting now reads
    st = parse_state(await _retained(mosquitto, TOPICS.coordinator_state("site-01")))
    assert not st.online


async def _retained(broker: Broker, topic: str, timeout: float = 5.0) -> bytes:
    from edge_runtime.federation.mqtt import MqttClient
    from tests.mosquitto import Inbox

    inbox = Inbox()
    c = MqttClient(broker.mqtt_config(), client_id="reader", on_message=inbox)
    c.subscribe(topic, 1)
    c.start()
    try:
        [msg] = await inbox.wait_for(1, timeout=timeout)
        return msg.payload
    finally:
        await c.stop()


@pytest.mark.timeout(30)
async def test_grace_at_start_and_the_lab_opt_out(mosquitto: Broker, tmp_path: Path) -> None:
    # no coordinator at all: lost link_loss_s after start, not at once
    node = rack_node()
    started = node.clock.monotonic()
    async with running(node, mosquitto.mqtt_config(state_dir=tmp_path / "a",
                                                   link_loss_s=LOSS_S)) as link:
        await until(lambda: bool(link.get_status()["online"]), "broker reached")
        await until(lambda: bool(lost(node)), "site link lost alarm")
        assert node.clock.monotonic() - started >= LOSS_S
        assert "(no site coordinator online)" in lost(node)[0]
    # a lab without coordinator: require_coordinator = false, the broker alone is the link
    lab = rack_node()
    async with running(lab, mosquitto.mqtt_config(state_dir=tmp_path / "b", link_loss_s=LOSS_S,
                                                  require_coordinator=False)) as link:
        await until(lambda: bool(link.get_status()["online"]), "broker reached")
        scans = lab.engine.stats.cycles
        await until(lambda: lab.engine.stats.cycles >= scans + int(2 * LOSS_S / 0.02) + 5,
                    "two link_loss_s of scans")
        assert not lost(lab)


# -- the pieces, without a broker ------------------------------------------------------------

def _state(online: bool, ts: str, instance: str = "site-01") -> bytes:
    return state_json("s1", instance, online=online, timestamp=ts)


def test_presence_ignores_a_late_will_and_bad_states() -> None:
    p = CoordinatorPresence()
    p.update("site-01", _state(True, "2026-12-06T01:00:00Z"))
    p.update("site-02", _state(True, "2026-12-06T01:00:00Z"))
    assert p.online == ("site-01", "site-02")
    p.update("site-01", _state(False, "2026-12-06T00:59:00Z"))  # an older connection's will
    assert p.online == ("site-01", "site-02")
    p.update("site-01", _state(False, "2026-12-06T01:00:00Z"))  # this connection's will
    p.update("site-02", b"")  # retained state cleared: decommissioned
    assert p.online == ()
    for bad in (b"{", b"[]", b'{"online": "yes"}', b'{"online": true}'):
        p.update("site-03", bad)
    assert p.online == () and p.invalid == 4
    with pytest.raises(ValueError, match="timestamp"):
        parse_state(b'{"online": true, "timestamp": "soon"}')


def test_coordinator_is_a_reserved_node_name() -> None:
    assert "coordinator" in RESERVED_NODES
    with pytest.raises(ValueError, match="reserved"):
        NodeTopics("s1", "coordinator")


def test_guard_counts_no_coordinator_as_link_loss_in_simulated_time() -> None:
    clock = VirtualClock(start=1000.0)
    node = assemble(RACK, clock=clock, watchdog_thread=False,
                    driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                         for d in c.devices})
    guard = LinkLossGuard(node, after_s=10.0, require_coordinator=True)
    node.engine.observers.append(guard)
    guard.link(True)
    guard.coordinator("site-01", _state(True, "2026-12-06T01:00:00Z"))
    node.commands.submit(SetOutput(SETPOINT, SITE_KW, source="mqtt.battery_control",
                                   role="grid_operator"))
    node.engine.scan_once(clock.monotonic())
    assert node.manual.holds() == {SETPOINT: "mqtt.battery_control"}
    clock.advance(5.0)
    guard.coordinator("site-01", _state(False, "2026-12-06T01:00:00Z"))  # its will, at 1005
    for _ in range(9):
        clock.advance(1.0)
        node.engine.scan_once(clock.monotonic())
    assert not guard.lost and guard.cause == "no site coordinator online"
    clock.advance(1.0)  # 1015: link_loss_s after the will
    node.engine.scan_once(clock.monotonic())
    assert guard.lost
    node.engine.scan_once(clock.monotonic())  # the release is applied at the next scan
    assert SETPOINT not in node.manual.holds()
    guard.coordinator("site-02", _state(True, "2026-12-06T01:00:20Z"))
    assert not guard.lost and guard.cause == ""
    assert [e.code for e in node.events.recent(10) if e.code.startswith("site_link")] == [
        "site_link_lost", "site_link_restored"]
    # the broker dropping clears what is known: online again only once a state comes back
    guard.link(False)
    guard.link(True)
    assert guard.cause == "no site coordinator online"
    # with require_coordinator off the coordinators do not matter
    lab = LinkLossGuard(node, after_s=10.0)
    lab.link(True)
    assert lab.cause == ""
