"""The process image: the single source of truth of a node during a scan.

Inputs are latched once at the start of a scan into an immutable mapping, so every control
block and interlock of that scan sees the same values. The estimation phase may add derived
inputs (a voted sensor group, say) for the rest of the scan through `derive()`; they never
shadow a field input and are dropped at the next latch, so each scan derives afresh. Outputs
are staged in the image and handed to the drivers only at the end of the scan, after the
interlocks had the last word.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from edge_runtime.config.schema import DeviceConfig, PointSpec
from edge_runtime.core.points import NEVER_READ, Quality, Sample
from edge_runtime.core.ports import InputTable


@dataclass(frozen=True, slots=True)
class PointInfo:
    """Static facts about a point: full name, device, unit, register spec."""

    name: str  # "device.point"
    device: str
    spec: PointSpec

    @property
    def unit(self) -> str:
        """Engineering unit."""
        return self.spec.unit


class UnknownPoint(KeyError):
    """A point name that is not in the image."""

    def __str__(self) -> str:
        return f"unknown point {self.args[0]!r}"


class OutOfRange(ValueError):
    """An output value outside its point's engineering range."""


class ProcessImage:
    """Inputs (latched samples) and outputs (staged values) of one node."""

    def __init__(self, devices: Iterable[DeviceConfig], live: InputTable) -> None:
        self._live = live
        self.inputs_info: dict[str, PointInfo] = {}
        self.outputs_info: dict[str, PointInfo] = {}
        # Per device: (device name, [(full name, point name)]) so the flush does no string work.
        self._flush_plan: list[tuple[str, list[tuple[str, str]]]] = []
        for dev in devices:
            plan: list[tuple[str, str]] = []
            for spec in dev.io_map.points:
                full = f"{dev.name}.{spec.name}"
                info = PointInfo(full, dev.name, spec)
                if spec.access.readable:
                    self.inputs_info[full] = info
                    live.setdefault(full, NEVER_READ)
                if spec.access.writable:
                    self.outputs_info[full] = info
                    plan.append((full, spec.name))
            if plan:
                self._flush_plan.append((dev.name, plan))
        self._inputs: Mapping[str, Sample] = MappingProxyType(dict(live))
        # Outputs start at their failsafe values: nothing is driven until logic decides.
        self._outputs: dict[str, float] = {
            name: float(info.spec.failsafe or 0.0) for name, info in self.outputs_info.items()
        }
        self.output_quality: dict[str, Quality] = dict.fromkeys(self._outputs, Quality.GOOD)
        self._safe: Mapping[str, float] = MappingProxyType({})  # see publish_safe
        self._derived: dict[str, Sample] = {}
        self.derived_units: dict[str, str] = {}  # every name ever derived, with its unit

    # -- inputs -----------------------------------------------------------------------------
    def latch(self) -> None:
        """Freeze the drivers' latest samples as this scan's inputs; drop last scan's derived."""
        self._inputs = MappingProxyType(dict(self._live))
        self._derived.clear()

    def derive(self, name: str, sample: Sample, unit: str = "") -> None:
        """Publish a computed input for the rest of this scan; a field input is never shadowed."""
        if name in self.inputs_info:
            raise ValueError(f"{name}: a field input cannot be replaced by a derived one")
        if name in self.outputs_info:
            raise ValueError(f"{name}: an output cannot be replaced by a derived input")
        self._derived[name] = sample
        self.derived_units[name] = unit

    @property
    def derived(self) -> Mapping[str, Sample]:
        """Inputs derived so far in this scan (read-only)."""
        return MappingProxyType(self._derived)

    @property
    def inputs(self) -> Mapping[str, Sample]:
        """This scan's inputs (read-only)."""
        return self._inputs

    def sample(self, name: str) -> Sample:
        """Latched sample of an input, or the sample derived for it in this scan."""
        try:
            return self._inputs[name]
        except KeyError:
            derived = self._derived.get(name)
            if derived is None:
                raise UnknownPoint(name) from None
            return derived

    def value(self, name: str) -> float | None:
        """Latched value of an input when its quality is usable, else None."""
        s = self.sample(name)
        return s.value if s.quality.usable else None

    # -- outputs ----------------------------------------------------------------------------
    @property
    def outputs(self) -> Mapping[str, float]:
        """Staged output values (read-only view)."""
        return MappingProxyType(self._outputs)

    def check_output(self, name: str, value: float) -> PointInfo:
        """Raise UnknownPoint / OutOfRange / TypeError if `value` cannot go to output `name`."""
        info = self.outputs_info.get(name)
        if info is None:
            raise UnknownPoint(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise TypeError(f"{name}: value must be a number, got {value!r}")
        spec = info.spec
        if spec.integral and not float(value).is_integer():
            # a bit field, enumeration or counter: 2.5 rounded to 2 clears a run bit
            raise TypeError(f"{name}: {value!r} is not a whole number; "
                            f"{spec.encoding.dtype.name.lower()} register with scale 1 takes "
                            f"integers")
        if (spec.minimum is not None and value < spec.minimum) or (
            spec.maximum is not None and value > spec.maximum
        ):
            raise OutOfRange(
                f"{name}: {value:g} {spec.unit} outside {spec.minimum}..{spec.maximum}"
            )
        return info

    def write(self, name: str, value: float) -> None:
        """Stage an output value for the end of this scan (range-checked)."""
        self.check_output(name, value)
        self._outputs[name] = float(value)

    def output(self, name: str) -> float:
        """Currently staged value of an output."""
        try:
            return self._outputs[name]
        except KeyError:
            raise UnknownPoint(name) from None

    def publish_safe(self, values: Mapping[str, float]) -> None:
        """The safety layer's latest safe image (an immutable snapshot, replaced whole)."""
        self._safe = values

    def safe_values(self) -> Mapping[str, float]:
        """The last published safe image (empty before the safety layer published one)."""
        return self._safe

    def stage_failsafe(self) -> None:
        """Set every output to its safe value: the safe image (io_map failsafe, overlaid by
        every engaged trip and isolation), the bare failsafe only where none was published."""
        safe = self._safe
        for name, info in self.outputs_info.items():
            value = safe.get(name)
            self._outputs[name] = float(info.spec.failsafe or 0.0) if value is None else value

    def flush_plan(self) -> list[tuple[str, dict[str, float]]]:
        """Staged outputs grouped per device, keyed by point name, for the drivers."""
        out = self._outputs
        return [(dev, {point: out[full] for full, point in pts}) for dev, pts in self._flush_plan]

    def get_status(self) -> dict[str, Any]:
        """Every point with value, quality, timestamp and unit."""
        return {
            "inputs": {
                n: {"value": s.value, "quality": s.quality.value, "ts": s.ts,
                    "unit": self.inputs_info[n].unit, "reason": s.reason}
                for n, s in self._inputs.items() if n in self.inputs_info
            },
            "derived": {
                n: {"value": s.value, "quality": s.quality.value, "ts": s.ts,
                    "unit": self.derived_units.get(n, ""), "reason": s.reason}
                for n, s in self._derived.items()
            },
            "outputs": {
                n: {"value": v, "quality": self.output_quality[n].value,
                    "unit": self.outputs_info[n].unit}
                for n, v in self._outputs.items()
            },
        }
