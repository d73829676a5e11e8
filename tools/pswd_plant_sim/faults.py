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
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum

from edge_runtime.config.schema import Table
from pswd_plant_sim.registers import RegisterBank, encode_saturating

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
    SCALE = "scale"  # measured point x factor: a transmitter set up in the wrong unit
    WORD_ORDER = "word_order"  # the point's words (or a 16-bit point's bytes) swapped on the wire


VALUE_KINDS = frozenset({FaultKind.STUCK, FaultKind.DRIFT, FaultKind.SCALE,
                         FaultKind.WORD_ORDER})
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
    factor: float = 10.0  # scale: what the device multiplies the true value by


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
        elif f.spec.kind is FaultKind.SCALE:
            values[f.point] *= f.spec.factor
        elif f.spec.kind is FaultKind.DRIFT:
            values[f.point] += f.spec.rate_per_s * (t - f.since)


def misorder_words(words: list[int], table: Table, address: int, bank: RegisterBank,
                   faults: Iterable[ActiveFault]) -> list[int]:
    """The registers of a client read at `address` as a `word_order` fault sends them: the
    faulted points' words reversed (32-bit) or bytes swapped (16-bit)."""
    out = list(words)
    for f in faults:
        if f.spec.kind is not FaultKind.WORD_ORDER:
            continue
        p = bank.point(f.point)
        lo, hi = p.address - address, p.end - address
        if p.table is not table or lo < 0 or hi > len(out):
            continue
        if p.count > 1:
            out[lo:hi] = reversed(out[lo:hi])
        else:
            out[lo] = ((out[lo] & 0xFF) << 8) | (out[lo] >> 8)
    return out


@dataclass(frozen=True, slots=True)
class OutputSwap:
    """Two outputs whose field wiring is crossed: each element follows the other's register."""

    first: str  # "device.point"
    second: str

    def ends(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """((device, point), (device, point))."""
        a, b = self.first.split(".", 1), self.second.split(".", 1)
        return (a[0], a[1]), (b[0], b[1])


def swap_error(swap: OutputSwap, banks: Mapping[str, RegisterBank],
               others: Sequence[OutputSwap] = ()) -> str | None:
    """Why two outputs cannot be swapped, or None."""
    taken = {name for o in others for name in (o.first, o.second)}
    for name in (swap.first, swap.second):
        dev, _, point = name.partition(".")
        bank = banks.get(dev)
        if bank is None or not point:
            return f"{name!r}: no device {dev!r} (give device.point)"
        try:
            spec = bank.point(point)
        except KeyError:
            return f"{name!r}: io_map {bank.io_map.model!r} has no point {point!r}"
        if not spec.access.writable:
            return f"{name!r} is not an output"
        if name in taken:
            return f"{name!r} is already swapped"
    if swap.first == swap.second:
        return "an output cannot be swapped with itself"
    return None


@contextmanager
def outputs_swapped(banks: Mapping[str, RegisterBank], swaps: Sequence[OutputSwap],
                    t: float) -> Iterator[None]:
    """While inside, each swapped output's register holds the other's value (so the device
    adapters apply crossed commands); afterwards every register is as the clients left it.
    Device-side hold expiry is applied first, so a failsafe fallback is not undone."""
    saved: list[tuple[RegisterBank, Table, int, list[int]]] = []
    for swap in swaps:
        (da, pa), (db, pb) = swap.ends()
        ba, bb = banks[da], banks[db]
        ba.enforce_hold(t)
        bb.enforce_hold(t)
        sa, sb = ba.point(pa), bb.point(pb)
        va, vb = ba.get(pa), bb.get(pb)
        for bank, spec in ((ba, sa), (bb, sb)):
            words = bank.read(spec.table, spec.address, spec.count)
            assert words is not None  # an io_map point always lies in its bank's span
            saved.append((bank, spec.table, spec.address, list(words)))
        ba.set_words(sa.table, sa.address, encode_saturating(vb, sa.encoding))
        bb.set_words(sb.table, sb.address, encode_saturating(va, sb.encoding))
    try:
        yield
    finally:
        for bank, table, address, words in reversed(saved):
            bank.set_words(table, address, words)
