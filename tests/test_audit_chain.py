"""The hash-chained audit log: every edit, removal, reordering and truncation is found and named,
by verify() and by `pswd-edge audit verify`; the command queue feeds it every AuditRecord."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from pathlib import Path

import pytest

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.cli import main
from edge_runtime.core.commands import CommandQueue, ForceOutput, ResetTrip, SetOutput
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.security.audit import GENESIS, AuditLog, entry_hash, head_path, verify
from tests.https_env import EXAMPLES, fakes


def _log(path: Path, n: int = 6) -> Path:
    audit = AuditLog(path, wall=lambda: 1_765_000_000.0, sync=False)
    for i in range(n):
        audit.append("command", source=f"https.{i}", command=f"SetOutput(p, {i})",
                     accepted=i % 2 == 0, reason="")
    assert audit.flush()
    audit.close()
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _cli(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["audit", "verify", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_an_untouched_log_verifies_and_chains_from_genesis(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    path = _log(tmp_path / "audit.log")
    entries = [json.loads(line) for line in _lines(path)]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] == entry_hash(a) for a, b in itertools.pairwise(entries))
    verdict = verify(path)
    assert verdict.ok and verdict.entries == 6, verdict
    code, out = _cli(path, capsys)
    assert code == 0 and "intact: 6 entries" in out


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = _log(tmp_path / "audit.log", 3)
    _log(path, 2)
    assert verify(path).ok and verify(path).entries == 5


def _edit(path: Path) -> None:
    lines = _lines(path)
    lines[2] = lines[2].replace(b'"accepted":true', b'"accepted":false')
    path.write_bytes(b"".join(lines))


def _remove(path: Path) -> None:
    lines = _lines(path)
    del lines[3]
    path.write_bytes(b"".join(lines))


def _reorder(path: Path) -> None:
    lines = _lines(path)
    lines[1], lines[4] = lines[4], lines[1]
    path.write_bytes(b"".join(lines))


def _truncate(path: Path) -> None:  # whole entries cut off the end
    path.write_bytes(b"".join(_lines(path)[:4]))


def _tear(path: Path) -> None:  # cut in the middle of the last entry
    data = path.read_bytes()
    path.write_bytes(data[:-20])


def _rehash_edit(path: Path) -> None:  # an edit whose own hash is recomputed: the next prev breaks
    lines = _lines(path)
    e = json.loads(lines[2])
    e["reason"] = "nothing to see"
    e["hash"] = entry_hash(e)
    lines[2] = json.dumps(e, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))


def _drop_head(path: Path) -> None:
    head_path(path).unlink()


@pytest.mark.parametrize(("tamper", "line", "seq", "words"), [
    (_edit, 3, 3, "was edited"),
    (_remove, 4, 5, "entries 4..4 are missing"),
    (_reorder, 2, 5, "entries 2..4 are missing"),
    (_truncate, None, 5, "truncated: the head names seq 6"),
    (_tear, 6, 6, "truncated: the last entry is cut off"),
    (_rehash_edit, 4, 4, "prev is not the hash"),
    (_drop_head, None, None, "no head file"),
])
def test_each_tampering_is_found_and_the_entry_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: object, line: int | None,
        seq: int | None, words: str) -> None:
    path = _log(tmp_path / "audit.log")
    assert callable(tamper)
    tamper(path)
    verdict = verify(path)
    assert not verdict.ok
    assert (verdict.line, verdict.seq) == (line, seq), verdict
    assert words in verdict.reason, verdict
    code, out = _cli(path, capsys)
    assert code == 1
    assert words in out and (line is None or f"line {line}" in out), out


def test_a_reordering_that_keeps_seqs_in_place_is_found(tmp_path: Path) -> None:
    path = _log(tmp_path / "audit.log")
    lines = _lines(path)
    a, b = json.loads(lines[1]), json.loads(lines[2])
    a["seq"], b["seq"] = 3, 2  # swap the entries but renumber them
    for e in (a, b):
        e["hash"] = entry_hash(e)
    lines[1] = json.dumps(b, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    lines[2] = json.dumps(a, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    verdict = verify(path)
    assert not verdict.ok and verdict.line == 2 and "prev is not the hash" in verdict.reason


def test_a_damaged_log_reopened_records_the_damage_and_stays_failed(tmp_path: Path) -> None:
    path = _log(tmp_path / "audit.log")
    _truncate(path)
    _log(path, 2)  # the node restarts and appends
    verdict = verify(path)
    assert not verdict.ok and "recorded damage when reopened" in verdict.reason
    assert "truncated" in verdict.reason


def test_the_command_queue_feeds_every_record_to_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path, sync=False)
    queue = CommandQueue(sink=audit.record)
    queue.record(1.0, SetOutput("pump.speed", 50.0, "https.thermal_control", role="x"), False,
                 "rights: no")
    queue.record(2.0, SetOutput("pump.speed", 40.0), True)
    assert audit.flush()
    audit.close()
    entries = [json.loads(line) for line in _lines(path)]
    assert [(e["kind"], e["source"], e["accepted"]) for e in entries] == [
        ("command", "https.thermal_control", False), ("command", "local", True)]
    assert entries[0]["reason"] == "rights: no" and verify(path).ok


def test_a_failing_sink_never_reaches_the_scan() -> None:
    def broken(_: object) -> None:
        raise OSError("disk gone")

    queue = CommandQueue(sink=broken)
    rec = queue.record(1.0, SetOutput("p", 1.0), True)
    assert rec.accepted and len(queue.audit) == 1


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(tmp_path / "missing.log", capsys)
    assert code == 2 and "cannot read" in out


def test_audit_worthy_events_are_mirrored(tmp_path: Path) -> None:
    events = EventLog()
    audit = AuditLog(tmp_path / "audit.log", sync=False)
    audit.watch(events)
    events.raise_event(1.0, "force.pump1.speed_ref", Severity.WARNING, "forced to 0", "force")
    events.raise_event(2.0, "scan", Severity.INFO, "routine", "limit")
    events.raise_event(3.0, "interlock.leak", Severity.INFO, "reset by x", "trip_reset")
    events.raise_event(4.0, "ca", Severity.INFO, "node.crt rotated", "cert_rotated")
    assert audit.mirror_events() == 3
    assert audit.flush()
    audit.close()
    entries = [json.loads(line) for line in _lines(tmp_path / "audit.log")]
    assert [(e["kind"], e["code"]) for e in entries] == [
        ("force", "force"), ("trip_reset", "trip_reset"), ("certificate", "cert_rotated")]
    assert verify(tmp_path / "audit.log").ok


@pytest.mark.anyio
async def test_a_node_with_audit_logs_commands_forces_and_resets(tmp_path: Path) -> None:
    log_path = tmp_path / "audit.log"
    node = assemble(load_node_config(EXAMPLES / "cdu.toml",
                                     overrides={"audit": {"path": str(log_path)}}),
                    driver_factory=fakes, watchdog_thread=False)
    task = asyncio.create_task(node.run())
    try:
        node.commands.submit(ForceOutput("pump1.speed_ref", 20.0,
                                         role="infrastructure_manager"))
        node.commands.submit(ResetTrip(role="grid_operator", interlock="leak_isolate"))
        deadline = time.monotonic() + 5
        while len(node.commands.audit) < 2:
            assert time.monotonic() < deadline, "commands not applied"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    entries = [json.loads(line) for line in _lines(log_path)]
    commands = [(e["command"].split("(")[0], e["accepted"]) for e in entries
                if e["kind"] == "command"]
    assert ("ForceOutput", True) in commands and ("ResetTrip", False) in commands, commands
    assert any(e["kind"] == "force" for e in entries), entries
    assert verify(log_path).ok
