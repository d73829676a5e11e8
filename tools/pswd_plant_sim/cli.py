"""`pswd-plant-sim --config FILE [--duration S] [--log-level LEVEL]`.

Exit codes: 0 after a clean stop (Ctrl-C, SIGTERM or --duration), 1 when an endpoint cannot
be bound, 2 for a bad command line or config (each error on its own line, naming the key).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from pswd_plant_sim.config import ConfigError, SimConfig, load_sim_config
from pswd_plant_sim.simulator import Simulator


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pswd-plant-sim",
        description="Serve a simulated CDU loop, rack meter and battery over Modbus TCP.")
    p.add_argument("--config", required=True, help="simulator TOML (e.g. examples/plant.toml)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: run until Ctrl-C)")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    p.add_argument("--swap-outputs", nargs=2, action="append", default=[],
                   metavar=("DEV.POINT", "DEV.POINT"),
                   help="cross two outputs' wiring (commissioning practice), e.g. "
                        "pump1.speed_ref pump2.speed_ref; repeatable")
    return p


async def _serve(config: SimConfig, duration: float | None,
                 swaps: Sequence[Sequence[str]] = ()) -> int:
    sim = Simulator(config)
    try:
        for first, second in swaps:
            sim.swap_outputs(first, second)
    except ValueError as exc:
        print(f"pswd-plant-sim: --swap-outputs: {exc}", file=sys.stderr)
        return 2
    try:
        await sim.start()
    except OSError as exc:
        print(f"pswd-plant-sim: {exc}", file=sys.stderr)
        return 1
    try:
        for ep in config.endpoints:
            units = ", ".join(f"{d.name}={d.unit_id}" for d in config.devices
                              if d.endpoint == ep.name)
            print(f"serving {ep.name} on {ep.address}: {units}", flush=True)
        for spec in config.opcua:
            print(f"serving {spec.endpoint.name} on {spec.endpoint.url}: {spec.device} "
                  f"(OPC UA, io_map {spec.io_map.model})", flush=True)
        mode = "real time" if config.realtime else "as fast as possible"
        print(f"step {config.step_s * 1000:g} ms, {mode}; Ctrl-C to stop", flush=True)
        runner = asyncio.create_task(sim.run(duration))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, runner.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    finally:
        await sim.stop()
    s = sim.state
    print(f"stopped at t={s.t:.1f} s: supply {s.supply_c:.2f} degC, flow {s.flow_lpm:.1f} L/min,"
          f" IT {s.it_power_kw:.1f} kW, SoC {s.soc_pct:.1f} %", flush=True)
    tp, dh = sim.plant.two_phase, sim.plant.district_heat
    if tp is not None:
        d = tp.as_dict()
        print(f"two-phase: {d['pressure_bar_g']:.3f} bar g, T_sat {d['t_sat_c']:.2f} degC, "
              f"quality {d['quality']:.2f}, condenser valve {d['valve_pct']:.1f} %", flush=True)
    if dh is not None:
        d = dh.as_dict()
        print(f"district heat: supply {d['supply_c']:.2f} degC, {d['delivered_kw']:.1f} kW, "
              f"{d['energy_kwh']:.3f} kWh delivered, compressor {d['compressor_kw']:.1f} kW",
              flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code) if isinstance(exc.code, int) else 2
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pymodbus 3.16 logs each request at DEBUG through its own logger; keep it quiet
    logging.getLogger("pymodbus").setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("asyncua").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        config = load_sim_config(args.config)
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(config, args.duration, args.swap_outputs))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
