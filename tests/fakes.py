"""Fakes below the driver boundary, with fault injection, for simulated-time tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_runtime.config.iomap import load_io_map
from edge_runtime.config.reader import ErrorLog
from edge_runtime.config.schema import DeviceConfig, IoMap
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality, Sample
from edge_runtime.core.ports import InputTable

PUMP_MAP = """
[device]
model = "test_pump"
[points.speed_ref]
address = 0
type = "uint16"
access = "w"
class = "pump"
scale = 0.01
unit = "%"
min = 0.0
max = 100.0
failsafe = 100.0
max_hold_s = 2.0
[points.speed_actual]
address = 1
type = "uint16"
scale = 0.01
unit = "%"
[points.flow]
table = "input"
address = 0
type = "float32"
word_swap = true
unit = "L/min"
"""


def write_io_map(directory: Path, model: str = "test_pump", text: str = PUMP_MAP) -> Path:
    """Write an io_map file; returns its path."""
    path = directory / f"{model}.toml"
    path.write_text(text)
    return path


def load_map(path: Path) -> IoMap:
    """Load an io_map that must be valid."""
    errors = ErrorLog()
    io_map = load_io_map(path, errors)
    assert io_map is not None and not errors.lines, errors.lines
    return io_map


def device(io_map: IoMap, name: str = "pump1", port: int = 15020, unit_id: int = 1) -> DeviceConfig:
    """A DeviceConfig with test defaults."""
    return DeviceConfig(name=name, io_map=io_map, host="127.0.0.1", port=port, unit_id=unit_id,
                        poll_s=0.1, timeout_s=0.2, refresh_s=0.5, max_gap=0)


class FakeDevice:
    """Records what the scan stages; inputs are set by the test through the live table."""

    def __init__(self, config: DeviceConfig, live: InputTable,
                 fail_stage_after: int | None = None) -> None:
        self._config = config
        self.live = live
        self.staged: list[tuple[float, dict[str, float]]] = []
        self._fail_after = fail_stage_after

    @property
    def config(self) -> DeviceConfig:
        """The device config."""
        return self._config

    async def run(self) -> None:
        """Nothing to poll: the test sets inputs."""
        await asyncio.Event().wait()

    def stage(self, values: Mapping[str, float], now: float) -> None:
        """Record the staged outputs (or fail, when told to)."""
        if self._fail_after is not None and len(self.staged) >= self._fail_after:
            raise RuntimeError("injected stage failure")
        self.staged.append((now, dict(values)))

    def set_input(self, point: str, value: float | None, quality: Quality = Quality.GOOD,
                  ts: float = 0.0) -> None:
        """Publish an input sample as a driver would."""
        self.live[f"{self._config.name}.{point}"] = Sample(value, quality, ts)

    def get_status(self) -> dict[str, Any]:
        """Stage count."""
        return {"staged": len(self.staged)}


SHIPPED_MAPS = Path(__file__).resolve().parent.parent / "io_maps"


def shipped_image(devices: Mapping[str, str]) -> tuple[ProcessImage, InputTable]:
    """A process image over the shipped io_maps ({device name: model}) and its input table,
    for control blocks tested below the driver boundary."""
    errors = ErrorLog()
    devs = []
    for name, model in devices.items():
        io_map = load_io_map(SHIPPED_MAPS / f"{model}.toml", errors)
        assert io_map is not None, errors.lines
        devs.append(DeviceConfig(name, io_map, "127.0.0.1", 1, 1, 0.1, 0.2, 0.5, 0))
    assert not errors.lines, errors.lines
    live: InputTable = {}
    return ProcessImage(devs, live), live
