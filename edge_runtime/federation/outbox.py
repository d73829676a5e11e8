"""Store-and-forward outbox for MQTT traffic: one SQLite file in WAL mode, bounded, ordered.

What goes in: every QoS 1 message (kind "alarm", "command", "response", "state") and telemetry
while the link is down (kind "telemetry"). The link replays what is stored in put() order and
deletes each entry when the broker has it (PUBACK for QoS 1, written to the socket for QoS 0).

    ob = open_outbox(Path("/var/lib/pswd/outbox.sqlite"), max_rows=100_000, max_bytes=64 << 20)
    seq = ob.put(topic, payload, kind="alarm", qos=1)       # durable when it returns
    ob.mark_reconnected()                                  # on every CONNACK, before replay
    for e in ob.pending(limit=100, after=cursor):          # oldest first
        publish(e.topic, e.payload, e.qos, e.retain, e.properties, historical=e.historical)
        cursor = e.seq
    ob.ack(seq) / ob.ack_many(seqs) / ob.ack_through(seq)  # on PUBACK / socket write
    ob.get_status(); ob.close()

put(topic, payload, *, kind, qos=1, retain=False, properties=None) -> int returns the entry's
seq: strictly increasing for the file's whole life (SQLite AUTOINCREMENT: a seq is never
reused, even after the table empties). A put that returned is in the file: it survives kill -9
of the process (tests/test_outbox.py kills a writer with SIGKILL mid-stream). Bad arguments
raise ValueError naming the argument. properties is any CBOR-encodable dict (MQTT 5 user
properties, response topic, correlation data as bytes); it comes back equal (tuples come
back as lists).

Wiring (the link task): on CONNACK publish the birth, call mark_reconnected(), then replay
pending() with a cursor (`after`), acknowledging each entry as the broker takes it; on a lost
connection reset the cursor to 0 (unacknowledged entries go again, historical: at-least-once).
Route telemetry through put(kind="telemetry", qos=0) while the link is down *or* count() > 0,
so live batches never overtake the replay; with the link up and nothing stored it may go
direct (saves a write per batch; storing every batch, as NodeLink does, costs ~10 puts/s).
Put alarms, commands and A.2 responses always, link up or down.

Bound and policy (max_rows entries and max_bytes = payload + topic + encoded properties):
- When a put would pass a bound, the oldest telemetry entries are deleted until it fits and
  counted in `dropped_telemetry` (kept in the file, so the count survives restarts); a
  WARNING event marks the start of each dropping episode.
- Alarms, commands, responses and state are never dropped. If a put cannot fit even with all
  telemetry gone, put raises OutboxFull and stores nothing: for a protected kind the refusal
  is counted in `refused` and raised as a CRITICAL event "outbox_full" (the caller must keep
  it in memory or fail the command back); a telemetry put in that state is itself dropped and
  counted, and also raises OutboxFull so "put returned" always means "stored".
- kind "state" is latest-wins per topic: a state put deletes any pending state on the same
  topic (counted in `superseded`), since a retained birth/death only matters as the last one.
  Births belong to a connection: publish the birth directly on CONNACK, before the replay,
  so historical telemetry follows the birth whose aliases it uses.

Historical marking: mark_reconnected() records the newest seq at (re)connection; every entry
at or below it comes back with Entry.historical = True (it waited for a link). Entries put
while connected are live. At open, everything already in the file is historical. The
publisher sets the MQTT 5 user property ("historical", "true") and, for telemetry, re-encodes
the CBOR batch with Batch.historical = True (key 5 of edge_runtime.messages.telemetry). On
MQTT 3.1.1 there are no user properties: telemetry still carries key 5, JSON has no marker.

Durability: journal_mode=WAL, synchronous=NORMAL by default. A commit has written its WAL
frames with write() before it returns, so a process kill (kill -9, OOM, watchdog restart)
loses nothing that put() returned. A power loss or kernel crash can take back the commits made
since the last checkpoint (each checkpoint syncs the WAL; the file is never corrupted): the
checkpointer thread runs one every checkpoint_s (1 s) or CHECKPOINT_EVERY puts, so that
window is about a second. synchronous=FULL fsyncs every commit (durable across power loss) at
the price of a disk flush inside every put on the event loop that also runs the scan
(bench/outbox.py prints both); choose it where fsync is cheap (power-loss-protected SSD) or
where the last second of alarms matters more than scan jitter.

Timing: a put is one short transaction and, under NORMAL, never waits for an fsync:
checkpoints (which sync) run in PASSIVE mode on a private thread with its own connection,
which never blocks the writer (edge_runtime.federation.sqlite_wal.Checkpointer). Only when
steady writes keep the WAL from ever starting over (past 32 MB) does one write finish a
checkpoint itself, once per 32 MB of WAL. bench/outbox.py, 200-byte payload, on this shared
2-core VM (indicative, three runs): at 200 puts/s p50 100-130 µs, p99 230-275 µs, p99.9
0.4-1.5 ms; at 2,000/s p50 40-65 µs, p99 120-240 µs, p99.9 0.2-3.5 ms. Plain SQLite WAL
with its checkpoints in the writer, same runs: p99.9 4.3-6.4 ms. Replay (pending +
ack_many) runs at 10,000-110,000 entries/s. Opening runs quick_check: about 0.5 s for a
70 MB file, so open before the scan starts.

Threads: call an Outbox from one thread only, the asyncio loop thread that runs the MQTT link
(the connection is opened with check_same_thread, so a call from another thread raises
sqlite3.ProgrammingError instead of corrupting state). One process per file: `<name>.lock` is
held with flock for the outbox's life (the kernel drops it when the process dies), and a
second opener gets OutboxError("... in use by another process").

Corruption: opening runs PRAGMA quick_check; a file that is not a database, is malformed or
has an unknown schema raises OutboxCorrupt naming the file. open_outbox() then moves the file
(and its -wal/-shm) aside to `<name>.corrupt-<UTC time>`, raises an ALARM event, logs the
path, and opens a fresh outbox so the node keeps running; get_status()["recovered_from"]
names the moved file. Outbox() itself never moves anything.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, get_args

import cbor2

from edge_runtime.core.clock import Clock, WallClock
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.federation.sqlite_wal import Checkpointer, FileInUse, lock_file, move_aside

log = logging.getLogger(__name__)

Kind = Literal["telemetry", "alarm", "command", "response", "state"]
KINDS: tuple[str, ...] = get_args(Kind)
DROPPABLE = "telemetry"
SCHEMA_VERSION = 1
SOURCE = "outbox"
WAL_SIZE_LIMIT = 16 * 1024 * 1024  # the WAL file is truncated back to this after a restart
WRITE_WAIT_S = 5.0  # longest a put waits for a WAL restart before it fails

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    properties BLOB,
    created_ms INTEGER NOT NULL,
    size       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_telemetry ON outbox(seq) WHERE kind = 'telemetry';
CREATE INDEX IF NOT EXISTS outbox_state ON outbox(topic) WHERE kind = 'state';
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_PERSISTED = ("dropped_telemetry", "dropped_telemetry_bytes", "refused", "superseded")
_CORRUPT_CODES = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


class OutboxError(Exception):
    """The outbox cannot do what was asked; the message names the file."""


class OutboxCorrupt(OutboxError):
    """The outbox file is not a usable outbox database (torn, malformed or foreign)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: outbox database is corrupt or unreadable: {reason}")


class OutboxFull(OutboxError):
    """A put that does not fit the bounds even with all telemetry dropped."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored message, as put() received it, plus its seq and the historical flag."""

    seq: int
    kind: Kind
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[str, Any] | None
    created_ms: int
    historical: bool


class Outbox:
    """The on-disk outbox of one node (see the module docstring for the contract)."""

    def __init__(self, path: Path | str, *, max_rows: int = 100_000,
                 max_bytes: int = 64 * 1024 * 1024,
                 synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
                 checkpoint_s: float = 1.0, clock: Clock | None = None,
                 events: EventLog | None = None) -> None:
        if not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"max_rows must be a positive integer, got {max_rows!r}")
        if not isinstance(max_bytes, int) or max_bytes < 1024:
            raise ValueError(f"max_bytes must be an integer >= 1024, got {max_bytes!r}")
        if not 0.01 <= checkpoint_s <= 60:
            raise ValueError(f"checkpoint_s must be within 0.01..60 s, got {checkpoint_s!r}")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.synchronous = synchronous
        self.recovered_from: Path | None = None
        self._clock: Clock = clock or WallClock()
        self._events = events
        self._rows = dict.fromkeys(KINDS, 0)
        self._bytes = dict.fromkeys(KINDS, 0)
        self._counters = dict.fromkeys(_PERSISTED, 0)
        self._acked = 0
        self._dropping = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock: IO[bytes] | None = lock_file(self.path)
        except FileInUse as exc:
            raise OutboxError(f"{self.path}: outbox is in use by another process ({exc})") from exc
        except OSError as exc:
            raise OutboxError(f"{self.path}: cannot lock the outbox: {exc}") from exc
        self._db: sqlite3.Connection | None = None
        try:
            self._db = self._open()
            self._last_seq = self._load()
        except BaseException:
            self._release()
            raise
        self._replay_through = self._last_seq  # left by an earlier run: historical
        self._checkpointer = Checkpointer(self.path, synchronous, checkpoint_s)
        self._checkpointer.start()

    # -- opening ------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True,
                                 timeout=WRITE_WAIT_S)
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: cannot open outbox: {exc}") from exc
        try:
            # Look before writing anything: a foreign or damaged file is left as it was found.
            check = db.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise OutboxCorrupt(self.path, "; ".join(str(r[0]) for r in check[:3]))
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            fresh = version == 0 and not tables
            if not fresh and (version != SCHEMA_VERSION or not {"outbox", "counters"} <= tables):
                raise OutboxCorrupt(self.path, f"not an outbox of schema {SCHEMA_VERSION} "
                                    f"(user_version {version}, tables {sorted(tables)})")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"{self.path}: cannot switch to WAL mode (got {mode})")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            # Checkpoints run on the checkpointer thread: a put never waits for an fsync there.
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            if fresh:
                db.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        except sqlite3.Error as exc:
            db.close()
            if getattr(exc, "sqlite_errorname", "") in _CORRUPT_CODES:
                raise OutboxCorrupt(self.path, str(exc)) from exc
            raise OutboxError(f"{self.path}: cannot open outbox: {exc}") from exc
        except OutboxError:
            db.close()
            raise
        return db

    def _load(self) -> int:
        db = self._conn()
        for kind, rows, size in db.execute(
                "SELECT kind, count(*), coalesce(sum(size), 0) FROM outbox GROUP BY kind"):
            if kind not in self._rows:
                raise OutboxCorrupt(self.path, f"unknown kind {kind!r} in the outbox table")
            self._rows[kind], self._bytes[kind] = rows, size
        for name, value in db.execute("SELECT name, value FROM counters"):
            if name in self._counters:
                self._counters[name] = value
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return int(row[0]) if row else 0

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError(f"{self.path}: outbox is closed")
        return self._db

    # -- writing ------------------------------------------------------------------------------

    def put(self, topic: str, payload: bytes, *, kind: Kind, qos: int = 1, retain: bool = False,
            properties: dict[str, Any] | None = None) -> int:
        """Store one message; returns its seq once it is in the file. See the module docstring."""
        props = _check_put(topic, payload, kind, qos, retain, properties)
        payload = bytes(payload)
        size = len(payload) + len(topic.encode()) + (len(props) if props else 0)
        if size > self.max_bytes:
            raise ValueError(f"payload: {size} bytes cannot fit max_bytes={self.max_bytes}")
        db = self._conn()
        rows, nbytes = dict(self._rows), dict(self._bytes)
        dropped = dropped_bytes = superseded = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            if kind == "state":
                for r_size, in db.execute("DELETE FROM outbox WHERE kind = 'state' AND topic = ? "
                                          "RETURNING size", (topic,)).fetchall():
                    rows["state"] -= 1
                    nbytes["state"] -= r_size
                    superseded += 1
            over_rows = sum(rows.values()) + 1 - self.max_rows
            over_bytes = sum(nbytes.values()) + size - self.max_bytes
            if over_rows > 0 or over_bytes > 0:
                kept_rows = sum(rows.values()) - rows[DROPPABLE]
                kept_bytes = sum(nbytes.values()) - nbytes[DROPPABLE]
                if kept_rows + 1 > self.max_rows or kept_bytes + size > self.max_bytes:
                    db.execute("ROLLBACK")
                    self._refuse(kind, topic, size)
                dropped, dropped_bytes = self._evict(db, max(over_rows, 0), max(over_bytes, 0))
                rows[DROPPABLE] -= dropped
                nbytes[DROPPABLE] -= dropped_bytes
            cur = db.execute(
                "INSERT INTO outbox (kind, topic, payload, qos, retain, properties, created_ms, "
                "size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, topic, payload, qos, int(retain), props,
                 int(self._clock.wall() * 1000), size))
            seq = int(cur.lastrowid or 0)
            self._bump(db, dropped_telemetry=dropped, dropped_telemetry_bytes=dropped_bytes,
                       superseded=superseded)
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):  # disk full, I/O error: name the file
                raise OutboxError(f"{self.path}: put failed: {exc}") from exc
            raise
        rows[kind] += 1
        nbytes[kind] += size
        self._rows, self._bytes, self._last_seq = rows, nbytes, seq
        self._checkpointer.wrote(db)
        self._counters["dropped_telemetry"] += dropped
        self._counters["dropped_telemetry_bytes"] += dropped_bytes
        self._counters["superseded"] += superseded
        if dropped:
            self._note_dropping(dropped)
        return seq

    def _evict(self, db: sqlite3.Connection, need_rows: int, need_bytes: int) -> tuple[int, int]:
        """Delete the oldest telemetry until need_rows rows and need_bytes bytes are freed."""
        freed_rows = freed_bytes = 0
        last = 0
        cur = db.execute("SELECT seq, size FROM outbox WHERE kind = 'telemetry' ORDER BY seq")
        for seq, size in cur:
            if freed_rows >= need_rows and freed_bytes >= need_bytes:
                break
            freed_rows += 1
            freed_bytes += size
            last = seq
        cur.close()  # reset the read before deleting under it
        db.execute("DELETE FROM outbox WHERE kind = 'telemetry' AND seq <= ?", (last,))
        return freed_rows, freed_bytes

    def _refuse(self, kind: str, topic: str, size: int) -> None:
        """Count and report a put that cannot fit, then raise OutboxFull."""
        name = "dropped_telemetry" if kind == DROPPABLE else "refused"
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        self._bump(db, **{name: 1}, **({"dropped_telemetry_bytes": size}
                                       if kind == DROPPABLE else {}))
        db.execute("COMMIT")
        self._counters[name] += 1
        if kind == DROPPABLE:
            self._counters["dropped_telemetry_bytes"] += size
            self._note_dropping(1)
            why = "telemetry dropped: the outbox is full of messages that are never dropped"
        else:
            why = (f"{kind} for {topic} refused: the outbox is full of alarms, commands, "
                   f"responses and state ({self.max_rows} rows / {self.max_bytes} bytes)")
            self._event(Severity.CRITICAL, why, "outbox_full")
        raise OutboxFull(f"{self.path}: {why}")

    def _bump(self, db: sqlite3.Connection, **deltas: int) -> None:
        for name, delta in deltas.items():
            if delta:
                db.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) "
                           "DO UPDATE SET value = value + excluded.value", (name, delta))

    def _note_dropping(self, n: int) -> None:
        if not self._dropping:
            self._dropping = True
            self._event(Severity.WARNING, f"outbox full: dropping the oldest telemetry ({n} so "
                        f"far this episode; {self.max_rows} rows / {self.max_bytes} bytes)",
                        "outbox_dropping")

    def _event(self, severity: Severity, message: str, code: str) -> None:
        if self._events is not None:
            self._events.raise_event(self._clock.wall(), SOURCE, severity, message, code)
        else:
            log.warning("%s: %s", self.path, message)

    # -- acknowledging ------------------------------------------------------------------------

    def ack(self, seq: int) -> bool:
        """Delete one entry the broker has; False if it was already gone (acked or dropped)."""
        gone = self._conn().execute("DELETE FROM outbox WHERE seq = ? RETURNING kind, size",
                                    (int(seq),)).fetchall()
        return self._forget(gone) == 1

    def ack_many(self, seqs: Iterable[int]) -> int:
        """Delete several entries in one transaction; returns how many were there."""
        db = self._conn()
        gone: list[tuple[str, int]] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for seq in seqs:
                gone += db.execute("DELETE FROM outbox WHERE seq = ? RETURNING kind, size",
                                   (int(seq),)).fetchall()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return self._forget(gone)

    def ack_through(self, seq: int) -> int:
        """Delete every entry with seq <= `seq` (in-order acknowledgement); returns the count."""
        db = self._conn()
        gone = db.execute("DELETE FROM outbox WHERE seq <= ? RETURNING kind, size",
                          (int(seq),)).fetchall()
        return self._forget(gone)

    def _forget(self, gone: list[tuple[str, int]]) -> int:
        if gone and self._db is not None:
            self._checkpointer.wrote(self._db)
        for kind, size in gone:
            self._rows[kind] -= 1
            self._bytes[kind] -= size
        self._acked += len(gone)
        if gone:
            self._dropping = False  # the link drains again: a new overflow is a new episode
        return len(gone)

    # -- reading ------------------------------------------------------------------------------

    def mark_reconnected(self) -> int:
        """Call on every (re)connection before replaying: what is stored now is historical.

        Returns how many entries wait for replay.
        """
        self._replay_through = self._last_seq
        return self.count()

    def pending(self, limit: int = 100, *, after: int = 0) -> list[Entry]:
        """Up to `limit` stored entries with seq > `after`, oldest first."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        rows = self._conn().execute(
            "SELECT seq, kind, topic, payload, qos, retain, properties, created_ms FROM outbox "
            "WHERE seq > ? ORDER BY seq LIMIT ?", (int(after), int(limit))).fetchall()
        return [Entry(seq, kind, topic, bytes(payload), qos, bool(retain),
                      cbor2.loads(props) if props is not None else None, created_ms,
                      seq <= self._replay_through)
                for seq, kind, topic, payload, qos, retain, props, created_ms in rows]

    def count(self) -> int:
        """Entries stored now."""
        return sum(self._rows.values())

    def counts(self) -> dict[str, int]:
        """Entries stored per kind, plus the drop and refusal counters."""
        return {**self._rows, "total": self.count(), **self._counters}

    @property
    def checkpointer(self) -> Checkpointer:
        """The WAL checkpointer (its thread copies the WAL into the database file)."""
        return self._checkpointer

    @property
    def last_seq(self) -> int:
        """The seq of the newest put (0 for a new file)."""
        return self._last_seq

    def get_status(self) -> dict[str, Any]:
        """Sizes, bounds, counters and the replay boundary, for every status reader."""
        total_bytes = sum(self._bytes.values())
        return {
            "path": str(self.path), "open": self._db is not None, "rows": self.count(),
            "bytes": total_bytes, "max_rows": self.max_rows, "max_bytes": self.max_bytes,
            "fill": max(self.count() / self.max_rows, total_bytes / self.max_bytes),
            "by_kind": dict(self._rows), "bytes_by_kind": dict(self._bytes),
            **self._counters, "acked": self._acked, "dropping": self._dropping,
            "last_seq": self._last_seq, "replay_through": self._replay_through,
            "synchronous": self.synchronous, "checkpoints": self._checkpointer.checkpoints,
            "writer_checkpoints": self._checkpointer.restarts,
            "checkpoint_failures": self._checkpointer.failures,
            "recovered_from": str(self.recovered_from) if self.recovered_from else None,
        }

    def close(self) -> None:
        """Stop the checkpointer, checkpoint the WAL into the database and close; idempotent."""
        if self._db is None:
            return
        self._checkpointer.stop()
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._release()

    def _release(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock is not None:
            self._lock.close()  # closing the descriptor drops the flock
            self._lock = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_put(topic: Any, payload: Any, kind: Any, qos: Any, retain: Any,
               properties: Any) -> bytes | None:
    """Validate put() arguments; returns the encoded properties. Errors name the argument."""
    if not isinstance(topic, str) or not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError(f"topic: {topic!r} is not a topic to publish to")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ValueError(f"payload: expected bytes, got {type(payload).__name__}")
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    if qos not in (0, 1, 2) or isinstance(qos, bool):
        raise ValueError(f"qos: {qos!r} is not 0, 1 or 2")
    if not isinstance(retain, bool):
        raise ValueError(f"retain: expected a bool, got {type(retain).__name__}")
    if properties is None:
        return None
    if not isinstance(properties, dict) or not all(isinstance(k, str) for k in properties):
        raise ValueError("properties: expected a dict with string keys")
    try:
        return bytes(cbor2.dumps(properties))
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise ValueError(f"properties: cannot be stored: {exc}") from exc


def open_outbox(path: Path | str, *, events: EventLog | None = None,
                clock: Clock | None = None, **options: Any) -> Outbox:
    """Open the node's outbox; a corrupt file is moved aside and a fresh one opened.

    Other errors (permissions, a second process holding the file) are raised: moving a
    healthy file aside would lose its messages.
    """
    path = Path(path)
    try:
        return Outbox(path, events=events, clock=clock, **options)
    except OutboxCorrupt as exc:
        aside = move_aside(path)
        message = f"{exc}; moved to {aside} and started a fresh outbox"
        log.error("%s", message)
        if events is not None:
            events.raise_event((clock or WallClock()).wall(), SOURCE, Severity.ALARM, message,
                               "outbox_corrupt")
        outbox = Outbox(path, events=events, clock=clock, **options)
        outbox.recovered_from = aside
        return outbox
