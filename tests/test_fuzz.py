"""Fuzzing every external parser (tests/fuzz_targets.py): a quick hypothesis pass per input
class, each input fed to the real parser; any outcome but accepted or a documented refusal is
a crash and fails the test naming the input. bench/fuzz.py runs the same targets 100,000 times
beside a scanning node. Regression tests below name the inputs the fuzzing found."""

from __future__ import annotations

import pytest

from edge_runtime.federation.state import parse_state

# -- regressions: inputs the fuzzing found ------------------------------------------------------

STATE_HEAD = (b'{"node":"rs-01","role":"sensor","session":1,"PSWD_version":"1.0",'
              b'"timestamp":"2026-12-06T04:00:00.000Z",')


@pytest.mark.parametrize("payload", [
    b"[" * 100_000 + b"1" + b"]" * 100_000,  # RecursionError from json.loads
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    STATE_HEAD + b'"state":"online","telemetry":{"points":[{"alias":Infinity,"name":"x",'
                 b'"unit":"","type":"float"}]}}',  # OverflowError from int(inf)
], ids=["deep_array", "deep_object", "alias_infinity"])
def test_a_state_message_the_fuzzing_crashed_is_a_value_error(payload: bytes) -> None:
    """federation/state.parse_state: its callers (sensor-node driver, site handler, coordinator
    instances) catch ValueError; a deeply nested JSON or an infinite alias escaped as
    RecursionError / OverflowError (found by bench/fuzz.py, class sensor_node)."""
    with pytest.raises(ValueError, match=r"^state: "):
        parse_state(payload)
