"""The plant simulator on free loopback ports, the example CDU config pointed at it, and the
tool run in-process (main(argv) on a worker thread: it runs its own event loop while the
simulator serves from the test's)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pswd_commission.cli import main
from pswd_plant_sim.simulator import Simulator
from tests.test_plant_sim import example_data, make_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def port_of(sim: Simulator, endpoint: str) -> int:
    """The free port the simulator's endpoint listens on."""
    return next(e.port for e in sim.endpoints if e.name == endpoint)


@contextlib.asynccontextmanager
async def running_plant() -> AsyncIterator[Simulator]:
    """examples/plant.toml on free ports, stepping in real time until the block ends."""
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


@contextlib.asynccontextmanager
async def stepped_plant(seconds: float) -> AsyncIterator[Simulator]:
    """examples/plant.toml on free ports, advanced `seconds` of model time in fixed 10 ms
    steps and then held still: every register is the same on every run (seeded model)."""
    sim = Simulator(make_config(example_data()))
    await sim.start()
    try:
        for _ in range(round(seconds / 0.01)):
            sim.step(0.01)
        yield sim
    finally:
        await sim.stop()


async def flowing(sim: Simulator, lpm: float = 50.0, timeout: float = 10.0) -> None:
    """Wait (bounded) until the pumps, starting from rest, move `lpm` through the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sim.state.flow_lpm < lpm:
        if loop.time() > deadline:
            pytest.fail(f"no {lpm} L/min within {timeout} s (flow {sim.state.flow_lpm:.1f})")
        await asyncio.sleep(0.05)


def cdu_config(tmp_path: Path, sim: Simulator, extra: str = "") -> Path:
    """examples/cdu.toml with its gateway moved to the simulator's cdu port."""
    text = (EXAMPLES / "cdu.toml").read_text().replace(
        "127.0.0.1:15502", f"127.0.0.1:{port_of(sim, 'cdu')}")
    path = tmp_path / "cdu.toml"
    path.write_text(text + extra)
    return path


async def tool(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run pswd-commission in-process; (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def tool_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    """Run with --json; (exit code, the parsed document)."""
    code, out, err = await tool(capsys, *argv, "--json")
    assert "Traceback" not in err
    return code, json.loads(out)


def rows(document: dict[str, Any], key: str, name: str = "point") -> dict[str, dict[str, Any]]:
    """A JSON result's rows by name."""
    return {r[name]: r for r in document[key]}
