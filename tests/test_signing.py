"""Signed command envelopes (edge_runtime/security/signing.py): HMAC-SHA256 per role."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.security.signing import (
    CommandVerifier,
    KeyFileError,
    NonceJournal,
    generate_key,
    load_keys,
    sign,
)

pytestmark = pytest.mark.timeout(10)

NOW = 1_800_000_000.0
GRID = bytes(range(32))
INFRA = bytes(range(32, 64))
COMMAND = {"PSWD_version": "1.0", "action": "set_output", "point": "battery.w_set_kw",
           "value": -200.0}


class Wall:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def verifier(wall: Wall | None = None, **kw: Any) -> CommandVerifier:
    return CommandVerifier({"grid_operator": GRID, "infrastructure_manager": INFRA},
                           node="rack-01", wall=wall or Wall(), **kw)


def signed(key: bytes = GRID, node: str = "rack-01", kind: str = "battery_control",
           role: str = "grid_operator", now: float = NOW, **extra: Any) -> dict[str, Any]:
    return sign(key, node, kind, {**COMMAND, **extra}, role=role, now=now)


def test_a_signed_command_is_accepted_once() -> None:
    v = verifier()
    doc = signed()
    assert v("battery_control", doc) is None
    assert v("battery_control", doc) == "nonce: already used (a replay)"
    assert v.refused == 1


@pytest.mark.parametrize(("change", "why"), [
    (lambda d: d.update(value=-1000.0), "signature: does not match"),
    (lambda d: d.update(point="battery.w_set_ena"), "signature: does not match"),
    (lambda d: d.update(signature="0" * 64), "signature: does not match"),
    (lambda d: d.update(signature="XYZ"), "signature: required"),
    (lambda d: d.pop("signature"), "signature: required"),
    (lambda d: d.update(role="workload_operator"), "role: workload_operator may not send"),
    (lambda d: d.update(role="root"), "role: expected one of"),
])
def test_altered_or_forged_commands_are_refused(change: Any, why: str) -> None:
    doc = signed()
    change(doc)
    assert (verifier()("battery_control", doc) or "").startswith(why)


def test_a_command_signed_for_another_node_or_kind_is_refused() -> None:
    v = verifier()
    assert v("battery_control", signed(node="rack-02")).startswith(  # type: ignore[union-attr]
        "signature: does not match")
    # grid_signal is allowed to the grid operator too, but this one was signed as battery
    assert v("grid_signal", signed()).startswith("signature: does not match")  # type: ignore[union-attr]


def test_roles_are_held_to_their_kinds_and_their_own_keys() -> None:
    v = verifier()
    # the grid operator's key does not make thermal commands
    assert v("thermal_control", signed(kind="thermal_control")) == (
        "role: grid_operator may not send thermal_control (allowed: infrastructure_manager)")
    # claiming another role with the wrong key fails the MAC
    forged = signed(key=GRID, role="infrastructure_manager", kind="thermal_control")
    assert v("thermal_control", forged).startswith("signature: does not match")  # type: ignore[union-attr]
    good = signed(key=INFRA, role="infrastructure_manager", kind="thermal_control")
    assert v("thermal_control", good) is None
    only_grid = CommandVerifier({"grid_operator": GRID}, node="rack-01", wall=Wall())
    assert only_grid("thermal_control", good) == "role: this node holds no key for " \
                                                 "infrastructure_manager"


@pytest.mark.parametrize(("skew", "why"), [
    (-31.0, "timestamp: issued 31.0 s ago by this node's clock, more than 30 s (expired, "
            "or a clock is wrong)"),
    (31.0, "timestamp: issued 31.0 s in the future by this node's clock, more than 30 s "
           "(a clock is wrong)")])
def test_expired_and_future_commands_are_refused(skew: float, why: str) -> None:
    assert verifier(max_age_s=30.0)("battery_control", signed(now=NOW + skew)) == why


def test_the_nonce_must_have_a_form_and_the_cache_is_bounded() -> None:
    wall = Wall()
    v = verifier(wall, max_nonces=3)
    bad = sign(GRID, "rack-01", "battery_control", COMMAND, role="grid_operator", now=NOW,
               nonce="short")
    assert v("battery_control", bad) == ("nonce: required, 8-64 characters of letters, "
                                         "digits, _ . : -")
    for _ in range(3):
        assert v("battery_control", signed()) is None
    assert v("battery_control", signed()) == ("nonce: too many commands inside the replay "
                                              "window; refused for safety")
    wall.t = NOW + 61.0  # past twice the window: the old nonces are forgotten
    assert v("battery_control", signed(now=wall.t)) is None


def test_keys_are_made_private_and_loaded_by_role(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "grid_operator.key")
    assert os.stat(tmp_path / "grid_operator.key").st_mode & 0o777 == 0o600
    assert load_keys(tmp_path) == {"grid_operator": key}
    with pytest.raises(FileExistsError):
        generate_key(tmp_path / "grid_operator.key")
    loose = tmp_path / "infrastructure_manager.key"
    loose.write_text("00" * 32)
    loose.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by group or others; chmod 600 it"):
        load_keys(tmp_path)
    loose.chmod(0o600)
    loose.write_text("not hex")
    with pytest.raises(KeyFileError, match="expected 64 lower-case hex digits"):
        load_keys(tmp_path)


def test_a_verifier_needs_keys() -> None:
    with pytest.raises(ValueError, match="no command keys"):
        CommandVerifier({}, node="rack-01", wall=Wall())


# --- the replay cache survives a restart (issue 8, finding 9) -----------------------------------

def test_a_command_captured_before_a_restart_is_refused_after_it(tmp_path: Path) -> None:
    journal = tmp_path / "state" / "nonces.log"
    before = verifier(journal=journal)
    doc = signed()
    assert before("battery_control", doc) is None
    after = verifier(Wall(NOW + 5.0), journal=journal)  # a new process, same state dir
    assert after("battery_control", doc) == "nonce: already used (a replay)"
    assert after("battery_control", signed(now=NOW + 5.0)) is None  # fresh ones still pass
    assert journal.stat().st_mode & 0o777 == 0o600


def test_a_torn_journal_line_is_ignored_and_the_rest_kept(tmp_path: Path) -> None:
    journal = tmp_path / "nonces.log"
    first, second = signed(), signed()
    v = verifier(journal=journal)
    assert v("battery_control", first) is None and v("battery_control", second) is None
    with journal.open("ab") as f:  # power cut in the middle of a third append
        f.write(b"1800000000.000 grid_oper")
    again = verifier(journal=journal)
    assert again("battery_control", first) == "nonce: already used (a replay)"
    assert again("battery_control", second) == "nonce: already used (a replay)"
    journal.write_bytes(b"\x00\xff garbage\n" + journal.read_bytes())
    assert verifier(journal=journal)("battery_control", first) == (
        "nonce: already used (a replay)")


def test_the_journal_stays_bounded(tmp_path: Path) -> None:
    journal = NonceJournal(tmp_path / "nonces.log", slack=20)
    live: dict[tuple[str, str], float] = {}
    for i in range(200):  # a live window of at most 10 nonces
        live[("grid_operator", f"nonce-{i:04d}")] = NOW + i
        if len(live) > 10:
            del live[next(iter(live))]
        journal.append(NOW + i, "grid_operator", f"nonce-{i:04d}", live=live)
    lines = (tmp_path / "nonces.log").read_bytes().count(b"\n")
    assert lines <= 2 * 10 + 20 + 1, lines
    kept = {(role, nonce) for _, role, nonce in NonceJournal(tmp_path / "nonces.log").load()}
    assert set(live) <= kept  # the live window always survives a rewrite
    assert not list(tmp_path.glob("*.tmp"))


def test_an_unwritable_journal_refuses_rather_than_forget(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    wall = Wall()
    v = verifier(wall, journal=blocker / "nonces.log")  # its directory is a file
    # unreadable at start: whatever was issued before then may have been accepted already
    assert v("battery_control", signed()) == ("nonce: the replay journal was unreadable at "
                                              "start; a command issued before it is refused "
                                              "for safety")
    wall.t = NOW + 1.0  # issued after the start, but it cannot be recorded: refused too
    why = v("battery_control", signed(now=wall.t))
    assert why is not None and why.startswith("nonce: the replay journal cannot be written")


# --- the A.1 kinds: workload (to one node) and prepare (site-wide) ------------------------------

A1 = {"message_type": "workload_announcement", "timestamp": "2020-01-01T00:00:00Z",
      "workload_id": "w-1"}


def test_workload_kinds_keep_the_announcements_timestamp() -> None:
    v = CommandVerifier({"infrastructure_manager": INFRA}, node="rack-01", site="s1",
                        wall=Wall())
    doc = sign(INFRA, "rack-01", "workload", A1, role="infrastructure_manager", now=NOW)
    assert doc["timestamp"] == A1["timestamp"] and "signed_at" in doc
    assert v("workload", doc) is None
    # prepare names the whole site, not one node: one signature for every node
    prep = sign(INFRA, "s1/*", "prepare", A1, role="infrastructure_manager", now=NOW)
    assert v("prepare", prep) is None
    other_site = sign(INFRA, "s2/*", "prepare", A1, role="infrastructure_manager", now=NOW)
    assert (v("prepare", other_site) or "").startswith("signature: does not match")
    stale = sign(INFRA, "rack-01", "workload", A1, role="infrastructure_manager", now=NOW - 60)
    assert (v("workload", stale) or "").startswith("signed_at: issued 60.0 s ago")
    grid = CommandVerifier({"grid_operator": GRID}, node="rack-01", site="s1", wall=Wall())
    assert grid("prepare", sign(GRID, "s1/*", "prepare", A1, role="grid_operator", now=NOW)) \
        == "role: grid_operator may not send prepare (allowed: infrastructure_manager)"


def test_the_journal_never_makes_the_scan_wait_on_the_disk(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """append() returns before the disk syncs (a 0.5 s fdatasync, as fuzzing measured on a
    busy disk, stalled the 10 ms scan); the line is written at once, so a process killed the
    next instant still finds it; the syncer thread makes it durable within sync_s."""
    synced = threading.Event()
    real = os.fdatasync

    def slow_sync(fd: int) -> None:
        time.sleep(0.5)
        real(fd)
        synced.set()

    monkeypatch.setattr(os, "fdatasync", slow_sync)
    journal = NonceJournal(tmp_path / "nonces.log", sync_s=0.01)
    t0 = time.perf_counter()
    for i in range(20):
        journal.append(1_700_000_000.0 + i, "grid_operator", f"nonce-{i:04d}", live={})
    assert time.perf_counter() - t0 < 0.2  # no append waited on a sync
    assert len(NonceJournal(tmp_path / "nonces.log").load()) == 20  # already in the file
    assert synced.wait(5.0) and journal.syncs >= 1
