"""Benchmark: time for our driver to poll N points vs raw pymodbus reads of the same blocks.

The server runs in a subprocess (this file with --serve), so client and server do not share
one Python interpreter. Each iteration times one ModbusDevice.poll_once() (requests, decode,
samples into the input table) and one raw pass of read_holding_registers over the same
(start, count) blocks on a second connection, alternating so drift affects both alike.
The last line of output is one JSON object with the figures.

    .venv/bin/python bench/modbus_poll.py [--points 1000] [--polls 400] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _jsonline import print_json_line
from pymodbus.client import AsyncModbusTcpClient

from edge_runtime.config.codec import DataType, Encoding
from edge_runtime.config.schema import Access, DeviceConfig, IoMap, PointSpec, Table
from edge_runtime.core.clock import WallClock
from edge_runtime.core.points import Quality, Sample
from edge_runtime.io.modbus import ModbusDevice, ModbusEndpoint

UNIT = 1
# A mix like a real plant map: scaled words, signed words, word-swapped floats, 32-bit counters.
TYPES = [
    Encoding(DataType.UINT16, scale=0.1),
    Encoding(DataType.INT16),
    Encoding(DataType.FLOAT32, word_swap=True),
    Encoding(DataType.INT32),
    Encoding(DataType.UINT16),
]
GAP_EVERY = 25  # one unused register every 25 points, bridged by max_gap


def build_points(n: int) -> tuple[PointSpec, ...]:
    """N read points in the holding table with the type mix and occasional unused registers."""
    points, addr = [], 0
    for i in range(n):
        enc = TYPES[i % len(TYPES)]
        points.append(PointSpec(f"p{i:05d}", Table.HOLDING, addr, enc, Access.R))
        addr += enc.count + (1 if i % GAP_EVERY == GAP_EVERY - 1 else 0)
    return tuple(points)


def serve(port: int, registers: int) -> None:
    """Run a pymodbus server (subprocess side); prints READY once listening."""
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType as SimType
    from pymodbus.simulator import SimData, SimDevice

    async def main() -> None:
        values = [(i * 7) % 1000 for i in range(registers)]  # finite as floats, varied as ints
        bits = [SimData(0, count=16, values=False, datatype=SimType.BITS)]
        device = SimDevice(UNIT, simdata=(
            bits, list(bits), [SimData(0, values=values, datatype=SimType.REGISTERS)],
            [SimData(0, values=0, datatype=SimType.REGISTERS)]))
        server = ModbusTcpServer([device], address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        print("READY", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def pct(values: list[float], q: float) -> float:
    """q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def measure(port: int, points: tuple[PointSpec, ...], polls: int, warmup: int
                  ) -> dict[str, object]:
    """Alternate our poll and a raw pymodbus pass; return the figures."""
    io_map = IoMap("bench", "benchmark map", points, Path("bench"))
    config = DeviceConfig(name="bench", io_map=io_map, host="127.0.0.1", port=port, unit_id=UNIT,
                          poll_s=1.0, timeout_s=2.0, refresh_s=60.0, max_gap=2)
    table: dict[str, Sample] = {}
    endpoint = ModbusEndpoint("127.0.0.1", port, timeout_s=2.0)
    dev = ModbusDevice(config, endpoint, table, WallClock())
    raw = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2.0, retries=0, reconnect_delay=0)
    if not await raw.connect() or not await endpoint.ensure_connected():
        raise SystemExit(f"cannot connect to the server on port {port}")
    spans = [(b.start, b.count) for b in dev.blocks]
    ours: list[float] = []
    theirs: list[float] = []
    perf = time.perf_counter
    for i in range(warmup + polls):
        t0 = perf()
        await dev.poll_once()
        t1 = perf()
        for start, count in spans:
            rsp = await raw.read_holding_registers(start, count=count, device_id=UNIT)
            if rsp.isError() or len(rsp.registers) != count:
                raise SystemExit(f"raw read {start}+{count} failed: {rsp}")
        t2 = perf()
        if i >= warmup:
            ours.append((t1 - t0) * 1000)
            theirs.append((t2 - t1) * 1000)
    raw.close()
    endpoint.close()
    bad = [k for k, s in table.items() if s.quality is not Quality.GOOD]
    if len(table) != len(points) or bad or dev.get_status()["errors"]:
        raise SystemExit(f"driver did not read every point GOOD: {bad[:5]} {dev.get_status()}")
    p50, p99 = statistics.median(ours), pct(ours, 99)
    r50, r99 = statistics.median(theirs), pct(theirs, 99)
    return {
        "points": len(points), "polls": polls, "server": "subprocess",
        "ours": {"p50_ms": round(p50, 3), "p99_ms": round(p99, 3)},
        "raw_pymodbus": {"p50_ms": round(r50, 3), "p99_ms": round(r99, 3)},
        "overhead_ratio_p50": round(p50 / r50, 3), "overhead_ratio_p99": round(p99 / r99, 3),
        "requests_per_poll": dev.requests_per_poll, "minimum_requests": dev.minimum_requests,
        "ours_p50_us_per_point": round(p50 * 1000 / len(points), 3),
    }


def main() -> None:
    """Parse arguments, start the server subprocess, measure, print."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--polls", type=int, default=400)
    ap.add_argument("--quick", action="store_true", help="50 polls, for CI smoke runs")
    ap.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--registers", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.registers)
        return
    polls, warmup = (50, 10) if args.quick else (args.polls, 30)
    points = build_points(args.points)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--registers", str(points[-1].end + 1)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "READY":
            raise SystemExit("server subprocess did not start")
        figures = asyncio.run(measure(port, points, polls, warmup))
    finally:
        server.terminate()
        server.wait(timeout=5)
    ours, raw = figures["ours"], figures["raw_pymodbus"]
    print(f"{figures['points']} points, {polls} polls, server in a subprocess")
    print(f"  requests per poll: {figures['requests_per_poll']} "
          f"(minimum possible {figures['minimum_requests']})")
    print(f"  ours (poll_once):  p50 {ours['p50_ms']:.3f} ms  p99 {ours['p99_ms']:.3f} ms")  # type: ignore[index]
    print(f"  raw pymodbus:      p50 {raw['p50_ms']:.3f} ms  p99 {raw['p99_ms']:.3f} ms")  # type: ignore[index]
    print(f"  overhead ratio:    p50 {figures['overhead_ratio_p50']}x  "
          f"p99 {figures['overhead_ratio_p99']}x (target <= 1.3x)")
    print_json_line(figures)


if __name__ == "__main__":
    main()
