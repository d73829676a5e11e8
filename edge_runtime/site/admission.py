"""Admission control for Annex A.1 announcements (spec 6.1.3). Sans-IO: snapshot in, decision out.

The decision is one of the tri-state answers of A.2 `approval_status`. Anything the workload
must do to be admitted travels in A.2 `conditions` (an array of strings, no further
constraints in the schema), one `key:value` string each:

    delay_start:PT30S           start no earlier than 30 s after the response timestamp
                                (ISO 8601 duration, whole seconds: PT#S, PT#M#S or PT#H#M#S)
    power_cap_kw:800            never draw more than 800 kW (integer kW, rounded down)
    ramp_limit_kw_per_s:50      ramp power up no faster than 50 kW/s (integer, rounded down)
    reason:<text>               informational, not binding: why the answer is what it is;
                                every rejection carries at least one

Binding keys are the first three; a client that meets a binding key it does not know must
treat the answer as rejected. `parse_condition` reads this form back.

The checks, in order (each reason names the figures):
  1. state known: fresh power telemetry and no grid outage, else rejected;
  2. power and cooling: peak within the site's power headroom (limit - measured load -
     pending reservations) and its heat within the cooling headroom; otherwise a power cap
     down to the headroom if the workload can throttle and its baseline fits, else rejected;
  3. ramp: the ramp (plus ramps of other admitted workloads starting at the same time) within
     the site's ramp limit, or the step covered by available battery discharge; otherwise a
     ramp limit if the workload can throttle, else a delayed start past the other ramps if
     within its delay tolerance, else rejected;
  4. grid demand response: a non-critical workload waits until the event ends (delay_start)
     if within its delay tolerance, else rejected.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum

from edge_runtime.messages.models import ApprovalStatus, PriorityLevel, WorkloadAnnouncement


class ConditionKind(StrEnum):
    """The keys of the condition strings."""

    DELAY_START = "delay_start"
    POWER_CAP_KW = "power_cap_kw"
    RAMP_LIMIT_KW_PER_S = "ramp_limit_kw_per_s"
    REASON = "reason"


BINDING = (ConditionKind.DELAY_START, ConditionKind.POWER_CAP_KW,
           ConditionKind.RAMP_LIMIT_KW_PER_S)
_DURATION = re.compile(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?")


def format_duration(seconds: int) -> str:
    """Whole seconds as an ISO 8601 duration: 30 -> PT30S, 90 -> PT1M30S, 0 -> PT0S."""
    if seconds < 0:
        raise ValueError(f"duration must be >= 0, got {seconds}")
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    text = "PT" + (f"{h}H" if h else "") + (f"{m}M" if m else "") + (f"{s}S" if s else "")
    return text if text != "PT" else "PT0S"


def parse_duration(text: str) -> int:
    """An ISO 8601 time duration (PT#H#M#S, whole numbers) as seconds; ValueError if not one."""
    m = _DURATION.fullmatch(text)
    if m is None or text == "PT":
        raise ValueError(f"not an ISO 8601 duration like PT30S: {text!r}")
    h, mi, s = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition: a binding constraint or an informational reason."""

    kind: ConditionKind
    value: float | str  # seconds / kW / kW per s, or the reason text

    def __str__(self) -> str:
        if self.kind is ConditionKind.REASON:
            return f"reason:{self.value}"
        number = int(self.value)
        if self.kind is ConditionKind.DELAY_START:
            return f"delay_start:{format_duration(number)}"
        return f"{self.kind.value}:{number}"

    @property
    def binding(self) -> bool:
        """True for constraints the workload must follow."""
        return self.kind in BINDING


def parse_condition(text: str) -> Condition:
    """A condition string read back; ValueError naming the part that is wrong."""
    key, sep, value = text.partition(":")
    if not sep:
        raise ValueError(f"condition {text!r}: expected key:value")
    try:
        kind = ConditionKind(key)
    except ValueError:
        raise ValueError(f"condition {text!r}: unknown key {key!r}") from None
    if kind is ConditionKind.REASON:
        return Condition(kind, value)
    if kind is ConditionKind.DELAY_START:
        return Condition(kind, parse_duration(value))
    if not re.fullmatch(r"\d+", value):
        raise ValueError(f"condition {text!r}: {key} must be a whole number >= 0")
    return Condition(kind, int(value))


@dataclass(frozen=True, slots=True)
class GridState:
    """What the site knows of the grid, from `grid/status` (defaults: grid up, no limits)."""

    available: bool = True
    import_limit_kw: float | None = None
    ramp_limit_kw_per_s: float | None = None
    demand_response_required: bool = False
    demand_response_until: float | None = None  # UTC epoch s, None when unknown
    carbon_intensity_g_co2_kwh: float | None = None
    renewable_energy_available: bool | None = None


@dataclass(frozen=True, slots=True)
class Ramp:
    """A ramp of an admitted workload: from `start` for `duration_s` at `kw_per_s`."""

    start: float
    duration_s: float
    kw_per_s: float

    @property
    def end(self) -> float:
        return self.start + self.duration_s


@dataclass(frozen=True, slots=True)
class SiteSnapshot:
    """The live aggregate that admission decides on (see aggregate.py)."""

    power_limit_kw: float
    measured_load_kw: float
    reserved_kw: float
    cooling_capacity_kw: float
    heat_load_kw: float
    reserved_heat_kw: float
    battery_available: bool
    battery_discharge_kw: float
    ramp_limit_kw_per_s: float
    grid: GridState = field(default_factory=GridState)
    ramps: tuple[Ramp, ...] = ()
    power_known: bool = True  # False when no fresh power telemetry
    unknown_reason: str = ""

    @property
    def power_headroom_kw(self) -> float:
        return max(0.0, self.power_limit_kw - self.measured_load_kw - self.reserved_kw)

    @property
    def cooling_headroom_kw(self) -> float:
        return max(0.0, self.cooling_capacity_kw - self.heat_load_kw - self.reserved_heat_kw)


@dataclass(frozen=True, slots=True)
class Decision:
    """Admission outcome, ready to become an A.2 response and a reservation."""

    status: ApprovalStatus
    approved_kw: float
    heat_kw: float
    start: float  # UTC epoch s the workload may start
    ramp_kw_per_s: float
    conditions: tuple[Condition, ...]

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(str(c.value) for c in self.conditions if c.kind is ConditionKind.REASON)

    def condition_strings(self) -> tuple[str, ...]:
        """The A.2 `conditions` array."""
        return tuple(str(c) for c in self.conditions)


def _kw(x: float) -> str:
    return f"{x:.0f} kW"


def _reject(reason: str, now: float) -> Decision:
    return Decision(ApprovalStatus.REJECTED, 0.0, 0.0, now, 0.0,
                    (Condition(ConditionKind.REASON, reason),))


def decide(ann: WorkloadAnnouncement, snap: SiteSnapshot, now: float) -> Decision:
    """Approve, approve with conditions or reject `ann` against `snap` at UTC time `now`."""
    if not snap.power_known:
        return _reject(f"site state unknown: {snap.unknown_reason}", now)
    if not snap.grid.available:
        return _reject("grid unavailable (grid status: outage); no new load admitted", now)
    pp, flex = ann.power_profile, ann.flexibility_parameters
    peak, baseline = pp.peak_power_mw * 1000.0, pp.baseline_power_mw * 1000.0
    ramp = pp.ramp_rate_mw_per_sec * 1000.0
    throttle = bool(flex and flex.throttling_capability)
    tolerance = float(flex.delay_tolerance_sec or 0) if flex else 0.0
    critical = bool(flex and flex.priority_level is PriorityLevel.CRITICAL)
    heat_given = ann.thermal_profile.heat_generation_kw if ann.thermal_profile else None
    # Electrical power ends up as heat; a declared heat figure is used when the workload has one.
    heat_per_kw = (heat_given / peak) if heat_given is not None and peak > 0 else 1.0
    earliest = ann.timing_constraints.earliest_start_time if ann.timing_constraints else None
    start = max(now, earliest.timestamp()) if earliest is not None else now
    conditions: list[Condition] = []
    reasons: list[str] = []

    # 2. power and cooling
    headroom = snap.power_headroom_kw
    cool = snap.cooling_headroom_kw
    cap = min(headroom, cool / heat_per_kw if heat_per_kw > 0 else math.inf)
    approved = peak
    if cap < peak:
        short = (f"power headroom {_kw(headroom)}" if headroom <= cool / max(heat_per_kw, 1e-9)
                 else f"cooling headroom {_kw(cool)}")
        if not throttle:
            return _reject(f"peak {_kw(peak)} exceeds {short} and the workload cannot throttle",
                           now)
        if cap < max(baseline, 1.0):
            return _reject(f"{short} is below the workload's baseline {_kw(baseline)}", now)
        approved = math.floor(cap)
        conditions.append(Condition(ConditionKind.POWER_CAP_KW, approved))
        reasons.append(f"peak {_kw(peak)} exceeds {short}")

    # 3. ramp (the other admitted ramps that overlap this one share the site's ramp limit)
    ramp_s = approved / ramp if ramp > 0 else 0.0
    window_end, busy_kw, busy_until = start + ramp_s, 0.0, -math.inf
    for r in snap.ramps:  # one pass: at 1,000 announcements/s there can be hundreds
        end = r.start + r.duration_s
        if r.start < window_end and end > start:
            busy_kw += r.kw_per_s
            if end > busy_until:
                busy_until = end
    allowed = snap.ramp_limit_kw_per_s - busy_kw
    if snap.grid.ramp_limit_kw_per_s is not None:
        allowed = min(allowed, snap.grid.ramp_limit_kw_per_s - busy_kw)
    granted_ramp = ramp
    if ramp > allowed:
        battery_covers = snap.battery_available and snap.battery_discharge_kw >= approved
        if battery_covers:
            reasons.append(f"ramp {ramp:.0f} kW/s above the site's {max(allowed, 0):.0f} kW/s "
                           f"is smoothed by battery ({_kw(snap.battery_discharge_kw)} available)")
        elif throttle and allowed >= 1.0:
            granted_ramp = math.floor(allowed)
            conditions.append(Condition(ConditionKind.RAMP_LIMIT_KW_PER_S, granted_ramp))
            reasons.append(f"ramp {ramp:.0f} kW/s exceeds the {allowed:.0f} kW/s the site can take")
        elif busy_kw > 0 and busy_until - now <= tolerance:
            start = max(start, busy_until)
            reasons.append("starts after the ramps of workloads admitted before it")
        else:
            return _reject(f"ramp {ramp:.0f} kW/s exceeds the {max(allowed, 0):.0f} kW/s the site "
                           "can take, no battery covers it and the workload cannot throttle", now)

    # 4. grid demand response
    if snap.grid.demand_response_required and not critical:
        until = snap.grid.demand_response_until
        if until is None or until - now > tolerance:
            when = "with no announced end" if until is None else f"for {until - now:.0f} s more"
            return _reject(f"grid demand response in progress {when}; delay tolerance "
                           f"{tolerance:.0f} s", now)
        start = max(start, until)
        reasons.append("grid demand response in progress")

    if start > now and (earliest is None or start > earliest.timestamp()):
        delay_s = math.ceil(start - now)
        start = now + delay_s
        conditions.insert(0, Condition(ConditionKind.DELAY_START, delay_s))
    binding = any(c.binding for c in conditions)
    status = ApprovalStatus.APPROVED_WITH_CONDITIONS if binding else ApprovalStatus.APPROVED
    conditions.extend(Condition(ConditionKind.REASON, r) for r in reasons)
    return Decision(status, float(approved), approved * heat_per_kw, start, granted_ramp,
                    tuple(conditions))
