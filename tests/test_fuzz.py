"""Fuzzing every external parser (tests/fuzz_targets.py): a quick hypothesis pass per input
class, each input fed to the real parser; any outcome but accepted or a documented refusal is
a crash and fails the test naming the input. bench/fuzz.py runs the same targets 100,000 times
beside a scanning node. Regression tests below name the inputs the fuzzing found.

Hypothesis draws both through the targets' generators (`st.randoms()`: mutations of valid
inputs, re-signed envelopes, deep nesting, huge lengths) and through its own strategies
(arbitrary bytes, text and JSON documents), which it shrinks on a failure."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from random import Random
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from edge_runtime.assembly import load_node_config
from edge_runtime.config.reader import ConfigError
from edge_runtime.federation.state import parse_state
from edge_runtime.security.tokens import TokenError, TokenVerifier, key_id
from tests import fuzz_targets as ft
from tests.https_env import Env, running

KEY = ec.generate_private_key(ec.SECP256R1())
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUICK = settings(max_examples=100, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RANDOMS = st.randoms(use_true_random=False)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def check(target: Any, case: Any) -> ft.Outcome:
    """Feed one case; fail naming it if the parser crashed."""
    out = ft.timed(target.feed, case)
    assert out.kind != ft.CRASH, f"{target.name} crashed on {case!r:.500}: {out.detail}"
    return out


_TARGETS: dict[str, Any] = {}


def target(name: str, make: Callable[[], Any]) -> Any:
    """One target per class for the whole module (keys, images and verifiers built once)."""
    if name not in _TARGETS:
        _TARGETS[name] = make()
    return _TARGETS[name]


def annex() -> ft.AnnexA:
    return target("annex_a", ft.AnnexA)  # type: ignore[no-any-return]


@QUICK
@given(RANDOMS)
def test_annex_a_mutations(rng: Random) -> None:
    check(annex(), annex().generate(rng))


@QUICK
@given(st.sampled_from(("parse_message", "as_a1", "as_a2")),
       st.binary(max_size=300) | JSON.map(lambda d: json.dumps(d).encode()))
def test_annex_a_any_bytes_or_json(entry: str, raw: bytes) -> None:
    assert check(annex(), (entry, raw)).kind in (ft.ACCEPTED, ft.REFUSED)


@settings(QUICK, max_examples=25)
@given(RANDOMS)
def test_validate_cli(rng: Random) -> None:
    cli = target("validate_cli", ft.ValidateCli)
    check(cli, cli.generate(rng))


@QUICK
@given(RANDOMS)
def test_command_envelopes(rng: Random) -> None:
    commands = target("command", ft.Commands)
    check(commands, commands.generate(rng))


@QUICK
@given(st.sampled_from(("thermal_control", "battery_control", "grid_signal", "workload",
                        "prepare", "rebirth", "nope")),
       st.binary(max_size=200) | JSON.map(lambda d: json.dumps(d).encode()), st.booleans())
def test_command_any_payload(kind: str, payload: bytes, retain: bool) -> None:
    commands = target("command", ft.Commands)
    out = check(commands, (kind, payload, retain))
    assert out.kind == ft.REFUSED or kind == "rebirth", out  # nothing unsigned is taken


@QUICK
@given(RANDOMS)
def test_jwt_tokens(rng: Random) -> None:
    tokens = target("jwt", ft.Tokens)
    check(tokens, tokens.generate(rng))


@QUICK
@given(st.text(max_size=300))
def test_jwt_any_text_is_refused(token: str) -> None:
    out = check(target("jwt", ft.Tokens), token)
    assert out.kind == ft.REFUSED and out.reason.startswith("TokenError("), out


@QUICK
@given(RANDOMS)
def test_cbor_telemetry(rng: Random) -> None:
    telemetry = target("cbor", ft.Telemetry)
    check(telemetry, telemetry.generate(rng))


@QUICK
@given(st.sampled_from(("batch", "batch_birth", "birth")), st.binary(max_size=300))
def test_cbor_any_bytes(entry: str, data: bytes) -> None:
    check(target("cbor", ft.Telemetry), (entry, data))


@QUICK
@given(RANDOMS)
def test_sensor_node_messages(rng: Random) -> None:
    sensor = target("sensor_node", ft.SensorNode)
    check(sensor, sensor.generate(rng))


@QUICK
@given(st.sampled_from(("state", "telemetry")),
       st.binary(max_size=300) | JSON.map(lambda d: json.dumps(d).encode()))
def test_sensor_node_any_payload(topic: str, payload: bytes) -> None:
    check(target("sensor_node", ft.SensorNode), (topic, payload))


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> ft.Config:
    """The config target, writing into a copy of examples/ of its own."""
    return ft.Config(tmp_path_factory.mktemp("fuzz-config"))


@settings(QUICK, max_examples=40)
@given(rng=RANDOMS)
def test_configs(config: ft.Config, rng: Random) -> None:
    check(config, config.generate(rng))


@settings(QUICK, max_examples=30)
@given(example=st.sampled_from(ft.NODE_EXAMPLES), extra=st.dictionaries(
    st.text(min_size=1, max_size=10), st.dictionaries(st.text(min_size=1, max_size=10),
                                                      JSON.filter(lambda v: v is not None),
                                                      max_size=3), max_size=3))
def test_config_with_arbitrary_tables(config: ft.Config, example: str,
                                      extra: dict[str, Any]) -> None:
    doc = {**config.node_docs[example], **ft._no_null(extra)}
    check(config, ("node", example, ft.toml_dumps(doc).encode("utf-8", "surrogatepass")))


# -- the transports of a running node: HTTPS app and OPC UA request path -----------------------

def drawn(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """`n` examples hypothesis draws from `strategy` (generation only: the cases are fed to a
    running node afterwards, in its event loop, where a hypothesis test cannot run)."""
    out: list[Any] = []

    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(case: Any) -> None:
        out.append(case)

    collect()
    return out


@pytest.fixture
async def rack(tmp_path: Path) -> AsyncIterator[Any]:
    """examples/rack.toml running with [https] on fake drivers (tests/https_env.py)."""
    env = Env.create(tmp_path)
    async with running(env, "rack.toml", rate_per_s=100_000.0, burst=100_000) as r:
        yield r


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_https_requests(rack: Any) -> None:
    http = ft.Http(rack)
    await http.start()
    try:
        cases = drawn(RANDOMS.map(http.generate), 200)
        outcomes = [await http.feed(case) for case in cases]
    finally:
        await http.close()
    crashes = [(c, o) for c, o in zip(cases, outcomes, strict=True) if o.kind == ft.CRASH]
    assert not crashes, crashes[:3]
    assert {o.kind for o in outcomes} == {ft.ACCEPTED, ft.REFUSED}  # both paths reached


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_opcua_calls_and_writes(rack: Any) -> None:
    opcua = ft.OpcUa(rack.node)
    try:
        cases = drawn(RANDOMS.map(opcua.generate), 200)
        outcomes = [await opcua.feed(case) for case in cases]
    finally:
        opcua.close()
    crashes = [(c, o) for c, o in zip(cases, outcomes, strict=True) if o.kind == ft.CRASH]
    assert not crashes, crashes[:3]
    assert any(o.kind == ft.REFUSED for o in outcomes)


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


@pytest.mark.anyio
@pytest.mark.parametrize("method, args", [
    ("SetMode", ("loop", "Manual", [1.0, 2.0])),  # math.isnan(list): TypeError
    ("Force", ("battery.w_set_kw", 1.0, [60.0], "why")),  # 0.0 < [60.0]: TypeError
    ("ResetTrip", (["a", "b"],)),  # a list as a dict key: TypeError
], ids=["setmode_value_array", "force_expiry_array", "resettrip_interlock_array"])
async def test_an_opcua_method_argument_given_as_an_array_is_bad_type_mismatch(
        method: str, args: tuple[Any, ...]) -> None:
    """servers/opcua/methods.py _unpack: a Variant of the right type but an array (Double[]
    for Value) passed the type check and raised TypeError in the handler (found by
    bench/fuzz.py, class opcua: SetMode("loop", "Manual", Double[2]))."""
    from asyncua import ua

    from edge_runtime.servers.opcua.methods import Answer, _unpack

    types = {"SetMode": "SSD", "Force": "SDDS", "ResetTrip": "S"}[method]
    vts = [ua.VariantType.String if t == "S" else ua.VariantType.Double for t in types]
    variants = [ua.Variant(a, vt) for a, vt in zip(args, vts, strict=True)]
    with pytest.raises(Answer) as info:
        _unpack(variants, vts)
    assert info.value.code == ua.StatusCodes.BadTypeMismatch


@pytest.mark.parametrize("text", [
    '[node]\nname = "n1"\nrole = "rack"\nio_maps_dir = "maps\\u0000"\n',  # Path.resolve()
    '[node]\nname = "n1"\nrole = "rack"\nscan_period_ms = 1' + "0" * 5000 + "\n",  # int()
], ids=["nul_in_a_path", "int_of_5000_digits"])
def test_a_config_with_a_nul_path_or_a_huge_integer_is_a_config_error(
        tmp_path: Path, text: str) -> None:
    """config/reader.py: a string holding NUL reached os.path (ValueError 'embedded null
    byte') and tomllib's int() of more than 4,300 digits raised ValueError, both out of
    load_node_config (found by bench/fuzz.py, class config, on mutated rack_sensors.toml)."""
    path = tmp_path / "n.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"NUL character|syntax: Exceeds the limit"):
        load_node_config(path)


# -- the benchmark's quick run ------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_bench_fuzz_quick_finds_no_crash() -> None:
    """`bench/fuzz.py --quick`: ~3,000 cases over every class beside a scanning node, in
    under 30 s; its JSON line counts no crash and no generator error. (Scan overruns are
    reported, not asserted: on a shared machine they measure the machine too.)"""
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(root / "bench" / "fuzz.py"), "--quick"],
                          capture_output=True, text=True, timeout=45, cwd=root)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["crashes"] == 0, proc.stdout[-3000:]
    assert result["generator_errors"] == 0
    assert set(result["by_class"]) == {"annex_a", "validate_cli", "command", "jwt", "cbor",
                                       "sensor_node", "http", "opcua", "config"}
    assert 2_900 <= result["cases"] <= 3_000
    for name, row in result["by_class"].items():
        assert row["refused"], f"{name}: nothing refused, the fuzzing missed the parser"
    assert took < 30, f"--quick took {took:.0f} s"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_an_interlock_driving_an_output_to_nan_or_inf_is_a_config_error(
        tmp_path: Path, value: str) -> None:
    """safety/config.py check_output: nan passed the range check (every comparison is false)
    and int(nan) raised ValueError out of load_node_config on an integer register; on a float
    register an interlock would have driven the output to nan (found by bench/fuzz.py, class
    config, on mutated examples/cdu.toml)."""
    path = tmp_path / "n.toml"
    text = (EXAMPLES / "rack_sensors.toml").read_text()
    rule = 'outputs = { "sensors.valve" = 0 }'
    assert rule in text
    path.write_text(text.replace(rule, f'outputs = {{ "sensors.valve" = {value} }}'))
    with pytest.raises(ConfigError, match=r"sensors\.valve = .*: not a finite number"):
        load_node_config(path)
