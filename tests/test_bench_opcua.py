"""Smoke runs of the OPC UA benchmarks (issue 12 item 6): each `--quick` run ends with one
JSON line holding the documented keys, and the checks that do not depend on machine load hold
(every notification delivered at 500 items, every Force and Release found on the Modbus wire).
Timing targets are not asserted here: bench/RESULTS.md records them from full runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def last_json(script: str, *args: str, timeout: float) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=str(ROOT),
                          check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result


@pytest.mark.timeout(60)
def test_opcua_items_quick() -> None:
    # --seconds 7: the quick case shortened so both smoke runs stay under a minute together
    r = last_json("opcua_items.py", "--quick", "--seconds", "7", timeout=55)
    node, base = r["items_500"], r["baseline_bare_asyncua"]
    for key in ("items", "overruns", "jitter_p50_ms", "jitter_p99_ms", "jitter_max_ms",
                "node_cpu_pct", "opcua_thread_cpu_pct", "client_cpu_pct", "expected",
                "delivered", "missing", "mqtt_samples_sent", "met"):
        assert key in node, key
    for key in ("items", "server_cpu_pct", "client_cpu_pct", "expected", "delivered",
                "missing"):
        assert key in base, key
    assert node["items"] == base["items"] == 500
    # 500 items x ~7 changes each, counted exactly: nothing lost at this size
    assert node["expected"] >= 500 * 5 and node["missing"] == 0, node
    assert base["expected"] >= 500 * 5 and base["missing"] == 0, base
    assert node["mqtt_samples_sent"] > 0, "the MQTT link published beside the server"
    assert "largest_items_meeting_targets" in r


@pytest.mark.timeout(45)
def test_opcua_method_quick() -> None:
    r = last_json("opcua_method.py", "--quick", timeout=40)["force_to_wire_10ms_scan"]
    for key in ("force_to_wire", "release_to_wire", "force_call_round_trip",
                "baseline_bare_read_round_trip"):
        for sub in ("n", "p50_ms", "p99_ms", "max_ms", "p50_scans", "p99_scans"):
            assert sub in r[key], (key, sub)
    assert r["calls"] == 50 and r["unmatched"] == 0, r
    assert r["force_to_wire"]["n"] == r["release_to_wire"]["n"] == 50
    assert r["commands_audited"] == 100  # every Force and Release went through the queue
    assert "target_p99_ms" in r and "met" in r
