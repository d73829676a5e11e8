"""Device adapters for the two-phase loop and the district-heat network (heat_plants.py).

The existing io_maps serve them: transmitters and flow meters report the element's reading
of this plant step, the condenser valve and the drives are the element's own actuators.
"""

from __future__ import annotations

from collections.abc import Callable

from pswd_plant_sim.devices import (
    Device,
    FlowMeterDevice,
    PumpDevice,
    TransmitterDevice,
    Values,
    ValveDevice,
)
from pswd_plant_sim.district_heat import DistrictHeatReading
from pswd_plant_sim.heat_plants import HEAT_BINDS, DistrictHeatPlant, TwoPhasePlant
from pswd_plant_sim.loop import Pump
from pswd_plant_sim.model import Plant
from pswd_plant_sim.two_phase_loop import TwoPhaseReading


class CompressorDevice(PumpDevice):
    """A heat-pump compressor on a VFD (io_map cdu_pump_vfd): motor_power is its input kW."""

    def __init__(self, name: str, pump: Pump, power_kw: Callable[[], float]) -> None:
        super().__init__(name, pump, private=False)
        self.power_kw = power_kw

    def read(self) -> Values:
        """As a pump drive, with the compressor's electrical power."""
        values = super().read()
        values["motor_power"] = self.power_kw()
        return values


_TP: dict[str, tuple[str, Callable[[TwoPhaseReading], float]]] = {
    "tp_pressure": ("pressure", lambda r: r.pressure_bar),
    "tp_inlet_temp": ("temperature", lambda r: r.inlet_c),
    "tp_outlet_temp": ("temperature", lambda r: r.outlet_c),
}
_DH: dict[str, Callable[[DistrictHeatReading], float]] = {
    "dh_supply_temp": lambda r: r.supply_c,
    "dh_return_temp": lambda r: r.return_c,
    "dh_source_temp": lambda r: r.source_c,
}


def _two_phase(name: str, model: str, bind: str, tp: TwoPhasePlant) -> Device:
    if bind in _TP:
        point, pick = _TP[bind]
        return TransmitterDevice(name, model, point, lambda: pick(tp.reading))
    if bind == "tp_flow":
        return FlowMeterDevice(name, lambda: tp.reading.flow_lpm)
    if bind == "tp_valve":
        return ValveDevice(name, tp.valve, private=False)
    tp.pump_bound = True  # tp_pump
    return PumpDevice(name, tp.pump, private=False)


def _district_heat(name: str, model: str, bind: str, dh: DistrictHeatPlant) -> Device:
    if bind in _DH:
        pick = _DH[bind]
        return TransmitterDevice(name, model, "temperature", lambda: pick(dh.reading))
    if bind == "dh_flow":
        return FlowMeterDevice(name, lambda: dh.reading.flow_lpm)
    if bind == "dh_pump":
        dh.pump_bound = True
        return PumpDevice(name, dh.pump, private=False)
    dh.compressor_bound = True  # heat_pump
    return CompressorDevice(name, dh.compressor, lambda: dh.reading.compressor_kw)


def build_heat_device(name: str, model: str, bind: str, plant: Plant) -> Device:
    """The adapter of a device bound to a HEAT_BINDS element (checked with bind_error)."""
    element = HEAT_BINDS[bind][1]
    if element == "two_phase" and plant.two_phase is not None:
        return _two_phase(name, model, bind, plant.two_phase)
    if element == "district_heat" and plant.district_heat is not None:
        return _district_heat(name, model, bind, plant.district_heat)
    raise ValueError(f"{bind!r} needs a [{element}] section in the plant config")
