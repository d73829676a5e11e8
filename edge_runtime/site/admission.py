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
  3. grid demand response: a non-critical workload waits until the event ends (delay_start)
     if within its delay tolerance, else rejected;
  4. ramp, at the start the workload will really have: the granted ramp plus every booked
     ramp overlapping it within min(site, grid) ramp limit (see _fit_ramp): as announced
     if it fits; else smoothed by a battery that covers the step (the grid-side ramp that
     fits is what is granted and booked); else capped with ramp_limit_kw_per_s if the
     workload can throttle (capping, not rejecting: the job runs and the limit holds); else
     a delayed start past the overlapping ramps if within its delay tolerance, checked again
     there; else rejected. So the booked ramps never sum above the limit at any instant.
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

    # 4. grid demand response, before the ramp: it can move the start, and the ramp must be
    # checked where it will happen
    if snap.grid.demand_response_required and not critical:
        until = snap.grid.demand_response_until
        if until is None or until - now > tolerance:
            when = "with no announced end" if until is None else f"for {until - now:.0f} s more"
            return _reject(f"grid demand response in progress {when}; delay tolerance "
                           f"{tolerance:.0f} s", now)
        start = max(start, _later(now, until))
        reasons.append("grid demand response in progress")

    # 3. ramp: the granted ramp plus every booked ramp overlapping it stays within the limit
    fit = _fit_ramp(snap, now, start, approved, ramp, now + tolerance,
                    throttle=throttle, battery=snap.battery_available
                    and snap.battery_discharge_kw >= approved)
    if isinstance(fit, str):
        return _reject(fit, now)
    start, granted_ramp, ramp_conditions, ramp_reasons = fit
    conditions.extend(ramp_conditions)
    reasons.extend(ramp_reasons)

    if start > now and (earliest is None or start > earliest.timestamp()):
        start = _later(now, start)
        delay_s = round(start - now)
        conditions.insert(0, Condition(ConditionKind.DELAY_START, delay_s))
    binding = any(c.binding for c in conditions)
    status = ApprovalStatus.APPROVED_WITH_CONDITIONS if binding else ApprovalStatus.APPROVED
    conditions.extend(Condition(ConditionKind.REASON, r) for r in reasons)
    return Decision(status, float(approved), approved * heat_per_kw, start, granted_ramp,
                    tuple(conditions))


def _busy(ramps: tuple[Ramp, ...], start: float, end: float) -> tuple[float, float]:
    """(sum of the booked ramps overlapping [start, end), the latest end among them).

    The sum over the whole window, not the peak of concurrent ramps: conservative, one pass
    (at 1,000 announcements/s there can be hundreds of ramps)."""
    busy_kw, busy_until = 0.0, -math.inf
    for r in ramps:
        r_end = r.start + r.duration_s
        if r.start < end and r_end > start:
            busy_kw += r.kw_per_s
            if r_end > busy_until:
                busy_until = r_end
    return busy_kw, busy_until


def _later(now: float, t: float) -> float:
    """`t` rounded up to a whole number of seconds after `now` (delay_start is whole seconds);
    idempotent despite float error, so a start checked once keeps its value."""
    return now + math.ceil(t - now - 1e-6)


def _fit_ramp(snap: SiteSnapshot, now: float, start: float, approved: float, ramp: float,
              latest: float, *, throttle: bool, battery: bool
              ) -> tuple[float, float, list[Condition], list[str]] | str:
    """Where and how fast the workload may ramp: (start, granted ramp, conditions, reasons),
    or the reason for a rejection.

    The invariant (finding 4 of issue 8): at any instant, the granted ramps of all bookings
    overlapping each other sum to no more than the site's (and the grid's) ramp limit, so
    every grant is checked against the limit *minus the overlapping ramps at the start it
    will really have*. In order of preference:
      - the workload's own ramp fits: granted as announced;
      - a battery that can cover the whole step smooths it: the workload ramps as it likes
        and the grid sees at most what is left of the limit, which is what is booked;
      - a workload that can throttle gets a ramp_limit_kw_per_s condition (capped, not
        rejected: capping keeps the job and the limit);
      - otherwise it is delayed past the overlapping ramps while the delay stays within its
        tolerance, and the check is made again at the new start (ramps booked later may
        overlap there too);
      - else rejected.
    A slower grant lasts longer and may overlap more ramps, so the grant is refined until it
    is stable (it only goes down; at most one step per booked ramp)."""
    limit = snap.ramp_limit_kw_per_s
    if snap.grid.ramp_limit_kw_per_s is not None:
        limit = min(limit, snap.grid.ramp_limit_kw_per_s)
    ramps = snap.ramps
    while True:
        busy_kw, busy_until = _busy(ramps, start, start + (approved / ramp if ramp > 0 else 0.0))
        allowed = limit - busy_kw
        if ramp <= allowed:
            return start, ramp, [], []
        # the fastest grid-side ramp that fits beside everything its (longer) window overlaps
        grid_ramp = math.floor(allowed)
        while grid_ramp >= 1:
            b, _ = _busy(ramps, start, start + approved / grid_ramp)
            if limit - b >= grid_ramp:
                break
            grid_ramp = math.floor(limit - b)
        if grid_ramp >= 1 and battery:
            return start, float(grid_ramp), [], [
                f"ramp {ramp:.0f} kW/s above the {max(allowed, 0):.0f} kW/s the site can take "
                f"is smoothed by battery; the grid sees at most {grid_ramp} kW/s"]
        if grid_ramp >= 1 and throttle:
            return start, float(grid_ramp), [
                Condition(ConditionKind.RAMP_LIMIT_KW_PER_S, grid_ramp)], [
                f"ramp {ramp:.0f} kW/s exceeds the {grid_ramp} kW/s the site can take"]
        if busy_kw > 0 and _later(now, busy_until) <= latest + 1e-6:
            start = _later(now, busy_until)  # after the ramps in the way; check again there
            continue
        if busy_kw > 0 and ramp <= limit:
            why = "the ramps of workloads admitted before it last beyond its delay tolerance"
        else:
            why = "no battery covers it and the workload cannot throttle"
        return (f"ramp {ramp:.0f} kW/s exceeds the {max(allowed, 0):.0f} kW/s the site can "
                f"take (limit {limit:.0f} kW/s, {busy_kw:.0f} kW/s of it granted to "
                f"overlapping ramps); {why}")
