"""Sequence-number bookkeeping for telemetry receivers in the benchmarks.

A node numbers its batches 0, 1, 2, ... within a session (a new session after every
reconnect, see federation/link.py). A receiver that saw everything has, for every
(node, session), each seq from 0 to the last exactly once and in increasing order. This counts
what differs: gaps (seqs never received, from 0 to the highest one seen), duplicates (a seq
received again) and order breaks (a seq lower than one received before it).

A helper, not a benchmark (make bench-quick skips bench/_*.py): its counts reach the closing
json line of bench/telemetry.py through bench/_jsonline.py.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any


class SequenceCheck:
    """Feed every received batch's (stream, seq); read `summary()`."""

    def __init__(self) -> None:
        self._seen: dict[Hashable, set[int]] = {}
        self._last: dict[Hashable, int] = {}
        self.batches = 0
        self.duplicates = 0
        self.out_of_order = 0

    def add(self, stream: Hashable, seq: int) -> bool:
        """One received batch of `stream` (e.g. (node, session)) numbered `seq`; False when
        it is a duplicate (its samples were counted already)."""
        self.batches += 1
        seen = self._seen.setdefault(stream, set())
        if seq in seen:
            self.duplicates += 1
            return False
        if seq < self._last.get(stream, -1):
            self.out_of_order += 1
        seen.add(seq)
        self._last[stream] = max(seq, self._last.get(stream, -1))
        return True

    def gaps(self) -> int:
        """Seqs missing from 0 to the highest seen, summed over streams."""
        return sum(max(seen) + 1 - len(seen) for seen in self._seen.values() if seen)

    def summary(self) -> dict[str, Any]:
        return {"streams": len(self._seen), "batches": self.batches, "seq_gaps": self.gaps(),
                "seq_duplicates": self.duplicates, "seq_out_of_order": self.out_of_order}

    def clean(self) -> bool:
        return self.gaps() == 0 and self.duplicates == 0 and self.out_of_order == 0
