"""Fault injection: what can go wrong with a simulated device, and the value-level effects.

Element faults (pump failure, stuck valve, leak, inverter fault) change the physics and are
applied by the device adapters; value faults (stuck, drift) sit between the physics and the
registers, like a failing transmitter; `offline` is answered by the server layer.

Offline devices answer Modbus exception 11 (gateway target device failed to respond), which
is what a Modbus TCP gateway sends when the serial device behind it stays silent: the client
learns at once that the unit is gone. `response = "silent"` drops the request instead, so
the client times out, as with a dead standalone device.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from enum import Enum

log = logging.getLogger(__name__)


class FaultKind(Enum):
    """Kinds of fault the simulator can inject."""

    STUCK = "stuck"  # sensor value frozen at the moment of injection
    DRIFT = "drift"  # sensor value drifts by rate_per_s
    OFFLINE = "offline"  # the unit stops answering
    SENSOR_FAULT = "sensor_fault"  # transmitter reports its sensor-fault status bit
    LEAK = "leak"  # leak detected at position_m
    CABLE_FAULT = "cable_fault"  # leak sensing cable broken
    PUMP_FAILURE = "pump_failure"  # drive trips: fault bit, speed to 0
    VALVE_STUCK = "valve_stuck"  # actuator seized: position frozen, fault bit
    BATTERY_FAULT = "battery_fault"  # inverter trips: 0 kW, state fault


VALUE_KINDS = frozenset({FaultKind.STUCK, FaultKind.DRIFT})
# element faults only make sense on some device models
KIND_MODELS: dict[FaultKind, frozenset[str]] = {
    FaultKind.SENSOR_FAULT: frozenset({"temperature_transmitter", "pressure_transmitter",
                                       "flow_meter"}),
    FaultKind.LEAK: frozenset({"leak_detector"}),
    FaultKind.CABLE_FAULT: frozenset({"leak_detector"}),
    FaultKind.PUMP_FAILURE: frozenset({"cdu_pump_vfd"}),
    FaultKind.VALVE_STUCK: frozenset({"control_valve"}),
    FaultKind.BATTERY_FAULT: frozenset({"battery_inverter"}),
}
RESPONSES = ("exception", "silent")


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One fault: what, where, when (for scheduled faults) and its parameters."""

    device: str
    kind: FaultKind
    at_s: float = 0.0
    duration_s: float | None = None  # cleared automatically after this long
    point: str | None = None  # stuck / drift: which point (default: the device's main one)
    rate_per_s: float = 0.0  # drift
    position_m: float = 0.0  # leak
    response: str = "exception"  # offline: "exception" (code 11) or "silent" (no answer)


@dataclass(slots=True)
class ActiveFault:
    """A fault in force since `since` (model time)."""

    spec: FaultSpec
    since: float
    point: str
    frozen: float | None = None  # stuck: the value at injection
    until: float | None = field(default=None)


def apply_value_faults(values: MutableMapping[str, float], faults: Iterable[ActiveFault],
                       t: float) -> None:
    """Replace measured values the way stuck or drifting transmitters would."""
    for f in faults:
        if f.spec.kind not in VALUE_KINDS or f.point not in values:
            continue
        if f.spec.kind is FaultKind.STUCK:
            if f.frozen is None:
                f.frozen = values[f.point]
            values[f.point] = f.frozen
        else:
            values[f.point] += f.spec.rate_per_s * (t - f.since)
