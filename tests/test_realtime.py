"""Real-time scheduling of the node process: applied when permitted, a reason when not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import os
from edge_runtime.core.realtime import apply_realtime_priority
why = apply_realtime_priority(10)
print(repr(why), os.sched_getscheduler(0) == os.SCHED_FIFO)
"""


CAP_SYS_NICE = 23


def may_set_realtime() -> bool:
    """Root alone is not enough in a container that drops CAP_SYS_NICE: read the capability."""
    with open("/proc/self/status") as fh:
        caps = next(line for line in fh if line.startswith("CapEff:"))
    return bool(int(caps.split()[1], 16) >> CAP_SYS_NICE & 1)


@pytest.mark.timeout(30)
def test_sched_fifo_applied_when_permitted_or_refused_with_the_reason() -> None:
    # In a child process: the test process itself must keep normal scheduling.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=20, check=True).stdout.split()
    if may_set_realtime():
        assert out == ["''", "True"]
    else:
        assert "not permitted" in " ".join(out) and out[-1] == "False"


def test_zero_means_normal_scheduling() -> None:
    from edge_runtime.core.realtime import apply_realtime_priority

    assert apply_realtime_priority(0) == ""
    assert os.sched_getscheduler(0) != os.SCHED_FIFO


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_node_run_in_process_gives_the_thread_back_its_scheduling(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A node with realtime_priority run inside a longer-lived process (a test session, a tool)
    must not leave that process's thread SCHED_FIFO when it returns."""
    from edge_runtime.assembly import assemble, load_node_config

    path = tmp_path / "rt.toml"
    path.write_text('[node]\nname = "rt"\nrole = "rack"\nscan_period_ms = 20\n'
                    'realtime_priority = 10\n')
    node = assemble(load_node_config(path), watchdog_thread=False)
    seen: list[int] = []

    class Probe:
        name = "probe"

        def step(self, image, now, dt) -> None:  # type: ignore[no-untyped-def]
            seen.append(os.sched_getscheduler(0))

    node.engine.blocks.append(Probe())
    before = os.sched_getscheduler(0)
    await node.run(0.2)
    assert seen, "the scan never ran"
    if may_set_realtime():
        assert seen[-1] == os.SCHED_FIFO  # it did run real-time
    assert os.sched_getscheduler(0) == before
