"""Safety rules broken on purpose, below the public API, to show the search finds each one.

Each mutant is (name, target object, attribute, replacement); `applied(mutant)` patches it in
for the duration of a `with` block. tests/test_safety_search.py runs the search against each
and expects a Violation; bench/safety_search.py reports how long the search took to find it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edge_runtime.core.authority import Rights
from edge_runtime.core.image import ProcessImage
from edge_runtime.safety.interlocks import Rule, SafetyLayer
from edge_runtime.safety.journal import LatchJournal, Restored

_apply = SafetyLayer._apply
_update_rule = SafetyLayer._update_rule


def _bare_failsafe(self: ProcessImage) -> None:
    """Finding 1 reintroduced: outputs to the io_map failsafe, not the safe image."""
    for name, info in self.outputs_info.items():
        self._outputs[name] = float(info.spec.failsafe or 0.0)


def _forces_last(self: SafetyLayer, image: ProcessImage, now: float, safe: Any) -> None:
    """Finding 3's rule broken: technician forces written after the interlocks."""
    _apply(self, image, now, safe)
    for point, value in self.forces.items():
        image.write(point, value)
        self.owner[point] = "force"


def _forget(self: LatchJournal) -> Restored:
    """Finding 1's restart half: the latch journal reads as a first start."""
    return Restored(status="first_start")


def _anyone(self: Rights, role: str, kind: str, output_class: str | None = None,
            point: str = "") -> None:
    """Finding 2 reintroduced: any role may do anything to any output."""
    return None


def _self_clearing(self: SafetyLayer, rule: Rule, value: bool | None, now: float) -> None:
    """A latched trip that clears by itself when its condition does (no reset)."""
    _update_rule(self, rule, value, now)
    st = self.states[rule.name]
    if st.latched and value is False:
        st.latched = st.engaged = False


def _no_fault_handler(self: SafetyLayer, image: ProcessImage, now: float, dt: float) -> None:
    """A safety layer that fails leaves control's outputs standing (no safe image)."""
    self._step(image, now)


MUTANTS: dict[str, tuple[Any, str, Any]] = {
    "fault_leaves_control_outputs": (SafetyLayer, "step", _no_fault_handler),
    "bare_failsafe": (ProcessImage, "stage_failsafe", _bare_failsafe),
    "forces_beat_trips": (SafetyLayer, "_apply", _forces_last),
    "latches_forgotten_at_restart": (LatchJournal, "load", _forget),
    "rights_unchecked": (Rights, "check", _anyone),
    "latch_clears_by_itself": (SafetyLayer, "_update_rule", _self_clearing),
}


@contextmanager
def applied(name: str) -> Iterator[None]:
    """The mutant `name` patched in for the block."""
    target, attr, replacement = MUTANTS[name]
    original = target.__dict__[attr]
    setattr(target, attr, replacement)
    try:
        yield
    finally:
        setattr(target, attr, original)
