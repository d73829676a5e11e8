"""The plant simulator over real Modbus TCP, with a pymodbus client as the peer."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from edge_runtime.config.codec import decode, encode
from edge_runtime.config.reader import ErrorLog
from edge_runtime.config.schema import PointSpec, Table
from pswd_plant_sim.cli import main
from pswd_plant_sim.config import SimConfig, build_sim_config
from pswd_plant_sim.simulator import Simulator
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plant.toml"
SIM_BIN = ROOT / ".venv" / "bin" / "pswd-plant-sim"


def example_data(**sim: Any) -> dict[str, Any]:
    """examples/plant.toml as a dict, on free ports."""
    with EXAMPLE.open("rb") as fh:
        data = tomllib.load(fh)
    for ep in data["endpoints"].values():
        ep["port"] = free_port()
    data["sim"].update(sim)
    return data


def make_config(data: dict[str, Any]) -> SimConfig:
    errors = ErrorLog()
    config = build_sim_config(data, "test.toml", ROOT, errors)
    assert not errors.lines, errors.lines
    return config


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(make_config(example_data()))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def port_of(sim: Simulator, endpoint: str) -> int:
    return next(e.port for e in sim.endpoints if e.name == endpoint)


async def connect(sim: Simulator, endpoint: str, timeout: float = 1.0) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=port_of(sim, endpoint), timeout=timeout,
                                  retries=0)
    assert await client.connect()
    return client


async def read_point(client: AsyncModbusTcpClient, unit: int, p: PointSpec) -> float:
    if p.table is Table.INPUT:
        rr = await client.read_input_registers(p.address, count=p.count, device_id=unit)
    else:
        rr = await client.read_holding_registers(p.address, count=p.count, device_id=unit)
    assert not rr.isError(), rr
    return decode(rr.registers, p.encoding)


async def write_point(client: AsyncModbusTcpClient, unit: int, p: PointSpec,
                      value: float) -> None:
    rr = await client.write_registers(p.address, encode(value, p.encoding), device_id=unit)
    assert not rr.isError(), rr


def spec(sim: Simulator, device: str, point: str) -> PointSpec:
    return sim.rig.units[device].spec.io_map.point(point)


@pytest.mark.anyio
async def test_every_register_agrees_with_the_io_map_encoding(sim: Simulator) -> None:
    for _ in range(40):
        sim.step(0.1)
    clients = {name: await connect(sim, name) for name in ("cdu", "rack")}
    try:
        for unit in sim.rig.units.values():
            client = clients[unit.spec.endpoint]
            for p in unit.spec.io_map.points:
                got = await read_point(client, unit.spec.unit_id, p)
                assert got == unit.bank.get(p.name), (unit.spec.name, p.name)
        s = sim.state
        cdu, rack = clients["cdu"], clients["rack"]
        temp = await read_point(cdu, 4, spec(sim, "supply_temp", "temperature"))
        assert temp == pytest.approx(s.supply_c, abs=0.006)
        ret = await read_point(cdu, 5, spec(sim, "return_temp", "temperature"))
        assert ret == pytest.approx(s.return_c, abs=0.006)
        flow = await read_point(cdu, 6, spec(sim, "flow", "flow"))
        assert flow == pytest.approx(s.flow_lpm, rel=1e-6)
        pres = await read_point(cdu, 7, spec(sim, "supply_pressure", "pressure"))
        assert pres == pytest.approx(s.supply_bar, abs=0.0006)
        power = await read_point(rack, 1, spec(sim, "rack_meter", "power_kw"))
        assert power == pytest.approx(s.it_power_kw, rel=1e-6)
        soc = await read_point(rack, 2, spec(sim, "battery", "soc_pct"))
        assert soc == pytest.approx(s.soc_pct, abs=0.06)
        marker = await rack.read_holding_registers(40000, count=2, device_id=2)
        assert marker.registers == [0x5375, 0x6E53]
    finally:
        for c in clients.values():
            c.close()


@pytest.mark.anyio
async def test_pump_speed_write_raises_speed_and_loop_flow(sim: Simulator) -> None:
    cw, ref = spec(sim, "pump1", "control_word"), spec(sim, "pump1", "speed_ref")
    actual = spec(sim, "pump1", "speed_actual")
    flow_pt = spec(sim, "flow", "flow")
    client = await connect(sim, "cdu")

    async def hold(speed: float, seconds: float) -> None:
        for i in range(round(seconds / 0.1)):
            if i % 10 == 0:  # refresh well within max_hold_s, like the controller does
                await write_point(client, 1, cw, 1)
                await write_point(client, 1, ref, speed)
                await write_point(client, 2, cw, 0)
            sim.step(0.1)

    try:
        await hold(40.0, 8.0)
        assert await read_point(client, 1, actual) == pytest.approx(40.0, abs=0.01)
        slow = await read_point(client, 6, flow_pt)
        await hold(90.0, 5.0)
        assert await read_point(client, 1, actual) == pytest.approx(90.0, abs=0.01)
        fast = await read_point(client, 6, flow_pt)
        assert fast > 2.0 * slow
        assert fast == pytest.approx(sim.state.flow_lpm, rel=1e-6)
        assert sim.state.pump_speeds_pct[0] == pytest.approx(90.0)
        assert sim.state.pump_speeds_pct[1] == 0.0
    finally:
        client.close()


@pytest.mark.anyio
async def test_device_side_max_hold_reverts_to_failsafe(sim: Simulator) -> None:
    ref = spec(sim, "pump1", "speed_ref")
    client = await connect(sim, "cdu")
    try:
        await write_point(client, 1, ref, 50.0)
        for _ in range(15):
            sim.step(0.1)
        assert await read_point(client, 1, ref) == 50.0
        for _ in range(10):  # 2.5 s since the write > max_hold_s = 2.0
            sim.step(0.1)
        assert await read_point(client, 1, ref) == ref.failsafe == 100.0
        assert "speed_ref" in sim.get_status()["devices"]["pump1"]["failsafe"]
    finally:
        client.close()


@pytest.mark.anyio
async def test_refused_requests_answer_modbus_exceptions(sim: Simulator) -> None:
    ref, status = spec(sim, "pump1", "speed_ref"), spec(sim, "pump1", "status_word")
    client = await connect(sim, "cdu")
    try:
        rr = await client.write_register(ref.address, 20000, device_id=1)  # 200 % > max
        assert rr.isError() and rr.exception_code == 3
        rr = await client.write_register(ref.address, 6000, device_id=1)  # FC6 within range
        assert not rr.isError() and rr.registers == [6000]
        assert sim.rig.units["pump1"].bank.get("speed_ref") == 60.0
        rr = await client.write_register(status.address, 1, device_id=1)  # an input
        assert rr.isError() and rr.exception_code == 2
        rr = await client.read_holding_registers(0, count=50, device_id=1)  # past the map
        assert rr.isError() and rr.exception_code == 2
        rr = await client.read_input_registers(0, count=1, device_id=1)  # no input table
        assert rr.isError() and rr.exception_code == 2
        rr = await client.read_holding_registers(0, count=1, device_id=99)  # unknown unit
        assert rr.isError() and rr.exception_code == 10
    finally:
        client.close()


@pytest.mark.anyio
async def test_offline_device_exception_11_or_silence(sim: Simulator) -> None:
    flow = spec(sim, "flow", "flow")
    client = await connect(sim, "cdu", timeout=0.3)
    try:
        sim.inject("flow", "offline")
        rr = await client.read_input_registers(flow.address, count=2, device_id=6)
        assert rr.isError() and rr.exception_code == 11
        other = await client.read_input_registers(0, count=2, device_id=4)  # same gateway
        assert not other.isError()
        sim.clear("flow")
        sim.inject("flow", "offline", response="silent")
        started = time.monotonic()
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(flow.address, count=2, device_id=6)
        assert time.monotonic() - started >= 0.25
        assert sim.clear("flow") == 1
        client.close()  # a timed-out pymodbus client drops its connection: start afresh
        client = await connect(sim, "cdu", timeout=0.3)
        assert await read_point(client, 6, flow) == pytest.approx(sim.state.flow_lpm, rel=1e-6)
    finally:
        client.close()


@pytest.mark.anyio
async def test_a_thousand_points_of_unbound_meters_serve_plausible_values() -> None:
    data = example_data()
    data["endpoints"]["bench"] = {"host": "127.0.0.1", "port": free_port()}
    for i in range(1, 111):
        data["devices"][f"meter{i}"] = {"io_map": "rack_power_meter", "endpoint": "bench",
                                        "unit_id": i}
    sim = Simulator(make_config(data))
    points = sum(len(u.spec.io_map.points) for u in sim.rig.units.values())
    assert points > 1000
    await sim.start()
    client = await connect(sim, "bench")
    try:
        for _ in range(20):
            sim.step(0.05)
        p = spec(sim, "meter110", "power_kw")
        values = [await read_point(client, unit, p) for unit in (1, 55, 110)]
        for v in values:
            assert 0.1 * 120.0 < v < 1.1 * 120.0
        freq = await read_point(client, 110, spec(sim, "meter110", "frequency_hz"))
        assert 49.9 < freq < 50.1
    finally:
        client.close()
        await sim.stop()


@pytest.mark.anyio
async def test_realtime_steps_follow_the_clock() -> None:
    sim = Simulator(make_config(example_data(step_ms=20)))
    await sim.start()
    try:
        task = asyncio.create_task(sim.run_realtime())
        started = time.monotonic()
        deadline = started + 5.0
        while sim.plant.t < 0.5:
            assert time.monotonic() < deadline, "the realtime loop did not advance"
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        assert sim.plant.t == pytest.approx(elapsed, abs=0.25)
        assert sim.steps >= 15
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await sim.stop()


def test_bad_config_exits_2_naming_the_key(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    text = EXAMPLE.read_text().replace("pumps = 2 ", "pumps = 0 ")
    text = text.replace('binds = "leak"', 'binds = "leek"')
    text = text.replace("[battery]\n", "[battery]\ncapacity = 5.0\n")
    text += '\n[[faults]]\ndevice = "ghost"\nkind = "leak"\n'
    text += '\n[[faults]]\ndevice = "flow"\nkind = "pump_failure"\nat_s = -1\n'
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: [loop] pumps: must be >= 1, got 0" in err
    assert f"{bad}: [devices.leak] binds: unknown model element 'leek'" in err
    assert f"{bad}: [battery] capacity: unknown key" in err
    assert f"{bad}: [faults.0] device: no device 'ghost'" in err
    assert f"{bad}: [faults.1] at_s: must be >= 0, got -1" in err
    assert f"{bad}: [faults.1] kind: pump_failure applies to cdu_pump_vfd" in err


def test_cli_serves_until_duration(tmp_path: Path) -> None:
    cdu, rack = free_port(), free_port()
    text = EXAMPLE.read_text().replace("port = 15502", f"port = {cdu}")
    text = text.replace("port = 15503", f"port = {rack}")
    cfg = tmp_path / "plant.toml"
    cfg.write_text(text)
    exe = [str(SIM_BIN)] if SIM_BIN.exists() else [sys.executable, "-m", "pswd_plant_sim.cli"]
    proc = subprocess.Popen([*exe, "--config", str(cfg), "--duration", "1.5",
                             "--log-level", "WARNING"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ})
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"serving cdu on 127.0.0.1:{cdu}: pump1=1, pump2=2, valve=3" in out
    assert f"serving rack on 127.0.0.1:{rack}: rack_meter=1, battery=2" in out
    assert "stopped at t=1." in out
