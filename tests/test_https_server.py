"""The HTTPS server of spec Table 3, end to end: a node assembled with [https] and [audit],
its real TLS 1.3 server on 127.0.0.1, real JWTs, signed commands, an aiohttp client.

Every endpoint, every error status (400, 401, 403, 404, 409, 413, 422, 429), a TLS 1.2
client and a client without a certificate refused, an announcement answered with a
schema-valid A.2 by the site coordinator (a real Mosquitto behind it), the 100 ms
resolution of /PSWD/power/realtime, and the audit log holding what was done."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.config.reader import ConfigError
from edge_runtime.core.authority import DEFAULT_RIGHTS, USER_ROLES
from edge_runtime.core.commands import ForceOutput, SetOutput
from edge_runtime.federation.topics import NodeTopics
from edge_runtime.messages.annex_a import InfrastructureResponse, format_datetime, parse_as
from edge_runtime.security.audit import verify
from edge_runtime.security.tokens import KeyRing
from edge_runtime.servers.https.control import ControlGate, announce
from edge_runtime.servers.https.errors import ApiError
from edge_runtime.servers.https.factory import command_verifier
from tests.conftest import free_port
from tests.fakes import FakeDevice
from tests.https_env import EXAMPLES, Env, Running, fakes, running
from tests.mosquitto import Broker, mosquitto_fixture  # noqa: F401
from tests.test_link_state import watching

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
VECTORS = Path(__file__).resolve().parent / "vectors" / "annex_a"
RACK = "rack-01"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env.create(tmp_path)


def battery(r: Running, value: float = -120.0, role: str = "grid_operator",
            kind: str = "battery_control", **kw: Any) -> dict[str, Any]:
    return r.env.signed(role, RACK, kind, {"action": "set_output", "point": "battery.w_set_kw",
                                           "value": value, "command_id": "c-1"}, **kw)


def audit_entries(r: Running) -> list[dict[str, Any]]:
    audit = r.node.services["audit"]
    assert audit.flush()  # type: ignore[attr-defined]
    path = r.env.root / "audit.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_signed_battery_command_is_queued_applied_and_audited(env: Env) -> None:
    async with running(env, "rack.toml") as r:
        status, doc, _ = await r.call("POST", "/PSWD/battery/control", role="grid_operator",
                                      body=battery(r))
        assert status == 202, doc
        assert doc["accepted"] is True and doc["source"] == "https.battery_control"
        assert doc["command_id"] == "c-1" and doc["role"] == "grid_operator"
        await r.until(lambda: r.node.manual.holds().get("battery.w_set_kw")
                      == "https.battery_control")
        assert r.node.image.output("battery.w_set_kw") == -120.0
        # the grid signal channel reaches the same output, like cmd/grid_signal over MQTT
        status, doc, _ = await r.call("POST", "/PSWD/grid/signal", role="grid_operator",
                                      body=battery(r, -80.0, kind="grid_signal"))
        assert status == 202, doc
        await r.until(lambda: r.node.image.output("battery.w_set_kw") == -80.0)
        entries = audit_entries(r)
        applied = [e for e in entries if e["kind"] == "command" and e["accepted"]]
        assert [e["source"] for e in applied][-2:] == ["https.battery_control",
                                                       "https.grid_signal"]
    assert verify(env.root / "audit.log").ok


async def test_status_endpoints_answer_from_the_process_image(env: Env) -> None:
    async with running(env, "rack.toml") as r:
        meter = r.node.drivers["rack_meter"]
        assert isinstance(meter, FakeDevice)
        meter.set_input("power_kw", 87.5, ts=time.time())
        await r.until(lambda: r.node.image.inputs["rack_meter.power_kw"].value == 87.5)
        status, doc, _ = await r.call("GET", "/PSWD/grid/status", role="municipal_partner")
        assert status == 200, doc
        assert doc["points"]["rack_meter.power_kw"]["value"] == 87.5
        assert doc["outputs"]["battery.w_set_kw"]["class"] == "battery"
        assert "smoothing" in doc["control"]
        for path in ("/PSWD/thermal/status", "/PSWD/thermal/control"):
            method = "GET" if path.endswith("status") else "POST"
            status, doc, _ = await r.call(method, path, role="infrastructure_manager",
                                          body={} if method == "POST" else None)
            assert status == 404 and "not served by this rack node" in doc["error"], doc


async def test_thermal_endpoints_on_the_cdu(env: Env) -> None:
    async with running(env, "cdu.toml") as r:
        status, doc, _ = await r.call("GET", "/PSWD/thermal/status", role="workload_operator")
        assert status == 200, doc
        assert "supply_temp.temperature" in doc["points"]
        assert doc["outputs"]["pump1.speed_ref"]["class"] == "pump"
        assert set(doc["interlocks"]) == {"engaged", "latched"}
        body = env.signed("infrastructure_manager", "cdu-01", "thermal_control",
                          {"action": "set_output", "point": "pump1.speed_ref", "value": 55.0})
        status, doc, _ = await r.call("POST", "/PSWD/thermal/control",
                                      role="infrastructure_manager", body=body)
        assert status == 202, doc
        await r.until(lambda: r.node.manual.holds().get("pump1.speed_ref")
                      == "https.thermal_control")
        for path in ("/PSWD/battery/control", "/PSWD/grid/signal"):
            status, doc, _ = await r.call("POST", path, role="grid_operator", body={})
            assert status == 404 and "drives no battery" in doc["error"]


async def test_realtime_power_has_100_ms_resolution(env: Env) -> None:
    async with running(env, "rack.toml") as r:
        meter = r.node.drivers["rack_meter"]
        assert isinstance(meter, FakeDevice)
        history = r.https.api.p.history
        start = len(history.rows(10.0))
        k = 0

        def feed() -> bool:  # a new reading every check, as a 10 ms poll would give
            nonlocal k
            k += 1
            meter.set_input("power_kw", 100.0 + k, ts=time.time())
            return len(history.rows(10.0)) >= start + 8

        await r.until(feed)
        status, doc, _ = await r.call("GET", "/PSWD/power/realtime?window_s=0.75",
                                      role="workload_operator")
        assert status == 200, doc
        assert doc["resolution_ms"] == 100
        assert set(doc["points"]) == {"rack_meter.power_kw", "battery.ac_w_kw",
                                      "battery.w_cha_max_kw", "battery.w_dis_cha_max_kw",
                                      "battery.battery_w_kw"}
        latest = doc["points"]["rack_meter.power_kw"]
        assert latest["unit"] == "kW" and latest["quality"] == "good"
        assert len(latest["timestamp"]) == len("2026-12-06T03:50:42.123Z")
        stamps = [datetime.fromisoformat(s["timestamp"]).timestamp() for s in doc["samples"]]
        assert 6 <= len(stamps) <= 8, stamps
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert all(0.07 <= g <= 0.13 for g in gaps), gaps  # 100 ms apart (loop jitter ~2 ms)
        values = [s["values"]["rack_meter.power_kw"] for s in doc["samples"]]
        assert values == sorted(values) and len(set(values)) == len(values)  # fresh each time
        status, doc, _ = await r.call("GET", "/PSWD/power/realtime?window_s=11",
                                      role="workload_operator")
        assert status == 422 and doc["field"] == "window_s"


async def test_token_failures_are_401_audited_and_a_persistent_source_blocked(env: Env) -> None:
    async with running(env, "rack.toml") as r:
        other = KeyRing.create(env.root / "other_keys")
        forged = other.issuer().issue(sub="mallory", role="infrastructure_manager",
                                      audience=RACK, ttl_s=60)
        head, payload, sig = env.token("grid_operator", RACK).split(".")
        tampered = ".".join((head, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"), sig))
        cases = {
            "missing": (None, "bearer token is required"),
            "expired": (env.token("grid_operator", RACK, ttl_s=60, now=time.time() - 600),
                        "token exp"),
            "forged": (forged, "token kid"),
            "tampered": (tampered, "token"),
            "wrong audience": (env.token("grid_operator", "cdu-01"), "token aud"),
        }
        for name, (token, words) in cases.items():
            status, doc, headers = await r.call("GET", "/PSWD/grid/status", token=token)
            assert status == 401, (name, doc)
            assert words in doc["error"] and doc["field"] == "Authorization", (name, doc)
            assert headers["WWW-Authenticate"].startswith("Bearer"), name
        failures = [e for e in audit_entries(r) if e["kind"] == "auth_failure"]
        assert len(failures) == len(cases)
        assert {e["source"] for e in failures} == {"https:127.0.0.1"}
        # five in a minute: intrusion detection blocks the source, a good token included
        status, doc, headers = await r.call("GET", "/PSWD/grid/status", role="grid_operator")
        assert status == 429 and "intrusion detection" in doc["error"], doc
        assert int(headers["Retry-After"]) > 200


async def test_envelope_failures_are_401_naming_the_field(env: Env) -> None:
    async with running(env, "rack.toml") as r:
        body = battery(r)
        body["value"] = -121.0  # altered after signing
        status, doc, _ = await r.call("POST", "/PSWD/battery/control", role="grid_operator",
                                      body=body)
        assert status == 401 and doc["field"] == "signature", doc
        replay = battery(r)
        assert (await r.call("POST", "/PSWD/battery/control", role="grid_operator",
                             body=replay))[0] == 202
        status, doc, _ = await r.call("POST", "/PSWD/battery/control", role="grid_operator",
                                      body=replay)
        assert status == 401 and doc["field"] == "nonce" and "replay" in doc["error"], doc
        stale = battery(r, now=time.time() - 300)
        status, doc, _ = await r.call("POST", "/PSWD/battery/control", role="grid_operator",
                                      body=stale)
        assert status == 401 and doc["field"] == "timestamp", doc
        reasons = [e["reason"] for e in audit_entries(r) if e["kind"] == "auth_failure"]
        assert len(reasons) == 3 and "signature" in reasons[0] and "replay" in reasons[1]


async def test_rights_refusals_are_403_naming_the_rule(env: Env) -> None:
    async with running(env, "rack.toml") as r:
        # municipal_partner may not move a battery (rights table), signed with its own key
        body = battery(r, role="municipal_partner")
        status, doc, _ = await r.call("POST", "/PSWD/battery/control",
                                      role="municipal_partner", body=body)
        assert status == 403 and "may not send battery_control" in doc["error"], doc
        # the envelope's role must be the token's
        status, doc, _ = await r.call("POST", "/PSWD/battery/control",
                                      role="infrastructure_manager", body=battery(r))
        assert status == 403 and doc["field"] == "role" and "token is for" in doc["error"]
        # grid_operator signs a grid signal for an output class it has no right on
        body = r.env.signed("grid_operator", RACK, "grid_signal",
                            {"action": "set_output", "point": "battery.ctrl_hb", "value": 1})
        status, doc, _ = await r.call("POST", "/PSWD/grid/signal", role="grid_operator",
                                      body=body)
        assert status == 403 and doc["error"].startswith("rights:"), doc
        refused = [e for e in audit_entries(r) if e["kind"] == "command" and not e["accepted"]]
        assert any(e["source"] == "https.grid_signal" for e in refused)


async def test_precedence_and_interlock_conflicts_are_409(env: Env) -> None:
    async with running(env, "rack.toml") as r:
        r.node.commands.submit(SetOutput("battery.w_set_kw", 10.0, source="local"))
        await r.until(lambda: r.node.manual.holds().get("battery.w_set_kw") == "local")
        status, doc, _ = await r.call("POST", "/PSWD/battery/control", role="grid_operator",
                                      body=battery(r))
        assert status == 409 and doc["error"].startswith("precedence:"), doc
        r.node.commands.submit(ForceOutput("battery.w_set_ena", 0.0,
                                           role="infrastructure_manager"))
        await r.until(lambda: r.node.safety.owner.get("battery.w_set_ena") == "force")
        body = r.env.signed("grid_operator", RACK, "battery_control",
                            {"action": "set_output", "point": "battery.w_set_ena", "value": 1})
        status, doc, _ = await r.call("POST", "/PSWD/battery/control", role="grid_operator",
                                      body=body)
        assert status == 409 and "driven by force" in doc["error"], doc
        assert r.node.image.output("battery.w_set_ena") == 0.0


async def test_bad_bodies_are_400_413_and_422_naming_the_field(env: Env) -> None:
    async with running(env, "rack.toml", max_body_bytes=2048) as r:
        call = r.call
        status, doc, _ = await call("POST", "/PSWD/battery/control", role="grid_operator",
                                    raw=b'{"action": ')
        assert status == 400 and "not valid JSON" in doc["error"], doc
        status, doc, _ = await call("POST", "/PSWD/battery/control", role="grid_operator",
                                    raw=b"[1, 2]")
        assert status == 400 and doc["field"] == "$"
        status, doc, _ = await call("POST", "/PSWD/battery/control", role="grid_operator",
                                    raw=b"x" * 5000)
        assert status == 413 and "2048-byte limit" in doc["error"], doc
        out_of_range = battery(r, 900.0)
        status, doc, _ = await call("POST", "/PSWD/battery/control", role="grid_operator",
                                    body=out_of_range)
        assert status == 422 and doc["field"] == "value", doc
        body = r.env.signed("grid_operator", RACK, "battery_control",
                            {"action": "set_output", "point": "battery.nope", "value": 1.0})
        status, doc, _ = await call("POST", "/PSWD/battery/control", role="grid_operator",
                                    body=body)
        assert status == 422 and doc["field"] == "point", doc
        status, doc, _ = await call("POST", "/PSWD/battery/control", role="grid_operator",
                                    body={"PSWD_version": "1.0", "action": "set_output"})
        assert status == 422 and doc["field"] == "timestamp", doc
        status, doc, _ = await call("PUT", "/PSWD/battery/control", role="grid_operator")
        assert status == 405 and "error" in doc


async def test_a_source_over_the_rate_limit_gets_429(env: Env) -> None:
    async with running(env, "rack.toml", rate_per_s=1.0, burst=3) as r:
        answers = [(await r.call("GET", "/PSWD/grid/status", role="grid_operator"))
                   for _ in range(5)]
        assert [a[0] for a in answers] == [200, 200, 200, 429, 429]
        _status, doc, headers = answers[3]
        assert "requests/s from 127.0.0.1" in doc["error"] and int(headers["Retry-After"]) >= 1


def _handshake(ctx: ssl.SSLContext, port: int) -> str:
    """Handshake with the server; the TLS version on success, else why it failed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                version = tls.version() or "?"
                tls.sendall(b"GET /PSWD/grid/status HTTP/1.1\r\nHost: x\r\n\r\n")
                return version if tls.recv(64) else "closed after the handshake"
        except (ssl.SSLError, OSError) as exc:
            return f"refused: {exc}"


async def test_only_tls_13_clients_with_a_certificate_get_in(env: Env) -> None:
    async with running(env, "rack.toml") as r:
        port = r.https.bound_port
        assert port is not None
        # asyncio's TLS server drops a refused handshake without flushing its alert, so the
        # client sees the connection end (not PROTOCOL_VERSION); it never gets an answer, and
        # the same client offering TLS 1.3 does
        tls12 = await asyncio.to_thread(_handshake, env.client_ssl(tls12=True), port)
        assert tls12.startswith("refused"), tls12
        no_cert = await asyncio.to_thread(_handshake, env.client_ssl(cert=False), port)
        assert no_cert.startswith("refused") or no_cert == "closed after the handshake", no_cert
        assert await asyncio.to_thread(_handshake, env.client_ssl(), port) == "TLSv1.3"
        # an independent client: openssl s_client offering TLS 1.2 only
        if shutil.which("openssl"):
            proc = await asyncio.create_subprocess_exec(
                "openssl", "s_client", "-tls1_2", "-connect", f"127.0.0.1:{port}",
                "-CAfile", str(env.pki.ca), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
            assert proc.returncode != 0 and b"Cipher is (NONE)" in out, out[-400:]
        status, _, _ = await r.call("GET", "/PSWD/grid/status", role="grid_operator")
        assert status == 200


def announcement(workload_id: str = "job-https-1") -> dict[str, Any]:
    doc = json.loads((VECTORS / "valid_workload_announcement_minimal.json").read_text())
    doc["workload_id"] = workload_id
    doc["timestamp"] = format_datetime(datetime.now(UTC))
    return doc


async def test_announce_is_answered_by_the_site_coordinator_with_an_a2(
        env: Env, mosquitto: Broker) -> None:
    overrides = {"mqtt": {"port": mosquitto.port}}
    async with running(env, "site.toml", overrides=overrides) as r:
        url = "/PSWD/workload/announce"
        status, doc, _ = await r.call("POST", url, role="workload_operator",
                                      body=announcement())
        assert status == 200, doc
        answer = parse_as(InfrastructureResponse, doc)  # schema-valid Annex A.2
        assert answer.workload_id == "job-https-1"
        coordinator = r.node.services["coordinator"]
        counts = coordinator.get_status()["counts"]  # type: ignore[attr-defined]
        assert counts["announcements"] == 1
        status, doc, _ = await r.call("POST", url, role="grid_operator", body=announcement())
        assert status == 403 and "may not do this: announce" in doc["error"], doc
        bad = announcement()
        bad["power_profile"]["peak_power_mw"] = "lots"
        status, doc, _ = await r.call("POST", url, role="workload_operator", body=bad)
        assert status == 422 and doc["field"] == "power_profile.peak_power_mw", doc
        stale = announcement()
        stale["timestamp"] = "2020-01-01T00:00:00Z"
        status, doc, _ = await r.call("POST", url, role="workload_operator", body=stale)
        assert status == 422 and doc["field"] == "timestamp", doc
        status, doc, _ = await r.call("POST", url, role="workload_operator", raw=b"{oops")
        assert status == 400, doc


async def test_announce_on_a_rack_is_404(env: Env) -> None:
    async with running(env, "rack.toml") as r:
        status, doc, _ = await r.call("POST", "/PSWD/workload/announce",
                                      role="workload_operator", body=announcement())
        assert status == 404 and "site coordinator" in doc["error"]


def test_https_command_keys_other_than_mqtts_are_refused_at_load(env: Env) -> None:
    other = env.root / "other_keys"
    other.mkdir()
    extra = env.https_overrides(command_keys=str(other))
    extra["mqtt"] = {"host": "127.0.0.1", "command_keys": str(env.root / "keys")}
    with pytest.raises(ConfigError) as info:
        load_node_config(EXAMPLES / "rack.toml", overrides=extra)
    assert any("[https] command_keys: must be [mqtt] command_keys" in line
               for line in info.value.lines), info.value.lines
    extra = env.https_overrides(cert=str(env.root / "missing.crt"), port=0)
    with pytest.raises(ConfigError) as info:
        load_node_config(EXAMPLES / "rack.toml", overrides=extra)
    assert any("[https] cert:" in line and "does not exist" in line
               for line in info.value.lines), info.value.lines
    assert any("[https] port: must be >= 1" in line for line in info.value.lines)


async def test_one_verifier_a_command_taken_over_https_is_a_replay_on_mqtt(
        env: Env, mosquitto: Broker) -> None:
    """The node's one CommandVerifier serves both transports: a signed command accepted by the
    HTTPS server and then published on cmd/battery_control is refused as a replay."""
    mqtt = {"host": "127.0.0.1", "port": mosquitto.port, "command_keys": str(env.root / "keys"),
            "state_dir": str(env.root / "mqtt_state"), "require_coordinator": False}
    async with running(env, "rack.toml", overrides={"mqtt": mqtt}) as r:
        link = r.node.services["mqtt"]
        topics = NodeTopics("demo", RACK)
        cfg = mosquitto.mqtt_config()
        async with watching(cfg, topics.error) as inbox:
            await inbox.wait_until(lambda _: link.get_status()["online"], what="online")
            doc = battery(r, -60.0)
            status, answer, _ = await r.call("POST", "/PSWD/battery/control",
                                             role="grid_operator", body=doc)
            assert status == 202, answer
            await link.client.publish_acked(topics.cmd("battery_control"),  # type: ignore[attr-defined]
                                            json.dumps(doc).encode())
            (err,) = [json.loads(m.payload) for m in await inbox.wait_for(1, topics.error)]
            assert err["field"] == "nonce" and "replay" in err["error"], err
            # and the other way round: taken over MQTT first, then refused over HTTPS
            doc = battery(r, -70.0)
            await link.client.publish_acked(topics.cmd("battery_control"),  # type: ignore[attr-defined]
                                            json.dumps(doc).encode())
            await r.until(lambda: r.node.image.output("battery.w_set_kw") == -70.0)
            status, answer, _ = await r.call("POST", "/PSWD/battery/control",
                                             role="grid_operator", body=doc)
            assert status == 401 and answer["field"] == "nonce", answer


async def test_emergency_disconnect_closes_the_https_server_until_reconnected(env: Env) -> None:
    async with running(env, "rack.toml") as r:
        before = r.https
        port = before.bound_port
        assert (await r.call("GET", "/PSWD/grid/status", role="grid_operator"))[0] == 200
        r.node.disconnect("test: security incident")
        await r.until(lambda: _refused(port))
        scans = r.node.engine.stats.cycles
        await r.until(lambda: r.node.engine.stats.cycles > scans + 5)  # runs on
        r.node.reconnect()
        await r.until(lambda: r.https is not before and r.https.started.is_set())
        status, doc, _ = await r.call("GET", "/PSWD/grid/status", role="grid_operator")
        assert status == 200, doc
        await r.until(lambda: {("security", "emergency_disconnect"),
                               ("security", "links_reconnected")}
                      <= {(e["kind"], e.get("code")) for e in audit_entries(r)})


def _refused(port: int | None) -> bool:
    assert port is not None
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return True
    return False


CONTROL = {"/PSWD/thermal/control": ("cdu.toml", "cdu-01", "thermal_control", "pump1.speed_ref",
                                     30.0),
           "/PSWD/battery/control": ("rack.toml", RACK, "battery_control", "battery.w_set_kw",
                                     -10.0),
           "/PSWD/grid/signal": ("rack.toml", RACK, "grid_signal", "battery.w_set_kw", -20.0)}


async def test_every_role_on_every_endpoint_follows_the_rights_table(env: Env) -> None:
    """Each of the four roles against each Table 3 endpoint, on the node that owns it, signing
    with its own key: the status expected is derived from the one rights table."""
    rights = DEFAULT_RIGHTS
    seen: dict[tuple[str, str], int] = {}
    for example in ("rack.toml", "cdu.toml"):
        async with running(env, example) as r:
            for role in USER_ROLES:
                for path in ("/PSWD/power/realtime", "/PSWD/thermal/status",
                             "/PSWD/grid/status"):
                    if r.https.api.served[path]:
                        continue
                    status, doc, _ = await r.call("GET", path, role=role)
                    assert status == 200, (role, path, doc)
                    seen[(role, path)] = status
                for path, (owner, node, kind, point, value) in CONTROL.items():
                    if owner != example:
                        continue
                    body = env.signed(role, node, kind, {"action": "set_output", "point": point,
                                                         "value": value})
                    cls = r.node.image.outputs_info[point].spec.output_class
                    allowed = (rights.allows(role, "set_output", cls)
                               and rights.allows(role, kind, cls))
                    status, doc, _ = await r.call("POST", path, role=role, body=body)
                    assert status == (202 if allowed else 403), (role, path, doc)
                    seen[(role, path)] = status
    # announcements, on the site node (its coordinator needs no broker to decide)
    async with running(env, "site.toml", overrides={"mqtt": {"port": free_port()}}) as r:
        for role in USER_ROLES:
            allowed = rights.allows(role, "announce") and rights.allows(role, "workload")
            status, doc, _ = await r.call("POST", "/PSWD/workload/announce", role=role,
                                          body=announcement(f"job-{role}"))
            assert status == (200 if allowed else 403), (role, doc)
            seen[(role, "/PSWD/workload/announce")] = status
    assert {p for _, p in seen} == {"/PSWD/power/realtime", "/PSWD/thermal/status",
                                    "/PSWD/grid/status", "/PSWD/workload/announce",
                                    *CONTROL}
    assert {s for s in seen.values()} == {200, 202, 403}  # allowed and refused cells both


async def test_https_takes_the_nodes_pki_from_security_by_default(env: Env) -> None:
    """[https] names no files: the node's [security] certificate, key, CA and token keys."""
    plain = {k: v for k, v in env.https_overrides()["https"].items()
             if k not in ("cert", "key", "ca", "token_keys")}
    security = {"cert": str(env.pki.server_cert), "key": str(env.pki.server_key),
                "ca": str(env.pki.ca), "token_keys": str(env.root / "token_keys")}
    cfg = load_node_config(EXAMPLES / "rack.toml",
                           overrides={"https": plain, "security": security})
    assert cfg.https is not None and cfg.https.cert == env.pki.server_cert
    assert cfg.https.token_keys == env.root / "token_keys"
    async with running(env, "rack.toml", overrides={"security": security},
                       drop=("cert", "key", "ca", "token_keys")) as r:
        assert r.node.config.https.cert == env.pki.server_cert  # type: ignore[attr-defined]
        status, doc, _ = await r.call("GET", "/PSWD/grid/status", role="grid_operator")
        assert status == 200, doc
    with pytest.raises(ConfigError) as info:
        load_node_config(EXAMPLES / "rack.toml", overrides={"https": plain})
    assert any("[https] cert: required here or in [security]" in line
               for line in info.value.lines), info.value.lines


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                     | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
_FIELDS = st.sampled_from(["PSWD_version", "timestamp", "action", "point", "value",
                           "command_id", "signature", "nonce", "role", "extra"])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200) | st.dictionaries(_FIELDS, _JSON, max_size=9).map(
    lambda d: json.dumps(d).encode()),
       kind=st.sampled_from(["thermal_control", "battery_control", "grid_signal"]),
       role=st.sampled_from(USER_ROLES))
def test_any_body_is_answered_with_a_documented_refusal_never_an_exception(
        env: Env, raw: bytes, kind: str, role: str) -> None:
    """Fuzzing the POST bodies (sans-IO: the gate and the announcement check)."""
    gate, node = _fuzz_gate(env)
    try:
        gate.submit(kind, raw, role)
    except ApiError as err:
        assert err.status in (400, 401, 403, 409, 413, 422) and isinstance(err.field, str)
    try:
        announce(raw, role, DEFAULT_RIGHTS, None, time.time())
    except ApiError as err:
        assert err.status in (400, 403, 404, 422) and isinstance(err.field, str)
    assert node.commands.drain() == []  # nothing without a genuine signature is queued


_GATES: dict[Path, Any] = {}


def _fuzz_gate(env: Env) -> Any:
    if env.root not in _GATES:
        node = assemble(load_node_config(EXAMPLES / "rack.toml",
                                         overrides=env.https_overrides()),
                        driver_factory=fakes, watchdog_thread=False, federate=False)
        verifier = command_verifier(node, env.root / "keys", env.root / "fuzz-nonces.log")
        _GATES[env.root] = (ControlGate(image=node.image, manual=node.manual,
                                        commands=node.commands, owner=lambda p: "",
                                        wall=time.time, verifier=verifier, max_bytes=65536),
                            node)
    return _GATES[env.root]


def test_pswd_edge_run_serves_https_to_curl_and_its_audit_log_verifies(env: Env) -> None:
    """The console script runs a node with [https] and [audit]; curl (an independent client,
    TLS 1.3 with a client certificate) reads and commands; then `audit verify` passes."""
    curl = shutil.which("curl")
    assert curl, "curl is needed: apt-get install -y curl"
    https = env.https_overrides()
    port = https["https"]["port"]
    lines = [line for line in (EXAMPLES / "rack.toml").read_text().splitlines()
             if not line.startswith("realtime_priority")]
    lines.append("[https]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in https["https"].items()]
    lines += ["[audit]", f"path = {json.dumps(https['audit']['path'])}"]
    config = env.root / "rack.toml"
    config.write_text("\n".join(lines) + "\n")
    exe = str(Path(sys.executable).parent / "pswd-edge")
    proc = subprocess.Popen([exe, "run", "--config", str(config), "--duration", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 15
        while _refused(port):
            assert proc.poll() is None, proc.communicate()[0][-2000:]
            assert time.monotonic() < deadline, "the HTTPS server did not come up"
            time.sleep(0.1)
        tls = ["--tlsv1.3", "--cacert", str(env.pki.ca), "--cert", str(env.pki.client_cert),
               "--key", str(env.pki.client_key), "-s", "-w", "\n%{http_code}",
               "-H", f"Authorization: Bearer {env.token('grid_operator', RACK)}"]
        url = f"https://127.0.0.1:{port}"
        out = subprocess.run([curl, *tls, f"{url}/PSWD/power/realtime"], capture_output=True,
                             text=True, timeout=10).stdout
        body, code = out.rsplit("\n", 1)
        assert code == "200" and json.loads(body)["resolution_ms"] == 100, out
        command = env.signed("grid_operator", RACK, "battery_control",
                             {"action": "set_output", "point": "battery.w_set_kw", "value": -5})
        out = subprocess.run([curl, *tls, "-H", "Content-Type: application/json", "--data",
                              json.dumps(command), f"{url}/PSWD/battery/control"],
                             capture_output=True, text=True, timeout=10).stdout
        body, code = out.rsplit("\n", 1)
        # accepted, or (the Modbus devices of rack.toml are absent) refused because the
        # comms-loss policy drives the output: either way an answer of the documented kind
        assert code in ("202", "409"), out
        out = subprocess.run([curl, "--tls-max", "1.2", *tls[1:], f"{url}/PSWD/grid/status"],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode != 0 and not out.stdout.startswith("{"), out
    finally:
        proc.send_signal(signal.SIGINT)
        log = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, log[-2000:]
    verdict = subprocess.run([exe, "audit", "verify", https["audit"]["path"]],
                             capture_output=True, text=True, timeout=20)
    assert verdict.returncode == 0 and "intact" in verdict.stdout, verdict
    assert int(verdict.stdout.split("intact: ")[1].split()[0]) >= 1  # the command, at least
