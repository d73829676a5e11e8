"""The demo CDU (examples/cdu.toml) against the plant simulator, with a leak isolation engaged:
the starting point of the safe-image, journal and dead-controller tests."""

from __future__ import annotations

from pathlib import Path

from edge_runtime.io.modbus import ModbusDevice
from tests.scenario_runner import Harness, Scenario

ISOLATED = ("pump1.control_word", "pump2.control_word", "valve.position_cmd")


def harness(tmp_path: Path, extra: str = "", *, state_dir: Path | None = None) -> Harness:
    """A Harness (not entered yet) for the example CDU; `extra` adds scenario tables."""
    path = tmp_path / "rig.toml"
    path.write_text('[scenario]\nname = "rig"\nnode = "examples/cdu.toml"\n'
                    'plant = "examples/plant.toml"\nduration_s = 1.0\n' + extra)
    return Harness(Scenario(path), state_dir=state_dir)


async def isolate(h: Harness) -> None:
    """Warm up past start-up (pump1 running), then a leak: isolation engaged, on the wire."""
    for _ in range(60):
        await h.tick()
    assert h.wire("pump1.control_word") == 1.0
    h.sim.inject("leak", "leak", position_m=2.5)
    for _ in range(2):
        await h.tick()
    assert h.node.safety.states["leak_isolate"].engaged
    assert [h.wire(p) for p in ISOLATED] == [0.0, 0.0, 0.0]


def drivers(h: Harness) -> list[ModbusDevice]:
    """The node's Modbus drivers."""
    return [d for d in h.node.drivers.values() if isinstance(d, ModbusDevice)]


async def write_all(h: Harness) -> None:
    """Every driver writes what is due now (no scan)."""
    for d in drivers(h):
        await d.write_due()


def wire_values(h: Harness) -> list[float | None]:
    """What the isolated outputs' devices last received."""
    return [h.wire(p) for p in ISOLATED]
