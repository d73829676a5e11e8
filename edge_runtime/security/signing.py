"""Signed command envelopes: HMAC-SHA256 over the command, per role (spec 5.3 b, 10.2.2, 10.3.2).

A control command on `pswd/v1/{site}/{node}/cmd/{kind}` (kind thermal_control, battery_control
or grid_signal) carries, beside its fields (inbound.py):

    "timestamp": RFC 3339, when it was issued (the node refuses it beyond max_age_s either way)
    "nonce":     8-64 characters, never used before by this role on this node
    "role":      who signs: one of the spec 10.2.2 roles (core/authority.py USER_ROLES)
    "signature": hex HMAC-SHA256 under that role's key of
                 "{node}/{kind}\\n" + the JSON of every other field, keys sorted, no spaces

The node and the kind are inside the MAC, so a command signed for one node or one kind cannot
be replayed to another; the nonce and the timestamp stop a replay to the same one. Each role
has its own 32-byte key (`<role>.key` in a directory, 64 hex digits): holding the grid
operator's key signs grid signals, not pump speeds. Which role may send which kind is the
rights table's (core/authority.py; a node's [rights] may narrow it), and what the command
then moves is checked there again per output class:

    thermal_control   infrastructure_manager
    battery_control   infrastructure_manager, grid_operator
    grid_signal       grid_operator, infrastructure_manager
    workload          workload_operator, infrastructure_manager (an A.1 sent to one node)
    prepare           infrastructure_manager (the site coordinator's workload/prepare)

An A.1 body has a timestamp of its own (when the workload was announced), so on the workload
kinds the envelope's issue time is "signed_at" instead. `prepare` goes to every node of the
site at once: its MAC names "{site}/*" where the others name the node.

Nonces survive a restart when the verifier has a `journal` file (the node's state dir): each
accepted nonce is appended and fsync'd before the command is handed on, so a command captured
before a restart is refused after it. The journal is bounded (rewritten, atomically, with
only the live window when it doubles) and a torn last line (power cut mid-write: that command
was never accepted) is ignored.

Keys are made with `generate_key(path)` (`pswd-edge keygen`), mode 0600, never shipped.

    key = load_keys(Path("/etc/pswd/command_keys"))["grid_operator"]
    doc = sign(key, "rack-01", "battery_control", {"PSWD_version": "1.0",
               "action": "set_output", "point": "battery.w_set_kw", "value": -200.0},
               role="grid_operator", now=time.time())
    verifier = CommandVerifier(load_keys(dir), node="rack-01", wall=clock.wall)
    verifier("battery_control", doc)      # None, or why it is refused
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_runtime.core.authority import DEFAULT_RIGHTS, USER_ROLES, Rights
from edge_runtime.messages.models import format_datetime, parse_datetime

ROLES = USER_ROLES  # one list, one spelling: keys are <role>.key for these
CONTROL_KINDS = ("thermal_control", "battery_control", "grid_signal")
# Who may sign the output-moving kinds (the default table; `pswd-edge command --kind`).
ALLOWED_ROLES: dict[str, frozenset[str]] = {k: DEFAULT_RIGHTS.roles_for(k) for k in CONTROL_KINDS}
WORKLOAD_KINDS = frozenset({"workload", "prepare"})
PREPARE = "prepare"
log = logging.getLogger(__name__)
PREPARE_ROLE = "infrastructure_manager"  # the site coordinator signs as the facility
KEY_BYTES = 32
_NONCE = re.compile(r"[A-Za-z0-9_.:-]{8,64}", re.ASCII)
_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)


class KeyFileError(ValueError):
    """A key file that cannot be used."""


def time_field(kind: str) -> str:
    """The envelope field holding the issue time: an A.1 has its own "timestamp"."""
    return "signed_at" if kind in WORKLOAD_KINDS else "timestamp"


def site_target(site: str) -> str:
    """What a site-wide message's MAC names instead of one node ("{site}/*")."""
    return f"{site}/*"


def canonical(node: str, kind: str, doc: Mapping[str, Any]) -> bytes:
    """The bytes the MAC covers: node and kind, then every field but the signature."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return f"{node}/{kind}\n{text}".encode()


def mac(key: bytes, node: str, kind: str, doc: Mapping[str, Any]) -> str:
    """Hex HMAC-SHA256 of the command under `key`."""
    return hmac.new(key, canonical(node, kind, doc), hashlib.sha256).hexdigest()


def sign(key: bytes, node: str, kind: str, doc: Mapping[str, Any], *, role: str,
         now: float, nonce: str | None = None) -> dict[str, Any]:
    """A copy of `doc` with timestamp (issued now), nonce, role and signature set."""
    out = {k: v for k, v in doc.items() if k != "signature"}
    out[time_field(kind)] = format_datetime(datetime.fromtimestamp(now, UTC))
    out["nonce"] = nonce if nonce is not None else secrets.token_hex(12)
    out["role"] = role
    out["signature"] = mac(key, node, kind, out)
    return out


class CommandVerifier:
    """The `verify(kind, doc)` hook of NodeLink: None if the envelope holds, else why not.

    Nonces are remembered per role for twice max_age_s (older ones would fail the time check
    anyway), at most `max_nonces` of them; past that bound the oldest go first, and a
    command whose nonce would be forgotten too early (an attacker filling the cache) is
    refused rather than risk a replay. With a `journal` path they survive a restart (see the
    module docstring); a journal that cannot be written refuses the command."""

    def __init__(self, keys: Mapping[str, bytes], *, node: str, wall: Callable[[], float],
                 max_age_s: float = 30.0, max_nonces: int = 100_000, site: str = "",
                 rights: Rights = DEFAULT_RIGHTS, journal: Path | None = None) -> None:
        if not keys:
            raise ValueError("no command keys: every signed command would be refused")
        self.keys = dict(keys)
        self.node = node
        self.site = site
        self.wall = wall
        self.rights = rights
        self.max_age_s = max_age_s
        self.max_nonces = max_nonces
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()  # -> issued at
        self.refused = 0
        # MQTT (the client's network thread), HTTPS (the node's loop) and OPC UA (its server's
        # thread) share one verifier: the nonce's check-and-take must be one step, or one
        # envelope sent on two transports at once could be taken twice.
        self._lock = threading.Lock()
        self.journal = NonceJournal(journal) if journal is not None else None
        # With a journal that cannot be read, any command issued before this start may have
        # been accepted already: those are refused (later ones cannot have been).
        self._unknown_before: float | None = None
        if self.journal is not None:
            horizon = wall() - 2.0 * max_age_s
            try:
                for issued, role, nonce in self.journal.load():
                    if issued >= horizon:
                        self._seen[(role, nonce)] = issued
            except OSError as exc:
                self._unknown_before = wall()
                log.error("%s: replay journal %s unreadable (%s): commands issued before now "
                          "are refused", node, journal, exc)

    def __call__(self, kind: str, doc: dict[str, Any]) -> str | None:
        with self._lock:
            why = self._check(kind, doc)
            if why is not None:
                self.refused += 1
        return why

    def _check(self, kind: str, doc: dict[str, Any]) -> str | None:
        role, nonce, signature = doc.get("role"), doc.get("nonce"), doc.get("signature")
        if not isinstance(signature, str) or not _HEX64.fullmatch(signature):
            return "signature: required, 64 lower-case hex digits of HMAC-SHA256"
        if not isinstance(role, str) or role not in ROLES:
            return f"role: expected one of {', '.join(ROLES)}, got {role!r}"[:200]
        allowed = self.rights.roles_for(kind)
        if role not in allowed:
            return (f"role: {role} may not send {kind} (allowed: "
                    f"{', '.join(sorted(allowed)) or 'none'})")
        key = self.keys.get(role)
        if key is None:
            return f"role: this node holds no key for {role}"
        target = site_target(self.site) if kind == PREPARE else self.node
        if not hmac.compare_digest(signature, mac(key, target, kind, doc)):
            return "signature: does not match (wrong key, node, kind or altered fields)"
        # only a genuine message gets this far: what follows is about replays and clocks
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            return "nonce: required, 8-64 characters of letters, digits, _ . : -"
        field = time_field(kind)
        try:
            issued = parse_datetime(str(doc.get(field))).timestamp()
        except ValueError as exc:
            return f"{field}: {exc}"
        now = self.wall()
        age = now - issued
        if age > self.max_age_s:
            return (f"{field}: issued {age:.1f} s ago by this node's clock, more than "
                    f"{self.max_age_s:g} s (expired, or a clock is wrong)")
        if -age > self.max_age_s:
            return (f"{field}: issued {-age:.1f} s in the future by this node's clock, "
                    f"more than {self.max_age_s:g} s (a clock is wrong)")
        self._forget(now)
        if (role, nonce) in self._seen:
            return "nonce: already used (a replay)"
        if self._unknown_before is not None and issued <= self._unknown_before:
            return ("nonce: the replay journal was unreadable at start; a command issued "
                    "before it is refused for safety")
        if len(self._seen) >= self.max_nonces:
            return "nonce: too many commands inside the replay window; refused for safety"
        if self.journal is not None:
            try:  # on disk before the command is handed on: a restart cannot forget it
                self.journal.append(issued, role, nonce, live=self._seen)
            except OSError as exc:
                return f"nonce: the replay journal cannot be written ({exc}); refused for safety"
        self._seen[(role, nonce)] = issued
        return None

    def _forget(self, now: float) -> None:
        horizon = now - 2.0 * self.max_age_s
        while self._seen:
            key, issued = next(iter(self._seen.items()))
            if issued >= horizon:
                break
            del self._seen[key]


class NonceJournal:
    """Accepted nonces on disk, one line each ("issued role nonce").

    append() writes the line before the command is handed on, so a node killed the next
    instant (kill -9, a crash, a watchdog restart) finds it after the restart: the kernel
    holds it. Making it survive a power cut too (fdatasync, 0.2 ms here, 500 ms on a busy
    disk) is a background thread's job, at most `sync_s` later, so the scan's thread never
    waits on the disk. The window that leaves: a command accepted less than sync_s before a
    power cut, replayed within the skew limit after a reboot that took less than that limit.

    A line is only used when it ends in a newline and parses: a torn write is the command
    that was never accepted. When the file holds twice the live window it is rewritten with
    the live window only (temporary file, fsync, rename), so it stays bounded."""

    def __init__(self, path: Path, *, slack: int = 1000, sync_s: float = 0.1) -> None:
        self.path = path
        self.slack = slack  # lines beyond twice the live window before a rewrite
        self.sync_s = sync_s
        self._lines = 0
        self._fd: int | None = None
        self._lock = threading.Lock()  # the fd, between append/rewrite and the syncer
        self._dirty = threading.Event()
        self._syncer: threading.Thread | None = None
        self.syncs = 0

    def load(self) -> list[tuple[float, str, str]]:
        """Every well-formed entry; a missing file is an empty journal."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out: list[tuple[float, str, str]] = []
        for line in data.split(b"\n")[:-1]:  # the part after the last newline is torn
            parts = line.decode("ascii", errors="replace").split(" ")
            if len(parts) != 3 or parts[1] not in ROLES or not _NONCE.fullmatch(parts[2]):
                continue
            try:
                issued = float(parts[0])
            except ValueError:
                continue
            out.append((issued, parts[1], parts[2]))
        self._lines = len(out)
        return out

    def append(self, issued: float, role: str, nonce: str, *,
               live: Mapping[tuple[str, str], float]) -> None:
        """Record one accepted nonce (compacting first when the file has grown); OSError when
        the line cannot be written (the caller then refuses the command)."""
        if self._lines >= 2 * len(live) + self.slack:
            self._rewrite(live)
        with self._lock:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.write(self._fd, _line(issued, role, nonce))
        self._lines += 1
        self._dirty.set()
        if self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_loop, daemon=True,
                                            name=f"nonce-sync-{self.path.name}")
            self._syncer.start()

    def _sync_loop(self) -> None:
        while True:
            self._dirty.wait()
            time.sleep(self.sync_s)  # gathers the appends of a burst into one sync
            self._dirty.clear()
            self.flush()

    def flush(self) -> None:
        """fdatasync what append() wrote (the syncer calls it; tests and shutdown may)."""
        with self._lock:
            if self._fd is None:
                return
            try:
                os.fdatasync(self._fd)
                self.syncs += 1
            except OSError as exc:
                log.error("nonce journal %s: fdatasync failed: %s", self.path, exc)

    def _rewrite(self, live: Mapping[tuple[str, str], float]) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # the next append opens the new file
                self._fd = None
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"".join(_line(t, r, n) for (r, n), t in live.items()))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dirfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
        self._lines = len(live)


def _line(issued: float, role: str, nonce: str) -> bytes:
    return f"{issued:.3f} {role} {nonce}\n".encode("ascii")


def load_keys(directory: Path) -> dict[str, bytes]:
    """Every `<role>.key` in `directory` (64 hex digits); KeyFileError naming a bad file."""
    keys: dict[str, bytes] = {}
    for role in ROLES:
        path = directory / f"{role}.key"
        if not path.exists():
            continue
        if path.stat().st_mode & 0o077:
            raise KeyFileError(f"{path}: readable by group or others; chmod 600 it")
        text = path.read_text(encoding="ascii", errors="replace").strip()
        if not _HEX64.fullmatch(text):
            raise KeyFileError(f"{path}: expected 64 lower-case hex digits (a 32-byte key)")
        keys[role] = bytes.fromhex(text)
    return keys


def generate_key(path: Path) -> bytes:
    """Write a new random key to `path` (mode 0600); refuses to overwrite one."""
    key = secrets.token_bytes(KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.hex() + "\n")
    return key
