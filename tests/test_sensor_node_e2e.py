"""End to end: the real sensor node firmware (firmware/pswd_node, under CPython with PyPI's
micropython-umqtt.simple fetched at test time) and a rack node assembled from
examples/rack_sensors.toml, through a real Mosquitto.

The firmware runs in a process of its own on the fake board of tests/firmware/fakehw.py (real
clock), steered over stdin ("leak 1", "status"); killing that process is a board losing power:
the broker publishes its will. The rack node isolates the rack (its valve output to 0, and the
signed command 0 accepted by the firmware) within 2 scans of the leak batch arriving at the
rack node, counted by the node's scan counter; the dead board's points read BAD.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.core.points import Quality, Sample
from edge_runtime.federation.sensor_node import SensorNodeDevice
from edge_runtime.security.signing import generate_key
from tests.mosquitto import Broker, mosquitto_fixture  # noqa: F401
from tests.test_sensor_node_driver import scan_until

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "rack_sensors.toml"
FIRMWARE = ROOT / "firmware"
FAKES = ROOT / "tests" / "firmware"
PIP = [sys.executable, "-m", "pip"]  # the running interpreter's pip (the venv's under make)
SENSOR = "rs-01"

# Runs the firmware's App as main.py does, on the fake board and umqtt.simple's client.
RUNNER = """
import json, sys, threading
cfg_path, *paths = sys.argv[1:]
sys.path[:0] = paths
from pswd_node import config, uplink
from pswd_node.app import App
from fakehw import FakeHw
cfg = config.load(cfg_path)
hw = FakeHw(real_clock=True)
link = uplink.Uplink(cfg, uplink.default_client_factory(cfg["mqtt"]["net_timeout_ms"]),
                     hw.ticks_ms)
app = App(cfg, hw, link, config.load_key(cfg["key_file"]))

def control():
    for line in sys.stdin:
        words = line.split()
        if words and words[0] == "leak":
            hw.leak_in = int(words[1])
        print(json.dumps(dict(app.status(), cmd_value=app.cmd_value, level=hw.level,
                              connected=link.connected, last_error=link.last_error)),
              flush=True)
    app.stop()

threading.Thread(target=control, daemon=True).start()
print("ready", flush=True)
app.run()
"""


def fetch_umqtt(directory: Path) -> Path:
    """The folder holding PyPI's umqtt/simple.py, fetched now with pip (never committed).

    The sdist has no setup.py, so `pip download` refuses it after unpacking; with --no-clean
    and TMPDIR inside `directory` the unpacked copy stays there. Fails the test saying why."""
    tmp = directory / "pip-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    cmd = [*PIP, "download", "--no-deps", "--no-binary", ":all:", "--no-clean",
           "micropython-umqtt.simple", "-d", str(directory / "dl")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                              env={**os.environ, "TMPDIR": str(tmp)})
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"cannot fetch micropython-umqtt.simple from PyPI ({' '.join(cmd)}): {exc}",
                    pytrace=False)
    for sdist in sorted((directory / "dl").glob("*.tar.gz")):
        with tarfile.open(sdist) as tar:
            tar.extractall(directory / "sdist", filter="data")
    found = sorted(directory.rglob("umqtt/simple.py"))
    if not found:
        pytest.fail("cannot fetch micropython-umqtt.simple from PyPI with "
                    f"`{' '.join(cmd)}` (exit {proc.returncode}): no umqtt/simple.py in what it "
                    f"fetched\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}", pytrace=False)
    return found[0].parent.parent


@pytest.fixture(scope="module")
def umqtt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fetch_umqtt(tmp_path_factory.mktemp("umqtt"))


class Board:
    """The firmware in a process of its own; status() asks it over stdin."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, line: str = "status") -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{line}\n".encode())
        await self.proc.stdin.drain()
        raw = await asyncio.wait_for(self.proc.stdout.readline(), 5)
        if not raw:
            raise AssertionError(f"the firmware process ended (exit {self.proc.returncode})")
        status: dict[str, Any] = json.loads(raw)
        return status

    async def until(self, pred: Callable[[dict[str, Any]], bool], what: str,
                    timeout: float = 10.0) -> dict[str, Any]:
        """Ask until `pred(status)` holds (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            status = await self.ask()
            if pred(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"firmware: {what} not within {timeout} s: {status}")
            await asyncio.sleep(0.05)  # the board's next scans


@contextlib.asynccontextmanager
async def board_running(broker: Broker, key: Path, umqtt: Path,
                        tmp: Path) -> AsyncIterator[Board]:
    cfg = {"site": "demo", "sensor_id": SENSOR, "period_ms": 100, "telemetry_period_ms": 500,
           "key_file": str(key), "state_dir": str(tmp),
           "mqtt": {"host": broker.host, "port": broker.port, "keepalive_s": 10,
                    "backoff_min_ms": 100, "backoff_max_ms": 1000}}
    (tmp / "config.json").write_text(json.dumps(cfg))
    stderr = (tmp / "stderr.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUNNER, str(tmp / "config.json"), str(FIRMWARE), str(FAKES),
        str(umqtt), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=stderr)
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 20)
        if first != b"ready\n":
            await proc.wait()
            raise AssertionError(f"firmware did not start: {first!r}\n"
                                 f"{(tmp / 'stderr.log').read_text()[-3000:]}")
        yield Board(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        stderr.close()



@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_rack_isolates_on_the_boards_leak_within_two_scans_and_reads_a_dead_board_bad(
        mosquitto: Broker, umqtt: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_key(keys / f"{SENSOR}.key")  # the same 64 hex digits go to the board
    example = load_node_config(EXAMPLE)
    cfg = dataclasses.replace(example, mqtt=mosquitto.mqtt_config(
        sensor_keys=keys, require_coordinator=False, state_dir=tmp_path / "rack-state"))
    node = assemble(cfg, watchdog_thread=False)
    driver = node.drivers["sensors"]
    assert isinstance(driver, SensorNodeDevice)
    # What the board refuses reaches the rack on its error topic; kept here to check the why.
    refusals: list[str] = []
    report = driver._error

    def collect(kind: str, message: str, n: int = 1) -> None:
        if kind == "sensor_error":
            refusals.append(message)
        report(kind, message, n)

    driver._error = collect  # type: ignore[method-assign]
    arrived: list[int] = []  # scan counter when the leak batch reached the rack node

    def on_samples(samples: Mapping[str, Sample]) -> None:
        leak = samples.get("leak")
        if not arrived and leak is not None and leak.value == 1.0:
            arrived.append(node.engine.stats.cycles)

    driver.listeners.append(on_samples)
    run = asyncio.create_task(node.run())
    firmware = tmp_path / "board"
    firmware.mkdir()
    try:
        async with board_running(mosquitto, keys / f"{SENSOR}.key", umqtt, firmware) as board:
            await scan_until(node, lambda: node.image.sample("sensors.leak").quality
                             is Quality.GOOD, "the board's telemetry GOOD in the image")
            assert node.image.value("sensors.inlet_temp_c") == pytest.approx(34.93, abs=0.01)
            assert node.image.value("sensors.valve") == 1.0
            # the rack's command (valve open, its failsafe) reached the board and verified
            before = await board.until(lambda s: s["accepted"] >= 1, "the first valve command")
            assert before["invalid_total"] == 0 and before["cmd_value"] == 1

            isolated: list[int] = []

            class Isolation:
                name = "isolation"

                def step(self, *_args: object) -> None:
                    if arrived and not isolated and node.image.output("sensors.valve") == 0.0:
                        isolated.append(node.engine.stats.cycles)

            node.engine.observers.append(Isolation())
            await board.ask("leak 1")
            await scan_until(node, lambda: bool(isolated), "the rack's isolation")
            # stats.cycles counts finished scans: the isolating scan is number isolated + 1
            scans = isolated[0] + 1 - arrived[0]
            print(f"leak batch at scan {arrived[0]}, isolation in scan {isolated[0] + 1}: "
                  f"{scans} scan(s) of {cfg.scan_period_s * 1000:g} ms")
            assert 1 <= scans <= 2, (arrived, isolated)
            assert any(e.source == "interlock.rack_leak" for e in node.events.recent(100))

            after = await board.until(
                lambda s: s["accepted"] > before["accepted"] and s["cmd_value"] == 0,
                "the valve command 0 accepted by the board")
            # Every signed command verified. The one refusal allowed: a periodic "open" sent
            # before the rack saw the leak that reached the board after its own trip, which
            # keeps the valve closed (the board's latch, working as it should).
            await scan_until(node, lambda: len(refusals) >= after["invalid_total"],
                             "the board's refusals reported to the rack")
            assert len(refusals) == after["invalid_total"], (refusals, after)
            assert all("leak trip latched" in r and "'field': 'value'" in r
                       for r in refusals), refusals
            assert after["latched"] and after["level"] == 0  # and the board's own trip

            board.proc.kill()  # power lost: no DISCONNECT, the broker publishes the will
            await scan_until(node, lambda: node.image.sample("sensors.leak").quality
                             is Quality.BAD, "BAD after the board's death")
            sample = node.image.sample("sensors.inlet_temp_c")
            assert sample.reason == "sensor node offline: connection lost", sample
            await scan_until(node, lambda: "sensors" in node.safety.lost, "comms_lost(sensors)")
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
