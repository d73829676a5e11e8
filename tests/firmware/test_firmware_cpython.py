"""The firmware under CPython: the same modules the board runs, checked against the runtime.

The runtime's end-to-end test runs the firmware app and uplink under CPython against a real
broker; these tests pin what that relies on: the app runs with the fakes here, its canonical
JSON and MAC are the runtime's (signing.canonical / signing.mac), its times parse and print
as the runtime's, and net.py's sockets (what umqtt.simple runs on) are bounded and speak
MicroPython's stream methods over a real TCP connection.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pswd_node import config, envelope, jsonc, net  # firmware/, put on sys.path by the package
from pswd_node.app import App, Sessions
from pswd_node.uplink import Uplink

from edge_runtime.federation.state import parse_state
from edge_runtime.messages.models import format_datetime, parse_datetime
from edge_runtime.messages.telemetry import decode_batch, decode_birth
from edge_runtime.security.signing import canonical, mac, sign
from tests.firmware.fakehw import FakeHw
from tests.firmware.fakemqtt import FakeBroker

pytestmark = pytest.mark.timeout(30)

KEY = bytes(range(64, 96))


def _text(r: random.Random) -> str:
    alphabet = "aZ09_-./\\\"\n\t\x01\x7fé€😀 "
    return "".join(r.choice(alphabet) for _ in range(r.randrange(0, 12)))


def _doc(r: random.Random, depth: int = 0) -> object:
    kind = r.randrange(7 if depth < 3 else 5)
    if kind == 0:
        return r.randrange(-(10**12), 10**12)
    if kind == 1:
        return r.choice([0.0, 1.0, -0.0, 0.5, 1e-7, 1e16, 123.456, -2.5e-300])
    if kind == 2:
        return _text(r)
    if kind == 3:
        return r.choice([True, False, None])
    if kind == 4:
        return r.randrange(2)
    if kind == 5:
        return [_doc(r, depth + 1) for _ in range(r.randrange(4))]
    return {_text(r): _doc(r, depth + 1) for _ in range(r.randrange(4))}


def test_canonical_json_and_mac_are_the_runtimes() -> None:
    r = random.Random(11)
    for _ in range(500):
        doc = {_text(r): _doc(r) for _ in range(r.randrange(1, 6))}
        doc.pop("signature", None)
        want = canonical("rs-01", "output", doc).decode()
        assert "rs-01/output\n" + jsonc.dumps(doc) == want
        assert envelope.mac_hex(KEY, "rs-01", "output", doc) == mac(KEY, "rs-01", "output", doc)


def test_times_are_the_runtimes() -> None:
    r = random.Random(5)
    for _ in range(2000):
        ms = r.randrange(0, 4 * 10**12)
        text = jsonc.format_ms(ms)
        assert round(parse_datetime(text).timestamp() * 1000) == ms
        runtime_text = format_datetime(datetime.fromtimestamp(ms / 1000, UTC))
        assert jsonc.parse_ms(runtime_text) == ms
    for bad in ("2026-02-30T00:00:00Z", "2026-12-06T24:00:00Z", "2026-12-06T04:00:00",
                "2026-12-06 04:00:00Z", "", "2026-12-06T04:00:00.Z"):
        with pytest.raises(ValueError):
            jsonc.parse_ms(bad)


def test_app_runs_under_cpython_with_a_runtime_signed_command(tmp_path: object) -> None:
    cfg = config.check({"site": "s1", "sensor_id": "rs-01", "state_dir": str(tmp_path)})
    hw = FakeHw()
    broker = FakeBroker()
    app = App(cfg, hw, Uplink(cfg, broker.factory, hw.ticks_ms), KEY)
    app.run(3)
    doc = sign(KEY, "rs-01", "output", {"PSWD_version": "1.0", "point": "valve", "value": 0},
               role="infrastructure_manager", now=hw.wall_ms() / 1000)
    broker.send("pswd/v1/s1/rs-01/cmd/output", json.dumps(doc))
    app.run(2)
    assert hw.level == 0 and app.accepted == 1 and app.invalid_total == 0
    broker.send("pswd/v1/s1/rs-01/cmd/output", json.dumps(doc))  # the same again: a replay
    app.run(1)
    [err] = [json.loads(p) for t, p, _, _ in broker.topics("/error")]
    assert err["field"] == "nonce" and "already used" in err["error"]
    state = parse_state(broker.topics("/state")[0][1])
    birth = decode_birth(next(p for t, p, r, _ in broker.topics("/telemetry") if r))
    assert state.session == birth.session == 1
    assert Sessions(str(tmp_path)).current == 1
    batches = [decode_batch(p, birth=birth) for t, p, r, _ in broker.topics("/telemetry")
               if not r]
    assert batches and all(b.session == 1 for b in batches)
    broker.send("pswd/v1/s1/rs-01/cmd/rebirth", b"")  # a new session, births again
    app.run(2)
    assert parse_state(broker.topics("/state")[-1][1]).session == 2 == app.session
    assert decode_birth(broker.topics("/telemetry")[-2][1]).session == 2
    assert Sessions(str(tmp_path)).current == 2
    app.stop()
    app.run(1)
    last = parse_state(broker.topics("/state")[-1][1])
    assert not last.online and last.reason == "shutdown" and last.session == 2


def test_config_errors_name_the_field(tmp_path: object) -> None:
    for raw, field in (({"site": "s 1", "sensor_id": "a"}, "site"),
                       ({"site": "s", "sensor_id": "time"}, "sensor_id"),
                       ({"site": "s", "sensor_id": "a", "period_ms": 0}, "period_ms"),
                       ({"site": "s", "sensor_id": "a", "mqtt": {"port": "x"}}, "mqtt.port"),
                       ({"site": "s", "sensor_id": "a", "colour": 1}, "colour"),
                       ({"site": "s", "sensor_id": "a",
                         "outputs": {"valve": {"failsafe": 2}}}, "outputs.valve.failsafe")):
        with pytest.raises(ValueError, match=f"config: {field}"):
            config.check(raw)
    assert config.check({"site": "s1", "sensor_id": "rs-01"})["period_ms"] == 100
    bad_key = tmp_path / "key.hex"  # type: ignore[operator]
    bad_key.write_text("abc\n")
    with pytest.raises(ValueError, match="64 lower-case hex"):
        config.load_key(str(bad_key))
    bad_key.write_text(KEY.hex() + "\n")
    assert config.load_key(str(bad_key)) == KEY


@pytest.fixture
def peer() -> Iterator[tuple[tuple[str, int], threading.Event, list[socket.socket]]]:
    """A TCP listener on loopback; accepted connections are handed to the test."""
    srv = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []
    ready = threading.Event()

    def accept() -> None:
        conn, _ = srv.accept()
        conns.append(conn)
        ready.set()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname(), ready, conns
    for c in conns:
        c.close()
    srv.close()


def test_net_socket_is_bounded_and_speaks_stream_methods(
        peer: tuple[tuple[str, int], threading.Event, list[socket.socket]]) -> None:
    addr, ready, conns = peer
    net.TIMEOUT_S = 0.2
    s = net.socket()
    s.connect(net.getaddrinfo(*addr)[0][-1])
    assert ready.wait(5)
    [conn] = conns
    s.write(b"hello world", 5)
    assert conn.recv(16) == b"hello"
    s.setblocking(False)
    assert s.read(1) is None  # nothing waiting: at once, as MicroPython's check_msg expects
    conn.sendall(b"ab")
    time.sleep(0.05)  # not a wait for an event: makes "cd" a TCP segment of its own
    conn.sendall(b"cd")
    assert s.read(1) == b"a"  # non-blocking read found data; the rest of a message blocks
    assert s.read(3) == b"bcd"  # across two TCP segments
    started = time.monotonic()
    with pytest.raises(OSError):
        s.read(1)  # silent peer: bounded by TIMEOUT_S, not forever
    assert time.monotonic() - started < 1.0
    conn.close()
    assert s.read(1) == b""  # end of stream
    s.close()


def test_nonce_memory_is_bounded_and_refuses_rather_than_forget() -> None:
    boot_ms = 1_796_529_600_000
    v = envelope.Verifier(KEY, "rs-01", "output", "infrastructure_manager", max_age_ms=30_000,
                          max_nonces=4, not_before_ms=boot_ms)

    def doc(nonce: str, at_ms: int) -> dict[str, object]:
        return sign(KEY, "rs-01", "output", {"PSWD_version": "1.0", "point": "valve",
                                             "value": 1}, role="infrastructure_manager",
                    now=at_ms / 1000, nonce=nonce)

    sent = [doc(f"nonce-{i:03d}", boot_ms + 1000 * i) for i in range(5)]
    now = boot_ms + 5000
    assert [v.check(d, now) for d in sent[:4]] == [None] * 4
    full = v.check(sent[4], now)
    assert full is not None and "too many commands" in full[2]  # refused, nothing forgotten
    replay = v.check(sent[0], now)
    assert replay is not None and "already used" in replay[2]
    # 32 s later the first commands can no longer pass the time check: their nonces go
    later = boot_ms + 32_000
    assert v.check(doc("nonce-new", later), later) is None
    assert len(v.nonces) <= 4
    stale = v.check(sent[0], later)
    assert stale is not None and stale[1] == "timestamp"  # too old now, whatever its nonce
