"""The commissioning faults of the plant simulator: a scaled point, swapped words, crossed
outputs; over real Modbus TCP, in stepped time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient

from edge_runtime.config.codec import decode
from pswd_plant_sim.simulator import Simulator
from tests.test_plant_sim import example_data, make_config


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(make_config(example_data()))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


async def _client(sim: Simulator, endpoint: str = "cdu") -> AsyncModbusTcpClient:
    port = next(e.port for e in sim.endpoints if e.name == endpoint)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    assert await client.connect()
    return client


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_scale_and_word_order_faults_change_what_the_wire_says(sim: Simulator) -> None:
    sim.step(0.1)
    client = await _client(sim)
    try:
        spec = sim.rig.units["supply_pressure"].bank.point("pressure")
        true = decode((await client.read_input_registers(0, count=1, device_id=7)).registers,
                      spec.encoding)
        sim.inject("supply_pressure", "scale", point="pressure", factor=10.0)
        sim.step(0.01)
        scaled = decode((await client.read_input_registers(0, count=1, device_id=7)).registers,
                        spec.encoding)
        assert scaled == pytest.approx(10 * true, rel=0.02)

        flow = sim.rig.units["flow"].bank.point("flow")
        plain = (await client.read_input_registers(0, count=2, device_id=6)).registers
        sim.inject("flow", "word_order", point="flow")
        swapped = (await client.read_input_registers(0, count=2, device_id=6)).registers
        assert swapped == list(reversed(plain))
        assert decode(plain, flow.encoding) > 1.0
        assert decode(swapped, flow.encoding) != pytest.approx(decode(plain, flow.encoding))
        sim.clear("flow")
        assert (await client.read_input_registers(0, count=2, device_id=6)).registers == plain
    finally:
        client.close()


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_swapped_outputs_move_the_other_element(sim: Simulator) -> None:
    sim.swap_outputs("pump1.speed_ref", "pump2.speed_ref")
    with pytest.raises(ValueError, match="already swapped"):
        sim.swap_outputs("pump1.speed_ref", "valve.position_cmd")
    with pytest.raises(ValueError, match="not an output"):
        sim.swap_outputs("pump1.speed_actual", "valve.position_cmd")
    client = await _client(sim)
    try:
        rsp = await client.write_registers(1, [4000], device_id=1)  # pump1 speed_ref 40 %
        assert not rsp.isError()
        for _ in range(50):  # 5 s of model time: the VFD ramps at 20 %/s
            sim.step(0.1)
            await client.write_registers(1, [4000], device_id=1)  # refresh inside max_hold_s
        pumps = sim.plant.loop.pumps
        assert pumps[0].speed_pct == pytest.approx(100.0, abs=0.5)  # pump1 did not move
        assert pumps[1].speed_pct == pytest.approx(40.0, abs=0.5)  # pump2 took its command
        # the registers are as the client left them: only the wiring is crossed
        assert sim.rig.units["pump1"].bank.get("speed_ref") == pytest.approx(40.0)
        assert sim.rig.units["pump2"].bank.get("speed_ref") == pytest.approx(100.0)
        assert sim.get_status()["sim"]["swapped_outputs"] == [
            ["pump1.speed_ref", "pump2.speed_ref"]]
    finally:
        client.close()
