"""The telemetry side of a scan: what changed, and how it is cut into CBOR batches. Sans-IO.

TelemetryRecorder is a ControlBlock that runs last in every scan and only reads the image: it
keeps each new input sample (a new Sample object from a driver, with its source timestamp)
and each output whose value or quality changed (stamped with the scan's wall time). The link
takes what it recorded every telemetry period and cuts it into batches with split_batches.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator, Mapping
from typing import Any

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
    make_batch,
)

MAX_BATCH_SAMPLES = 1_000  # ~12 kB of CBOR, ~4 ms to encode: one slice of loop time
MAX_OFFSET_MS = 2**32 - 1  # a frame offset is a uint32 of ms from the batch base


class TelemetryRecorder:
    """Last block of the scan: collects new input samples and changed outputs. No I/O."""

    name = "telemetry"

    def __init__(self, points: tuple[PointDef, ...], inputs: Mapping[str, Any],
                 wall: Callable[[], float], max_pending: int = 1_000_000) -> None:
        alias = {p.name: p.alias for p in points}
        self._inputs = [(n, alias[n]) for n in sorted(inputs)]
        self._outputs = [(p.name, p.alias) for p in points if p.name not in inputs]
        self._wall = wall
        self._last_in: dict[str, Sample] = {}
        self._last_out: dict[str, tuple[float, Quality]] = {}
        self.pending: list[tuple[int, Sample]] = []
        self.max_pending = max_pending
        self.dropped = 0

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Record what changed in this scan."""
        inputs, last_in, pending = image.inputs, self._last_in, self.pending
        for name, alias in self._inputs:
            s = inputs.get(name)
            # Samples are immutable and latched by reference: `is` finds the unchanged ones.
            if s is None or s is last_in.get(name) or s.ts <= 0:
                continue
            last_in[name] = s
            pending.append((alias, s))
        if self._outputs:
            ts = self._wall()
            outputs, quality = image.outputs, image.output_quality
            for name, alias in self._outputs:
                now_out = (outputs[name], quality.get(name, Quality.GOOD))
                if self._last_out.get(name) != now_out:
                    self._last_out[name] = now_out
                    pending.append((alias, Sample(now_out[0], now_out[1], ts)))
        if len(pending) > self.max_pending:  # the link task is stuck: keep the newest
            excess = len(pending) - self.max_pending
            del pending[:excess]
            self.dropped += excess

    def take(self) -> list[tuple[int, Sample]]:
        """Everything recorded since the last take, oldest first."""
        out, self.pending = self.pending, []
        return out


def split_batches(samples: list[tuple[int, Sample]], *, session: int, first_seq: int,
                  max_samples: int = MAX_BATCH_SAMPLES) -> Iterator[Batch]:
    """Samples in time order, cut into batches that fit the codec (size, 32-bit offsets);
    made one at a time, so the caller can yield to the loop between them."""
    samples = sorted(samples, key=lambda a_s: a_s[1].ts)
    start = n = 0
    while start < len(samples):
        base = round(samples[start][1].ts * 1000)
        end = start + 1
        limit = min(len(samples), start + max_samples)
        while end < limit and round(samples[end][1].ts * 1000) - base <= MAX_OFFSET_MS:
            end += 1
        yield make_batch(samples[start:end], session=session, seq=first_seq + n)
        n += 1
        start = end


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
