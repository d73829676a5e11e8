"""loopcheck against the plant simulator, node stopped: a sound output passes with a timed
response and is restored; crossed outputs (the simulator swaps two pumps' speed references)
fail naming the pump that moved instead; an interlock that is active forbids its outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.assembly.loader import load_node_config
from pswd_commission.loopcheck import infer_pairing, load_pairs
from pswd_commission.session import CommissionError
from tests.commission.rig import EXAMPLES, cdu_config, flowing, rows, running_plant, tool_json


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_loopcheck_passes_catches_a_miswired_output_and_refuses_under_an_interlock(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = str(tmp_path / "work")
    async with running_plant() as sim:
        config = str(cdu_config(tmp_path, sim))
        await flowing(sim, 150.0)  # both pumps near full speed, as the failsafe leaves them
        code, doc = await tool_json(capsys, "loopcheck", "--config", config, "--output",
                                    "pump1.speed_ref", "--work-dir", work, "--timeout-s", "8")
        assert code == 0, doc
        ok = rows(doc, "outputs", "output")["pump1.speed_ref"]
        assert ok["status"] == "PASS" and ok["restored"] is True
        assert ok["feedback"] == "pump1.speed_actual" and ok["pairing"] == "io_map names"
        # 30 % of span at the drive's 20 %/s ramp: about 1.5 s
        assert 0.8 < ok["response_s"] < 4.0
        assert len(ok["samples"]) >= 5

        sim.swap_outputs("pump1.speed_ref", "pump2.speed_ref")
        code, doc = await tool_json(capsys, "loopcheck", "--config", config, "--output",
                                    "pump1.speed_ref", "--work-dir", work, "--timeout-s", "4")
        assert code == 1
        bad = rows(doc, "outputs", "output")["pump1.speed_ref"]
        assert bad["status"] == "FAIL"
        assert "no response" in bad["reason"]
        assert "pump2.speed_actual followed the command instead" in bad["reason"]
        assert "miswired" in bad["reason"]
        sim.clear_swaps()

        sim.inject("leak", "leak", position_m=2.5)
        code, doc = await tool_json(capsys, "loopcheck", "--config", config, "--output",
                                    "valve.position_cmd", "--output", "pump1.loss_run",
                                    "--work-dir", work)
        valve_after = sim.plant.loop.valve.cmd_pct
    assert code == 1
    by = rows(doc, "outputs", "output")
    assert by["valve.position_cmd"]["status"] == "REFUSED"
    assert "interlock leak_isolate is active" in by["valve.position_cmd"]["reason"]
    assert by["valve.position_cmd"]["samples"] == []  # never moved
    assert valve_after == pytest.approx(100.0)
    assert by["pump1.loss_run"]["status"] == "SKIP"


def test_pairing_from_names_and_from_a_pairs_file(tmp_path: Path) -> None:
    cfg = load_node_config(EXAMPLES / "cdu.toml")
    pump, valve = cfg.device("pump1"), cfg.device("valve")
    run = infer_pairing(pump, pump.io_map.point("control_word"))
    assert run is not None and (run.feedback, run.bit) == ("pump1.status_word", 0)
    pos = infer_pairing(valve, valve.io_map.point("position_cmd"))
    assert pos is not None and pos.feedback == "valve.position_fb"
    assert infer_pairing(pump, pump.io_map.point("loss_speed")) is None

    good = tmp_path / "pairs.toml"
    good.write_text('["valve.position_cmd"]\nfeedback = "valve.position_fb"\n'
                    'test_value = 40\ntolerance = 1.5\n')
    pairs = load_pairs(good)
    assert pairs["valve.position_cmd"].test_value == 40.0
    bad = tmp_path / "bad.toml"
    bad.write_text('["valve.position_cmd"]\nfeedback = "valve.position_fb"\ntol = 1\n')
    with pytest.raises(CommissionError, match="tol: unknown key"):
        load_pairs(bad)
