"""Redundant sensors: 1oo2 failover, discrepancy, 2oo3 voting, derived inputs, config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge_runtime.config.reader import ErrorLog
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import NEVER_READ, Quality, Sample
from edge_runtime.safety.config import load_safety
from edge_runtime.safety.redundancy import GroupConfig, Mode, RedundancyGroup
from tests.test_safety_interlocks import Plant

A, B, C = "supply_temp_a.temperature", "supply_temp_b.temperature", "supply_temp_c.temperature"
VOTED = "supply_temp.voted"

ONE_OO_TWO = f"""
[safety.redundancy.supply_temp]
mode = "1oo2"
sensors = ["{A}", "{B}"]
tolerance = 0.5
delay_s = 0.3
unit = "degC"

[safety.limits."{VOTED}"]
high = 40.0
high_high = 45.0

[safety.interlocks.overtemp]
when = "{VOTED} >= high_high"
action = "trip"
outputs = ["pump1.speed_ref"]
"""

TWO_OO_THREE = f"""
[safety.redundancy.supply_temp]
mode = "2oo3"
sensors = ["{A}", "{B}", "{C}"]
tolerance = 1.0
delay_s = 0.2
"""


def good(v: float) -> Sample:
    return Sample(v, Quality.GOOD, 0.0)


def codes(events: EventLog) -> list[str]:
    return [e.code for e in events.recent(1000)]


def test_1oo2_fails_over_within_the_same_scan(tmp_path: Path) -> None:
    plant = Plant(tmp_path, ONE_OO_TWO)
    plant.set(B, 30.2)
    plant.scan()
    assert plant.image.sample(VOTED) == Sample(30.0, Quality.GOOD, plant.t - 0.1)
    plant.bad(A, "open circuit")
    plant.scan()
    voted = plant.image.sample(VOTED)  # published in the scan that first saw A BAD
    assert (voted.value, voted.quality) == (30.2, Quality.SUBSTITUTED)
    assert "open circuit" in voted.reason
    failover = [e for e in plant.events.recent(1000) if e.code == "failover"]
    assert len(failover) == 1 and failover[0].severity is Severity.ALARM
    assert failover[0].source == "redundancy.supply_temp"
    assert "sensor_bad" in plant.codes()
    plant.scan(10)
    assert plant.codes().count("failover") == 1  # once, not per scan
    plant.set(A, 30.1)
    plant.scan()
    assert plant.image.sample(VOTED).quality is Quality.GOOD
    group_codes = [e.code for e in plant.events.recent(1000) if e.source.startswith("redund")]
    assert group_codes == ["sensor_bad", "failover", "sensor_bad_clear", "failover_clear"]


def test_failover_value_drives_interlocks_in_the_same_scan(tmp_path: Path) -> None:
    plant = Plant(tmp_path, ONE_OO_TWO)
    plant.scan()
    plant.bad(A)
    plant.set(B, 46.0)
    plant.scan()
    assert plant.out("pump1.speed_ref") == 100.0
    assert plant.safety.get_status()["latched"] == ["overtemp"]


def test_control_blocks_read_the_voted_input_after_estimation(tmp_path: Path) -> None:
    plant = Plant(tmp_path, ONE_OO_TWO, estimation=True)
    seen: list[float | None] = []

    class Reader:
        name = "reader"

        def step(self, image: ProcessImage, now: float, dt: float) -> None:
            seen.append(image.value(VOTED))

    plant.engine.blocks.append(Reader())
    plant.bad(A)
    plant.set(B, 31.0)
    plant.scan()
    assert seen == [31.0]
    assert plant.codes().count("failover") == 0  # B from the first scan: start-up, no switch
    plant.scan()
    assert plant.safety.groups[VOTED].counts["failovers"] == 0


def test_plain_process_image_still_works_without_derive(tmp_path: Path) -> None:
    plant = Plant(tmp_path, ONE_OO_TWO, derive=False)
    plant.scan()
    plant.bad(A)
    plant.set(B, 46.0)
    plant.scan()
    assert plant.out("pump1.speed_ref") == 100.0
    assert plant.safety.get_status()["redundancy"]["supply_temp"]["source"] == B


def test_discrepancy_alarm_after_delay_exact_scans() -> None:
    events = EventLog()
    g = RedundancyGroup(GroupConfig("st", Mode.ONE_OUT_OF_TWO, ("a", "b"), 0.5, 0.3), events)
    qualities = []
    for k in range(6):
        qualities.append(g.update([good(30.0), good(30.0 if k == 0 else 31.0)], k * 0.1).quality)
    # Apart from scan 1 on: raised 0.3 s later, at scan 4; the voted value turns UNCERTAIN.
    assert codes(events) == ["discrepancy"]
    assert qualities == [Quality.GOOD] * 4 + [Quality.UNCERTAIN] * 2
    g.update([good(30.0), good(30.4)], 0.6)
    assert codes(events) == ["discrepancy", "discrepancy_clear"]
    assert g.sample.quality is Quality.GOOD and g.counts["discrepancies"] == 1


def test_1oo2_both_bad_is_bad() -> None:
    events = EventLog()
    g = RedundancyGroup(GroupConfig("st", Mode.ONE_OUT_OF_TWO, ("a", "b"), 0.5), events)
    g.update([good(30.0), good(30.0)], 0.0)
    s = g.update([Sample.bad("x", 0.1), Sample.bad("y", 0.1)], 0.1)
    assert s.quality is Quality.BAD and s.value is None
    assert codes(events) == ["sensor_bad", "sensor_bad", "group_bad"]


def test_1oo2_prefers_a_good_backup_over_an_uncertain_primary() -> None:
    g = RedundancyGroup(GroupConfig("st", Mode.ONE_OUT_OF_TWO, ("a", "b"), 5.0))
    s = g.update([Sample(30.0, Quality.UNCERTAIN, 0.0, "stale"), good(30.3)], 0.0)
    assert (s.value, s.quality) == (30.3, Quality.SUBSTITUTED)
    s = g.update([Sample(30.0, Quality.UNCERTAIN, 0.0, "stale"), Sample.bad("x", 0.0)], 0.1)
    assert (s.value, s.quality) == (30.0, Quality.UNCERTAIN)


def test_2oo3_median_outvotes_one_sensor_after_delay(tmp_path: Path) -> None:
    plant = Plant(tmp_path, TWO_OO_THREE)
    plant.set(A, 30.0)
    plant.set(B, 30.4)
    plant.set(C, 35.0)  # drifting
    plant.scan(2)
    assert plant.image.sample(VOTED).value == 30.4
    assert plant.image.sample(VOTED).quality is Quality.GOOD  # not outvoted yet (0.2 s delay)
    assert "outvoted" not in plant.codes()
    plant.scan()
    voted = plant.image.sample(VOTED)
    assert (voted.value, voted.quality) == (30.4, Quality.SUBSTITUTED)
    assert plant.codes() == ["outvoted"]
    status = plant.safety.get_status()["redundancy"]["supply_temp"]
    assert status["outvoted"] == [C] and status["outvotes"] == 1
    # With A lost too, the outvoted C is not trusted against B: B alone, SUBSTITUTED.
    plant.bad(A)
    plant.scan()
    voted = plant.image.sample(VOTED)
    assert (voted.value, voted.quality) == (30.4, Quality.SUBSTITUTED)
    # A second BAD sensor: two of three BAD makes the group BAD.
    plant.bad(B)
    plant.scan()
    assert plant.image.sample(VOTED).quality is Quality.BAD
    assert plant.codes()[-1] == "group_bad"


def test_2oo3_one_bad_means_two_agreeing() -> None:
    events = EventLog()
    g = RedundancyGroup(GroupConfig("st", Mode.TWO_OUT_OF_THREE, ("a", "b", "c"), 1.0), events)
    assert g.update([good(30.0), good(30.2), good(30.1)], 0.0) == Sample(30.1, Quality.GOOD, 0.0)
    s = g.update([Sample.bad("x", 0.1), good(30.2), good(30.0)], 0.1)
    assert s.value == pytest.approx(30.1) and s.quality is Quality.SUBSTITUTED
    s = g.update([Sample.bad("x", 0.2), good(30.2), good(32.0)], 0.2)
    assert s.quality is Quality.UNCERTAIN  # two left and they disagree: no majority
    assert codes(events) == ["sensor_bad", "discrepancy"]


def test_startup_before_first_poll_is_silent() -> None:
    events = EventLog()
    g = RedundancyGroup(GroupConfig("st", Mode.ONE_OUT_OF_TWO, ("a", "b"), 0.5), events)
    assert g.update([NEVER_READ, NEVER_READ], 0.0).quality is Quality.BAD
    assert g.update([NEVER_READ, good(30.0)], 0.1).quality is Quality.SUBSTITUTED
    assert g.update([good(30.0), good(30.0)], 0.2).quality is Quality.GOOD
    assert codes(events) == ["failover_clear"]


def test_derive_never_shadows_a_field_input(tmp_path: Path) -> None:
    plant = Plant(tmp_path, "")
    with pytest.raises(ValueError, match="field input"):
        plant.image.derive(A, good(1.0))  # type: ignore[attr-defined]


def test_group_config_needs_the_right_number_of_sensors() -> None:
    with pytest.raises(ValueError, match="2oo3 needs 3 distinct sensors"):
        GroupConfig("st", Mode.TWO_OUT_OF_THREE, ("a", "b", "b"), 1.0)


@pytest.mark.parametrize(("body", "expected"), [
    (f'mode = "1oo2"\nsensors = ["{A}"]\ntolerance = 1',
     "[safety.redundancy.st] sensors: 1oo2 needs 2 sensors, got 1"),
    (f'mode = "2oo3"\nsensors = ["{A}", "{B}", "x.y"]\ntolerance = 1',
     "[safety.redundancy.st] sensors: unknown input 'x.y'"),
    (f'mode = "3oo4"\nsensors = ["{A}", "{B}"]\ntolerance = 1',
     "[safety.redundancy.st] mode: must be one of 1oo2, 2oo3"),
    (f'mode = "1oo2"\nsensors = ["{A}", "{B}"]\ntolerance = -1',
     "[safety.redundancy.st] tolerance: must be >= 0"),
    (f'mode = "1oo2"\nsensors = ["{A}", "{B}"]',
     "[safety.redundancy.st] tolerance: required"),
    (f'mode = "1oo2"\nsensors = ["{A}", "{B}"]\ntolerance = 1\noutput = "{C}"',
     f"[safety.redundancy.st] output: '{C}' is already a point"),
    ('mode = "1oo2"\nsensors = [{a = 1}, {b = 2}]\ntolerance = 1',
     "[safety.redundancy.st] sensors: required: a list of distinct input names"),
    (f'mode = "1oo2"\nsensors = ["{A}", "{B}"]\ntolerance = 1\nvote = "max"',
     "[safety.redundancy.st] vote: unknown key"),
])
def test_redundancy_config_errors_named(body: str, expected: str) -> None:
    errors = ErrorLog()
    load_safety(tomllib.loads("[safety.redundancy.st]\n" + body)["safety"], "cdu.toml",
                {A, B, C}, set(), errors)
    assert any(line.startswith(f"cdu.toml: {expected}") for line in errors.lines), errors.lines


def test_voted_point_is_a_known_input_for_limits_and_rules() -> None:
    errors = ErrorLog()
    cfg = load_safety(tomllib.loads(ONE_OO_TWO)["safety"], "cdu.toml", {A, B}, {"pump1.speed_ref"},
                      errors)
    assert errors.lines == []
    assert cfg.groups[0].out_name == VOTED and set(cfg.limits) == {VOTED}
