"""SQLite file plumbing for the outbox: one owner per file, checkpoints off the event loop.

Kept apart from the outbox's message logic: a flock on `<name>.lock`, a thread that copies
the WAL into the database, and moving a bad file aside.
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 500  # writes between early checkpoints (about 2 MB of WAL at 4 KB pages)
RESTART_FRAMES = 8192  # WAL frames (4 KB pages, 32 MB) past which the writer completes a checkpoint
PASSES = 4  # PASSIVE passes per round, each catching the frames written during the one before


class FileInUse(Exception):
    """Another process holds the file's lock."""


def lock_file(path: Path) -> IO[bytes]:
    """Hold `<name>.lock` with flock until the returned file is closed (or the process dies).

    Raises FileInUse if another process holds it, OSError if the lock file cannot be opened.
    """
    lock_path = path.with_name(path.name + ".lock")
    fh = open(lock_path, "ab")  # noqa: SIM115 - held open for the owner's lifetime
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        fh.close()
        raise FileInUse(f"{lock_path} is locked by another process") from exc
    except OSError:
        fh.close()
        raise
    return fh


class Checkpointer:
    """Copies the WAL of `path` into the database from its own thread and connection.

    A checkpoint syncs the WAL and the database file (milliseconds on a busy disk); on the
    writer's connection it would land inside some write on the event loop. Here it runs every
    interval_s, or sooner after CHECKPOINT_EVERY writes, in PASSIVE mode, which never blocks
    the writer. With synchronous=NORMAL that bounds what a power loss can take back to about
    the last interval_s of writes. The writer sets wal_autocheckpoint=0 and calls wrote(db)
    after each write transaction.

    The WAL starts over (and journal_size_limit trims it) only when a write begins with every
    frame copied. Writes so steady that this never happens would grow it without bound, so
    once it holds RESTART_FRAMES the writer runs one PASSIVE checkpoint itself, in wrote():
    being the only writer, nothing can write during it, so it always completes and the
    writer's next transaction starts the WAL over. It copies only what the thread's passes
    left, but it syncs, so that one write costs milliseconds, once per RESTART_FRAMES frames.
    (A RESTART from this thread was worse: it holds the write lock while its busy handler
    sleeps on the writer's read mark, tens of milliseconds measured.)
    """

    def __init__(self, path: Path, synchronous: str, interval_s: float) -> None:
        self._path = path
        self._synchronous = synchronous
        self._interval_s = interval_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._busy = threading.Lock()  # one checkpoint at a time: thread or writer
        self._done = threading.Condition()
        # wait_checkpoint() calls made / the newest call a finished pass began after
        self._requested = self._served = 0
        self._writes = 0
        self.frames = 0  # WAL frames seen by the last pass
        self.checkpoints = 0
        self.restarts = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name=f"wal-checkpoint:{path.name}",
                                        daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def wrote(self, db: sqlite3.Connection) -> None:
        """Count one write on the writer's connection `db`; restart a WAL grown too long."""
        self._writes += 1
        if self._writes >= CHECKPOINT_EVERY:
            self._writes = 0
            self._wake.set()
        if self.frames < RESTART_FRAMES:
            return
        # Past twice the limit, wait for a pass in progress (milliseconds) rather than skip.
        if self.frames >= 2 * RESTART_FRAMES:
            got = self._busy.acquire(timeout=2.0)
        else:
            got = self._busy.acquire(blocking=False)
        if not got:
            return
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.restarts += 1
        except sqlite3.Error as exc:
            self.failures += 1
            log.warning("%s: WAL checkpoint by the writer failed: %s", self._path, exc)
        finally:
            self.frames = 0
            self._busy.release()

    def wait_checkpoint(self, timeout: float) -> bool:
        """Wait until a checkpoint pass that starts after this call completes; False on timeout."""
        with self._done:
            self._requested += 1
            target = self._requested
        self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: self._served >= target, timeout)

    def stop(self) -> None:
        """Stop and join the thread (it finishes a checkpoint in progress first)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self._path, isolation_level=None, timeout=1.0)
        except sqlite3.Error as exc:
            log.error("%s: WAL checkpointer cannot open the file: %s", self._path, exc)
            return
        try:
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            while not self._stopping.is_set():
                self._wake.wait(self._interval_s)
                self._wake.clear()
                if self._stopping.is_set():
                    break
                with self._done:
                    serving = self._requested
                with self._busy:
                    self._checkpoint(db)
                with self._done:
                    self._served = serving
                    self._done.notify_all()
        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        try:
            # Frames written during a long pass are caught by short follow-up passes.
            for _ in range(PASSES):
                # fetchall: a statement left unfinished would hold a read mark on the WAL.
                [(_b, frames, copied)] = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                if copied >= frames:
                    break
            self.frames = frames
            self.checkpoints += 1
        except sqlite3.Error as exc:  # retried next round, never fatal
            self.failures += 1
            log.warning("%s: WAL checkpoint failed: %s", self._path, exc)


def move_aside(path: Path) -> Path:
    """Rename a bad database (and its -wal/-shm) to `<name>.corrupt-<UTC time>`; returns it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            extra.rename(aside.with_name(aside.name + suffix))
    path.rename(aside)
    return aside
