"""Safety invariants, checked after every scan by tests (scenarios, property searches).

What must hold whatever path the plant and the operators took (ARCHITECTURE section 2):
1. an engaged trip or isolation is on the outputs within one scan of being raised, at the safe
   image's value (the most restrictive of every engaged rule), and stays there;
2. a latch (a rule's, or the watchdog's) clears only by an accepted reset from a role the rule
   names, never by itself, a restart or a command from anyone else;
3. a force never beats a trip, an isolation or a protection override;
4. after a restart every journaled latch is engaged at the first scan, before the first write;
5. while the watchdog is latched every output is at the safe image; device comms-loss
   registers always hold the safe image.

`InvariantChecker(safety, image).check(now)` returns the violations of that scan as text; the
checker keeps the little history it needs (what was latched, the reset log position).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from edge_runtime.core.image import ProcessImage
from edge_runtime.safety.interlocks import (
    WATCHDOG,
    WATCHDOG_RESET_ROLES,
    Action,
    Reaction,
    Rule,
    SafetyLayer,
)
from edge_runtime.safety.limits import EPS

TOL = 1e-6
_DRIVES = (Action.TRIP, Action.ISOLATE)


def _due(rule: Rule, engaged_at: float, now: float) -> list[str]:
    """Outputs the rule drives by now (all of them unless a graceful shutdown is stepping)."""
    outs = list(rule.outputs)
    if rule.reaction is not Reaction.GRACEFUL_SHUTDOWN:
        return outs
    return [p for k, p in enumerate(outs) if now - engaged_at >= k * rule.step_s - EPS]


class InvariantChecker:
    """Checks one node's safety invariants after each of its scans."""

    def __init__(self, safety: SafetyLayer, image: ProcessImage, *, period_s: float,
                 wire: Callable[[str], float | None] | None = None,
                 wire_tol: float = 0.011) -> None:
        self.safety, self.image, self.period_s = safety, image, period_s
        self.wire, self.wire_tol = wire, wire_tol  # value on the device (None: unknown)
        self._latched: set[str] = set()
        self._watchdog = False
        self._resets = len(safety.reset_log)
        self.scans = 0
        self.violations: list[str] = []

    def check(self, now: float) -> list[str]:
        """Violations of this scan (also appended to self.violations)."""
        s, out = self.safety, self.image.outputs
        safe = s.safe.get().values
        found: list[str] = []
        resets = s.reset_log[self._resets:]
        self._resets = len(s.reset_log)
        if self.scans == 0:
            found += self._restart()
        self.scans += 1
        latched_now: set[str] = set()
        for rule in s.rules:
            st = s.states[rule.name]
            if st.latched:
                latched_now.add(rule.name)
            late = now - st.asserted_at - rule.reaction_delay_s
            if (st.asserted and rule.acts and not st.engaged
                    and late > self.period_s + EPS):
                found.append(f"{rule.name}: raised {late:.3f} s ago but not engaged")
            if not st.engaged:
                continue
            for point in _due(rule, st.engaged_at, now):
                if rule.action in _DRIVES:
                    found += self._on_outputs(rule.name, point, safe, out)
                if rule.action in (*_DRIVES, Action.OVERRIDE) and s.owner.get(point) == "force":
                    found.append(f"{rule.name}: force beats {rule.action} on {point}")
        for name in sorted(self._latched - latched_now):
            rule = next(r for r in s.rules if r.name == name)
            if not any(r == name and ok and role in rule.reset_roles
                       for r, role, ok in resets):
                found.append(f"{name}: latch cleared without an accepted reset by "
                             f"{' or '.join(rule.reset_roles)}")
        self._latched = latched_now
        tripped = s.watchdog is not None and s.watchdog.tripped
        if self._watchdog and not tripped and not any(
                r == WATCHDOG and ok and role in WATCHDOG_RESET_ROLES for r, role, ok in resets):
            found.append("watchdog: latch cleared without an accepted reset")
        self._watchdog = tripped
        if tripped:
            found += [f"watchdog latched: {p} = {v:g}, safe image {safe[p]:g}"
                      for p, v in out.items() if p in safe and abs(v - safe[p]) > TOL]
        rules = s._out_rules
        for register in rules.mirrors if rules is not None else ():
            if abs(out.get(register, safe[register]) - safe[register]) > TOL:
                found.append(f"comms-loss register {register} = {out[register]:g}, safe image "
                             f"{safe[register]:g}")
        self.violations += [f"t={now:.2f}: {v}" for v in found]
        return found

    def _on_outputs(self, name: str, point: str, safe: Mapping[str, float],
                    out: Mapping[str, float]) -> list[str]:
        found = []
        want = safe.get(point)
        if want is None or abs(out.get(point, want) - want) > TOL:
            found.append(f"{name}: {point} staged {out.get(point)!r}, safe image {want!r}")
        device = point.split(".", 1)[0]
        if self.wire is not None and want is not None and device not in self.safety.lost:
            on_wire = self.wire(point)
            if on_wire is not None and abs(on_wire - want) > self.wire_tol:
                found.append(f"{name}: {point} on the wire {on_wire:g}, safe image {want:g}")
        return found

    def _restart(self) -> list[str]:
        s = self.safety
        restored = s.restored
        if restored is None or restored.status == "first_start":
            return []
        latching = {r.name for r in s.rules if r.latch and r.acts}
        want = latching if restored.fail_safe else set(restored.latched) & latching
        found = [f"{n}: journaled latch not engaged at the first scan after a restart"
                 for n in sorted(want) if not s.states[n].engaged]
        if (restored.watchdog or restored.fail_safe) and s.watchdog is not None \
                and not s.watchdog.tripped:
            found.append("watchdog: journaled latch not engaged after a restart")
        return found
