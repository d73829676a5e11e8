"""Store-and-forward outbox: order, acks, bounds and drop policy, historical marking, kill -9,
corrupt files, one owner per file, put timing."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.core.clock import VirtualClock
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.federation import sqlite_wal
from edge_runtime.federation.outbox import (
    Outbox,
    OutboxCorrupt,
    OutboxError,
    OutboxFull,
    open_outbox,
)

WRITER = Path(__file__).with_name("outbox_writer.py")
TOPIC = "pswd/v1/s1/n1/telemetry"
ALARM = "pswd/v1/s1/n1/alarm"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite"


def payloads(ob: Outbox) -> list[bytes]:
    return [e.payload for e in ob.pending(1_000_000)]


# -- basic contract ------------------------------------------------------------------------


def test_put_and_pending_keep_order_and_fields(path: Path) -> None:
    clock = VirtualClock()
    with Outbox(path, clock=clock) as ob:
        props = {"user": [["historical", "false"]], "correlation_data": b"\x00\x01",
                 "response_topic": "pswd/v1/s1/workload/response/w1"}
        s1 = ob.put(ALARM, b"a1", kind="alarm", qos=1, properties=props)
        s2 = ob.put(TOPIC, b"t1", kind="telemetry", qos=0)
        s3 = ob.put("pswd/v1/s1/n1/state", b"online", kind="state", retain=True)
        assert s1 < s2 < s3
        e1, e2, e3 = ob.pending(10)
        assert (e1.seq, e1.topic, e1.payload, e1.qos, e1.kind, e1.retain) == (
            s1, ALARM, b"a1", 1, "alarm", False)
        assert e1.properties == props
        assert e1.created_ms == int(clock.wall() * 1000)
        assert (e2.qos, e2.kind, e2.properties) == (0, "telemetry", None)
        assert (e3.kind, e3.retain) == ("state", True)
        assert [e.seq for e in ob.pending(2)] == [s1, s2]
        assert [e.seq for e in ob.pending(10, after=s1)] == [s2, s3]
        assert ob.count() == 3 and ob.last_seq == s3
        counts = ob.counts()
        assert (counts["alarm"], counts["telemetry"], counts["state"], counts["total"]) == (
            1, 1, 1, 3)


def test_acks_delete_and_report_what_was_there(path: Path) -> None:
    with Outbox(path) as ob:
        seqs = [ob.put(TOPIC, f"m{i}".encode(), kind="telemetry", qos=0) for i in range(10)]
        assert ob.ack(seqs[0]) is True
        assert ob.ack(seqs[0]) is False  # already gone: not an error
        assert ob.ack_many([seqs[1], seqs[2], 999_999]) == 2
        assert ob.ack_through(seqs[5]) == 3
        assert payloads(ob) == [b"m6", b"m7", b"m8", b"m9"]
        status = ob.get_status()
        assert (status["rows"], status["acked"]) == (4, 6)
        assert status["bytes"] == sum(len(TOPIC) + 2 for _ in range(4))


def test_seq_never_reused_after_empty_and_reopen(path: Path) -> None:
    with Outbox(path) as ob:
        last = [ob.put(TOPIC, b"x", kind="telemetry") for _ in range(5)][-1]
        ob.ack_through(last)
        assert ob.count() == 0
    with Outbox(path) as ob:
        assert ob.last_seq == last
        assert ob.put(TOPIC, b"y", kind="telemetry") == last + 1


def test_historical_marking(path: Path) -> None:
    with Outbox(path) as ob:
        down = ob.put(ALARM, b"while down", kind="alarm")
        assert ob.mark_reconnected() == 1
        live = ob.put(ALARM, b"while up", kind="alarm")
        assert [(e.seq, e.historical) for e in ob.pending()] == [(down, True), (live, False)]
        # The link drops before `live` was acknowledged: on the next connection it is history.
        ob.mark_reconnected()
        assert all(e.historical for e in ob.pending())
        after = ob.put(ALARM, b"new", kind="alarm")
    with Outbox(path) as ob:  # a restart: whatever an earlier run left is historical
        assert [(e.seq, e.historical) for e in ob.pending()] == [
            (down, True), (live, True), (after, True)]


def test_state_is_latest_wins_per_topic(path: Path) -> None:
    with Outbox(path) as ob:
        ob.put("pswd/v1/s1/n1/state", b"birth-1", kind="state", retain=True)
        ob.put(ALARM, b"a", kind="alarm")
        ob.put("pswd/v1/s1/n2/state", b"other-node", kind="state", retain=True)
        last = ob.put("pswd/v1/s1/n1/state", b"birth-2", kind="state", retain=True)
        assert payloads(ob) == [b"a", b"other-node", b"birth-2"]
        assert ob.pending()[-1].seq == last
        assert ob.counts()["superseded"] == 1


# -- bounds and policy -----------------------------------------------------------------------


def test_row_bound_drops_oldest_telemetry_never_alarms(path: Path) -> None:
    events = EventLog()
    with Outbox(path, max_rows=5, events=events) as ob:
        ob.put(ALARM, b"A0", kind="alarm")
        for i in range(4):
            ob.put(TOPIC, f"t{i}".encode(), kind="telemetry", qos=0)
        ob.put("pswd/v1/s1/n1/cmd/thermal_control", b"C0", kind="command")
        ob.put(TOPIC, b"t4", kind="telemetry", qos=0)
        ob.put(ALARM, b"A1", kind="alarm")
        assert payloads(ob) == [b"A0", b"t3", b"C0", b"t4", b"A1"]
        status = ob.get_status()
        assert status["dropped_telemetry"] == 3
        assert status["dropping"] is True
        warnings = [e for e in events.recent() if e.code == "outbox_dropping"]
        assert len(warnings) == 1 and warnings[0].severity is Severity.WARNING
    with Outbox(path, max_rows=5) as ob:  # the count is kept in the file
        assert ob.get_status()["dropped_telemetry"] == 3


def test_byte_bound_drops_as_many_old_telemetry_as_needed(path: Path) -> None:
    topic_len = len(TOPIC)
    with Outbox(path, max_bytes=4096) as ob:
        for i in range(6):
            ob.put(TOPIC, bytes([i]) * 600, kind="telemetry", qos=0)  # 6 * (600 + topic)
        ob.put(ALARM, b"!" * 2000, kind="alarm")
        status = ob.get_status()
        assert status["bytes"] <= 4096
        kept = [e.payload[0] for e in ob.pending() if e.kind == "telemetry"]
        assert kept == list(range(6))[-len(kept):]  # the newest survive, in order
        assert status["dropped_telemetry"] == 6 - len(kept)
        assert status["dropped_telemetry_bytes"] == (6 - len(kept)) * (600 + topic_len)


def test_full_of_protected_messages_refuses_with_alarm(path: Path) -> None:
    events = EventLog()
    with Outbox(path, max_rows=3, events=events) as ob:
        seqs = [ob.put(ALARM, f"A{i}".encode(), kind="alarm") for i in range(3)]
        with pytest.raises(OutboxFull, match=r"outbox\.sqlite: command for .* refused"):
            ob.put("pswd/v1/s1/n1/cmd/grid_signal", b"C", kind="command")
        with pytest.raises(OutboxFull, match="telemetry dropped"):
            ob.put(TOPIC, b"t", kind="telemetry")
        assert payloads(ob) == [b"A0", b"A1", b"A2"]  # nothing stored, nothing lost
        status = ob.get_status()
        assert (status["refused"], status["dropped_telemetry"]) == (1, 1)
        critical = [e for e in events.recent() if e.code == "outbox_full"]
        assert len(critical) == 1 and critical[0].severity is Severity.CRITICAL
        ob.ack(seqs[0])  # the link drains one: the next command fits again
        ob.put("pswd/v1/s1/n1/cmd/grid_signal", b"C", kind="command")
        assert payloads(ob) == [b"A1", b"A2", b"C"]


def test_refused_state_keeps_the_state_it_would_supersede(path: Path) -> None:
    with Outbox(path, max_rows=2, max_bytes=1024) as ob:
        ob.put("pswd/v1/s1/n1/state", b"old", kind="state", retain=True)
        ob.put(ALARM, b"a" * 900, kind="alarm")
        with pytest.raises(OutboxFull):
            ob.put("pswd/v1/s1/n1/state", b"n" * 200, kind="state", retain=True)
        assert payloads(ob)[0] == b"old"
        assert ob.counts()["superseded"] == 0


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "field"), [
    ({"topic": ""}, "topic"),
    ({"topic": "pswd/v1/+/x"}, "topic"),
    ({"topic": 5}, "topic"),
    ({"payload": "text"}, "payload"),
    ({"kind": "debug"}, "kind"),
    ({"qos": 3}, "qos"),
    ({"qos": True}, "qos"),
    ({"retain": 1}, "retain"),
    ({"properties": {1: "x"}}, "properties"),
    ({"properties": {"x": object()}}, "properties"),
    ({"payload": b"x" * 5000}, "payload"),
])
def test_bad_put_arguments_name_the_field(path: Path, args: dict[str, Any], field: str) -> None:
    call: dict[str, Any] = {"topic": ALARM, "payload": b"x", "kind": "alarm", "qos": 1,
                            "retain": False, "properties": None, **args}
    with Outbox(path, max_bytes=4096) as ob:
        with pytest.raises(ValueError, match=rf"^{field}:"):
            ob.put(call.pop("topic"), call.pop("payload"), **call)
        assert ob.count() == 0


@pytest.mark.parametrize(("option", "value"), [
    ("max_rows", 0), ("max_bytes", 10), ("synchronous", "OFF"), ("checkpoint_s", 0.0)])
def test_bad_options_are_refused(path: Path, option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        Outbox(path, **{option: value})


# -- files, owners, threads ------------------------------------------------------------------


def test_second_owner_is_refused_and_lock_released_on_close(path: Path) -> None:
    ob = Outbox(path)
    with pytest.raises(OutboxError, match="in use by another process"):
        Outbox(path)
    ob.close()
    ob.close()  # idempotent
    with pytest.raises(OutboxError, match="closed"):
        ob.put(ALARM, b"x", kind="alarm")
    Outbox(path).close()


def test_other_thread_is_refused_and_no_thread_leaks(path: Path) -> None:
    before = set(threading.enumerate())
    ob = Outbox(path)
    errors: list[BaseException] = []

    def from_thread() -> None:
        try:
            ob.put(ALARM, b"x", kind="alarm")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=from_thread)
    t.start()
    t.join(5)
    assert len(errors) == 1 and isinstance(errors[0], sqlite3.ProgrammingError)
    ob.close()
    assert set(threading.enumerate()) <= before


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign"])
def test_corrupt_file_is_named_then_moved_aside(path: Path, damage: str) -> None:
    if damage == "garbage":
        path.write_bytes(b"this is not an sqlite database, it is a torn write" * 100)
    elif damage == "truncated":
        with Outbox(path) as ob:
            for i in range(2000):
                ob.put(TOPIC, bytes([i % 256]) * 300, kind="telemetry")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE something_else (x)")
        db.commit()
        db.close()
    original = path.read_bytes()
    with pytest.raises(OutboxCorrupt) as info:
        Outbox(path)
    assert str(path) in str(info.value)

    events = EventLog()
    ob = open_outbox(path, events=events)
    try:
        aside = ob.recovered_from
        assert aside is not None and aside.name.startswith("outbox.sqlite.corrupt-")
        assert aside.read_bytes() == original  # kept for inspection, not deleted
        assert ob.get_status()["recovered_from"] == str(aside)
        assert [e.code for e in events.recent()] == ["outbox_corrupt"]
        assert events.recent()[0].severity is Severity.ALARM
        assert str(path) in events.recent()[0].message
        ob.put(ALARM, b"still working", kind="alarm")  # the node carries on
        assert payloads(ob) == [b"still working"]
    finally:
        ob.close()


def test_checkpoint_puts_the_data_in_the_database_file(path: Path, tmp_path: Path) -> None:
    """After a checkpoint the main file alone holds the puts: the power-loss window closes."""
    with Outbox(path, checkpoint_s=60) as ob:  # only wait_checkpoint() wakes it early
        seqs = [ob.put(ALARM, f"a{i}".encode(), kind="alarm") for i in range(50)]
        assert ob.checkpointer.wait_checkpoint(10)
        copy = tmp_path / "main-file-only.sqlite"
        copy.write_bytes(path.read_bytes())  # without -wal: what a crash before a sync keeps
        db = sqlite3.connect(copy)
        try:
            assert [r[0] for r in db.execute("SELECT seq FROM outbox ORDER BY seq")] == seqs
        finally:
            db.close()
        assert ob.get_status()["checkpoints"] >= 1


def test_wal_starts_over_under_steady_writes(path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Puts and acks with no pause: the writer finishes a checkpoint once the WAL is long."""
    monkeypatch.setattr(sqlite_wal, "RESTART_FRAMES", 64)
    monkeypatch.setattr(sqlite_wal, "CHECKPOINT_EVERY", 50)
    wal = Path(f"{path}-wal")
    with Outbox(path) as ob:
        biggest = 0
        for i in range(3000):  # ~5 frames per put and ack: ~60 MB of WAL if never reset
            seq = ob.put(TOPIC, bytes(200), kind="telemetry", qos=0)
            ob.ack(seq)
            if i % 100 == 0:
                biggest = max(biggest, wal.stat().st_size)
        assert ob.get_status()["writer_checkpoints"] >= 1
        assert biggest < 20_000_000, biggest


# -- kill -9 ---------------------------------------------------------------------------------


def run_writer_and_kill(path: Path, start: int, read: int) -> list[tuple[int, int]]:
    """Start the writer, read `read` acknowledged puts, SIGKILL it; every line it printed."""
    proc = subprocess.Popen([sys.executable, str(WRITER), str(path), str(start), "10000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        acked = [tuple(map(int, proc.stdout.readline().split())) for _ in range(read)]
        with pytest.raises(OutboxError, match="in use"):  # it owns the file while it lives
            Outbox(path)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # Lines still in the pipe were printed after put() returned: acknowledged too.
        acked += [tuple(map(int, line.split())) for line in proc.stdout if line.strip()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return [(a[0], a[1]) for a in acked]


@pytest.mark.timeout(45)
def test_kill_9_loses_no_acknowledged_put(path: Path) -> None:
    start, all_acked = 0, []
    for _round in range(3):
        acked = run_writer_and_kill(path, start, read=400)
        all_acked += acked
        with Outbox(path) as ob:
            entries = ob.pending(10_000_000)
            stored = [(e.seq, int(e.payload.decode().removeprefix("msg-"))) for e in entries]
            index = [i for _seq, i in stored]
            # Everything since the first put, in put order, once each: no gap, no duplicate.
            assert index == list(range(len(index)))
            assert [s for s, _ in stored] == sorted({s for s, _ in stored})
            assert set(all_acked) <= set(stored)
            for e in entries:
                i = int(e.payload.decode().removeprefix("msg-"))
                assert e.kind == ("telemetry" if i % 2 else "alarm")
                assert e.properties == ({"i": i} if i % 3 == 0 else None)
                assert e.historical
            start = len(index)
    assert len(all_acked) >= 1200


# -- timing ----------------------------------------------------------------------------------


def test_put_timing_200_byte_payload(path: Path) -> None:
    """Prints p50/p99 of one put (and one ack); bench/outbox.py measures more."""
    payload = bytes(range(200))
    puts, acks = [], []
    with Outbox(path) as ob:
        for i in range(3000):
            t0 = time.perf_counter_ns()
            seq = ob.put(TOPIC, payload, kind="telemetry" if i % 4 else "alarm", qos=1)
            t1 = time.perf_counter_ns()
            if i % 2:
                ob.ack(seq - 1)
                acks.append(time.perf_counter_ns() - t1)
            puts.append(t1 - t0)
    puts.sort()
    acks.sort()

    def pct(xs: list[int], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))] / 1000

    print(f"\noutbox put 200 B: p50 {pct(puts, 0.5):.0f} us, p99 {pct(puts, 0.99):.0f} us, "
          f"max {puts[-1] / 1000:.0f} us; ack p50 {pct(acks, 0.5):.0f} us, "
          f"p99 {pct(acks, 0.99):.0f} us (indicative: shared 2-core VM)")
    # Loose bound: a put is a short transaction with no fsync, far below a scan period.
    assert pct(puts, 0.5) < 2000
