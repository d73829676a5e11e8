"""Intrusion detection: per-source offence counts, alarms and blocks, on a virtual clock.

The property test searches offence sequences against a reference model: a source is blocked
exactly when some `count` of its offences of one kind fell within `window_s`, and only for
`block_s` after the latest such run."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.core.events import EventLog
from edge_runtime.security.ids import IntrusionDetector, Threshold


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def detector(**kw: object) -> tuple[IntrusionDetector, Clock, EventLog]:
    clock, events = Clock(), EventLog()
    return IntrusionDetector(events, clock, **kw), clock, events  # type: ignore[arg-type]


def test_five_auth_failures_in_a_minute_block_the_source_and_raise_one_alarm() -> None:
    ids, clock, events = detector()
    for _ in range(4):
        assert ids.record("10.0.0.9", "auth_failure", "bad token") is False
        clock.t += 10
    assert ids.blocked("10.0.0.9") == 0.0
    assert ids.record("10.0.0.9", "auth_failure", "bad token") is True
    assert ids.blocked("10.0.0.9") == pytest.approx(300.0)
    alarms = [e for e in events.recent(10) if e.code == "intrusion"]
    assert len(alarms) == 1 and "10.0.0.9" in alarms[0].message
    assert ids.blocked("10.0.0.8") == 0.0  # other sources untouched
    clock.t += 301
    assert ids.blocked("10.0.0.9") == 0.0  # the block ends by itself


def test_offences_spread_wider_than_the_window_never_block() -> None:
    # 5 failures 13 s apart span 52 s, inside the 60 s window: blocked.
    ids, clock, _ = detector()
    for _ in range(5):
        ids.record("peer", "auth_failure")
        clock.t += 13
    assert ids.blocked("peer") > 0
    # 16 s apart, any 5 span 64 s: never blocked, however many there are.
    ids2, clock2, _ = detector()
    for _ in range(50):
        ids2.record("peer", "auth_failure")
        clock2.t += 16
    assert ids2.blocked("peer") == 0.0


def test_a_command_flood_is_a_rate_offence_and_blocks() -> None:
    ids, clock, events = detector(command_rate=10.0)
    allowed = [ids.command("mqtt:grid_operator") for _ in range(15)]
    assert allowed == [True] * 10 + [False] * 5
    assert ids.blocked("mqtt:grid_operator") > 0
    assert any(e.code == "intrusion" for e in events.recent(5))
    clock.t += 1000
    assert ids.command("mqtt:grid_operator") is True


def test_unknown_kinds_are_refused_by_name() -> None:
    ids, _, _ = detector()
    with pytest.raises(ValueError, match="unknown offence kind 'sneeze'"):
        ids.record("x", "sneeze")
    with pytest.raises(ValueError, match="unknown offence kind"):
        IntrusionDetector(EventLog(), Clock(), thresholds={"sneeze": Threshold(1, 1)})


def test_memory_is_bounded_under_a_flood_of_sources() -> None:
    ids, clock, _ = detector(max_sources=100)
    for i in range(5000):
        ids.record(f"10.1.{i // 250}.{i % 250}", "malformed")
        clock.t += 0.01
    assert len(ids._sources) <= 100


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["auth_failure", "replay"]),
                          st.floats(0.0, 40.0)), max_size=40))
def test_blocks_match_a_reference_model(steps: list[tuple[str, str, float]]) -> None:
    ids, clock, _ = detector()
    history: dict[tuple[str, str], list[float]] = {}
    blocked_until: dict[str, float] = {}
    for source, kind, gap in steps:
        clock.t += gap
        ids.record(source, kind)
        th = ids.thresholds[kind]
        runs = history.setdefault((source, kind), [])
        runs.append(clock.t)
        if len(runs) >= th.count and clock.t - runs[-th.count] <= th.window_s:
            blocked_until[source] = clock.t + ids.block_s
            runs.clear()
        for s in ("a", "b"):
            expect = max(0.0, blocked_until.get(s, 0.0) - clock.t)
            assert ids.blocked(s) == pytest.approx(expect), (s, steps)
