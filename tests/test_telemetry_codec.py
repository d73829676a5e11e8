"""CBOR telemetry codec: golden bytes, the documented layout, round trips, size, hostile input."""

from __future__ import annotations

import contextlib
import json
import math
import random
from pathlib import Path
from typing import Any

import cbor2
import pytest

from edge_runtime.core.points import Quality, Sample
from edge_runtime.messages.telemetry import (
    MAX_FRAME_BYTES,
    Batch,
    Birth,
    PointDef,
    PointType,
    TelemetryError,
    TelemetrySample,
    declare_points,
    decode_batch,
    decode_birth,
    encode_batch,
    encode_birth,
    encode_samples,
    make_batch,
)

VECTORS = Path(__file__).parent / "vectors" / "telemetry"
T0 = 1767225600000  # 2026-01-01T00:00:00Z in ms
G, B, U, F, S = Quality.GOOD, Quality.BAD, Quality.UNCERTAIN, Quality.FORCED, Quality.SUBSTITUTED


def _hex(name: str) -> bytes:
    return bytes.fromhex((VECTORS / f"{name}.hex").read_text().strip())


def _batch_from_json(name: str) -> Batch:
    j = json.loads((VECTORS / f"{name}.json").read_text())
    samples = tuple(TelemetrySample(s["alias"], s["value"], Quality(s["quality"]), s["offset_ms"])
                    for s in j["samples"])
    return Batch(j["session"], j["seq"], j["base_ms"], samples, j["historical"])


def _birth_from_json(name: str) -> Birth:
    j = json.loads((VECTORS / f"{name}.json").read_text())
    points = tuple(PointDef(p["alias"], p["name"], p["unit"], PointType(p["data_type"]))
                   for p in j["points"])
    return Birth(j["session"], j["time_ms"], points)


def _birth_bytes(birth: Birth) -> bytes:
    return encode_birth(birth.points, session=birth.session, time_ms=birth.time_ms)


# --- golden vectors --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["batch_small", "batch_historical"])
def test_batch_golden_bytes(name: str) -> None:
    batch = _batch_from_json(name)
    assert encode_batch(batch).hex() == _hex(name).hex()
    assert decode_batch(_hex(name)) == batch


def test_birth_golden_bytes() -> None:
    birth = _birth_from_json("birth_small")
    assert _birth_bytes(birth).hex() == _hex("birth_small").hex()
    assert decode_birth(_hex("birth_small")) == birth


def test_batch_layout_is_as_documented() -> None:
    # Read with plain cbor2, not our decoder: this is what another implementation sees.
    assert cbor2.loads(_hex("batch_small")) == {
        0: "1.0", 1: 0, 2: 3, 3: 7, 4: T0, 5: False,
        6: [[0, 0, 21.5, 1, 1013.25, 2, [None, 1]],
            [100, 0, 21.625, 1, [1013.2, 2], 3, [1.0, 3]]],
    }
    # Shortest exact floats: 21.5 is a half (f9), 1013.25 a single (fa), 1013.2 a double (fb).
    raw = _hex("batch_small").hex()
    assert "f94d60" in raw and "fa447d5000" in raw and "fb408fa9999999999a" in raw
    assert raw.startswith("a7" "0063312e30" "0100" "0203" "0307" "041b0000019b76daa800" "05f4")


def test_birth_layout_is_as_documented() -> None:
    assert cbor2.loads(_hex("birth_small")) == {
        0: "1.0", 1: 1, 2: 3, 4: T0,
        7: [[0, "cdu1.supply_temp", "degC", 0], [1, "cdu1.flow", "L/min", 0],
            [2, "cdu1.pump_run", "", 2], [3, "meter.power", "MW", 0]],
    }


# --- round trips -----------------------------------------------------------------------------

def test_every_quality_with_and_without_value_round_trips() -> None:
    samples = tuple(TelemetrySample(alias, value, q, offset)
                    for alias, (q, value, offset) in enumerate(
                        (q, v, o) for q in Quality for v in (None, -1.5e-300, 2.0**70)
                        for o in (0, 99)))
    batch = Batch(2**64 - 1, 2**64 - 1, 2**64 - 1, samples, historical=True)
    assert decode_batch(encode_batch(batch)) == batch


def test_empty_batch_and_special_floats() -> None:
    assert decode_batch(encode_batch(Batch(0, 0, 0, ()))) == Batch(0, 0, 0, ())
    odd = (TelemetrySample(0, -0.0, G, 0), TelemetrySample(1, math.inf, G, 0),
           TelemetrySample(2, math.nan, U, 0))
    out = decode_batch(encode_batch(Batch(1, 1, T0, odd))).samples
    assert out[0].value is not None and math.copysign(1, out[0].value) == -1
    assert out[1].value == math.inf
    assert out[2].value is not None and math.isnan(out[2].value) and out[2].quality is U


def test_order_is_kept_when_offsets_go_back() -> None:
    samples = (TelemetrySample(0, 1.0, G, 100), TelemetrySample(1, 2.0, G, 0),
               TelemetrySample(2, 3.0, G, 100))
    data = encode_batch(Batch(1, 2, T0, samples))
    assert len(cbor2.loads(data)[6]) == 3  # three frames: only consecutive samples share one
    assert decode_batch(data).samples == samples


def test_integers_from_other_encoders_decode_as_floats() -> None:
    data = cbor2.dumps({0: "1.0", 1: 0, 2: 1, 3: 0, 4: T0, 5: False, 6: [[0, 5, 21, 6, [7, 4]]]})
    samples = decode_batch(data).samples
    assert samples == (TelemetrySample(5, 21.0, G, 0), TelemetrySample(6, 7.0, S, 0))
    assert all(type(s.value) is float for s in samples)


def test_make_batch_from_core_samples() -> None:
    t = T0 / 1000
    pairs = [(0, Sample(20.0, G, t + 0.1)), (1, Sample.bad("comms lost", t + 0.1)),
             (0, Sample(20.5, G, t + 0.2))]
    batch = make_batch(pairs, session=5, seq=9)
    assert batch.base_ms == T0 + 100 and [s.offset_ms for s in batch.samples] == [0, 0, 100]
    birth = Birth(5, T0, declare_points([("a", "degC", PointType.FLOAT),
                                         ("b", "", PointType.INT)]))
    named = list(decode_batch(encode_batch(batch), birth=birth).named(birth))
    assert named == [("a", Sample(20.0, G, t + 0.1)), ("b", Sample(None, B, t + 0.1)),
                     ("a", Sample(20.5, G, t + 0.2))]
    assert make_batch([], session=0, seq=0).samples == ()


def test_thousand_samples_stay_compact() -> None:
    rng = random.Random(7)
    # 100 points x 10 scans at 100 ms; values need all 64 bits, the worst case for size.
    samples = tuple(TelemetrySample(alias, 20 + rng.random() * 50, G, scan * 100)
                    for scan in range(10) for alias in range(100))
    data = encode_batch(Batch(1, 1, T0, samples))
    assert len(data) / len(samples) < 12
    assert decode_batch(data).samples == samples


# --- hostile input ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["batch_small", "batch_historical", "birth_small"])
def test_every_truncated_prefix_is_a_telemetry_error(name: str) -> None:
    data = _hex(name)
    decode = decode_birth if name.startswith("birth") else decode_batch
    for n in range(len(data)):
        with pytest.raises(TelemetryError):
            decode(data[:n])


@pytest.mark.parametrize("name", ["batch_small", "birth_small"])
def test_corrupted_bytes_never_escape_as_other_errors(name: str) -> None:
    data = _hex(name)
    decode = decode_birth if name.startswith("birth") else decode_batch
    rng = random.Random(1)
    variants = [data[:i] + bytes([v]) + data[i + 1:]
                for i in range(len(data)) for v in (0x00, 0x18, 0x5f, 0x9f, 0xbf, 0xc1, 0xd9,
                                                    0xf7, 0xfb, 0xff, data[i] ^ 0x20)]
    variants += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
                 for _ in range(2000)]
    for blob in variants:
        with contextlib.suppress(TelemetryError):  # anything else fails the test
            decode(blob)


def _batch_map(**changes: Any) -> dict[Any, Any]:
    base: dict[Any, Any] = {0: "1.0", 1: 0, 2: 3, 3: 7, 4: T0, 5: False, 6: [[0, 0, 1.5]]}
    for key, value in changes.items():
        if value is _DROP:
            del base[int(key[1:])]
        else:
            base[int(key[1:])] = value
    return base


_DROP = object()


@pytest.mark.parametrize(("data", "message"), [
    (b"", "truncated"),
    (_hex("batch_small") + b"\x00", "1 bytes after the end of the CBOR item"),
    (cbor2.dumps([1, 2]), "expected a CBOR map, got list"),
    (cbor2.dumps(_batch_map(k1=1)), r"key 1 \(kind\): expected 0 \(batch\), got int 1"),
    (cbor2.dumps(_batch_map(k0="2.0")), r"key 0 \(PSWD_version\): expected '1.0'"),
    (cbor2.dumps(_batch_map(k5=_DROP)), r"missing key\(s\) \[5\]"),
    (cbor2.dumps(_batch_map(k9=1)), r"unknown key\(s\) \[9\]"),
    (cbor2.dumps(_batch_map() | {8.5: 3}), "map keys must be integers, got float 8.5"),
    (cbor2.dumps(_batch_map(k3="7")), r"key 3 \(seq\): expected an integer 0..\d+, got str '7'"),
    (cbor2.dumps(_batch_map(k3=-1)), r"key 3 \(seq\): expected an integer"),
    (cbor2.dumps(_batch_map(k2=2**64)), r"key 2 \(session\): expected an integer"),
    (cbor2.dumps(_batch_map(k5=0)), r"key 5 \(historical\): expected a bool, got int 0"),
    (cbor2.dumps(_batch_map(k6={})), r"key 6 \(frames\): expected an array"),
    (cbor2.dumps(_batch_map(k6=[[0, 1]])), r"frame 0: expected \[offset_ms, alias, value"),
    (cbor2.dumps(_batch_map(k6=[[-5, 0, 1.0]])), "frame 0: offset_ms: expected an integer"),
    (cbor2.dumps(_batch_map(k6=[[0, 70000, 1.0]])), "frame 0, sample 0: alias: expected an"),
    (cbor2.dumps(_batch_map(k6=[[0, 0, "hot"]])), "frame 0, sample 0: value must be a number"),
    (cbor2.dumps(_batch_map(k6=[[0, 0, True]])), "value must be a number, got bool True"),
    (cbor2.dumps(_batch_map(k6=[[0, 0, [1.0, 9]]])), "unknown quality code int 9"),
    (cbor2.dumps(_batch_map(k6=[[0, 0, [1.0, "good"]]])), "unknown quality code str 'good'"),
    (cbor2.dumps(_batch_map(k6=[[0, 0, [1.0, 0, 0]]])), r"expected \[value, quality\], got 3"),
    (cbor2.dumps(_batch_map(k6=[[0, 0, [[[1]]], 1]])), "not valid CBOR"),
    (bytes.fromhex("a20100" "0101"), "not valid CBOR: .*[Dd]uplicate"),
    (bytes.fromhex("c1") + cbor2.dumps("x"), "not valid CBOR"),
    (_hex("birth_small"), r"key 1 \(kind\): expected 0 \(batch\), got int 1"),
])
def test_malformed_batches_are_named(data: bytes, message: str) -> None:
    with pytest.raises(TelemetryError, match=message):
        decode_batch(data)


def test_bignum_value_is_a_number_error() -> None:
    # tag 2 bignum > 2**1024: an int that float() cannot hold
    data = cbor2.dumps(_batch_map(k6=[[0, 0, 2**1100]]))
    with pytest.raises(TelemetryError, match="frame 0, sample 0: value"):
        decode_batch(data)


def test_unknown_alias_and_stale_birth() -> None:
    birth = _birth_from_json("birth_small")
    data = encode_batch(Batch(3, 0, T0, (TelemetrySample(9, 1.0, G, 0),)))
    with pytest.raises(TelemetryError, match="frame 0, sample 0: unknown alias 9"):
        decode_batch(data, birth=birth)
    assert decode_batch(data).samples[0].alias == 9  # without a birth there is nothing to check
    with pytest.raises(TelemetryError, match="batch of session 4, but the birth is of session 3"):
        decode_batch(_hex("batch_historical"), birth=birth)


def test_size_limit_both_ways() -> None:
    with pytest.raises(TelemetryError, match="exceeds the 1048576-byte limit"):
        decode_batch(b"\x00" * (MAX_FRAME_BYTES + 1))
    many = tuple(TelemetrySample(i % 1000, 0.1 * i, G, i) for i in range(110_000))
    with pytest.raises(TelemetryError, match="split the batch"):
        encode_batch(Batch(0, 0, T0, many))


def test_not_bytes() -> None:
    with pytest.raises(TelemetryError, match="expected bytes, got str"):
        decode_batch("a7")  # type: ignore[arg-type]
    assert decode_batch(memoryview(_hex("batch_small"))) == _batch_from_json("batch_small")


@pytest.mark.parametrize(("points", "message"), [
    ([[0, "a", "", 0], [0, "b", "", 0]], "point 1 \\(b\\): alias 0 declared twice"),
    ([[0, "a", "", 0], [1, "a", "", 0]], "point 1: point name 'a' declared twice"),
    ([[0, "", "", 0]], "point 0: name must be non-empty text"),
    ([[0, 5, "", 0]], "point 0: name must be non-empty text, got int 5"),
    ([[0, "a", None, 0]], "point 0 \\(a\\): unit must be text"),
    ([[0, "a", "", 7]], "point 0: unknown data type code int 7"),
    ([[0, "a", ""]], "point 0: expected \\[alias, name, unit, type\\]"),
    ([[-1, "a", "", 0]], "point 0: alias: expected an integer"),
    ({}, "key 7 \\(points\\): expected an array"),
])
def test_malformed_births_are_named(points: Any, message: str) -> None:
    data = cbor2.dumps({0: "1.0", 1: 1, 2: 3, 4: T0, 7: points})
    with pytest.raises(TelemetryError, match=message):
        decode_birth(data)


@pytest.mark.parametrize(("batch", "message"), [
    (Batch(-1, 0, T0, ()), "session: expected an integer"),
    (Batch(0, 2**64, T0, ()), "seq: expected an integer"),
    (Batch(0, 0, 1.5, ()), "base_ms: expected an integer"),  # type: ignore[arg-type]
    (Batch(0, 0, T0, (TelemetrySample(65536, 1.0, G, 0),)), "sample 0: alias"),
    (Batch(0, 0, T0, (TelemetrySample(0, 1.0, G, -1),)), "sample 0: offset_ms"),
    (Batch(0, 0, T0, (TelemetrySample(0, 1.0, G, 2**32),)), "sample 0: offset_ms"),
    (Batch(0, 0, T0, (TelemetrySample(0, "1", G, 0),)),  # type: ignore[arg-type]
     "sample 0: value must be a number or None, got str '1'"),
    (Batch(0, 0, T0, (TelemetrySample(0, 1.0, "great", 0),)),  # type: ignore[arg-type]
     "sample 0: unknown quality"),
])
def test_encode_refuses_what_decode_would(batch: Batch, message: str) -> None:
    with pytest.raises(TelemetryError, match=message):
        encode_batch(batch)


def test_encode_birth_refuses_duplicates() -> None:
    with pytest.raises(TelemetryError, match="alias 0 declared twice"):
        encode_birth([PointDef(0, "a", ""), PointDef(0, "b", "")], session=1, time_ms=T0)
    with pytest.raises(TelemetryError, match="time_ms"):
        encode_birth([], session=1, time_ms=-1)


# --- the node's fast encoder and the receiver's cached alias map -------------------------------

def _random_pairs(rng: random.Random, n: int) -> list[tuple[int, Sample]]:
    """(alias, Sample) pairs as a recorder keeps them: mostly GOOD floats at a few instants,
    then every other kind of value and quality a driver can give."""
    t = 1.767e9 + rng.uniform(0, 1e3)
    pairs = []
    for _ in range(n):
        q = G if rng.random() < 0.7 else rng.choice(list(Quality))
        value: Any = rng.choice([rng.uniform(-1e6, 1e6), 0.5, 3, 0.0, -0.0, math.inf, None])
        if q is G and value is None:
            value = 1.25
        pairs.append((rng.choice([0, 1, 23, 24, 255, 256, 65535, rng.randrange(65536)]),
                      Sample(value, q, t + rng.choice([0.0, 0.0, 0.001, 0.1, 7.0]))))
    return pairs


def test_encode_samples_writes_the_bytes_of_encode_batch() -> None:
    rng = random.Random(11)
    for n in [0, 1, 2, 50, 500] * 20:
        pairs = _random_pairs(rng, n)
        session, seq = rng.randrange(2**64), rng.randrange(2**64)
        historical = rng.random() < 0.5
        assert encode_samples(pairs, session=session, seq=seq, historical=historical) == \
            encode_batch(make_batch(pairs, session=session, seq=seq, historical=historical))


@pytest.mark.parametrize("pair", [(0, Sample(True, G, 1.0)),  # type: ignore[arg-type]
                                  (0, Sample("1", G, 1.0)),  # type: ignore[arg-type]
                                  (65536, Sample(1.0, G, 1.0)),
                                  (-1, Sample(1.0, G, 1.0))])
def test_encode_samples_refuses_what_encode_batch_refuses(pair: tuple[int, Sample]) -> None:
    with pytest.raises(TelemetryError) as fast:
        encode_samples([(1, Sample(2.0, G, 1.0)), pair], session=1, seq=0)
    with pytest.raises(TelemetryError) as slow:
        encode_batch(make_batch([(1, Sample(2.0, G, 1.0)), pair], session=1, seq=0))
    assert str(fast.value) == str(slow.value)


def test_a_birth_builds_its_alias_map_once_and_decodes_as_a_fresh_one() -> None:
    rng = random.Random(5)
    points = declare_points((f"d{i // 100}.p{i}", "kW", PointType.FLOAT) for i in range(3000))
    birth = Birth(9, T0, points)
    assert birth.by_alias() is birth.by_alias()  # cached, not rebuilt per batch
    assert birth == Birth(9, T0, points) and hash(birth) == hash(Birth(9, T0, points))
    for _ in range(50):
        pairs = [(a, s) for a, s in _random_pairs(rng, 30) if a < len(points)]
        data = encode_batch(make_batch(pairs, session=9, seq=rng.randrange(100)))
        fresh = Birth(9, T0, points)  # nothing cached from earlier batches
        cached = decode_batch(data, birth=birth)
        assert cached == decode_batch(data, birth=fresh)
        assert list(cached.named(birth)) == list(cached.named(fresh))
    with pytest.raises(TelemetryError, match="unknown alias 3000"):
        decode_batch(encode_batch(make_batch([(3000, Sample(1.0, G, 1.0))], session=9, seq=0)),
                     birth=birth)
