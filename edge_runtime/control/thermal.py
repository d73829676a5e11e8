"""CDU thermal control: supply temperature on the facility-water valve, and predictive
thermal preparation from announced heat loads (spec 6.3.1 a). Sans-IO control blocks.

Heat balance used throughout (kW, L/min, degC):
    Q = m_dot * cp * dT,  m_dot*cp = flow/60000 * rho * cp / 1000    (coolant side)
    Q = eps(UA, C_hot, C_fw) * C_min * (T_return - T_fw)             (counterflow HX, e-NTU)
so for a heat load Q at a given coolant flow and supply setpoint, the facility-water capacity
rate C_fw that holds the setpoint follows, and from it the valve position (inverse of the
valve characteristic). That is the feedforward: an announced load moves the valve by
u(Q_now + dQ) - u(Q_now) on top of what the PID is doing, timed to when the heat reaches the
heat exchanger (load start + return-pipe transport delay, shaped by the rack's thermal lag,
led by `lead_s` for the actuator), and removed the same way when the announced duration ends.
With `design_delta_t_k` set, the coolant flow setpoint follows the heat (Q / (rho cp dT)),
from the measured heat normally and from the announced heat ahead of its start, and the pump
speed is pre-positioned by the affinity law (flow proportional to speed in a closed loop).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from edge_runtime.control.modes import ControlMode, ModalPid
from edge_runtime.control.valves import ValveChannel
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import ProcessImage
from edge_runtime.messages.models import WorkloadAnnouncement

FLOW_FILTER_S = 1.0


@dataclass(frozen=True, slots=True)
class HeatExchangerModel:
    """Design data of the loop: coolant, heat exchanger, facility water, valve."""

    coolant_cp: float = 3900.0  # J/(kg K)
    coolant_density: float = 1025.0  # kg/m3
    hx_ua_kw_per_k: float = 25.0
    fw_temp_c: float = 22.0
    fw_max_flow_lpm: float = 250.0
    fw_cp: float = 4186.0
    fw_density: float = 998.0
    valve_characteristic: str = "equal_percentage"  # or "linear"
    valve_rangeability: float = 50.0

    def mcp(self, flow_lpm: float) -> float:
        """Coolant capacity rate, kW/K."""
        return max(flow_lpm, 0.0) / 60_000.0 * self.coolant_density * self.coolant_cp / 1000.0

    def heat_kw(self, flow_lpm: float, return_c: float, supply_c: float) -> float:
        """Heat carried by the coolant from the rack (kW)."""
        return self.mcp(flow_lpm) * (return_c - supply_c)

    def flow_for(self, heat_kw: float, delta_t_k: float) -> float:
        """Coolant flow (L/min) that carries heat_kw at a rack temperature rise delta_t_k."""
        return heat_kw / (self.mcp(1.0) * delta_t_k)

    def _removal(self, c_fw: float, mcp: float, return_c: float, fw_c: float) -> float:
        c_min, c_max = min(mcp, c_fw), max(mcp, c_fw)
        if c_min <= 0.0:
            return 0.0
        ntu, cr = self.hx_ua_kw_per_k / c_min, c_min / c_max
        if abs(1.0 - cr) < 1e-9:
            eps = ntu / (1.0 + ntu)
        else:
            e = math.exp(-ntu * (1.0 - cr))
            eps = (1.0 - e) / (1.0 - cr * e)
        return eps * c_min * (return_c - fw_c)

    def valve_for(self, heat_kw: float, flow_lpm: float, supply_c: float,
                  fw_c: float | None = None) -> float:
        """Valve position (%) that removes heat_kw with the supply at supply_c."""
        fw = self.fw_temp_c if fw_c is None else fw_c
        mcp = self.mcp(flow_lpm)
        if heat_kw <= 0.0 or mcp <= 0.0:
            return 0.0
        return_c = supply_c + heat_kw / mcp
        c_max = self.fw_max_flow_lpm / 60_000.0 * self.fw_density * self.fw_cp / 1000.0
        if self._removal(c_max, mcp, return_c, fw) <= heat_kw:
            return 100.0
        lo, hi = 0.0, c_max
        for _ in range(40):  # removal rises with C_fw: bisection to 1e-12 of full scale
            mid = 0.5 * (lo + hi)
            if self._removal(mid, mcp, return_c, fw) < heat_kw:
                lo = mid
            else:
                hi = mid
        return self.position_for_fraction(0.5 * (lo + hi) / c_max)

    def position_for_fraction(self, fraction: float) -> float:
        """Inverse valve characteristic: position (%) giving `fraction` of full-open flow."""
        f = min(max(fraction, 0.0), 1.0)
        if self.valve_characteristic == "linear":
            return 100.0 * f
        r = self.valve_rangeability
        return 100.0 * min(max(1.0 + math.log(f * (1.0 - 1.0 / r) + 1.0 / r) / math.log(r),
                               0.0), 1.0)


@dataclass(frozen=True, slots=True)
class PreparationConfig:
    """Points and loop data the preparation needs."""

    supply_point: str  # e.g. "supply_temp.temperature"
    return_point: str  # e.g. "return_temp.temperature"
    flow_point: str  # e.g. "flow.flow"
    model: HeatExchangerModel = HeatExchangerModel()
    return_volume_l: float = 25.0  # rack outlet -> heat exchanger (transport delay)
    rack_mass_kj_per_k: float = 120.0  # thermal lag of the rack's cold plates
    lead_s: float = 4.0  # start the valve this much before the heat reaches the HX
    pump_lead_s: float = 1.0  # raise the flow this much before the load starts
    design_delta_t_k: float | None = None  # flow follows heat when set
    min_flow_lpm: float = 0.0
    max_flow_lpm: float = 1.0e9
    max_heat_kw: float = 1.0e6  # an announcement above this is refused
    default_duration_s: float = 900.0  # when the announcement gives none
    heat_filter_s: float = 5.0
    valve_rate_pct_per_s: float = 5.0  # the feedforward moves no faster than the actuator


@dataclass(frozen=True, slots=True)
class HeatAnnouncement:
    """An announced heat load on this loop (wall-clock times, UTC seconds); a duration of
    None takes the preparation's `default_duration_s`."""

    heat_kw: float
    start_wall: float
    duration_s: float | None = None
    workload_id: str = ""


def heat_announcement(msg: WorkloadAnnouncement, *, share: float = 1.0) -> HeatAnnouncement:
    """This loop's part of an Annex A.1 announcement: `share` of
    thermal_profile.heat_generation_kw, from timing_constraints.earliest_start_time (or the
    message timestamp), for power_profile.duration_estimate_sec. ValueError names the field."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], got {share!r}")
    heat = msg.thermal_profile.heat_generation_kw if msg.thermal_profile else None
    if heat is None:
        raise ValueError("thermal_profile.heat_generation_kw: required for thermal preparation")
    timing = msg.timing_constraints
    start = timing.earliest_start_time if timing and timing.earliest_start_time else None
    duration = msg.power_profile.duration_estimate_sec
    return HeatAnnouncement(heat * share, (start or msg.timestamp).timestamp(),
                            None if duration is None else float(duration), msg.workload_id)


class ThermalPreparation:
    """Estimates the loop's heat and schedules announced loads; stepped before the loops."""

    name = "thermal_preparation"

    def __init__(self, config: PreparationConfig, events: EventLog,
                 wall: Callable[[], float], *, enabled: bool = True) -> None:
        self.config = config
        self.events = events
        self._wall = wall
        self.enabled = enabled
        self.heat_kw: float | None = None  # measured, filtered
        self.flow_lpm: float | None = None
        self._active: list[tuple[HeatAnnouncement, float, float]] = []  # (ann, start, end)
        self._pending: list[HeatAnnouncement] = []
        self._base_heat = 0.0
        self._base_flow = 0.0
        self._base_speed_per_lpm: float | None = None
        self._bias = 0.0
        self._flow_base_sp: float | None = None  # the pump loop's own flow setpoint
        self._now = 0.0

    # -- commands -----------------------------------------------------------------------------
    def announce(self, ann: HeatAnnouncement) -> None:
        """Accept an announced heat load; ValueError with the reason when refused."""
        c = self.config
        if not self.enabled:
            raise ValueError("predictive thermal preparation is disabled on this node")
        h = ann.heat_kw
        if isinstance(h, bool) or not isinstance(h, int | float) or not math.isfinite(h):
            raise ValueError(f"heat_generation_kw must be a number, got {h!r}")
        if not 0.0 <= h <= c.max_heat_kw:
            raise ValueError(f"heat_generation_kw {h:g} kW outside 0..{c.max_heat_kw:g} kW")
        duration = c.default_duration_s if ann.duration_s is None else ann.duration_s
        if (isinstance(duration, bool) or not isinstance(duration, int | float)
                or not (math.isfinite(duration) and duration > 0.0)):
            raise ValueError(f"duration must be > 0 s, got {ann.duration_s!r}")
        if not math.isfinite(ann.start_wall):
            raise ValueError(f"start time must be finite, got {ann.start_wall!r}")
        if ann.start_wall + duration <= self._wall():
            raise ValueError("the announced load has already ended")
        self._pending.append(replace(ann, duration_s=float(duration)))

    def cancel(self, workload_id: str) -> int:
        """Drop announcements of a workload; returns how many."""
        before = len(self._active) + len(self._pending)
        self._active = [a for a in self._active if a[0].workload_id != workload_id]
        self._pending = [a for a in self._pending if a.workload_id != workload_id]
        return before - len(self._active) - len(self._pending)

    # -- scan -----------------------------------------------------------------------------------
    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Update the heat estimate, admit new announcements, expire finished ones."""
        c = self.config
        self._now = now
        sup, ret, flow = (image.value(p) for p in (c.supply_point, c.return_point, c.flow_point))
        if flow is not None:  # lightly filtered: the valve feedforward follows flow changes
            self.flow_lpm = flow if self.flow_lpm is None else self.flow_lpm + (
                flow - self.flow_lpm) * min(dt / FLOW_FILTER_S, 1.0)
        if sup is not None and ret is not None and flow is not None:
            q = c.model.heat_kw(flow, ret, sup)
            self.heat_kw = q if self.heat_kw is None else self.heat_kw + (
                q - self.heat_kw) * min(dt / c.heat_filter_s, 1.0)
        offset = self._wall() - now
        for ann in self._pending:
            if not self._active:  # the reference the feedforward is measured from
                self._base_heat = self.heat_kw or 0.0
                self._base_flow = self.flow_lpm or 0.0
                self._base_speed_per_lpm = None
            start = ann.start_wall - offset
            duration = ann.duration_s or c.default_duration_s
            self._active.append((ann, start, start + duration))
            self.events.raise_event(
                self._wall(), self.name, Severity.INFO,
                f"announced {ann.heat_kw:g} kW in {start - now:.1f} s for {duration:g} s"
                f" ({ann.workload_id or 'no id'})", "heat_announced")
        self._pending.clear()
        settle = self._delay_s() + 5.0 * self._lag_s() + c.lead_s
        self._active = [a for a in self._active if a[2] + settle > now]

    def _delay_s(self) -> float:
        flow = max(self.flow_lpm or 0.0, 1.0)
        return self.config.return_volume_l / flow * 60.0

    def _lag_s(self) -> float:
        mcp = self.config.model.mcp(max(self.flow_lpm or 0.0, 1.0))
        return self.config.rack_mass_kj_per_k / mcp

    def announced_at_rack(self, t: float) -> float:
        """Announced heat (kW) the rack produces at monotonic time t."""
        return sum(a.heat_kw for a, start, end in self._active if start <= t < end)

    def announced_at_hx(self, t: float) -> float:
        """Announced heat reaching the heat exchanger at t: delayed and lagged."""
        delay, lag = self._delay_s(), self._lag_s()

        def g(x: float) -> float:
            return 1.0 - math.exp(-x / lag) if x > 0.0 else 0.0

        return sum(a.heat_kw * (g(t - start - delay) - g(t - end - delay))
                   for a, start, end in self._active)

    @property
    def active(self) -> bool:
        """True while an announcement still shapes the feedforward."""
        return bool(self._active)

    # -- what the loops ask -----------------------------------------------------------------
    def valve_bias_pct(self, now: float, dt: float, supply_setpoint: float) -> float:
        """Feedforward on the valve (%), zero without an active announcement."""
        c = self.config
        target = 0.0
        if self._active and self.flow_lpm:
            dq = self.announced_at_hx(now + c.lead_s)
            flow = self.flow_lpm
            if c.design_delta_t_k is not None and self._flow_base_sp is not None:
                # The flow this block is about to ask for: more flow through the HX warms the
                # supply at once, so the valve leads that too.
                flow = max(flow, self.flow_setpoint_lpm(now + c.lead_s, self._flow_base_sp))
            base = c.model.valve_for(self._base_heat, self._base_flow or self.flow_lpm,
                                     supply_setpoint)
            target = c.model.valve_for(self._base_heat + dq, flow, supply_setpoint) - base
        step = c.valve_rate_pct_per_s * dt
        self._bias += min(max(target - self._bias, -step), step)
        return self._bias

    def _flow_for(self, heat_kw: float, base_lpm: float) -> float:
        c = self.config
        assert c.design_delta_t_k is not None
        want = c.model.flow_for(heat_kw, c.design_delta_t_k)
        return min(max(want, base_lpm, c.min_flow_lpm), c.max_flow_lpm)

    def flow_setpoint_lpm(self, now: float, base_lpm: float) -> float:
        """Flow setpoint: base, or what the heat needs at the design rack dT: the measured
        heat, or ahead of an announced load the announced heat, whichever is larger."""
        c = self.config
        self._flow_base_sp = base_lpm
        if c.design_delta_t_k is None:
            return base_lpm
        want = self._flow_for(self.heat_kw or 0.0, base_lpm)
        if self._active:
            t = now + c.pump_lead_s
            want = max(want, self._flow_for(self._base_heat + self.announced_at_rack(t),
                                            base_lpm))
        return want

    def speed_bias_pct(self, now: float, speed_pct: float, base_lpm: float) -> float:
        """Pump speed feedforward for the announced part of the flow: flow proportional to
        speed in a closed loop (affinity law), scaled from speed and flow at announcement."""
        c = self.config
        if not self._active or c.design_delta_t_k is None or not self._base_flow:
            return 0.0
        if self._base_speed_per_lpm is None:
            self._base_speed_per_lpm = speed_pct / self._base_flow
        announced = self.announced_at_rack(now + c.pump_lead_s)
        extra = (self._flow_for(self._base_heat + announced, base_lpm)
                 - self._flow_for(self._base_heat, base_lpm))
        return extra * self._base_speed_per_lpm

    def get_status(self) -> dict[str, Any]:
        """Heat estimate and the announcements in force."""
        return {"enabled": self.enabled, "heat_kw": self.heat_kw, "flow_lpm": self.flow_lpm,
                "valve_bias_pct": self._bias,
                "announcements": [{"workload_id": a.workload_id, "heat_kw": a.heat_kw,
                                   "starts_in_s": s - self._now, "ends_in_s": e - self._now}
                                  for a, s, e in self._active]}


class SupplyTemperatureControl:
    """Holds the CDU supply temperature with the facility-water valve (direct acting PID)."""

    def __init__(self, *, loop: ModalPid, valve: ValveChannel, supply_point: str,
                 preparation: ThermalPreparation | None = None,
                 held: Mapping[str, float] | None = None, name: str = "supply_temp") -> None:
        self.name = name
        self.loop = loop
        self.valve = valve
        self.supply_point = supply_point
        self.preparation = preparation
        self.held = held if held is not None else {}
        self.pv: float | None = None
        self._written: float | None = None  # what this block left in the image last scan

    def set_setpoint(self, value: float) -> None:
        """Command: new Automatic setpoint (degC) within the configured range; ValueError."""
        self.loop.mode.set_setpoint(value)

    def set_mode(self, mode: ControlMode | str, value: float | None = None) -> None:
        """Redfish ControlMode (Override: supply setpoint degC; Manual: valve %)."""
        self.loop.set_mode(mode, value)

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Check the valve, regulate, write the valve command."""
        cmd_point = self.valve.config.command_point
        following = self.valve.check(image, now, dt)
        self.pv = pv = image.value(self.supply_point)
        ff = 0.0
        if self.preparation is not None:
            ff = self.preparation.valve_bias_pct(now, dt, self.loop.mode.setpoint)
        current = image.output(cmd_point)
        held = self.held.get(cmd_point)
        if held is None and self._written is not None and abs(current - self._written) > 1e-6:
            held = current  # an interlock or force changed it after us: follow, bumplessly
        out = self.loop.run(pv, dt, ff=ff, current_output=current, held=held,
                            hold_integral=not following)
        if out is not None:
            self.valve.write(image, out)
        self._written = image.output(cmd_point)

    def get_status(self) -> dict[str, Any]:
        """Loop and valve state."""
        return {"loop": self.loop.get_status(), "valve": self.valve.get_status(), "pv": self.pv}
