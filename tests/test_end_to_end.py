"""End to end over real Modbus TCP: plant simulator <-> node, the watchdog thread, the demo."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from edge_runtime.assembly import NodeConfig, assemble, load_node_config
from edge_runtime.config.codec import decode
from edge_runtime.core.commands import SetOutput
from edge_runtime.core.image import ProcessImage
from pswd_plant_sim.simulator import Simulator
from tests.conftest import free_port
from tests.test_plant_sim import example_data, make_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BIN = ROOT / ".venv" / "bin"


def node_config(tmp_path: Path, example: str, ports: dict[int, int]) -> NodeConfig:
    """An example node config with its endpoints moved to the test's ports."""
    text = (EXAMPLES / example).read_text()
    for old, new in ports.items():
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    path = tmp_path / example
    path.write_text(text)
    return load_node_config(path)


async def wait_for(condition: object, timeout: float, what: str) -> None:
    """Poll a condition (the plant has no event to await) until true or fail naming it."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def plant() -> AsyncIterator[Simulator]:
    sim = Simulator(make_config(example_data()))
    await sim.start()
    stepper = asyncio.create_task(sim.run_realtime())
    try:
        yield sim
    finally:
        stepper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stepper
        await sim.stop()


def sim_ports(sim: Simulator) -> dict[int, int]:
    return {15502: next(e.port for e in sim.endpoints if e.name == "cdu"),
            15503: next(e.port for e in sim.endpoints if e.name == "rack")}


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_pump_speed_command_reaches_the_plant_and_flow_responds(
        plant: Simulator, tmp_path: Path) -> None:
    node = assemble(node_config(tmp_path, "cdu.toml", sim_ports(plant)), watchdog_thread=False)
    runner = asyncio.create_task(node.run())
    try:
        # The node reads the plant: every input GOOD once the first polls are latched.
        await wait_for(lambda: node.image.value("flow.flow") is not None, 5, "first flow reading")
        # Pumps start at their failsafe (100 %): bring the loop to one pump at 40 % first.
        for cmd in (SetOutput("pump2.control_word", 0), SetOutput("pump1.control_word", 1),
                    SetOutput("pump1.speed_ref", 40.0)):
            node.commands.submit(cmd)
        await wait_for(lambda: abs(plant.state.pump_speeds_pct[0] - 40.0) < 0.5
                       and plant.state.pump_speeds_pct[1] < 0.5, 10, "pump1 at 40 %, pump2 off")
        await wait_for(lambda: abs((node.image.value("pump1.speed_actual") or 0) - 40) < 1, 3,
                       "the node reading back 40 %")
        low_flow = plant.state.flow_lpm
        node.commands.submit(SetOutput("pump1.speed_ref", 80.0))
        await wait_for(lambda: abs(plant.state.pump_speeds_pct[0] - 80.0) < 0.5, 10,
                       "pump1 at 80 % in the plant")
        high_flow = plant.state.flow_lpm
        # Affinity law: flow rises with speed (with the system curve, by well over a third).
        assert high_flow > 1.3 * low_flow, (low_flow, high_flow)
        await wait_for(lambda: (node.image.value("flow.flow") or 0) > 1.25 * low_flow, 3,
                       "the node's flow reading to follow")
        assert node.image.sample("flow.flow").quality.value == "good"
        assert all(r.accepted for r in node.commands.audit)
        assert node.engine.stats.overruns == 0
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    # Shutdown leaves the plant in its failsafe state: both pumps commanded to run at 100 %.
    await wait_for(lambda: min(plant.state.pump_speeds_pct) > 99.0, 10, "failsafe after stop")


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_unreachable_device_is_bad_and_the_node_keeps_scanning(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens here
    cfg = node_config(tmp_path, "rack.toml", {15503: dead})
    node = assemble(cfg, watchdog_thread=False)
    runner = asyncio.create_task(node.run())
    try:
        await wait_for(lambda: node.engine.stats.cycles >= 10
                       and node.image.sample("rack_meter.power_kw").quality.value == "bad",
                       10, "ten scans with the meter BAD")
        assert "rack_meter.power_kw" in node.image.inputs
        reason = node.image.sample("rack_meter.power_kw").reason
        assert reason, "a BAD point says why"
        assert node.engine.stats.overruns == 0
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


# -- the watchdog thread writes failsafe while the event loop is frozen ------------------------

@pytest.fixture
def plant_process(tmp_path: Path) -> Iterator[dict[int, int]]:
    """`pswd-plant-sim` in its own process, so it keeps serving while the test's loop freezes."""
    ports = {15502: free_port(), 15503: free_port()}
    text = (EXAMPLES / "plant.toml").read_text()
    for old, new in ports.items():
        text = text.replace(f"port = {old}", f"port = {new}")
    cfg = tmp_path / "plant.toml"
    cfg.write_text(text)
    exe = [str(BIN / "pswd-plant-sim")] if (BIN / "pswd-plant-sim").exists() else \
        [sys.executable, "-m", "pswd_plant_sim"]
    proc = subprocess.Popen([*exe, "--config", str(cfg), "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # it prints one line per endpoint once bound
            if line.startswith("step "):
                break
        else:
            pytest.fail(f"pswd-plant-sim exited with {proc.wait()} before serving")
        yield ports
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Stall:
    """A control block that freezes the whole event loop once, as a runaway computation would."""

    name = "stall"

    def __init__(self, after_scans: int, seconds: float) -> None:
        self.after = after_scans
        self.seconds = seconds
        self.scans = 0
        self.frozen: tuple[float, float] | None = None

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        self.scans += 1
        if self.scans == self.after:
            start = time.monotonic()
            time.sleep(self.seconds)  # deliberately blocking: this is the fault under test
            self.frozen = (start, time.monotonic())


@pytest.mark.anyio
@pytest.mark.timeout(40)
async def test_watchdog_thread_writes_failsafe_while_the_loop_is_frozen(
        plant_process: dict[int, int], tmp_path: Path) -> None:
    cfg = node_config(tmp_path, "cdu.toml", plant_process)
    stall = Stall(after_scans=20, seconds=2.5)
    node = assemble(cfg, blocks=[stall])  # the real watchdog thread
    valve = cfg.device("valve")
    spec = valve.io_map.point("position_cmd")
    seen: list[tuple[float, float]] = []  # (time, valve command in the plant) from another thread
    stop = threading.Event()

    def observe() -> None:
        client = ModbusTcpClient("127.0.0.1", port=plant_process[15502], timeout=1)
        client.connect()
        try:
            while not stop.is_set():
                rr = client.read_holding_registers(spec.address, count=spec.count,
                                                   device_id=valve.unit_id)
                if not rr.isError():
                    seen.append((time.monotonic(), decode(rr.registers, spec.encoding)))
                stop.wait(0.02)
        finally:
            client.close()

    watcher = threading.Thread(target=observe, daemon=True)
    node.commands.submit(SetOutput("valve.position_cmd", 20.0))
    runner = asyncio.create_task(node.run())
    watcher.start()
    try:
        await wait_for(lambda: stall.frozen is not None, 20, "the stall to happen")
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        stop.set()
        watcher.join(5)
    assert stall.frozen is not None
    start, end = stall.frozen
    before = [v for t, v in seen if t < start]
    assert before and before[-1] == pytest.approx(20.0), "the node drove the valve before"
    during = [(t, v) for t, v in seen if start <= t <= end]
    failsafe = spec.failsafe
    tripped_at = next((t for t, v in during if v == pytest.approx(failsafe)), None)
    assert tripped_at is not None, f"no failsafe ({failsafe}) on the wire while frozen: {during}"
    # Watchdog 500 ms, checked every 125 ms: failsafe within a second of the freeze.
    assert tripped_at - start < 1.2, tripped_at - start
    assert node.watchdog.tripped  # latched: a scan that resumes does not quietly take over
