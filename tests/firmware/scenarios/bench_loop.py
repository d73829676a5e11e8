"""Heap and loop-body time of the app on the VM (bench/firmware.py; a test runs it short).

Run by vm.run_scenario("bench_loop", data, repeat=("scan()", n + 3), finish="finish()"):
each scan() is a runPython call of its own, because this VM's gc.collect() only frees what
earlier calls allocated (run_vm.mjs); the first three calls measure the base, import the
firmware, and build the app, each figure taken at the start of the next call.

Memory (gc.mem_alloc: bytes of the VM heap in use, each after a gc.collect()):
  base       the VM and the scenario's own set-up (its data, preallocated arrays for the
             figures), before any firmware module is imported
  code       + the firmware, fakes and umqtt-free uplink imported (their bytecode lives on
             the heap when loaded from .py or .mpy; frozen into the board's firmware with
             manifest.py it lives in flash instead)
  state      + the app built, connected and one scan run: the app's live objects
  before[i]  at the start of scan i, collected: what is live between scans
  peaks[i]   at the end of scan i: everything live plus all the scan allocated (nothing is
             freed inside a scan here, so that is the scan's peak)
Time: App.step() between two js.performance.now() calls (the VM's ticks_us ticks in whole
ms), while the app's own clock is the fake board's, advanced 100 ms a scan: the work of a
100 ms schedule without waiting for it. Baseline, same run and method: an empty function.
"""

import array
import gc
import json

import js

with open("/data.json") as f:
    data = json.load(f)
N = data["scans"]
# preallocated: the figures must not grow the heap they measure
body = array.array("f", [0.0] * N)
empty = array.array("f", [0.0] * N)
before = array.array("i", [0] * N)
peaks = array.array("i", [0] * N)
mem = {}
ctx = {"i": 0, "phase": 0}
leak_at = data.get("leak_at", N // 2)
mods = {}


def nothing():
    pass


def _import():
    from fakehw import FakeHw
    from fakemqtt import FakeBroker
    from pswd_node import config
    from pswd_node.app import App
    from pswd_node.uplink import Uplink
    mods.update(FakeHw=FakeHw, FakeBroker=FakeBroker, config=config, App=App, Uplink=Uplink)


def _setup():
    cfg = mods["config"].check({"site": "s1", "sensor_id": "rs-01", "state_dir": "/"})
    hw = mods["FakeHw"](wall0_ms=data["wall0_ms"])
    broker = mods["FakeBroker"]()
    key = bytes(int(data["key"][i:i + 2], 16) for i in range(0, 64, 2))
    app = mods["App"](cfg, hw, mods["Uplink"](cfg, broker.factory, hw.ticks_ms), key)
    app.step()  # connects: births
    hw.advance(100)
    broker.published = []
    ctx.update(app=app, hw=hw, broker=broker)


def scan():
    """One call of the repeat loop: set-up phases first (each measured in a fresh call)."""
    gc.collect()
    phase = ctx["phase"]
    if phase < 3:
        mem[("base", "code", "state")[phase]] = gc.mem_alloc()
        if phase == 0:
            _import()
        elif phase == 1:
            _setup()
        ctx["phase"] = phase + 1
        return
    i = ctx["i"]
    if i >= N:
        return
    ctx["i"] = i + 1
    app, hw, broker = ctx["app"], ctx["hw"], ctx["broker"]
    cmds = data["cmds"]  # signed for the fake wall clock: one every cmd_every scans
    if i % data["cmd_every"] == 0 and i // data["cmd_every"] < len(cmds):
        broker.send("pswd/v1/s1/rs-01/cmd/output", cmds[i // data["cmd_every"]])
    hw.leak_in = 1 if leak_at <= i < leak_at + 5 else 0
    gc.collect()
    before[i] = gc.mem_alloc()
    t0 = js.performance.now()
    app.step()
    t1 = js.performance.now()
    peaks[i] = gc.mem_alloc()
    body[i] = t1 - t0
    broker.published = []  # what the broker took is not the board's memory
    hw.advance(100)
    t0 = js.performance.now()
    nothing()
    t1 = js.performance.now()
    empty[i] = t1 - t0


def finish():
    app = ctx["app"]
    print("RESULT " + json.dumps({
        "mem": mem, "before": list(before), "peaks": list(peaks), "body_ms": list(body),
        "empty_ms": list(empty), "accepted": app.accepted,
        "invalid_total": app.invalid_total, "scans": app.scans, "overruns": app.overruns,
        "valve": ctx["hw"].level, "latched": app.latched}))
