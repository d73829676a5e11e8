"""The node's OPC UA server with asyncua's own client over SignAndEncrypt (issue 12, items 2-4):
browse, read, subscribe, status codes from quality, writes and every method through the command
queue with the precise Bad codes, alarms with acknowledge, history, security refusals.

A real assembled node (wall clock) over FakeDevices below the driver boundary; the asyncua
server and client are real and talk over loopback TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.ua.uaerrors import (
    BadCertificateTimeInvalid,
    BadCertificateUntrusted,
    BadIdentityTokenRejected,
    BadUserAccessDenied,
    UaStatusCodeError,
)

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.core.points import Quality, Sample
from edge_runtime.node import Node
from edge_runtime.servers.opcua.users import UserStore
from tests.fakes import FakeDevice
from tests.opcua_helpers import (
    SIGN,
    SIGN_AND_ENCRYPT,
    client_cert,
    expired_client_cert,
    serving,
    wait_until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
NS = "http://pswd-edge.org/UA/"

NODE = """
[node]
name = "cdu-01"
role = "cdu"
site = "s1"
scan_period_ms = 50

[devices.pump1]
io_map = "cdu_pump_vfd"
endpoint = "127.0.0.1:15020"
unit_id = 1

[devices.supply_temp]
io_map = "temperature_transmitter"
endpoint = "127.0.0.1:15020"
unit_id = 2

[devices.supply_temp.limits.temperature]
high = 40.0
high_high = 45.0

[devices.leak]
io_map = "leak_detector"
endpoint = "127.0.0.1:15020"
unit_id = 3

[safety]
startup_s = 0.2

[safety.interlocks.leak_isolate]
when = "leak.leak_state == 1"
action = "isolate"
outputs = { "pump1.control_word" = 0 }
reset_role = "infrastructure_manager"
message = "leak on the CDU leak cable"
"""


def build_node(tmp_path: Path) -> Node:
    path = tmp_path / "node.toml"
    path.write_text(NODE)
    node = assemble(load_node_config(path), watchdog_thread=False, blocks=[],
                    driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                         for d in c.devices})
    for name in node.image.inputs_info:
        node.live[name] = Sample(0.0, Quality.GOOD, node.clock.wall())
    set_input(node, "supply_temp.temperature", 30.0)
    return node


def set_input(node: Node, point: str, value: float | None,
              quality: Quality = Quality.GOOD, reason: str = "") -> None:
    node.live[point] = Sample(value, quality, node.clock.wall(), reason)


async def point(client: Any, path: str) -> Any:
    """A point variable by browse path: Objects/PSWD/cdu-01/<device>/<point>."""
    idx = await client.get_namespace_index(NS)
    device, name = path.split(".")
    return await client.nodes.objects.get_child(
        [f"{idx}:PSWD", f"{idx}:cdu-01", f"{idx}:{device}", f"{idx}:{name}"])


async def controller(client: Any) -> Any:
    idx = await client.get_namespace_index(NS)
    return await client.nodes.objects.get_child([f"{idx}:PSWD", f"{idx}:cdu-01"])


async def call(client: Any, name: str, *args: Any) -> Any:
    ctrl = await controller(client)
    idx = await client.get_namespace_index(NS)
    return await ctrl.call_method(f"{idx}:{name}", *args)


async def wait_until_async(read: Any, want: Any, timeout: float, what: str) -> None:
    """Read until the value is `want` (None: anything positive), with a bound."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await read()
        if (value == want) if want is not None else (value or 0) > 0:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{what}: {value!r} after {timeout} s")
        await asyncio.sleep(0.05)


def bad(exc: pytest.ExceptionInfo[UaStatusCodeError]) -> str:
    return ua.StatusCode(exc.value.code).name


class Changes:
    """A subscription handler that wakes the test on each data change."""

    def __init__(self) -> None:
        self.values: list[tuple[Any, ua.DataValue]] = []
        self.events: list[Any] = []
        self.changed = asyncio.Event()

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.values.append((val, data.monitored_item.Value))
        self.changed.set()

    def event_notification(self, event: Any) -> None:
        self.events.append(event)
        self.changed.set()

    async def until(self, pred: Any, timeout: float, what: str) -> None:
        async def loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()
        try:
            await asyncio.wait_for(loop(), timeout)
        except TimeoutError:
            pytest.fail(f"no notification for {what} within {timeout} s")


async def test_browse_read_subscribe_with_units_ranges_and_status_codes(tmp_path: Path) -> None:
    node = build_node(tmp_path)
    async with serving(node, tmp_path) as rig:
        client = await rig.client("watcher")  # a viewer may browse, read and subscribe
        try:
            temp = await point(client, "supply_temp.temperature")
            await wait_until(lambda: rig.server.binding is not None
                             and rig.server.binding.snapshots > 2, 5, "the first snapshots")
            dv = await temp.read_data_value()
            assert dv.Value.Value == pytest.approx(30.0)
            assert dv.StatusCode.is_good()
            assert dv.SourceTimestamp is not None
            eu = await (await temp.get_child(f"{(await client.get_namespace_index(NS))}"
                                             ":EngineeringUnits")).read_value()
            assert eu.UnitId == int.from_bytes(b"CEL", "big") and eu.DisplayName.Text == "°C"
            speed = await point(client, "pump1.speed_ref")
            rng = await (await speed.get_child(
                f"{await client.get_namespace_index(NS)}:EURange")).read_value()
            assert (rng.Low, rng.High) == (0.0, 100.0)
            typedef = await (await controller(client)).read_type_definition()
            assert typedef is not None
            # variables the device types declare, fed by their points (opcua_model.BINDINGS)
            idx = await client.get_namespace_index(NS)
            ctrl = await controller(client)
            set_input(node, "pump1.speed_actual", 47.5)
            set_input(node, "pump1.status_word", 1.0)
            set_input(node, "leak.leak_state", 2.0)  # cable fault: alarm only
            pump = await ctrl.get_child(f"{idx}:pump1")
            speed_decl = await pump.get_child([f"{idx}:Operational", f"{idx}:Measurements",
                                               f"{idx}:Speed"])
            running = await pump.get_child([f"{idx}:Operational", f"{idx}:Signals",
                                            f"{idx}:Running"])
            leak = await ctrl.get_child(f"{idx}:leak")
            cable = await leak.get_child(f"{idx}:CableFault")
            state = await leak.get_child(f"{idx}:DetectorState")
            await wait_until_async(lambda: speed_decl.read_value(), 47.5, 5, "pump Speed")
            assert await running.read_value() is True
            assert await cable.read_value() is True and await state.read_value() == "Warning"
            comm = await pump.get_child(f"{idx}:CommState")
            await wait_until_async(lambda: comm.read_value(), "Online", 5, "pump1 Online")
            set_input(node, "pump1.speed_actual", None, Quality.BAD, "timeout")
            await wait_until_async(lambda: comm.read_value(), "Degraded", 5, "pump1 Degraded")
            set_input(node, "pump1.speed_actual", 47.5)
            scans = await ctrl.get_child(f"{idx}:ScanCount")
            await wait_until_async(lambda: scans.read_value(), None, 5, "ScanCount")
            assert await (await ctrl.get_child(f"{idx}:WatchdogTripped")).read_value() is False
            changes = Changes()
            sub = await client.create_subscription(50, changes)
            await sub.subscribe_data_change(temp)
            await changes.until(lambda: changes.values, 5, "the initial value")
            set_input(node, "supply_temp.temperature", 33.5)
            await changes.until(lambda: any(v == 33.5 for v, _ in changes.values), 5,
                                "33.5 degC")
            set_input(node, "supply_temp.temperature", None, Quality.BAD, "timeout")
            await changes.until(lambda: changes.values[-1][1].StatusCode.value
                                == ua.StatusCodes.BadNoCommunication, 5, "BadNoCommunication")
            set_input(node, "supply_temp.temperature", 31.0, Quality.SUBSTITUTED, "from spare")
            await changes.until(lambda: changes.values[-1][1].StatusCode.value
                                == ua.StatusCodes.UncertainSubstituteValue, 5,
                                "UncertainSubstituteValue")
            # a viewer writes nothing and calls nothing: refused, audited
            with pytest.raises(UaStatusCodeError) as err:
                await speed.write_value(ua.DataValue(ua.Variant(50.0, ua.VariantType.Double)))
            assert bad(err) == "BadUserAccessDenied"
            with pytest.raises(UaStatusCodeError) as err:
                await call(client, "ResetTrip", "")
            assert bad(err) == "BadUserAccessDenied"
            refused = [a for a in node.commands.audit if not a.accepted]
            assert any(a.source == "opcua.watcher" and "viewer" in a.reason for a in refused)
        finally:
            await client.disconnect()
    status = rig.server.get_status()
    assert status["model"]["typed"] and status["model"]["missing_types"] == []
    assert status["scan_tap"]["step_us_mean"] < 200, status["scan_tap"]


async def test_writes_and_methods_go_through_the_command_queue(tmp_path: Path) -> None:
    node = build_node(tmp_path)
    async with serving(node, tmp_path) as rig:
        bms = await rig.client("bms", policy="Aes256Sha256RsaPss")
        grid = await rig.client("grid", mode=SIGN)
        try:
            speed = await point(bms, "pump1.speed_ref")
            await speed.write_value(ua.DataValue(ua.Variant(55.0, ua.VariantType.Double)))
            assert node.image.output("pump1.speed_ref") == 55.0
            assert node.manual.holds()["pump1.speed_ref"] == "opcua.bms"
            await wait_until(lambda: True, 0, "")
            for value, code in ((150.0, "BadOutOfRange"),):
                with pytest.raises(UaStatusCodeError) as err:
                    await speed.write_value(ua.DataValue(ua.Variant(value,
                                                                    ua.VariantType.Double)))
                assert bad(err) == code
            with pytest.raises(UaStatusCodeError) as err:
                await speed.write_value(ua.DataValue(ua.Variant("fast", ua.VariantType.String)))
            assert bad(err) in ("BadTypeMismatch",)
            cw = await point(bms, "pump1.control_word")
            with pytest.raises(UaStatusCodeError) as err:  # a bit field takes whole numbers
                await cw.write_value(ua.DataValue(ua.Variant(1.5, ua.VariantType.Double)))
            assert bad(err) == "BadTypeMismatch"
            # the grid operator has no right on class pump
            with pytest.raises(UaStatusCodeError) as err:
                await (await point(grid, "pump1.speed_ref")).write_value(
                    ua.DataValue(ua.Variant(20.0, ua.VariantType.Double)))
            assert bad(err) == "BadUserAccessDenied"
            with pytest.raises(UaStatusCodeError) as err:
                await call(grid, "Force", "pump1.speed_ref", 20.0, 5.0, "test")
            assert bad(err) == "BadUserAccessDenied"
            # Force: unknown point, range, expiry, reason, wrong argument type
            for args, code in ((("nope.x", 1.0, 5.0, "t"), "BadInvalidArgument"),
                               (("pump1.speed_ref", 120.0, 5.0, "t"), "BadOutOfRange"),
                               (("pump1.speed_ref", 20.0, 0.0, "t"), "BadOutOfRange"),
                               (("pump1.speed_ref", 20.0, 5.0, " "), "BadInvalidArgument"),
                               (("pump1.speed_ref", "20", 5.0, "t"), "BadTypeMismatch")):
                with pytest.raises(UaStatusCodeError) as err:
                    await call(bms, "Force", *args)
                assert bad(err) == code, args
            # a force with an expiry, seen to expire on the node's scan clock
            assert await call(bms, "Force", "pump1.speed_ref", 25.0, 0.3, "valve test") is None
            assert node.safety.forces == {"pump1.speed_ref": 25.0}
            await wait_until(lambda: not node.safety.forces, 3, "the force to expire")
            assert any(e.code == "force_expired" for e in node.events.recent(100))
            # Release of an output that is not forced, then of a forced one
            with pytest.raises(UaStatusCodeError) as err:
                await call(bms, "Release", "pump1.speed_ref")
            assert bad(err) == "BadInvalidState"
            await call(bms, "Force", "pump1.speed_ref", 30.0, 60.0, "hold")
            assert await call(bms, "Release", "pump1.speed_ref") is None
            assert not node.safety.forces
            # SetMode / SetSetpoint: this node has no control loops
            with pytest.raises(UaStatusCodeError) as err:
                await call(bms, "SetMode", "supply_temp", "Automatic", math.nan)
            assert bad(err) == "BadInvalidArgument"
            with pytest.raises(UaStatusCodeError) as err:
                await call(bms, "SetSetpoint", "supply_temp", 28.0)
            assert bad(err) == "BadInvalidArgument"
            with pytest.raises(UaStatusCodeError) as err:
                await call(bms, "ResetTrip", "no_such_rule")
            assert bad(err) == "BadInvalidArgument"
            with pytest.raises(UaStatusCodeError) as err:  # nothing latched
                await call(bms, "ResetTrip", "")
            assert bad(err) == "BadInvalidState"
        finally:
            await bms.disconnect()
            await grid.disconnect()
    sources = {a.source for a in node.commands.audit}
    assert {"opcua.bms", "opcua.grid"} <= sources


async def test_trip_alarm_acknowledge_and_reset(tmp_path: Path) -> None:
    node = build_node(tmp_path)
    async with serving(node, tmp_path) as rig:
        bms = await rig.client("bms")
        watcher = await rig.client("watcher")
        try:
            changes = Changes()
            sub = await bms.create_subscription(50, changes)
            await sub.subscribe_events(bms.nodes.server, ua.ObjectIds.AlarmConditionType)
            set_input(node, "supply_temp.temperature", 42.0)  # above high (40)
            await changes.until(lambda: any(
                getattr(e, "ConditionName", "") == "limit.supply_temp.temperature"
                and e.ActiveState.Text == "Active" for e in changes.events), 5,
                "the high limit alarm")
            limit = [e for e in changes.events
                     if getattr(e, "ConditionName", "") == "limit.supply_temp.temperature"][-1]
            assert limit.EventType == ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType)
            assert limit.Severity == 500  # high; high-high would be 900
            set_input(node, "leak.leak_state", 1.0)
            await wait_until(lambda: node.safety.states["leak_isolate"].latched, 5, "the trip")
            await changes.until(lambda: any(getattr(e, "ConditionName", "") ==
                                            "interlock.leak_isolate" for e in changes.events),
                                5, "the trip alarm")
            ev = [e for e in changes.events
                  if getattr(e, "ConditionName", "") == "interlock.leak_isolate"][-1]
            assert ev.Retain and ev.ActiveState.Text == "Active"
            # the reset is refused while the leak is present
            with pytest.raises(UaStatusCodeError) as err:
                await call(bms, "ResetTrip", "leak_isolate")
            assert bad(err) == "BadInvalidState"
            # acknowledge: a viewer may not, a wrong EventId is refused, then it is acked
            cond = bms.get_node(ev.NodeId)
            ack = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge)
            with pytest.raises(UaStatusCodeError) as err:
                await watcher.get_node(ev.NodeId).call_method(
                    ack, ua.Variant(ev.EventId, ua.VariantType.ByteString),
                    ua.LocalizedText("seen"))
            assert bad(err) == "BadUserAccessDenied"
            with pytest.raises(UaStatusCodeError) as err:
                await cond.call_method(ack, ua.Variant(b"wrong", ua.VariantType.ByteString),
                                       ua.LocalizedText("seen"))
            assert bad(err) == "BadEventIdUnknown"
            await cond.call_method(ack, ua.Variant(ev.EventId, ua.VariantType.ByteString),
                                   ua.LocalizedText("crew on the way"))
            await changes.until(lambda: changes.events[-1].AckedState.Text
                                == "Acknowledged", 5, "the acknowledged state")
            assert any(e.code == "alarm_ack" and "crew on the way" in e.message
                       for e in node.events.recent(100))
            set_input(node, "leak.leak_state", 0.0)
            await wait_until(lambda: not node.safety.states["leak_isolate"].present, 5, "dry")
            assert await call(bms, "ResetTrip", "") == ["leak_isolate"]
            assert not node.safety.states["leak_isolate"].latched
        finally:
            await bms.disconnect()
            await watcher.disconnect()


async def test_a_watchdog_latch_is_reset_through_the_safety_layer(tmp_path: Path) -> None:
    node = build_node(tmp_path)
    async with serving(node, tmp_path) as rig:
        tenant = await rig.client("tenant")
        bms = await rig.client("bms")
        try:
            node.watchdog.check(node.clock.monotonic() + 10.0)  # as if the scan had stalled
            assert node.watchdog.tripped
            with pytest.raises(UaStatusCodeError) as err:  # workload_operator: not its latch
                await call(tenant, "ResetTrip", "watchdog")
            assert bad(err) == "BadUserAccessDenied"
            assert node.watchdog.tripped
            assert await call(bms, "ResetTrip", "watchdog") == ["watchdog"]
            assert not node.watchdog.tripped
            assert ("watchdog", "infrastructure_manager", True) in node.safety.reset_log
        finally:
            await tenant.disconnect()
            await bms.disconnect()


async def test_history_read_of_a_key_point(tmp_path: Path) -> None:
    node = build_node(tmp_path)
    async with serving(node, tmp_path) as rig:
        client = await rig.client("watcher")
        try:
            for value in (31.0, 32.0, 33.0):
                set_input(node, "supply_temp.temperature", value)
                await wait_until(lambda v=value: rig.server.binding is not None and  # type: ignore[misc]
                                 rig.server.binding._last.get("supply_temp.temperature",
                                                              (None,))[0] == v, 5, f"{value}")
            temp = await point(client, "supply_temp.temperature")
            end = dt.datetime.now(dt.UTC)
            rows = await temp.read_raw_history(end - dt.timedelta(hours=24), end)
            values = [r.Value.Value for r in rows]
            assert [v for v in values if v in (31.0, 32.0, 33.0)] == [31.0, 32.0, 33.0]
            assert "supply_temp.temperature" in rig.server.historized
        finally:
            await client.disconnect()


async def test_security_refusals(tmp_path: Path) -> None:
    node = build_node(tmp_path)
    async with serving(node, tmp_path) as rig:
        with pytest.raises(BadCertificateUntrusted):  # not in the trust list
            await rig.client("bms", cert=rig.stranger)
        assert rig.server.validator.refused >= 1
        expired = expired_client_cert(tmp_path, "expired")  # trusted, but out of date
        UserStore(rig.server.config.state_dir).trust("expired", "infrastructure_manager",
                                                     expired.pem.read_bytes())
        with pytest.raises(BadCertificateTimeInvalid):
            await rig.client("bms", cert=expired)
        with pytest.raises(BadUserAccessDenied):  # wrong password
            await rig.client("bms", password="not-the-password")
        with pytest.raises(BadIdentityTokenRejected):  # anonymous is off by default
            await rig.client(None)
        # No None endpoint is offered; a session forced over the unsecured discovery
        # channel (asyncua lets one be activated) may do nothing at all.
        plain = Client(rig.url, timeout=5)
        await plain.connect_socket()
        try:
            await plain.send_hello()
            await plain.open_secure_channel()
            endpoints = await plain.get_endpoints()
            assert {e.SecurityMode for e in endpoints} == {SIGN, SIGN_AND_ENCRYPT}
            params = ua.CreateSessionParameters(
                ClientNonce=b"n" * 32, EndpointUrl=rig.url, SessionName="plain",
                RequestedSessionTimeout=60000, MaxResponseMessageSize=0)
            await plain.uaclient.create_session(params)
            token = ua.UserNameIdentityToken(UserName="bms",
                                             Password=rig.passwords["bms"].encode(),
                                             PolicyId="username")
            await plain.uaclient.activate_session(ua.ActivateSessionParameters(
                UserIdentityToken=token))
            with pytest.raises(BadUserAccessDenied):
                await plain.nodes.objects.get_children()
            with pytest.raises(BadUserAccessDenied):
                await plain.get_node(ua.NodeId("cdu-01.pump1.speed_ref", 2)).write_value(
                    ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)))
        finally:
            plain.disconnect_socket()
    assert not [a for a in node.commands.audit if a.accepted]


async def test_a_certificate_user_gets_the_role_its_certificate_is_trusted_with(
        tmp_path: Path) -> None:
    node = build_node(tmp_path)
    async with serving(node, tmp_path) as rig:
        assert rig.trusted is not None and rig.stranger is not None
        # bms-client is trusted as infrastructure_manager: its X509 token acts with that role
        bms = await rig.client(None, identity=rig.trusted)
        try:
            assert await call(bms, "Force", "pump1.speed_ref", 33.0, 5.0, "cert user") is None
            assert node.safety.forces == {"pump1.speed_ref": 33.0}
            forced = [a for a in node.commands.audit if "cert user" in a.command]
            assert forced and forced[-1].source == "opcua.bms-client" and forced[-1].accepted
        finally:
            await bms.disconnect()
        # a certificate that is not a user (the channel is trusted, the token is not)
        UserStore(rig.server.config.state_dir).trust(
            "channel-only", "viewer", rig.stranger.pem.read_bytes())
        with pytest.raises(BadUserAccessDenied):
            await rig.client(None, cert=rig.trusted, identity=client_cert(tmp_path, "nobody"))
        # the stranger, now trusted as a viewer, may read but not force
        viewer = await rig.client(None, cert=rig.stranger, identity=rig.stranger)
        try:
            with pytest.raises(UaStatusCodeError) as err:
                await call(viewer, "Force", "pump1.speed_ref", 20.0, 5.0, "x")
            assert bad(err) == "BadUserAccessDenied"
        finally:
            await viewer.disconnect()


async def test_a_server_that_cannot_listen_is_an_alarm_and_the_scan_runs_on(
        tmp_path: Path) -> None:
    import socket

    from edge_runtime.servers.opcua.server import OpcUaServer
    from tests.opcua_helpers import opcua_config

    node = build_node(tmp_path)
    cfg = opcua_config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", cfg.port))
        taken.listen()
        server = OpcUaServer(node, cfg)
        node.attach("opcua", server)
        runner = asyncio.create_task(node.run())
        try:
            await wait_until(lambda: any(e.code == "service_failed"
                                         for e in node.events.recent(50)), 30, "the alarm")
            cycles = node.engine.stats.cycles
            await wait_until(lambda: node.engine.stats.cycles > cycles + 5, 5, "more scans")
            assert server.error and not server.started.is_set()
            assert server.tap not in node.engine.observers
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


async def test_a_flood_of_subscriptions_is_refused_and_the_scan_runs_on(tmp_path: Path) -> None:
    from asyncua.ua.uaerrors import BadTooManySubscriptions

    node = build_node(tmp_path)
    async with serving(node, tmp_path, max_subscriptions=3) as rig:
        client = await rig.client("watcher")
        try:
            for _ in range(3):
                await client.create_subscription(500, Changes())
            with pytest.raises(BadTooManySubscriptions):
                await client.create_subscription(500, Changes())
            cycles = node.engine.stats.cycles
            await wait_until(lambda: node.engine.stats.cycles > cycles + 3, 5, "scans")
        finally:
            await client.disconnect()
