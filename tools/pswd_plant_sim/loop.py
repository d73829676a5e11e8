"""Lumped coolant loop: VFD pumps in parallel, a facility-water valve and heat exchanger,
rack cold plates with thermal mass, and plug-flow transport delays. Sans-IO, no clock.

Units: flow L/min, head and pressure bar, temperature degC, heat and power kW.
"""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass

log = logging.getLogger(__name__)

FW_CP = 4186.0  # facility water, J/(kg K)
FW_DENSITY = 998.0  # kg/m3
PUMP_FAULT_FAILURE = 16  # fault_code reported for an injected pump failure


@dataclass(frozen=True, slots=True)
class LoopConfig:
    """Physical parameters of one CDU loop; defaults suit a ~120 kW liquid-cooled rack."""

    pumps: int = 2
    pump_shutoff_head_bar: float = 3.0  # head at zero flow, full speed
    pump_max_flow_lpm: float = 300.0  # flow at zero head, full speed
    pump_efficiency: float = 0.6  # hydraulic
    motor_efficiency: float = 0.92
    pump_ramp_pct_per_s: float = 20.0  # VFD acceleration / deceleration limit
    system_head_bar: float = 1.5  # system curve: this head ...
    system_flow_lpm: float = 200.0  # ... at this flow (quadratic, closed loop)
    static_pressure_bar: float = 1.0  # expansion-vessel pressure at the pump suction
    return_pressure_frac: float = 0.1  # share of the head still present at the return sensor
    coolant_cp: float = 3900.0  # J/(kg K), PG25
    coolant_density: float = 1025.0  # kg/m3
    rack_mass_kj_per_k: float = 120.0  # cold plates, manifolds and their coolant
    cdu_mass_kj_per_k: float = 150.0  # HX hot side, reservoir, CDU piping
    supply_pipe_l: float = 25.0  # CDU -> rack (plug flow)
    return_pipe_l: float = 25.0  # rack -> return sensor (plug flow)
    hx_ua_kw_per_k: float = 25.0
    fw_temp_c: float = 22.0  # facility water supply
    fw_max_flow_lpm: float = 250.0  # facility water with the valve fully open
    valve_characteristic: str = "equal_percentage"  # or "linear"
    valve_rangeability: float = 50.0
    valve_travel_s: float = 20.0  # full stroke
    initial_valve_pct: float = 100.0  # where the actuator stands at start (its failsafe)
    initial_temp_c: float = 30.0
    leak_cable_m: float = 50.0
    throttle_start_c: float = 65.0  # rack outlet temperature where IT starts throttling
    throttle_stop_c: float = 80.0  # ... and where it is down to 10 %

    @property
    def pump_k(self) -> float:
        """Pump curve coefficient: H = H0 s^2 - k Q^2."""
        return self.pump_shutoff_head_bar / self.pump_max_flow_lpm**2

    @property
    def system_k(self) -> float:
        """System curve coefficient: H = k Q^2."""
        return self.system_head_bar / self.system_flow_lpm**2


class Pump:
    """A centrifugal pump on a VFD: ramp-limited speed, latched faults, run hours."""

    def __init__(self, name: str, config: LoopConfig) -> None:
        self.name = name
        self.config = config
        self.run_cmd = False
        self.speed_ref_pct = 0.0
        self.speed_pct = 0.0
        self.failed = False  # fault cause present (injected)
        self.fault_latched = False
        self.fault_code = 0
        self.run_hours = 0.0
        self.flow_lpm = 0.0
        self.head_bar = 0.0
        self._reset_prev = False

    def command(self, *, run: bool, speed_ref_pct: float, fault_reset: bool = False) -> None:
        """Latch the VFD's control inputs; a fault resets on the rising edge of fault_reset."""
        self.run_cmd = run
        self.speed_ref_pct = min(max(speed_ref_pct, 0.0), 100.0)
        if fault_reset and not self._reset_prev and self.fault_latched and not self.failed:
            log.info("pump %s: fault reset", self.name)
            self.fault_latched = False
            self.fault_code = 0
        self._reset_prev = fault_reset

    def fail(self) -> None:
        """Motor/drive failure: the fault latches and the pump stops at once."""
        if not self.failed:
            log.warning("pump %s: failure", self.name)
        self.failed = True
        self.fault_latched = True
        self.fault_code = PUMP_FAULT_FAILURE
        self.speed_pct = 0.0

    def repair(self) -> None:
        """Remove the cause; the latched fault still needs a fault reset."""
        self.failed = False

    @property
    def running(self) -> bool:
        """Shaft turning."""
        return self.speed_pct > 0.0

    @property
    def ready(self) -> bool:
        """No fault: would start on a run command."""
        return not self.fault_latched

    @property
    def shaft_kw(self) -> float:
        """Hydraulic power / pump efficiency (kW)."""
        q = self.flow_lpm / 60_000.0  # m3/s
        return q * self.head_bar * 1e5 / self.config.pump_efficiency / 1000.0

    @property
    def electrical_kw(self) -> float:
        """Motor input power (kW)."""
        return self.shaft_kw / self.config.motor_efficiency

    def step(self, dt: float) -> None:
        """Advance the speed ramp and the run-hours counter."""
        target = self.speed_ref_pct if self.run_cmd and not self.fault_latched else 0.0
        if self.failed:
            target = 0.0
            self.speed_pct = 0.0
        ramp = self.config.pump_ramp_pct_per_s * dt
        self.speed_pct += min(max(target - self.speed_pct, -ramp), ramp)
        if self.running:
            self.run_hours += dt / 3600.0


def solve_parallel(
    speeds: list[float], shutoff_bar: float, pump_k: float, system_k: float
) -> tuple[float, list[float]]:
    """Operating point of pumps in parallel (speed fractions) on a quadratic system curve.

    Each pump follows H = H0 s^2 - k_p Q^2 (affinity laws) with a check valve (no reverse
    flow); the system follows H = k_s Q^2. Returns (head bar, flow per pump L/min).
    """
    top = max((shutoff_bar * s * s for s in speeds), default=0.0)
    if top <= 0.0:
        return 0.0, [0.0] * len(speeds)

    def flows(h: float) -> list[float]:
        return [math.sqrt(max(shutoff_bar * s * s - h, 0.0) / pump_k) for s in speeds]

    lo, hi = 0.0, top
    # bisection to 2^-44 of the top head: pump flows fall with head, system flow rises
    for _ in range(44):
        mid = 0.5 * (lo + hi)
        if sum(flows(mid)) > math.sqrt(mid / system_k):
            lo = mid
        else:
            hi = mid
    head = 0.5 * (lo + hi)
    return head, flows(head)


def valve_fraction(position_pct: float, characteristic: str, rangeability: float) -> float:
    """Flow fraction of full-open flow at a valve position (0..100 %), tight shut-off at 0."""
    x = min(max(position_pct / 100.0, 0.0), 1.0)
    if characteristic == "linear":
        return x
    r = rangeability
    return float((r ** (x - 1.0) - 1.0 / r) / (1.0 - 1.0 / r))


class Valve:
    """A two-way valve with an actuator of limited travel speed."""

    def __init__(self, config: LoopConfig) -> None:
        self.config = config
        self.cmd_pct = config.initial_valve_pct
        self.position_pct = config.initial_valve_pct
        self.stuck = False

    @property
    def moving(self) -> bool:
        """Actuator travelling toward its command."""
        return not self.stuck and abs(self.cmd_pct - self.position_pct) > 0.05

    def step(self, dt: float) -> None:
        """Move toward the command at the actuator's speed."""
        if self.stuck:
            return
        rate = 100.0 / self.config.valve_travel_s * dt
        self.position_pct += min(max(self.cmd_pct - self.position_pct, -rate), rate)

    @property
    def flow_fraction(self) -> float:
        """Share of full-open flow at the current position."""
        c = self.config
        return valve_fraction(self.position_pct, c.valve_characteristic, c.valve_rangeability)


@dataclass(slots=True)
class LeakState:
    """What a leak-sensing cable along the loop sees."""

    state: int = 0  # 0 none, 1 leak, 2 cable fault
    position_m: float = 0.0
    latched: bool = False  # a leak was seen since the last clear


class TransportDelay:
    """Plug flow through a pipe of fixed volume: outlet temperature = inlet temperature when
    the cumulative pumped volume was `volume_l` less. Exact for varying flow; at zero flow the
    outlet keeps showing the stagnant parcel."""

    def __init__(self, volume_l: float, temp_c: float) -> None:
        self.volume_l = volume_l
        self._vcum = 0.0
        self._vols: list[float] = [-volume_l - 1.0, 0.0]
        self._temps: list[float] = [temp_c, temp_c]

    def push(self, volume_l: float, inlet_c: float) -> float:
        """Move `volume_l` of fluid entering at inlet_c; returns the outlet temperature."""
        if volume_l > 0.0:
            self._vcum += volume_l
            self._vols.append(self._vcum)
            self._temps.append(inlet_c)
        target = self._vcum - self.volume_l
        i = bisect.bisect_right(self._vols, target)
        if i > 64 and i > len(self._vols) // 2:  # forget parcels that have left the pipe
            del self._vols[: i - 1]
            del self._temps[: i - 1]
            i = 1
        if i >= len(self._vols):
            return self._temps[-1]
        v0, v1 = self._vols[i - 1], self._vols[i]
        t0, t1 = self._temps[i - 1], self._temps[i]
        return t0 + (t1 - t0) * (target - v0) / (v1 - v0) if v1 > v0 else t1


def counterflow_effectiveness(ua: float, c_hot: float, c_cold: float) -> float:
    """Effectiveness of a counterflow heat exchanger (e-NTU)."""
    c_min, c_max = min(c_hot, c_cold), max(c_hot, c_cold)
    if c_min <= 0.0:
        return 0.0
    ntu = ua / c_min
    cr = c_min / c_max
    if abs(1.0 - cr) < 1e-9:
        return ntu / (1.0 + ntu)
    e = math.exp(-ntu * (1.0 - cr))
    return (1.0 - e) / (1.0 - cr * e)


def _relax(temp: float, target: float, tau: float, dt: float) -> float:
    """Exact first-order step toward target: stable for any dt."""
    return target + (temp - target) * math.exp(-dt / tau)


class CoolantLoop:
    """The whole CDU loop; `step(dt, it_kw)` advances it with the IT heat of this step."""

    def __init__(self, config: LoopConfig | None = None) -> None:
        self.config = c = config or LoopConfig()
        self.pumps = [Pump(f"pump{i + 1}", c) for i in range(c.pumps)]
        self.valve = Valve(c)
        t0 = c.initial_temp_c
        self.supply_c = t0  # CDU outlet = HX hot-side outlet
        self.rack_inlet_c = t0
        self.rack_outlet_c = t0
        self.return_c = t0  # at the CDU return sensor, after the return pipe
        self.fw_return_c = c.fw_temp_c
        self.fw_flow_lpm = 0.0
        self.flow_lpm = 0.0
        self.head_bar = 0.0
        self.hx_kw = 0.0
        self.it_heat_kw = 0.0
        self.leak = LeakState()
        self._supply_pipe = TransportDelay(c.supply_pipe_l, t0)
        self._return_pipe = TransportDelay(c.return_pipe_l, t0)

    def pump(self, index: int) -> Pump:
        """Pump by 1-based number."""
        return self.pumps[index - 1]

    @property
    def supply_pressure_bar(self) -> float:
        """Pump discharge pressure (absolute to the static fill pressure)."""
        return self.config.static_pressure_bar + self.head_bar

    @property
    def return_pressure_bar(self) -> float:
        """Pressure at the return sensor, upstream of the pump suction."""
        return self.config.static_pressure_bar + self.config.return_pressure_frac * self.head_bar

    @property
    def pump_power_kw(self) -> float:
        """Electrical power of all pumps."""
        return sum(p.electrical_kw for p in self.pumps)

    def throttle(self) -> float:
        """Fraction of demanded IT power the hardware allows at the current outlet temperature."""
        c = self.config
        if self.rack_outlet_c <= c.throttle_start_c:
            return 1.0
        span = c.throttle_stop_c - c.throttle_start_c
        return max(0.1, 1.0 - 0.9 * (self.rack_outlet_c - c.throttle_start_c) / span)

    def _hydraulics(self, dt: float) -> None:
        c = self.config
        for p in self.pumps:
            p.step(dt)
        speeds = [p.speed_pct / 100.0 for p in self.pumps]
        self.head_bar, flows = solve_parallel(
            speeds, c.pump_shutoff_head_bar, c.pump_k, c.system_k
        )
        for p, q in zip(self.pumps, flows, strict=True):
            p.flow_lpm, p.head_bar = q, self.head_bar
        self.flow_lpm = sum(flows)

    def step(self, dt: float, it_kw: float) -> None:
        """Advance hydraulics, valve and temperatures by dt with it_kw of IT heat."""
        c = self.config
        self._hydraulics(dt)
        self.valve.step(dt)
        self.fw_flow_lpm = c.fw_max_flow_lpm * self.valve.flow_fraction
        self.it_heat_kw = it_kw

        volume = self.flow_lpm * dt / 60.0
        mcp = self.flow_lpm / 60_000.0 * c.coolant_density * c.coolant_cp / 1000.0  # kW/K
        self.rack_inlet_c = self._supply_pipe.push(volume, self.supply_c)
        if mcp > 1e-9:
            self.rack_outlet_c = _relax(self.rack_outlet_c, self.rack_inlet_c + it_kw / mcp,
                                        c.rack_mass_kj_per_k / mcp, dt)
        else:
            self.rack_outlet_c += it_kw * dt / c.rack_mass_kj_per_k
        self.return_c = self._return_pipe.push(volume, self.rack_outlet_c)

        c_fw = self.fw_flow_lpm / 60_000.0 * FW_DENSITY * FW_CP / 1000.0
        eps = counterflow_effectiveness(c.hx_ua_kw_per_k, mcp, c_fw)
        self.hx_kw = eps * min(mcp, c_fw) * (self.return_c - c.fw_temp_c)
        self.fw_return_c = c.fw_temp_c + (self.hx_kw / c_fw if c_fw > 1e-9 else 0.0)
        if mcp > 1e-9:
            self.supply_c = _relax(self.supply_c, self.return_c - self.hx_kw / mcp,
                                   c.cdu_mass_kj_per_k / mcp, dt)
