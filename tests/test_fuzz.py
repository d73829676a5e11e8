"""Fuzzing every external parser (tests/fuzz_targets.py): a quick hypothesis pass per input
class, each input fed to the real parser; any outcome but accepted or a documented refusal is
a crash and fails the test naming the input. bench/fuzz.py runs the same targets 100,000 times
beside a scanning node. Regression tests below name the inputs the fuzzing found."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from edge_runtime.assembly import load_node_config
from edge_runtime.config.reader import ConfigError
from edge_runtime.federation.state import parse_state
from edge_runtime.security.tokens import TokenError, TokenVerifier, key_id

KEY = ec.generate_private_key(ec.SECP256R1())
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

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


def test_a_token_with_a_lone_surrogate_is_a_token_error() -> None:
    """security/tokens.TokenVerifier.verify: a token of non-ASCII text with a lone surrogate
    (what aiohttp makes of invalid UTF-8 in a header) escaped PyJWT as UnicodeEncodeError
    (found by bench/fuzz.py, class jwt)."""
    verifier = TokenVerifier({key_id(KEY.public_key()): KEY.public_key()})
    for token in ("\udd56", "eyJ\ud8da.x.y", "é.é.é"):
        with pytest.raises(TokenError) as info:
            verifier.verify(token, audience="rack-01")
        assert info.value.claim == "token"


def test_a_config_naming_an_io_map_too_long_for_a_file_name_is_a_config_error(
        tmp_path: Path) -> None:
    """config/devices.py: io_map = "<300 characters>" made Path.exists() raise OSError
    (ENAMETOOLONG) out of load_node_config (found by bench/fuzz.py, class config)."""
    path = tmp_path / "n.toml"
    path.write_text('[node]\nname = "n1"\nrole = "rack"\n[devices.meter]\n'
                    f'io_map = "{"rack_power_meter" * 20}"\nendpoint = "127.0.0.1:1502"\n')
    with pytest.raises(ConfigError, match=r"\[devices.meter\] io_map: no io_map"):
        load_node_config(path)


@pytest.mark.parametrize("key, value", [("severity", "9999-12-31T23:59:59Z"),
                                        ("reaction", "melt")])
def test_an_interlock_with_an_unknown_severity_or_reaction_is_a_config_error(
        tmp_path: Path, key: str, value: str) -> None:
    """safety/config.py: get_str recorded the bad choice, then Severity(...) / Reaction(...)
    raised ValueError out of load_node_config (found by bench/fuzz.py, class config:
    severity = "9999-12-31T23:59:59Z" in a mutated examples/rack.toml)."""
    path = tmp_path / "n.toml"
    text = (EXAMPLES / "rack_sensors.toml").read_text()
    rule = '[safety.interlocks.rack_leak]\n'
    assert rule in text
    path.write_text(text.replace(rule, f'{rule}{key} = "{value}"\n'))
    with pytest.raises(ConfigError, match=rf"rack_leak\] {key}: must be one of"):
        load_node_config(path)
