"""No traceback reaches a user, and `check-config` says what `run` would: for any file given as
a config (random bytes, a directory, truncated TOML, values of the wrong type, keys missing or
unknown), `check-config` and `run --duration 0.1` agree: both exit 2 with lines naming the
file, or both exit 0. Plus the configs `check-config` used to pass and `run` then died on.

The mutated configs start from the shipped examples with their Modbus and MQTT endpoints
moved to a closed loopback port, so a run never reaches another test's peers."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.cli import main
from tests.mosquitto import free_port

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ("cdu.toml", "rack.toml", "site.toml", "cdu_heat.toml")
SCRIPT = Path(sys.executable).parent / "pswd-edge"

pytestmark = pytest.mark.timeout(60)


# --- a small TOML writer (tomllib only reads) --------------------------------------------------

def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def dump_toml(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """`doc` as TOML text: scalars and lists first, then one [header] per sub-table."""
    lines = [f"{json.dumps(k)} = {_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict)]
    out = ""
    if prefix and (lines or not any(isinstance(v, dict) for v in doc.values())):
        out += "[" + ".".join(json.dumps(p) for p in prefix) + "]\n"
    out += "".join(line + "\n" for line in lines)
    for k, v in doc.items():
        if isinstance(v, dict):
            out += dump_toml(v, (*prefix, k))
    return out


def example(name: str, port: int) -> dict[str, Any]:
    """A shipped example with every endpoint on a loopback port nothing listens on."""
    doc = tomllib.loads((REPO / "examples" / name).read_text())
    for unit, dev in enumerate(doc.get("devices", {}).values(), start=1):
        dev.update(endpoint=f"127.0.0.1:{port}", unit_id=unit)
    if "mqtt" in doc:
        doc["mqtt"].update(host="127.0.0.1", port=port, state_dir="state")
    doc["node"]["io_maps_dir"] = str(REPO / "io_maps")
    return doc


# --- mutations -------------------------------------------------------------------------------

WRONG = ["text", "", 7, -1.5, 0, True, [1, "a"], {"x": 1}, 1e300, math.nan, math.inf,
         "a/b#c", "workload", 10 ** 18]


def _leaves(doc: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for k, v in doc.items():
        out.append((*path, k))
        if isinstance(v, dict):
            out += _leaves(v, (*path, k))
    return out


def mutate(doc: dict[str, Any], rnd: random.Random) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for _ in range(rnd.randint(1, 3)):
        path = rnd.choice(_leaves(doc))
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        what = rnd.random()
        if what < 0.6:
            parent[path[-1]] = rnd.choice(WRONG)
        elif what < 0.8:
            del parent[path[-1]]
        else:
            parent[path[-1] + "_typo"] = parent.pop(path[-1])
    return doc


def cases() -> list[tuple[str, int]]:
    return [(kind, seed) for kind in ("bytes", "truncated", "mutated") for seed in range(12)]


def make_config(tmp_path: Path, kind: str, seed: int) -> Path:
    rnd = random.Random(f"{kind}-{seed}")
    base = example(EXAMPLES[seed % len(EXAMPLES)], free_port())
    path = tmp_path / "node.toml"
    if kind == "bytes":
        path.write_bytes(rnd.randbytes(rnd.randint(0, 4000)))
    elif kind == "truncated":
        text = dump_toml(base)
        path.write_text(text[:rnd.randint(0, len(text) - 1)])
    else:
        path.write_text(dump_toml(mutate(base, rnd)))
    return path


# --- the checks ------------------------------------------------------------------------------

def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def agree(capsys: pytest.CaptureFixture[str], config: Path) -> int:
    """check-config and run on one file: no traceback, both 2 (every line naming the file)
    or both 0; returns the exit code."""
    checked, said = cli(capsys, "check-config", str(config))
    ran, run_said = cli(capsys, "--log-level", "ERROR", "run", "--config", str(config),
                        "--duration", "0.1")
    for text in (said, run_said):
        assert "Traceback" not in text and "internal error" not in text, text
    assert (checked, ran) in ((0, 0), (2, 2)), (said, run_said)
    if checked == 2:
        lines = said.strip().splitlines()
        assert lines and all(line.startswith(f"{config}: ") for line in lines), said
    return checked


@pytest.mark.parametrize(("kind", "seed"), cases())
def test_check_config_and_run_agree_on_any_file(tmp_path: Path, kind: str, seed: int,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    agree(capsys, make_config(tmp_path, kind, seed))


def test_a_directory_empty_file_and_missing_file(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    for config in (tmp_path, empty, tmp_path / "missing.toml"):
        assert agree(capsys, config) == 2


@pytest.mark.parametrize(("change", "error"), [
    ({"node": {"site": "a/b"}}, "[node] site: site 'a/b' cannot be an MQTT topic level"),
    ({"node": {"site": "plant#1"}}, "[node] site: site 'plant#1' cannot be"),
    ({"node": {"name": "workload"}}, "[node] name: node 'workload' is reserved"),
    ({"node": {"name": "grid"}}, "[node] name: node 'grid' is reserved"),
    ({"node": {"name": "time"}}, "[node] name: node 'time' is reserved"),
    ({"node": {"name": "coordinator"}}, "[node] name: node 'coordinator' is reserved"),
    ({"mqtt": {"state_dir": "/proc/version/state"}},
     "[mqtt] state_dir: /proc/version/state is not a writable directory"),
    ({"mqtt": {"state_dir": "node.toml"}}, "[mqtt] state_dir:"),
    ({"mqtt": {"tls": {"ca": "pki/ca.crt", "cert": "pki/node.crt", "key": "pki/node.key"}}},
     "[mqtt.tls] ca:"),
])
def test_what_run_used_to_die_on_is_an_error_in_check_config(
        tmp_path: Path, change: dict[str, Any], error: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    doc = example("rack.toml", free_port())
    doc.setdefault("mqtt", {"host": "127.0.0.1", "port": free_port()})
    for table, values in change.items():
        doc[table].update(values)
    config = tmp_path / "node.toml"
    config.write_text(dump_toml(doc))
    assert agree(capsys, config) == 2
    assert error in cli(capsys, "check-config", str(config))[1]


def test_a_site_file_without_mqtt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = example("site.toml", free_port())
    del doc["mqtt"]
    config = tmp_path / "site.toml"
    config.write_text(dump_toml(doc))
    assert agree(capsys, config) == 2
    assert f"{config}: [mqtt] (table): required for role site" in \
        cli(capsys, "check-config", str(config))[1]


def test_tls_files_that_do_not_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pki").mkdir()
    for name in ("ca.crt", "node.crt", "node.key"):
        (tmp_path / "pki" / name).write_text("not PEM\n")
    doc = example("rack.toml", free_port())
    doc["mqtt"] = {"host": "127.0.0.1", "port": free_port(),
                   "tls": {"ca": "pki/ca.crt", "cert": "pki/node.crt", "key": "pki/node.key"}}
    config = tmp_path / "node.toml"
    config.write_text(dump_toml(doc))
    assert agree(capsys, config) == 2
    assert "[mqtt.tls] ca: " in cli(capsys, "check-config", str(config))[1]


def test_the_examples_pass_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i, name in enumerate(EXAMPLES):
        config = tmp_path / f"{i}.toml"
        config.write_text(dump_toml(example(name, free_port())))
        assert agree(capsys, config) == 0


@pytest.mark.parametrize("argv", [
    ["check-config", "{dir}"],
    ["check-config", "{bin}"],
    ["run", "--config", "{bin}", "--duration", "0.1"],
    ["run", "--duration", "0.1", "--config", "{dir}"],
    ["run", "--config", "{dir}", "--duration", "nan"],
    ["run", "--config", "{dir}", "--duration", "-1"],
    ["validate", "{dir}"],
    ["announce", "{bin}", "--config", "{bin}"],
    ["announce", "--config", "{dir}", "{bin}", "--port", "99999"],
    ["command", "--node", "a/b", "--kind", "grid_signal", "--point", "p", "--value", "inf",
     "--role", "grid_operator", "--keys", "{dir}"],
    ["keygen", "--role", "grid_operator", "{bin}"],
    ["demo", "--duration", "0"],
    ["no-such-command"],
])
def test_no_traceback_from_the_console_script(tmp_path: Path, argv: list[str]) -> None:
    binary = tmp_path / "random.bin"
    binary.write_bytes(random.Random(1).randbytes(3000))
    args = [a.format(dir=tmp_path, bin=binary) for a in argv]
    proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, cwd=tmp_path)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode in (1, 2), (proc.returncode, proc.stderr)
    assert proc.stderr.strip(), "says why"


def test_run_refuses_a_state_dir_another_node_holds(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from edge_runtime.federation.sqlite_wal import lock_file

    doc = example("rack.toml", free_port())
    doc["mqtt"] = {"host": "127.0.0.1", "port": free_port(), "state_dir": "state"}
    config = tmp_path / "node.toml"
    config.write_text(dump_toml(doc))
    (tmp_path / "state").mkdir()
    held = lock_file(tmp_path / "state" / "outbox.sqlite")  # as a running node holds it
    try:
        code, said = cli(capsys, "run", "--config", str(config), "--duration", "0.1")
    finally:
        held.close()
    assert code == 1  # not a config error: the same file runs once the other node stops
    assert said.strip() == (f"{config}: [mqtt] state_dir: {tmp_path / 'state'} is in use by "
                            "another running node (its outbox is locked): give each node its "
                            "own [mqtt] state_dir")
    assert cli(capsys, "run", "--config", str(config), "--duration", "0.1")[0] == 0


def test_announce_and_command_report_tls_files_that_do_not_load(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "operator.toml"
    config.write_text(dump_toml({"node": {"site": "s"}, "mqtt": {
        "host": "127.0.0.1", "port": free_port(),
        "tls": {"ca": "ca.crt", "cert": "op.crt", "key": "op.key"}}}))
    a1 = REPO / "tests" / "vectors" / "annex_a" / "valid_workload_announcement_minimal.json"
    code, said = cli(capsys, "announce", str(a1), "--config", str(config))
    assert code == 2 and f"{config}: [mqtt.tls] ca: {tmp_path / 'ca.crt'}: no such file" in said
    code, said = cli(capsys, "command", "--config", str(config), "--node", "n", "--kind",
                     "grid_signal", "--point", "p", "--release", "--role", "grid_operator",
                     "--keys", str(tmp_path))
    assert code == 2 and "[mqtt.tls] cert: " in said and "Traceback" not in said
