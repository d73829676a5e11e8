"""Golden vectors: the firmware's CBOR (run on the MicroPython VM) against cbor2 and the
runtime's telemetry codec, both directions.

firmware-encoded -> cbor2 canonical bytes equal, runtime decode_birth/decode_batch read them;
cbor2/runtime-encoded -> firmware decoder gives the values back. Floats travel to the VM as
float64 bit patterns, so every case (half, single, double, subnormal, -0.0, NaN, inf) reaches
the firmware exactly.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import cbor2
import pytest

from edge_runtime.core.points import Quality, Sample
from edge_runtime.messages.telemetry import (
    PointDef,
    PointType,
    decode_batch,
    decode_birth,
    encode_birth,
    encode_samples,
)
from tests.firmware.vm import run_scenario

pytestmark = pytest.mark.timeout(60)

QUALITY = {0: Quality.GOOD, 1: Quality.BAD, 2: Quality.UNCERTAIN, 3: Quality.FORCED,
           4: Quality.SUBSTITUTED}


def tag(o: Any) -> Any:
    """A value as the tagged JSON the VM scenario rebuilds (cbor_vectors.py)."""
    if o is None:
        return ["n"]
    if o is True:
        return ["t"]
    if o is False:
        return ["F"]
    if isinstance(o, int):
        return ["i", o]
    if isinstance(o, float):
        return ["f", struct.pack(">d", o).hex()]
    if isinstance(o, str):  # as UTF-8 hex: MicroPython's json does not join surrogate pairs
        return ["s", o.encode().hex()]
    if isinstance(o, bytes):
        return ["b", o.hex()]
    if isinstance(o, list):
        return ["a", [tag(x) for x in o]]
    return ["m", [[tag(k), tag(v)] for k, v in o.items()]]


def floats() -> list[float]:
    r = random.Random(7)
    out = [0.0, -0.0, 1.0, -1.0, 1.5, 0.1, 24.37, 65504.0, 65505.0, 65520.0, 100000.0,
           2.0**-24, 2.0**-25, 3 * 2.0**-24, 2.0**-14, 6.0e-8, 1e-7, 3.4028234663852886e38,
           1.17549435e-38, 1e300, -1e-300, 5e-324, math.inf, -math.inf, math.nan]
    for _ in range(150):
        out.append(struct.unpack(">e", r.getrandbits(16).to_bytes(2, "big"))[0])
        out.append(struct.unpack(">f", r.getrandbits(32).to_bytes(4, "big"))[0])
        out.append(r.uniform(-1e4, 1e4))
    return out


VALUES: list[Any] = [
    0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1,
    -1, -24, -25, -256, -257, -(2**32), -(2**64),
    "", "a", "1.0", "é€😀", b"", b"\x00\xff", [], [1, [2, [3]]], {},
    {0: "1.0", 7: [1], 2: 3, 1: 0}, {"b": 1, "a": 2, "aa": 3, 10: 4, -1: 5},
    True, False, None, *floats(),
]
BAD = ["", "18", "1a0000", "9f01ff", "c11a00000000", "a201010102", "0102", "f8ff",
       "81" * 12 + "00", "62c3"]


@pytest.fixture(scope="module")
def vm_result() -> dict[str, Any]:
    points = [(0, "inlet_temp_c", "degC", 0), (1, "outlet_temp_c", "degC", 0),
              (2, "leak", "", 2), (300, "überlauf", "°C", 1), (65535, "x" * 30, "", 2)]
    data = {
        "encode": [tag(v) for v in VALUES],
        "decode": [cbor2.dumps(v, canonical=True).hex() for v in VALUES]
                  + [cbor2.dumps(v).hex() for v in (1.5, 0.1, {3: 1, 1: 2})],
        "bad": BAD,
        "births": [{"points": points, "session": s, "time_ms": t}
                   for s, t in ((1, 1_796_529_600_000), (2**40, 0), (0, 2**64 - 1))],
        "batches": [{"session": s, "seq": q, "base_ms": b, "frames": frames}
                    for s, q, b, frames in BATCHES],
    }
    return run_scenario("cbor_vectors", data)


def _frames() -> list[Any]:
    r = random.Random(3)
    out = []
    offset = 0
    for _ in range(12):
        samples = []
        for alias in range(6):
            q = r.choice([0, 0, 0, 1, 2, 3, 4])
            v = None if q == 1 and r.random() < 0.5 else r.choice(
                [r.uniform(-50, 150), 0.0, 1.0, float(r.randrange(1000)), 1e300])
            samples.append([alias, tag(v), q])
        out.append([offset, samples])
        offset += r.choice([1, 99, 100, 101, 70000])
    return out


BATCHES = [(1, 0, 1_796_529_600_000, _frames()), (2**40, 2**63, 0, _frames()[:1]),
           (7, 3, 5, [[0, [[0, ["f", struct.pack(">d", 24.37).hex()], 0]]]])]


def untag(v: Any) -> Any:
    kind = v[0]
    if kind == "i":
        return v[1]
    if kind == "s":
        return bytes.fromhex(v[1]).decode()
    if kind == "f":
        return struct.unpack(">d", bytes.fromhex(v[1]))[0]
    if kind == "b":
        return bytes.fromhex(v[1])
    if kind == "a":
        return [untag(x) for x in v[1]]
    if kind == "m":
        return {untag(k): untag(x) for k, x in v[1]}
    return {"n": None, "t": True, "F": False}[kind]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def test_firmware_encoding_equals_cbor2_canonical(vm_result: dict[str, Any]) -> None:
    assert len(vm_result["encoded"]) == len(VALUES)
    for v, got in zip(VALUES, vm_result["encoded"], strict=True):
        assert got == cbor2.dumps(v, canonical=True).hex(), repr(v)
        assert same(cbor2.loads(bytes.fromhex(got)), v), repr(v)


def test_firmware_decodes_cbor2(vm_result: dict[str, Any]) -> None:
    expected = [*VALUES, 1.5, 0.1, {3: 1, 1: 2}]
    for v, got in zip(expected, vm_result["decoded"], strict=True):
        assert same(untag(got), v), (v, got)


def test_firmware_decoder_refuses_what_it_cannot_read(vm_result: dict[str, Any]) -> None:
    for raw, why in zip(BAD, vm_result["refused"], strict=True):
        assert why is not None, f"{raw} was accepted"
    assert "truncated" in vm_result["refused"][0]
    assert "tags" in vm_result["refused"][4]
    assert "duplicate" in vm_result["refused"][5]
    assert "after the CBOR item" in vm_result["refused"][6]
    assert "deeper" in vm_result["refused"][8]


def test_firmware_birth_is_the_runtimes(vm_result: dict[str, Any]) -> None:
    types = {0: PointType.FLOAT, 1: PointType.INT, 2: PointType.BOOL}
    for case, got in zip(vm_result_births(), vm_result["births"], strict=True):
        points, session, time_ms = case
        defs = [PointDef(a, n, u, types[c]) for a, n, u, c in points]
        want = encode_birth(defs, session=session, time_ms=time_ms)
        assert got == want.hex()
        birth = decode_birth(bytes.fromhex(got))
        assert birth.points == tuple(defs) and birth.session == session


def vm_result_births() -> list[tuple[Any, int, int]]:
    points = [(0, "inlet_temp_c", "degC", 0), (1, "outlet_temp_c", "degC", 0),
              (2, "leak", "", 2), (300, "überlauf", "°C", 1), (65535, "x" * 30, "", 2)]
    return [(points, 1, 1_796_529_600_000), (points, 2**40, 0), (points, 0, 2**64 - 1)]


def test_firmware_batches_are_the_runtimes(vm_result: dict[str, Any]) -> None:
    for (session, seq, base, frames), got in zip(BATCHES, vm_result["batches"], strict=True):
        samples = [(alias, Sample(untag(v), QUALITY[q], (base + offset) / 1000))
                   for offset, pairs in frames for alias, v, q in pairs]
        # the runtime's own encoder, from the same samples: the same bytes
        want = encode_samples(samples, session=session, seq=seq)
        assert got == want.hex()
        batch = decode_batch(bytes.fromhex(got))
        assert (batch.session, batch.seq, batch.base_ms) == (session, seq, base)
        assert len(batch.samples) == len(samples)
        for s, (alias, sample) in zip(batch.samples, samples, strict=True):
            assert s.alias == alias and s.quality == sample.quality
            assert same(s.value, None if sample.value is None else float(sample.value))
