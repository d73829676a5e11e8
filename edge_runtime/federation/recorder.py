"""The telemetry side of a scan: what changed, and how it is cut into CBOR batches. Sans-IO.

TelemetryRecorder is a ControlBlock that runs last in every scan and only reads the image: it
keeps each new input sample (a new Sample object from a driver, with its source timestamp)
and each output whose value or quality changed (stamped with the scan's wall time). The link
takes what it recorded every telemetry period and encodes it with encode_batches.

Cost, so a 10 ms scan holds 5,000 points and more with telemetry on (bench/scaling.py): in
the scan, two sweeps in C (each latched input against the last scan's by identity, each
output against its last value) and the changed names and samples kept as two lists; aliases
are looked up and output Samples made only when the link iterates what it took. Off the
scan: encode_batches makes one batch per step (at most MAX_BATCH_SAMPLES samples, sorted and
encoded in 0.2-0.4 ms), so the link yields to the loop between batches and a scan waits for
one short slice at most.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import compress, islice, repeat
from operator import is_not, ne, or_
from typing import Any, NamedTuple

import cbor2

from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality, Sample
from edge_runtime.messages.telemetry import (
    KEY_FRAMES,
    KEY_HISTORICAL,
    KEY_KIND,
    KEY_SEQ,
    KEY_SESSION,
    KIND_BATCH,
    Batch,
    PointDef,
    TelemetryError,
    encode_samples,
    make_batch,
)

log = logging.getLogger(__name__)
MAX_BATCH_SAMPLES = 500  # ~6 kB of CBOR, ~0.3 ms to sort and encode: one slice of loop time
MAX_OFFSET_MS = 2**32 - 1  # a frame offset is a uint32 of ms from the batch base


# What changed in one scan: names and input samples, or names, output values, their
# qualities and the scan's wall time (the Samples are made when the link reads them).
_Group = tuple[list[str], Sequence[Any], list[Quality] | None, float]


class Recorded:
    """What the recorder kept since the last take, oldest first, scan by scan. Iterating
    gives (alias, Sample) pairs, made only then (by the link, between scans); points never
    read (source time 0) are left out there."""

    def __init__(self, groups: list[_Group], aliases: Mapping[str, int]) -> None:
        self.groups = groups
        self._aliases = aliases

    def __len__(self) -> int:
        """Samples kept (those never read included)."""
        return sum(len(g[0]) for g in self.groups)

    def __iter__(self) -> Iterator[tuple[int, Sample]]:
        aliases = self._aliases
        for names, items, qualities, ts in self.groups:
            if qualities is not None:  # outputs
                for name, value, q in zip(names, items, qualities, strict=True):
                    yield aliases[name], Sample(value, q, ts)
                continue
            for name, s in zip(names, items, strict=True):
                alias = aliases.get(name)
                if alias is not None and s.ts > 0:  # not a point of ours; never read
                    yield alias, s


class TelemetryRecorder:
    """Last block of the scan: collects new input samples and changed outputs. No I/O.

    Both sweeps run in C (map/compress over the image's values beside the last scan's), and
    what changed is kept as two lists per scan, so the Python work in the scan does not grow
    with the points. They rely on an order that holds: the latched inputs are a copy of the
    drivers' table, whose keys are only ever added, and the outputs are fixed at start.
    Should the input keys differ from the last scan's, every input is looked at once."""

    name = "telemetry"

    def __init__(self, points: tuple[PointDef, ...], inputs: Mapping[str, Any],
                 wall: Callable[[], float], max_pending: int = 1_000_000) -> None:
        self._alias = {p.name: p.alias for p in points}
        self._outputs = frozenset(p.name for p in points if p.name not in inputs)
        self._wall = wall
        self._in_keys: tuple[str, ...] = ()
        self._in_last: Mapping[str, Sample] = {}  # the inputs latched at the last step
        self._out_keys: tuple[str, ...] = ()
        self._out_values: tuple[float, ...] = ()
        self._out_qualities: tuple[Quality | None, ...] = ()
        self._groups: list[_Group] = []
        self._count = 0
        self.max_pending = max_pending
        self.dropped = 0

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Record what changed in this scan."""
        self._record_inputs(image.inputs)
        if self._outputs:
            self._record_outputs(image)
        if self._count > self.max_pending:  # the link task is stuck: keep the newest
            self._drop_oldest(self._count - self.max_pending)

    def _keep(self, names: list[str], items: Sequence[Any], qualities: list[Quality] | None,
              ts: float = 0.0) -> None:
        if names:
            self._groups.append((names, items, qualities, ts))
            self._count += len(names)

    def _record_inputs(self, inputs: Mapping[str, Sample]) -> None:
        last, keys = self._in_last, tuple(inputs)
        self._in_last = inputs
        if keys == self._in_keys:
            # Samples are immutable and latched by reference: `is not` finds the new ones.
            mask = list(map(is_not, inputs.values(), last.values()))
            self._keep(list(compress(keys, mask)), list(compress(inputs.values(), mask)), None)
            return
        self._in_keys = keys
        new = [(n, s) for n, s in inputs.items() if s is not last.get(n) and n in self._alias]
        self._keep([n for n, _ in new], [s for _, s in new], None)

    def _record_outputs(self, image: ProcessImage) -> None:
        outputs, quality = image.outputs, image.output_quality
        if len(outputs) != len(self._out_keys):  # the first scan
            self._out_keys = tuple(outputs)
            self._out_values = (math.nan,) * len(outputs)  # unequal to any value
            self._out_qualities = (None,) * len(outputs)
        keys = self._out_keys
        values = tuple(outputs.values())
        if tuple(quality) == keys:  # the usual case: one entry per output, in order
            qualities: tuple[Quality, ...] = tuple(quality.values())
        else:
            qualities = tuple(map(quality.get, keys, repeat(Quality.GOOD)))
        if values == self._out_values and qualities == self._out_qualities:
            return
        changed = [i for i in compress(range(len(keys)), map(
            or_, map(ne, values, self._out_values), map(is_not, qualities, self._out_qualities)))
            if keys[i] in self._outputs]
        self._out_values, self._out_qualities = values, qualities
        self._keep([keys[i] for i in changed], [values[i] for i in changed],
                   [qualities[i] for i in changed], self._wall())

    def _drop_oldest(self, excess: int) -> None:
        self._count -= excess
        self.dropped += excess
        groups = self._groups
        while excess:
            names, items, qualities, ts = groups[0]
            if len(names) <= excess:
                excess -= len(names)
                del groups[0]
            else:
                groups[0] = (names[excess:], items[excess:],
                             None if qualities is None else qualities[excess:], ts)
                excess = 0

    def take(self) -> Recorded:
        """Everything recorded since the last take, oldest first."""
        out = Recorded(self._groups, self._alias)
        self._groups, self._count = [], 0
        return out


class EncodedBatch(NamedTuple):
    """One CBOR batch and the number of samples in it."""

    payload: bytes
    samples: int


def _ts(alias_sample: tuple[int, Sample]) -> float:
    return alias_sample[1].ts


def _chunks(samples: Iterable[tuple[int, Sample]],
            max_samples: int) -> Iterator[list[tuple[int, Sample]]]:
    """Consecutive runs of at most max_samples recorded samples, each sorted by time and cut
    where an offset would pass a uint32 of ms (what is cut off opens the next run). Sorting
    run by run keeps every step short; a point's samples stay in order across runs."""
    source = iter(samples)
    rest: list[tuple[int, Sample]] = []
    while True:
        run = sorted([*rest, *islice(source, max_samples - len(rest))], key=_ts)
        if not run:
            return
        base = round(run[0][1].ts * 1000)
        cut = len(run)
        if round(run[-1][1].ts * 1000) - base > MAX_OFFSET_MS:
            cut = next(k for k, (_, s) in enumerate(run)
                       if round(s.ts * 1000) - base > MAX_OFFSET_MS)
        rest = run[cut:]
        yield run[:cut]


def encode_batches(samples: Iterable[tuple[int, Sample]], *, session: int, first_seq: int,
                   max_samples: int = MAX_BATCH_SAMPLES) -> Iterator[EncodedBatch]:
    """Recorded samples as CBOR batches that fit the codec (size, 32-bit offsets), encoded one
    per step, so the caller can yield to the loop between them."""
    for n, run in enumerate(_chunks(samples, max_samples)):
        try:
            payload = encode_samples(run, session=session, seq=first_seq + n)
        except TelemetryError:  # a driver's bad value: drop that sample, not the batch
            run = _encodable(run)
            payload = encode_samples(run, session=session, seq=first_seq + n)
        if run:
            yield EncodedBatch(payload, len(run))


def split_batches(samples: Iterable[tuple[int, Sample]], *, session: int, first_seq: int,
                  max_samples: int = MAX_BATCH_SAMPLES) -> Iterator[Batch]:
    """The batches of encode_batches, not encoded (for tests and tools)."""
    for n, run in enumerate(_chunks(samples, max_samples)):
        yield make_batch(run, session=session, seq=first_seq + n)


def _encodable(run: list[tuple[int, Sample]]) -> list[tuple[int, Sample]]:
    kept = []
    for alias, s in run:
        try:
            encode_samples([(alias, s)], session=0, seq=0)
        except TelemetryError as exc:
            log.error("telemetry: sample of alias %d dropped: %s", alias, exc)
        else:
            kept.append((alias, s))
    return kept


def fingerprint(points: tuple[PointDef, ...]) -> str:
    """Identifies an alias table: stored batches are re-encoded only under the same one."""
    text = "\n".join(f"{p.alias}\t{p.name}\t{p.unit}\t{p.data_type.value}" for p in points)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resequence(payload: bytes, *, session: int, seq: int, historical: bool) -> bytes:
    """A stored batch under a new (session, seq, historical), without decoding its samples.

    encode_batch() writes a canonical CBOR map of 7 entries, keys 0..6 in order, frames last:
    the header entries are re-encoded and the frames' bytes kept as they are, so a batch costs
    microseconds to renumber instead of a full decode and encode. The result equals
    encode_batch() of the renumbered batch (tests/test_link_recorder.py checks it). ValueError
    if the payload is not laid out that way.
    """
    if payload[:1] != b"\xa7":
        raise ValueError("not a 7-entry CBOR map")
    fp = io.BytesIO(payload)
    fp.seek(1)
    decoder = cbor2.CBORDecoder(fp)
    head: list[Any] = []
    try:
        for key in range(KEY_FRAMES + 1):
            if decoder.decode() != key:
                raise ValueError(f"key {key} expected in order")
            if key < KEY_FRAMES:
                head.append(decoder.decode())
    except cbor2.CBORError as exc:
        raise ValueError(f"not a telemetry batch: {exc}") from None
    if head[KEY_KIND] != KIND_BATCH:
        raise ValueError("not a telemetry batch")
    head[KEY_SESSION], head[KEY_SEQ], head[KEY_HISTORICAL] = session, seq, bool(historical)
    parts = [b"\xa7"]
    for key, value in enumerate(head):
        parts += [cbor2.dumps(key), cbor2.dumps(value, canonical=True)]
    parts += [cbor2.dumps(KEY_FRAMES), payload[fp.tell():]]
    return b"".join(parts)
