"""Declarative interlocks: the node's safety layer, run last in every scan.

One object (ControlBlock protocol, name "safety") evaluates every rule against the latched
image, then has the last word on the outputs, in rising priority: control's values ->
technician forces -> hold -> override -> trip -> isolate. Trips and isolations latch: they
stay after their condition clears until an authorised role resets them, and a reset is
refused while the condition is still present or cannot be evaluated. Each raise, clear,
engagement and reset attempt is one event; nothing is logged per scan.

Every scan it also derives the safe image (safety/safe_image.py: failsafes overlaid by the
engaged trips and isolations) and publishes it to the process image, the watchdog thread and
the drivers, so every path that drives outputs safe writes the same values. Latches are kept
in the latch journal (safety/journal.py) and re-engaged at start before the first write; the
watchdog latch is reset through reset("watchdog") like any latched rule. Start-up bypasses
(safety/bypass.py) hold covered interlocks and limit events back for a bounded time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from edge_runtime.config.schema import Limits
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import OutOfRange, ProcessImage, UnknownPoint
from edge_runtime.core.points import NEVER_READ, Quality, Sample
from edge_runtime.safety.bypass import Bypass, BypassConfig
from edge_runtime.safety.journal import LatchJournal, Restored
from edge_runtime.safety.limits import (
    EPS,
    CommsLost,
    Condition,
    Level,
    LimitMonitor,
    LimitTransition,
)
from edge_runtime.safety.redundancy import RedundancyGroup
from edge_runtime.safety.safe_image import OutputRules, SafeImage, SafeImageCell, compute
from edge_runtime.safety.watchdog import Watchdog

log = logging.getLogger(__name__)

DEFAULT_RESET_ROLE = "infrastructure_manager"
WATCHDOG = "watchdog"  # the name ResetTrip uses for the scan watchdog's latch
WATCHDOG_RESET_ROLES = (DEFAULT_RESET_ROLE,)
SAFE_IMAGE_OWNER = "safe_image"  # owner of comms-loss registers kept at the safe image
_RESTORED_AT = -1e9  # engaged_at of a latch restored at start: every graceful step is due
# What a point still unread after the start-up grace reads as: BAD, and no longer start-up.
NEVER_ANSWERED = Sample.bad("never read since start-up", 0.0)


class Action(StrEnum):
    """What an active rule does to the outputs."""

    ALARM = "alarm"  # event only
    HOLD = "hold"  # keep each output at its value from the scan before activation
    OVERRIDE = "override"  # write given values while active
    TRIP = "trip"  # failsafe (or given safe) values, latched
    ISOLATE = "isolate"  # a named set of values (close valves, stop pumps), latched


class Reaction(StrEnum):
    """How a trip / isolate is carried out (Redfish LeakDetector reaction types)."""

    NONE = "none"  # alarm only: the reaction is configured but disabled
    FORCE_OFF = "force_off"  # every output at once
    GRACEFUL_SHUTDOWN = "graceful_shutdown"  # outputs in the listed order, step_s apart


_PRIORITY = {Action.HOLD: 1, Action.OVERRIDE: 2, Action.TRIP: 3, Action.ISOLATE: 4}


@dataclass(frozen=True, slots=True)
class Rule:
    """One interlock: condition -> action on outputs (None value: the output's failsafe)."""

    name: str
    when: Condition
    action: Action
    outputs: Mapping[str, float | None] = field(default_factory=dict)
    latch: bool = False
    reset_roles: tuple[str, ...] = (DEFAULT_RESET_ROLE,)
    severity: Severity = Severity.ALARM
    delay_s: float = 0.0  # the condition must persist this long before it is raised
    reaction: Reaction = Reaction.FORCE_OFF
    reaction_delay_s: float = 0.0  # raised -> outputs acted on
    step_s: float = 1.0  # graceful_shutdown: time between successive outputs
    message: str = ""

    @property
    def acts(self) -> bool:
        """True when the rule drives outputs (not just an alarm)."""
        return self.action is not Action.ALARM and self.reaction is not Reaction.NONE


@dataclass(slots=True)
class RuleState:
    """Run-time state of one rule."""

    present: bool = False  # last known value of the condition
    unknown: bool = False  # the condition could not be evaluated this scan
    announced: bool = False  # the "cannot evaluate" event went out (not during start-up)
    since: float | None = None
    asserted: bool = False
    asserted_at: float = 0.0
    engaged: bool = False
    engaged_at: float = 0.0
    latched: bool = False
    held: dict[str, float] = field(default_factory=dict)
    raised: int = 0


@dataclass(frozen=True, slots=True)
class ResetOutcome:
    """One reset attempt on one rule."""

    rule: str
    accepted: bool
    reason: str = ""


class SafetyLayer:
    """Limits, redundancy, interlock rules and forces of one node; the scan's last word."""

    name = "safety"

    def __init__(
        self,
        rules: Sequence[Rule] = (),
        *,
        limits: Mapping[str, Limits] | None = None,
        groups: Sequence[RedundancyGroup] = (),
        substitutes: Mapping[str, str] | None = None,
        events: EventLog | None = None,
        wall: Callable[[], float] | None = None,
        startup_s: float = 10.0,
        journal: LatchJournal | None = None,
        bypasses: Sequence[BypassConfig] = (),
    ) -> None:
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate interlock names in {names}")
        if WATCHDOG in names:
            raise ValueError(f"{WATCHDOG!r} names the scan watchdog's latch, not a rule")
        self.rules = list(rules)
        self.states = {r.name: RuleState() for r in rules}
        self.monitors = {p: LimitMonitor(p, lim) for p, lim in (limits or {}).items()}
        self.groups = {g.cfg.out_name: g for g in groups}
        self.substitutes = dict(substitutes or {})
        self.events = events if events is not None else EventLog()
        self._wall = wall
        # Drivers poll asynchronously: before their first answer every input is NEVER_READ,
        # which must not latch trips at every boot. After `startup_s` it counts as BAD.
        self.startup_s = startup_s
        self._t0: float | None = None
        self.starting = True
        self._read_unread = False  # the rule being evaluated read a not-yet-polled input
        self.forces: dict[str, float] = {}
        # Forces with an expiry: output -> scan time it ends (its ttl until the next scan
        # fixes the deadline on the scan clock), and why each force was made.
        self.force_deadlines: dict[str, float] = {}
        self._force_ttl: dict[str, float] = {}
        self.force_reasons: dict[str, str] = {}
        self.owner: dict[str, str] = {}  # output -> what set it last this scan
        self._image: ProcessImage | None = None
        self._now = 0.0
        self._devices: dict[str, list[str]] | None = None
        self._seen: set[str] = set()
        self.lost: set[str] = set()
        self._watched = {r.when.device for r in rules if isinstance(r.when, CommsLost)}
        self._substituting: set[str] = set()
        self._overruled: set[str] = set()
        self._forced_marked: set[str] = set()
        self._faults: set[str] = set()
        self._last_out: dict[str, float] = {}
        self.counts = {"raised": 0, "engaged": 0, "resets": 0, "refused_resets": 0}
        # Safe image, latch journal, watchdog latch, operator holds, bypasses.
        self.safe = SafeImageCell()
        self._out_rules: OutputRules | None = None
        self.journal = journal
        self._journal_due = False
        self.restored: Restored | None = None
        self.watchdog: Watchdog | None = None
        self.held: Mapping[str, float] = {}  # operator holds (ManualOutputs.manual)
        self._hold_overridden: set[str] = set()
        self.bypasses = [Bypass(c) for c in bypasses]
        self._bypassed_rules: set[str] = set()
        self._bypassed_limits: set[str] = set()
        self._held_back: dict[tuple[str, Level], LimitTransition] = {}
        # Every reset attempt: (rule or "watchdog", role, accepted), for the invariant checker.
        self.reset_log: list[tuple[str, str, bool]] = []

    # -- start ------------------------------------------------------------------------------
    def start(self, image: ProcessImage, watchdog: Watchdog | None = None,
              drivers: Mapping[str, object] | None = None) -> Restored | None:
        """Before the first scan: re-engage journaled latches, publish the first safe image,
        stage it as the outputs, hand it to the drivers' hold expiry. Returns the journal's
        verdict (None without a journal)."""
        self.watchdog = watchdog
        self.prepare(image)
        if self.journal is not None:
            self.restored = self.journal.load()
            self._restore(self.restored)
        elif any(r.latch and r.acts for r in self.rules):
            log.warning("latched trips are not journaled (no [safety] state_dir): a restart "
                        "would forget them")
        self._publish(image)
        image.stage_failsafe()  # the output stage starts from the safe image
        for driver in (drivers or {}).values():
            if hasattr(driver, "safe_source"):  # max-hold expiry writes the safe image
                setattr(driver, "safe_source", image.safe_values)  # noqa: B010
        if watchdog is not None and self.journal is not None:
            watchdog.listeners.append(lambda _tripped: self._persist())
        self._persist()
        return self.restored

    def prepare(self, image: ProcessImage) -> None:
        """Learn the outputs' failsafes, safe directions and comms-loss registers."""
        self._image = image
        self._out_rules = OutputRules.from_specs(
            {n: i.spec for n, i in image.outputs_info.items()})
        self.safe.publish(SafeImage(seq=self.safe.get().seq))  # derive afresh on these outputs

    def _restore(self, restored: Restored) -> None:
        latching = [r for r in self.rules if r.latch and r.acts]
        if restored.fail_safe:
            names = {r.name for r in latching}
            self._emit("safety.journal", Severity.CRITICAL,
                       f"latch journal {restored.status} ({restored.detail}): every latch "
                       f"assumed engaged until reset: {', '.join(sorted(names)) or 'none'}"
                       f"{' and the watchdog' if self.watchdog is not None else ''}",
                       "journal_fail_safe")
            watchdog = True
        else:
            names, watchdog = set(restored.latched), restored.watchdog
            for gone in sorted(names - {r.name for r in latching}):
                self._emit("safety.journal", Severity.WARNING,
                           f"journaled latch {gone!r} is no longer a latching rule: dropped",
                           "journal_unknown_latch")
        for rule in latching:
            if rule.name in names:
                st = self.states[rule.name]
                st.engaged = st.latched = True
                st.engaged_at = _RESTORED_AT
                self._emit(f"interlock.{rule.name}", rule.severity,
                           f"{rule.action} re-engaged at start (latched before the restart): "
                           + ", ".join(rule.outputs), "latch_restored")
        if watchdog and self.watchdog is not None:
            self.watchdog.restore("latched before the restart" if not restored.fail_safe
                                  else f"latch journal {restored.status}")
            self._emit(WATCHDOG, Severity.CRITICAL, "watchdog latch re-engaged at start: "
                       "outputs held at the safe image until reset", "latch_restored")

    def _persist(self) -> None:
        if self.journal is None:
            return
        latched = [n for n, st in self.states.items() if st.latched]
        tripped = self.watchdog is not None and self.watchdog.tripped
        if not self.journal.save(latched, tripped):
            self._fault("safety.journal", f"latch journal not written: {self.journal.last_error}")

    # -- the scan ---------------------------------------------------------------------------
    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Evaluate everything on this scan's inputs, then override the outputs."""
        try:
            self._step(image, now)
        except Exception:
            # Safety that cannot judge the plant must not leave control's outputs standing:
            # the safe image of this scan if it can still be derived, else the last one.
            try:
                self._publish(image)
            finally:
                image.stage_failsafe()
            raise  # the scan engine reports it (once) and runs on

    def _step(self, image: ProcessImage, now: float) -> None:
        self._image, self._now = image, now
        if self._t0 is None:
            self._t0 = now
        self.starting = now - self._t0 < self.startup_s - EPS
        if self._out_rules is None:
            self.prepare(image)
        self._expire_forces(now)
        self._begin_bypasses(image, now)
        self._check_holds(image)
        if self._devices is None:
            self._devices = {d: [] for d in self._watched}
            for name, info in image.inputs_info.items():
                if info.device in self._devices:
                    self._devices[info.device].append(name)
        # Config checks every name; a mismatched image costs one group or point, not all.
        for name in self.groups:
            try:
                self.raw(name)  # votes the group unless the estimation phase already did
            except UnknownPoint as exc:
                self._fault(f"redundancy.{name}", str(exc))
        for point, monitor in self.monitors.items():
            try:
                transitions = monitor.update(self.sample(point), now)
            except UnknownPoint as exc:
                self._fault(f"limit.{point}", str(exc))
                continue
            for t in transitions:
                if point in self._bypassed_limits:  # held back; raised when the bypass ends
                    if t.raised:
                        self._held_back[(point, t.level)] = t
                    else:
                        self._held_back.pop((point, t.level), None)
                    continue
                self._emit(f"limit.{point}", t.severity, t.message,
                           "limit" if t.raised else "limit_clear")
        self._update_comms(image)
        for rule in self.rules:
            self._read_unread = False
            try:
                value = rule.when.evaluate(self)
            except UnknownPoint as exc:  # config checks names; a bug must not stop the rest
                self._fault(f"rule.{rule.name}", str(exc))
                value = None
            self._update_rule(rule, value, now)
        safe = self._publish(image)
        self._apply(image, now, safe)
        self._last_out = dict(image.outputs)
        self._confirm_bypasses(now)
        if self._journal_due:  # new latches: durable before the scan hands its outputs over
            self._journal_due = False
            self._persist()

    def _publish(self, image: ProcessImage) -> SafeImage:
        """Derive this scan's safe image and hand it over (process image, watchdog, drivers)."""
        rules = self._out_rules
        if rules is None:
            self.prepare(image)
            rules = self._out_rules
            assert rules is not None
        engaged = tuple(r for r in self.rules if self.states[r.name].engaged
                        and r.action in (Action.TRIP, Action.ISOLATE))
        prev = self.safe.get()
        # Rules' outputs are static: the image only changes when the engaged set does.
        if not prev.values or prev.engaged != tuple(r.name for r in engaged):
            overlays = [(r.name, {p: rules.failsafe.get(p, 0.0) if v is None else v
                                  for p, v in r.outputs.items()}) for r in engaged]
            safe = compute(rules, overlays)
            prev = SafeImage(safe.values, safe.engaged, prev.seq + 1)
            self.safe.publish(prev)
        if image.safe_values() is not prev.values:
            image.publish_safe(prev.values)
        return prev

    def _begin_bypasses(self, image: ProcessImage, now: float) -> None:
        if not self.bypasses:
            return
        blocked = self._held_off()
        for bp in self.bypasses:
            self._announce(bp, bp.begin(image.outputs, self._last_out, now, blocked))
        self._covered()

    def _held_off(self) -> set[str]:
        """Outputs a force or an engaged rule (as of the last scan) holds at 0: written after
        control by this layer, so a start control commands there cannot go out."""
        safe = self.safe.get().values
        off = {p for p, v in self.forces.items() if v == 0.0}
        for rule in self.rules:
            st = self.states[rule.name]
            if not st.engaged or not rule.acts:
                continue
            for point, given in rule.outputs.items():
                if rule.action is Action.HOLD:
                    value = st.held.get(point, 0.0)
                elif rule.action in (Action.TRIP, Action.ISOLATE) or given is None:
                    value = safe.get(point, 0.0)
                else:
                    value = given
                if value == 0.0:
                    off.add(point)
        return off

    def _confirm_bypasses(self, now: float) -> None:
        if not self.bypasses:
            return
        for bp in self.bypasses:
            self._announce(bp, bp.confirm(self._last_out, now))
        self._covered()

    def _announce(self, bp: Bypass, what: str) -> None:
        c = bp.config
        covered = ", ".join((*c.interlocks, *c.limits))
        if what == "armed":
            self._emit(f"bypass.{c.name}", Severity.WARNING,
                       f"bypassed: {covered} for at most {c.max_s:g} s "
                       f"(armed by the start of {bp.armed_by})", "bypass")
        elif what == "ended":
            self._emit(f"bypass.{c.name}", Severity.INFO,
                       f"bypass of {covered} ended: {bp.end_reason}; the interlock acts "
                       "again", "bypass_end")

    def _covered(self) -> None:
        active = [bp.config for bp in self.bypasses if bp.active]
        self._bypassed_rules = {n for c in active for n in c.interlocks}
        limits = {p for c in active for p in c.limits}
        for key in [k for k in self._held_back if k[0] not in limits]:
            t = self._held_back.pop(key)  # bypass over: raise what it held back
            self._emit(f"limit.{t.point}", t.severity, f"{t.message} (held back by a "
                       "bypass, still present at its end)", "limit")
        self._bypassed_limits = limits

    def _check_holds(self, image: ProcessImage) -> None:
        # Control ran after the operator's hold was written: a block that overwrote it says so.
        out = image.outputs
        overridden = {p for p, v in self.held.items() if p in out and abs(out[p] - v) > 1e-9}
        for point in sorted(overridden - self._hold_overridden):
            self._emit(f"hold.{point}", Severity.WARNING,
                       f"operator hold {self.held[point]:g} overridden by a control block "
                       f"({out[point]:g})", "hold_overridden")
        self._hold_overridden = overridden

    def _update_comms(self, image: ProcessImage) -> None:
        for device, names in (self._devices or {}).items():
            if any(image.sample(n).quality.usable for n in names):
                self._seen.add(device)
                self.lost.discard(device)
            elif device in self._seen or not self.starting:
                self.lost.add(device)

    def _update_rule(self, rule: Rule, value: bool | None, now: float) -> None:
        st, src = self.states[rule.name], f"interlock.{rule.name}"
        if value is None:
            st.unknown = True
            if not st.announced and not self._read_unread:  # start-up is not a fault
                st.announced = True
                self._emit(src, Severity.WARNING, f"cannot evaluate {rule.when}: input BAD; "
                           f"holding {'active' if st.present else 'inactive'}",
                           "interlock_unknown")
            if not st.asserted:
                st.since = None  # a pending delay must be seen to persist
        else:
            st.unknown = False
            if st.announced:
                st.announced = False
                self._emit(src, Severity.INFO, f"{rule.when} can be evaluated again",
                           "interlock_unknown_clear")
            st.present = value
            if value:
                if st.since is None:
                    st.since = now
                if (not st.asserted and now - st.since >= rule.delay_s - EPS
                        and rule.name not in self._bypassed_rules):
                    st.asserted, st.asserted_at = True, now
                    st.raised += 1
                    self.counts["raised"] += 1
                    self._emit(src, rule.severity, f"{rule.message or rule.when}: raised "
                               f"({rule.action})", "interlock")
            else:
                st.since = None
                if st.asserted:
                    st.asserted = False
                    tail = (f"; {rule.action} stays latched until reset by "
                            f"{' or '.join(rule.reset_roles)}" if st.latched else "")
                    self._emit(src, Severity.INFO, f"{rule.when} cleared{tail}",
                               "interlock_clear")
        if (st.asserted and not st.engaged and rule.acts
                and now - st.asserted_at >= rule.reaction_delay_s - EPS):
            st.engaged, st.engaged_at, st.latched = True, now, rule.latch
            if rule.action is Action.HOLD:  # the value sent before the condition came
                out = self._image.outputs if self._image is not None else {}
                st.held = {p: self._last_out.get(p, out.get(p, 0.0)) for p in rule.outputs}
            self.counts["engaged"] += 1
            how = " (graceful)" if rule.reaction is Reaction.GRACEFUL_SHUTDOWN else ""
            self._emit(src, rule.severity, f"{rule.action}{how}: " + ", ".join(rule.outputs),
                       rule.action.value)
            if rule.latch:
                self._journal_due = True  # written once this scan's outputs are decided
        if st.engaged and not st.asserted and not st.latched:
            st.engaged = False

    def _apply(self, image: ProcessImage, now: float, safe: SafeImage) -> None:
        self.owner.clear()
        values = safe.values
        for point, value in list(self.forces.items()):
            try:
                image.write(point, value)
            except (UnknownPoint, OutOfRange, TypeError) as exc:
                del self.forces[point]
                self._emit(f"force.{point}", Severity.WARNING, f"force dropped: {exc}", "force")
                continue
            self.owner[point] = "force"
        writes: list[tuple[int, int, str, float, Rule]] = []
        for idx, rule in enumerate(self.rules):
            st = self.states[rule.name]
            if not st.engaged:
                continue
            for k, (point, given) in enumerate(rule.outputs.items()):
                if (rule.reaction is Reaction.GRACEFUL_SHUTDOWN
                        and now - st.engaged_at < k * rule.step_s - EPS):
                    break
                if rule.action is Action.HOLD:
                    target = st.held[point]
                elif rule.action in (Action.TRIP, Action.ISOLATE) or given is None:
                    # the safe image: the most restrictive of every engaged trip / isolation
                    target = values.get(point, 0.0 if given is None else given)
                else:
                    target = given
                writes.append((_PRIORITY[rule.action], -idx, point, target, rule))
        # Ascending priority, so the highest action writes last; the first-declared rule of
        # equal priority writes last too.
        for _, _, point, target, rule in sorted(writes, key=lambda w: (w[0], w[1])):
            try:
                image.write(point, target)
            except (UnknownPoint, OutOfRange, TypeError) as exc:
                self._fault(f"rule.{rule.name}.{point}", str(exc))
                continue
            self.owner[point] = f"{rule.action}:{rule.name}"
        rules = self._out_rules
        for register in rules.mirrors if rules is not None else ():
            # device comms-loss registers always hold the safe image: no force or hold beats it
            try:
                image.write(register, values[register])
            except (KeyError, UnknownPoint, OutOfRange, TypeError) as exc:
                self._fault(f"safe_image.{register}", str(exc))
                continue
            self.owner[register] = SAFE_IMAGE_OWNER
        self._mark_forces(image)

    def _mark_forces(self, image: ProcessImage) -> None:
        effective = {p for p, o in self.owner.items() if o == "force"}
        for point in self._forced_marked - effective:
            image.output_quality[point] = Quality.GOOD
        for point in effective:
            image.output_quality[point] = Quality.FORCED
        self._forced_marked = effective
        overruled = {p for p in self.forces if p not in effective}
        for point in overruled - self._overruled:
            self._emit(f"force.{point}", Severity.WARNING,
                       f"force overruled by {self.owner.get(point, 'interlock')}", "force")
        self._overruled = overruled

    # -- PointView --------------------------------------------------------------------------
    def raw(self, name: str) -> Sample:
        """Latched or voted sample, without substitution."""
        image = self._image
        if image is None:
            raise UnknownPoint(name)
        group = self.groups.get(name)
        s = group.ensure(image, self._now) if group else image.sample(name)
        if s is NEVER_READ:
            if not self.starting:
                return NEVER_ANSWERED
            self._read_unread = True
        return s

    def sample(self, name: str) -> Sample:
        """The sample rules and limits act on: a BAD input replaced by its substitute."""
        s = self.raw(name)
        sub = self.substitutes.get(name)
        t = self.raw(sub) if sub is not None and not s.quality.usable else None
        if t is None or not t.quality.usable:
            if name in self._substituting:
                self._substituting.discard(name)
                self._emit(f"input.{name}", Severity.INFO, "substitution ended", "substitute")
            return s
        if name not in self._substituting and s is not NEVER_READ:
            self._substituting.add(name)
            self._emit(f"input.{name}", Severity.WARNING,
                       f"BAD ({s.reason or 'no reason'}); substituted from {sub}", "substitute")
        return Sample(t.value, Quality.SUBSTITUTED, t.ts, f"{name} BAD; from {sub}")

    def level(self, name: str) -> Level:
        """Limit level of a monitored point."""
        monitor = self.monitors.get(name)
        if monitor is None:
            raise UnknownPoint(name)
        return monitor.level

    def comms_lost(self, device: str) -> bool | None:
        """True while the device's inputs are all BAD after it once answered (or after the
        start-up grace); None while starting and the device has not answered yet: nobody can
        say then, so a latched comms-loss trip re-engaged by a restart is not reset blind."""
        if device in self.lost:
            return True
        if self.starting and device not in self._seen:
            self._read_unread = True  # start-up, not a fault: no "cannot evaluate" event
            return None
        return False

    # -- operators --------------------------------------------------------------------------
    def force(self, point: str, value: float, *, source: str = "local",
              expires_s: float | None = None, reason: str = "") -> None:
        """Force an output (applied after control each scan; any interlock still wins);
        with `expires_s`, released by this layer that long after on the scan clock."""
        self.forces[point] = float(value)
        self.force_deadlines.pop(point, None)
        self._force_ttl.pop(point, None)
        if expires_s is not None:
            self._force_ttl[point] = float(expires_s)  # the next scan fixes the deadline
        self.force_reasons[point] = reason
        until = f" for {expires_s:g} s" if expires_s is not None else ""
        why = f" ({reason})" if reason else ""
        self._emit(f"force.{point}", Severity.WARNING,
                   f"forced to {value:g} by {source}{until}{why}", "force")

    def release(self, point: str, *, source: str = "local") -> None:
        """Release a forced output back to control."""
        self.force_deadlines.pop(point, None)
        self._force_ttl.pop(point, None)
        self.force_reasons.pop(point, None)
        if self.forces.pop(point, None) is not None:
            self._emit(f"force.{point}", Severity.INFO, f"force released by {source}", "force")

    def _expire_forces(self, now: float) -> None:
        """Release every force whose expiry has come (before this scan applies forces)."""
        for point, ttl in self._force_ttl.items():
            self.force_deadlines[point] = now + ttl
        self._force_ttl.clear()
        for point, deadline in list(self.force_deadlines.items()):
            if now >= deadline - EPS:
                del self.force_deadlines[point]
                self.force_reasons.pop(point, None)
                if self.forces.pop(point, None) is not None:
                    self._emit(f"force.{point}", Severity.INFO,
                               "force expired: released back to control", "force_expired")

    def reset(self, role: str, name: str | None = None, *,
              source: str = "local") -> list[ResetOutcome]:
        """Reset latched rules (all, or `name`; "watchdog" is the scan watchdog's latch) for
        `role`; every attempt is audited."""
        tripped = self.watchdog is not None and self.watchdog.tripped
        if name == WATCHDOG:
            outcomes = [self._reset_watchdog(role)]
        elif name is not None and name not in self.states:
            outcomes = [ResetOutcome(name, False, "no such interlock")]
        else:  # one rule, or every latch (the watchdog's included)
            outcomes = [self._reset_watchdog(role)] if name is None and tripped else []
            outcomes += [self._reset_one(r, role) for r in self.rules
                         if r.name == name or (name is None and self.states[r.name].latched)]
            if not outcomes:
                outcomes = [ResetOutcome(name or "*", False, "nothing latched")]
        for o in outcomes:
            self.reset_log.append((o.rule, role, o.accepted))
            self.counts["resets" if o.accepted else "refused_resets"] += 1
            verdict = "accepted" if o.accepted else f"refused: {o.reason}"
            where = WATCHDOG if o.rule == WATCHDOG else f"interlock.{o.rule}"
            self._emit(where, Severity.INFO if o.accepted else Severity.WARNING,
                       f"reset by {role} via {source} {verdict}",
                       "trip_reset" if o.accepted else "trip_reset_refused")
        if any(o.accepted for o in outcomes):
            self._persist()
        return outcomes

    def _reset_watchdog(self, role: str) -> ResetOutcome:
        wd = self.watchdog
        if wd is None:
            return ResetOutcome(WATCHDOG, False, "no watchdog on this node")
        if not wd.tripped:
            return ResetOutcome(WATCHDOG, False, "not latched")
        if role not in WATCHDOG_RESET_ROLES:
            return ResetOutcome(WATCHDOG, False, f"role {role!r} may not reset it "
                                f"(needs {' or '.join(WATCHDOG_RESET_ROLES)})")
        wd.reset(self._now)  # the scan applying this command is alive: start kicking afresh
        return ResetOutcome(WATCHDOG, True)

    def _reset_one(self, rule: Rule, role: str) -> ResetOutcome:
        st = self.states[rule.name]
        if not st.latched:
            return ResetOutcome(rule.name, False, "not latched")
        if role not in rule.reset_roles:
            return ResetOutcome(rule.name, False, f"role {role!r} may not reset it "
                                f"(needs {' or '.join(rule.reset_roles)})")
        if st.unknown:
            return ResetOutcome(rule.name, False, f"{rule.when} cannot be evaluated (input BAD)")
        if st.present:
            return ResetOutcome(rule.name, False, f"{rule.when} is still present")
        st.latched = st.engaged = False
        return ResetOutcome(rule.name, True)

    # -- helpers ----------------------------------------------------------------------------
    def _emit(self, source: str, severity: Severity, message: str, code: str) -> None:
        ts = self._wall() if self._wall is not None else self._now
        self.events.raise_event(ts, source, severity, message, code)

    def _fault(self, key: str, reason: str) -> None:
        if key not in self._faults:  # once per cause: a bad rule must not flood the log
            self._faults.add(key)
            self._emit(key, Severity.ALARM, f"interlock fault: {reason}", "interlock_fault")

    def get_status(self) -> dict[str, Any]:
        """Active, engaged and latched rules, limit levels, forces, redundancy and counts."""
        st = self.states
        return {
            "active": [n for n, s in st.items() if s.asserted],
            "engaged": [n for n, s in st.items() if s.engaged],
            "latched": [n for n, s in st.items() if s.latched],
            "unknown": [n for n, s in st.items() if s.unknown],
            "rules": {r.name: {"when": str(r.when), "action": r.action.value,
                               "bypassed": r.name in self._bypassed_rules,
                               **asdict(st[r.name])} for r in self.rules},
            "limits": {p: m.level.value for p, m in self.monitors.items()},
            "forces": dict(self.forces),
            "force_expiry": {p: max(0.0, d - self._now) for p, d in self.force_deadlines.items()},
            "force_reasons": {p: r for p, r in self.force_reasons.items() if r},
            "overruled_forces": sorted(self._overruled),
            "owners": dict(self.owner),
            "comms_lost": sorted(self.lost),
            "substituted": sorted(self._substituting),
            "redundancy": {g.name: g.get_status() for g in self.groups.values()},
            "counts": dict(self.counts),
            "bypassed": {bp.config.name: bp.get_status(self._now) for bp in self.bypasses},
            "bypassed_now": sorted(self._bypassed_rules | self._bypassed_limits),
            "safe_image": {"seq": self.safe.get().seq, "engaged": list(self.safe.get().engaged),
                           "values": dict(self.safe.get().values)},
            "holds_overridden": sorted(self._hold_overridden),
            "journal": None if self.journal is None else {
                "path": str(self.journal.path), "writes": self.journal.writes,
                "errors": self.journal.errors, "last_error": self.journal.last_error,
                "at_start": self.restored.status if self.restored else None},
        }
