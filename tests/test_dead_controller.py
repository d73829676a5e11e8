"""The plant stays safe when the controller is gone (issue 8 finding 8).

The node is killed in the middle of a leak isolation: its scan and drivers simply stop, no
shutdown runs (as under SIGKILL or SIGSTOP). The simulated drives and positioner then apply
their own comms-loss behaviour after their 2 s hold. On the old code that was the io_map
default (pumps run at 100 %, valve fully open: the leak fed at full flow); now the node keeps
the devices' comms-loss registers (drive loss action and preset speed, positioner fail
position) at its safe image, so they stop and close on their own."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.cdu_rig import harness, isolate

pytestmark = pytest.mark.anyio


async def test_killed_node_leaves_the_isolation_on_the_plant(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await isolate(h)
        for _ in range(20):  # pumps ramp down (20 %/s in the plant model)
            await h.tick()
        assert h.wire("pump1.loss_run") == 0.0 and h.wire("valve.fail_position") == 0.0
        # kill -9: from here on nothing of the node runs, the plant goes on alone
        valve = [h.sim.state.valve_pct]
        for _ in range(250):  # 25 s of plant time, well past the devices' 2 s comms-loss hold
            h.sim.step(h.period)  # (and the valve's full stroke at 5 %/s)
            valve.append(h.sim.state.valve_pct)
        assert all(b <= a for a, b in itertools.pairwise(valve))  # never reopens
        units = h.sim.rig.units
        assert units["pump1"].bank.failsafe_active >= {"control_word", "speed_ref"}
        assert units["pump1"].bank.get("control_word") == 0.0
        assert units["pump2"].bank.get("control_word") == 0.0
        assert units["valve"].bank.get("position_cmd") == 0.0
        state = h.sim.state
        assert max(state.pump_speeds_pct) < 1.0  # old code: both pumps back at 100 %
        assert state.flow_lpm < 1.0 and state.valve_pct < 1.0


async def test_killed_node_without_a_trip_leaves_the_io_map_failsafe(tmp_path: Path) -> None:
    # Nothing engaged: the safe image is the io_map failsafe (cooling first: run at 100 %,
    # valve open), and that is what the devices fall back to.
    async with harness(tmp_path) as h:
        for _ in range(60):
            await h.tick()
        assert h.wire("pump1.speed_ref") != 100.0
        for _ in range(50):
            h.sim.step(h.period)
        units = h.sim.rig.units
        assert units["pump1"].bank.get("control_word") == 1.0
        assert units["pump1"].bank.get("speed_ref") == 100.0
        assert units["valve"].bank.get("position_cmd") == 100.0
