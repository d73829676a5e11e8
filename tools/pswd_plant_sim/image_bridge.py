"""The plant model wired straight to a node's process image, below the driver boundary.

For stepped tests and benchmarks of control blocks: no Modbus, no clock. Each `exchange()`
hands the image's staged outputs to the plant elements (as the device adapters do) and
publishes what the CDU's field devices would read into the image's live input table. Device
names are those of examples/cdu.toml and examples/plant.toml.
"""

from __future__ import annotations

from collections.abc import Callable

from edge_runtime.config.iomap import default_io_maps_dir, load_io_map
from edge_runtime.config.reader import ErrorLog
from edge_runtime.config.schema import DeviceConfig, IoMap
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality, Sample
from edge_runtime.core.ports import InputTable
from pswd_plant_sim.devices import FLOWS, PRESSURES, TEMPERATURES, PumpDevice, ValveDevice
from pswd_plant_sim.model import Plant

# device name -> io_map model of the CDU of the demo site
CDU_DEVICES: dict[str, str] = {
    "valve": "control_valve",
    "supply_temp": "temperature_transmitter",
    "return_temp": "temperature_transmitter",
    "flow": "flow_meter",
    "supply_pressure": "pressure_transmitter",
    "return_pressure": "pressure_transmitter",
}


def _io_map(model: str, cache: dict[str, IoMap]) -> IoMap:
    if model not in cache:
        errors = ErrorLog()
        io_map = load_io_map(default_io_maps_dir() / f"{model}.toml", errors)
        if io_map is None or errors.lines:
            raise ValueError("; ".join(errors.lines) or f"io_map {model!r} did not load")
        cache[model] = io_map
    return cache[model]


def cdu_devices(pumps: int = 2) -> list[DeviceConfig]:
    """DeviceConfigs of the CDU (pump1..pumpN plus the loop's valve and transmitters)."""
    cache: dict[str, IoMap] = {}
    names = {**{f"pump{i + 1}": "cdu_pump_vfd" for i in range(pumps)}, **CDU_DEVICES}
    return [DeviceConfig(name=n, io_map=_io_map(m, cache), host="127.0.0.1", port=502,
                         unit_id=i + 1, poll_s=0.1, timeout_s=0.2, refresh_s=0.5, max_gap=0)
            for i, (n, m) in enumerate(names.items())]


class PlantImageBridge:
    """Plant <-> ProcessImage exchange for the CDU devices."""

    def __init__(self, plant: Plant) -> None:
        self.plant = plant
        loop = plant.loop
        self.devices = cdu_devices(len(loop.pumps))
        self.live: InputTable = {}
        self.image = ProcessImage(self.devices, self.live)
        self._pumps = {f"pump{i + 1}": PumpDevice(f"pump{i + 1}", p, private=False)
                       for i, p in enumerate(loop.pumps)}
        self._valve = ValveDevice("valve", loop.valve, private=False)
        self._sources: dict[str, tuple[str, Callable[[Plant], float]]] = {
            "supply_temp": ("temperature", TEMPERATURES["supply_temp"]),
            "return_temp": ("temperature", TEMPERATURES["return_temp"]),
            "flow": ("flow", FLOWS["flow"]),
            "supply_pressure": ("pressure", PRESSURES["supply_pressure"]),
            "return_pressure": ("pressure", PRESSURES["return_pressure"]),
        }
        self.bad: set[str] = set()  # full point names the test wants BAD
        self.publish()

    def apply_outputs(self) -> None:
        """Staged outputs -> plant elements (control word bit 0 run, bit 1 fault reset)."""
        out = self.image.outputs
        for name, dev in self._pumps.items():
            cw = int(out[f"{name}.control_word"])
            dev.pump.command(run=bool(cw & 1), speed_ref_pct=out[f"{name}.speed_ref"],
                             fault_reset=bool(cw & 2))
        self._valve.valve.cmd_pct = out["valve.position_cmd"]

    def publish(self) -> None:
        """Plant truth -> live input table, as each field device would report it."""
        ts = self.plant.t
        values: dict[str, float] = {}
        for name, pdev in self._pumps.items():
            values.update({f"{name}.{k}": v for k, v in pdev.read().items()})
        values.update({f"valve.{k}": v for k, v in self._valve.read().items()})
        for dev, (point, source) in self._sources.items():
            values[f"{dev}.{point}"] = source(self.plant)
            values[f"{dev}.status"] = 0.0
        values["flow.totalizer"] = 0.0
        for name, v in values.items():
            self.live[name] = (Sample.bad("injected", ts) if name in self.bad
                               else Sample(v, Quality.GOOD, ts))

    def exchange(self, dt: float) -> None:
        """Outputs in, plant forward by dt, inputs out."""
        self.apply_outputs()
        self.plant.step(dt)
        self.publish()
