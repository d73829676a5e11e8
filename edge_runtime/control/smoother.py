"""Battery load smoothing, the algorithm: the grid sees a ramp-limited, filtered load; the
battery takes the rest (sans-IO; the rack block and its config are in smoothing.py).

Sign convention (SunSpec 802/704, io_maps/battery_inverter.toml): battery power + = discharge.
grid = demand - battery, so `battery = demand - grid_target` every step.

Each step of `Smoother` (sans-IO, time only through dt):
1. the demand, minus the announced changes already due (so the filter is not disturbed by
   them), goes through two cascaded first-order low-passes (`filter_tau_s` each);
2. reference = filtered demand + the announced changes as centred ramps (the grid starts
   moving half a ramp before an announced step, so the battery charges as much before it as
   it gives after it) + SoC correction (PI toward the SoC target, so SoC drifts back) + the
   battery's estimated losses (so losses do not drain SoC);
3. the grid target follows the reference, projected onto what the battery can cover at this
   demand (demand - discharge limit .. demand + charge limit), at most `ramp_limit_kw_per_s`,
   and never leaves a band of `range_kw` over the last `range_window_s` (short-term dynamic
   range). The grid target is the one state that reaches the grid, so it moves only this way:
   it never jumps, whatever the battery does;
4. battery = demand - grid target, clipped to the inverter's charge/discharge limits, tapered
   to 0 over `soc_guard_pct` near the SoC bounds. A load the battery cannot cover (a step
   beyond its power, a limit that drops, SoC at a bound) is outside the smoothing claim: the
   excess goes to the grid unsmoothed and is reported (`uncovered_kw`, an event in the rack
   block), and the grid target walks back into the coverable interval at the ramp limit, so
   leaving saturation never releases more than the allowed ramp.
With `latency_comp_s` the battery leads the measured demand along its slope by that time, to
take the meter-to-inverter latency out of fast edges (for scans much shorter than the edges).
The lead is a prediction only: when it drives the inverter into a limit the setpoint is
clipped and the grid target does not move (it used to restart from the clipped value, which
let an unannounced full-power step through to the grid).
Announced changes shorter than `follow_min_s` (a checkpoint pause, a short burst) are not
followed by the grid at all: the battery carries them, and the SoC target moves ahead of
them by half their energy so the battery ends them as far from its bounds as it started.

A site coordinator would use `Smoother(cfg)` directly: `battery_kw =
smoother.step(site_demand_kw, soc_pct, BatteryLimits(charge_kw, discharge_kw), dt)`, split
across racks.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SmoothingPoints:
    """Image points of the rack block ("device.point")."""

    demand: str = "rack_meter.power_kw"
    soc: str = "battery.soc_pct"
    charge_max: str = "battery.w_cha_max_kw"
    discharge_max: str = "battery.w_dis_cha_max_kw"
    setpoint: str = "battery.w_set_kw"
    enable: str = "battery.w_set_ena"
    measured: str = "battery.ac_w_kw"  # "" = not read
    local_mode: str = "battery.loc_rem_ctl"  # 1 = local control: setpoints ignored; "" = none


@dataclass(frozen=True, slots=True)
class SmoothingConfig:
    """Smoothing parameters; powers in kW, energy in kWh, SoC in %."""

    ramp_limit_kw_per_s: float = 50.0
    range_kw: float = 50.0
    range_window_s: float = 1.0
    filter_tau_s: float = 2.0
    capacity_kwh: float = 100.0
    efficiency: float = 0.92
    max_charge_kw: float = 100.0
    max_discharge_kw: float = 150.0
    soc_min_pct: float = 10.0
    soc_max_pct: float = 90.0
    soc_target_pct: float = 50.0
    soc_guard_pct: float = 5.0
    soc_kp_kw_per_pct: float = 2.0
    soc_ki_kw_per_pct_s: float = 0.02
    soc_correction_max_kw: float = 20.0
    ff_ramp_fraction: float = 0.5
    follow_min_s: float = 30.0
    announce_share: float = 1.0
    latency_comp_s: float = 0.0
    points: SmoothingPoints = field(default_factory=SmoothingPoints)


@dataclass(frozen=True, slots=True)
class BatteryLimits:
    """What the inverter can do right now (both >= 0)."""

    charge_kw: float
    discharge_kw: float


@dataclass(frozen=True, slots=True)
class Announced:
    """An announced change of mean demand: +delta_kw from start (s, smoother time)."""

    start: float
    delta_kw: float
    duration_s: float | None  # None: lasting
    follow: bool  # the grid follows it (centred ramp) or the battery carries it
    ramp_s: float  # grid ramp duration when followed


class Smoother:
    """Grid-side smoothing of one demand with one (aggregate) battery; sans-IO."""

    def __init__(self, config: SmoothingConfig) -> None:
        self.config = config
        self.t = 0.0
        self.grid_kw: float | None = None  # grid target (None until the first step)
        self.battery_kw = 0.0
        self.saturated = False  # the setpoint was clipped to an inverter limit this step
        self.uncovered_kw = 0.0  # demand - grid target the battery cannot take (+: short)
        self.reference_kw = 0.0
        self._m1 = self._m2 = 0.0
        self._soc_int = 0.0
        self._loss_kw = 0.0
        self._pending: list[Announced] = []
        self._last_demand: float | None = None
        self._hi: deque[tuple[float, float]] = deque()  # window maxima of the grid target
        self._lo: deque[tuple[float, float]] = deque()
        self._eta1 = math.sqrt(config.efficiency)

    @property
    def pending(self) -> tuple[Announced, ...]:
        """Announcements still shaping the reference."""
        return tuple(self._pending)

    def restart(self, battery_kw: float) -> None:
        """Forget the grid history: the next step starts bumpless from what the grid sees."""
        self.grid_kw = None
        self.battery_kw = battery_kw
        self.uncovered_kw = 0.0
        self._last_demand = None
        self._hi.clear()
        self._lo.clear()

    # -- announcements ----------------------------------------------------------------------
    def announce(self, *, in_s: float, delta_kw: float, duration_s: float | None = None,
                 ramp_kw_per_s: float | None = None) -> Announced:
        """Expect the mean demand to change by delta_kw in in_s seconds (for duration_s)."""
        c = self.config
        if not (math.isfinite(in_s) and math.isfinite(delta_kw)):
            raise ValueError("announcement: in_s and delta_kw must be finite numbers")
        if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
            raise ValueError(f"announcement: duration_s must be > 0, got {duration_s!r}")
        ramp = c.ramp_limit_kw_per_s * c.ff_ramp_fraction
        if ramp_kw_per_s is not None and ramp_kw_per_s > 0:
            ramp = min(ramp, ramp_kw_per_s)
        follow = duration_s is None or duration_s >= c.follow_min_s
        item = Announced(self.t + max(in_s, 0.0), delta_kw, duration_s, follow,
                         abs(delta_kw) / ramp)
        self._pending.append(item)
        return item

    def _steps_due(self) -> float:
        """Announced changes in force now (removed from the filter's input)."""
        total = 0.0
        for a in self._pending:
            if self.t >= a.start and (a.duration_s is None or self.t < a.start + a.duration_s):
                total += a.delta_kw
        return total

    def _ramps(self) -> float:
        """Announced changes the grid follows, as centred ramps."""
        total = 0.0
        for a in self._pending:
            if not a.follow:
                continue
            total += a.delta_kw * _ramp01(self.t, a.start, a.ramp_s)
            if a.duration_s is not None:
                total -= a.delta_kw * _ramp01(self.t, a.start + a.duration_s, a.ramp_s)
        return total

    def _soc_offset_pct(self) -> float:
        """Pre-positioning: how far ahead of announced changes the SoC target moves."""
        c = self.config
        kwh = 0.0
        lead = c.follow_min_s
        for a in self._pending:
            if a.start - lead > self.t:
                continue
            if a.follow:
                # the centred ramp charges before a rise and gives it back after: start low
                if self.t < a.start + a.ramp_s / 2:
                    kwh -= a.delta_kw * a.ramp_s / 8.0 / 3600.0
            elif a.duration_s is not None and self.t < a.start + a.duration_s:
                # the battery carries the whole pulse: be half its energy above target
                left = min(a.start + a.duration_s - self.t, a.duration_s)
                kwh += a.delta_kw * left / 2.0 / 3600.0
        return kwh / c.capacity_kwh * 100.0

    def _retire(self) -> None:
        """Fold announcements that are over into the filter state (exact for linear filters)."""
        keep: list[Announced] = []
        hold = 5.0 * self.config.filter_tau_s
        for a in self._pending:
            end = a.start + (a.duration_s or 0.0) + a.ramp_s + hold
            if self.t < end:
                keep.append(a)
            elif a.duration_s is None:
                self._m1 += a.delta_kw
                self._m2 += a.delta_kw
        self._pending = keep

    # -- the step ---------------------------------------------------------------------------
    def step(self, grid_demand_kw: float, soc: float, limits: BatteryLimits, dt: float) -> float:
        """Battery setpoint (kW, + discharge) for this demand (kW), SoC (%), limits, dt (s)."""
        c = self.config
        if not (math.isfinite(grid_demand_kw) and math.isfinite(soc)):
            raise ValueError("demand and soc must be finite numbers")
        dt = max(dt, 0.0)
        self.t += dt
        self._retire()
        u = grid_demand_kw - self._steps_due()
        if self.grid_kw is None:  # bumpless start: the grid keeps what it sees now
            self._m1 = self._m2 = u
            self.grid_kw = grid_demand_kw - self.battery_kw
        a = dt / (c.filter_tau_s + dt) if c.filter_tau_s > 0 else 1.0
        self._m1 += (u - self._m1) * a
        self._m2 += (self._m1 - self._m2) * a

        err = c.soc_target_pct + self._soc_offset_pct() - soc  # > 0: SoC low, charge
        corr = c.soc_kp_kw_per_pct * err + c.soc_ki_kw_per_pct_s * self._soc_int
        lim = c.soc_correction_max_kw
        if -lim < corr < lim:  # anti-windup: integrate only while unsaturated
            self._soc_int += err * dt
        corr = min(max(corr, -lim), lim)
        loss_a = dt / (60.0 + dt)
        self._loss_kw += (abs(self.battery_kw) * (1.0 - self._eta1) - self._loss_kw) * loss_a
        self.reference_kw = ref = self._m2 + self._ramps() + corr + self._loss_kw

        # The grid target aims at the reference, but only inside the interval the battery can
        # cover at this demand: outside it, it walks back in at the ramp limit (desaturation
        # releases no more than the allowed ramp). It is never reset to what the battery
        # managed, so neither a clipped lead nor a limit makes it jump.
        charge, discharge = self._caps(soc, limits)
        target = min(max(ref, grid_demand_kw - discharge), grid_demand_kw + charge)
        step = c.ramp_limit_kw_per_s * dt
        g = self.grid_kw + min(max(target - self.grid_kw, -step), step)
        g = self._within_range(g)
        need = grid_demand_kw - g
        self.uncovered_kw = need - min(max(need, -charge), discharge)

        # The setpoint lands one meter-to-inverter latency after the sample: on a linear edge,
        # leading the sample along its slope takes that lag out (0 = off).
        lead = 0.0
        if c.latency_comp_s > 0.0 and dt > 0.0 and self._last_demand is not None:
            lead = (grid_demand_kw - self._last_demand) * c.latency_comp_s / dt
        self._last_demand = grid_demand_kw
        battery = need + lead
        clipped = min(max(battery, -charge), discharge)
        self.saturated = clipped != battery
        self.grid_kw = g
        self._remember(g)
        self.battery_kw = clipped
        return clipped

    def _caps(self, soc: float, limits: BatteryLimits) -> tuple[float, float]:
        c = self.config
        guard = max(c.soc_guard_pct, 1e-9)
        down = min(max((soc - c.soc_min_pct) / guard, 0.0), 1.0)
        up = min(max((c.soc_max_pct - soc) / guard, 0.0), 1.0)
        charge = min(max(limits.charge_kw, 0.0), c.max_charge_kw) * up
        discharge = min(max(limits.discharge_kw, 0.0), c.max_discharge_kw) * down
        return charge, discharge

    def _within_range(self, g: float) -> float:
        """Clamp g so the grid target spans at most range_kw over the window."""
        cutoff = self.t - self.config.range_window_s
        for dq in (self._hi, self._lo):
            while dq and dq[0][0] <= cutoff:
                dq.popleft()
        if self._hi:
            r = self.config.range_kw
            g = min(max(g, self._hi[0][1] - r), self._lo[0][1] + r)
        return g

    def _remember(self, g: float) -> None:
        while self._hi and self._hi[-1][1] <= g:
            self._hi.pop()
        self._hi.append((self.t, g))
        while self._lo and self._lo[-1][1] >= g:
            self._lo.pop()
        self._lo.append((self.t, g))

    def get_status(self) -> dict[str, Any]:
        """Grid target, battery setpoint, reference and pending announcements."""
        return {"grid_kw": self.grid_kw, "battery_kw": self.battery_kw,
                "reference_kw": self.reference_kw, "saturated": self.saturated,
                "uncovered_kw": self.uncovered_kw,
                "announcements": len(self._pending)}


def _ramp01(t: float, centre: float, width: float) -> float:
    """0 before centre - width/2, 1 after centre + width/2, linear between."""
    if width <= 0.0:
        return 1.0 if t >= centre else 0.0
    return min(max((t - centre + width / 2.0) / width, 0.0), 1.0)
