"""`pswd-edge run` says how it goes: a status line every period (a minute by default) and a
closing summary, whether it ends by --duration or by a signal."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.runlog import RunLog
from tests.mosquitto import free_port
from tests.test_cli_errors import dump_toml, example

SCRIPT = Path(sys.executable).parent / "pswd-edge"


def node_status(cycles: int, overruns: int, p99_ms: float) -> dict[str, Any]:
    return {"scan": {"cycles": cycles, "overruns": overruns,
                     "exec_ms": {"p99": p99_ms, "max": 2 * p99_ms},
                     "jitter_ms": {"p99": 0.01}},
            "safety": {"active": ["leak_isolate"],
                       "limits": {"t.temp": "high", "f.flow": "normal"}},
            "events": {"total": 12},
            "mqtt": {"online": False, "invalid": {"malformed": 3},
                     "mqtt": {"connected": False,
                              "last_error": "10.0.0.5:502 is not an MQTT 5 broker: no CONNACK"}}}


def test_status_line_and_summary_say_what_an_operator_asks_first() -> None:
    now = [100.0]
    status = [node_status(600, 0, 0.42)]
    lines: list[str] = []
    log = RunLog("rack-01", period_s=60.0, clock=lambda: now[0], emit=lines.append)
    log.add("node", lambda: status[0])
    assert log.line() == (
        "status rack-01: 600 scans (+600), 0 overruns (+0), exec p99 0.42 ms max 0.84 ms, "
        "jitter p99 0.01 ms, alarms active 2 (leak_isolate, t.temp:high), link down "
        "(10.0.0.5:502 is not an MQTT 5 broker: no CONNACK), invalid messages 3")
    status[0] = node_status(1200, 2, 0.5)
    assert log.line().startswith("status rack-01: 1200 scans (+600), 2 overruns (+2), ")
    now[0] = 221.5
    assert log.summary().startswith("summary rack-01 after 121.5 s: 1200 scans, 2 overruns, "
                                    "exec p99 0.50 ms")
    assert log.summary().endswith(", invalid messages 3, 12 events")


def test_site_coordinator_counts_and_its_link() -> None:
    log = RunLog("site-01", emit=lambda _: None)
    log.add("node", lambda: {"scan": {"cycles": 5}, "coordinator": {
        "counts": {"announcements": 7, "approved": 5, "rejected": 2, "invalid": 0},
        "mqtt": {"connected": True}}})
    assert log.line().endswith("alarms active 0; site 7 announcements (approved 5, "
                               "rejected 2), link up")


@pytest.mark.anyio
async def test_around_logs_every_period_and_sums_up_when_cancelled() -> None:
    lines: list[str] = []
    log = RunLog("n", period_s=0.01)
    log.add("node", lambda: node_status(1, 0, 0.1))
    three = asyncio.Event()

    def emit(line: str) -> None:
        lines.append(line)
        if len(lines) >= 3:
            three.set()

    log.emit = emit
    task = asyncio.create_task(log.around(asyncio.Event().wait()))
    await asyncio.wait_for(three.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(line.startswith("status n: ") for line in lines[:3])
    assert lines[-1].startswith("summary n after ")


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "rack.toml"
    config.write_text(dump_toml(example("rack.toml", free_port())))
    return config


@pytest.mark.timeout(60)
def test_run_logs_status_lines_and_a_summary_with_duration(tmp_path: Path) -> None:
    proc = subprocess.run([str(SCRIPT), "run", "--config", str(_config(tmp_path)),
                           "--duration", "2.5", "--status-every", "1"],
                          capture_output=True, text=True, timeout=40)
    assert proc.returncode == 0, proc.stderr
    status = [x for x in proc.stderr.splitlines() if "edge_runtime.run: status rack-01:" in x]
    summary = [x for x in proc.stderr.splitlines() if "edge_runtime.run: summary rack-01" in x]
    assert len(status) == 2, proc.stderr
    assert len(summary) == 1 and " scans, " in summary[0] and " overruns, " in summary[0]
    assert "exec p99 " in summary[0] and "alarms active " in summary[0]
    assert proc.stderr.rstrip().splitlines()[-1] == summary[0]  # the last word


@pytest.mark.timeout(60)
def test_run_sums_up_on_sigint_too(tmp_path: Path) -> None:
    proc = subprocess.Popen([str(SCRIPT), "run", "--config", str(_config(tmp_path))],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # wait (bounded by the test timeout) until it runs
        if "starting" in line:
            break
    os.kill(proc.pid, signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(30) == 0
    assert "edge_runtime.run: summary rack-01 after " in rest
