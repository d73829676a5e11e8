"""The safety search's plant, below the driver boundary: what every input reads, how the loop
flow follows the pumps, which devices have lost comms; and drivers that keep what the node
handed them last (the values that would go on the wire)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.config.schema import DeviceConfig
from edge_runtime.core.clock import Clock
from edge_runtime.core.points import Quality, Sample
from edge_runtime.core.ports import InputTable
from tests.fakes import FakeDevice

# Sensors the search can fail (quality BAD), and devices whose comms it can cut.
SENSORS = ("supply_temp.temperature", "supply_temp_b.temperature", "return_temp.temperature",
           "flow.flow", "leak.leak_state", "loop_pressure.pressure")
COMMS_DEVICES = ("pump1", "pump2", "battery", "leak")
PUMPS = ("pump1", "pump2")
FLOW_PER_PCT = 1.5  # L/min per percent of speed of one running pump
SPIN_PCT_PER_S = 20.0  # how fast a drive follows its reference (the simulator's ramp)
INVERTER_FAULT = 6.0  # SunSpec InvSt: fault
INVERTER_STANDBY = 7.0


class WireDevice(FakeDevice):
    """A FakeDevice that keeps only the last staged values (a long search stays small) and,
    like ModbusDevice, has the `safe_source` its max-hold expiry writes."""

    def __init__(self, config: DeviceConfig, live: InputTable) -> None:
        super().__init__(config, live)
        self.last: dict[str, float] | None = None
        self.stages = 0
        self.safe_source: Any = None

    def stage(self, values: Mapping[str, float], now: float) -> None:
        """Record what the scan hands over."""
        self.last = dict(values)
        self.stages += 1


def drivers(config: Any, live: InputTable, clock: Clock) -> dict[str, WireDevice]:
    """The assembler's driver factory."""
    return {d.name: WireDevice(d, live) for d in config.devices}


@dataclass
class Plant:
    """Truth of the simulated plant; `publish` writes it into a node's input table."""

    leak: int = 0  # 0 none, 1 leak, 2 cable fault
    supply_c: float = 30.0
    return_c: float = 38.0
    pressure_bar: float = 4.8
    inverter_fault: bool = False
    bad: set[str] = field(default_factory=set)  # sensors reading BAD
    lost: set[str] = field(default_factory=set)  # devices not answering
    speed: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PUMPS, 0.0))

    def flow(self) -> float:
        """Loop flow from the pumps actually turning."""
        return sum(self.speed.values()) * FLOW_PER_PCT

    def step(self, wire: Mapping[str, Mapping[str, float] | None], dt: float) -> None:
        """Drives follow what they last received (a lost drive keeps turning as it was)."""
        for pump in PUMPS:
            if pump in self.lost:
                continue
            sent = wire.get(pump) or {}
            run = int(sent.get("control_word", 0.0)) & 1
            target = float(sent.get("speed_ref", 0.0)) if run else 0.0
            cur = self.speed[pump]
            step = SPIN_PCT_PER_S * dt
            self.speed[pump] = min(target, cur + step) if target > cur else max(target,
                                                                                cur - step)

    def values(self) -> dict[str, float]:
        """Every input this plant defines (others read 0)."""
        return {
            "supply_temp.temperature": self.supply_c, "supply_temp_b.temperature": self.supply_c,
            "return_temp.temperature": self.return_c, "flow.flow": self.flow(),
            "leak.leak_state": float(self.leak), "loop_pressure.pressure": self.pressure_bar,
            "evap_in_temp.temperature": 28.0, "evap_out_temp.temperature": 31.0,
            "liquid_flow.flow": 40.0, "rack_meter.power_kw": 80.0,
            "battery.inv_st": INVERTER_FAULT if self.inverter_fault else INVERTER_STANDBY,
            "battery.soc_pct": 60.0, "battery.soh_pct": 95.0,
            "pump1.speed_actual": self.speed["pump1"], "pump2.speed_actual": self.speed["pump2"],
        }

    def publish(self, live: InputTable, inputs: Mapping[str, Any], now_wall: float) -> None:
        """Every input of the node as its driver would have latched it by now."""
        values = self.values()
        for name, info in inputs.items():
            if info.device in self.lost:
                live[name] = Sample.bad("no answer (comms lost)", now_wall)
            elif name in self.bad:
                live[name] = Sample.bad("sensor fault", now_wall)
            else:
                live[name] = Sample(values.get(name, 0.0), Quality.GOOD, now_wall)

    def good(self, point: str) -> bool:
        """True when the point reads GOOD."""
        return point not in self.bad and point.split(".", 1)[0] not in self.lost
