"""Scan cycle statistics: execution time, start jitter, overruns."""

from __future__ import annotations

import math
from collections import deque
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


class ScanStats:
    """Running figures for the scan; recent samples kept for percentiles.

    Recording is two appends and a few compares so the hot path stays cheap; percentiles are
    computed only when someone asks (status readers, the demo, benchmarks).
    """

    def __init__(self, window: int = 10_000) -> None:
        self.window = window
        self.reset()

    def reset(self) -> None:
        """Forget everything (e.g. after warm-up)."""
        self.cycles = 0
        self.overruns = 0
        self.skipped_deadlines = 0
        self.block_faults = 0
        self.exec_min = math.inf
        self.exec_max = 0.0
        self._exec_sum = 0.0
        self.jitter_max = 0.0
        self.exec_recent: deque[float] = deque(maxlen=self.window)
        self.jitter_recent: deque[float] = deque(maxlen=self.window)

    def record(self, jitter_s: float, exec_s: float) -> None:
        """One completed scan: how late it started, how long it ran."""
        self.cycles += 1
        self._exec_sum += exec_s
        self.exec_min = min(self.exec_min, exec_s)
        self.exec_max = max(self.exec_max, exec_s)
        self.jitter_max = max(self.jitter_max, jitter_s)
        self.exec_recent.append(exec_s)
        self.jitter_recent.append(jitter_s)

    def record_overrun(self, skipped: int) -> None:
        """A scan ran past the next deadline; `skipped` deadlines were dropped."""
        self.overruns += 1
        self.skipped_deadlines += skipped

    def snapshot(self) -> dict[str, Any]:
        """Figures in milliseconds, for status readers."""
        ex = sorted(self.exec_recent)
        ji = sorted(self.jitter_recent)
        ms = 1000.0
        return {
            "cycles": self.cycles,
            "overruns": self.overruns,
            "skipped_deadlines": self.skipped_deadlines,
            "block_faults": self.block_faults,
            "exec_ms": {
                "min": (self.exec_min if self.cycles else math.nan) * ms,
                "avg": (self._exec_sum / self.cycles if self.cycles else math.nan) * ms,
                "p50": percentile(ex, 50) * ms,
                "max": self.exec_max * ms,
                "p99": percentile(ex, 99) * ms,
            },
            "jitter_ms": {
                "p50": percentile(ji, 50) * ms,
                "p99": percentile(ji, 99) * ms,
                "max": self.jitter_max * ms,
            },
        }
