"""CBOR telemetry for `pswd/v1/{site}/{node}/telemetry`: batches and birth certificates. Sans-IO.

Both are one CBOR map with small unsigned-integer keys (RFC 8949, deterministic encoding:
shortest integers and floats, keys sorted). Every key of its kind is required; unknown keys
are rejected, because the format evolves through PSWD_version, not through silent extras.

  key  name          CBOR        in     meaning
  0    PSWD_version  text "1.0"  both
  1    kind          uint        both   0 = batch, 1 = birth
  2    session       uint64      both   session sequence (bdSeq-like): +1 on every birth
  3    seq           uint64      batch  0 for the first batch after a birth, +1 per batch
  4    time_ms       uint64      both   UTC epoch ms: batch base time / birth time
  5    historical    bool        batch  true on store-and-forward replay
  6    frames        array       batch  [offset_ms, alias, value, alias, value, ...] each
  7    points        array       birth  [alias, name, unit, data type code] each

seq is 64-bit and never wraps (at 10 batches/s that takes 58 billion years), instead of
Sparkplug's 0..255: a receiver can tell a gap from a duplicate however long the link was down,
for at most 8 bytes per batch. (session, seq) names a batch uniquely. Replayed data is
re-encoded under the current session with historical = true, so aliases always refer to the
birth of the session the batch carries.

A frame groups the samples taken at one instant (one scan): its offset_ms (uint32, from
time_ms) is written once, then alias/value pairs. Timestamps keep 1 ms resolution, finer than
the 100 ms the spec asks of power monitoring. A value is a bare number for a GOOD sample, else
[number or null, quality code]. Floats take their shortest exact CBOR form, so a sample
needing a full float64 costs 10 bytes (alias < 24), 11 (alias < 256) or 12, plus its share of
the frame offset. Aliases are uint16, declared in the birth. Sample.reason does not travel
(alarms carry reasons).

  quality codes    0 good, 1 bad, 2 uncertain, 3 forced, 4 substituted
  data type codes  0 float, 1 int, 2 bool
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import cbor2

from edge_runtime import PSWD_VERSION
from edge_runtime.core.points import Quality, Sample

KEY_VERSION, KEY_KIND, KEY_SESSION, KEY_SEQ = 0, 1, 2, 3
KEY_TIME, KEY_HISTORICAL, KEY_FRAMES, KEY_POINTS = 4, 5, 6, 7
KIND_BATCH, KIND_BIRTH = 0, 1
_BATCH_KEYS = {KEY_VERSION, KEY_KIND, KEY_SESSION, KEY_SEQ, KEY_TIME, KEY_HISTORICAL, KEY_FRAMES}
_BIRTH_KEYS = {KEY_VERSION, KEY_KIND, KEY_SESSION, KEY_TIME, KEY_POINTS}

QUALITY_CODES: dict[Quality, int] = {Quality.GOOD: 0, Quality.BAD: 1, Quality.UNCERTAIN: 2,
                                     Quality.FORCED: 3, Quality.SUBSTITUTED: 4}
_QUALITIES = {code: q for q, code in QUALITY_CODES.items()}

U16, U32, U64 = 2**16, 2**32, 2**64
MAX_FRAME_BYTES = 1024 * 1024  # ~90,000 samples; bounds what a peer can make us decode
_MAX_DEPTH = 4  # map > frames > frame > [value, quality]


class TelemetryError(ValueError):
    """A batch or birth that cannot be encoded or decoded; the message says why and where."""


class PointType(StrEnum):
    """Engineering data type of a point, declared at birth (code in DATA_TYPE_CODES)."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"


DATA_TYPE_CODES: dict[PointType, int] = {PointType.FLOAT: 0, PointType.INT: 1, PointType.BOOL: 2}
_DATA_TYPES = {code: t for t, code in DATA_TYPE_CODES.items()}


@dataclass(frozen=True, slots=True)
class PointDef:
    """One point of a birth certificate: the alias batches use for it."""

    alias: int
    name: str
    unit: str
    data_type: PointType = PointType.FLOAT


@dataclass(frozen=True, slots=True)
class Birth:
    """A birth certificate: the aliases valid for one session of a node.

    A receiver keeps one Birth per (node, session) and decodes every batch of that session
    against it, so the alias map is built once here, not per batch: a batch then costs the
    same from a node of 10 points or 10,000 (bench/scaling.py).
    """

    session: int
    time_ms: int
    points: tuple[PointDef, ...]
    _aliases: Mapping[int, PointDef] = field(init=False, repr=False, compare=False,
                                             hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_aliases", {p.alias: p for p in self.points})

    def by_alias(self) -> Mapping[int, PointDef]:
        """Alias -> point definition (built once, with the birth)."""
        return self._aliases


@dataclass(frozen=True, slots=True)
class TelemetrySample:
    """One sample in a batch: alias, value (None if there is none), quality, ms from base."""

    alias: int
    value: float | None
    quality: Quality
    offset_ms: int

    def to_sample(self, base_ms: int) -> Sample:
        """The core Sample, with its timestamp back in UTC epoch seconds."""
        return Sample(self.value, self.quality, (base_ms + self.offset_ms) / 1000)


@dataclass(frozen=True, slots=True)
class Batch:
    """A telemetry batch: sequence numbers, base time, samples in frame order."""

    session: int
    seq: int
    base_ms: int
    samples: tuple[TelemetrySample, ...]
    historical: bool = False

    def named(self, birth: Birth) -> Iterator[tuple[str, Sample]]:
        """(point name, Sample) pairs, names taken from the birth of this batch's session."""
        points = birth.by_alias()
        for s in self.samples:
            yield points[s.alias].name, s.to_sample(self.base_ms)


def declare_points(points: Iterable[tuple[str, str, PointType]]) -> tuple[PointDef, ...]:
    """PointDefs for (name, unit, type) in order, aliases 0, 1, 2, ..."""
    return tuple(PointDef(i, name, unit, t) for i, (name, unit, t) in enumerate(points))


def make_batch(samples: Iterable[tuple[int, Sample]], *, session: int, seq: int,
               historical: bool = False) -> Batch:
    """A Batch from (alias, core Sample) pairs; the base time is the earliest sample, in ms."""
    pairs = [(alias, s, round(s.ts * 1000)) for alias, s in samples]
    base = min((ms for _, _, ms in pairs), default=0)
    return Batch(session, seq, base, tuple(TelemetrySample(alias, s.value, s.quality, ms - base)
                                           for alias, s, ms in pairs), historical)


# --- encoding --------------------------------------------------------------------------------

def _check_uint(value: Any, limit: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        raise TelemetryError(f"{what}: expected an integer 0..{limit - 1}, got {_show(value)}")
    return value


def _dumps(obj: dict[int, Any]) -> bytes:
    data = cbor2.dumps(obj, canonical=True)  # canonical: shortest float that is still exact
    if len(data) > MAX_FRAME_BYTES:
        raise TelemetryError(f"encoded size {len(data)} bytes exceeds {MAX_FRAME_BYTES}; "
                             f"split the batch")
    return data


def _encode_value(s: TelemetrySample, where: str) -> Any:
    if s.value is not None and (isinstance(s.value, bool)
                                or not isinstance(s.value, int | float)):
        raise TelemetryError(f"{where}: value must be a number or None, got {_show(s.value)}")
    if s.quality not in QUALITY_CODES:
        raise TelemetryError(f"{where}: unknown quality {s.quality!r}")
    if QUALITY_CODES[s.quality] == 0 and s.value is not None:
        return float(s.value)  # one wire type per value, whatever Python number came in
    return [None if s.value is None else float(s.value), QUALITY_CODES[s.quality]]


def encode_batch(batch: Batch) -> bytes:
    """CBOR bytes of a batch; consecutive samples with the same offset share one frame."""
    frames: list[list[Any]] = []
    for i, s in enumerate(batch.samples):
        where = f"sample {i}"
        _check_uint(s.alias, U16, f"{where}: alias")
        _check_uint(s.offset_ms, U32, f"{where}: offset_ms")
        if not frames or frames[-1][0] != s.offset_ms:
            frames.append([s.offset_ms])
        frames[-1] += [s.alias, _encode_value(s, where)]
    return _dumps({
        KEY_VERSION: PSWD_VERSION, KEY_KIND: KIND_BATCH,
        KEY_SESSION: _check_uint(batch.session, U64, "session"),
        KEY_SEQ: _check_uint(batch.seq, U64, "seq"),
        KEY_TIME: _check_uint(batch.base_ms, U64, "base_ms"),
        KEY_HISTORICAL: bool(batch.historical), KEY_FRAMES: frames,
    })


def encode_samples(samples: Sequence[tuple[int, Sample]], *, session: int, seq: int,
                   historical: bool = False) -> bytes:
    """The bytes of encode_batch(make_batch(samples, ...)), without the objects in between.

    The node's hot path: a GOOD float with a uint16 alias (nearly every sample) goes straight
    into its frame, about a fifth of the cost of the general path; anything else takes the
    checks of encode_batch, with the same errors. tests/test_telemetry_codec.py checks the
    bytes are the same.
    """
    stamps = [round(s.ts * 1000) for _, s in samples]
    base = min(stamps, default=0)
    frames: list[list[Any]] = []
    frame: list[Any] = []
    last = -1
    good = Quality.GOOD
    for i, ((alias, s), ms) in enumerate(zip(samples, stamps, strict=True)):
        offset = ms - base
        if offset != last:
            frame = [_check_uint(offset, U32, f"sample {i}: offset_ms")]
            frames.append(frame)
            last = offset
        value = s.value
        if type(value) is float and s.quality is good and type(alias) is int and 0 <= alias < U16:
            frame += (alias, value)
        else:
            where = f"sample {i}"
            _check_uint(alias, U16, f"{where}: alias")
            frame += (alias, _encode_value(TelemetrySample(alias, value, s.quality, offset),
                                           where))
    return _dumps({
        KEY_VERSION: PSWD_VERSION, KEY_KIND: KIND_BATCH,
        KEY_SESSION: _check_uint(session, U64, "session"),
        KEY_SEQ: _check_uint(seq, U64, "seq"),
        KEY_TIME: _check_uint(base, U64, "base_ms"),
        KEY_HISTORICAL: bool(historical), KEY_FRAMES: frames,
    })


def encode_birth(points: Sequence[PointDef], *, session: int, time_ms: int) -> bytes:
    """CBOR bytes of a birth certificate declaring these aliases for the session."""
    _check_points(points)
    return _dumps({
        KEY_VERSION: PSWD_VERSION, KEY_KIND: KIND_BIRTH,
        KEY_SESSION: _check_uint(session, U64, "session"),
        KEY_TIME: _check_uint(time_ms, U64, "time_ms"),
        KEY_POINTS: [[p.alias, p.name, p.unit, DATA_TYPE_CODES[p.data_type]] for p in points],
    })


def _check_points(points: Sequence[PointDef]) -> None:
    aliases: set[int] = set()
    names: set[str] = set()
    for i, p in enumerate(points):
        where = f"point {i}"
        _check_uint(p.alias, U16, f"{where}: alias")
        if not isinstance(p.name, str) or not p.name:
            raise TelemetryError(f"{where}: name must be non-empty text, got {_show(p.name)}")
        if not isinstance(p.unit, str):
            raise TelemetryError(f"{where} ({p.name}): unit must be text, got {_show(p.unit)}")
        if p.data_type not in DATA_TYPE_CODES:
            raise TelemetryError(f"{where} ({p.name}): unknown data type {p.data_type!r}")
        if p.alias in aliases:
            raise TelemetryError(f"{where} ({p.name}): alias {p.alias} declared twice")
        if p.name in names:
            raise TelemetryError(f"{where}: point name {p.name!r} declared twice")
        aliases.add(p.alias)
        names.add(p.name)


# --- decoding --------------------------------------------------------------------------------

def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _load(data: bytes | bytearray | memoryview, kind: int) -> dict[int, Any]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TelemetryError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_FRAME_BYTES:
        raise TelemetryError(f"{len(data)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    fp = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(fp, max_depth=_MAX_DEPTH, allow_duplicate_keys=False).decode()
    except cbor2.CBORDecodeEOF:
        raise TelemetryError(f"truncated: {len(data)} bytes end inside a CBOR item") from None
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # semantic tags (dates, decimals, ...) are decoded by cbor2 and can fail in many ways
        raise TelemetryError(f"not valid CBOR: {exc}") from None
    if fp.tell() != len(data):
        raise TelemetryError(f"{len(data) - fp.tell()} bytes after the end of the CBOR item")
    if not isinstance(obj, dict):
        raise TelemetryError(f"expected a CBOR map, got {_show(obj)}")
    if bad := [k for k in obj if type(k) is not int]:  # 1.0 would otherwise pass for 1
        raise TelemetryError(f"map keys must be integers, got {_show(bad[0])}")
    keys = _BATCH_KEYS if kind == KIND_BATCH else _BIRTH_KEYS
    got = obj.get(KEY_KIND)
    if type(got) is not int or got != kind:
        want = "batch" if kind == KIND_BATCH else "birth"
        raise TelemetryError(f"key {KEY_KIND} (kind): expected {kind} ({want}), got {_show(got)}")
    if obj.get(KEY_VERSION) != PSWD_VERSION:
        raise TelemetryError(f"key {KEY_VERSION} (PSWD_version): expected '{PSWD_VERSION}', "
                             f"got {_show(obj.get(KEY_VERSION))}")
    if missing := keys - obj.keys():
        raise TelemetryError(f"missing key(s) {sorted(missing)}")
    if extra := obj.keys() - keys:
        raise TelemetryError(f"unknown key(s) {sorted(extra, key=repr)}")
    return obj


def _decode_value(raw: Any, where: str) -> tuple[float | None, Quality]:
    if isinstance(raw, list):
        if len(raw) != 2:
            raise TelemetryError(f"{where}: expected [value, quality], got {len(raw)} items")
        value, code = raw
        if isinstance(code, bool) or not isinstance(code, int) or code not in _QUALITIES:
            raise TelemetryError(f"{where}: unknown quality code {_show(code)}")
        return (None if value is None else _number(value, where)), _QUALITIES[code]
    return _number(raw, where), Quality.GOOD


def _number(raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise TelemetryError(f"{where}: value must be a number, got {_show(raw)}")
    try:
        return float(raw)  # other encoders (firmware) may send integers
    except OverflowError:
        raise TelemetryError(f"{where}: value {raw} overflows a float") from None


def decode_batch(data: bytes | bytearray | memoryview, *, birth: Birth | None = None) -> Batch:
    """A Batch from CBOR bytes; with the session's birth, unknown aliases are refused too."""
    obj = _load(data, KIND_BATCH)
    session = _check_uint(obj[KEY_SESSION], U64, "key 2 (session)")
    if birth is not None and birth.session != session:
        raise TelemetryError(f"batch of session {session}, but the birth is of session "
                             f"{birth.session}: aliases may differ")
    known = birth.by_alias() if birth is not None else None
    historical = obj[KEY_HISTORICAL]
    if not isinstance(historical, bool):
        raise TelemetryError(f"key 5 (historical): expected a bool, got {_show(historical)}")
    frames = obj[KEY_FRAMES]
    if not isinstance(frames, list):
        raise TelemetryError(f"key 6 (frames): expected an array, got {_show(frames)}")
    samples: list[TelemetrySample] = []
    for f, frame in enumerate(frames):
        if not isinstance(frame, list) or len(frame) % 2 != 1:
            raise TelemetryError(f"frame {f}: expected [offset_ms, alias, value, ...], "
                                 f"got {_show(frame)}")
        offset = _check_uint(frame[0], U32, f"frame {f}: offset_ms")
        for i in range(1, len(frame), 2):
            where = f"frame {f}, sample {i // 2}"
            alias = _check_uint(frame[i], U16, f"{where}: alias")
            if known is not None and alias not in known:
                raise TelemetryError(f"{where}: unknown alias {alias} "
                                     f"(not in the birth of session {session})")
            value, quality = _decode_value(frame[i + 1], where)
            samples.append(TelemetrySample(alias, value, quality, offset))
    return Batch(session, _check_uint(obj[KEY_SEQ], U64, "key 3 (seq)"),
                 _check_uint(obj[KEY_TIME], U64, "key 4 (time_ms)"), tuple(samples), historical)


def decode_birth(data: bytes | bytearray | memoryview) -> Birth:
    """A Birth from CBOR bytes, checked: unique aliases and names, known data types."""
    obj = _load(data, KIND_BIRTH)
    raw_points = obj[KEY_POINTS]
    if not isinstance(raw_points, list):
        raise TelemetryError(f"key 7 (points): expected an array, got {_show(raw_points)}")
    points: list[PointDef] = []
    for i, raw in enumerate(raw_points):
        if not isinstance(raw, list) or len(raw) != 4:
            raise TelemetryError(f"point {i}: expected [alias, name, unit, type], "
                                 f"got {_show(raw)}")
        alias, name, unit, code = raw
        if isinstance(code, bool) or not isinstance(code, int) or code not in _DATA_TYPES:
            raise TelemetryError(f"point {i}: unknown data type code {_show(code)}")
        points.append(PointDef(alias, name, unit, _DATA_TYPES[code]))
    _check_points(points)
    return Birth(_check_uint(obj[KEY_SESSION], U64, "key 2 (session)"),
                 _check_uint(obj[KEY_TIME], U64, "key 4 (time_ms)"), tuple(points))

