"""One safe image (issue 8 finding 1): every path that drives outputs safe writes the io_map
failsafe overlaid by the engaged trips and isolations, never the bare failsafe.

The demo CDU's io_map failsafes are "pump runs at 100 %, valve fully open" (cooling first);
its leak isolation stops both pumps and closes the valve. On the old code each path below
restarted the isolated pump (control_word failsafe 1) while `safety.owner` still reported the
isolation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge_runtime.config.iomap import load_io_map
from edge_runtime.config.reader import ErrorLog
from edge_runtime.safety.safe_image import Direction, OutputRules, compute, more_restrictive
from tests.cdu_rig import ISOLATED, harness, isolate, wire_values, write_all

pytestmark = pytest.mark.anyio


# -- the computation ------------------------------------------------------------------------
def _rules() -> OutputRules:
    errors = ErrorLog()
    vfd = load_io_map(Path("io_maps/cdu_pump_vfd.toml"), errors)
    assert vfd is not None and not errors.lines
    specs = {f"pump1.{p.name}": p for p in vfd.outputs}
    return OutputRules.from_specs(specs)


def test_failsafe_overlaid_by_engaged_rules_most_restrictive_wins() -> None:
    rules = _rules()
    assert compute(rules, []).values["pump1.control_word"] == 1.0  # io_map failsafe
    safe = compute(rules, [("cooling", {"pump1.control_word": 1.0, "pump1.speed_ref": 100.0}),
                           ("leak", {"pump1.control_word": 0.0})])
    assert safe.values["pump1.control_word"] == 0.0  # "low": stop beats run, in any order
    assert safe.values["pump1.speed_ref"] == 100.0
    assert safe.engaged == ("cooling", "leak")
    # the drive's comms-loss registers follow the safe values they stand for
    assert safe.values["pump1.loss_run"] == 0.0 and safe.values["pump1.loss_speed"] == 100.0
    assert more_restrictive(Direction.HIGH, 20.0, 100.0) == 100.0
    assert more_restrictive(Direction.ZERO, -300.0, 50.0) == 50.0  # battery: nearer 0 kW


def test_safe_direction_and_mirrors_are_checked_at_load(tmp_path: Path) -> None:
    text = Path("io_maps/control_valve.toml").read_text()
    bad = text.replace('safe_direction = "low"', 'safe_direction = "closed"')
    bad = bad.replace('mirrors = "position_cmd"', 'mirrors = "position_fb"')
    (tmp_path / "control_valve.toml").write_text(bad)
    errors = ErrorLog()
    load_io_map(tmp_path / "control_valve.toml", errors)
    text = "\n".join(errors.lines)
    assert "[points.position_cmd] safe_direction:" in text and "'closed'" in text
    assert "[points.fail_position] mirrors: must name an output" in text


# -- every path, on the real example CDU against the plant simulator ---------------------------
async def test_watchdog_trip_in_loop_keeps_the_isolation(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await isolate(h)
        now = h.clock.monotonic()
        h.node.watchdog.kick(now)  # the last scan (the stepped harness does not kick)
        assert h.node.watchdog.check(now + 1.0)  # the scan fell silent: in-loop trip
        await write_all(h)
        assert wire_values(h) == [0.0, 0.0, 0.0]  # old code: pump restarted, valve open
        for _ in range(5):  # the scan resumes, the watchdog latch holds the safe image
            await h.tick()
        assert wire_values(h) == [0.0, 0.0, 0.0]
        assert h.node.image.output("pump1.speed_ref") == 100.0  # failsafe where not isolated
        assert h.invariants.violations == []


async def test_watchdog_thread_with_the_loop_frozen_keeps_the_isolation(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await isolate(h)
        now = h.clock.monotonic()
        h.node.watchdog.kick(now)
        # The thread writes over its own blocking connections (the loop only serves the sim).
        await asyncio.to_thread(h.node.watchdog.check, now + 1.0, from_thread=True)
        assert wire_values(h) == [0.0, 0.0, 0.0]
        assert h.wire("pump1.speed_ref") == 100.0
        assert h.wire("pump1.loss_run") == 0.0  # the drive's loss action: stop


async def test_shutdown_keeps_the_isolation(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await isolate(h)
        await h.node.shutdown([])
        assert wire_values(h) == [0.0, 0.0, 0.0]


async def test_safety_layer_fault_keeps_the_isolation(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(tmp_path) as h:
        await isolate(h)

        def broken(image: object) -> None:
            raise RuntimeError("a bug in the safety layer")

        monkeypatch.setattr(h.node.safety, "_update_comms", broken)
        await h.tick()
        assert [h.node.image.output(p) for p in ISOLATED] == [0.0, 0.0, 0.0]
        assert wire_values(h) == [0.0, 0.0, 0.0]
        assert any(e.code == "scan_fault" for e in h.node.events.recent(50))


async def test_driver_max_hold_expiry_keeps_the_isolation(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await isolate(h)
        h.clock.advance(2.5)  # no scan stages anything for longer than max_hold_s (2 s)
        await write_all(h)
        pump1 = h.node.drivers["pump1"]
        assert "control_word" in pump1.get_status()["outputs_at_failsafe"]
        assert wire_values(h) == [0.0, 0.0, 0.0]  # old code: the io_map failsafe (run, open)


async def test_comms_loss_failsafe_policy_writes_the_safe_image(tmp_path: Path) -> None:
    # on_comms_loss = "failsafe" on a leak-isolated output: the safe image (closed), not 100 %.
    extra = ('[node_overrides.safety.outputs."valve.position_cmd"]\n'
             'on_comms_loss = "failsafe"\n')
    async with harness(tmp_path, extra) as h:
        await isolate(h)
        h.sim.inject("valve", "offline")
        for _ in range(3):
            await h.tick()
        assert h.node.safety.states["comms.valve.position_cmd"].engaged
        assert h.node.image.output("valve.position_cmd") == 0.0
        assert h.invariants.violations == []
