"""The OPC UA client driver against a real asyncua server served by the plant simulator.

The simulator's OPC UA device (pswd_plant_sim/opcua_device.py) is the battery element behind a
PLC: its values come from the plant model, client writes go through the device's register bank.
The tests look at the simulator's side (the model, the bank) or read the server with their own
asyncua client, never through the driver they test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.config.codec import CodecError, encode
from edge_runtime.config.iomap import load_io_map
from edge_runtime.config.reader import ConfigError, ErrorLog
from edge_runtime.config.schema import IoMap
from edge_runtime.core.clock import WallClock
from edge_runtime.core.commands import SetOutput
from edge_runtime.core.points import Quality, Sample
from edge_runtime.io.opcua_client import OpcUaDevice
from edge_runtime.io.opcua_codec import parse_ref, resolve_uri, to_sample, to_variant
from edge_runtime.io.opcua_endpoint import OpcUaEndpoint
from edge_runtime.io.opcua_failsafe import write_failsafe_opcua
from edge_runtime.node import Node
from pswd_plant_sim.config import build_sim_config, load_sim_config
from pswd_plant_sim.simulator import Simulator
from tests.conftest import free_port
from tests.test_end_to_end import Stall, wait_for

ROOT = Path(__file__).resolve().parents[1]
BESS_MAP = ROOT / "io_maps" / "bess_controller_opcua.toml"
BIN = Path(sys.executable).parent
ENA, SETPOINT = "ns=2;s=BESS.PowerSetpointEnable", "ns=2;s=BESS.PowerSetpoint"


def plant_data(port: int) -> dict[str, Any]:
    """A plant with its rack battery behind an OPC UA battery system controller."""
    return {"sim": {"step_ms": 20, "realtime": True},
            "trace": {"pattern": "constant"},
            "endpoints": {"bess": {"protocol": "opcua", "port": port, "update_ms": 20}},
            "devices": {"battery": {"io_map": "bess_controller_opcua", "endpoint": "bess",
                                    "binds": "battery"}}}


@pytest.fixture
async def plant() -> AsyncIterator[Simulator]:
    """The simulator in this process, stepping in real time."""
    errors = ErrorLog()
    config = build_sim_config(plant_data(free_port()), "plant.toml", ROOT, errors)
    assert not errors.lines, errors.lines
    sim = Simulator(config)
    await sim.start()
    stepper = asyncio.create_task(sim.run_realtime())
    try:
        yield sim
    finally:
        stepper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stepper
        await sim.stop()


def url_of(sim: Simulator) -> str:
    return sim.opcua["battery"].url


def node_file(tmp_path: Path, url: str, *, io_map: str | None = None, extra: str = "",
              watchdog_ms: int = 500) -> Path:
    """A rack node with one OPC UA battery; `io_map` replaces the shipped map's text."""
    maps = ""
    if io_map is not None:
        (tmp_path / "maps").mkdir(exist_ok=True)
        (tmp_path / "maps" / "bess_controller_opcua.toml").write_text(io_map)
        maps = 'io_maps_dir = "maps"\n'
    path = tmp_path / "rack.toml"
    path.write_text(f"""
[node]
name = "rack-ua"
role = "rack"
scan_period_ms = 50
watchdog_ms = {watchdog_ms}
{maps}
[devices.battery]
io_map = "bess_controller_opcua"
endpoint = "{url}"
poll_ms = 100
refresh_ms = 500
timeout_ms = 500

[safety]
startup_s = 0.5
{extra}""")
    return path


async def run_node(node: Node) -> asyncio.Task[None]:
    return asyncio.create_task(node.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def inputs_good(node: Node, *, skip: tuple[str, ...] = ()) -> bool:
    names = [n for n in node.image.inputs if n.startswith("battery.") and n not in skip]
    return bool(names) and all(node.image.sample(n).quality is Quality.GOOD for n in names)


async def server_value(url: str, nodeid: str) -> ua.DataValue:
    """One Read with a client of the test's own."""
    async with Client(url, timeout=2) as client:
        dvs = await client.read_attributes([client.get_node(nodeid)])
        return dvs[0]


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_reads_subscribes_writes_and_shuts_down_to_the_safe_image(
        plant: Simulator, tmp_path: Path) -> None:
    # The node's map: the shipped one plus a point the server does not have, and w_set_kw's
    # safer side "low", so an isolation at -20 kW makes a safe image unlike the failsafe (0).
    text = BESS_MAP.read_text().replace('safe_direction = "zero"', 'safe_direction = "low"')
    text += '\n[points.ghost]\nref = "ns=2;s=BESS.NoSuchPoint"\ntype = "float32"\n'
    isolate = """
[safety.interlocks.hold_charge]
when = "battery.soh_pct > 50"
action = "isolate"
outputs = { "battery.w_set_kw" = -20 }
reset_role = "infrastructure_manager"
"""
    node = assemble(load_node_config(node_file(tmp_path, url_of(plant), io_map=text,
                                               extra=isolate)), watchdog_thread=False)
    driver = node.drivers["battery"]
    assert isinstance(driver, OpcUaDevice)
    runner = await run_node(node)
    try:
        await wait_for(lambda: inputs_good(node, skip=("battery.ghost",)), 10,
                       "every battery input GOOD")
        assert driver.get_status()["mode"] == "subscription"
        # The unknown NodeId: that point alone BAD, saying which point and why.
        ghost = node.image.sample("battery.ghost")
        assert ghost.quality is Quality.BAD
        assert "ghost" in ghost.reason and "BadNodeIdUnknown" in ghost.reason, ghost.reason
        # Values and source timestamps are the server's (read with our own client).
        dv = await server_value(url_of(plant), "ns=2;s=BESS.SoH")
        soh = node.image.sample("battery.soh_pct")
        assert soh.value == pytest.approx(dv.Value.Value)
        assert dv.SourceTimestamp is not None
        assert soh.ts == pytest.approx(dv.SourceTimestamp.replace(tzinfo=dt.UTC).timestamp(),
                                       abs=1e-3)
        assert abs(soh.ts - time.time()) < 30
        # Subscription updates: the controller's heartbeat (a browse-path ref) ticks each
        # second; the changes arrive as notifications, not reads.
        seen = {node.image.value("battery.hb")}
        await wait_for(lambda: seen.add(node.image.value("battery.hb")) or len(seen) >= 3, 5,
                       "two heartbeat changes")
        assert driver.notifications > 0 and driver.reads == 0
        # Writes reach the device: the enable command, and the isolation's -20 kW setpoint.
        node.commands.submit(SetOutput("battery.w_set_ena", 1))
        await wait_for(lambda: plant.plant.battery.enabled, 5, "the battery enabled")
        await wait_for(lambda: plant.plant.battery.setpoint_kw == pytest.approx(-20.0), 5,
                       "the isolation's -20 kW setpoint in the plant")
        await wait_for(lambda: (node.image.value("battery.ac_w_kw") or 0) < -19, 5,
                       "the node reading the battery charging at 20 kW")
    finally:
        await stop(runner)
    # Shutdown wrote the safe image at once (well before the device's own 2 s reversion):
    # w_set_ena to its failsafe 0, w_set_kw to the isolation's -20 kW, not the failsafe 0.
    bank = plant.rig.units["battery"].bank
    assert bank.get("w_set_ena") == 0 and "w_set_ena" not in bank.failsafe_active
    assert bank.get("w_set_kw") == pytest.approx(-20.0)
    assert not node.drivers["battery"].get_status()["outputs_at_failsafe"]


@pytest.mark.anyio
@pytest.mark.timeout(50)
async def test_comms_loss_is_bad_with_a_reason_and_recovers(plant: Simulator,
                                                           tmp_path: Path) -> None:
    node = assemble(load_node_config(node_file(tmp_path, url_of(plant))), watchdog_thread=False)
    runner = await run_node(node)
    server = plant.opcua["battery"]
    try:
        await wait_for(lambda: inputs_good(node), 10, "every battery input GOOD")
        node.commands.submit(SetOutput("battery.w_set_ena", 1))
        await wait_for(lambda: plant.plant.battery.enabled, 5, "the battery enabled")
        # The device behind the PLC goes quiet: every value Bad_NoCommunication from the server.
        plant.inject("battery", "offline")
        await wait_for(lambda: node.image.sample("battery.soc_pct").quality is Quality.BAD, 3,
                       "soc_pct BAD")
        assert "BadNoCommunication" in node.image.sample("battery.soc_pct").reason
        plant.clear("battery")
        await wait_for(lambda: inputs_good(node), 3, "GOOD again after the fault")
        # The server itself goes away: BAD with the reason, the scan carries on.
        await server.pause()
        await wait_for(lambda: node.image.sample("battery.soc_pct").quality is Quality.BAD, 5,
                       "soc_pct BAD after the server stopped")
        reason = node.image.sample("battery.soc_pct").reason
        assert reason.startswith("disconnected"), reason
        cycles = node.engine.stats.cycles
        await wait_for(lambda: node.engine.stats.cycles >= cycles + 20, 5, "20 more scans")
        await wait_for(lambda: not plant.plant.battery.enabled, 5,
                       "the device's own hold reversion while nobody writes")
        await server.resume()
        await wait_for(lambda: inputs_good(node), 12, "GOOD after the server is back")
        # A new session rewrites every output: the device follows the node again.
        await wait_for(lambda: plant.plant.battery.enabled, 5, "w_set_ena rewritten")
        assert node.drivers["battery"].get_status()["connection"]["connects"] >= 2
        # The server hangs with the connection open (nothing closes, nothing answers): the
        # keep-alive probe and the writes' timeouts find it.
        await server.hang()
        hung = time.monotonic()
        await wait_for(lambda: node.image.sample("battery.soc_pct").quality is Quality.BAD, 8,
                       "soc_pct BAD after the server hung")
        assert time.monotonic() - hung < 4.0  # probe every 1 s, 0.5 s request timeouts
        assert node.image.sample("battery.soc_pct").reason.startswith("disconnected")
        cycles = node.engine.stats.cycles
        await wait_for(lambda: node.engine.stats.cycles >= cycles + 20, 5, "20 more scans")
        await server.resume()
        await wait_for(lambda: inputs_good(node), 12, "GOOD after the hung server restarts")
    finally:
        await stop(runner)


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_polled_without_subscriptions_and_max_hold_writes_the_safe_image(
        plant: Simulator, tmp_path: Path) -> None:
    cfg = load_node_config(node_file(tmp_path, url_of(plant)))
    dev = cfg.device("battery")
    table: dict[str, Sample] = {}
    driver = OpcUaDevice(dev, OpcUaEndpoint(dev), table, WallClock(), subscribe=False)
    task = asyncio.create_task(driver.run())
    try:
        await wait_for(lambda: table.get("battery.hb") is not None
                       and table["battery.hb"].quality is Quality.GOOD, 10, "hb read")
        first = table["battery.hb"].value
        await wait_for(lambda: table["battery.hb"].value != first, 5, "hb changing")
        assert driver.mode == "polling" and driver.notifications == 0 and driver.reads > 3
        # The safety layer's safe image, as Node hands it to every driver with safe_source.
        driver.safe_source = lambda: {"battery.w_set_kw": -5.0, "battery.w_set_ena": 1.0}
        staged = time.monotonic()
        driver.stage({"w_set_ena": 1, "w_set_kw": 12.5, "ctrl_hb": 7}, staged)
        await wait_for(lambda: plant.plant.battery.setpoint_kw == pytest.approx(12.5), 5,
                       "12.5 kW in the plant")
        # No scan stages again: after max_hold_s (2 s) the driver writes the safe image
        # (-5 kW here), refreshed until then so the device's own hold never expired.
        await wait_for(lambda: plant.plant.battery.setpoint_kw == pytest.approx(-5.0), 5,
                       "the safe image after max_hold_s")
        assert time.monotonic() - staged >= 1.9
        assert "w_set_kw" in driver.get_status()["outputs_at_failsafe"]
        assert "w_set_kw" not in plant.rig.units["battery"].bank.failsafe_active
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)  # stops promptly on cancel
        driver.endpoint.close()


def test_a_ref_that_is_no_nodeid_is_a_clear_error_naming_the_point(tmp_path: Path) -> None:
    text = BESS_MAP.read_text().replace('ref = "ns=2;s=BESS.SoC"', 'ref = "ns=2;x=SoC"')
    path = node_file(tmp_path, "opc.tcp://127.0.0.1:4840", io_map=text)
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert any("[devices.battery] io_map: 'bess_controller_opcua' point 'soc_pct': ref "
               "'ns=2;x=SoC' is not a NodeId" in line for line in info.value.lines), \
        info.value.lines
    # The driver refuses it too, should a config reach it another way.
    good = load_node_config(node_file(tmp_path, "opc.tcp://127.0.0.1:4840"))
    device = good.device("battery")
    broken = dataclasses.replace(device, io_map=dataclasses.replace(device.io_map, points=tuple(
        dataclasses.replace(p, ref="ns=2;x=SoC") if p.name == "soc_pct" else p
        for p in device.io_map.points)))
    with pytest.raises(ValueError, match=r"device 'battery'.*point 'soc_pct'.*ns=2;x=SoC"):
        OpcUaDevice(broken, OpcUaEndpoint(broken), {}, WallClock())


# -- the watchdog thread writes the safe image while the event loop is frozen ------------------

@pytest.fixture
def plant_process(tmp_path: Path) -> Iterator[str]:
    """`pswd-plant-sim` in its own process, so it keeps serving while the test's loop freezes."""
    port = free_port()
    lines = ["[sim]", "step_ms = 20", "[trace]", 'pattern = "constant"',
             "[endpoints.bess]", 'protocol = "opcua"', f"port = {port}", "update_ms = 20",
             "[devices.battery]", 'io_map = "bess_controller_opcua"', 'endpoint = "bess"',
             'binds = "battery"']
    cfg = tmp_path / "plant.toml"
    cfg.write_text("\n".join(lines) + "\n")
    exe = BIN / "pswd-plant-sim"
    assert exe.exists(), f"{exe}: the console script is missing (pip install -e .)"
    proc = subprocess.Popen([str(exe), "--config", str(cfg), "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("step "):
                break
        else:
            pytest.fail(f"pswd-plant-sim exited with {proc.wait()} before serving")
        yield f"opc.tcp://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def observe(url: str, seen: list[tuple[float, float]], stop: threading.Event) -> None:
    """Read the device's enable flag every 20 ms with a client of our own, in this thread."""
    async def loop() -> None:
        async with Client(url, timeout=2) as client:
            node = client.get_node(ENA)
            while not stop.is_set():
                seen.append((time.monotonic(), float(await node.read_value())))
                await asyncio.sleep(0.02)
    asyncio.run(loop())


@pytest.mark.anyio
@pytest.mark.timeout(40)
async def test_watchdog_thread_writes_the_safe_image_while_the_loop_is_frozen(
        plant_process: str, tmp_path: Path) -> None:
    cfg = load_node_config(node_file(tmp_path, plant_process))
    stall = Stall(after_scans=60, seconds=2.5)
    node = assemble(cfg, blocks=[stall])  # the real watchdog thread
    seen: list[tuple[float, float]] = []
    halt = threading.Event()
    watcher = threading.Thread(target=observe, args=(plant_process, seen, halt), daemon=True)
    node.commands.submit(SetOutput("battery.w_set_ena", 1))
    runner = await run_node(node)
    watcher.start()
    try:
        await wait_for(lambda: stall.frozen is not None, 20, "the stall to happen")
    finally:
        await stop(runner)
        halt.set()
        watcher.join(5)
    assert stall.frozen is not None
    start, end = stall.frozen
    before = [v for t, v in seen if t < start]
    assert before and before[-1] == 1.0, "the node enabled the battery before the freeze"
    during = [(t, v) for t, v in seen if start <= t <= end]
    tripped_at = next((t for t, v in during if v == 0.0), None)
    assert tripped_at is not None, f"no safe value (0) on the device while frozen: {during}"
    # Watchdog 500 ms checked every 125 ms, plus a fresh session: well inside the device's
    # own 2 s hold, so this is the node's write, not the device reverting by itself.
    assert tripped_at - start < 1.5, tripped_at - start
    assert node.watchdog.tripped


# -- Basic256Sha256 SignAndEncrypt, the server's certificate pinned, a trust list on the server --

def app_cert(directory: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A self-signed RSA-2048 application instance certificate (DER) and key (PEM) for `uri`,
    with the usages OPC UA asks for; cA=true so a peer can trust it as its own anchor."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.UniformResourceIdentifier(uri), x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=True,
                data_encipherment=True, key_agreement=False, key_cert_sign=True,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.anyio
@pytest.mark.timeout(40)
async def test_sign_and_encrypt_with_a_trusted_client_certificate(tmp_path: Path) -> None:
    pki, trust = tmp_path / "pki", tmp_path / "pki" / "trusted"
    trust.mkdir(parents=True)
    server_cert, server_key = app_cert(pki, "bess-plc", "urn:pswd:test:bess-plc")
    client_cert, client_key = app_cert(pki, "rack-ua", "urn:pswd:test:rack-ua")
    stranger_cert, stranger_key = app_cert(pki, "stranger", "urn:pswd:test:stranger")
    (trust / "rack-ua.der").write_bytes(client_cert.read_bytes())
    data = plant_data(free_port())
    data["endpoints"]["bess"].update(security="Basic256Sha256_SignAndEncrypt",
                                     cert=str(server_cert), key=str(server_key),
                                     trust=str(trust))
    errors = ErrorLog()
    sim = Simulator(build_sim_config(data, "plant.toml", ROOT, errors))
    assert not errors.lines, errors.lines
    await sim.start()
    stepper = asyncio.create_task(sim.run_realtime())

    def secured(cert: Path, key: Path) -> str:
        return (f'security = "Basic256Sha256_SignAndEncrypt"\nclient_cert = "{cert}"\n'
                f'client_key = "{key}"\nserver_cert = "{server_cert}"\n')

    path = node_file(tmp_path, url_of(sim))
    path.write_text(path.read_text().replace("[safety]", secured(client_cert, client_key)
                                             + "\n[safety]"))
    cfg = load_node_config(path)
    stranger = dataclasses.replace(cfg.device("battery"), security=dataclasses.replace(
        cfg.device("battery").security, client_cert=stranger_cert, client_key=stranger_key))
    refused: dict[str, Sample] = {}
    outsider = OpcUaDevice(stranger, OpcUaEndpoint(stranger), refused, WallClock())
    node = assemble(cfg, watchdog_thread=False)
    runner = await run_node(node)
    outsider_task = asyncio.create_task(outsider.run())
    try:
        await wait_for(lambda: inputs_good(node), 15, "every input GOOD over SignAndEncrypt")
        status = node.drivers["battery"].get_status()["connection"]
        assert status["security"] == "Basic256Sha256_SignAndEncrypt" and status["connected"]
        node.commands.submit(SetOutput("battery.w_set_ena", 1))
        await wait_for(lambda: sim.plant.battery.enabled, 5, "the enable written")
        # A certificate not in the server's trust list gets no session.
        await wait_for(lambda: outsider.endpoint.connect_failures >= 1, 10, "refusal")
        assert not outsider.endpoint.connected
        assert "Untrusted" in outsider.endpoint.last_error, outsider.endpoint.last_error
        assert refused["battery.soc_pct"].quality is Quality.BAD
    finally:
        outsider_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await outsider_task
        outsider.endpoint.close()
        await stop(runner)
        stepper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stepper
        await sim.stop()
    # Shutdown's safe image went over a fresh secure session.
    assert sim.rig.units["battery"].bank.get("w_set_ena") == 0
    assert "w_set_ena" not in sim.rig.units["battery"].bank.failsafe_active


@pytest.mark.parametrize(("keys", "expected"), [
    ('security = "Basic256Sha256_SignAndEncrypt"',
     "[devices.battery] client_cert: required with security"),
    ('security = "Basic256Sha256_Sign"\nclient_cert = "nope.der"\nclient_key = "k.pem"\n'
     'server_cert = "s.der"', "[devices.battery] client_cert: no file"),
    ('client_cert = "c.der"', '[devices.battery] client_cert: only with a security other'),
    ('security = "Aes128"', "[devices.battery] security:"),
])
def test_security_keys_are_checked_naming_the_key(tmp_path: Path, keys: str,
                                                  expected: str) -> None:
    path = node_file(tmp_path, "opc.tcp://127.0.0.1:4840")
    path.write_text(path.read_text().replace("[safety]", keys + "\n[safety]"))
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert any(expected in line for line in info.value.lines), info.value.lines


def test_security_keys_belong_to_opcua_devices(tmp_path: Path) -> None:
    path = tmp_path / "cdu.toml"
    path.write_text('[node]\nname = "c"\nrole = "cdu"\n[devices.flow]\nio_map = "flow_meter"\n'
                    'endpoint = "127.0.0.1:502"\nsecurity = "Basic256Sha256_Sign"\n')
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert any("[devices.flow] security: only OPC UA devices" in line
               for line in info.value.lines), info.value.lines


def test_the_opcua_examples_pair_up() -> None:
    """examples/plant_opcua_bess.toml serves what examples/rack_opcua_bess.toml expects."""
    plant = load_sim_config(ROOT / "examples" / "plant_opcua_bess.toml")
    node = load_node_config(ROOT / "examples" / "rack_opcua_bess.toml")
    (served,) = plant.opcua
    assert node.device("battery").url == served.endpoint.url
    assert node.device("battery").io_map.model == served.io_map.model
    meter = next(e for e in plant.endpoints if e.name == "rack")
    assert node.device("rack_meter").endpoint == meter.address


# -- the codec, sans I/O -------------------------------------------------------------------------

def test_refs_parse_as_nodeids_namespace_uris_and_browse_paths() -> None:
    assert parse_ref("ns=2;s=BESS.SoC").nodeid == ua.NodeId("BESS.SoC", 2)
    assert parse_ref("i=2258").nodeid == ua.NodeId(2258, 0)
    nsu = parse_ref("nsu=urn:vendor:bess;i=7")
    assert nsu.nodeid is None and nsu.uri == "urn:vendor:bess"
    assert resolve_uri(nsu, ["http://opcfoundation.org/UA/", "urn:x", "urn:vendor:bess"]) \
        == ua.NodeId(7, 2)
    assert resolve_uri(nsu, ["http://opcfoundation.org/UA/"]) is None
    path = parse_ref("/Objects/2:BESS/2:Heartbeat")
    assert [(q.NamespaceIndex, q.Name) for q in path.path] == [(0, "Objects"), (2, "BESS"),
                                                              (2, "Heartbeat")]
    for bad in ("ns=2;x=1", "garbage", "nsu=urn:x", "/Objects//x", ""):
        with pytest.raises(ValueError):
            parse_ref(bad)


def test_status_codes_become_qualities_and_source_times_the_timestamp() -> None:
    spec = load_io_map_text(BESS_MAP).point("soc_pct")
    when = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)

    def dv(value: Any, code: int = 0, source: dt.datetime | None = when) -> ua.DataValue:
        return ua.DataValue(ua.Variant(value), ua.StatusCode(code), SourceTimestamp=source)

    good = to_sample(dv(55.5), spec, now=1.0)
    assert (good.value, good.quality, good.ts) == (55.5, Quality.GOOD, when.timestamp())
    unsure = to_sample(dv(55.5, ua.StatusCodes.UncertainLastUsableValue), spec, now=1.0)
    assert unsure.quality is Quality.UNCERTAIN and "UncertainLastUsableValue" in unsure.reason
    bad = to_sample(dv(None, ua.StatusCodes.BadSensorFailure), spec, now=1.0, previous=good)
    assert bad.quality is Quality.BAD and "BadSensorFailure" in bad.reason
    assert bad.value == 55.5  # kept for display only
    assert to_sample(dv("x"), spec, now=1.0).quality is Quality.BAD
    assert to_sample(dv(55.5, source=None), spec, now=7.0).ts == 7.0  # no time given: ours


def test_outputs_take_the_servers_type_within_its_range() -> None:
    maps = load_io_map_text(BESS_MAP)
    kw, ena = maps.point("w_set_kw"), maps.point("w_set_ena")
    assert to_variant(kw, encode(-12.5, kw.encoding), None) == ua.Variant(-12.5,
                                                                        ua.VariantType.Float)
    assert to_variant(kw, encode(-12.5, kw.encoding), ua.VariantType.Double).VariantType \
        is ua.VariantType.Double
    assert to_variant(ena, encode(1, ena.encoding), ua.VariantType.Boolean) == ua.Variant(
        True, ua.VariantType.Boolean)
    with pytest.raises(CodecError):
        to_variant(kw, encode(300.0, kw.encoding), ua.VariantType.Byte)


def load_io_map_text(path: Path) -> IoMap:
    errors = ErrorLog()
    io_map = load_io_map(path, errors)
    assert io_map is not None and not errors.lines, errors.lines
    return io_map


def test_a_silent_server_does_not_hold_back_the_other_safe_image_writes(tmp_path: Path) -> None:
    # A listener that never answers: the TCP connect succeeds (the kernel's backlog), the
    # OPC UA Hello is never acknowledged, as with a hung PLC.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"opc.tcp://127.0.0.1:{silent.getsockname()[1]}"
        device = load_node_config(node_file(tmp_path, url)).device("battery")
        t0 = time.monotonic()
        errors = write_failsafe_opcua([device], 0.2, {})
        waited = time.monotonic() - t0
    # At most 2 request timeouts before io/failsafe.py moves on to the next protocol.
    assert waited < 0.4 + 0.2, waited
    assert len(errors) == 1 and url in errors[0] and "no answer" in errors[0], errors
    for t in [t for t in threading.enumerate() if t.name == "opcua-failsafe"]:
        t.join(3.0)  # bounded by its own 6 request timeouts: nothing lingers
        assert not t.is_alive()
