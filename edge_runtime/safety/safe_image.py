"""The safe image: the one value per output that every "drive it safe" path writes.

Each output's io_map `failsafe`, overlaid by every engaged trip and isolation. When several
engaged rules drive the same output, the more restrictive value wins, by the output's
`safe_direction` in its io_map ("low": the lower value is the safer one, e.g. a pump's
run word or a valve closing; "high": the higher one, e.g. a condenser valve opening; "zero":
the one nearer 0, e.g. a battery's signed power setpoint). Device
comms-loss registers (`mirrors = "<output>"` in the io_map: a drive's fieldbus-loss action,
a positioner's fail position) take the safe value of the output they stand for, so a device
that loses its controller falls to the safe image, not to its factory default.

The safety layer computes it every scan and publishes an immutable snapshot through a
SafeImageCell: one attribute store, so a reader on another thread (the watchdog thread with
the loop frozen, a driver's max-hold expiry) always sees one whole, consistent image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from edge_runtime.config.schema import PointSpec


class Direction(StrEnum):
    """Which way an output is safer."""

    LOW = "low"  # stop, close: the default
    HIGH = "high"  # open, full: e.g. a condenser valve against over-pressure
    ZERO = "zero"  # nearer 0: a signed setpoint (battery power: neither charge nor discharge)


DEFAULT_DIRECTION = Direction.LOW


def direction_of(spec: PointSpec) -> Direction:
    """An output's declared safe direction (io_map `safe_direction`, default low)."""
    return Direction(spec.safe_direction or DEFAULT_DIRECTION.value)


def more_restrictive(direction: Direction, a: float, b: float) -> float:
    """The safer of two values for an output with this direction."""
    if direction is Direction.ZERO:
        return a if abs(a) <= abs(b) else b
    return min(a, b) if direction is Direction.LOW else max(a, b)


@dataclass(frozen=True, slots=True)
class SafeImage:
    """One immutable snapshot: output -> safe value, and what shaped it."""

    values: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    engaged: tuple[str, ...] = ()  # the engaged trips / isolations overlaid on the failsafes
    seq: int = 0  # +1 per publication that changed something


class SafeImageCell:
    """The hand-off of the latest snapshot between the scan and any other thread."""

    def __init__(self, initial: SafeImage | None = None) -> None:
        self._current = initial or SafeImage()

    def publish(self, image: SafeImage) -> None:
        """Replace the snapshot (one reference store: atomic for every reader)."""
        self._current = image

    def get(self) -> SafeImage:
        """The latest snapshot."""
        return self._current


@dataclass(frozen=True, slots=True)
class OutputRules:
    """Static per-output facts the computation needs, built once from the image."""

    failsafe: Mapping[str, float]
    direction: Mapping[str, Direction]
    mirrors: Mapping[str, str]  # comms-loss register -> the output it stands for

    @classmethod
    def from_specs(cls, outputs: Mapping[str, PointSpec]) -> OutputRules:
        """From full output name -> PointSpec (mirrors named within the same device)."""
        mirrors: dict[str, str] = {}
        for name, spec in outputs.items():
            target = spec.mirrors
            if target:
                device = name.rsplit(".", 1)[0]
                mirrors[name] = f"{device}.{target}"
        return cls(
            failsafe=MappingProxyType({n: float(s.failsafe or 0.0) for n, s in outputs.items()}),
            direction=MappingProxyType({n: direction_of(s) for n, s in outputs.items()}),
            mirrors=MappingProxyType(mirrors),
        )


def compute(rules: OutputRules, overlays: Iterable[tuple[str, Mapping[str, float]]],
            seq: int = 0) -> SafeImage:
    """Failsafes overlaid by (rule name, {output: value}) of every engaged trip / isolation."""
    values = dict(rules.failsafe)
    driven: dict[str, float] = {}
    names: list[str] = []
    for name, outputs in overlays:
        names.append(name)
        for point, value in outputs.items():
            if point not in values:
                continue  # config checks names; an unknown one cannot make anything safer
            prev = driven.get(point)
            driven[point] = value if prev is None else more_restrictive(
                rules.direction.get(point, DEFAULT_DIRECTION), prev, value)
    values.update(driven)
    for register, target in rules.mirrors.items():
        if target in values:
            values[register] = values[target]
    return SafeImage(MappingProxyType(values), tuple(names), seq)
