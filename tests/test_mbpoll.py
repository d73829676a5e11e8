"""The plant simulator read and written by an independent Modbus master: the `mbpoll` binary.

mbpoll is a real peer (libmodbus); a missing binary fails these tests on purpose.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator

import pytest

from edge_runtime.config.codec import decode
from pswd_plant_sim.simulator import Simulator
from tests.test_plant_sim import example_data, make_config, port_of

_VALUE = re.compile(r"^\[(\d+)\]:\s+(0x[0-9A-Fa-f]{4}|-?[0-9.]+)", re.MULTILINE)


def mbpoll_path() -> str:
    path = shutil.which("mbpoll") or shutil.which("mbpoll", path="/usr/bin")
    if path is None:
        pytest.fail("mbpoll is not installed: apt-get install mbpoll (or tools/install-peers.sh)")
    return path


async def mbpoll(port: int, *options: str, write: tuple[str, ...] = (),
                 check: bool = True) -> tuple[int, str]:
    """Run mbpoll once against 127.0.0.1:port without blocking the simulator's loop."""
    proc = await asyncio.create_subprocess_exec(
        mbpoll_path(), "-m", "tcp", "-p", str(port), "-o", "0.5", "-1", *options,
        "127.0.0.1", *write, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out_b, _ = await asyncio.wait_for(proc.communicate(), timeout=10.0)
    out = out_b.decode()
    if check:
        assert proc.returncode == 0, out
    return proc.returncode or 0, out


async def read(port: int, unit: int, ref: int, count: int, table: str) -> list[str]:
    """Values mbpoll prints for a read (1-based reference unless `-0` is in table)."""
    parts = table.split()
    _, out = await mbpoll(port, "-a", str(unit), "-r", str(ref), "-c", str(count),
                          "-t", parts[0], *parts[1:])
    values = [m.group(2) for m in _VALUE.finditer(out)]
    assert len(values) == count, out
    return values


def words(values: list[str]) -> list[int]:
    return [int(v, 16) for v in values]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(make_config(example_data()))
    await simulator.start()
    for _ in range(50):  # 5 s of plant: pumps up to speed, temperatures moving
        simulator.step(0.1)
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.mark.anyio
async def test_temperature_int16_hundredths(sim: Simulator) -> None:
    port = port_of(sim, "cdu")
    p = sim.rig.units["supply_temp"].spec.io_map.point("temperature")
    raw = await read(port, 4, p.address + 1, 2, "3")  # input registers, 1-based reference
    assert int(raw[0]) * 0.01 == pytest.approx(sim.state.supply_c, abs=0.006)
    assert int(raw[1]) == 0  # status: no sensor fault
    ret = await read(port, 5, p.address + 1, 1, "3:hex")
    assert decode(words(ret), p.encoding) == pytest.approx(sim.state.return_c, abs=0.006)


@pytest.mark.anyio
async def test_flow_float32_cdab_as_two_words(sim: Simulator) -> None:
    port = port_of(sim, "cdu")
    io_map = sim.rig.units["flow"].spec.io_map
    flow = io_map.point("flow")
    raw = await read(port, 6, flow.address + 1, 2, "3:hex")
    assert decode(words(raw), flow.encoding) == pytest.approx(sim.state.flow_lpm, rel=1e-6)
    # mbpoll's own 32-bit float without -B is low word first: the meter's CDAB
    (as_float,) = await read(port, 6, flow.address + 1, 1, "3:float")
    assert float(as_float) == pytest.approx(sim.state.flow_lpm, rel=1e-4)
    total = io_map.point("totalizer")
    raw = await read(port, 6, total.address, 2, "3:hex -0")  # 0-based addressing
    assert decode(words(raw), total.encoding) == pytest.approx(
        sim.rig.units["flow"].bank.get("totalizer"))


@pytest.mark.anyio
async def test_rack_meter_dcba_and_sunspec_battery(sim: Simulator) -> None:
    port = port_of(sim, "rack")
    meter = sim.rig.units["rack_meter"].spec.io_map
    power = meter.point("power_kw")
    raw = await read(port, 1, power.address + 1, 2, "3:hex")
    assert decode(words(raw), power.encoding) == pytest.approx(sim.state.it_power_kw, rel=1e-6)
    assert await read(port, 2, 40001, 2, "4:hex") == ["0x5375", "0x6E53"]  # "SunS"
    bat = sim.rig.units["battery"].spec.io_map
    soc = bat.point("soc_pct")
    raw = await read(port, 2, soc.address, 1, "4:hex -0")
    assert decode(words(raw), soc.encoding) == pytest.approx(sim.state.soc_pct, abs=0.06)
    sf = await read(port, 2, bat.point("soc_sf").address, 1, "4:hex -0")
    assert decode(words(sf), bat.point("soc_sf").encoding) == -1


@pytest.mark.anyio
async def test_mbpoll_writes_reach_the_pump(sim: Simulator) -> None:
    port = port_of(sim, "cdu")
    ref = sim.rig.units["pump1"].spec.io_map.point("speed_ref")
    await mbpoll(port, "-a", "1", "-r", str(ref.address + 1), "-t", "4", write=("5000",))
    for _ in range(10):
        sim.step(0.1)
    assert sim.rig.units["pump1"].bank.get("speed_ref") == 50.0
    assert sim.state.pump_speeds_pct[0] < 100.0  # 50.00 % written: ramping down
    status = sim.rig.units["pump1"].spec.io_map.point("status_word")
    rc, out = await mbpoll(port, "-a", "1", "-r", str(status.address + 1), "-t", "4",
                           write=("1",), check=False)
    assert rc != 0 and "Illegal data address" in out  # inputs are read-only


@pytest.mark.anyio
async def test_offline_unit_fails_for_mbpoll_too(sim: Simulator) -> None:
    port = port_of(sim, "cdu")
    sim.inject("flow", "offline")
    rc, out = await mbpoll(port, "-a", "6", "-r", "1", "-c", "2", "-t", "3", check=False)
    assert rc != 0 and "Target device failed to respond" in out, out  # exception 11
    assert (await read(port, 4, 1, 1, "3"))  # the rest of the gateway still answers
    sim.clear("flow")
    assert await read(port, 6, 1, 2, "3:hex")
