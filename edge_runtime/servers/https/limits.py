"""Request limits of the HTTPS server: a token bucket per source, and the body size. Sans-IO.

A source (the peer address) may make `burst` requests at once and `rate_per_s` a second
after that; past it every request is answered 429 with Retry-After, before any parsing or
token check, so a flood costs the node a dictionary lookup per request. At most
`max_sources` buckets are kept (the least recently seen forgotten first), so a scan of many
addresses cannot grow memory; a forgotten source starts again with a full bucket.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Per-source token buckets on an injected monotonic clock."""

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float],
                 max_sources: int = 4096) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = float(burst)
        self.clock = clock
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.refused = 0

    def take(self, source: str) -> float:
        """0.0 when `source` may go ahead (one token taken), else seconds until it may."""
        now = self.clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = _Bucket(self.burst, now)
            while len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        self.refused += 1
        return (1.0 - bucket.tokens) / self.rate

    def get_status(self) -> dict[str, float | int]:
        """Sources tracked and requests refused."""
        return {"sources": len(self._buckets), "refused": self.refused,
                "rate_per_s": self.rate, "burst": self.burst}
