"""Benchmark: OPC UA monitored items at a 1 s publishing interval beside a 10 ms scan.

The node is assembled by `edge_runtime.assembly.assemble` from a generated config: N input
points (FakeDevice drivers below the driver boundary, 100 float points per device), its MQTT
link publishing telemetry to a real Mosquitto started here, its OPC UA server ([opcua],
Basic256Sha256 SignAndEncrypt, trust list on, a provisioned viewer user and a trusted client
certificate). A feeder block changes every point exactly once per second, spread over the
scans (point i at scan i mod 100), to a sequence value: the second's number. So each change the
node published carries a known value, and the client counts per item what it received: gaps
(missing values), duplicates, and at the end, after the feeder stops, whether the last value
each point took arrived. Expected notifications of an item = its last value - its first value
seen by the client + 1 (one per second in between); delivered = distinct values received;
missing = expected - delivered. Exact: a lost notification anywhere in the run is counted.

The client is a separate process (asyncua's client over SignAndEncrypt, one subscription at
1,000 ms with every item at queue size 10, so two changes of one item inside one publishing
interval, which timing can make happen, are both kept). It reads the raw PublishResponses
(no per-notification task) and reports its own CPU.

Baseline in the same run: a bare asyncua server in its own process (same security, same
scheduling as the node, same N Double variables updated at the same rate, value = second's
number, no scan), counted by the same client; it reports its own CPU and the update rate it
achieved.

Control in the same run (not with --quick): the same node, server and MQTT link for 30 s with
no client subscribed, so what the machine does to the scan is told apart from what serving
the items does. Node figures: scan overruns and start jitter (p50/p99/max, 10 ms period;
SCHED_FIFO 50 as root, as bench/scan_jitter.py), CPU of the node process (and of its OPC UA
thread alone), MQTT telemetry samples acknowledged. If N = 5,000 misses a target, a step
search runs shorter cases at smaller N and reports the largest that meets all of them.

    .venv/bin/python bench/opcua_items.py [--quick] [--items N] [--seconds S] [--no-search]

Targets (issue 12): 5,000 items, 0 overruns, jitter p99 <= 0.5 ms, 0 notifications missing.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _jsonline import print_json_line  # noqa: E402

PER_DEVICE = 100
PERIOD_MS = 10
PUBLISH_MS = 1000
QUEUE = 10
HANDLE0 = 1000  # client handle of item 0
TARGET_ITEMS, TARGET_JITTER_P99_MS = 5000, 0.5
STEPS = (4000, 3000, 2000, 1000, 500)
USER = "bench-bms"
CLIENT_NAME = "bench-client"


# --- shared bits: certificates, the client connection ---------------------------------------

def emit(doc: object) -> None:
    """One strict JSON line to the parent process (NaN is not JSON)."""
    print(json.dumps(doc, allow_nan=False), flush=True)


@dataclass(frozen=True, slots=True)
class Creds:
    """What a client needs to open a secure session."""

    url: str
    server_cert: str  # DER
    cert: str  # client certificate, DER
    key: str  # PEM
    uri: str  # client application URI
    user: str | None = None
    password: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def client_certificate(directory: Path, name: str) -> tuple[str, Path, Path, bytes]:
    """A fresh RSA-2048 client application certificate: (uri, der, key, pem)."""
    from edge_runtime.security.opcua_certs import make_app_cert
    from edge_runtime.security.pki import write_pem

    uri = f"urn:bench:{name}"
    made = make_app_cert(uri, name, client=True)
    der = write_pem(directory / f"{name}.der", made.cert_der)
    key = write_pem(directory / f"{name}-key.pem", made.key_pem, private=True)
    return uri, der, key, made.cert_pem


def provision(state_dir: Path, directory: Path, role: str) -> tuple[str, str, Path, Path]:
    """A user with a fresh password and a trusted client certificate: (password, uri, der,
    key). Nothing is built in: the node's server knows only what is provisioned here."""
    from edge_runtime.servers.opcua.users import UserStore

    store = UserStore(state_dir)
    password = secrets.token_urlsafe(16)
    store.add_user(USER, role, password)
    uri, der, key, pem = client_certificate(directory, CLIENT_NAME)
    store.trust(CLIENT_NAME, role, pem)
    return password, uri, der, key


async def connect(creds: Creds, timeout: float = 30.0) -> Any:
    """An asyncua client session over Basic256Sha256 SignAndEncrypt."""
    from asyncua import Client, ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    # asyncua's client probes the server every watchdog interval and drops the session when
    # one probe takes longer than the interval (1 s by default); a server busy encoding a
    # 5,000-item publish can take that long, and a BMS would not drop it: 10 s here
    c = Client(creds.url, timeout=timeout, watchdog_intervall=10.0)
    c.application_uri = creds.uri
    await c.set_security(SecurityPolicyBasic256Sha256, creds.cert, creds.key,
                         server_certificate=creds.server_cert,
                         mode=ua.MessageSecurityMode.SignAndEncrypt)
    if creds.user is not None:
        c.set_user(creds.user)
        c.set_password(creds.password or "")
    await c.connect()
    return c


def cpu_s(pid: int | None = None, tid: int | None = None) -> float:
    """CPU seconds (user + system) of a process, or of one thread of this process."""
    if pid is None and tid is None:
        t = os.times()
        return t.user + t.system
    path = f"/proc/self/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Child:
    """A helper process of this script speaking JSON lines (commands on stdin)."""

    def __init__(self, role: str, spec: dict[str, Any], script: Path | None = None) -> None:
        # the spec (thousands of node ids) goes through a file: too long for a command line
        fd, path = tempfile.mkstemp(prefix=f"bench-{role}-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f)
        self.spec_path = path
        self.proc = subprocess.Popen(
            [sys.executable, str((script or Path(__file__)).resolve()), "--role", role,
             "--spec", path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(ROOT))

    async def read(self, timeout: float) -> dict[str, Any]:
        """The next JSON line (TimeoutError after `timeout`; RuntimeError if it exited)."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not line:
            raise RuntimeError(f"{self.proc.args[3]} process exited with {self.proc.wait()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.proc.args[3]}: {answer['error']}")
        return answer

    def send(self, command: str) -> None:
        """One command line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    async def ask(self, command: str, timeout: float = 60.0) -> dict[str, Any]:
        """One command, its answer."""
        self.send(command)
        return await self.read(timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        with contextlib.suppress(OSError):
            os.unlink(self.spec_path)


def helper_process(role: str, spec_path: str, run: Any) -> None:
    """Body of a helper process: normal scheduling unless spec['realtime'] (a child started
    by the node's thread inherits its SCHED_FIFO: the client and peers must not run
    real-time; the bare server gets the node's priority), errors as JSON."""
    spec = json.loads(Path(spec_path).read_text())
    rt = int(spec.get("realtime", 0))
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO if rt else os.SCHED_OTHER, os.sched_param(rt))
    try:
        asyncio.run(run(spec))
    except Exception as exc:
        emit({"error": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(1) from exc


# --- the client process ------------------------------------------------------------------------

class ItemTally:
    """Per item: first and last value, distinct values received, gaps, duplicates, order."""

    def __init__(self, n: int) -> None:
        self.first: list[int | None] = [None] * n
        self.last: list[int] = [-1] * n
        self.distinct = [0] * n
        self.gaps = [0] * n  # values skipped between two received ones
        self.duplicates = [0] * n
        self.backwards = [0] * n
        self.notifications = 0
        self.publishes = 0
        self.bad_values = 0

    def see(self, i: int, raw: Any) -> None:
        self.notifications += 1
        if not isinstance(raw, float) or raw != int(raw):
            self.bad_values += 1
            return
        v = int(raw)
        last = self.last[i]
        if self.first[i] is None:
            self.first[i] = v
        elif v == last:
            self.duplicates[i] += 1
            return
        elif v < last:
            self.backwards[i] += 1
            return
        else:
            self.gaps[i] += v - last - 1
        self.last[i] = v
        self.distinct[i] += 1

    def counts(self) -> dict[str, Any]:
        return {"notifications": self.notifications, "publishes": self.publishes,
                "items_seen": sum(1 for f in self.first if f is not None)}

    def report(self) -> dict[str, Any]:
        return {**self.counts(), "first": self.first, "last": self.last,
                "distinct": sum(self.distinct), "gaps": sum(self.gaps),
                "duplicates": sum(self.duplicates), "backwards": sum(self.backwards),
                "bad_values": self.bad_values}


class _Once(logging.Filter):
    """Each distinct log message once (a dead session repeats its error every second)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = record.getMessage()[:80]
        if key in self.seen:
            return False
        self.seen.add(key)
        record.msg = f"client {time.monotonic():.3f}: {record.msg}"
        return True


async def client_process(spec: dict[str, Any]) -> None:
    """Subscribe to spec['nodes'] at 1 s, tally every notification; answer commands."""
    from asyncua import ua
    from asyncua.common.subscription import Subscription

    tally = ItemTally(len(spec["nodes"]))
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    logging.getLogger("asyncua").addFilter(_Once())

    class Tallying(Subscription):
        """Reads the raw PublishResults: one pass over the items, no task per change."""

        async def publish_callback(self, publish_result: ua.PublishResult) -> None:
            self.last_publish_at = time.monotonic()
            data = publish_result.NotificationMessage.NotificationData
            if not data:
                return
            tally.publishes += 1
            for notif in data:
                if isinstance(notif, ua.DataChangeNotification):
                    for item in notif.MonitoredItems:
                        dv = item.Value
                        tally.see(item.ClientHandle - HANDLE0,
                                  dv.Value.Value if dv is not None and dv.Value else None)

    class NoHandler:
        pass

    creds = Creds(**spec["creds"])
    client = await connect(creds)
    try:
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=PUBLISH_MS, RequestedLifetimeCount=600,
            RequestedMaxKeepAliveCount=20, MaxNotificationsPerPublish=0,
            PublishingEnabled=True, Priority=0)
        sub = Tallying(client.uaclient.session, params, NoHandler())  # type: ignore[arg-type]
        await sub.init()
        requests = []
        for i, nid in enumerate(spec["nodes"]):
            mp = ua.MonitoringParameters(ClientHandle=HANDLE0 + i, SamplingInterval=0.0,
                                         QueueSize=QUEUE, DiscardOldest=True)
            requests.append(ua.MonitoredItemCreateRequest(
                ItemToMonitor=ua.ReadValueId(NodeId=ua.NodeId.from_string(nid),
                                             AttributeId=ua.AttributeIds.Value),
                MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=mp))
        refused = 0
        for k in range(0, len(requests), 500):
            results = await sub.create_monitored_items(requests[k:k + 500])
            refused += sum(1 for r in results if not isinstance(r, int))
        emit({"ready": len(requests) - refused, "refused": refused,
                          "revised_publishing_ms": sub.parameters.RequestedPublishingInterval})
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            cmd = line.strip()
            if cmd == "count":
                emit({**tally.counts(), "last": tally.last})
            elif cmd == "report":
                emit({**tally.report(), "cpu_s": cpu_s(os.getpid())})
            elif cmd == "cpu":
                emit({"cpu_s": cpu_s(os.getpid())})
            else:
                break
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


# --- the bare asyncua server process -----------------------------------------------------------

async def bare_server_process(spec: dict[str, Any]) -> None:
    """A plain asyncua server with N Double variables, updated once a second each, spread
    over 10 ms ticks like the node's feeder; the same security (certificate from here)."""
    import datetime as dt

    from asyncua import Server, ua

    n, directory = int(spec["items"]), Path(spec["dir"])
    from edge_runtime.security.opcua_certs import make_app_cert
    from edge_runtime.security.pki import write_pem

    made = make_app_cert("urn:bench:bare", "bare", server=True, dns_names=["localhost"],
                         ip_addresses=["127.0.0.1"])
    sder = write_pem(directory / "bare-server.der", made.cert_der)
    skey = write_pem(directory / "bare-server-key.pem", made.key_pem, private=True)
    server = Server()
    await server.init()
    server.set_endpoint(spec["url"])
    await server.set_application_uri("urn:bench:bare")
    await server.load_certificate(str(sder))
    await server.load_private_key(str(skey))
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    idx = await server.register_namespace("urn:bench")
    folder = await server.nodes.objects.add_folder(idx, "Bench")
    nodes = [(await folder.add_variable(idx, f"p{i}", 0.0)).nodeid for i in range(n)]
    last = [0] * n
    state = {"running": False, "stop": False, "tick": 0}

    async def updater() -> None:
        next_t = time.monotonic()
        while not state["stop"]:
            next_t += PERIOD_MS / 1000
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            if not state["running"]:
                continue
            tick = state["tick"]
            state["tick"] += 1
            value = tick // 100 + 1
            now = dt.datetime.now(dt.UTC)
            for i in range(tick % 100, n, 100):
                last[i] = value
                await server.write_attribute_value(nodes[i], ua.DataValue(
                    Value=ua.Variant(float(value), ua.VariantType.Double),
                    SourceTimestamp=now, ServerTimestamp=now))

    async with server:
        task = asyncio.create_task(updater())
        emit({"ready": n, "nodes": [x.to_string() for x in nodes],
                          "server_cert": str(sder)})
        loop = asyncio.get_running_loop()
        try:
            while True:
                cmd = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
                if cmd == "start":
                    state["running"] = True
                    emit({"cpu_s": cpu_s(os.getpid())})
                elif cmd == "stop":
                    state["running"] = False
                    emit({"cpu_s": cpu_s(os.getpid()), "last": last})
                else:
                    break
        finally:
            state["stop"] = True
            await task


# --- the node --------------------------------------------------------------------------------

def points_map() -> str:
    lines = ["[device]", 'model = "bench_points"']
    for i in range(PER_DEVICE):
        lines += [f"[points.p{i}]", 'table = "input"', f"address = {2 * i}",
                  'type = "float32"', 'unit = "kW"']
    return "\n".join(lines) + "\n"


def node_config(directory: Path, items: int, mqtt_port: int, opcua_port: int,
                realtime: int) -> Path:
    """The node's TOML: N points on N/100 devices, [mqtt], [opcua]."""
    maps = directory / "io_maps"
    maps.mkdir(exist_ok=True)
    (maps / "bench_points.toml").write_text(points_map())
    text = [f'[node]\nname = "ua-bench"\nrole = "rack"\nsite = "bench"\n'
            f'scan_period_ms = {PERIOD_MS}\nwatchdog_ms = 500\nio_maps_dir = "io_maps"\n'
            f"realtime_priority = {realtime}\n"]
    for d in range((items + PER_DEVICE - 1) // PER_DEVICE):
        # the fake driver never polls: generous timing so no point turns stale between the
        # feeder's once-a-second samples
        text.append(f'\n[devices.d{d}]\nio_map = "bench_points"\nendpoint = "127.0.0.1:1502"\n'
                    f"unit_id = {d + 1}\npoll_ms = 1000\n")
    text.append(f'\n[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nclient_id = "ua-bench"\n'
                f'state_dir = "state/mqtt"\ntelemetry_period_ms = 100\n'
                "require_coordinator = false\n")
    text.append(f'\n[opcua]\nhost = "127.0.0.1"\nport = {opcua_port}\nstate_dir = "state/opcua"\n'
                'security = ["Basic256Sha256_SignAndEncrypt"]\nhistory = []\n')
    path = directory / "node.toml"
    path.write_text("".join(text))
    return path


class Feeder:
    """Every point changes once per second to the second's number (1, 2, ...), point i at
    scan i mod 100 of each second, through the live table as a driver would write it."""

    name = "ua-feeder"

    def __init__(self, live: dict[str, Any], names: list[str], wall: Any) -> None:
        from edge_runtime.core.points import Quality, Sample

        self._sample, self._good = Sample, Quality.GOOD
        self.live, self.names, self.wall = live, names, wall
        self.last = [0] * len(names)
        self.tick = 0
        self.running = False
        self.changes = 0

    def step(self, image: Any, now: float, dt: float) -> None:
        if not self.running:
            return
        tick = self.tick
        self.tick += 1
        value = tick // 100 + 1
        ts = self.wall()
        for i in range(tick % 100, len(self.names), 100):
            self.live[self.names[i]] = self._sample(float(value), self._good, ts)
            self.last[i] = value
        self.changes += len(range(tick % 100, len(self.names), 100))

    def prime(self) -> None:
        """Value 0 on every point, so the client's first notification is the initial value."""
        ts = self.wall()
        for name in self.names:
            self.live[name] = self._sample(0.0, self._good, ts)


def tally(last_produced: list[int], report: dict[str, Any]) -> dict[str, Any]:
    """Expected / delivered / missing, per item from the client's first value to the last
    value the source produced."""
    expected = delivered = unseen = 0
    tail_missing = 0
    for i, final in enumerate(last_produced):
        first = report["first"][i]
        if first is None:
            unseen += 1
            expected += final + 1  # from the initial 0
            continue
        expected += final - first + 1
        if report["last"][i] < final:
            tail_missing += final - report["last"][i]
    delivered = report["distinct"]
    return {"expected": expected, "delivered": delivered, "missing": expected - delivered,
            "missing_at_end": tail_missing, "items_never_seen": unseen,
            "gaps": report["gaps"], "duplicates": report["duplicates"],
            "backwards": report["backwards"], "bad_values": report["bad_values"],
            "notifications": report["notifications"], "publishes": report["publishes"]}


async def drain(client: Child, last: list[int], timeout: float) -> None:
    """Wait (bounded) until the client holds each item's last value (or gives up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await client.ask("count")
        if all(g >= want for g, want in zip(got["last"], last, strict=True)):
            return
        await asyncio.sleep(0.5)


@contextlib.contextmanager
def broker(directory: Path) -> Iterator[Any]:
    from tests.mosquitto import Broker

    with Broker(directory) as b:
        yield b


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def node_case(items: int, seconds: float, mqtt_port: int, realtime: int,
                    directory: Path, subscribe: bool = True) -> dict[str, Any]:
    """One run of the node with `items` points for `seconds`, the client in its own process
    (`subscribe` False: the control, the same node and server with no client)."""
    from edge_runtime.assembly import assemble, load_node_config
    from edge_runtime.servers.opcua.server import OpcUaServer
    from tests.fakes import FakeDevice

    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = load_node_config(node_config(directory, items, mqtt_port, port, realtime))
    assert cfg.opcua is not None
    password, uri, der, key = provision(cfg.opcua.state_dir, directory, "viewer")
    node = assemble(cfg, watchdog_thread=False, blocks=[],
                    driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                         for d in c.devices})
    names = [f"d{d}.p{i}" for d in range(len(cfg.devices)) for i in range(PER_DEVICE)][:items]
    feeder = Feeder(node.live, names, node.clock.wall)
    feeder.prime()
    node.engine.blocks.append(feeder)
    server = node.services["opcua"]
    assert isinstance(server, OpcUaServer)
    runner = asyncio.create_task(node.run())
    client: Child | None = None
    try:
        deadline = time.monotonic() + 120
        while not server.started.is_set():
            if server.error or runner.done() or time.monotonic() > deadline:
                raise RuntimeError(f"OPC UA server did not start: {server.error or 'timeout'}")
            await asyncio.sleep(0.05)
        assert server.space is not None and server.cert is not None
        nodes = [server.space.points[n].to_string() for n in names]
        creds = Creds(cfg.opcua.endpoint, str(server.cert.cert), str(der), str(key), uri,
                      USER, password)
        t_sub = time.monotonic()
        if subscribe:
            client = Child("client", {"creds": creds.as_dict(), "nodes": nodes})
            ready = await client.read(timeout=300)
            if ready["refused"]:
                raise RuntimeError(f"{ready['refused']} monitored items refused")
        subscribe_s = time.monotonic() - t_sub
        await asyncio.sleep(2.0)  # initial values delivered, the server's loop settled
        stats = node.engine.stats
        stats.window = max(stats.window, int(seconds * 1000 / PERIOD_MS) + 1000)
        stats.reset()
        opcua_tid = server._thread.native_id if server._thread else None
        cpu0, ua0 = cpu_s(), cpu_s(tid=opcua_tid) if opcua_tid else 0.0
        ccpu0 = (await client.ask("cpu"))["cpu_s"] if client else 0.0
        link0 = _link_published(node)
        t0 = time.monotonic()
        feeder.running = True
        await asyncio.sleep(seconds)
        feeder.running = False
        elapsed = time.monotonic() - t0
        snap = stats.snapshot()
        cpu1, ua1 = cpu_s(), cpu_s(tid=opcua_tid) if opcua_tid else 0.0
        link1 = _link_published(node)
        mqtt_connected = _link_connected(node)
        if client is not None:
            await drain(client, feeder.last, timeout=15.0)
            report = await client.ask("report")
        else:
            report = {"cpu_s": 0.0, "first": list(feeder.last), "last": list(feeder.last),
                      "distinct": len(names), "gaps": 0, "duplicates": 0, "backwards": 0,
                      "bad_values": 0, "notifications": 0, "publishes": 0}
        tap = server.tap.get_status()
    finally:
        if client is not None:
            client.close()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    fifo = snap.get("cycles", 0) and realtime > 0 and _fifo_applied(node)
    result = {
        "items": items, "seconds": round(elapsed, 1), "cycles": snap["cycles"],
        "overruns": snap["overruns"],
        "jitter_p50_ms": round(snap["jitter_ms"]["p50"], 4),
        "jitter_p99_ms": round(snap["jitter_ms"]["p99"], 4),
        "jitter_max_ms": round(snap["jitter_ms"]["max"], 4),
        "exec_p99_ms": round(snap["exec_ms"]["p99"], 4),
        "node_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed, 1),
        "opcua_thread_cpu_pct": round(100 * (ua1 - ua0) / elapsed, 1),
        "client_cpu_pct": round(100 * (report["cpu_s"] - ccpu0) / elapsed, 1),
        "tap_step_us_mean": round(tap["step_us_mean"], 2),
        "changes_produced": feeder.changes, "mqtt_samples_sent": link1 - link0,
        "changes_per_s": round(feeder.changes / elapsed), "target_changes_per_s": items,
        "mqtt_connected": mqtt_connected, "subscribe_s": round(subscribe_s, 1),
        "sched_fifo": bool(fifo), "control": not subscribe,
        **tally(feeder.last, report),
    }
    result["met"] = (result["overruns"] == 0 and result["jitter_p99_ms"] <= TARGET_JITTER_P99_MS
                     and result["missing"] == 0 and result["expected"] > 0)
    return result


def _link_status(node: Any) -> dict[str, Any]:
    link = node.services.get("mqtt")
    if link is None:
        return {}
    with contextlib.suppress(Exception):
        status: dict[str, Any] = link.get_status()
        return status
    return {}


def _link_published(node: Any) -> int:
    """Telemetry samples the MQTT link has had acknowledged so far."""
    return int(_link_status(node).get("samples_sent", 0))


def _link_connected(node: Any) -> bool:
    return bool(_link_status(node).get("online"))


def _fifo_applied(node: Any) -> bool:
    return any(e.code == "realtime" and "running at SCHED_FIFO" in e.message
               for e in node.events.recent(1000))


async def baseline_case(items: int, seconds: float, directory: Path,
                        realtime: int) -> dict[str, Any]:
    """The bare asyncua server (own process, the node's scheduling) with the same items and
    rate, same client."""
    directory.mkdir(parents=True, exist_ok=True)
    url = f"opc.tcp://127.0.0.1:{free_port()}/bare/"
    bare = Child("bare", {"items": items, "dir": str(directory), "url": url,
                          "realtime": realtime})
    client: Child | None = None
    try:
        ready = await bare.read(timeout=300)
        uri, der, key, _ = client_certificate(directory, "bare-client")
        creds = Creds(url, ready["server_cert"], str(der), str(key), uri)
        client = Child("client", {"creds": creds.as_dict(), "nodes": ready["nodes"]})
        sub = await client.read(timeout=300)
        if sub["refused"]:
            raise RuntimeError(f"{sub['refused']} monitored items refused by the bare server")
        await asyncio.sleep(2.0)
        ccpu0 = (await client.ask("cpu"))["cpu_s"]
        t0 = time.monotonic()
        scpu0 = (await bare.ask("start"))["cpu_s"]
        await asyncio.sleep(seconds)
        stop = await bare.ask("stop")
        elapsed = time.monotonic() - t0
        await drain(client, stop["last"], timeout=15.0)
        report = await client.ask("report")
    finally:
        if client is not None:
            client.close()
        bare.close()
    result = {"items": items, "seconds": round(elapsed, 1),
              "server_cpu_pct": round(100 * (stop["cpu_s"] - scpu0) / elapsed, 1),
              "client_cpu_pct": round(100 * (report["cpu_s"] - ccpu0) / elapsed, 1),
              "changes_produced": sum(stop["last"]),
              "changes_per_s": round(sum(stop["last"]) / elapsed),
              "target_changes_per_s": items, **tally(stop["last"], report)}
    return result


def show(case: str, r: dict[str, Any]) -> None:
    if "overruns" in r:
        print(f"{case}: {r['items']} items, {r['seconds']} s, {r['cycles']} scans, overruns "
              f"{r['overruns']}, jitter p50/p99/max {r['jitter_p50_ms']}/{r['jitter_p99_ms']}/"
              f"{r['jitter_max_ms']} ms, exec p99 {r['exec_p99_ms']} ms; CPU node "
              f"{r['node_cpu_pct']} % (OPC UA thread {r['opcua_thread_cpu_pct']} %), client "
              f"{r['client_cpu_pct']} %; MQTT samples sent {r['mqtt_samples_sent']} "
              f"(connected {r['mqtt_connected']}); subscribe {r['subscribe_s']} s", flush=True)
    else:
        print(f"{case}: {r['items']} items, {r['seconds']} s; CPU server "
              f"{r['server_cpu_pct']} %, client {r['client_cpu_pct']} %; value changes "
              f"{r['changes_per_s']}/s (target {r['target_changes_per_s']}/s)", flush=True)
    if r.get("control"):
        return
    print(f"    notifications expected {r['expected']}, delivered {r['delivered']}, missing "
          f"{r['missing']} (at end {r['missing_at_end']}, gaps {r['gaps']}, items never seen "
          f"{r['items_never_seen']}); duplicates {r['duplicates']}, out of order "
          f"{r['backwards']}; publishes {r['publishes']}", flush=True)


def figures(r: dict[str, Any]) -> dict[str, Any]:
    keep = ("items", "seconds", "cycles", "overruns", "jitter_p50_ms", "jitter_p99_ms",
            "jitter_max_ms", "exec_p99_ms", "node_cpu_pct", "opcua_thread_cpu_pct",
            "server_cpu_pct", "client_cpu_pct", "expected", "delivered", "missing",
            "missing_at_end", "duplicates", "publishes", "mqtt_samples_sent", "changes_per_s",
            "met")
    return {k: r[k] for k in keep if k in r}


async def main_async(items: int, seconds: float, step_s: float, search: bool,
                     realtime: int, control_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, broker(Path(tmp) / "mqtt") as mqtt:
        r = await node_case(items, seconds, mqtt.port, realtime, Path(tmp) / f"node{items}")
        show(f"node, {items} items", r)
        out[f"items_{items}"] = figures(r)
        if control_s > 0:  # what the machine gives the same node with no OPC UA client
            control = await node_case(items, control_s, mqtt.port, realtime,
                                      Path(tmp) / f"control{items}", subscribe=False)
            show(f"control: the same node, no client subscribed, {items} points", control)
            out["control_node_no_client"] = {k: v for k, v in figures(control).items()
                                             if k not in ("expected", "delivered", "missing",
                                                          "missing_at_end", "duplicates",
                                                          "client_cpu_pct", "met")}
        base = await baseline_case(items, seconds, Path(tmp) / f"bare{items}", realtime)
        show(f"baseline bare asyncua, {items} items", base)
        out["baseline_bare_asyncua"] = figures(base)
        largest = items if r["met"] else 0
        if not r["met"] and search:
            for n in (s for s in STEPS if s < items):
                step = await node_case(n, step_s, mqtt.port, realtime, Path(tmp) / f"node{n}")
                show(f"step search, node, {n} items", step)
                out[f"step_items_{n}"] = figures(step)
                if step["met"]:
                    largest = n
                    break
        out["largest_items_meeting_targets"] = largest
        out["sched_fifo"] = r["sched_fifo"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 500 items for about 15 s")
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--step-seconds", type=float, default=30.0,
                        help="length of each step-search case")
    parser.add_argument("--no-search", action="store_true", help="no step search on a miss")
    parser.add_argument("--realtime", type=int, default=50 if os.geteuid() == 0 else 0,
                        help="node realtime_priority (SCHED_FIFO; default 50 as root)")
    parser.add_argument("--switch-interval-ms", type=float, default=None,
                        help="set the node process's GIL switch interval (sys.setswitchinterval; "
                             "Python's default is 5 ms): a what-if, the node does not set it")
    parser.add_argument("--role", choices=("client", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.role is not None:
        helper_process(args.role, args.spec,
                       client_process if args.role == "client" else bare_server_process)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    items = args.items or (500 if args.quick else TARGET_ITEMS)
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    start = time.monotonic()
    result = asyncio.run(main_async(items, seconds, args.step_seconds,
                                    not (args.no_search or args.quick), args.realtime,
                                    0.0 if args.quick else min(seconds, 30.0)))
    r = result[f"items_{items}"]
    print(f"targets: {TARGET_ITEMS} items, 0 overruns, jitter p99 <= {TARGET_JITTER_P99_MS} ms, "
          f"0 missing: {'met' if r['met'] and items >= TARGET_ITEMS else 'NOT met'} at {items} "
          f"items; largest N meeting them: {result['largest_items_meeting_targets']} "
          f"(machine {platform.machine()}, {os.cpu_count()} cpus, Python "
          f"{platform.python_version()}, SCHED_FIFO {'yes' if result['sched_fifo'] else 'no'}, "
          f"load average {os.getloadavg()[0]:.1f})", flush=True)
    result["gil_switch_interval_ms"] = round(sys.getswitchinterval() * 1000, 3)
    result["run_s"] = round(time.monotonic() - start, 1)
    print_json_line(result)


if __name__ == "__main__":
    main()
