"""The OPC UA server does not slow the scan (issue 12 item 2): the same node scanning at 10 ms,
every point changing every scan, without a server and then with the server and a client
subscribed to every point (the client in its own thread and loop, as a BMS is its own
process). What the scan itself pays is the tap (a snapshot per scan), measured inside the scan;
the server's work runs in its own thread. Prints both runs' figures."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality, Sample
from edge_runtime.node import Node
from edge_runtime.servers.opcua.server import MIN_POLL_S
from tests.fakes import FakeDevice
from tests.opcua_helpers import POLICIES, SIGN_AND_ENCRYPT, Rig, serving
from tests.test_opcua_server import NODE

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]
PERIOD_MS = 10
SECONDS = 4.0


class Wiggle:
    """Changes every input and the pump speed reference every scan."""

    name = "wiggle"

    def __init__(self, live: dict[str, Sample], wall: Any) -> None:
        self.live = live
        self.wall = wall
        self.n = 0

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        self.n += 1
        ts = self.wall()
        for name in image.inputs_info:
            self.live[name] = Sample(float(self.n % 7), Quality.GOOD, ts)
        self.live["supply_temp.temperature"] = Sample(30.0 + math.sin(self.n / 10), Quality.GOOD,
                                                      ts)
        image.write("pump1.speed_ref", 50.0 + 10.0 * math.sin(self.n / 10))


def build(tmp_path: Path) -> Node:
    path = tmp_path / "node.toml"
    path.write_text(NODE.replace("scan_period_ms = 50", f"scan_period_ms = {PERIOD_MS}"))
    live: dict[str, Sample] = {}
    node = assemble(load_node_config(path), watchdog_thread=False, blocks=[],
                    driver_factory=lambda c, lv, clk: {d.name: FakeDevice(d, lv)
                                                       for d in c.devices})
    live = node.live
    node.engine.blocks.append(Wiggle(live, node.clock.wall))
    return node


def figures(node: Node) -> dict[str, float]:
    s = node.engine.stats.snapshot()
    return {"cycles": s["cycles"], "overruns": s["overruns"],
            "exec_p99_ms": s["exec_ms"]["p99"], "jitter_p99_ms": s["jitter_ms"]["p99"]}


async def bare_run(tmp_path: Path) -> dict[str, float]:
    node = build(tmp_path / "bare")
    task = asyncio.create_task(node.run())
    await asyncio.sleep(SECONDS)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return figures(node)


def subscriber(rig: Rig, stop: threading.Event, seen: list[int]) -> None:
    """A BMS in its own thread: subscribe to every point variable at 100 ms."""
    async def run() -> None:
        assert rig.trusted is not None and rig.server.space is not None
        c = Client(rig.url, timeout=10)
        c.application_uri = rig.trusted.uri
        await c.set_security(POLICIES["Basic256Sha256"], str(rig.trusted.der),
                             str(rig.trusted.key), server_certificate=str(rig.server_cert),
                             mode=SIGN_AND_ENCRYPT)
        c.set_user("watcher")
        c.set_password(rig.passwords["watcher"])
        await c.connect()

        class Handler:
            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                seen[0] += 1

        sub = await c.create_subscription(100, Handler())
        await sub.subscribe_data_change([c.get_node(n) for n in rig.server.space.points.values()])
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await c.disconnect()
    asyncio.run(run())


async def test_the_scan_is_not_slowed_by_the_server(tmp_path: Path) -> None:
    (tmp_path / "bare").mkdir()
    bare = await bare_run(tmp_path)
    node = build(tmp_path)
    async with serving(node, tmp_path, history=()) as rig:
        stop, seen = threading.Event(), [0]
        client = threading.Thread(target=subscriber, args=(rig, stop, seen))
        client.start()
        deadline = time.monotonic() + 30
        while seen[0] < 50 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert seen[0] >= 50, "the subscriber gets notifications"
        before = figures(node)
        tap_before = rig.server.tap.get_status()
        assert rig.server.binding is not None
        written_before = rig.server.binding.snapshots
        await asyncio.sleep(SECONDS)
        after = figures(node)
        tap = rig.server.tap.get_status()
        stop.set()
        await asyncio.to_thread(client.join, 20)
        binding = rig.server.binding
        assert binding is not None
    with_server = {"cycles": after["cycles"] - before["cycles"],
                   "overruns": after["overruns"] - before["overruns"],
                   "exec_p99_ms": after["exec_p99_ms"], "jitter_p99_ms": after["jitter_p99_ms"]}
    tap_mean_us = ((tap["step_us_mean"] * tap["scans"] - tap_before["step_us_mean"]
                    * tap_before["scans"]) / max(tap["scans"] - tap_before["scans"], 1))
    print(f"\nscan {PERIOD_MS} ms, {SECONDS:g} s each: bare {bare}; with OPC UA server and "
          f"{len(rig.server.space.points) if rig.server.space else 0} subscribed points "
          f"{with_server}; tap in the scan: mean {tap_mean_us:.1f} us, max "
          f"{tap['step_us_max']:.1f} us; scans written {binding.snapshots} "
          f"(skipped {binding.skipped}), "
          f"notifications {seen[0]}")
    # What the scan pays itself: the tap, tens of microseconds at most.
    assert tap_mean_us < 100, tap
    # The server's work is in its own thread: the scan keeps its period. The two runs are
    # seconds apart on a machine other jobs share (here the bare run alone saw 0 to 25
    # overruns from one run to the next), so the comparison has a margin of 5 % of the scans.
    expected = SECONDS * 1000 / PERIOD_MS
    assert with_server["cycles"] >= 0.8 * expected, with_server
    assert with_server["overruns"] <= bare["overruns"] + 0.05 * expected, (bare, with_server)
    # the variables follow: at a 10 ms scan the newest scan every 20 ms poll
    written = binding.snapshots - written_before
    assert written >= 0.5 * SECONDS / MIN_POLL_S, binding.get_status()
