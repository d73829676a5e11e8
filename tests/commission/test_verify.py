"""verify against the plant simulator over Modbus TCP: a clean plant passes; a faulted device
(exception 11 and a silent one), a point scaled by 10 and a point with swapped words fail, each
with its reason; bad input is one line and a non-zero exit."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from edge_runtime.assembly.loader import load_node_config
from edge_runtime.config.codec import decode
from pswd_commission.fieldlink import PointRead
from pswd_commission.verify import judge
from tests.commission.rig import (
    ROOT,
    cdu_config,
    flowing,
    rows,
    running_plant,
    stepped_plant,
    tool,
    tool_json,
)
from tests.conftest import free_port


@pytest.mark.anyio
@pytest.mark.timeout(40)
async def test_verify_passes_a_clean_plant_and_catches_three_planted_faults(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = str(tmp_path / "work")
    # Held still after 3 s of model time: the flow's float words are the same on every run,
    # so the swapped-words reading is too (a float's low word read as its high word is
    # implausible for ~94 % of values; a plant stepping in real time would make this flaky).
    async with stepped_plant(3.0) as sim:
        assert sim.state.flow_lpm > 50.0
        config = str(cdu_config(tmp_path, sim))
        code, doc = await tool_json(capsys, "verify", "--config", config, "--work-dir", work)
        assert code == 0, doc
        assert {r["status"] for r in doc["points"]} == {"PASS"}
        assert len(doc["points"]) == 26

        sim.inject("leak", "offline")  # the gateway answers exception 11 for it
        sim.inject("return_pressure", "offline", response="silent")  # no answer: timeouts
        sim.inject("return_temp", "scale", point="temperature", factor=10.0)
        sim.inject("flow", "word_order", point="flow")
        code, doc = await tool_json(capsys, "verify", "--config", config, "--work-dir", work,
                                    "--timeout-ms", "200")
    assert code == 1
    by = rows(doc, "points")
    for p in ("leak.leak_state", "leak.status"):
        assert by[p]["status"] == "FAIL"
        assert "exception 11" in by[p]["reason"]
    assert by["return_pressure.pressure"]["status"] == "FAIL"
    assert "timeout" in by["return_pressure.pressure"]["reason"]
    scaled = by["return_temp.temperature"]
    assert scaled["status"] == "FAIL"
    assert "outside -50..150" in scaled["reason"] and "looks scaled by 10" in scaled["reason"]
    swapped = by["flow.flow"]
    assert swapped["status"] == "FAIL" and "words look swapped" in swapped["reason"]
    for p in ("supply_temp.temperature", "supply_pressure.pressure", "pump1.speed_actual",
              "valve.position_fb", "flow.totalizer"):
        assert by[p]["status"] == "PASS", by[p]
    assert doc["stats"]["errors"].get("timeout", 0) >= 1
    journal = (tmp_path / "work" / "journal.jsonl").read_text().splitlines()
    assert [json.loads(line)["exit"] for line in journal] == [0, 1]


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_verify_flags_a_point_a_power_of_ten_from_its_neighbours(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # x 0.1 keeps the supply temperature inside its -50..150 range: only the neighbours (the
    # return temperature) and its alarm band show it.
    async with running_plant() as sim:
        await flowing(sim)
        sim.inject("supply_temp", "scale", point="temperature", factor=0.1)
        code, doc = await tool_json(capsys, "verify", "--config",
                                    str(cdu_config(tmp_path, sim)),
                                    "--work-dir", str(tmp_path / "w"))
        # the table a technician reads through a pipe: words, no colour codes
        text_code, text, _ = await tool(capsys, "verify", "--config",
                                        str(cdu_config(tmp_path, sim)),
                                        "--work-dir", str(tmp_path / "w"))
    assert text_code == 1 and "\x1b[" not in text
    assert "supply_temp.temperature" in text and "FAIL" in text and "PASS" in text
    assert code == 1
    by = rows(doc, "points")
    assert by["supply_temp.temperature"]["status"] == "FAIL"
    assert "looks scaled by 1/10" in by["supply_temp.temperature"]["reason"]
    assert by["return_temp.temperature"]["status"] == "PASS"


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_console_script_in_a_subprocess(tmp_path: Path) -> None:
    """The installed console script, as a technician runs it: JSON out, and bad input as one
    line on stderr with a non-zero exit and no traceback."""
    exe = str(Path(sys.executable).parent / "pswd-commission")
    async with running_plant() as sim:
        await flowing(sim)
        config = str(cdu_config(tmp_path, sim))
        proc = await asyncio.create_subprocess_exec(
            exe, "verify", "--config", config, "--json", "--work-dir", str(tmp_path / "w"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT)
        out, err = await asyncio.wait_for(proc.communicate(), 25)
    assert proc.returncode == 0, err.decode()
    doc = json.loads(out)
    assert doc["command"] == "verify" and doc["exit"] == 0 and len(doc["points"]) == 26

    dead = cdu_config(tmp_path, sim).read_text().replace(
        f"127.0.0.1:{sim.endpoints[0].port}", f"127.0.0.1:{free_port()}")
    (tmp_path / "dead.toml").write_text(dead)
    proc = await asyncio.create_subprocess_exec(
        exe, "verify", "--config", str(tmp_path / "dead.toml"), "--work-dir",
        str(tmp_path / "w"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 25)
    assert proc.returncode == 3
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "cannot connect to 127.0.0.1:" in lines[0], lines
    assert b"Traceback" not in err


@pytest.mark.anyio
@pytest.mark.timeout(30)
@pytest.mark.parametrize(("argv", "code", "says"), [
    (["verify", "--config", "no/such.toml"], 2, "no/such.toml: file: not found"),
    (["discover", "--hosts", "10.0.0.0/8"], 2, "scan at most 256"),
    (["discover", "--hosts", "not-an-address"], 2, "is not an IP address"),
    (["discover", "--units", "1-300"], 2, "must lie within 0..247"),
    (["loopcheck", "--config", "examples/cdu.toml", "--output", "pump9.speed_ref"], 2,
     "not an output of cdu-01"),
    (["verify", "--config", "examples/cdu.toml", "--timeout-ms", "-5"], 2, "must be > 0"),
    # a blackhole address (TEST-NET-1): connect fails or times out, one line either way
    (["discover", "--hosts", "192.0.2.1", "--ports", "502", "--timeout-ms", "200"], 3,
     "cannot connect to 192.0.2.1:502"),
])
async def test_bad_input_is_one_line_and_a_nonzero_exit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int,
        says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    got, out, err = await tool(capsys, *argv, "--work-dir", str(tmp_path / "w"))
    assert got == code, (out, err)
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert says in err, err
    if code != 2 or argv[0] != "verify" or "--timeout-ms" not in argv:
        assert len(lines) == 1, lines


@pytest.mark.anyio
@pytest.mark.timeout(40)
async def test_verify_checks_sunspec_scale_factors_against_the_io_map(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The battery inverter publishes W_SF = 2 (100 W a count); a map that assumes 10 W a
    count reads the inverter's power 10 x low: the published scale factor, read through the
    model chain with pysunspec2's definitions, says so. The right map passes."""
    maps = tmp_path / "maps"
    maps.mkdir()
    for f in (ROOT / "io_maps").glob("*.toml"):
        (maps / f.name).write_text(f.read_text())
    inverter = maps / "battery_inverter.toml"
    text = inverter.read_text()
    assert 'address = 40080\ntype = "int16"\nscale = 0.1\n' in text
    inverter.write_text(text.replace('address = 40080\ntype = "int16"\nscale = 0.1\n',
                                     'address = 40080\ntype = "int16"\nscale = 0.01\n'))
    async with running_plant() as sim:
        rack = (ROOT / "examples" / "rack.toml").read_text().replace(
            "127.0.0.1:15503", f"127.0.0.1:{sim.endpoints[1].port}")
        good = tmp_path / "rack.toml"
        good.write_text(rack)
        code, doc = await tool_json(capsys, "verify", "--config", str(good), "--work-dir",
                                    str(tmp_path / "w"))
        assert code == 0, [r for r in doc["points"] if r["status"] != "PASS"]
        bad = tmp_path / "rack_bad.toml"
        bad.write_text(rack.replace("[node]\n", '[node]\nio_maps_dir = "maps"\n', 1))
        code, doc = await tool_json(capsys, "verify", "--config", str(bad), "--work-dir",
                                    str(tmp_path / "w"))
    assert code == 1
    by = rows(doc, "points")
    assert by["battery.ac_w_kw"]["status"] == "FAIL"
    assert "W_SF = 2 (model 701)" in by["battery.ac_w_kw"]["reason"]
    assert "reads 10 x off" in by["battery.ac_w_kw"]["reason"]
    assert by["battery.soc_pct"]["status"] == "PASS"


def test_a_pinned_transmitter_is_not_read_as_a_scale_error() -> None:
    """A transmitter at its register's full scale (over range, broken sensor) is named as
    such, not as a power of ten: 327.67 degC would otherwise look like 32.8 x 10."""
    cfg = load_node_config(ROOT / "examples" / "cdu.toml")
    reads = {"supply_temp.temperature": PointRead(327.67, (0x7FFF,)),
             "return_temp.temperature": PointRead(31.0, (3100,))}
    by = {r.point: r for r in judge(cfg, reads)}
    assert by["supply_temp.temperature"].status == "FAIL"
    assert "full scale" in by["supply_temp.temperature"].reason
    assert "scaled" not in by["supply_temp.temperature"].reason
    assert by["return_temp.temperature"].status == "PASS"
    assert by["flow.flow"].status == "FAIL" and by["flow.flow"].reason == "not read"


def test_swapped_words_that_read_plausibly_but_in_alarm_are_caught() -> None:
    """A float whose swapped words still make a plausible number (a few % of values): the
    flow reads 12.6 L/min, below low_low, while the other word order reads 120.1 L/min,
    inside the normal band: that is the order of the words, not the loop."""
    cfg = load_node_config(ROOT / "examples" / "cdu.toml")
    enc = cfg.device("flow").io_map.point("flow").encoding
    right = [0x4149, 0x42F0]  # CDAB: 0x42F04149, 120.13 L/min
    assert decode(right, enc) == pytest.approx(120.13, abs=0.01)
    wire = list(reversed(right))
    seen = decode(wire, enc)
    assert 12.0 < seen < 13.0  # plausible as a flow, but low-low
    by = {r.point: r for r in judge(cfg, {"flow.flow": PointRead(seen, tuple(wire))})}
    assert by["flow.flow"].status == "FAIL"
    assert "words look swapped" in by["flow.flow"].reason
    assert "120.128 L/min" in by["flow.flow"].reason
