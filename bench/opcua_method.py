"""Benchmark: an OPC UA method call to the output on the Modbus wire.

A node assembled by `edge_runtime.assembly.assemble` (10 ms scan, its OPC UA server with
Basic256Sha256 SignAndEncrypt and a provisioned infrastructure_manager user) drives a CDU pump
VFD (io_map cdu_pump_vfd) over Modbus TCP; the drive is a real pymodbus server
(tests/modbus_peer.py ModbusPeer) in its own process, logging each write (function 16) with
its CLOCK_MONOTONIC time. A client in a third process opens one secure session and calls
`Force(pump1.speed_ref, v, 60 s, reason)` then `Release(pump1.speed_ref)`, each value v new
(20.00 .. 59.00 %, cycling), after a random pause of 0-2 scans so the calls fall on every phase
of the scan. A control block holds speed_ref at 10 %. Latency of a Force = time the first
write carrying v reaches the drive - time the client issued the call; of a Release = first
write after the Release call carrying the control's 10 % again. CLOCK_MONOTONIC is one clock
for every process of the machine.

Baseline in the same run, on the same session: a bare asyncua Read of the speed_ref variable
(one request, one answer, no scan involved): the round trip of a call through the stack.

    .venv/bin/python bench/opcua_method.py [--quick] [--calls N]

Target (issue 12): Force p99 at most 2 scans plus the call's own round trip (the Read's p99).
Percentiles are nearest-rank. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _jsonline import print_json_line  # noqa: E402
from opcua_items import (  # noqa: E402
    USER,
    Child,
    Creds,
    connect,
    free_port,
    helper_process,
    provision,
)

PERIOD_MS = 10
POINT = "pump1.speed_ref"
ADDRESS = 1  # speed_ref's holding register (io_maps/cdu_pump_vfd.toml), scale 0.01
TARGET_SCANS = 2
CONTROL_VALUE = 10.0  # the control's speed reference; forced values are 20 .. 59 %


def emit(doc: object) -> None:
    """One strict JSON line to the parent process (NaN is not JSON)."""
    print(json.dumps(doc, allow_nan=False), flush=True)


class Control:
    """The plant's own control: speed_ref at CONTROL_VALUE every scan (what a Release hands
    the output back to)."""

    name = "bench-control"

    def step(self, image: Any, now: float, dt: float) -> None:
        image.write(POINT, CONTROL_VALUE)


def nearest_rank(values: list[float], q: float) -> float:
    """The ceil(q/100 * n)-th smallest value (a measured value, as bench/RESULTS.md uses)."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def forced_value(k: int) -> float:
    return 20.0 + (k % 40)


# --- the drive (own process) -------------------------------------------------------------------

async def peer_process(spec: dict[str, Any]) -> None:
    """ModbusPeer on spec['port'], unit 1; 'writes' prints the writes logged since last asked."""
    from tests.modbus_peer import ModbusPeer

    peer = ModbusPeer(int(spec["port"]), unit_ids=(1,))
    await peer.start()
    emit({"ready": True})
    loop = asyncio.get_running_loop()
    try:
        while True:
            cmd = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if cmd != "writes":
                break
            writes, peer.writes = peer.writes, []
            emit({"writes": writes})
    finally:
        await peer.stop()


# --- the client (own process) ------------------------------------------------------------------

async def client_process(spec: dict[str, Any]) -> None:
    """Reads, then Force/Release pairs on one session; prints the times when done."""
    from asyncua import ua

    client = await connect(Creds(**spec["creds"]))
    try:
        ctrl = client.get_node(spec["controller"])
        force = ua.NodeId.from_string(spec["force"])
        release = ua.NodeId.from_string(spec["release"])
        var = client.get_node(spec["variable"])
        rng = random.Random(1)
        period = spec["period_s"]
        reads: list[float] = []
        calls: list[dict[str, Any]] = []
        for _ in range(5):  # warm the session up (first requests allocate, import, ...)
            await var.read_data_value()
        emit({"ready": True})
        assert sys.stdin.readline().strip() == "go"
        for k in range(int(spec["calls"])):
            t0 = time.monotonic()
            await var.read_data_value()
            reads.append(time.monotonic() - t0)
            await asyncio.sleep(rng.uniform(0, 2 * period))
            v = forced_value(k)
            f0 = time.monotonic()
            await ctrl.call_method(force, ua.Variant(POINT, ua.VariantType.String),
                                   ua.Variant(v, ua.VariantType.Double),
                                   ua.Variant(60.0, ua.VariantType.Double),
                                   ua.Variant("bench", ua.VariantType.String))
            f1 = time.monotonic()
            await asyncio.sleep(4 * period + rng.uniform(0, 2 * period))
            r0 = time.monotonic()
            await ctrl.call_method(release, ua.Variant(POINT, ua.VariantType.String))
            r1 = time.monotonic()
            calls.append({"v": v, "f0": f0, "f1": f1, "r0": r0, "r1": r1})
            await asyncio.sleep(4 * period)
        emit({"reads": reads, "calls": calls, "cpu_s": os.times().user})
        sys.stdin.readline()
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


# --- the bench ---------------------------------------------------------------------------------

def node_config(directory: Path, modbus_port: int, opcua_port: int, realtime: int) -> Path:
    text = (f'[node]\nname = "ua-method"\nrole = "cdu"\nsite = "bench"\n'
            f"scan_period_ms = {PERIOD_MS}\nwatchdog_ms = 500\nrealtime_priority = {realtime}\n"
            f'\n[devices.pump1]\nio_map = "cdu_pump_vfd"\nendpoint = "127.0.0.1:{modbus_port}"\n'
            f"unit_id = 1\npoll_ms = 100\n"
            f'\n[opcua]\nhost = "127.0.0.1"\nport = {opcua_port}\nstate_dir = "state/opcua"\n'
            'security = ["Basic256Sha256_SignAndEncrypt"]\nhistory = []\n')
    path = directory / "node.toml"
    path.write_text(text)
    return path


def match(calls: list[dict[str, Any]], writes: list[list[Any]]) -> tuple[list[float],
                                                                          list[float], int]:
    """Force and Release latencies (s) from the drive's write log; calls with no match."""
    regs = []  # (t, speed_ref word) of each write that covered the register
    for t, unit, addr, words in writes:
        if unit == 1 and addr <= ADDRESS < addr + len(words):
            regs.append((t, words[ADDRESS - addr]))
    regs.sort()
    forces: list[float] = []
    releases: list[float] = []
    unmatched = 0
    for c in calls:
        word = round(c["v"] * 100)
        hit = next((t for t, w in regs if t >= c["f0"] and w == word), None)
        if hit is None or hit > c["r0"]:
            unmatched += 1
            continue
        forces.append(hit - c["f0"])
        back = next((t for t, w in regs if t >= c["r0"] and w == round(CONTROL_VALUE * 100)),
                    None)
        if back is None:
            unmatched += 1
            continue
        releases.append(back - c["r0"])
    return forces, releases, unmatched


def ms(values: list[float], period_s: float) -> dict[str, Any]:
    p50, p99 = nearest_rank(values, 50), nearest_rank(values, 99)
    return {"n": len(values), "p50_ms": round(p50 * 1000, 3), "p99_ms": round(p99 * 1000, 3),
            "max_ms": round(max(values, default=math.nan) * 1000, 3),
            "p50_scans": round(p50 / period_s, 2), "p99_scans": round(p99 / period_s, 2)}


async def main_async(calls: int, realtime: int) -> dict[str, Any]:
    from edge_runtime.assembly import assemble, load_node_config
    from edge_runtime.servers.opcua.server import OpcUaServer

    period = PERIOD_MS / 1000
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        modbus_port = free_port()
        peer = Child("peer", {"port": modbus_port}, script=Path(__file__))
        client: Child | None = None
        runner: asyncio.Task[None] | None = None
        try:
            await peer.read(timeout=60)
            cfg = load_node_config(node_config(directory, modbus_port, free_port(), realtime))
            assert cfg.opcua is not None
            password, uri, der, key = provision(cfg.opcua.state_dir, directory,
                                                "infrastructure_manager")
            node = assemble(cfg, watchdog_thread=False, blocks=[Control()])
            server = node.services["opcua"]
            assert isinstance(server, OpcUaServer)
            runner = asyncio.create_task(node.run())
            deadline = time.monotonic() + 120
            while not server.started.is_set():
                if server.error or runner.done() or time.monotonic() > deadline:
                    raise RuntimeError(f"OPC UA server did not start: "
                                       f"{server.error or 'timeout'}")
                await asyncio.sleep(0.05)
            space = server.space
            assert space is not None and server.cert is not None
            creds = Creds(cfg.opcua.endpoint, str(server.cert.cert), str(der), str(key), uri,
                          USER, password)
            client = Child("client", {
                "creds": creds.as_dict(), "controller": space.controller.nodeid.to_string(),
                "force": space.methods["Force"].nodeid.to_string(),
                "release": space.methods["Release"].nodeid.to_string(),
                "variable": space.points[POINT].to_string(), "calls": calls,
                "period_s": period}, script=Path(__file__))
            await client.read(timeout=120)
            await peer.ask("writes")  # forget the start-up writes
            node.engine.stats.reset()
            t0 = time.monotonic()
            client.send("go")
            done = await client.read(timeout=calls * 2.0 + 60)
            elapsed = time.monotonic() - t0
            writes = (await peer.ask("writes"))["writes"]
            snap = node.engine.stats.snapshot()
            audit = [a for a in node.commands.audit if a.source == f"opcua.{USER}"]
        finally:
            if client is not None:
                client.close()
            if runner is not None:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
            peer.close()
    forces, releases, unmatched = match(done["calls"], writes)
    force_rtt = [c["f1"] - c["f0"] for c in done["calls"]]
    read = ms(done["reads"], period)
    force = ms(forces, period)
    bound_ms = TARGET_SCANS * PERIOD_MS + read["p99_ms"]
    met = unmatched == 0 and force["p99_ms"] <= bound_ms
    # stricter: the Read's median as the round trip (one slow Read cannot widen the bound)
    strict_ms = TARGET_SCANS * PERIOD_MS + read["p50_ms"]
    return {
        "period_ms": PERIOD_MS, "calls": calls, "unmatched": unmatched,
        "force_to_wire": force, "release_to_wire": ms(releases, period),
        "force_call_round_trip": ms(force_rtt, period),
        "baseline_bare_read_round_trip": read,
        "target_p99_ms": round(bound_ms, 3), "met": met,
        "strict_target_p99_ms": round(strict_ms, 3),
        "met_strict": unmatched == 0 and force["p99_ms"] <= strict_ms,
        "scan": {"cycles": snap["cycles"], "overruns": snap["overruns"],
                 "jitter_p99_ms": round(snap["jitter_ms"]["p99"], 4)},
        "modbus_writes": len(writes), "commands_audited": len(audit),
        "seconds": round(elapsed, 1),
    }


def show(r: dict[str, Any]) -> None:
    def row(case: str, f: dict[str, Any]) -> str:
        return (f"{case:34} n {f['n']:4d}  p50 {f['p50_ms']:8.3f} ms ({f['p50_scans']:.2f} scans)"
                f"  p99 {f['p99_ms']:8.3f} ms ({f['p99_scans']:.2f} scans)  max "
                f"{f['max_ms']:.3f} ms")
    print(row("Force -> value on the Modbus wire", r["force_to_wire"]))
    print(row("Release -> value off the wire", r["release_to_wire"]))
    print(row("Force call round trip", r["force_call_round_trip"]))
    print(row("baseline: bare asyncua Read", r["baseline_bare_read_round_trip"]))
    s = r["scan"]
    print(f"scan {r['period_ms']} ms: {s['cycles']} cycles, overruns {s['overruns']}, jitter p99 "
          f"{s['jitter_p99_ms']} ms; Modbus writes {r['modbus_writes']}; commands audited "
          f"{r['commands_audited']}; calls without a matching write {r['unmatched']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 calls")
    parser.add_argument("--calls", type=int, default=None, help="Force/Release pairs (200)")
    parser.add_argument("--realtime", type=int, default=50 if os.geteuid() == 0 else 0,
                        help="node realtime_priority (SCHED_FIFO; default 50 as root)")
    parser.add_argument("--role", choices=("client", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.role is not None:
        helper_process(args.role, args.spec,
                       client_process if args.role == "client" else peer_process)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    calls = args.calls or (50 if args.quick else 200)
    start = time.monotonic()
    r = asyncio.run(main_async(calls, args.realtime))
    show(r)
    print(f"target: Force p99 <= {TARGET_SCANS} scans + the Read's p99 = {r['target_p99_ms']} ms: "
          f"{'met' if r['met'] else 'NOT met'}; with the Read's p50, {r['strict_target_p99_ms']} "
          f"ms: {'met' if r['met_strict'] else 'NOT met'} (machine {platform.machine()}, "
          f"{os.cpu_count()} cpus, Python {platform.python_version()}, load average "
          f"{os.getloadavg()[0]:.1f})")
    r["run_s"] = round(time.monotonic() - start, 1)
    print_json_line({"force_to_wire_10ms_scan": r})


if __name__ == "__main__":
    main()
