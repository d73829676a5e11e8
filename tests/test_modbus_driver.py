"""Modbus driver against a real pymodbus server: decoding, merging, faults, reconnect, outputs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest

from edge_runtime.config.codec import encode
from edge_runtime.config.iomap import load_io_map
from edge_runtime.config.reader import ErrorLog
from edge_runtime.config.schema import DeviceConfig, IoMap, Table
from edge_runtime.core.clock import WallClock
from edge_runtime.core.points import Quality, Sample
from edge_runtime.io.failsafe import failsafe_writes, write_failsafe_blocking
from edge_runtime.io.modbus import ModbusDevice, ModbusEndpoint
from tests.conftest import free_port
from tests.modbus_peer import (
    FC_READ_HOLDING,
    FC_READ_INPUT,
    FC_WRITE_MULTIPLE,
    ModbusPeer,
    wait_for,
)

pytestmark = pytest.mark.anyio

METER_MAP = """
[device]
model = "test_meter"
[points.flow]
table = "input"
address = 0
type = "float32"
word_swap = true
unit = "L/min"
[points.energy]
table = "input"
address = 2
type = "int32"
[points.temp]
address = 0
type = "uint16"
scale = 0.1
[points.status]
address = 1
type = "uint16"
[points.setpoint]
address = 10
type = "uint16"
access = "rw"
class = "setpoint"
scale = 0.1
min = 0.0
max = 100.0
failsafe = 20.0
max_hold_s = {hold}
[points.speed_ref]
address = 11
type = "float32"
access = "w"
class = "pump"
min = 0.0
max = 100.0
failsafe = 100.0
max_hold_s = {hold}
[points.far]
address = 40
type = "int16"
"""
INPUTS = ("flow", "energy", "temp", "status", "setpoint", "far")


def meter_map(tmp_path: Path, hold: float = 60.0) -> IoMap:
    """The test io_map, loaded through the real loader."""
    path = tmp_path / "test_meter.toml"
    path.write_text(METER_MAP.format(hold=hold))
    errors = ErrorLog()
    io_map = load_io_map(path, errors)
    assert io_map is not None and not errors.lines, errors.lines
    return io_map


def dev_config(io_map: IoMap, port: int, *, name: str = "m1", unit_id: int = 1,
               poll_s: float = 0.05, timeout_s: float = 0.1, refresh_s: float = 10.0,
               max_gap: int = 0) -> DeviceConfig:
    """A DeviceConfig on 127.0.0.1."""
    return DeviceConfig(name=name, io_map=io_map, host="127.0.0.1", port=port, unit_id=unit_id,
                        poll_s=poll_s, timeout_s=timeout_s, refresh_s=refresh_s, max_gap=max_gap)


def driver(cfg: DeviceConfig, table: dict[str, Sample],
           endpoint: ModbusEndpoint | None = None) -> ModbusDevice:
    """A ModbusDevice on its own endpoint unless one is given."""
    ep = endpoint or ModbusEndpoint(cfg.host, cfg.port, timeout_s=0.2)
    return ModbusDevice(cfg, ep, table, WallClock())


@contextlib.asynccontextmanager
async def running(*devices: ModbusDevice) -> AsyncIterator[None]:
    """Run drivers in the background; cancel them (which must not raise) on exit."""
    tasks = [asyncio.create_task(d.run()) for d in devices]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for d in devices:
            d.endpoint.close()


async def load_meter(peer: ModbusPeer, unit: int, io_map: IoMap, *, flow: float = 3.5,
                     energy: int = -123456, temp: float = 21.5, status: int = 7) -> None:
    """Put known values into the server's registers."""
    for name, value in (("flow", flow), ("energy", energy), ("temp", temp), ("status", status)):
        p = io_map.point(name)
        await peer.set_value(unit, p.table, p.address, value, p.encoding)


def good(table: dict[str, Sample], key: str) -> bool:
    """True when the sample is GOOD."""
    s = table.get(key)
    return s is not None and s.quality is Quality.GOOD


async def test_values_decoded_including_float32_word_swapped_and_int32(tmp_path: Path) -> None:
    io_map, port = meter_map(tmp_path), free_port()
    async with ModbusPeer(port) as peer:
        await load_meter(peer, 1, io_map)
        await peer.set_registers(1, Table.HOLDING, 40, [0xFFFE])
        table: dict[str, Sample] = {}
        dev = driver(dev_config(io_map, port), table)
        await dev.poll_once()
        dev.endpoint.close()
    assert {k: (s.value, s.quality) for k, s in table.items()} == {
        "m1.flow": (3.5, Quality.GOOD), "m1.energy": (-123456, Quality.GOOD),
        "m1.temp": (pytest.approx(21.5), Quality.GOOD), "m1.status": (7, Quality.GOOD),
        "m1.setpoint": (0, Quality.GOOD), "m1.far": (-2, Quality.GOOD),
    }
    assert table["m1.flow"].ts == pytest.approx(WallClock().wall(), abs=5)


@pytest.mark.parametrize(("max_gap", "planned"), [(0, 4), (50, 2)])
async def test_one_poll_uses_the_planned_number_of_requests(
        tmp_path: Path, max_gap: int, planned: int) -> None:
    io_map, port = meter_map(tmp_path), free_port()
    async with ModbusPeer(port) as peer:
        dev = driver(dev_config(io_map, port, max_gap=max_gap), {})
        await dev.poll_once()
        dev.endpoint.close()
    # holding 0-1, 10, 40 and input 0-3 without gap bridging; one per table with it.
    assert dev.requests_per_poll == planned
    assert dev.minimum_requests == 2
    assert peer.count(1, FC_READ_HOLDING) + peer.count(1, FC_READ_INPUT) == planned
    assert dev.get_status()["requests_per_poll"] == planned


async def test_two_unit_ids_share_one_endpoint(tmp_path: Path) -> None:
    io_map, port = meter_map(tmp_path), free_port()
    async with ModbusPeer(port, unit_ids=(1, 2)) as peer:
        await load_meter(peer, 1, io_map, temp=10.0)
        await load_meter(peer, 2, io_map, temp=20.0)
        table: dict[str, Sample] = {}
        ep = ModbusEndpoint("127.0.0.1", port, timeout_s=0.2)
        a = driver(dev_config(io_map, port, name="a", unit_id=1), table, ep)
        b = driver(dev_config(io_map, port, name="b", unit_id=2), table, ep)
        async with running(a, b):
            await wait_for(lambda: a.polls >= 3 and b.polls >= 3, what="three polls each")
    assert table["a.temp"].value == pytest.approx(10.0)
    assert table["b.temp"].value == pytest.approx(20.0)
    assert ep.connects == 1
    assert peer.count(1) >= 12 and peer.count(2) >= 12
    assert a.get_status()["errors"] == {} and b.get_status()["errors"] == {}


async def test_timeout_marks_block_bad_with_reason(tmp_path: Path) -> None:
    io_map, port = meter_map(tmp_path), free_port()
    async with ModbusPeer(port) as peer:
        peer.delays[1] = 0.5
        table: dict[str, Sample] = {}
        dev = driver(dev_config(io_map, port, max_gap=50, timeout_s=0.1), table)
        await dev.poll_once()
        dev.endpoint.close()
    for name in INPUTS:
        assert table[f"m1.{name}"].quality is Quality.BAD
        assert table[f"m1.{name}"].reason == "timeout after 100 ms"
    assert dev.get_status()["errors"] == {"timeout": 2}


async def test_exception_response_marks_block_bad_naming_the_code(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    io_map, port = meter_map(tmp_path), free_port()
    async with ModbusPeer(port) as peer:
        peer.fail(1, 40, 1, 2)
        table: dict[str, Sample] = {}
        dev = driver(dev_config(io_map, port), table)
        with caplog.at_level(logging.WARNING, logger="edge_runtime.io.modbus"):
            await dev.poll_once()
        dev.endpoint.close()
    assert table["m1.far"].quality is Quality.BAD
    assert table["m1.far"].reason == "modbus exception 2 (illegal data address)"
    assert good(table, "m1.temp") and good(table, "m1.flow")
    assert "modbus exception 2" in caplog.text
    status = dev.get_status()
    assert status["errors"] == {"exception": 1}
    assert "modbus exception 2" in status["last_error"]


async def test_server_down_at_start_then_recovers(tmp_path: Path) -> None:
    io_map, port = meter_map(tmp_path), free_port()
    table: dict[str, Sample] = {}
    dev = driver(dev_config(io_map, port), table)
    async with running(dev):
        await wait_for(lambda: table.get("m1.temp", Sample(0, Quality.GOOD, 0)).reason
                       == "not connected", what="BAD not connected")
        assert not dev.get_status()["connected"]
        dev.stage({"setpoint": 12.0}, dev.clock.monotonic())  # the scan runs; the device is away
        await asyncio.sleep(0.3)  # a window to count connect attempts in, not a synchronisation
        failures = dev.endpoint.connect_failures
        assert 2 <= failures <= 6  # 0.1, 0.2, 0.4 s backoff: no spinning poller or writer
        async with ModbusPeer(port) as peer:
            await load_meter(peer, 1, io_map)
            await wait_for(lambda: all(good(table, f"m1.{n}") for n in INPUTS), timeout=3,
                           what="recovery")
            await wait_for(lambda: peer.writes, what="staged output written after connecting")
    assert table["m1.flow"].value == 3.5
    assert peer.writes[0][2:] == (10, [120])
    assert dev.get_status()["errors"]["not_connected"] >= 1


async def test_server_restart_mid_run_reconnects_and_rewrites_outputs(tmp_path: Path) -> None:
    io_map, port = meter_map(tmp_path), free_port()
    table: dict[str, Sample] = {}
    async with ModbusPeer(port) as peer:
        dev = driver(dev_config(io_map, port), table)
        async with running(dev):
            dev.stage({"setpoint": 50.0, "speed_ref": 1.0}, dev.clock.monotonic())
            await wait_for(lambda: good(table, "m1.setpoint") and table["m1.setpoint"].value
                           == pytest.approx(50.0), what="setpoint written and read back")
            await peer.stop()
            await wait_for(lambda: table["m1.temp"].reason == "disconnected", what="disconnected")
            await peer.set_registers(1, Table.HOLDING, 10, [0, 0, 0])  # device "rebooted"
            await peer.start()
            await wait_for(lambda: good(table, "m1.temp"), timeout=3, what="reconnect")
            await wait_for(lambda: table["m1.setpoint"].value == pytest.approx(50.0),
                           what="outputs rewritten after reconnect")
    assert dev.endpoint.connects == 2
    assert dev.get_status()["errors"].get("disconnected", 0) >= 1


async def test_write_on_change_reaches_server_promptly_in_one_fc16(tmp_path: Path) -> None:
    io_map, port = meter_map(tmp_path), free_port()
    async with ModbusPeer(port) as peer:
        dev = driver(dev_config(io_map, port, poll_s=5.0), {})  # polls will not carry writes
        async with running(dev):
            await wait_for(lambda: dev.polls >= 1, what="first poll")
            assert peer.writes == []  # nothing is driven before the first stage()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            dev.stage({"setpoint": 42.0, "speed_ref": 12.5}, dev.clock.monotonic())
            await wait_for(lambda: len(peer.writes) >= 1, timeout=0.5, what="first write")
            assert loop.time() - t0 < 0.2
            dev.stage({"setpoint": 42.0, "speed_ref": 12.5}, dev.clock.monotonic())
            dev.stage({"setpoint": 43.0, "speed_ref": 12.5}, dev.clock.monotonic())
            await wait_for(lambda: len(peer.writes) >= 2, timeout=0.5, what="second write")
            words = await peer.get_registers(1, Table.HOLDING, 10, 3)
    assert peer.writes[0][1:] == (1, 10, [420, *encode(12.5, io_map.point("speed_ref").encoding)])
    assert peer.writes[1][2:] == (10, [430])  # only the changed output
    assert words[0] == 430
    assert len(peer.writes) == 2 and dev.get_status()["writes"] == 2


async def test_periodic_refresh_rewrites_unchanged_outputs(tmp_path: Path) -> None:
    io_map, port = meter_map(tmp_path), free_port()
    async with ModbusPeer(port) as peer:
        dev = driver(dev_config(io_map, port, refresh_s=0.15), {})
        async with running(dev):
            dev.stage({"setpoint": 30.0, "speed_ref": 5.0}, dev.clock.monotonic())
            await wait_for(lambda: len(peer.writes) >= 4, what="refresh writes")
    times = [t for t, *_ in peer.writes]
    assert all(w[3] == peer.writes[0][3] for w in peer.writes)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.1 < g < 0.3 for g in gaps), gaps


async def test_max_hold_expiry_writes_failsafe_then_resumes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    io_map, port = meter_map(tmp_path, hold=0.3), free_port()
    async with ModbusPeer(port) as peer:
        dev = driver(dev_config(io_map, port), {})
        async with running(dev):
            with caplog.at_level(logging.WARNING, logger="edge_runtime.io.modbus"):
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                dev.stage({"setpoint": 50.0, "speed_ref": 10.0}, dev.clock.monotonic())
                await wait_for(lambda: peer.writes and peer.writes[-1][3][0] == 500,
                               what="commanded value")
                # No more stage() calls: the scan "stalled" while the loop lives.
                await wait_for(lambda: peer.writes[-1][3][0] == 200, timeout=1, what="failsafe")
                assert 0.25 < loop.time() - t0 < 0.6
                assert dev.get_status()["outputs_at_failsafe"] == ["setpoint", "speed_ref"]
                assert peer.writes[-1][3][1:] == encode(100.0, io_map.point("speed_ref").encoding)
            dev.stage({"setpoint": 50.0, "speed_ref": 10.0}, dev.clock.monotonic())
            await wait_for(lambda: peer.writes[-1][3][0] == 500, what="resumed")
            assert dev.get_status()["outputs_at_failsafe"] == []
    assert "max_hold_s 0.3" in caplog.text and "failsafe 20" in caplog.text


async def test_out_of_range_and_unencodable_stage_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    io_map, port = meter_map(tmp_path), free_port()
    async with ModbusPeer(port) as peer:
        dev = driver(dev_config(io_map, port), {})
        async with running(dev):
            dev.stage({"setpoint": 50.0, "speed_ref": 10.0}, dev.clock.monotonic())
            await wait_for(lambda: len(peer.writes) >= 1, what="first write")
            with caplog.at_level(logging.WARNING, logger="edge_runtime.io.modbus"):
                for bad in (150.0, -1.0, float("nan"), "7"):
                    dev.stage({"setpoint": bad, "speed_ref": 10.0},  # type: ignore[dict-item]
                              dev.clock.monotonic())
                dev.stage({"no_such_output": 1.0}, dev.clock.monotonic())
            dev.stage({"speed_ref": 11.0}, dev.clock.monotonic())  # a real change flushes
            await wait_for(lambda: len(peer.writes) >= 2, what="second write")
            words = await peer.get_registers(1, Table.HOLDING, 10, 1)
    assert words == [500]  # the previous value was kept
    status = dev.get_status()
    assert status["refused_writes"] == 5
    assert "setpoint = 150.0 refused: outside 0..100" in caplog.text
    assert "setpoint = '7' refused: not a finite number" in caplog.text
    assert "no_such_output" in caplog.text


async def test_write_failsafe_blocking_writes_to_a_real_server(tmp_path: Path) -> None:
    io_map, port = meter_map(tmp_path), free_port()
    speed = io_map.point("speed_ref").encoding
    devices = [dev_config(io_map, port, name="a", unit_id=1),
               dev_config(io_map, port, name="b", unit_id=2)]
    assert failsafe_writes(devices[0], {}) == [(10, [200, *encode(100.0, speed)])]
    # the safe image wins over the io_map failsafe where it has a value (b: an isolation)
    safe = {"b.speed_ref": 0.0}
    assert failsafe_writes(devices[1], safe) == [(10, [200, *encode(0.0, speed)])]
    async with ModbusPeer(port, unit_ids=(1, 2)) as peer:
        errors = await asyncio.to_thread(write_failsafe_blocking, devices, 0.5, safe)
        assert await peer.get_registers(1, Table.HOLDING, 10, 3) == [200, *encode(100.0, speed)]
        assert await peer.get_registers(2, Table.HOLDING, 10, 3) == [200, *encode(0.0, speed)]
    assert errors == []
    assert peer.count(fc=FC_WRITE_MULTIPLE) == 2
    async with ModbusPeer(port, unit_ids=(1, 2)) as peer:
        peer.delays[1] = 1.0  # unit 1 hangs: reported, and unit 2 still gets its failsafe
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        errors = await asyncio.to_thread(write_failsafe_blocking, devices, 0.2, {})
        assert loop.time() - t0 < 0.8
        assert len(errors) == 1 and errors[0].startswith("a: write 10+3 failed")
        assert await peer.get_registers(2, Table.HOLDING, 10, 1) == [200]
    dead = [dev_config(io_map, free_port(), name="gone")]
    errors = await asyncio.to_thread(write_failsafe_blocking, dead, 0.2, {})
    assert len(errors) == 1 and "gone: cannot connect" in errors[0]


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_driver_stops_even_when_a_poll_swallows_the_cancel(tmp_path: Path) -> None:
    # Python 3.11's asyncio.wait_for (inside pymodbus) drops a cancel that arrives together
    # with a response; the driver must still stop, or the node never reaches its failsafe.
    d = driver(dev_config(meter_map(tmp_path), free_port()), {})
    in_poll = asyncio.Event()

    async def swallowing_poll() -> None:
        in_poll.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)

    d.poll_once = swallowing_poll  # type: ignore[method-assign]
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(in_poll.wait(), 5)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled()


async def test_a_hung_writer_of_another_protocol_does_not_hold_back_the_modbus_safe_image(
        tmp_path: Path) -> None:
    """The watchdog thread's safe image goes to every protocol at once: an OPC UA server that
    hangs for 3 s must not delay the Modbus write behind it."""
    io_map, port = meter_map(tmp_path), free_port()
    devices = [dev_config(io_map, port, name="a", unit_id=1)]
    ua_map = dataclasses.replace(io_map, protocol="opcua")
    ua_device = dataclasses.replace(dev_config(ua_map, port, name="bess"),
                                    url="opc.tcp://127.0.0.1:1")
    modbus_done = threading.Event()
    calls: list[float] = []

    def hung_opcua(devs: Sequence[DeviceConfig], timeout_s: float,
                   values: Mapping[str, float]) -> list[str]:
        calls.append(time.monotonic())
        # the Modbus write lands while this one still hangs (bounded: never waits forever)
        landed = modbus_done.wait(3.0)
        return [] if landed else ["bess: the Modbus write waited behind the OPC UA writer"]

    async with ModbusPeer(port, unit_ids=(1,)) as peer:
        async def watch() -> None:
            while await peer.get_registers(1, Table.HOLDING, 10, 1) != [200]:
                await asyncio.sleep(0.01)
            modbus_done.set()
        watcher = asyncio.create_task(watch())
        errors = await asyncio.to_thread(write_failsafe_blocking, [*devices, ua_device], 0.5,
                                         {}, {"opcua": hung_opcua})
        await asyncio.wait_for(watcher, 1.0)
    assert errors == [] and len(calls) == 1
