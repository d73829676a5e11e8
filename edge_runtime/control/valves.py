"""A modulating valve as the control blocks see it: command out, position feedback checked.

The check runs an actuator model (rate-limited by the full-stroke travel time) beside the
real valve: when the measured position stays further than `tolerance_pct` from where a
healthy actuator would be for `delay_s`, or the actuator reports a fault, the valve is
declared not following. The loop then stops integrating (an integrator that pushes on a
seized stem only winds up) and an alarm says so; it clears when the feedback follows again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality

FAULT_BIT = 1 << 1  # control_valve status: bit 0 moving, bit 1 fault


@dataclass(frozen=True, slots=True)
class ValveConfig:
    """Points and feedback-check parameters of one valve (control_valve io_map)."""

    device: str  # the valve device, e.g. "valve"
    travel_s: float = 20.0  # full stroke of the actuator
    tolerance_pct: float = 5.0  # feedback further than this from the model is a mismatch
    delay_s: float = 5.0  # ... for this long
    check_feedback: bool = True

    @property
    def command_point(self) -> str:
        """The position command output."""
        return f"{self.device}.position_cmd"

    @property
    def feedback_point(self) -> str:
        """The measured stem position."""
        return f"{self.device}.position_fb"

    @property
    def status_point(self) -> str:
        """Status word (bit 1 fault)."""
        return f"{self.device}.status"

    @property
    def rate_pct_per_s(self) -> float:
        """Stroke speed of a healthy actuator."""
        return 100.0 / self.travel_s


class ValveChannel:
    """Writes a valve's command and watches its feedback; sans-IO."""

    def __init__(self, config: ValveConfig, events: EventLog, wall: Any = None) -> None:
        self.config = config
        self.events = events
        self._wall = wall  # callable giving UTC seconds for event records, or None
        self.expected: float | None = None  # where a healthy actuator would stand
        self.feedback: float | None = None
        self.following = True
        self._mismatch_since: float | None = None
        self._stuck_at: float | None = None  # feedback when the mismatch was declared
        self.alarms = 0

    def write(self, image: ProcessImage, position_pct: float) -> None:
        """Stage the position command (clamped to 0..100 %)."""
        image.write(self.config.command_point, min(max(position_pct, 0.0), 100.0))

    def check(self, image: ProcessImage, now: float, dt: float) -> bool:
        """Advance the actuator model toward the staged command; False when not following."""
        c = self.config
        cmd = image.output(c.command_point)
        fb_sample = image.sample(c.feedback_point)
        fb = fb_sample.value if fb_sample.quality.usable else None
        self.feedback = fb
        if self.expected is None:
            self.expected = fb if fb is not None else cmd
        step = c.rate_pct_per_s * dt
        self.expected += min(max(cmd - self.expected, -step), step)
        if not c.check_feedback or fb is None:
            self._mismatch_since = None
            return self._set(True, now, "")
        status = image.sample(c.status_point)
        faulted = (status.quality is not Quality.BAD and status.value is not None
                   and int(status.value) & FAULT_BIT)
        if faulted:
            self._stuck_at = None
            return self._set(False, now, "actuator reports a fault (status bit 1)")
        if not self.following and self._stuck_at is not None:
            # Declared not following: it follows again once it reaches its command or
            # visibly moves; meanwhile the model stays on the real stem.
            self.expected = fb
            if abs(fb - cmd) <= c.tolerance_pct or abs(fb - self._stuck_at) >= c.tolerance_pct:
                self._mismatch_since = None
                return self._set(True, now, "")
            return False
        if abs(fb - self.expected) <= c.tolerance_pct:
            self._mismatch_since = None
            return self._set(True, now, "")
        if self._mismatch_since is None:
            self._mismatch_since = now
        if now - self._mismatch_since >= c.delay_s:
            self._stuck_at = fb
            return self._set(False, now, f"feedback {fb:.1f} % does not follow command "
                             f"{cmd:.1f} % (tolerance {c.tolerance_pct:g} % for {c.delay_s:g} s)")
        return self.following

    def _set(self, following: bool, now: float, why: str) -> bool:
        if following != self.following:
            ts = self._wall() if self._wall is not None else now
            if following:
                self.events.raise_event(ts, f"valve.{self.config.device}", Severity.INFO,
                                        "position feedback follows the command again",
                                        "valve_feedback_ok")
            else:
                self.alarms += 1
                self.events.raise_event(ts, f"valve.{self.config.device}", Severity.ALARM,
                                        why, "valve_feedback")
            self.following = following
        return following

    def get_status(self) -> dict[str, Any]:
        """Feedback, model position and the check's verdict."""
        return {"feedback_pct": self.feedback, "expected_pct": self.expected,
                "following": self.following, "alarms": self.alarms}
