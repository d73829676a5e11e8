"""The audit log: append-only, hash-chained, one JSON entry a line (spec 10, IEC 62443 SR 2.8).

Every command (accepted or refused: the command queue hands each AuditRecord to the log's
`record`), force, trip reset, bypass, certificate event and authentication failure (the HTTPS
server appends those) becomes one line; the safety layer's own force, bypass and reset events
and the security events of the node are mirrored from its event log (AUDITED_EVENTS):

    {"seq": 7, "ts": 1765000000.123, "kind": "command", ..., "prev": "<hash of entry 6>",
     "hash": "<SHA-256 of this entry's canonical JSON without 'hash'>"}

Canonical JSON: keys sorted, no spaces, ASCII, no NaN. The first entry's prev is 64 zeros.
Editing an entry breaks its hash; removing or reordering entries breaks the prev of the next
one; `verify(path)` names the first entry at fault (line and seq). A chain alone cannot show
that its tail was cut off, so beside the log a head file (`<log>.head`: the last seq and hash,
replaced atomically after each batch) anchors the end: a log shorter than its head is
truncated. A log found damaged when it is reopened is not repaired: an `audit_gap` entry
says what was found, and verify keeps reporting it. (Someone who can rewrite the log, its
head and every hash can forge a history; shipping the head hash off the node, e.g. in
telemetry, is what closes that.)

Writes happen on a thread of their own (one fsync per batch), so the scan that applies a
command never waits for the disk; `flush()` waits for what was appended so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge_runtime.config.reader import Section
from edge_runtime.core.commands import AuditRecord
from edge_runtime.core.events import Event

log = logging.getLogger(__name__)

GENESIS = "0" * 64
GAP = "audit_gap"  # an entry saying the log was found damaged when it was reopened
KINDS = ("command", "force", "trip_reset", "bypass", "certificate", "auth_failure", "security",
         GAP)
# Node events (core/events.py codes) the log keeps, and the kind each is filed under: what the
# safety layer did with forces, bypasses and trip resets, certificate events, and the security
# events (intrusion blocks, emergency disconnection, insecure mode, watchdog trips).
AUDITED_EVENTS = {
    "force": "force", "force_expired": "force",
    "bypass": "bypass", "bypass_end": "bypass",
    "trip_reset": "trip_reset", "trip_reset_refused": "trip_reset",
    "latch_restored": "trip_reset",
    "intrusion": "security", "emergency_disconnect": "security",
    "auth_failure": "auth_failure", "replay": "auth_failure",
    "links_reconnected": "security", "insecure_mode": "security", "watchdog": "security",
}
EVENT_POLL_S = 0.2
_STOP = object()


class EventSource(Protocol):
    """The node's event log (core/events.py EventLog)."""

    @property
    def total(self) -> int:
        """Events recorded so far."""
        ...

    def since(self, total_seen: int) -> list[Event]:
        """Events recorded after `total_seen`."""
        ...


def canonical(entry: dict[str, Any]) -> bytes:
    """The bytes an entry's hash covers: every field but 'hash', keys sorted, no spaces."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """Hex SHA-256 of the entry's canonical JSON."""
    return hashlib.sha256(canonical(entry)).hexdigest()


def head_path(path: Path) -> Path:
    """Where the head (last seq and hash) of the log at `path` is kept."""
    return path.with_name(path.name + ".head")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What verify() found: ok, or the first broken entry (1-based line, its seq) and why."""

    ok: bool
    entries: int
    reason: str = ""
    line: int | None = None
    seq: int | None = None
    last_hash: str = GENESIS

    def __str__(self) -> str:
        if self.ok:
            return f"intact: {self.entries} entries, head {self.last_hash[:16]}"
        where = f"line {self.line}" if self.line is not None else "end of log"
        seq = f" (seq {self.seq})" if self.seq is not None else ""
        return f"broken at {where}{seq}: {self.reason}"


def _lines(data: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(1-based line number, content, complete) for every line of the file."""
    parts = data.split(b"\n")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if last and not part:
            return
        yield i + 1, part, not last


def _check_line(n: int, raw: bytes, complete: bool, seq: int,
                prev: str) -> tuple[dict[str, Any] | None, Verdict | None]:
    """The entry on line n if it continues the chain (expected seq, prev), else a Verdict."""
    def broken(reason: str, at: int | None = None) -> Verdict:
        return Verdict(False, n - 1, reason, n, at)

    if not complete:
        return None, broken("truncated: the last entry is cut off (no end of line)", seq)
    try:
        entry = json.loads(raw)
    except ValueError as exc:
        return None, broken(f"not a JSON entry ({exc}): edited or corrupted", seq)
    if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int) \
            or not isinstance(entry.get("hash"), str) or not isinstance(entry.get("prev"), str):
        return None, broken("not an audit entry (seq, prev, hash missing): edited", seq)
    at = entry["seq"]
    try:
        if entry_hash(entry) != entry["hash"]:
            return None, broken("its hash does not match its content: the entry was edited", at)
    except ValueError as exc:
        return None, broken(f"cannot be hashed ({exc}): edited", at)
    if at != seq or entry["prev"] != prev:
        if at > seq:
            why = f"entries {seq}..{at - 1} are missing: removed"
        elif at < seq:
            why = f"seq {at} comes after seq {seq - 1}: entries reordered or repeated"
        else:
            why = "its prev is not the hash of the entry before it: entries removed or reordered"
        return None, broken(why, at)
    if entry.get("kind") == GAP:
        return None, broken(f"the log recorded damage when reopened: {entry.get('reason')}", at)
    return entry, None


def verify(path: Path) -> Verdict:
    """Check the whole chain and its head; the first entry at fault is named in the Verdict."""
    data = Path(path).read_bytes()
    seq, prev, count = 1, GENESIS, 0
    hashes = [GENESIS]  # by seq
    for n, raw, complete in _lines(data):
        entry, bad = _check_line(n, raw, complete, seq, prev)
        if bad is not None:
            return bad
        assert entry is not None
        seq, prev, count = seq + 1, entry["hash"], count + 1
        hashes.append(prev)
    head = _read_head(path)
    if head is None:
        if count:
            return Verdict(False, count, f"no head file {head_path(path).name}: a cut-off "
                           "tail could not be seen", None, None, prev)
        return Verdict(True, 0)
    head_seq, head_hash = head
    if head_seq > count:
        return Verdict(False, count, f"truncated: the head names seq {head_seq}, the log ends "
                       f"at seq {count}", None, count + 1, prev)
    # The head is replaced after each batch is written: after a crash it may lag the log,
    # but the entry it names must be in the chain.
    if head_seq < 0 or hashes[head_seq] != head_hash:
        return Verdict(False, count, f"the head names seq {head_seq} with a hash the log does "
                       "not hold there: the log or its head was replaced", None, head_seq, prev)
    return Verdict(True, count, last_hash=prev)


def _read_head(path: Path) -> tuple[int, str] | None:
    try:
        doc = json.loads(head_path(path).read_text())
        return int(doc["seq"]), str(doc["hash"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return (-1, "")  # unreadable: treated as not matching


def _tail(path: Path) -> tuple[int, str, str]:
    """(last seq, last hash, what is wrong or '') of an existing log, for appending to it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0, GENESIS, ""
    verdict = verify(path) if data else Verdict(True, 0)
    seq, prev = 0, GENESIS
    for _, raw, complete in _lines(data):  # continue after the last entry that parses
        with contextlib.suppress(ValueError, TypeError, KeyError):
            if complete:
                e = json.loads(raw)
                seq, prev = int(e["seq"]), str(e["hash"])
    return seq, prev, "" if verdict.ok else str(verdict)


def read_audit(sec: Section, base_dir: Path) -> Path:
    """`[audit] path = "state/audit.log"` (relative to the config file): where the node's
    audit log is kept; its directory is created at start."""
    raw = sec.get_str("path")
    sec.finish()
    if not isinstance(raw, str) or not raw:
        sec.error("path", "must name a file")
        return base_dir / "audit.log"
    p = Path(raw)
    return p if p.is_absolute() else (base_dir / p).resolve()


class AuditLog:
    """Appends entries to the chained log at `path` from a writer thread (see the module doc).

    Also a node service ("audit"): run() keeps it open and flushes and closes it at the end."""

    def __init__(self, path: Path, *, wall: Callable[[], float] = time.time,
                 sync: bool = True) -> None:
        self.path = Path(path)
        self.wall = wall
        self.sync = sync  # fsync per batch (tests of many entries may turn it off)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seq, self._prev, damage = _tail(self.path)
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self.written = 0
        self.errors = 0
        self.last_error = ""
        self._events: EventSource | None = None
        self._events_seen = 0
        self._thread = threading.Thread(target=self._writer, name="audit-log", daemon=True)
        self._thread.start()
        if damage:
            log.error("audit log %s was found damaged: %s (recorded; verify keeps failing)",
                      self.path, damage)
            self.append(GAP, source="audit", reason=damage)

    def append(self, kind: str, **fields: Any) -> None:
        """Queue one entry (never blocks on the disk); `ts` defaults to now."""
        entry = {"kind": kind, "ts": fields.pop("ts", None) or self.wall(), **fields}
        with self._idle:
            self._pending += 1
        self._q.put(entry)

    def record(self, rec: AuditRecord) -> None:
        """The command queue's sink: one entry per AuditRecord (core/commands.py)."""
        self.append("command", ts=rec.ts, source=rec.source, command=rec.command,
                    accepted=rec.accepted, reason=rec.reason)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything appended so far is on disk; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued and stop the writer thread."""
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join(timeout_s)

    def watch(self, events: EventSource) -> None:
        """Mirror the audit-worthy events of `events` (AUDITED_EVENTS, and every code starting
        with "cert") into the log while run() runs."""
        self._events = events
        self._events_seen = events.total

    def mirror_events(self) -> int:
        """File the new audit-worthy events now; how many were filed."""
        events = self._events
        if events is None:
            return 0
        new = events.since(self._events_seen)
        missed = events.total - self._events_seen - len(new)
        self._events_seen = events.total
        if missed > 0:  # more events between two polls than the event log keeps
            self.append("security", source="audit", reason=f"{missed} node events were "
                        "dropped by the event log before the audit log read them")
        filed = 0
        for e in new:
            kind = AUDITED_EVENTS.get(e.code) or ("certificate" if e.code.startswith("cert")
                                                  else None)
            if kind is not None:
                self.append(kind, ts=e.ts, source=e.source, code=e.code,
                            severity=str(e.severity), message=e.message)
                filed += 1
        return filed

    async def run(self) -> None:
        """Keep the log open beside the node (mirroring its events); flushed and closed
        when cancelled."""
        try:
            while True:
                self.mirror_events()
                await asyncio.sleep(EVENT_POLL_S)
        finally:
            self.mirror_events()
            self.close()

    def get_status(self) -> dict[str, Any]:
        """Entries written, the head, write errors."""
        return {"path": str(self.path), "seq": self._seq, "head": self._prev[:16],
                "written": self.written, "errors": self.errors, "last_error": self.last_error}

    # -- writer thread ----------------------------------------------------------------------
    def _writer(self) -> None:
        stop = False
        while not stop:
            batch = [self._q.get()]
            while True:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            stop = any(e is _STOP for e in batch)
            entries = [e for e in batch if e is not _STOP]
            if entries:
                self._write(entries)
                with self._idle:
                    self._pending -= len(entries)
                    self._idle.notify_all()

    def _write(self, entries: list[dict[str, Any]]) -> None:
        lines: list[bytes] = []
        seq, prev = self._seq, self._prev
        for entry in entries:
            seq += 1
            entry = {**entry, "seq": seq, "prev": prev}
            try:
                entry["hash"] = prev = entry_hash(entry)
            except (TypeError, ValueError) as exc:  # a field JSON cannot hold: keep its text
                entry = {"kind": entry["kind"], "ts": entry["ts"], "seq": seq,
                         "prev": entry["prev"], "unserialisable": repr(exc)[:200]}
                entry["hash"] = prev = entry_hash(entry)
            lines.append(json.dumps(entry, sort_keys=True, separators=(",", ":"),
                                    ensure_ascii=True).encode() + b"\n")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, b"".join(lines))
                if self.sync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            self._write_head(seq, prev)
        except OSError as exc:  # the entries are lost: say so loudly, keep the chain position
            self.errors += 1
            self.last_error = f"{exc}"
            log.error("audit log %s: %d entries not written: %s", self.path, len(lines), exc)
            return
        self._seq, self._prev = seq, prev
        self.written += len(lines)

    def _write_head(self, seq: int, digest: str) -> None:
        head = head_path(self.path)
        tmp = head.with_name(head.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps({"seq": seq, "hash": digest}).encode() + b"\n")
            if self.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, head)

