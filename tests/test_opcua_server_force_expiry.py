"""Force expiry and reason (issue 12): a force with `expires_s` is released by the safety layer
on its scan clock and audited; a force never beats a trip. Simulated time, no OPC UA."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.core.commands import ForceOutput
from tests.test_rights import node, scan

pytestmark = pytest.mark.timeout(20)

SPEED = "pump1.speed_ref"
IM = "infrastructure_manager"


def test_a_force_with_an_expiry_is_released_on_the_scan_clock(tmp_path: Path) -> None:
    n = node(tmp_path)
    scan(n)
    n.commands.submit(ForceOutput(SPEED, 42.0, role=IM, source="opcua.bms", expires_s=0.5,
                                  reason="valve test"))
    scan(n)  # applied in this scan: the deadline is this scan's time + 0.5 s
    assert n.image.output(SPEED) == 42.0
    assert n.image.output_quality[SPEED].value == "forced"
    assert n.safety.get_status()["force_reasons"] == {SPEED: "valve test"}
    assert n.safety.get_status()["force_expiry"][SPEED] == pytest.approx(0.5)
    for _ in range(4):  # 0.4 s later: still forced
        scan(n)
        assert n.image.output(SPEED) == 42.0
    scan(n)  # 0.5 s: released before the outputs are decided
    assert SPEED not in n.safety.forces
    assert n.image.output_quality[SPEED].value == "good"  # no longer marked forced
    expired = [e for e in n.events.recent(50) if e.code == "force_expired"]
    assert len(expired) == 1 and expired[0].source == f"force.{SPEED}"
    assert any("valve test" in e.message and "for 0.5 s" in e.message
               for e in n.events.recent(50) if e.code == "force")


def test_a_force_without_expiry_stays_and_a_bad_expiry_is_refused(tmp_path: Path) -> None:
    n = node(tmp_path)
    scan(n)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        n.commands.submit(ForceOutput(SPEED, 42.0, role=IM, expires_s=bad))
    scan(n)
    refused = list(n.commands.audit)[-4:]
    assert [r.accepted for r in refused] == [False] * 4
    assert all("expires_s must be a positive number" in r.reason for r in refused)
    assert SPEED not in n.safety.forces
    n.commands.submit(ForceOutput(SPEED, 42.0, role=IM))
    for _ in range(50):
        scan(n)
    assert n.safety.forces == {SPEED: 42.0}
    assert n.safety.get_status()["force_expiry"] == {}


def test_a_new_force_replaces_the_old_expiry_and_a_release_clears_it(tmp_path: Path) -> None:
    n = node(tmp_path)
    scan(n)
    n.commands.submit(ForceOutput(SPEED, 42.0, role=IM, expires_s=0.2))
    scan(n)
    n.commands.submit(ForceOutput(SPEED, 43.0, role=IM))  # no expiry now
    for _ in range(5):
        scan(n)
    assert n.safety.forces == {SPEED: 43.0}
    assert n.safety.force_deadlines == {}
