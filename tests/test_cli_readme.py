"""Every command line of the README's "What runs where" table, run as a user types it: the
console scripts in the venv as subprocesses, flags in more than one order, `-h` and `--help`
on every subcommand. Real peers where a command needs one (Mosquitto, a site coordinator run
by `pswd-edge run`). The table is read from README.md: a line added there without a test
here fails `test_every_readme_command_line_is_covered`."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.federation.mqtt import MqttClient
from tests.mosquitto import Broker, Inbox, free_port, mosquitto_fixture  # noqa: F401
from tests.test_cli_errors import dump_toml, example

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VECTORS = REPO / "tests" / "vectors" / "annex_a"

pytestmark = pytest.mark.timeout(60)

# README synopsis -> the test that runs it
COVERED = {
    "pswd-edge run --config FILE [--duration S]": "test_run",
    "pswd-edge check-config FILE": "test_check_config",
    "pswd-edge validate FILE|-": "test_validate",
    "pswd-edge announce FILE [--config NODE.toml | --host H --port P] [--timeout S]":
        "test_announce",
    "pswd-edge command --node N --kind K --point P (--value V | --release) --role R "
    "--keys DIR [--config F]": "test_command",
    "pswd-edge keygen --role R DIR": "test_keygen",
    "pswd-edge demo [--duration S] [--no-ui]": "test_demo",
    "pswd-plant-sim --config FILE [--duration S]": "test_plant_sim",
    "pswd-edge certs init-ca|issue|sign-csr|revoke|crl|list|rotate ...": "test_certs",
    "pswd-edge token init|rotate|issue ...": "test_token",
    "pswd-edge opcua add-user|trust|client-cert|cert ...": "test_opcua",
    "pswd-edge audit verify FILE": "test_audit_verify",
}


def readme_command_lines() -> list[str]:
    """The first column of every table row that starts with a console script."""
    rows = re.findall(r"^\| `((?:pswd-edge|pswd-plant-sim)[^`]*)` \|",
                      (REPO / "README.md").read_text(), flags=re.MULTILINE)
    return [row.replace("\\|", "|") for row in rows]


def sh(line: str, *, stdin: str | None = None, timeout: float = 40, own_network: bool = False,
       **values: Any) -> subprocess.CompletedProcess[str]:
    """Run one command line as typed (after filling in {placeholders}) with the venv's
    console scripts, as a subprocess, from the repository root. `own_network`: in a network
    namespace of its own (an unprivileged user namespace with its own loopback), so the
    fixed ports of the demo and the example plant never meet another test's or user's."""
    argv = shlex.split(line.format(**{k: shlex.quote(str(v)) for k, v in values.items()}))
    argv[0] = str(BIN / argv[0])
    if own_network:
        argv = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, cwd=REPO)


def test_every_readme_command_line_is_covered() -> None:
    lines = readme_command_lines()
    assert lines, "README.md has no command table"
    assert set(lines) == set(COVERED), "README table and tests/test_cli_readme.py differ"
    for name in COVERED.values():
        assert callable(globals().get(name)), name


SUBCOMMANDS = sorted({line.split()[1] for line in COVERED if line.startswith("pswd-edge ")})


@pytest.mark.parametrize("sub", SUBCOMMANDS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_on_every_subcommand(sub: str, flag: str) -> None:
    proc = sh(f"pswd-edge {sub} {flag}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: pswd-edge {sub} "), proc.stdout


def test_help_of_the_tools() -> None:
    for line in ("pswd-edge -h", "pswd-edge --help", "pswd-plant-sim -h", "pswd-edge --version"):
        proc = sh(line)
        assert proc.returncode == 0 and proc.stdout.strip(), (line, proc.stderr)
    top = sh("pswd-edge -h").stdout
    assert all(f"    {sub}" in top for sub in SUBCOMMANDS)


# --- configs ---------------------------------------------------------------------------------

@pytest.fixture
def rack(tmp_path: Path) -> Path:
    """The rack example, its devices on a loopback port nothing listens on."""
    path = tmp_path / "rack.toml"
    path.write_text(dump_toml(example("rack.toml", free_port())))
    return path


def site_files(tmp_path: Path, broker: Broker) -> tuple[Path, Path]:
    """(the coordinator's config, an operator's config naming the same broker and site)."""
    site = example("site.toml", broker.port)
    site["node"]["site"] = "site"  # the default of --site: the --host/--port form needs none
    coordinator = tmp_path / "site.toml"
    coordinator.write_text(dump_toml(site))
    operator = tmp_path / "operator.toml"
    operator.write_text(dump_toml({"node": {"site": "site"},
                                   "mqtt": {"host": "127.0.0.1", "port": broker.port}}))
    return coordinator, operator


def announcement(tmp_path: Path, workload_id: str) -> Path:
    """A.1 with a fresh timestamp (the coordinator refuses stale ones)."""
    doc = json.loads((VECTORS / "valid_workload_announcement_minimal.json").read_text())
    doc["timestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["workload_id"] = workload_id
    path = tmp_path / f"{workload_id}.json"
    path.write_text(json.dumps(doc))
    return path


# --- one test per README line ----------------------------------------------------------------

def test_run(rack: Path) -> None:
    for line in ("pswd-edge run --config {cfg} --duration 1",
                 "pswd-edge run --duration 1 --config {cfg}",
                 "pswd-edge --log-level WARNING run --config {cfg} --duration 1",
                 "pswd-edge run --config {cfg} --duration 1 --log-level INFO"):
        proc = sh(line, cfg=rack)
        assert proc.returncode == 0, (line, proc.stderr)
        if "WARNING" not in line:
            assert "edge_runtime.run: summary rack-01 after " in proc.stderr, line
    proc = sh("pswd-edge run --config {cfg} --duration 1", cfg=rack.parent / "nope.toml")
    assert proc.returncode == 2 and proc.stderr == f"{rack.parent}/nope.toml: file: not found\n"


def test_check_config(rack: Path, tmp_path: Path) -> None:
    proc = sh("pswd-edge check-config {cfg}", cfg=rack)
    assert proc.returncode == 0 and proc.stdout.startswith(f"{rack}: ok: node rack-01 (rack)")
    bad = tmp_path / "bad.toml"
    bad.write_text(rack.read_text().replace('"rack-01"', '"workload"'))
    proc = sh("pswd-edge check-config {cfg}", cfg=bad)
    assert proc.returncode == 2
    assert proc.stderr == f"{bad}: [node] name: node 'workload' is reserved for site-level " \
                          "topics\n"


def test_validate() -> None:
    good = VECTORS / "valid_workload_announcement_full.json"
    proc = sh("pswd-edge validate {f}", f=good)
    assert (proc.returncode, proc.stdout) == (0, "valid workload_announcement\n")
    proc = sh("pswd-edge validate -", stdin=good.read_text())
    assert (proc.returncode, proc.stdout) == (0, "valid workload_announcement\n")
    bad = VECTORS / "invalid_workload_announcement_wrong_types.json"
    proc = sh("pswd-edge validate {f}", f=bad)
    assert proc.returncode == 1 and proc.stderr
    assert all(re.match(r"^[\w.\[\]()]+: ", line) for line in proc.stderr.splitlines())
    proc = sh("pswd-edge validate -", stdin='{"value": NaN}')
    assert proc.returncode == 1 and proc.stderr.startswith("value: not valid JSON: NaN")


@pytest.fixture
def coordinator(tmp_path: Path, mosquitto: Broker) -> Iterator[tuple[Path, Path]]:
    """A site coordinator run as `pswd-edge run --config site.toml`, online on the broker."""
    site, operator = site_files(tmp_path, mosquitto)
    proc = subprocess.Popen([str(BIN / "pswd-edge"), "run", "--config", str(site)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_online(mosquitto)
        yield site, operator
    finally:
        proc.terminate()
        proc.wait(20)


def wait_online(broker: Broker) -> None:
    """Until the coordinator's retained liveness state says online (bounded)."""
    import asyncio

    async def wait() -> None:
        inbox = Inbox()
        client = MqttClient(broker.mqtt_config(), client_id="watch", on_message=inbox)
        client.subscribe("pswd/v1/site/coordinator/+/state", 1)
        client.start()
        try:
            await inbox.wait_until(lambda i: any(json.loads(m.payload).get("online") is True
                                                 for m in i.messages), timeout=20)
        finally:
            await client.stop()

    asyncio.run(wait())


def test_announce(tmp_path: Path, coordinator: tuple[Path, Path], mosquitto: Broker) -> None:
    _site, operator = coordinator
    lines = ["pswd-edge announce {a1} --config {node}",
             "pswd-edge announce --config {node} {a1}",
             "pswd-edge announce {a1} --host 127.0.0.1 --port {port} --timeout 5",
             "pswd-edge announce --timeout 5 --port {port} --host 127.0.0.1 {a1}"]
    for i, line in enumerate(lines):
        a1 = announcement(tmp_path, f"job-{i}")
        proc = sh(line, a1=a1, node=operator, port=mosquitto.port)
        # approved (0) or, the site having no rack telemetry yet, rejected (3): an A.2 either way
        assert proc.returncode in (0, 3), (line, proc.returncode, proc.stderr)
        a2 = json.loads(proc.stdout)
        assert (a2["message_type"], a2["workload_id"]) == ("infrastructure_response", f"job-{i}")
        assert re.search(r" in \d+\.\d ms$", proc.stderr.strip()), proc.stderr


def test_announce_without_a_coordinator(tmp_path: Path, mosquitto: Broker) -> None:
    t0 = time.monotonic()
    proc = sh("pswd-edge announce {a1} --host 127.0.0.1 --port {port} --timeout 0.5",
              a1=announcement(tmp_path, "alone"), port=mosquitto.port)
    assert proc.returncode == 4 and "no infrastructure response" in proc.stderr
    assert time.monotonic() - t0 < 15


def test_command(tmp_path: Path, mosquitto: Broker) -> None:
    keys = tmp_path / "keys"
    assert sh("pswd-edge keygen --role grid_operator {d}", d=keys).returncode == 0
    _site, operator = site_files(tmp_path, mosquitto)
    for line in ["pswd-edge command --node rack-01 --kind battery_control --point "
                 "battery.w_set_kw --value -20 --role grid_operator --keys {keys} --config {f}",
                 "pswd-edge command --config {f} --keys {keys} --role grid_operator --release "
                 "--point battery.w_set_kw --kind battery_control --node rack-01 --wait 0.5"]:
        proc = sh(line, keys=keys, f=operator)
        assert proc.returncode == 0, (line, proc.stderr)
        assert "not refused within" in proc.stdout
    proc = sh("pswd-edge command --node rack-01 --kind battery_control --point p --value 1 "
              "--role infrastructure_manager --keys {keys} --config {f}", keys=keys, f=operator)
    assert proc.returncode == 2 and "no infrastructure_manager.key" in proc.stderr
    proc = sh("pswd-edge command --node rack-01 --kind battery_control --point p --release "
              "--role grid_operator --keys {keys} --port {port}", keys=keys, port=free_port())
    assert proc.returncode == 3 and "connection refused" in proc.stderr.lower(), proc.stderr


def test_keygen(tmp_path: Path) -> None:
    proc = sh("pswd-edge keygen --role grid_operator {d}", d=tmp_path / "keys")
    assert proc.returncode == 0, proc.stderr
    key = tmp_path / "keys" / "grid_operator.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    proc = sh("pswd-edge keygen {d} --role grid_operator", d=tmp_path / "keys")
    assert proc.returncode == 2 and "never overwritten" in proc.stderr
    assert key.read_bytes() == before


def test_demo() -> None:
    proc = sh("pswd-edge demo --no-ui --duration 2", timeout=55, own_network=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "scan overruns" in proc.stdout, proc.stdout[-2000:]


def test_plant_sim() -> None:
    for line in ("pswd-plant-sim --config examples/plant.toml --duration 1",
                 "pswd-plant-sim --duration 1 --config examples/plant.toml"):
        proc = sh(line, own_network=True)
        assert proc.returncode == 0, (line, proc.stderr)
        assert "serving cdu on 127.0.0.1:" in proc.stdout and "stopped at t=" in proc.stdout


def test_certs(tmp_path: Path) -> None:
    ca, out = tmp_path / "ca", tmp_path / "node"
    assert sh("pswd-edge certs init-ca {ca}", ca=ca).returncode == 0
    proc = sh("pswd-edge certs issue --ca-dir {ca} --out {out} --server --client --ip 127.0.0.1 "
              "rack-01", ca=ca, out=out)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE((out / "rack-01.key").stat().st_mode) == 0o600
    check = subprocess.run(["openssl", "verify", "-CAfile", str(ca / "ca.crt"),
                            str(out / "rack-01.crt")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    listed = sh("pswd-edge certs list --json --ca-dir {ca}", ca=ca)
    assert listed.returncode == 0 and "rack-01" in listed.stdout
    proc = sh("pswd-edge certs revoke --ca-dir {ca} {crt}", ca=ca, crt=out / "rack-01.crt")
    assert proc.returncode == 0, proc.stderr
    again = sh("pswd-edge certs init-ca {ca}", ca=ca)  # never overwritten
    assert again.returncode != 0 and again.stderr.count("\n") == 1


def test_token(tmp_path: Path) -> None:
    from edge_runtime.security.tokens import KeyRing

    keys = tmp_path / "token_keys"
    assert sh("pswd-edge token init {k}", k=keys).returncode == 0
    proc = sh("pswd-edge token issue --keys {k} --role grid_operator --aud rack-01 --ttl 60",
              k=keys)
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip().splitlines()[-1]
    claims = KeyRing(keys).verifier().verify(token, audience="rack-01")
    assert claims.role == "grid_operator"


def test_opcua(tmp_path: Path) -> None:
    from edge_runtime.servers.opcua.users import UserStore

    state = tmp_path / "opcua"
    proc = sh("pswd-edge opcua add-user bms --role infrastructure_manager --state-dir {s}",
              s=state, stdin="correct horse battery staple\n")
    assert proc.returncode == 0, proc.stderr
    assert UserStore(state).check_password("bms", "correct horse battery staple") == \
        "infrastructure_manager"
    assert UserStore(state).check_password("bms", "guess") is None
    proc = sh("pswd-edge opcua cert --state-dir {s}", s=state)
    assert proc.returncode == 0, proc.stderr
    assert list(state.glob("*.der")) or list(state.rglob("*.pem"))


def test_audit_verify(tmp_path: Path) -> None:
    from edge_runtime.security.audit import AuditLog

    log = AuditLog(tmp_path / "audit.log")
    log.append("command", source="local", command="SetOutput(pump1.speed_ref, 40)")
    log.append("trip_reset", source="panel", rule="leak")
    log.close()
    assert sh("pswd-edge audit verify {f}", f=tmp_path / "audit.log").returncode == 0
    path = tmp_path / "audit.log"
    path.write_text(path.read_text().replace("speed_ref, 40", "speed_ref, 90"))
    proc = sh("pswd-edge audit verify {f}", f=path)
    assert proc.returncode == 1 and "seq" in (proc.stdout + proc.stderr)
