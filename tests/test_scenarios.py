"""Scenarios as data (tests/scenarios/*.toml): a real Node against the real plant simulator
over loopback Modbus TCP, stepped scan by scan in simulated time (see tests/scenario_runner)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.config.reader import ConfigError
from tests.scenario_runner import SCENARIOS, Scenario, ScenarioError, run_scenario

FILES = sorted(SCENARIOS.glob("*.toml"))


@pytest.mark.anyio
@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_scenario(path: Path) -> None:
    result = await run_scenario(path)
    assert result.checks > 0
    assert result.passed, "\n".join([result.name, *result.failures[:20]])


def test_every_required_scenario_is_there() -> None:
    # issue 3, item 7
    names = {p.stem for p in FILES}
    assert {"leak_isolate", "supply_high_high", "low_flow_standby", "sensor_failover",
            "inverter_offline", "site_link_lost", "trip_reset_roles"} <= names


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_the_runner_can_fail(tmp_path: Path) -> None:
    # The leak scenario against a CDU whose leak rule watches the wrong state: every
    # isolation expectation must fail, so a passing scenario means something.
    text = (SCENARIOS / "leak_isolate.toml").read_text()
    text += '\n[node_overrides.safety.interlocks.leak_isolate]\nwhen = "leak.leak_state == 2"\n'
    path = tmp_path / "broken.toml"
    path.write_text(text)
    result = await run_scenario(path)
    assert not result.passed
    assert any("wire 'pump1.control_word': 1 != 0" in f for f in result.failures)
    assert any("no event 'isolate'" in f for f in result.failures)


@pytest.mark.parametrize(("body", "message"), [
    ('[scenario]\nname = "x"\n', "[scenario] duration_s: required"),
    ('[scenario]\nname = "x"\nduration_s = 1\nspeed = 2\n', "[scenario] speed: unknown key"),
    ('[scenario]\nname = "x"\nduration_s = 1\n[[step]]\nt = 0\nexplode = {}\n',
     "exactly one of inject, clear, command"),
    ('[scenario]\nname = "x"\nduration_s = 1\n[[step]]\nt = 0\ncommand = {type = "fly"}\n',
     "command.type: one of"),
    ('[scenario]\nname = "x"\nduration_s = 1\n[[expect]]\nt = 0\noutput = "a.b"\nequal = 1\n',
     "equal: unknown key"),
])
def test_bad_scenario_files_are_named(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises((ScenarioError, ConfigError)) as info:
        Scenario(path)
    assert message in str(info.value)
