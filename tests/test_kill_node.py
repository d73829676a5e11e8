"""Issue 8 finding 8, as a technician would do it: `pswd-edge run` in its own process, a leak,
then `kill -9` (or SIGSTOP) of that process. The simulated drives and positioner hold their
last command for their fieldbus-loss time (2 s), then apply their own loss behaviour; with the
node keeping those registers at the safe image, the plant stays isolated: pumps stopped, valve
closed, leak or no leak. (On the old code the drives fell back to their io_map default: both
pumps at 100 % and the valve fully open, feeding the leak.)"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pswd_plant_sim.simulator import Simulator
from tests.test_end_to_end import EXAMPLES, plant, sim_ports, wait_for

BIN = Path(sys.executable).parent
__all__ = ["plant"]  # the fixture, imported for pytest

HOLD_S = 2.0  # the simulated devices' fieldbus-loss time (examples/plant.toml)


def node_file(tmp_path: Path, ports: dict[int, int]) -> Path:
    """examples/cdu.toml on the test's ports, journaling its latches in tmp_path."""
    text = (EXAMPLES / "cdu.toml").read_text()
    for old, new in ports.items():
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    text = text.replace("[safety]\n", f'[safety]\nstate_dir = "{tmp_path / "state"}"\n', 1)
    assert "state_dir" in text, "examples/cdu.toml has no [safety] table any more"
    path = tmp_path / "cdu.toml"
    path.write_text(text)
    return path


def isolated(sim: Simulator) -> bool:
    """The node's isolation is on the wire, the drives' own loss registers included."""
    units = sim.rig.units
    return (all(units[p].bank.get("control_word") == 0.0 for p in ("pump1", "pump2"))
            and all(units[p].bank.get("loss_run") == 0.0 for p in ("pump1", "pump2"))
            and units["valve"].bank.get("position_cmd") == 0.0
            and units["valve"].bank.get("fail_position") == 0.0)


@pytest.mark.anyio
@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
async def test_a_killed_or_stopped_node_leaves_the_leak_isolated(plant: Simulator,
                                                                 tmp_path: Path,
                                                                 how: str) -> None:
    exe = BIN / "pswd-edge"
    assert exe.exists(), f"{exe}: the console script is missing (pip install -e .)"
    proc = subprocess.Popen([str(exe), "run", "--config", str(node_file(tmp_path,
                                                                         sim_ports(plant)))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        units = plant.rig.units
        await wait_for(lambda: units["pump1"].bank.get("control_word") == 1.0, 20.0,
                       "the node starting pump1")
        plant.inject("leak", "leak", position_m=2.5)
        await wait_for(lambda: isolated(plant), 5.0, "the leak isolation on the wire")
        os.kill(proc.pid, getattr(signal, how))
        killed_at = time.monotonic()
        # Past the devices' hold, and long enough for the valve's full stroke to show.
        speeds: list[float] = []
        valve: list[float] = []
        while time.monotonic() - killed_at < HOLD_S + 4.0:
            speeds.append(max(plant.state.pump_speeds_pct))
            valve.append(plant.state.valve_pct)
            await asyncio.sleep(0.1)
        assert units["pump1"].bank.failsafe_active, "the drive never noticed the dead node"
        assert max(speeds[-10:]) < 1.0, speeds  # old code: both pumps back towards 100 %
        assert valve[-1] <= valve[0] + 0.5, valve  # the valve never reopened
        assert plant.state.flow_lpm < 5.0
    finally:
        if how == "SIGSTOP":
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        _, err = proc.communicate(timeout=10)
    assert b"Traceback" not in err, err.decode(errors="replace")
