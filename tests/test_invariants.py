"""The invariant checker catches what it is there to catch (a checker that never fires proves
nothing): each invariant broken on purpose, below the safety layer's API."""

from __future__ import annotations

from types import MappingProxyType

from edge_runtime.core.points import Quality, Sample
from edge_runtime.safety.interlocks import Action, Rule, SafetyLayer
from edge_runtime.safety.invariants import InvariantChecker
from edge_runtime.safety.journal import Restored
from edge_runtime.safety.limits import Compare
from edge_runtime.safety.watchdog import Watchdog
from tests.fakes import shipped_image

LEAK = Rule("leak_isolate", Compare("leak.leak_state", "==", 1.0), Action.ISOLATE,
            MappingProxyType({"pump1.control_word": 0.0}), latch=True)


class Rig:
    def __init__(self, restored: Restored | None = None) -> None:
        self.image, self.live = shipped_image({"pump1": "cdu_pump_vfd", "leak": "leak_detector"})
        self.safety = SafetyLayer([LEAK], startup_s=0.0)
        self.watchdog = Watchdog(0.5, lambda reason, thread: None)
        self.safety.start(self.image, self.watchdog)
        if restored is not None:
            self.safety.restored = restored
        self.checker = InvariantChecker(self.safety, self.image, period_s=0.1)
        self.now = 0.0
        self.leak(0)

    def leak(self, state: int) -> None:
        for point in self.image.inputs_info:
            self.live[point] = Sample(0.0, Quality.GOOD, self.now)
        self.live["leak.leak_state"] = Sample(float(state), Quality.GOOD, self.now)

    def scan(self, tamper: bool = False) -> list[str]:
        self.now += 0.1
        self.image.latch()
        self.image.write("pump1.control_word", 1.0)  # control wants the pump running
        self.image.write("pump1.speed_ref", 40.0)
        self.safety.step(self.image, self.now, 0.1)
        if tamper:  # something wrote after the safety layer's last word
            self.image.write("pump1.control_word", 1.0)
        return self.checker.check(self.now)


def test_a_clean_isolation_and_an_entitled_reset_pass() -> None:
    rig = Rig()
    assert rig.scan() == []
    rig.leak(1)
    assert rig.scan() == [] and rig.image.output("pump1.control_word") == 0.0
    rig.leak(0)
    assert rig.scan() == [] and rig.image.output("pump1.control_word") == 0.0  # latched
    rig.safety.reset("infrastructure_manager", "leak_isolate")
    assert rig.scan() == [] and rig.image.output("pump1.control_word") == 1.0


def test_isolation_not_on_the_outputs_is_caught() -> None:
    rig = Rig()
    rig.leak(1)
    assert any("staged 1.0, safe image 0.0" in v for v in rig.scan(tamper=True))


def test_a_force_beating_an_isolation_is_caught() -> None:
    rig = Rig()
    rig.leak(1)
    rig.scan()
    rig.safety.owner["pump1.control_word"] = "force"  # as if the force had the last word
    found = rig.checker.check(rig.now)
    assert any("force beats isolate on pump1.control_word" in v for v in found)


def test_a_latch_cleared_without_an_entitled_reset_is_caught() -> None:
    rig = Rig()
    rig.leak(1)
    rig.scan()
    rig.leak(0)
    rig.safety.reset("workload_operator", "leak_isolate")  # refused: not entitled
    st = rig.safety.states["leak_isolate"]
    st.latched = st.engaged = False  # ... and cleared anyway, by a bug
    assert any("latch cleared without an accepted reset" in v for v in rig.scan())


def test_watchdog_latch_off_the_safe_image_is_caught() -> None:
    rig = Rig()
    rig.scan()
    rig.watchdog.restore("test")
    found = rig.scan()  # the scan engine would stage the safe image; this rig does not
    assert any("watchdog latched: pump1.speed_ref = 40, safe image 100" in v for v in found)


def test_a_journaled_latch_missing_after_restart_is_caught() -> None:
    rig = Rig(Restored(frozenset({"leak_isolate"}), False, "ok"))
    assert any("journaled latch not engaged" in v for v in rig.scan())
