"""Latch journal: latched trips and the watchdog latch, kept on disk across restarts.

A latched isolation exists because something dangerous happened; a restart (crash, power
cycle, update) must not be a way to clear it. The journal is one small file, replaced whole on
every change: write a temporary file, fsync it, rename it over the journal, fsync the
directory. Its second line is the SHA-256 of its first, so a torn or edited file is detected.

At start:
- no journal and no marker: a first start, clean (the marker is written now);
- a valid journal: its latches are re-engaged before the first output write;
- a corrupt journal, or a missing one where the marker says one existed: fail safe, every
  latch of the node is assumed engaged (and the watchdog tripped) until an entitled role
  resets it, and an event says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FILE = "safety.journal"
MARKER = "safety.journal.expected"  # written once, at the first start: a journal must exist
VERSION = 1


@dataclass(frozen=True, slots=True)
class Restored:
    """What the journal said at start."""

    latched: frozenset[str] = frozenset()
    watchdog: bool = False
    status: str = "first_start"  # first_start | ok | corrupt | missing
    detail: str = ""

    @property
    def fail_safe(self) -> bool:
        """True when nothing trustworthy was read although something was expected."""
        return self.status in ("corrupt", "missing")


def encode(latched: Iterable[str], watchdog: bool) -> bytes:
    """The journal's bytes: a JSON line, then the SHA-256 hex of that line."""
    body = json.dumps({"version": VERSION, "latched": sorted(latched), "watchdog": watchdog},
                      sort_keys=True, separators=(",", ":")).encode()
    return body + b"\n" + hashlib.sha256(body).hexdigest().encode() + b"\n"


def decode(data: bytes) -> tuple[frozenset[str], bool]:
    """(latched, watchdog) from journal bytes; ValueError says what is wrong."""
    lines = data.split(b"\n")
    if len(lines) != 3 or lines[2] != b"":
        raise ValueError("not two lines (torn write?)")
    body, digest = lines[0], lines[1]
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise ValueError("checksum mismatch")
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    latched, watchdog = doc.get("latched"), doc.get("watchdog")
    if (doc.get("version") != VERSION or not isinstance(latched, list)
            or not all(isinstance(n, str) for n in latched) or not isinstance(watchdog, bool)):
        raise ValueError(f"unexpected content {doc!r}")
    return frozenset(latched), watchdog


class LatchJournal:
    """The journal of one node in `directory`; save() is thread-safe and skips no-op writes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE
        self.marker = directory / MARKER
        self._lock = threading.Lock()
        self._last: bytes | None = None
        self.writes = 0
        self.errors = 0
        self.last_error = ""

    def load(self) -> Restored:
        """Read the journal at start (see the module docstring for the outcomes)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            if self.marker.exists():
                return Restored(status="missing", detail=f"{self.path} is missing although "
                                f"{self.marker.name} says it was written before")
            self._write(self.marker, b"a latch journal exists in this directory\n")
            return Restored(status="first_start")
        except OSError as exc:
            return Restored(status="corrupt", detail=f"{self.path}: {exc}")
        try:
            latched, watchdog = decode(data)
        except ValueError as exc:
            return Restored(status="corrupt", detail=f"{self.path}: {exc}")
        self._last = data
        return Restored(latched, watchdog, "ok")

    def save(self, latched: Iterable[str], watchdog: bool) -> bool:
        """Persist the latch state (durable on return); False, logged, when the disk refused."""
        data = encode(latched, watchdog)
        with self._lock:
            if data == self._last:
                return True
            try:
                self._write(self.path, data)
            except OSError as exc:
                self.errors += 1
                self.last_error = f"{self.path}: {exc}"
                log.error("latch journal not written: %s", self.last_error)
                # The journal on disk no longer says what is latched: remove it, so a restart
                # finds the marker without a journal and fails safe (every latch engaged)
                # instead of trusting an older state. Unlinking works even on a full disk.
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                self._last = None  # the next save writes again, whatever it holds
                return False
            self._last = data
            self.writes += 1
            return True

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
                os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
