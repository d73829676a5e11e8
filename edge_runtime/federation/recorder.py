"""The telemetry side of a scan: what changed, and how it is cut into CBOR batches. Sans-IO.

TelemetryRecorder is a ControlBlock that runs last in every scan and only reads the image: it
keeps each new input sample (a new Sample object from a driver, with its source timestamp)
and each output whose value or quality changed (stamped with the scan's wall time). The link
takes what it recorded every telemetry period and cuts it into batches with split_batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality, Sample
from edge_runtime.messages.telemetry import Batch, PointDef, make_batch

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
