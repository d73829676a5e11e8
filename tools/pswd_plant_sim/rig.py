"""The plant with its field devices wired up: register banks, device adapters and faults.

Sans-IO and clock-free: `step(dt)` reads the outputs clients wrote, advances the plant and
writes the inputs back, so stepped tests and the TCP server share one code path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from edge_runtime.config.schema import IoMap
from pswd_plant_sim import sunspec
from pswd_plant_sim.devices import Device, bind_error, build_device
from pswd_plant_sim.faults import (
    KIND_MODELS,
    RESPONSES,
    VALUE_KINDS,
    ActiveFault,
    FaultKind,
    FaultSpec,
    apply_value_faults,
)
from pswd_plant_sim.heat_devices import build_heat_device
from pswd_plant_sim.heat_plants import HEAT_BINDS
from pswd_plant_sim.model import Plant
from pswd_plant_sim.registers import RegisterBank

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One simulated field device: its register map, where it answers, what it is."""

    name: str
    io_map: IoMap
    endpoint: str  # endpoint name
    unit_id: int
    bind: str = ""  # model element, "" = unbound (private / plausible values)


@dataclass(slots=True)
class Unit:
    """A device at run time."""

    spec: DeviceSpec
    bank: RegisterBank
    device: Device
    inputs: tuple[str, ...]  # points the simulator writes
    faults: list[ActiveFault] = field(default_factory=list)

    @property
    def offline(self) -> str | None:
        """None when answering, else the offline response ("exception" or "silent")."""
        for f in self.faults:
            if f.spec.kind is FaultKind.OFFLINE:
                return f.spec.response
        return None


def fault_error(spec: FaultSpec, device: DeviceSpec | None) -> str | None:
    """Why a fault cannot apply to a device, or None."""
    if device is None:
        return f"no device {spec.device!r}"
    model = device.io_map.model
    allowed = KIND_MODELS.get(spec.kind)
    if allowed is not None and model not in allowed:
        return f"{spec.kind.value} applies to {', '.join(sorted(allowed))}, not {model!r}"
    if spec.kind in VALUE_KINDS and spec.point is not None:
        try:
            p = device.io_map.point(spec.point)
        except KeyError:
            return f"io_map {model!r} has no point {spec.point!r}"
        if p.access.writable:
            return f"{spec.point!r} is an output; stuck/drift apply to measured points"
    if spec.kind is FaultKind.OFFLINE and spec.response not in RESPONSES:
        return f"response must be one of {', '.join(RESPONSES)}"
    return None


class Rig:
    """Plant + devices; the server layer only reads and writes `units[...].bank`."""

    def __init__(self, plant: Plant, devices: Sequence[DeviceSpec],
                 faults: Sequence[FaultSpec] = ()) -> None:
        self.plant = plant
        self.units: dict[str, Unit] = {}
        pumps = len(plant.loop.pumps)
        for index, spec in enumerate(devices):
            problem = bind_error(spec.io_map.model, spec.bind, pumps, plant.elements)
            if problem:
                raise ValueError(f"device {spec.name!r}: {problem}")
            bank = RegisterBank(spec.name, spec.io_map)
            if spec.bind in HEAT_BINDS:
                device = build_heat_device(spec.name, spec.io_map.model, spec.bind, plant)
            else:
                device = build_device(spec.name, spec.io_map.model, spec.bind, plant, index)
            if spec.io_map.model == "battery_inverter":
                sunspec.write_static(bank)
            inputs = tuple(p.name for p in spec.io_map.points if not p.access.writable)
            unit = Unit(spec, bank, device, inputs)
            bank.refresher = partial(self._sync_unit, unit)
            self.units[spec.name] = unit
        self._scheduled = sorted(faults, key=lambda f: f.at_s)
        for f in self._scheduled:
            problem = fault_error(f, self._spec(f.device))
            if problem:
                raise ValueError(f"fault on {f.device!r}: {problem}")
        self._sync_inputs()

    def _spec(self, name: str) -> DeviceSpec | None:
        unit = self.units.get(name)
        return unit.spec if unit else None

    @property
    def t(self) -> float:
        """Model time (s)."""
        return self.plant.t

    # -- time -----------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Outputs in, plant forward by dt, faults on schedule, inputs out."""
        t = self.plant.t
        for unit in self.units.values():
            unit.bank.enforce_hold(t)
            unit.device.apply(unit.bank)
        self.plant.step(dt)
        for unit in self.units.values():
            unit.device.step(dt)
        self._run_schedule()
        self._sync_inputs()

    def _run_schedule(self) -> None:
        t = self.plant.t
        while self._scheduled and self._scheduled[0].at_s <= t:
            spec = self._scheduled.pop(0)
            self.inject(spec)
        for unit in self.units.values():
            for f in list(unit.faults):
                if f.until is not None and f.until <= t:
                    self._end(unit, f)

    def _sync_inputs(self) -> None:
        for unit in self.units.values():
            unit.bank.stale = True  # encoded on the next read of this device

    def _measure(self, unit: Unit) -> dict[str, float]:
        values = unit.device.read()
        apply_value_faults(values, unit.faults, self.plant.t)
        return values

    def _sync_unit(self, unit: Unit) -> None:
        values = self._measure(unit)
        bank = unit.bank
        for name in unit.inputs:
            if name in values:
                bank.set(name, values[name])

    # -- faults ---------------------------------------------------------------------------
    def inject(self, spec: FaultSpec) -> ActiveFault:
        """Start a fault now (model time); ValueError when it cannot apply."""
        unit = self.units.get(spec.device)
        problem = fault_error(spec, unit.spec if unit else None)
        if problem or unit is None:
            raise ValueError(f"fault on {spec.device!r}: {problem}")
        t = self.plant.t
        point = spec.point or unit.device.main_point
        until = t + spec.duration_s if spec.duration_s is not None else None
        active = ActiveFault(replace(spec, at_s=t), since=t, point=point, until=until)
        if spec.kind is FaultKind.STUCK:  # frozen at what the transmitter shows right now
            active.frozen = self._measure(unit).get(point)
        unit.faults.append(active)
        unit.bank.stale = True
        if spec.kind not in VALUE_KINDS and spec.kind is not FaultKind.OFFLINE:
            unit.device.inject(spec.kind, spec.position_m)
        log.warning("fault injected at %.1f s: %s %s%s", t, spec.device, spec.kind.value,
                    f" ({point})" if spec.kind in VALUE_KINDS else "")
        return active

    def clear(self, device: str, kind: FaultKind | None = None) -> int:
        """End faults on a device (all, or of one kind); returns how many ended."""
        unit = self.units[device]
        ended = [f for f in unit.faults if kind is None or f.spec.kind is kind]
        for f in ended:
            self._end(unit, f)
        return len(ended)

    def _end(self, unit: Unit, fault: ActiveFault) -> None:
        unit.faults.remove(fault)
        unit.bank.stale = True
        kind = fault.spec.kind
        if kind not in VALUE_KINDS and kind is not FaultKind.OFFLINE and not any(
            f.spec.kind is kind for f in unit.faults
        ):
            unit.device.clear(kind)
        log.warning("fault cleared at %.1f s: %s %s", self.plant.t, unit.spec.name, kind.value)

    # -- status ---------------------------------------------------------------------------
    def get_status(self) -> dict[str, Any]:
        """Model truth plus each device's fault and failsafe state."""
        devices = {
            name: {
                "model": u.spec.io_map.model,
                "endpoint": u.spec.endpoint,
                "unit_id": u.spec.unit_id,
                "binds": u.spec.bind,
                "offline": u.offline,
                "faults": [f.spec.kind.value for f in u.faults],
                "failsafe": sorted(u.bank.failsafe_active),
                "writes": u.bank.writes,
            }
            for name, u in self.units.items()
        }
        status: dict[str, Any] = {"plant": self.plant.state.as_dict(), "devices": devices}
        if self.plant.two_phase is not None:
            status["two_phase"] = self.plant.two_phase.as_dict()
        if self.plant.district_heat is not None:
            status["district_heat"] = self.plant.district_heat.as_dict()
        return status
