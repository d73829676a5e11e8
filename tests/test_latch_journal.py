"""Latches survive restart (issue 8 finding 1, deliverable 2): latched trips and the watchdog
latch are journaled (temp + fsync + rename, SHA-256 line), re-engaged before the first output
write, and a corrupt or missing journal fails safe. On the old code latches lived in memory
only: a restarted CDU ran its leak-isolated pumps again, and the watchdog latch had no reset
path outside tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.assembly import load_node_config
from edge_runtime.config.reader import ConfigError
from edge_runtime.core.commands import ResetTrip
from edge_runtime.safety.journal import FILE, MARKER, LatchJournal, decode, encode
from tests.cdu_rig import ISOLATED, harness, isolate, wire_values
from tests.scenario_runner import Harness

pytestmark = pytest.mark.anyio


def test_encoding_round_trips_and_detects_torn_or_edited_files() -> None:
    data = encode(["leak_isolate"], True)
    assert decode(data) == (frozenset({"leak_isolate"}), True)
    with pytest.raises(ValueError, match="torn"):
        decode(data[:-10])
    with pytest.raises(ValueError, match="checksum"):
        decode(data.replace(b"true", b"fals"))


def test_first_start_is_clean_then_a_missing_journal_is_not(tmp_path: Path) -> None:
    j = LatchJournal(tmp_path)
    assert j.load().status == "first_start" and (tmp_path / MARKER).exists()
    assert j.save(["a"], False) and j.writes == 1
    assert j.save(["a"], False) and j.writes == 1  # unchanged: not rewritten
    assert LatchJournal(tmp_path).load().latched == {"a"}
    (tmp_path / FILE).write_bytes(b"{}\n")
    corrupt = LatchJournal(tmp_path).load()
    assert corrupt.status == "corrupt" and corrupt.fail_safe
    (tmp_path / FILE).unlink()
    missing = LatchJournal(tmp_path).load()
    assert missing.status == "missing" and missing.fail_safe


def test_a_journal_the_disk_refuses_leaves_a_restart_failing_safe(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    """A save that fails must not leave the older journal looking current: a restart would
    then forget the latch that could not be written."""
    j = LatchJournal(tmp_path)
    j.load()
    assert j.save([], False)  # nothing latched yet, on disk

    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(j, "_write", full_disk)
    assert not j.save(["leak_isolate"], False)  # the isolation latched; the disk refused
    assert j.errors == 1 and "No space left" in j.last_error
    after = LatchJournal(tmp_path).load()  # the restart
    assert after.fail_safe and after.status == "missing", after
    monkeypatch.undo()
    assert j.save(["leak_isolate"], False)  # the disk is back: written again
    assert LatchJournal(tmp_path).load().latched == {"leak_isolate"}


def test_state_dir_that_cannot_be_created_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "maps").mkdir()
    (tmp_path / "blocker").write_text("a file, not a folder")
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nname = "n"\nrole = "cdu"\n[safety]\nstate_dir = "blocker/state"\n')
    with pytest.raises(ConfigError, match=r"\[safety\] state_dir: cannot create"):
        load_node_config(cfg)


async def test_isolation_survives_a_restart_and_is_on_the_first_write(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with harness(tmp_path, state_dir=state) as h:
        await isolate(h)
        h.sim.clear("leak")  # dried up: only the latch keeps the plant isolated now
        for _ in range(3):
            await h.tick()
        h.restart()  # power cycle: a new node, the same journal
        safety = h.node.safety
        assert safety.restored is not None and safety.restored.status == "ok"
        # Re-engaged and staged before the first scan, so the first write is the isolation.
        assert safety.states["leak_isolate"].engaged
        assert [h.node.image.output(p) for p in ISOLATED] == [0.0, 0.0, 0.0]
        assert "latch_restored" in [e.code for e in h.node.events.recent(50)]
        for _ in range(10):
            await h.tick()
        assert wire_values(h) == [0.0, 0.0, 0.0]  # old code: pump1 running again
        h.node.commands.submit(ResetTrip("workload_operator", "leak_isolate"))
        await h.tick()
        assert safety.states["leak_isolate"].latched
        h.node.commands.submit(ResetTrip("infrastructure_manager", "leak_isolate"))
        for _ in range(3):
            await h.tick()
        assert not safety.states["leak_isolate"].latched
        assert h.wire("pump1.control_word") == 1.0  # back under control after the reset
        assert h.invariants.violations == []
    assert LatchJournal(state).load().latched == frozenset()  # the reset was journaled


async def test_corrupt_journal_fails_safe_until_reset(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / MARKER).write_text("x")
    (state / FILE).write_bytes(b'{"latched":[]}\nnot-a-checksum\n')
    async with harness(tmp_path, state_dir=state) as h:
        safety = h.node.safety
        assert safety.restored is not None and safety.restored.status == "corrupt"
        assert safety.states["leak_isolate"].engaged and h.node.watchdog.tripped
        codes = [e.code for e in h.node.events.recent(50)]
        assert "journal_fail_safe" in codes
        for _ in range(60):
            await h.tick()
        assert wire_values(h) == [0.0, 0.0, 0.0]
        h.node.commands.submit(ResetTrip("infrastructure_manager", "watchdog"))
        h.node.commands.submit(ResetTrip("infrastructure_manager", "leak_isolate"))
        for _ in range(3):
            await h.tick()
        assert not h.node.watchdog.tripped and not safety.states["leak_isolate"].latched
        assert h.wire("pump1.control_word") == 1.0
        assert h.invariants.violations == []


async def trip_watchdog(h: Harness) -> None:
    """Past start-up, then a scan silent for longer than the watchdog's timeout."""
    for _ in range(60):
        await h.tick()
    now = h.clock.monotonic()
    h.node.watchdog.kick(now)
    assert h.node.watchdog.check(now + 1.0)


async def test_watchdog_latch_is_journaled_and_reset_through_reset_trip(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with harness(tmp_path, state_dir=state) as h:
        await trip_watchdog(h)
        assert LatchJournal(state).load().watchdog
        h.restart()
        assert h.node.watchdog.tripped  # latched across the restart
        await h.tick()
        h.node.commands.submit(ResetTrip("grid_operator", "watchdog"))
        await h.tick()
        audit = h.node.commands.audit[-1]
        assert not audit.accepted and h.node.watchdog.tripped
        h.node.commands.submit(ResetTrip("infrastructure_manager", "watchdog", source="hmi"))
        await h.tick()
        assert h.node.commands.audit[-1].accepted and not h.node.watchdog.tripped
        assert "trip_reset" in [e.code for e in h.node.events.recent(20)]
        assert not LatchJournal(state).load().watchdog
        assert h.invariants.violations == []


async def test_a_panel_reset_without_a_role_acts_as_the_local_operator(tmp_path: Path) -> None:
    """A reset typed at the node's own panel carries no role: the rights table and the safety
    layer must both judge it as the local role (the infrastructure manager), not as ''."""
    state = tmp_path / "state"
    async with harness(tmp_path, state_dir=state) as h:
        await trip_watchdog(h)
        await h.tick()
        h.node.commands.submit(ResetTrip("", "watchdog"))
        await h.tick()
        assert not h.node.watchdog.tripped
        audit = [a for a in h.node.commands.audit if "ResetTrip" in a.command]
        assert [a.accepted for a in audit] == [True], audit
