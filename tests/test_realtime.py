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


@pytest.mark.timeout(30)
def test_sched_fifo_applied_as_root_or_refused_with_the_reason() -> None:
    # In a child process: the test process itself must keep normal scheduling.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=20, check=True).stdout.split()
    if os.geteuid() == 0:
        assert out == ["''", "True"]
    else:
        assert "not permitted" in " ".join(out) and out[-1] == "False"


def test_zero_means_normal_scheduling() -> None:
    from edge_runtime.core.realtime import apply_realtime_priority

    assert apply_realtime_priority(0) == ""
    assert os.sched_getscheduler(0) != os.SCHED_FIFO
