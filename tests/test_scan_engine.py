"""Scan engine in simulated time: period, latch, phases, overruns, faults, watchdog."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge_runtime.assembly import NodeConfig, assemble
from edge_runtime.core.clock import VirtualClock
from edge_runtime.core.commands import SetOutput
from edge_runtime.core.events import EventLog
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.scan import ScanEngine
from edge_runtime.node import Node
from edge_runtime.safety.watchdog import Watchdog, monitor
from tests.fakes import FakeDevice, device, load_map, write_io_map

pytestmark = pytest.mark.anyio


@pytest.fixture
def pump_device(tmp_path: Path):  # type: ignore[no-untyped-def]
    return device(load_map(write_io_map(tmp_path)))


class Recorder:
    """Records scan start times and the flow it saw."""

    name = "recorder"

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.seen: list[float | None] = []

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        self.starts.append(now)
        self.seen.append(image.value("pump1.flow"))


class Writer:
    """Writes a fixed output value, optionally advancing the clock (a slow block)."""

    def __init__(self, name: str, value: float, clock: VirtualClock | None = None,
                 slow_on: dict[int, float] | None = None) -> None:
        self.name = name
        self.value = value
        self.clock = clock
        self.slow_on = slow_on or {}
        self.calls = 0

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        self.calls += 1
        if self.clock is not None and self.calls in self.slow_on:
            self.clock.advance(self.slow_on[self.calls])
        image.write("pump1.speed_ref", self.value)


def make_engine(dev, blocks=(), interlocks=(), clock=None, watchdog=None):  # type: ignore[no-untyped-def]
    clock = clock or VirtualClock()
    live: dict = {}
    image = ProcessImage([dev], live)
    fake = FakeDevice(dev, live)
    engine = ScanEngine(clock=clock, period_s=0.1, image=image, drivers={dev.name: fake},
                        blocks=blocks, interlocks=interlocks, watchdog=watchdog)
    return engine, fake, clock


async def test_scans_on_absolute_deadlines(pump_device) -> None:  # type: ignore[no-untyped-def]
    rec = Recorder()
    engine, _, clock = make_engine(pump_device, blocks=[rec])
    t0 = clock.monotonic()
    await engine.run(cycles=50)
    assert len(rec.starts) == 50
    assert rec.starts == pytest.approx([t0 + 0.1 * (k + 1) for k in range(50)])
    snap = engine.get_status()
    assert snap["cycles"] == 50 and snap["overruns"] == 0
    assert snap["jitter_ms"]["max"] == pytest.approx(0.0, abs=1e-6)


async def test_inputs_latched_once_per_scan(pump_device) -> None:  # type: ignore[no-untyped-def]
    engine, fake, _ = make_engine(pump_device)

    class Mutator:
        name = "mutator"

        def step(self, image: ProcessImage, now: float, dt: float) -> None:
            before = image.value("pump1.flow")
            fake.set_input("flow", 99.0)  # a driver update arriving mid-scan
            assert image.value("pump1.flow") == before  # the scan keeps its latched value
            with pytest.raises(TypeError):
                image.inputs["pump1.flow"] = None  # type: ignore[index]

    rec = Recorder()
    engine.blocks = [Mutator(), rec]
    fake.set_input("flow", 10.0)
    engine.scan_once(1.0)
    engine.scan_once(1.1)
    assert rec.seen == [10.0, 99.0]


async def test_interlocks_have_the_last_word_and_outputs_flush_at_end(pump_device) -> None:  # type: ignore[no-untyped-def]
    control = Writer("control", 80.0)
    interlock = Writer("interlock", 30.0)
    engine, fake, _ = make_engine(pump_device, blocks=[control], interlocks=[interlock])
    engine.scan_once(1.0)
    assert fake.staged == [(1.0, {"speed_ref": 30.0})]


async def test_outputs_start_at_failsafe(pump_device) -> None:  # type: ignore[no-untyped-def]
    engine, fake, _ = make_engine(pump_device)
    engine.scan_once(1.0)
    assert fake.staged[-1][1] == {"speed_ref": 100.0}


async def test_overrun_skips_to_next_deadline_counts_and_alarms(pump_device) -> None:  # type: ignore[no-untyped-def]
    clock = VirtualClock()
    rec = Recorder()
    slow = Writer("slow", 50.0, clock=clock, slow_on={5: 0.25})
    engine, _, _ = make_engine(pump_device, blocks=[rec, slow], clock=clock)
    t0 = clock.monotonic()
    await engine.run(cycles=10)
    status = engine.get_status()
    assert status["overruns"] == 1
    assert status["skipped_deadlines"] == 2
    # Scan 5 started at t0+0.5 and ran 0.25 s: deadlines 0.6 and 0.7 are skipped, 0.8 kept.
    assert rec.starts[5] == pytest.approx(t0 + 0.8)
    assert all(round((s - t0) / 0.1, 6).is_integer() for s in rec.starts)
    assert [e.code for e in engine.events.recent()] == ["overrun"]


async def test_faulty_block_does_not_stop_scan_or_interlocks(pump_device) -> None:  # type: ignore[no-untyped-def]
    class Broken:
        name = "broken"

        def step(self, image: ProcessImage, now: float, dt: float) -> None:
            raise ZeroDivisionError("bug")

    interlock = Writer("interlock", 20.0)
    engine, fake, _ = make_engine(pump_device, blocks=[Broken()], interlocks=[interlock])
    await engine.run(cycles=5)
    assert interlock.calls == 5
    assert fake.staged[-1][1] == {"speed_ref": 20.0}
    assert engine.stats.block_faults == 5
    assert [e.code for e in engine.events.recent()] == ["scan_fault"]  # raised once, not 5x


def _node(dev, clock: VirtualClock) -> tuple[Node, FakeDevice]:  # type: ignore[no-untyped-def]
    cfg = NodeConfig(name="n1", role="cdu", site="t", scan_period_s=0.1, watchdog_s=0.5,
                     devices=(dev,), source=Path("mem"), io_maps_dir=Path("."))
    node = assemble(cfg, clock=clock, watchdog_thread=False,
                driver_factory=lambda c, live, clk: {dev.name: FakeDevice(dev, live)})
    fake = node.drivers[dev.name]
    assert isinstance(fake, FakeDevice)
    return node, fake


async def test_command_applied_at_next_scan_and_audited(pump_device) -> None:  # type: ignore[no-untyped-def]
    clock = VirtualClock()
    node, fake = _node(pump_device, clock)
    node.commands.submit(SetOutput("pump1.speed_ref", 40.0, source="test"))
    node.commands.submit(SetOutput("pump1.speed_ref", 140.0, source="test"))
    node.commands.submit(SetOutput("pump9.speed_ref", 10.0, source="test"))
    await node.engine.run(cycles=2)
    assert fake.staged[-1][1] == {"speed_ref": 40.0}
    audit = list(node.commands.audit)
    assert [a.accepted for a in audit] == [True, False, False]
    assert "outside 0.0..100.0" in audit[1].reason
    assert "unknown point 'pump9.speed_ref'" in audit[2].reason
    assert sum(e.code == "command_refused" for e in node.events.recent()) == 2


async def test_watchdog_drives_failsafe_when_scan_stalls_and_latches(pump_device) -> None:  # type: ignore[no-untyped-def]
    clock = VirtualClock()
    node, fake = _node(pump_device, clock)
    node.commands.submit(SetOutput("pump1.speed_ref", 40.0))
    await node.engine.run(cycles=5)
    assert fake.staged[-1][1] == {"speed_ref": 40.0}
    stalled_at = clock.monotonic()
    # The scan has stopped (nothing kicks the watchdog); the in-loop monitor keeps checking.
    checker = asyncio.create_task(monitor(node.watchdog, clock, 0.05))
    async with asyncio.timeout(2):
        while not node.watchdog.tripped:
            await asyncio.sleep(0)
    checker.cancel()
    # First check past the 500 ms timeout, at the monitor's 50 ms cadence.
    assert "silent for 550 ms" in node.watchdog.last_reason
    assert clock.monotonic() - stalled_at < 0.7
    assert fake.staged[-1][1] == {"speed_ref": 100.0}  # failsafe staged to the driver
    assert [e.code for e in node.events.recent()][-1] == "watchdog"
    # The trip latches: the scan resumes but outputs stay at failsafe until reset.
    await node.engine.run(cycles=3)
    assert fake.staged[-1][1] == {"speed_ref": 100.0}
    node.reset_watchdog()
    await node.engine.run(cycles=1)
    assert fake.staged[-1][1] == {"speed_ref": 40.0}


def test_watchdog_trips_once() -> None:
    calls: list[tuple[str, bool]] = []
    wd = Watchdog(0.5, lambda reason, thread: calls.append((reason, thread)))
    assert not wd.check(10.0)  # never kicked: nothing to judge yet
    wd.kick(10.0)
    assert not wd.check(10.5)
    assert wd.check(10.51, from_thread=True)
    assert wd.check(11.0)
    assert len(calls) == 1 and calls[0][1] is True and "510 ms" in calls[0][0]


async def test_driver_failure_is_reported_not_fatal(pump_device) -> None:  # type: ignore[no-untyped-def]
    engine, _, _ = make_engine(pump_device)
    live: dict = {}
    engine.drivers = {"pump1": FakeDevice(pump_device, live, fail_stage_after=2)}
    await engine.run(cycles=5)
    assert engine.stats.cycles == 5
    assert any(e.code == "scan_fault" for e in engine.events.recent())
    assert isinstance(engine.events, EventLog)


def test_observers_run_after_interlocks_and_see_the_final_outputs(pump_device) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[str, float]] = []

    class Writer:
        def __init__(self, name: str, value: float) -> None:
            self.name, self.value = name, value

        def step(self, image, now, dt):  # type: ignore[no-untyped-def]
            image.write("pump1.speed_ref", self.value)
            seen.append((self.name, self.value))

    class Observer:
        name = "observer"

        def step(self, image, now, dt):  # type: ignore[no-untyped-def]
            seen.append((self.name, image.outputs["pump1.speed_ref"]))

    engine, fake, _ = make_engine(pump_device, blocks=[Writer("control", 40.0)],
                                  interlocks=[Writer("interlock", 100.0)])
    engine.observers.append(Observer())
    engine.scan_once(1000.0)
    assert seen == [("control", 40.0), ("interlock", 100.0), ("observer", 100.0)]
    assert fake.staged[-1][1]["speed_ref"] == 100.0  # what the observer saw is what went out
