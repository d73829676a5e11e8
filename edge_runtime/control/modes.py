"""Operating modes of a control loop, named as Redfish's Control resource names them.

Redfish `Control.ControlMode` (DSP0268, Control schema v1.x):
    Automatic  automatically adjust control to meet the set point (the configured one)
    Override   user override of the automatic set point value (the loop still regulates)
    Manual     no automatic adjustments are made: the output is the operator's value
    Disabled   the control has been disabled: this loop writes nothing at all

`LoopMode` holds the mode of one loop and checks every change before it takes effect, so a
refused command leaves the loop exactly as it was and the caller gets the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from edge_runtime.control.pid import Pid


class ControlMode(StrEnum):
    """Redfish ControlMode values, spelled as Redfish spells them."""

    AUTOMATIC = "Automatic"
    OVERRIDE = "Override"
    MANUAL = "Manual"
    DISABLED = "Disabled"


def parse_mode(mode: ControlMode | str) -> ControlMode:
    """A ControlMode from its Redfish name (case-insensitive); ValueError names the choices."""
    if isinstance(mode, ControlMode):
        return mode
    if isinstance(mode, str):
        for m in ControlMode:
            if m.value.lower() == mode.strip().lower():
                return m
    raise ValueError(f"mode must be one of {', '.join(m.value for m in ControlMode)}; "
                     f"got {mode!r}")


@dataclass(frozen=True, slots=True)
class Range:
    """Allowed values of a setpoint or an output, with its unit for messages."""

    low: float
    high: float
    unit: str

    def check(self, what: str, value: Any) -> float:
        """The value as a float, or ValueError saying why it is refused."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{what} must be a number, got {value!r}")
        v = float(value)
        if not math.isfinite(v) or not self.low <= v <= self.high:
            raise ValueError(f"{what} {value!r} {self.unit} outside "
                             f"{self.low:g}..{self.high:g} {self.unit}")
        return v


class LoopMode:
    """Mode, operator setpoint (Override) and operator output (Manual) of one loop."""

    def __init__(self, loop: str, *, setpoint: float, setpoint_range: Range,
                 output_range: Range, mode: ControlMode = ControlMode.AUTOMATIC) -> None:
        self.loop = loop
        self.auto_setpoint = setpoint_range.check(f"{loop} setpoint", setpoint)
        self.setpoint_range = setpoint_range
        self.output_range = output_range
        self.mode = mode
        self.override_setpoint: float | None = None
        self.manual_output: float | None = None
        self.changed = False  # set on every accepted change; the loop clears it

    def set_mode(self, mode: ControlMode | str, value: float | None = None, *,
                 current_output: float | None = None) -> None:
        """Change mode; `value` is the setpoint for Override, the output for Manual.

        Manual without a value holds the current output (bumpless); Automatic and Disabled
        take no value. Raises ValueError with the reason and changes nothing when refused.
        """
        m = parse_mode(mode)
        sp, out = self.override_setpoint, self.manual_output
        if m is ControlMode.OVERRIDE:
            if value is None:
                raise ValueError(f"{self.loop}: Override needs a setpoint value")
            sp = self.setpoint_range.check(f"{self.loop} override setpoint", value)
        elif m is ControlMode.MANUAL:
            if value is None:
                if current_output is None:
                    raise ValueError(f"{self.loop}: Manual needs an output value "
                                     f"(no current output to hold)")
                value = current_output
            out = self.output_range.check(f"{self.loop} manual output", value)
        elif value is not None:
            raise ValueError(f"{self.loop}: {m.value} takes no value, got {value!r}")
        self.mode, self.override_setpoint, self.manual_output = m, sp, out
        self.changed = True

    def set_setpoint(self, value: float) -> None:
        """Change the automatic (configured) setpoint, within its range."""
        self.auto_setpoint = self.setpoint_range.check(f"{self.loop} setpoint", value)
        self.changed = True

    @property
    def regulating(self) -> bool:
        """True when the PID is in control of the output (Automatic or Override)."""
        return self.mode in (ControlMode.AUTOMATIC, ControlMode.OVERRIDE)

    @property
    def setpoint(self) -> float:
        """The setpoint the loop regulates to in its current mode."""
        if self.mode is ControlMode.OVERRIDE and self.override_setpoint is not None:
            return self.override_setpoint
        return self.auto_setpoint

    def get_status(self) -> dict[str, Any]:
        """Mode and the values that go with it (Redfish property names)."""
        return {"ControlMode": self.mode.value, "SetPoint": self.setpoint,
                "DefaultSetPoint": self.auto_setpoint, "ManualOutput": self.manual_output,
                "AllowableMin": self.setpoint_range.low, "AllowableMax": self.setpoint_range.high,
                "SetPointUnits": self.setpoint_range.unit}


class ModalPid:
    """A PID under a LoopMode: decides each scan what the loop writes, keeping every mode
    change and every hand-over bumpless."""

    def __init__(self, pid: Pid, mode: LoopMode) -> None:
        self.pid = pid
        self.mode = mode
        self._tracking = True  # last scan the PID did not drive the output
        pid.set_setpoint(mode.setpoint)

    def run(self, pv: float | None, dt: float, *, current_output: float, ff: float = 0.0,
            held: float | None = None, hold_integral: bool = False,
            setpoint: float | None = None) -> float | None:
        """The output to write this scan, or None to write nothing.

        `current_output` is what the output holds now (for Disabled); `held` an operator
        value written by someone else (the command path), which the loop follows;
        `setpoint` replaces the mode's setpoint for this scan (a scheduled setpoint).
        """
        pid, mode = self.pid, self.mode
        if held is not None or mode.mode is ControlMode.DISABLED:
            pid.track(current_output if held is None else held, pv, ff=ff,
                      setpoint_to_pv=True)
            self._tracking = True
            return None
        if mode.mode is ControlMode.MANUAL:
            out = mode.manual_output if mode.manual_output is not None else current_output
            pid.track(out, pv, ff=ff, setpoint_to_pv=True)
            self._tracking = True
            return out
        if pv is None:  # no usable measurement: hold the output, take over again bumplessly
            pid.track(pid.output, None, ff=ff)
            self._tracking = True
            return pid.output
        if self._tracking:
            pid.track(pid.output, pv, ff=ff, setpoint_to_pv=True)
            self._tracking = False
        pid.set_setpoint(mode.setpoint if setpoint is None else setpoint)
        return pid.update(pv, dt, ff=ff, hold_integral=hold_integral)

    def set_mode(self, mode: ControlMode | str, value: float | None = None) -> None:
        """Change mode (Manual without a value holds the current output); ValueError if refused."""
        self.mode.set_mode(mode, value, current_output=self.pid.output)

    def get_status(self) -> dict[str, Any]:
        """Mode and PID state."""
        return {**self.mode.get_status(), **self.pid.get_status()}
