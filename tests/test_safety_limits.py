"""Limit monitors: thresholds, hysteresis, delay in scan counts, quality, events on transitions."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge_runtime.config.reader import ErrorLog
from edge_runtime.config.schema import Limits
from edge_runtime.core.events import Severity
from edge_runtime.core.points import NEVER_READ, Quality, Sample
from edge_runtime.safety.config import load_safety
from edge_runtime.safety.limits import Level, LimitMonitor, check_limits
from tests.test_safety_interlocks import Plant

PERIOD = 0.1


def good(value: float) -> Sample:
    return Sample(value, Quality.GOOD, 0.0)


def run(monitor: LimitMonitor, values: list[float], t0: float = 1000.0) -> list[Level]:
    """Feed one value per 100 ms scan; the level after each scan."""
    levels = []
    for k, v in enumerate(values):
        monitor.update(good(v), t0 + k * PERIOD)
        levels.append(monitor.level)
    return levels


def test_high_raises_strictly_above_and_clears_hysteresis_inside() -> None:
    m = LimitMonitor("t", Limits(high=40.0, hysteresis=0.5))
    H, N = Level.HIGH, Level.NORMAL
    assert run(m, [40.0, 40.1, 39.6, 39.51, 39.5, 40.0, 40.01]) == [N, H, H, H, N, N, H]


def test_low_mirrors_high() -> None:
    m = LimitMonitor("t", Limits(low=15.0, low_low=10.0, hysteresis=1.0))
    L, LL, N = Level.LOW, Level.LOW_LOW, Level.NORMAL
    assert run(m, [15.0, 14.9, 9.9, 10.5, 11.0, 15.9, 16.0]) == [N, L, LL, LL, L, L, N]


def test_delay_counts_scans_and_restarts_on_a_dip() -> None:
    m = LimitMonitor("t", Limits(high=40.0, delay_s=0.3))
    values = [41.0] * 3 + [39.0] + [41.0] * 5
    levels = run(m, values)
    # First above at scan 0: 0.3 s later is scan 3, but scan 3 dips, so the timer restarts at
    # scan 4 and the alarm comes at scan 7, the fourth consecutive scan above.
    assert levels.index(Level.HIGH) == 7
    assert levels[:7] == [Level.NORMAL] * 7


def test_escalation_and_events_only_on_transitions() -> None:
    m = LimitMonitor("supply.t", Limits(high=40.0, high_high=45.0, hysteresis=0.5), unit="degC")
    seen = []
    for k, v in enumerate([41.0, 41.0, 46.0, 46.0, 46.0, 44.0, 39.0, 39.0]):
        seen += [(k, t.level, t.raised, t.severity) for t in m.update(good(v), k * PERIOD)]
    assert seen == [
        (0, Level.HIGH, True, Severity.WARNING),
        (2, Level.HIGH_HIGH, True, Severity.CRITICAL),
        (5, Level.HIGH_HIGH, False, Severity.INFO),
        (6, Level.HIGH, False, Severity.INFO),
    ]


def test_severity_per_level_can_be_set() -> None:
    m = LimitMonitor("t", Limits(high=1.0), severity={Level.HIGH: Severity.ALARM})
    assert m.update(good(2.0), 0.0)[0].severity is Severity.ALARM


def test_bad_quality_is_its_own_state_and_keeps_raised_thresholds() -> None:
    m = LimitMonitor("t", Limits(high=40.0))
    m.update(good(41.0), 0.0)
    out = m.update(Sample.bad("timeout", 0.1), 0.1)
    levels = [m.level]
    assert m.active(Level.HIGH)
    assert [(t.level, t.raised) for t in out] == [(Level.BAD, True)]
    assert "quality bad (timeout)" in out[0].message
    assert m.update(Sample.bad("timeout", 0.2), 0.2) == []  # once, not per scan
    back = m.update(good(41.0), 0.3)
    assert [(t.level, t.raised) for t in back] == [(Level.BAD, False)]
    levels.append(m.level)
    assert levels == [Level.BAD, Level.HIGH]  # still high: no new raise event either


def test_uncertain_value_is_evaluated_and_unread_is_silent() -> None:
    m = LimitMonitor("t", Limits(high=40.0))
    assert m.update(NEVER_READ, 0.0) == [] and m.level is Level.BAD
    out = m.update(Sample(41.0, Quality.UNCERTAIN, 0.1, "stale"), 0.1)
    assert [(t.level, t.raised) for t in out] == [(Level.HIGH, True)]  # no "restored" either


@pytest.mark.parametrize(("limits", "key", "reason"), [
    (Limits(low=20.0, high=10.0), "high", "thresholds must rise"),
    (Limits(low=10.0, high=20.0, hysteresis=5.0), "hysteresis", "too wide for the normal band"),
    (Limits(high=40.0, high_high=41.0, hysteresis=1.0), "hysteresis", "is not below the 1"),
    (Limits(), "(table)", "give at least one"),
])
def test_contradictory_limits_refused(limits: Limits, key: str, reason: str) -> None:
    problems = check_limits(limits)
    assert any(k == key and reason in r for k, r in problems), problems
    with pytest.raises(ValueError, match=reason):
        LimitMonitor("t", limits)


def test_safety_limits_config_errors_named() -> None:
    errors = ErrorLog()
    text = """
[safety.limits."flow.flow"]
low = 50.0
low_low = 60.0
[safety.limits."flow.nope"]
high = 1.0
[safety.limits."t.temperature"]
high = 1.0
[safety.limits."flow.total"]
high = 1.0
hysteresis = -1.0
"""
    load_safety(tomllib.loads(text)["safety"], "n.toml", {"flow.flow", "flow.total",
                "t.temperature"}, set(), errors,
                limits={"t.temperature": Limits(low=10.0, high=12.0, hysteresis=1.5)})
    assert errors.lines == [
        "n.toml: [devices.t.limits.temperature] hysteresis: 1.5 is too wide for the normal band"
        " low = 10 .. high = 12; keep it under 1",
        'n.toml: [safety.limits."flow.flow"] low: thresholds must rise low_low < low < high < '
        "high_high; low_low = 60 is not below low = 50",
        "n.toml: [safety.limits.\"flow.nope\"] (point): unknown input 'flow.nope'",
        'n.toml: [safety.limits."t.temperature"] (point): t.temperature already has limits in '
        "its [devices] table",
        'n.toml: [safety.limits."flow.total"] hysteresis: must be >= 0, got -1',
    ]


def test_limit_events_through_the_scan_once_per_transition(tmp_path: Path) -> None:
    plant = Plant(tmp_path, "")  # supply_temp_a has device limits low 15, high 40, hh 45
    plant.set("supply_temp_a.temperature", 41.0)
    plant.scan(20)
    plant.set("supply_temp_a.temperature", 20.0)
    plant.scan(20)
    assert plant.codes() == ["limit", "limit_clear"]
    assert plant.safety.get_status()["limits"] == {"supply_temp_a.temperature": "normal"}
