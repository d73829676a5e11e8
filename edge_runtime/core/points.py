"""Point samples: value, quality, source timestamp. Immutable, so a latched image can be shared."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Quality(StrEnum):
    """OPC-UA-like point quality, carried from the driver through control and safety."""

    GOOD = "good"
    BAD = "bad"  # no usable value: comms lost, device exception, sensor fault
    UNCERTAIN = "uncertain"  # a value, but stale or outside its sensor's range
    FORCED = "forced"  # set by a technician from the commissioning tool
    SUBSTITUTED = "substituted"  # taken from a redundant sensor or a configured substitute

    @property
    def usable(self) -> bool:
        """True when control logic may act on the value."""
        return self is not Quality.BAD


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of a point: value (None when BAD), quality, source time (UTC epoch s)."""

    value: float | None
    quality: Quality
    ts: float
    reason: str = ""  # why the quality is not GOOD, for the operator

    @classmethod
    def bad(cls, reason: str, ts: float, value: float | None = None) -> Sample:
        """A BAD sample; the last value may be kept for display, never for control."""
        return cls(value, Quality.BAD, ts, reason)


NEVER_READ = Sample(None, Quality.BAD, 0.0, "not read yet")
