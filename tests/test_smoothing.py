"""Battery load smoothing: ramp and range limits, SoC drift-back, inverter limits,
announcement feedforward, the rack block on a process image and in closed loop with the
plant simulator's battery, and the [smoothing] config loader."""

from __future__ import annotations

import random
from itertools import pairwise
from pathlib import Path

import pytest

from edge_runtime.config.reader import ErrorLog, Section
from edge_runtime.control.smoothing import (
    BatteryLimits,
    Smoother,
    SmoothingConfig,
    build_smoothing_block,
    load_smoothing,
)
from edge_runtime.core.events import EventLog
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality, Sample
from edge_runtime.core.ports import InputTable
from edge_runtime.messages.annex_a import parse_as
from pswd_plant_sim.battery import Battery, BatteryConfig
from pswd_plant_sim.trace import Trace, TraceConfig
from tests.fakes import shipped_image

BIG = BatteryLimits(1e9, 1e9)
pytestmark = pytest.mark.timeout(30)


def cfg(**kw: float) -> SmoothingConfig:
    base: dict[str, float] = {"ramp_limit_kw_per_s": 10.0, "range_kw": 8.0,
                              "capacity_kwh": 100.0, "max_charge_kw": 200.0,
                              "max_discharge_kw": 200.0}
    base.update(kw)
    return SmoothingConfig(**base)  # type: ignore[arg-type]


def test_power_step_is_answered_in_the_same_step_and_the_grid_ramps() -> None:
    sm = Smoother(cfg())
    for _ in range(50):
        sm.step(50.0, 50.0, BIG, 0.1)
    grid0 = sm.grid_kw
    assert grid0 is not None
    battery = sm.step(150.0, 50.0, BIG, 0.1)  # +100 kW step
    assert battery == pytest.approx(150.0 - sm.grid_kw)  # type: ignore[operator]
    assert battery > 95.0  # the battery takes the step at once
    assert abs(sm.grid_kw - grid0) <= 10.0 * 0.1 + 1e-9  # type: ignore[operator]
    grids = []
    for _ in range(300):
        sm.step(150.0, 50.0, BIG, 0.1)
        grids.append(sm.grid_kw)
    assert grids[-1] == pytest.approx(150.0, abs=3.0)  # the grid catches up, SoC corrects


def test_grid_ramp_and_range_hold_on_a_random_trace() -> None:
    rng = random.Random(3)
    sm = Smoother(cfg(ramp_limit_kw_per_s=20.0, range_kw=12.0))
    prev = None
    window: list[tuple[float, float]] = []
    for k in range(3000):
        demand = 100.0 + (60.0 if (k // 7) % 2 else 0.0) + rng.uniform(-5, 5)
        sm.step(demand, 50.0, BIG, 0.05)
        g = sm.grid_kw
        assert g is not None and not sm.saturated
        if prev is not None:
            assert abs(g - prev) <= 20.0 * 0.05 + 1e-9
        prev = g
        window = [(t, v) for t, v in window if t > sm.t - 1.0] + [(sm.t, g)]
        values = [v for _, v in window]
        assert max(values) - min(values) <= 12.0 + 1e-9


def test_soc_drifts_back_to_target_within_correction_limit() -> None:
    sm = Smoother(cfg(soc_kp_kw_per_pct=2.0, soc_correction_max_kw=15.0))
    battery = 0.0
    for _ in range(600):
        battery = sm.step(80.0, 30.0, BIG, 0.1)  # SoC 20 % below target
    # charging, at most the correction limit plus the estimated losses (4 % each way)
    assert -15.0 * 1.05 <= battery < -10.0
    sm2 = Smoother(cfg())
    for _ in range(600):
        battery = sm2.step(80.0, 70.0, BIG, 0.1)
    assert battery > 10.0  # above target: discharge


def test_inverter_limits_and_soc_bounds_are_respected() -> None:
    sm = Smoother(cfg())
    for _ in range(20):
        sm.step(10.0, 50.0, BIG, 0.1)
    assert sm.step(110.0, 50.0, BatteryLimits(5.0, 12.0), 0.1) == pytest.approx(12.0)
    assert sm.saturated
    # the step is beyond the battery: the excess is reported, and the grid target does not
    # jump to what the grid now sees, it walks there at the ramp limit (10 kW/s)
    assert sm.uncovered_kw == pytest.approx(110.0 - 11.0 - 12.0)
    assert sm.grid_kw == pytest.approx(11.0)
    assert sm.get_status()["uncovered_kw"] == pytest.approx(87.0)
    assert sm.step(110.0, 10.0, BIG, 0.1) == 0.0  # at soc_min: no discharge
    assert sm.step(110.0, 12.5, BIG, 0.1) <= 0.5 * 200.0 + 1e-9  # tapered over the guard
    sm3 = Smoother(cfg())
    for _ in range(20):
        sm3.step(100.0, 50.0, BIG, 0.1)
    assert sm3.step(0.0, 90.0, BIG, 0.1) == 0.0  # at soc_max: no charge


def _peak_battery(announce: bool) -> tuple[float, float]:
    sm = Smoother(cfg(ramp_limit_kw_per_s=20.0, range_kw=1e9, follow_min_s=0.0))
    if announce:
        sm.announce(in_s=10.0, delta_kw=200.0)
    first_move = None
    peak = 0.0
    for k in range(600):
        demand = 50.0 if k < 100 else 250.0  # the step comes at t = 10 s
        b = sm.step(demand, 50.0, BIG, 0.1)
        peak = max(peak, abs(b))
        if first_move is None and sm.grid_kw is not None and sm.grid_kw > 52.0:
            first_move = sm.t
    assert first_move is not None
    return peak, first_move


def test_announced_step_pre_ramps_the_grid_and_halves_the_battery_peak() -> None:
    peak_plain, move_plain = _peak_battery(False)
    peak_ff, move_ff = _peak_battery(True)
    assert move_plain >= 10.0  # without warning the grid can only react
    assert move_ff < 10.0 - 3.0  # with it the grid starts half a ramp early
    assert peak_ff <= 0.6 * peak_plain


def test_short_announced_pulse_is_carried_by_the_battery_and_moves_soc_target() -> None:
    sm = Smoother(cfg(follow_min_s=30.0, soc_kp_kw_per_pct=1.0))
    for _ in range(50):
        sm.step(100.0, 50.0, BIG, 0.1)
    sm.announce(in_s=5.0, delta_kw=-80.0, duration_s=6.0)
    grids: list[float] = []
    for k in range(200):
        demand = 20.0 if 50 <= k < 110 else 100.0
        sm.step(demand, 50.0, BIG, 0.1)
        assert sm.grid_kw is not None
        grids.append(sm.grid_kw)
    assert max(grids) - min(grids) < 10.0  # the grid ignored the dip
    with pytest.raises(ValueError, match="duration_s"):
        sm.announce(in_s=1.0, delta_kw=5.0, duration_s=-1.0)


# -- the rack block ---------------------------------------------------------------------------
def _image() -> tuple[ProcessImage, InputTable]:
    return shipped_image({"rack_meter": "rack_power_meter", "battery": "battery_inverter"})


def _inputs(live: InputTable, demand: float | None, soc: float = 50.0) -> None:
    live["rack_meter.power_kw"] = (Sample(demand, Quality.GOOD, 0.0) if demand is not None
                                   else Sample.bad("comms lost", 0.0))
    live["battery.soc_pct"] = Sample(soc, Quality.GOOD, 0.0)
    live["battery.w_cha_max_kw"] = Sample(100.0, Quality.GOOD, 0.0)
    live["battery.w_dis_cha_max_kw"] = Sample(150.0, Quality.GOOD, 0.0)


def test_block_answers_a_step_on_the_next_scan_and_degrades_safely() -> None:
    image, live = _image()
    events = EventLog()
    block = build_smoothing_block(cfg(), events=events)
    now = 0.0
    for _ in range(20):
        _inputs(live, 40.0)
        image.latch()
        block.step(image, now, 0.1)
        now += 0.1
    before = image.output("battery.w_set_kw")
    _inputs(live, 120.0)  # +80 kW at the meter
    image.latch()
    block.step(image, now, 0.1)  # the first scan that sees it: 100 ms < 250 ms
    assert image.output("battery.w_set_kw") - before > 75.0
    assert image.output("battery.w_set_ena") == 1.0
    # meter lost: alarm once, setpoint ramps to 0 at the grid ramp limit, then disabled
    values = []
    for _ in range(200):
        now += 0.1
        _inputs(live, None)
        image.latch()
        block.step(image, now, 0.1)
        values.append(image.output("battery.w_set_kw"))
    assert block.degraded == "demand"
    assert all(abs(a - b) <= 1.0 + 1e-9 for a, b in pairwise(values))
    assert values[-1] == 0.0 and image.output("battery.w_set_ena") == 0.0
    codes = [e.code for e in events.recent()]
    assert codes.count("smoothing_degraded") == 1
    _inputs(live, 120.0)
    image.latch()
    block.step(image, now + 0.1, 0.1)
    assert block.degraded == "" and "smoothing_restored" in [e.code for e in events.recent()]
    assert abs(image.output("battery.w_set_kw")) < 1.5  # bumpless: no jump on recovery


def test_block_in_closed_loop_with_the_simulated_battery_smooths_the_rack() -> None:
    image, live = _image()
    block = build_smoothing_block(cfg(ramp_limit_kw_per_s=15.0, range_kw=15.0))
    trace = Trace(TraceConfig(seed=4, rack_kw=100.0, iter_hz_min=0.2, iter_hz_max=0.5))
    bat = Battery(BatteryConfig(initial_soc_pct=50.0))
    raw, grid = [], []
    dt = 0.1
    for k in range(1200):  # 2 minutes of 100 ms scans
        t = k * dt
        demand = trace.power_at(t)
        live["rack_meter.power_kw"] = Sample(demand, Quality.GOOD, t)
        live["battery.soc_pct"] = Sample(bat.soc_pct, Quality.GOOD, t)
        live["battery.w_cha_max_kw"] = Sample(bat.charge_limit_kw, Quality.GOOD, t)
        live["battery.w_dis_cha_max_kw"] = Sample(bat.discharge_limit_kw, Quality.GOOD, t)
        image.latch()
        block.step(image, t, dt)
        bat.command(enable=image.output("battery.w_set_ena") == 1.0,
                    setpoint_kw=image.output("battery.w_set_kw"), ctrl_hb=k)
        bat.step(dt)
        raw.append(demand)
        grid.append(demand - bat.ac_kw)

    def worst_1s(x: list[float]) -> float:
        return max(max(x[i:i + 10]) - min(x[i:i + 10]) for i in range(0, len(x) - 10))

    assert worst_1s(raw[100:]) > 40.0
    assert worst_1s(grid[100:]) < 25.0  # the sim inverter ramps at 1000 kW/s: ~1 scan lag


# -- config -------------------------------------------------------------------------------------
def _load(data: dict[str, object]) -> tuple[SmoothingConfig, list[str]]:
    errors = ErrorLog()
    sec = Section("node.toml", "smoothing", data, errors)
    return load_smoothing(sec, "node.toml", errors), errors.lines


def test_config_reads_values_and_points() -> None:
    config, lines = _load({"ramp_limit_kw_per_s": 25, "capacity_kwh": 200.0,
                           "points": {"demand": "meter2.power_kw"}})
    assert not lines
    assert config.ramp_limit_kw_per_s == 25.0 and config.capacity_kwh == 200.0
    assert config.points.demand == "meter2.power_kw"
    assert config.points.setpoint == "battery.w_set_kw"


def test_config_errors_name_the_key() -> None:
    _, lines = _load({"ramp_limit_kw_per_s": 0, "soc_min_pct": 60.0, "soc_max_pct": 40.0,
                      "rampp": 1, "efficiency": "high", "points": {"soc": "soc_pct"}})
    text = "\n".join(lines)
    assert "node.toml: [smoothing] ramp_limit_kw_per_s: must be > 0" in text
    assert "[smoothing] soc_max_pct: must be above soc_min_pct" in text
    assert "[smoothing] rampp: unknown key" in text
    assert "[smoothing] efficiency: must be a number" in text
    assert "[smoothing.points] soc: must name a point" in text
    _, lines = _load({"soc_target_pct": 95.0})
    assert any("soc_target_pct: must lie within 10..90" in line for line in lines)


def test_block_takes_an_a1_announcement_as_feedforward() -> None:
    import json
    from datetime import datetime

    from edge_runtime.messages.models import WorkloadAnnouncement

    doc = json.loads((Path(__file__).parent / "vectors" / "annex_a"
                      / "valid_workload_announcement_full.json").read_text())
    ann = parse_as(WorkloadAnnouncement, doc)
    assert ann.timing_constraints is not None and ann.timing_constraints.earliest_start_time
    start = ann.timing_constraints.earliest_start_time.timestamp()
    block = build_smoothing_block(cfg(announce_share=0.001))  # this rack: 0.1 % of the job
    block.announce_workload(ann, now_wall=start - 60.0)
    (item,) = block.smoother.pending
    assert item.start == pytest.approx(60.0)
    assert item.delta_kw == pytest.approx((120.0 + 35.5) / 2 * 1000.0 * 0.001)
    assert item.duration_s == 86400.0 and item.follow
    assert isinstance(ann.timestamp, datetime)


def test_inverter_in_local_control_is_followed_and_taken_back_bumpless() -> None:
    image, live = _image()
    events = EventLog()
    block = build_smoothing_block(cfg(), events=events)
    for k in range(30):
        _inputs(live, 60.0)
        live["battery.loc_rem_ctl"] = Sample(1.0 if k >= 10 else 0.0, Quality.GOOD, 0.0)
        live["battery.ac_w_kw"] = Sample(25.0, Quality.GOOD, 0.0)  # what it does locally
        image.latch()
        block.step(image, k * 0.1, 0.1)
    assert block.degraded == "local_control"
    assert image.output("battery.w_set_kw") == 25.0
    assert "smoothing_degraded" in [e.code for e in events.recent()]
    live["battery.loc_rem_ctl"] = Sample(0.0, Quality.GOOD, 0.0)
    image.latch()
    block.step(image, 3.1, 0.1)
    assert block.degraded == ""
    assert image.output("battery.w_set_kw") == pytest.approx(25.0, abs=1.5)  # no jump


def test_latency_compensation_leads_a_linear_edge_by_one_step() -> None:
    plain, lead = Smoother(cfg()), Smoother(cfg(latency_comp_s=0.01))
    for _ in range(100):
        plain.step(50.0, 50.0, BIG, 0.01)
        lead.step(50.0, 50.0, BIG, 0.01)
    for k in range(1, 4):  # an edge of +25 kW per 10 ms step
        b_plain = plain.step(50.0 + 25.0 * k, 50.0, BIG, 0.01)
        b_lead = lead.step(50.0 + 25.0 * k, 50.0, BIG, 0.01)
        assert b_lead - b_plain == pytest.approx(25.0, abs=0.1)  # where the demand will be
    _, lines = _load({"latency_comp_s": 2.0})
    assert any("latency_comp_s: must be <= 1" in line for line in lines)


def test_operator_held_setpoint_is_never_overwritten_and_release_is_bumpless() -> None:
    image, live = _image()
    held: dict[str, float] = {}
    block = build_smoothing_block(cfg(), events=EventLog(), held=held)
    for k in range(10):  # smoothing a 60 kW load
        _inputs(live, 60.0)
        image.latch()
        block.step(image, k * 0.1, 0.1)
    held["battery.w_set_kw"] = -30.0  # ManualOutputs.manual: the operator charges at 30 kW
    for k in range(10, 20):
        _inputs(live, 120.0 if k % 2 else 40.0)
        image.latch()
        image.write("battery.w_set_kw", held["battery.w_set_kw"])  # ManualOutputs runs first
        block.step(image, k * 0.1, 0.1)
        assert image.output("battery.w_set_kw") == -30.0
    assert block.degraded == "operator"
    del held["battery.w_set_kw"]
    _inputs(live, 60.0)
    image.latch()
    block.step(image, 2.0, 0.1)
    assert block.degraded == ""
    assert abs(image.output("battery.w_set_kw") - -30.0) < 10.0  # no step back to smoothing


def test_block_reports_a_load_beyond_the_battery_once_and_the_all_clear() -> None:
    image, live = _image()
    events = EventLog()
    block = build_smoothing_block(cfg(ramp_limit_kw_per_s=20.0), events=events)
    now = 0.0
    for demand in [40.0] * 20 + [260.0] * 30 + [40.0] * 40:  # +220 kW: 150 kW discharge max
        _inputs(live, demand)
        image.latch()
        block.step(image, now, 0.1)
        now += 0.1
        if demand == 260.0:
            assert block.uncovered and block.get_status()["uncovered"]
    codes = [e.code for e in events.recent()]
    assert codes.count("smoothing_uncovered") == 1  # once per episode, not every scan
    assert codes.count("smoothing_covered") == 1 and not block.uncovered
    text = next(e.message for e in events.recent() if e.code == "smoothing_uncovered")
    assert "discharge limit" in text
