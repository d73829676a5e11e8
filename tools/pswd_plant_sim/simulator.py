"""The in-process simulator: the rig, its Modbus endpoints and the real-time stepping loop.

Runs in the caller's asyncio loop (the demo runs it beside the controller):

    sim = Simulator(load_sim_config("examples/plant.toml"))
    await sim.start()               # binds the endpoints
    task = asyncio.create_task(sim.run_realtime())
    ...
    await sim.stop()

Tests drive time themselves with `sim.step(dt)` instead of `run_realtime()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from pswd_plant_sim.config import SimConfig
from pswd_plant_sim.faults import (
    ActiveFault,
    FaultKind,
    FaultSpec,
    OutputSwap,
    outputs_swapped,
    swap_error,
)
from pswd_plant_sim.model import Plant, PlantState
from pswd_plant_sim.opcua_device import OpcUaDeviceServer
from pswd_plant_sim.rig import Rig
from pswd_plant_sim.server import EndpointSpec, ModbusEndpoints
from pswd_plant_sim.trace import PowerSource

log = logging.getLogger(__name__)

_MAX_STEP_S = 1.0  # after a stall (debugger, suspended VM) the model does not leap ahead


class Simulator:
    """A simulated plant served over Modbus TCP."""

    def __init__(self, config: SimConfig, *, power: PowerSource | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.plant = Plant(config.plant, power=power)
        self.rig = Rig(self.plant, config.devices, config.faults)
        self.server = ModbusEndpoints(self.rig, config.endpoints)
        # devices that speak OPC UA: one asyncua server each (opcua_device.py)
        self.opcua = {s.device: OpcUaDeviceServer(self.rig, s) for s in config.opcua}
        self._clock = clock
        self.steps = 0
        self.overruns = 0
        self.running = False
        self.swaps: list[OutputSwap] = []  # crossed output wiring (swap_outputs)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every endpoint (OSError when a port is taken)."""
        await self.server.start()
        try:
            for ua_server in self.opcua.values():
                await ua_server.start()
        except BaseException:
            await self.stop()
            raise
        self.running = True

    async def stop(self) -> None:
        """Close the endpoints; safe to call twice."""
        self.running = False
        for ua_server in self.opcua.values():
            await ua_server.stop()
        await self.server.stop()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def endpoints(self) -> tuple[EndpointSpec, ...]:
        """The configured endpoints."""
        return self.config.endpoints

    # -- time -----------------------------------------------------------------------------
    def step(self, dt: float | None = None) -> None:
        """Advance the model by dt (default: the configured step) and sync the registers."""
        dt = self.config.step_s if dt is None else dt
        if self.swaps:
            banks = {name: unit.bank for name, unit in self.rig.units.items()}
            with outputs_swapped(banks, self.swaps, self.rig.t):
                self.rig.step(dt)
        else:
            self.rig.step(dt)
        self.steps += 1

    async def run_realtime(self, duration_s: float | None = None) -> None:
        """Step on absolute deadlines every step_ms until cancelled (or duration_s passes).

        Model time follows the clock: each step advances by the time actually elapsed, so a
        late step is a longer step, never a slower plant.
        """
        period = self.config.step_s
        start = last = deadline = self._clock()
        while duration_s is None or last - start < duration_s:
            deadline += period
            delay = deadline - self._clock()
            if delay > 0.0:
                await asyncio.sleep(delay)
            else:
                self.overruns += 1
                if -delay > 5 * period:  # far behind: start a fresh schedule from now
                    deadline = self._clock()
                await asyncio.sleep(0)  # let the servers answer between late steps
            now = self._clock()
            self.step(min(now - last, _MAX_STEP_S))
            last = now

    async def run_fast(self, duration_s: float) -> None:
        """Step as fast as possible for duration_s of model time (servers still answer)."""
        end = self.plant.t + duration_s
        while self.plant.t < end:
            self.step()
            await asyncio.sleep(0)

    async def run(self, duration_s: float | None = None) -> None:
        """Real time or as fast as possible, as [sim] realtime says."""
        if self.config.realtime or duration_s is None:
            await self.run_realtime(duration_s)
        else:
            await self.run_fast(duration_s)

    # -- faults ---------------------------------------------------------------------------
    def inject(self, device: str, kind: FaultKind | str, **params: Any) -> ActiveFault:
        """Start a fault now, e.g. `sim.inject("flow", "offline")` or
        `sim.inject("supply_temp", "drift", rate_per_s=0.1)`."""
        return self.rig.inject(FaultSpec(device, FaultKind(kind), **params))

    def clear(self, device: str, kind: FaultKind | str | None = None) -> int:
        """End faults on a device (all, or one kind); returns how many ended."""
        return self.rig.clear(device, None if kind is None else FaultKind(kind))

    def swap_outputs(self, first: str, second: str) -> None:
        """Cross two outputs' wiring ("pump1.speed_ref", "pump2.speed_ref"): from the next
        step each element follows the other's register; ValueError when they cannot be."""
        swap = OutputSwap(first, second)
        banks = {name: unit.bank for name, unit in self.rig.units.items()}
        problem = swap_error(swap, banks, self.swaps)
        if problem:
            raise ValueError(f"cannot swap outputs: {problem}")
        self.swaps.append(swap)
        log.warning("outputs swapped (miswired): %s <-> %s", first, second)

    def clear_swaps(self) -> None:
        """Wire every output to its own element again."""
        self.swaps.clear()

    # -- status ---------------------------------------------------------------------------
    @property
    def state(self) -> PlantState:
        """The model's truth now."""
        return self.plant.state

    def get_status(self) -> dict[str, Any]:
        """Model truth, devices, endpoints and stepping statistics."""
        status = self.rig.get_status()
        status["sim"] = {"running": self.running, "steps": self.steps,
                         "overruns": self.overruns, "step_s": self.config.step_s,
                         "endpoints": {e.name: e.address for e in self.endpoints},
                         "opcua": {d: s.get_status() for d, s in self.opcua.items()},
                         "swapped_outputs": [[w.first, w.second] for w in self.swaps]}
        return status
