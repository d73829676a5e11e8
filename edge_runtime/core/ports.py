"""Ports: what the scan needs from a field device, whatever the protocol behind it."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, Protocol

from edge_runtime.config.schema import DeviceConfig
from edge_runtime.core.points import Sample

# Drivers publish samples here, keyed "device.point"; the scan copies it once per scan (latch).
InputTable = MutableMapping[str, Sample]


class Endpoint(Protocol):
    """A connection several drivers share (one Modbus TCP gateway, one OPC UA server)."""

    def close(self) -> None:
        """Drop the connection; called once at node shutdown, before the failsafe writes."""
        ...


class FieldDevice(Protocol):
    """A device driver: polls inputs into an InputTable, writes staged outputs."""

    @property
    def config(self) -> DeviceConfig:
        """The device's configuration."""
        ...

    async def run(self) -> None:
        """Connect, poll and write until cancelled; never raises for field errors."""
        ...

    def stage(self, values: Mapping[str, float], now: float) -> None:
        """Hand the scan's output values (by point name) to the driver; must not block."""
        ...

    def get_status(self) -> dict[str, Any]:
        """Connection state, request and error counters, for every status reader."""
        ...
