"""Device adapters: what each io_map model's registers mean in terms of the plant model.

A device is either *bound* to an element of the plant (`binds = "pump1"`: its writes drive
that pump and its readings are that pump's) or unbound, in which case it simulates a private
element of its own (a pump, valve, battery or meter that affects nothing else) or reports a
plausible plant quantity, so configs with hundreds of devices work. Sans-IO.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import ClassVar

from pswd_plant_sim import sunspec
from pswd_plant_sim.battery import FOLLOWING, Battery
from pswd_plant_sim.faults import FaultKind
from pswd_plant_sim.heat_plants import HEAT_BINDS, HEAT_EXCLUSIVE, heat_bind_error
from pswd_plant_sim.loop import LeakState, Pump, Valve, solve_parallel
from pswd_plant_sim.model import Plant, RackMeter
from pswd_plant_sim.registers import RegisterBank

Values = dict[str, float]


class Device:
    """Base adapter: outputs -> element (`apply`), element -> input values (`read`)."""

    model: ClassVar[str] = ""
    primary: ClassVar[str] = ""  # the main measured point (default target of stuck / drift)

    def __init__(self, name: str) -> None:
        self.name = name
        self.faults: set[FaultKind] = set()

    @property
    def main_point(self) -> str:
        """The point a stuck or drift fault targets when none is named."""
        return self.primary

    def apply(self, bank: RegisterBank) -> None:
        """Take the outputs the client wrote (after device-side failsafe)."""

    def step(self, dt: float) -> None:
        """Advance a private element (bound elements move with the plant)."""

    def read(self) -> Values:
        """Current values of the device's measured points."""
        raise NotImplementedError

    def inject(self, kind: FaultKind, position_m: float = 0.0) -> None:
        """Start an element fault."""
        self.faults.add(kind)

    def clear(self, kind: FaultKind) -> None:
        """End an element fault."""
        self.faults.discard(kind)


class PumpDevice(Device):
    """cdu_pump_vfd: control word + speed reference in, status and measurements out."""

    model = "cdu_pump_vfd"
    primary = "speed_actual"

    def __init__(self, name: str, pump: Pump, private: bool) -> None:
        super().__init__(name)
        self.pump = pump
        self.private = private

    def apply(self, bank: RegisterBank) -> None:
        """Control word bit 0 run, bit 1 fault reset; speed reference in %."""
        cw = int(bank.get("control_word"))
        self.pump.command(run=bool(cw & 1), speed_ref_pct=bank.get("speed_ref"),
                          fault_reset=bool(cw & 2))

    def step(self, dt: float) -> None:
        """A private pump runs against the default system curve on its own."""
        if self.private:
            p = self.pump
            p.step(dt)
            c = p.config
            head, flows = solve_parallel([p.speed_pct / 100.0], c.pump_shutoff_head_bar,
                                         c.pump_k, c.system_k)
            p.head_bar, p.flow_lpm = head, flows[0]

    def read(self) -> Values:
        """Status word bit 0 running, bit 1 fault, bit 2 ready."""
        p = self.pump
        status = int(p.running) | int(p.fault_latched) << 1 | int(p.ready) << 2
        return {"status_word": status, "speed_actual": p.speed_pct, "motor_power": p.shaft_kw,
                "run_hours": p.run_hours, "fault_code": p.fault_code}

    def inject(self, kind: FaultKind, position_m: float = 0.0) -> None:
        """Pump failure: the drive trips."""
        super().inject(kind)
        self.pump.fail()

    def clear(self, kind: FaultKind) -> None:
        """Remove the cause; the fault stays latched until a fault reset."""
        super().clear(kind)
        self.pump.repair()


class ValveDevice(Device):
    """control_valve: position command in, feedback and status out."""

    model = "control_valve"
    primary = "position_fb"

    def __init__(self, name: str, valve: Valve, private: bool) -> None:
        super().__init__(name)
        self.valve = valve
        self.private = private

    def apply(self, bank: RegisterBank) -> None:
        """Latch the position command."""
        self.valve.cmd_pct = bank.get("position_cmd")

    def step(self, dt: float) -> None:
        """Move a private actuator."""
        if self.private:
            self.valve.step(dt)

    def read(self) -> Values:
        """Status bit 0 moving, bit 1 fault."""
        v = self.valve
        return {"position_fb": v.position_pct, "status": int(v.moving) | int(v.stuck) << 1}

    def inject(self, kind: FaultKind, position_m: float = 0.0) -> None:
        """The actuator seizes where it is."""
        super().inject(kind)
        self.valve.stuck = True

    def clear(self, kind: FaultKind) -> None:
        """The actuator moves again."""
        super().clear(kind)
        self.valve.stuck = False


class TransmitterDevice(Device):
    """A one-value transmitter (temperature, pressure): value and a sensor-fault bit."""

    def __init__(self, name: str, model: str, point: str, source: Callable[[], float]) -> None:
        super().__init__(name)
        self.model_name = model
        self.point = point
        self.source = source

    @property
    def main_point(self) -> str:
        """The measured point."""
        return self.point

    def read(self) -> Values:
        """Value and status (bit 0 sensor fault)."""
        return {self.point: self.source(),
                "status": int(FaultKind.SENSOR_FAULT in self.faults)}


class FlowMeterDevice(Device):
    """flow_meter: flow, its own forward totalizer, status (bit 1 coil/electrode fault)."""

    model = "flow_meter"
    primary = "flow"

    def __init__(self, name: str, source: Callable[[], float]) -> None:
        super().__init__(name)
        self.source = source
        self.totalizer_m3 = 0.0

    def step(self, dt: float) -> None:
        """Integrate forward volume."""
        self.totalizer_m3 += max(self.source(), 0.0) * dt / 60_000.0

    def read(self) -> Values:
        """Flow L/min, totalizer m3, status."""
        return {"flow": self.source(), "totalizer": self.totalizer_m3,
                "status": int(FaultKind.SENSOR_FAULT in self.faults) << 1}


class LeakDevice(Device):
    """leak_detector: state, position along the cable, status."""

    model = "leak_detector"
    primary = "leak_state"

    def __init__(self, name: str, leak: LeakState) -> None:
        super().__init__(name)
        self.leak = leak

    def read(self) -> Values:
        """Status bit 0 cable break, bit 2 leak latched."""
        k = self.leak
        status = int(k.state == 2) | int(k.latched) << 2
        return {"leak_state": k.state, "leak_position_m": k.position_m if k.state == 1 else 0.0,
                "status": status}

    def inject(self, kind: FaultKind, position_m: float = 0.0) -> None:
        """A leak at position_m, or a broken cable."""
        super().inject(kind)
        if kind is FaultKind.LEAK:
            self.leak.state, self.leak.position_m, self.leak.latched = 1, position_m, True
        else:
            self.leak.state = 2

    def clear(self, kind: FaultKind) -> None:
        """Dry again / cable repaired (clearing also resets the latch)."""
        super().clear(kind)
        self.leak.state, self.leak.position_m, self.leak.latched = 0, 0.0, False


class RackMeterDevice(Device):
    """rack_power_meter: every quantity the meter element computes."""

    model = "rack_power_meter"
    primary = "power_kw"

    def __init__(self, name: str, meter: RackMeter,
                 private_power: Callable[[], float] | None = None) -> None:
        super().__init__(name)
        self.meter = meter
        self.private_power = private_power

    def step(self, dt: float) -> None:
        """A private meter measures its own share of the trace."""
        if self.private_power is not None:
            self.meter.step(dt, self.private_power())

    def read(self) -> Values:
        """Power, energy and power quality; status bit 2 reverse power."""
        m = self.meter
        return {"power_kw": m.power_kw, "energy_kwh": m.energy_kwh,
                "power_factor": m.power_factor, "thd_voltage_pct": m.thd_voltage_pct,
                "thd_current_pct": m.thd_current_pct, "voltage_v": m.voltage_v,
                "current_a": m.current_a, "frequency_hz": m.frequency_hz,
                "status": int(m.power_kw < 0.0) << 2}


class BatteryDevice(Device):
    """battery_inverter (SunSpec 701/704/802): setpoint, enable and heartbeat in."""

    model = "battery_inverter"
    primary = "soc_pct"

    def __init__(self, name: str, battery: Battery, private: bool,
                 frequency: Callable[[], float]) -> None:
        super().__init__(name)
        self.battery = battery
        self.private = private
        self.frequency = frequency

    def apply(self, bank: RegisterBank) -> None:
        """WSetEna, WSet; the heartbeat is what the client wrote (a failsafe is no beat)."""
        hb = bank.client_value("ctrl_hb")
        self.battery.command(enable=bank.get("w_set_ena") == 1,
                             setpoint_kw=bank.get("w_set_kw"),
                             ctrl_hb=bank.get("ctrl_hb") if hb is None else hb)

    def step(self, dt: float) -> None:
        """A private inverter runs on its own."""
        if self.private:
            self.battery.step(dt)

    def read(self) -> Values:
        """Measurements, states and the inverter's own heartbeat."""
        b = self.battery
        c = b.config
        sp = b.setpoint_kw
        soc_limited = (sp > 0 and b.discharge_limit_kw == 0) or (sp < 0 and b.charge_limit_kw == 0)
        mode = b.state
        if b.failed:
            inv_st = sunspec.INV_ST_FAULT
        elif abs(b.ac_kw) > 0.05 or mode == FOLLOWING:
            inv_st = sunspec.INV_ST_RUNNING
        else:
            inv_st = sunspec.INV_ST_STANDBY
        return {"soc_pct": b.soc_pct, "soh_pct": c.soh_pct,
                "cha_st": sunspec.CHA_ST[b.charge_status],
                "w_cha_max_kw": c.max_charge_kw, "w_dis_cha_max_kw": c.max_discharge_kw,
                "battery_w_kw": b.dc_kw, "battery_v": b.voltage_v, "battery_a": b.current_a,
                "state": sunspec.state_code(mode, soc_limited), "hb": b.hb,
                "ac_w_kw": b.ac_kw, "ac_hz": self.frequency(), "inv_st": inv_st,
                "evt1": sunspec.EVT1_COMMS_ERROR if b.reverted else 0,
                "w_set_rvrt_tms": c.hb_timeout_s}

    def inject(self, kind: FaultKind, position_m: float = 0.0) -> None:
        """The inverter trips."""
        super().inject(kind)
        self.battery.failed = True

    def clear(self, kind: FaultKind) -> None:
        """The inverter is back."""
        super().clear(kind)
        self.battery.failed = False


# -- binding ------------------------------------------------------------------------------
TEMPERATURES: dict[str, Callable[[Plant], float]] = {
    "supply_temp": lambda p: p.loop.supply_c,
    "return_temp": lambda p: p.loop.return_c,
    "rack_inlet_temp": lambda p: p.loop.rack_inlet_c,
    "rack_outlet_temp": lambda p: p.loop.rack_outlet_c,
    "fw_supply_temp": lambda p: p.loop.config.fw_temp_c,
    "fw_return_temp": lambda p: p.loop.fw_return_c,
}
PRESSURES: dict[str, Callable[[Plant], float]] = {
    "supply_pressure": lambda p: p.loop.supply_pressure_bar,
    "return_pressure": lambda p: p.loop.return_pressure_bar,
}
FLOWS: dict[str, Callable[[Plant], float]] = {
    "flow": lambda p: p.loop.flow_lpm,
    "fw_flow": lambda p: p.loop.fw_flow_lpm,
}
BIND_MODELS: dict[str, str] = {
    **{k: "temperature_transmitter" for k in TEMPERATURES},
    **{k: "pressure_transmitter" for k in PRESSURES},
    **{k: "flow_meter" for k in FLOWS},
    "valve": "control_valve",
    "leak": "leak_detector",
    "rack_meter": "rack_power_meter",
    "battery": "battery_inverter",
}
MODELS = frozenset({"cdu_pump_vfd", "control_valve", "temperature_transmitter",
                    "pressure_transmitter", "flow_meter", "leak_detector", "rack_power_meter",
                    "battery_inverter"})
EXCLUSIVE_BINDS = ("valve", "battery", *HEAT_EXCLUSIVE)  # elements with outputs: one writer each
_PUMP = re.compile(r"^pump([1-9][0-9]*)$")


def bind_error(model: str, bind: str, pumps: int,
               elements: Collection[str] = ()) -> str | None:
    """Why `bind` cannot be used by a device of io_map `model`, or None when it can
    (`elements`: the optional plant elements fitted, see heat_plants.py)."""
    if model not in MODELS:
        return f"no simulation for io_map model {model!r} (have {', '.join(sorted(MODELS))})"
    if not bind:
        return None
    if bind in HEAT_BINDS:
        return heat_bind_error(model, bind, elements)
    m = _PUMP.match(bind)
    if m:
        if model != "cdu_pump_vfd":
            return f"{bind!r} is a pump; io_map {model!r} cannot bind it"
        if int(m.group(1)) > pumps:
            return f"{bind!r}: the loop has {pumps} pump(s) ([loop] pumps)"
        return None
    wanted = BIND_MODELS.get(bind)
    if wanted is None:
        known = ", ".join(["pumpN", *BIND_MODELS, *HEAT_BINDS])
        return f"unknown model element {bind!r} (one of {known})"
    if wanted != model:
        return f"{bind!r} needs io_map {wanted!r}, not {model!r}"
    return None


def build_device(name: str, model: str, bind: str, plant: Plant, index: int) -> Device:
    """The adapter for one configured device (bind checked beforehand with bind_error)."""
    loop = plant.loop
    if model == "cdu_pump_vfd":
        m = _PUMP.match(bind)
        if m:
            return PumpDevice(name, loop.pump(int(m.group(1))), private=False)
        return PumpDevice(name, Pump(name, loop.config), private=True)
    if model == "control_valve":
        return ValveDevice(name, loop.valve if bind else Valve(loop.config), private=not bind)
    if model == "temperature_transmitter":
        temp = TEMPERATURES[bind or "supply_temp"]
        return TransmitterDevice(name, model, "temperature", lambda: temp(plant))
    if model == "pressure_transmitter":
        pres = PRESSURES[bind or "supply_pressure"]
        return TransmitterDevice(name, model, "pressure", lambda: pres(plant))
    if model == "flow_meter":
        flow = FLOWS[bind or "flow"]
        return FlowMeterDevice(name, lambda: flow(plant))
    if model == "leak_detector":
        return LeakDevice(name, loop.leak if bind else LeakState())
    if model == "rack_power_meter":
        if bind:
            return RackMeterDevice(name, plant.meter)
        # a rack of its own: the site trace per rack, shifted a little so racks differ
        share = plant.config.trace.rack_kw / plant.config.trace.peak_kw
        shift = (index * 0.037) % 1.0
        meter = RackMeter(plant.meter.config, rated_kw=plant.config.trace.rack_kw)
        return RackMeterDevice(name, meter,
                               lambda: plant.power.power_at(plant.t + shift) * share)
    if model == "battery_inverter":
        if bind:
            return BatteryDevice(name, plant.battery, False, lambda: plant.meter.frequency_hz)
        return BatteryDevice(name, Battery(plant.battery.config, name), True,
                             lambda: plant.meter.frequency_hz)
    raise ValueError(bind_error(model, bind, len(loop.pumps)) or model)
