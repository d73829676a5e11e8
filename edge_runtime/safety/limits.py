"""Point states: limit monitoring (low_low .. high_high, hysteresis, delay) and the conditions
interlock rules test on points.

Sans-IO: `update(sample, now)` returns the transitions it saw and whoever owns the event log
emits them, so a monitor replays unchanged in simulated time. Rules, per threshold t:
- a high threshold is raised when the value has been above t (strictly) for `delay_s` of scan
  time, and clears once the value is back to t - hysteresis or below (lows mirror this);
- a BAD (or valueless) sample is its own state, Level.BAD, with its own event: a lost sensor is
  never read as "in range". Thresholds already raised stay raised through BAD, because nothing
  shows that the condition went away; pending delays restart, because nothing shows it lasted.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from edge_runtime.config.schema import Limits
from edge_runtime.core.events import Severity
from edge_runtime.core.points import NEVER_READ, Quality, Sample

# Times are sums of float scan periods: 0.1 * 3 is 0.30000000000000004, not 0.3.
EPS = 1e-9


class Level(StrEnum):
    """Where a point's value stands against its limits (BAD: unknown)."""

    LOW_LOW = "low_low"
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    HIGH_HIGH = "high_high"
    BAD = "bad"


# Position on the value axis, for `point >= high`-style conditions. BAD has no position.
LEVEL_RANK: dict[Level, int] = {
    Level.LOW_LOW: -2, Level.LOW: -1, Level.NORMAL: 0, Level.HIGH: 1, Level.HIGH_HIGH: 2,
}
THRESHOLDS = (Level.LOW_LOW, Level.LOW, Level.HIGH, Level.HIGH_HIGH)

DEFAULT_SEVERITY: dict[Level, Severity] = {
    Level.LOW_LOW: Severity.CRITICAL,
    Level.LOW: Severity.WARNING,
    Level.HIGH: Severity.WARNING,
    Level.HIGH_HIGH: Severity.CRITICAL,
    Level.BAD: Severity.ALARM,
}


def thresholds_of(limits: Limits) -> list[tuple[Level, float]]:
    """The thresholds a Limits defines, lowest first."""
    out: list[tuple[Level, float]] = []
    for level in THRESHOLDS:
        value = getattr(limits, level.value)
        if value is not None:
            out.append((level, float(value)))
    return out


def check_limits(limits: Limits) -> list[tuple[str, str]]:
    """Contradictions in a Limits as (key, reason) pairs; empty when it is consistent."""
    present = thresholds_of(limits)
    h = limits.hysteresis
    problems: list[tuple[str, str]] = []
    if not present:
        problems.append(("(table)", "give at least one of low_low, low, high, high_high"))
    if h < 0:
        problems.append(("hysteresis", f"must be >= 0, got {h:g}"))
    if limits.delay_s < 0:
        problems.append(("delay_s", f"must be >= 0, got {limits.delay_s:g}"))
    for (l1, v1), (l2, v2) in itertools.pairwise(present):
        gap = v2 - v1
        if gap <= 0:
            problems.append((l2.value, f"thresholds must rise low_low < low < high < high_high; "
                                       f"{l1} = {v1:g} is not below {l2} = {v2:g}"))
        elif LEVEL_RANK[l1] < 0 < LEVEL_RANK[l2] and gap <= 2 * h:
            # Both states clear only `h` inside their thresholds: the point could be low and
            # high at once.
            problems.append(("hysteresis", f"{h:g} is too wide for the normal band {l1} = "
                                           f"{v1:g} .. {l2} = {v2:g}; keep it under {gap / 2:g}"))
        elif LEVEL_RANK[l1] * LEVEL_RANK[l2] > 0 and gap <= h:
            problems.append(("hysteresis", f"{h:g} is not below the {gap:g} between "
                                           f"{l1} and {l2}"))
    return problems


@dataclass(frozen=True, slots=True)
class LimitTransition:
    """A threshold raised or cleared (or quality lost / restored, level BAD)."""

    point: str
    level: Level
    raised: bool
    severity: Severity
    message: str


class LimitMonitor:
    """Limit state of one input point."""

    def __init__(self, point: str, limits: Limits, *, unit: str = "",
                 severity: Mapping[Level, Severity] | None = None) -> None:
        problems = check_limits(limits)
        if problems:
            raise ValueError(f"{point}: " + "; ".join(f"{k}: {r}" for k, r in problems))
        self.point = point
        self.limits = limits
        self.unit = f" {unit}" if unit else ""
        self.severity = {**DEFAULT_SEVERITY, **(severity or {})}
        self._thresholds = thresholds_of(limits)
        self._active: dict[Level, bool] = {lvl: False for lvl, _ in self._thresholds}
        self._since: dict[Level, float | None] = {lvl: None for lvl, _ in self._thresholds}
        self.bad = False
        self._bad_announced = False
        self.value: float | None = None

    @property
    def level(self) -> Level:
        """Current level: BAD, else the most extreme raised threshold, else NORMAL."""
        if self.bad:
            return Level.BAD
        for lvl in (Level.HIGH_HIGH, Level.LOW_LOW, Level.HIGH, Level.LOW):
            if self._active.get(lvl):
                return lvl
        return Level.NORMAL

    def active(self, level: Level) -> bool:
        """True while `level`'s threshold is raised (independent of the quality)."""
        return self._active.get(level, False)

    def update(self, sample: Sample, now: float) -> list[LimitTransition]:
        """Evaluate one scan's sample at scan time `now`; returns the transitions only."""
        value = sample.value
        if not sample.quality.usable or value is None:
            if not self.bad:
                self.bad = True
                for lvl in self._since:
                    if not self._active[lvl]:
                        self._since[lvl] = None
            if self._bad_announced or sample is NEVER_READ:
                return []  # NEVER_READ: drivers not polled yet; no alarm flood at every boot
            self._bad_announced = True
            reason = f" ({sample.reason})" if sample.reason else ""
            return [LimitTransition(self.point, Level.BAD, True, self.severity[Level.BAD],
                                    f"{self.point}: quality bad{reason}; limits not evaluated")]
        out: list[LimitTransition] = []
        self.value = value
        if self.bad:
            self.bad = False
            if self._bad_announced:
                    out.append(LimitTransition(
                    self.point, Level.BAD, False, Severity.INFO,
                    f"{self.point}: quality restored ({value:g}{self.unit})"))
        h = self.limits.hysteresis
        for lvl, t in self._thresholds:
            high = LEVEL_RANK[lvl] > 0
            if self._active[lvl]:
                if (value <= t - h) if high else (value >= t + h):
                    self._active[lvl] = False
                    self._since[lvl] = None
                    out.append(LimitTransition(
                        self.point, lvl, False, Severity.INFO,
                        f"{self.point} {lvl} cleared: {value:g}{self.unit}"))
            elif (value > t) if high else (value < t):
                since = self._since[lvl]
                if since is None:
                    since = self._since[lvl] = now
                if now - since >= self.limits.delay_s - EPS:
                    self._active[lvl] = True
                    out.append(LimitTransition(
                        self.point, lvl, True, self.severity[lvl],
                        f"{self.point} {lvl}: {value:g}{self.unit} "
                        f"{'above' if high else 'below'} {t:g}{self.unit}"))
            else:
                self._since[lvl] = None
        return out

    def get_status(self) -> dict[str, object]:
        """Level, last usable value and thresholds."""
        return {"level": self.level.value, "value": self.value,
                "thresholds": {lvl.value: t for lvl, t in self._thresholds},
                "hysteresis": self.limits.hysteresis, "delay_s": self.limits.delay_s}


# -- conditions of interlock rules (parsed from `when` by safety.config) ----------------------
OPS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


class PointView(Protocol):
    """What a condition may read: samples (substituted or raw), limit levels, comms state."""

    def sample(self, name: str) -> Sample:
        """The sample rules act on (a BAD input replaced by its substitute, if configured)."""
        ...

    def raw(self, name: str) -> Sample:
        """The sample as latched (or voted), without substitution; NEVER_READ in start-up."""
        ...

    def level(self, name: str) -> Level:
        """Limit level of a point that has limits."""
        ...

    def comms_lost(self, device: str) -> bool | None:
        """True while every input of a device is BAD (after start-up); None before the device
        first answered during start-up."""
        ...


@dataclass(frozen=True, slots=True)
class Compare:
    """`point OP number`; unknown (None) while the point is BAD."""

    point: str
    op: str
    value: float

    def evaluate(self, view: PointView) -> bool | None:
        """True / False, or None when it cannot be evaluated."""
        s = view.sample(self.point)
        if not s.quality.usable or s.value is None:
            return None
        return OPS[self.op](s.value, self.value)

    def __str__(self) -> str:
        return f"{self.point} {self.op} {self.value:g}"


@dataclass(frozen=True, slots=True)
class LevelIs:
    """`point OP level` on the limit monitor's state, so hysteresis and delay apply."""

    point: str
    op: str
    level: Level

    def evaluate(self, view: PointView) -> bool | None:
        """True / False, or None while the point's limits are BAD."""
        current = view.level(self.point)
        if current is Level.BAD:
            return None
        return OPS[self.op](LEVEL_RANK[current], LEVEL_RANK[self.level])

    def __str__(self) -> str:
        return f"{self.point} {self.op} {self.level}"


@dataclass(frozen=True, slots=True)
class QualityIs:
    """`quality(point) == q` (or !=) on the raw sample, before any substitution."""

    point: str
    quality: Quality
    equal: bool = True

    def evaluate(self, view: PointView) -> bool | None:
        """True / False; None while the point was never read (start-up)."""
        s = view.raw(self.point)
        if s is NEVER_READ:
            return None
        return (s.quality is self.quality) == self.equal

    def __str__(self) -> str:
        return f"quality({self.point}) {'==' if self.equal else '!='} {self.quality}"


@dataclass(frozen=True, slots=True)
class BitIs:
    """`bit(point, n) == 0|1` on an integer status word; unknown while BAD."""

    point: str
    bit: int
    value: int

    def evaluate(self, view: PointView) -> bool | None:
        """True / False, or None when it cannot be evaluated."""
        s = view.sample(self.point)
        if not s.quality.usable or s.value is None:
            return None
        return (int(s.value) >> self.bit) & 1 == self.value

    def __str__(self) -> str:
        return f"bit({self.point}, {self.bit}) == {self.value}"


@dataclass(frozen=True, slots=True)
class CommsLost:
    """`comms_lost(device)`: the driver marked all of the device's inputs BAD."""

    device: str

    def evaluate(self, view: PointView) -> bool | None:
        """True / False."""
        return view.comms_lost(self.device)

    def __str__(self) -> str:
        return f"comms_lost({self.device})"


Condition = Compare | LevelIs | QualityIs | BitIs | CommsLost
