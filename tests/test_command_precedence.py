"""Commands checked like a PLC checks them (issue 8, deliverable 9; findings 2 and 9): type and
range per point, precedence interlock > technician force > local operator hold > remote command
> automatic, and a release that releases only what its sender holds. Simulated time."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.core.commands import ForceOutput, ReleaseOutput, SetOutput
from edge_runtime.core.image import OutOfRange
from edge_runtime.federation.link_loss import LinkLossGuard
from edge_runtime.node import Node
from tests.test_rights import node, scan

pytestmark = pytest.mark.timeout(20)

KW = "battery.w_set_kw"
RUN = "pump1.control_word"
REMOTE = "mqtt.battery_control"


def audit(n: Node, count: int) -> list[tuple[bool, str]]:
    return [(a.accepted, a.reason) for a in list(n.commands.audit)[-count:]]


# --- type and range -----------------------------------------------------------------------------

def test_an_integer_register_refuses_a_fraction(tmp_path: Path) -> None:
    """Finding 9: 2.5 to pump1.control_word (uint16 bit field, scale 1) was rounded to 2 on the
    wire: run bit cleared, the pump stopped. Refused now, with the reason, the pump runs on."""
    n = node(tmp_path)
    scan(n)
    with pytest.raises(TypeError, match=r"pump1\.control_word: 2\.5 is not a whole number; "
                                        r"uint16 register with scale 1 takes integers"):
        n.image.check_output(RUN, 2.5)
    n.commands.submit(SetOutput(RUN, 2.5))
    n.commands.submit(ForceOutput(RUN, 0.5, role="infrastructure_manager"))
    scan(n)
    assert [ok for ok, _ in audit(n, 2)] == [False, False]
    assert all("not a whole number" in why for _, why in audit(n, 2))
    assert n.image.output(RUN) == 1.0  # still running
    n.image.check_output(RUN, 3)  # whole numbers in range pass, float or int
    n.image.check_output(RUN, 2.0)
    with pytest.raises(OutOfRange):
        n.image.check_output(RUN, 4.0)
    # a scaled register keeps its resolution: 12.345 % is a legal speed reference
    n.image.check_output("pump1.speed_ref", 12.345)
    n.image.check_output(KW, -12.5)  # int32, scale 0.001: 1 W per count


# --- precedence ---------------------------------------------------------------------------------

def test_a_remote_command_never_replaces_a_local_hold(tmp_path: Path) -> None:
    """Finding 9: a remote set_output replaced the local hold, and the link-loss release then
    dropped it for good. The local hold stands through both now."""
    n = node(tmp_path)
    guard = LinkLossGuard(n, after_s=1.0)
    n.engine.observers.append(guard)
    guard.link(True)
    n.commands.submit(SetOutput(KW, 20.0, source="hmi"))  # the operator at the cabinet
    scan(n)
    n.commands.submit(SetOutput(KW, -300.0, source=REMOTE, role="grid_operator"))
    scan(n)
    assert audit(n, 1) == [(False, "precedence: battery.w_set_kw is held by a local operator "
                                   "(hmi); a remote command never replaces a local hold")]
    assert n.image.output(KW) == 20.0 and n.manual.holds() == {KW: "hmi"}
    guard.link(False)
    for _ in range(15):  # 1.5 s: the site link is declared lost, site holds released
        scan(n)
    assert guard.lost
    assert n.manual.holds() == {KW: "hmi"} and n.image.output(KW) == 20.0


def test_local_wins_over_remote_and_automatic(tmp_path: Path) -> None:
    n = node(tmp_path)
    n.commands.submit(SetOutput(KW, -100.0, source=REMOTE, role="grid_operator"))
    scan(n)
    assert n.manual.holds() == {KW: REMOTE} and n.image.output(KW) == -100.0
    n.commands.submit(SetOutput(KW, 5.0, source="hmi"))  # local replaces remote
    scan(n)
    assert n.manual.holds() == {KW: "hmi"} and n.image.output(KW) == 5.0


def test_a_force_beats_a_local_hold(tmp_path: Path) -> None:
    n = node(tmp_path)
    n.commands.submit(SetOutput(KW, 5.0, source="hmi"))
    n.commands.submit(ForceOutput(KW, 42.0, role="infrastructure_manager"))
    scan(n)
    assert n.image.output(KW) == 42.0  # the safety layer applies forces after every hold


# --- a release releases only what its sender holds ----------------------------------------------

def test_a_remote_release_never_drops_a_local_hold(tmp_path: Path) -> None:
    """Finding 2: an MQTT release_output carried no holder and dropped a local operator's hold."""
    n = node(tmp_path)
    n.commands.submit(SetOutput(KW, 20.0, source="hmi"))
    scan(n)
    n.commands.submit(ReleaseOutput(KW, source=REMOTE, role="grid_operator"))
    scan(n)
    assert audit(n, 1) == [(False, "precedence: battery.w_set_kw is held by a local operator "
                                   "(hmi); a remote command never releases a local hold")]
    assert n.manual.holds() == {KW: "hmi"}


def test_a_remote_release_releases_only_its_own_roles_hold(tmp_path: Path) -> None:
    n = node(tmp_path)
    n.commands.submit(SetOutput(KW, -100.0, source=REMOTE, role="grid_operator"))
    scan(n)
    n.commands.submit(ReleaseOutput(KW, source="mqtt.grid_signal",
                                    role="infrastructure_manager"))
    scan(n)
    assert audit(n, 1) == [(False, "precedence: battery.w_set_kw is held by grid_operator "
                                   "(mqtt.battery_control); a release releases only what its "
                                   "sender (infrastructure_manager) holds")]
    assert n.manual.holds() == {KW: REMOTE}
    n.commands.submit(ReleaseOutput(KW, source="mqtt.grid_signal", role="grid_operator"))
    scan(n)
    assert audit(n, 1) == [(True, "")] and n.manual.holds() == {}
    # the local operator may release anyone's hold
    n.commands.submit(SetOutput(KW, -100.0, source=REMOTE, role="grid_operator"))
    n.commands.submit(ReleaseOutput(KW, source="hmi"))
    scan(n)
    assert audit(n, 2) == [(True, ""), (True, "")] and n.manual.holds() == {}


def test_the_link_check_answers_before_the_scan(tmp_path: Path) -> None:
    """ManualOutputs.check is what a transport calls to answer its sender at once."""
    from edge_runtime.core.authority import Refused

    n = node(tmp_path)
    n.commands.submit(SetOutput(KW, 20.0, source="hmi"))
    scan(n)
    with pytest.raises(Refused, match=r"precedence: battery\.w_set_kw is held by a local"):
        n.manual.check(SetOutput(KW, 1.0, source=REMOTE, role="grid_operator"))
    with pytest.raises(Refused, match="rights: grid_operator may not set_output on class pump"):
        n.manual.check(SetOutput(RUN, 0.0, source="mqtt.grid_signal", role="grid_operator"))
    n.manual.check(SetOutput(KW, 1.0, source="hmi"))  # local: fine



def test_only_the_watchdogs_conditional_commands_skip_the_role(tmp_path: Path) -> None:
    """"link_loss" acts for the node itself only with held_by (on remote holds): a command
    that merely claims that source is checked like any remote one."""
    n = node(tmp_path)
    n.commands.submit(ForceOutput(KW, 1.0, role="", source="link_loss"))
    n.commands.submit(SetOutput(RUN, 0.0, source="link_loss"))
    scan(n)
    assert audit(n, 2) == [
        (False, "rights: a remote command (link_loss) must carry its role"),
        (False, "rights: a remote command (link_loss) must carry its role")]
    assert n.image.output(RUN) == 1.0
