"""PID controller (ISA form), sans-IO: the caller hands it the measurement and dt each scan.

    u = Kp * (e + I + D) + ff,   e = sign * (sp_working - pv)

- Derivative acts on the measurement, not the error (no kick on a setpoint change), through a
  first-order filter of time constant Td / N.
- Anti-windup: conditional integration (the integral does not grow while the output is
  saturated in the direction the error pushes) plus back-calculation (the integral is pulled
  toward the limited output with tracking time Tt), so it recovers at once when the error
  turns.
- Output limits and an output rate limit (a valve actuator or a VFD ramp cannot go faster, and
  an integrator that believes it can would wind up against the actuator).
- Setpoint ramp: the working setpoint moves toward the target at a bounded rate.
- Bumpless transfer: `track(output, pv)` makes the controller's state agree with an output set
  by someone else (manual mode, an operator hold, a disabled loop), so taking control back
  starts from that output with no step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PidConfig:
    """Tuning and limits; times in seconds, gain in output units per measurement unit."""

    kp: float
    ti_s: float = math.inf  # integral time; inf = no integral action
    td_s: float = 0.0  # derivative time; 0 = no derivative action
    derivative_filter_n: float = 10.0  # derivative filter time constant = td_s / N
    tt_s: float | None = None  # back-calculation tracking time; None = sqrt(Ti*Td) or Ti
    out_min: float = 0.0
    out_max: float = 100.0
    rate_limit_per_s: float | None = None  # output units per second; None = unlimited
    setpoint_ramp_per_s: float | None = None  # measurement units per second; None = step
    direct_acting: bool = False  # True: output rises when the measurement rises (cooling)

    def __post_init__(self) -> None:
        problems = check_pid_config(self)
        if problems:
            raise ValueError("; ".join(f"{k}: {why}" for k, why in problems))

    @property
    def tracking_s(self) -> float:
        """Tracking time of the back-calculation (Astrom: between Td and Ti)."""
        if self.tt_s is not None:
            return self.tt_s
        if math.isfinite(self.ti_s) and self.td_s > 0.0:
            return math.sqrt(self.ti_s * self.td_s)
        return self.ti_s if math.isfinite(self.ti_s) else 1.0


def check_pid_config(c: PidConfig) -> list[tuple[str, str]]:
    """(key, reason) for every inconsistent tuning value; empty when usable."""
    out: list[tuple[str, str]] = []
    if not math.isfinite(c.kp) or c.kp <= 0.0:
        out.append(("kp", f"must be a positive number (use direct_acting for the sign), "
                          f"got {c.kp!r}"))
    if not c.ti_s > 0.0:
        out.append(("ti_s", f"must be > 0, got {c.ti_s!r}"))
    if not (math.isfinite(c.td_s) and c.td_s >= 0.0):
        out.append(("td_s", f"must be >= 0, got {c.td_s!r}"))
    if not (math.isfinite(c.derivative_filter_n) and c.derivative_filter_n > 0.0):
        out.append(("derivative_filter_n", f"must be > 0, got {c.derivative_filter_n!r}"))
    if c.tt_s is not None and not (math.isfinite(c.tt_s) and c.tt_s > 0.0):
        out.append(("tt_s", f"must be > 0, got {c.tt_s!r}"))
    if not (math.isfinite(c.out_min) and math.isfinite(c.out_max) and c.out_min < c.out_max):
        out.append(("out_max", f"must be above out_min ({c.out_min!r}), got {c.out_max!r}"))
    for key in ("rate_limit_per_s", "setpoint_ramp_per_s"):
        v = getattr(c, key)
        if v is not None and not (math.isfinite(v) and v > 0.0):
            out.append((key, f"must be > 0 when given, got {v!r}"))
    return out


class Pid:
    """One PID loop; `update` once per scan, `track` whenever it is not in control."""

    def __init__(self, config: PidConfig, *, setpoint: float, output: float | None = None) -> None:
        self.config = config
        self.setpoint = setpoint  # target
        self.working_setpoint = setpoint  # what the loop regulates to now (ramped)
        c = config
        self.output = min(max(c.out_min if output is None else output, c.out_min), c.out_max)
        self.integral = 0.0  # in error units (multiplied by Kp for the output)
        self.derivative = 0.0  # filtered, in error units
        self._last_pv: float | None = None
        self._last_ff = 0.0
        self._sign = 1.0 if c.direct_acting else -1.0  # error = sign * (pv - sp)

    def set_setpoint(self, setpoint: float, *, ramp_from: float | None = None) -> None:
        """New target; with a ramp configured the working setpoint travels there from
        `ramp_from` (the current working setpoint when None)."""
        self.setpoint = setpoint
        if ramp_from is not None:
            self.working_setpoint = ramp_from
        if self.config.setpoint_ramp_per_s is None:
            self.working_setpoint = setpoint

    def error(self, pv: float) -> float:
        """Error of the working setpoint, signed so that a positive error raises the output."""
        return self._sign * (pv - self.working_setpoint)

    def update(self, pv: float, dt: float, *, ff: float = 0.0,
               hold_integral: bool = False) -> float:
        """One step: returns the limited output (also kept in `self.output`)."""
        c = self.config
        dt = max(dt, 0.0)
        self._ramp_setpoint(dt)
        e = self.error(pv)
        # Derivative on the measurement (no setpoint kick), first-order filtered.
        if c.td_s > 0.0 and self._last_pv is not None and dt > 0.0:
            raw = self._sign * (pv - self._last_pv) / dt * c.td_s
            tf = c.td_s / c.derivative_filter_n
            self.derivative += (raw - self.derivative) * (dt / (tf + dt))
        self._last_pv = pv
        integrating = math.isfinite(c.ti_s) and not hold_integral and dt > 0.0
        unsat = c.kp * (e + self.integral + self.derivative) + ff
        limited = self._limit(unsat, dt)
        if integrating:
            # Conditional integration: no growth into a saturated limit.
            pushing_up = e > 0.0 and limited >= c.out_max
            pushing_down = e < 0.0 and limited <= c.out_min
            if not (pushing_up or pushing_down):
                self.integral += e * dt / c.ti_s
            # Back-calculation: bleed the integral toward what the actuator really got.
            unsat = c.kp * (e + self.integral + self.derivative) + ff
            self.integral += (limited - unsat) / c.kp * min(dt / c.tracking_s, 1.0)
        self.output = limited
        self._last_ff = ff
        return limited

    def _ramp_setpoint(self, dt: float) -> None:
        rate = self.config.setpoint_ramp_per_s
        gap = self.setpoint - self.working_setpoint
        if rate is None:
            self.working_setpoint = self.setpoint
        else:
            self.working_setpoint += min(max(gap, -rate * dt), rate * dt)

    def _limit(self, u: float, dt: float) -> float:
        c = self.config
        if c.rate_limit_per_s is not None:
            step = c.rate_limit_per_s * dt
            u = min(max(u, self.output - step), self.output + step)
        return min(max(u, c.out_min), c.out_max)

    def track(self, output: float, pv: float | None = None, *, ff: float = 0.0,
              setpoint_to_pv: bool = False) -> None:
        """Follow an output set elsewhere so a later `update` continues from it (bumpless).

        With `setpoint_to_pv` the working setpoint is moved to the measurement too, so the
        return to automatic has no proportional step either; the ramp then leads it back to
        the target.
        """
        c = self.config
        self.output = min(max(output, c.out_min), c.out_max)
        if pv is not None:
            if setpoint_to_pv and c.setpoint_ramp_per_s is not None:
                self.working_setpoint = pv
            self._last_pv = pv
            e = self.error(pv)
        else:
            e = 0.0
        self.derivative = 0.0
        # The integral absorbs whatever P and the feedforward do not explain.
        self.integral = (self.output - ff) / c.kp - e
        self._last_ff = ff

    def get_status(self) -> dict[str, Any]:
        """Setpoints, output and the integral's share of it."""
        return {"setpoint": self.setpoint, "working_setpoint": self.working_setpoint,
                "output": self.output, "integral_term": self.config.kp * self.integral,
                "derivative_term": self.config.kp * self.derivative, "feedforward": self._last_ff}
