"""`pswd-edge demo`: its closing table of spec targets, the measurements behind it, the view.

The end-to-end test runs the demo as a user would (console script, subprocess) and parses the
table; the others check each measurement on samples whose right answer is known, so a table
that says "met" means what it says.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from edge_runtime.demo.processes import VIEW_POINTS
from edge_runtime.demo.targets import (
    GRID_WARMUP_S,
    MET,
    NOT_MEASURED,
    NOT_MET,
    TABLE_COLUMNS,
    THERMAL_WARMUP_S,
    Announcement,
    Record,
    battery_responses,
    format_table,
    in_band_share,
    largest_change,
    means_100ms,
    target_rows,
)
from edge_runtime.demo.view import EventView, NodeView, PointView, render

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = (MET, NOT_MET, NOT_MEASURED)
ROW_STARTS = ("grid:", "supply temperature", "A.2 answer", "battery response", "scan overruns")


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The closing table's data rows, by their first cell's leading words."""
    lines = stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| spec target"))
    cells = [c.strip() for c in lines[head].strip("|").split("|")]
    assert tuple(cells) == TABLE_COLUMNS
    rows: dict[str, list[str]] = {}
    for line in lines[head + 2:]:
        if not line.startswith("| "):
            break
        row = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(row) == len(TABLE_COLUMNS), line
        key = next(k for k in ROW_STARTS if row[0].startswith(k))
        rows[key] = row
    return rows


def kw(text: str) -> float:
    m = re.search(r"([\d.]+) kW", text)
    assert m is not None, text
    return float(m.group(1))


@pytest.mark.timeout(60)
def test_demo_ends_with_the_spec_targets_and_an_honest_grid_verdict() -> None:
    exe = [str(BIN / "pswd-edge")] if (BIN / "pswd-edge").exists() else \
        [sys.executable, "-m", "edge_runtime.cli"]
    # 12 s: the A.1 goes at 30 % of the run, the grid is measured over ~10 s of 0.5-2 Hz
    # training iterations (~30 load edges); the thermal row needs the 40 s warm-up first.
    out = subprocess.run([*exe, "demo", "--duration", "12", "--no-ui"], capture_output=True,
                         text=True, timeout=50, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "PSWD Edge demo: 12 s on loopback" in out.stdout
    rows = table_rows(out.stdout)
    assert sorted(rows) == sorted(ROW_STARTS), out.stdout
    for row in rows.values():
        assert row[-1] in RESULTS, row
    grid = rows["grid:"]
    target, measured = kw(grid[2]), kw(grid[3])
    assert target == pytest.approx(120.0 * 50 / 200)  # the 120 kW rack standing for 200 MW
    # The verdict must follow the numbers. Whether a 12 s run on a shared CI machine meets the
    # scaled 30 kW is not asserted: a whole-machine stall landing on a 40 ms load edge lets it
    # through (see README); the smoothing itself is held to the spec in simulated time
    # (tests/test_grid_steps.py). What must hold on any machine: the battery takes most of it.
    assert (grid[-1] == MET) == (measured < target), out.stdout
    without = re.search(r"\(([\d.]+) kW without battery\)", grid[3])
    assert without is not None, grid
    assert measured < 0.6 * float(without.group(1)), out.stdout
    assert rows["supply temperature"][-1] == NOT_MEASURED  # 12 s < the warm-up, said so
    assert "warm-up" in rows["supply temperature"][3]
    a2 = rows["A.2 answer"]
    assert re.match(r"[\d.]+ ms \('approved", a2[3]), a2  # the site answered through MQTT
    assert re.match(r"max \d+ ms, p50 \d+ ms, \d+ edges", rows["battery response"][3])
    assert re.fullmatch(r"\d+ / \d+ / \d+", rows["scan overruns"][3])  # cdu, rack, site


@pytest.mark.timeout(60)
def test_demo_says_in_one_line_when_the_simulator_ports_are_taken() -> None:
    exe = [str(BIN / "pswd-edge")] if (BIN / "pswd-edge").exists() else \
        [sys.executable, "-m", "edge_runtime.cli"]
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 15503))  # the rack's endpoint in examples/plant.toml
        taken.listen()
        out = subprocess.run([*exe, "demo", "--duration", "5", "--no-ui"], capture_output=True,
                             text=True, timeout=50, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "cannot open the simulator's Modbus ports" in out.stderr
    assert "Traceback" not in out.stderr and "Spec targets" not in out.stdout


# -- the measurements, on samples with a known answer ------------------------------------------
def samples(duration_s: float, it: object, batt: object, supply: object, dt: float = 0.01,
            ) -> list[tuple[float, float, float, float, float]]:
    """(t, IT kW, grid kW, battery kW, supply degC) every dt from t=100 s on."""
    out = []
    for i in range(round(duration_s / dt)):
        t = 100.0 + i * dt
        i_kw, b_kw = it(t), batt(t)  # type: ignore[operator]
        out.append((t, i_kw, i_kw - b_kw, b_kw, supply(t)))  # type: ignore[operator]
    return out


def test_largest_change_is_over_sliding_1s_windows_of_100ms_means() -> None:
    # A 40 kW step in the IT load, none on the grid with a battery that takes all of it.
    rows = samples(5.0, lambda t: 60.0 if t < 102.0 else 100.0, lambda t: 0.0, lambda t: 30.0)
    t, v = means_100ms(rows, 1, 100.0)
    assert len(t) == 49 and v[0] == pytest.approx(60.0) and v[-1] == pytest.approx(100.0)
    assert largest_change(t, v, 1.0) == pytest.approx(40.0)
    # A 10 kW/s ramp: 10 kW in any 1 s, never the 30 kW of the whole ramp.
    ramp = samples(5.0, lambda t: 50.0 + 10.0 * max(0.0, min(t - 101.0, 3.0)), lambda t: 0.0,
                   lambda t: 30.0)
    t, v = means_100ms(ramp, 1, 100.0)
    assert largest_change(t, v, 1.0) == pytest.approx(10.0, abs=0.6)


def test_battery_response_runs_to_90_percent_of_the_edge() -> None:
    edges = (101.0, 102.0, 103.0)

    def it(t: float) -> float:
        return 100.0 if sum(t >= e for e in edges) % 2 else 50.0

    def lagging(lag: float) -> object:
        return lambda t: it(t - lag) - 50.0  # carries the whole edge, `lag` late

    times, missed = battery_responses(samples(4.0, it, lagging(0.06), lambda t: 30.0), 24.0,
                                      100.0)
    assert missed == 0 and len(times) == 3
    assert all(x == pytest.approx(0.06, abs=0.011) for x in times)
    # A battery that never moves answers no edge; one that takes only half of it neither.
    _, missed = battery_responses(samples(4.0, it, lambda t: 0.0, lambda t: 30.0), 24.0, 100.0)
    assert missed == 3
    half = samples(4.0, it, lambda t: (it(t) - 50.0) / 2, lambda t: 30.0)
    assert battery_responses(half, 24.0, 100.0) == ([], 3)


def test_thermal_row_counts_only_after_the_stated_warm_up() -> None:
    def record(supply: object) -> Record:
        rec = Record(samples=samples(60.0, lambda t: 60.0, lambda t: 0.0, supply, dt=0.1))
        rec.t0 = 100.0
        rec.announcement = Announcement("w", 3.0, latency_ms=12.0, status="approved")
        return rec

    # 2 K below the setpoint during start-up, then within 0.3 K: met, start-up shown apart.
    cold_start = record(lambda t: 28.0 if t < 100.0 + THERMAL_WARMUP_S - 5 else 30.3)
    row = target_rows(cold_start, 60.0, 120.0, 30.0)[1]
    assert row[-1] == MET and row[3] == "100.0 % (worst 0.30 K; 2.00 K with the start-up)"
    # 0.6 K off for 2 s after the warm-up: not met, and the share says how much.
    late = record(lambda t: 30.6 if 100.0 + THERMAL_WARMUP_S + 5 <= t < 100.0
                  + THERMAL_WARMUP_S + 7 else 30.0)
    row = target_rows(late, 60.0, 120.0, 30.0)[1]
    assert row[-1] == NOT_MET and "worst 0.60 K" in row[3]
    assert float(row[3].split(" %")[0]) == pytest.approx(90.0, abs=1.0)  # 2 s of ~20 s
    # A run shorter than the warm-up does not pretend to have measured it.
    short = record(lambda t: 30.0)
    row = target_rows(short, THERMAL_WARMUP_S - 10, 120.0, 30.0)[1]
    assert row[-1] == NOT_MEASURED
    assert in_band_share(short.samples, 30.0, 0.5, 1e9) is None


def test_rows_without_data_say_not_measured_and_the_table_lines_up() -> None:
    rec = Record()
    rows = target_rows(rec, 10.0, 120.0, None)
    assert [r[-1] for r in rows] == [NOT_MEASURED] * 5
    lines = format_table(rows)
    assert len({len(line) for line in lines}) == 1  # every line as wide as the header
    assert GRID_WARMUP_S < 10.0


# -- the live view ---------------------------------------------------------------------------
def test_live_view_fits_40_rows_of_100_columns() -> None:
    scan = {"period_ms": 10.0, "cycles": 123456, "overruns": 0,
            "exec_ms": {"avg": 0.1, "p99": 0.3, "max": 2.5},
            "jitter_ms": {"p50": 0.01, "p99": 0.2, "max": 6.7}}
    long = "inverter reverted to its safe state: it lost our heartbeat " * 3
    views = [NodeView(name, name.split("-")[0], scan, False,
                      tuple(PointView(p, 1234.5678, "degC", "uncertain", "stale for 2.0 s")
                            for p in points),
                      tuple(EventView(float(i), "interlock.inverter_reverted", "critical", long)
                            for i in range(8)))
             for name, points in VIEW_POINTS.items()]
    views.append(NodeView("site-01", "site", scan, True))
    extra = ["grid   96.7 kW   IT  119.3 kW   battery   +22.6 kW   SoC  60.0 %",
             "workload demo-train-1796520617: A.2 approved in 8.9 ms (" + "x" * 200 + ")",
             "site coordinator: " + ", ".join(f"counter{i} {i}" for i in range(30))]
    console = Console(width=100, height=40, record=True, file=io.StringIO(),
                      color_system=None)
    console.print(render(views, "PSWD Edge demo  t= 12.3/60 s  (Ctrl-C stops)", extra))
    lines = console.export_text().splitlines()
    assert len(lines) <= 40, "\n".join(lines)
    assert max(len(line) for line in lines) <= 100
    text = "\n".join(lines)
    for name in ("cdu-01", "rack-01", "site-01", "supply_temp.temperature", "battery.soc_pct"):
        assert name in text
