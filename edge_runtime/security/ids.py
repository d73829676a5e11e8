"""Intrusion detection: per-source counts of what a well-behaved peer never does. Sans-IO.

Every transport (MQTT commands, HTTPS, OPC UA) reports what it refused, by source: the peer
address for HTTPS and OPC UA, the signing role or channel for MQTT (the broker hides the peer).

    kind            what it counts                               default threshold
    auth_failure    missing, expired or forged token or cert,    5 in 60 s
                    bad signature, unknown user
    malformed       not JSON, not CBOR, schema violations        20 in 60 s
    replay          a nonce seen before, a stale issued-at       3 in 60 s
    rate            commands above the per-source rate           (see `command`)

A source over a threshold raises an alarm (kind "intrusion") and is blocked for `block_s`:
the transports then refuse it at once (HTTPS 429, OPC UA BadUserAccessDenied, MQTT error
topic) without parsing what it sends. The block ends by itself; a new offence extends it.
Local control and safety never consult this: it guards the doors, not the plant.

Counting uses a sliding window of timestamps per (source, kind), bounded in length so a flood
cannot grow memory; sources are forgotten once quiet for a window and not blocked, and at most
`max_sources` are tracked (the quietest forgotten first).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edge_runtime.core.events import EventLog, Severity

log = logging.getLogger(__name__)

KINDS = ("auth_failure", "malformed", "replay", "rate")
F = TypeVar("F", bound=Callable[..., Any])


def _locked(method: F) -> F:
    """Run under the detector's lock (transports call it from more than one thread)."""
    @functools.wraps(method)
    def wrapper(self: IntrusionDetector, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Threshold:
    """`count` offences within `window_s` seconds trip the detector for a source."""

    count: int
    window_s: float


DEFAULT_THRESHOLDS: Mapping[str, Threshold] = {
    "auth_failure": Threshold(5, 60.0),
    "malformed": Threshold(20, 60.0),
    "replay": Threshold(3, 60.0),
    "rate": Threshold(1, 60.0),  # one burst above the command rate is already an anomaly
}


@dataclass(slots=True)
class _Source:
    offences: dict[str, deque[float]] = field(default_factory=dict)
    commands: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    blocked_until: float = 0.0
    last_seen: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)  # totals, for status


class IntrusionDetector:
    """Counts offences per source, raises alarms, blocks sources for a while."""

    def __init__(self, events: EventLog, clock: Callable[[], float], *,
                 wall: Callable[[], float] | None = None,
                 thresholds: Mapping[str, Threshold] = DEFAULT_THRESHOLDS,
                 block_s: float = 300.0, command_rate: float = 20.0,
                 command_window_s: float = 1.0, max_sources: int = 10_000) -> None:
        unknown = set(thresholds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown offence kind(s) {sorted(unknown)}; one of {KINDS}")
        self.events = events
        self._clock = clock  # monotonic seconds: windows and blocks
        self._wall = wall or clock  # event timestamps
        self.thresholds = {**DEFAULT_THRESHOLDS, **thresholds}
        self.block_s = block_s
        self.command_rate = command_rate  # commands per second per source, sustained
        self.command_window_s = command_window_s
        self.max_sources = max_sources
        self._sources: dict[str, _Source] = {}
        self.alarms = 0
        # The OPC UA server runs in a thread of its own; MQTT and HTTPS in the node's loop.
        self._lock = threading.RLock()

    @_locked
    def record(self, source: str, kind: str, detail: str = "") -> bool:
        """Count one offence of `kind` by `source`; True when this blocks the source."""
        if kind not in self.thresholds:
            raise ValueError(f"unknown offence kind {kind!r}; one of {KINDS}")
        now = self._clock()
        src = self._get(source, now)
        src.counts[kind] = src.counts.get(kind, 0) + 1
        if kind in ("auth_failure", "replay"):
            # Every one is an audit record (security/audit.py mirrors these codes); a blocked
            # source is refused before it gets here, so a flood cannot flood the log.
            self.events.raise_event(self._wall(), f"ids.{source}", Severity.WARNING,
                                    f"{kind.replace('_', ' ')} from {source}"
                                    f"{': ' + detail if detail else ''}", kind)
        th = self.thresholds[kind]
        seen = src.offences.setdefault(kind, deque(maxlen=max(th.count, 1)))
        seen.append(now)
        if len(seen) < th.count or now - seen[0] > th.window_s:
            return False
        seen.clear()  # counted once: the next alarm needs a fresh run of offences
        was_blocked = src.blocked_until > now
        src.blocked_until = now + self.block_s
        self.alarms += 1
        self.events.raise_event(
            self._wall(), f"ids.{source}", Severity.ALARM,
            f"{th.count} {kind.replace('_', ' ')} offence(s) from {source} within "
            f"{th.window_s:g} s{': ' + detail if detail else ''}; "
            f"{'block extended' if was_blocked else 'blocked'} for {self.block_s:g} s",
            "intrusion")
        log.warning("intrusion: %s %s (%s); blocked %.0f s", source, kind, detail, self.block_s)
        return not was_blocked

    @_locked
    def command(self, source: str) -> bool:
        """Note one command from `source`; False (and a "rate" offence) when it comes faster
        than `command_rate` over the window, or the source is blocked."""
        now = self._clock()
        if self.blocked(source):
            return False
        src = self._get(source, now)
        src.commands.append(now)
        allowed = self.command_rate * self.command_window_s
        recent = sum(1 for t in src.commands if now - t <= self.command_window_s)
        if recent > allowed:
            self.record(source, "rate", f"{recent} commands in {self.command_window_s:g} s")
            return False
        return True

    @_locked
    def blocked(self, source: str) -> float:
        """Seconds `source` stays blocked (0.0 when it is not)."""
        src = self._sources.get(source)
        if src is None:
            return 0.0
        return max(0.0, src.blocked_until - self._clock())

    @_locked
    def unblock(self, source: str) -> None:
        """Lift a block by hand (an operator who knows the source)."""
        if (src := self._sources.get(source)) is not None:
            src.blocked_until = 0.0

    def _get(self, source: str, now: float) -> _Source:
        src = self._sources.get(source)
        if src is None:
            if len(self._sources) >= self.max_sources:
                self._forget(now)
            src = self._sources[source] = _Source()
        src.last_seen = now
        return src

    def _forget(self, now: float) -> None:
        horizon = max(th.window_s for th in self.thresholds.values())
        quiet = [s for s, v in self._sources.items()
                 if v.blocked_until <= now and now - v.last_seen > horizon]
        for s in quiet:
            del self._sources[s]
        if len(self._sources) >= self.max_sources:  # all busy: drop the quietest unblocked
            unblocked = sorted((v.last_seen, s) for s, v in self._sources.items()
                               if v.blocked_until <= now)
            for _, s in unblocked[: max(1, len(unblocked) // 10)]:
                del self._sources[s]

    async def run(self) -> None:
        """As a node service: forget quiet sources now and then, so status stays current."""
        while True:
            await asyncio.sleep(60.0)
            with self._lock:
                self._forget(self._clock())

    @_locked
    def get_status(self) -> dict[str, Any]:
        """Blocked sources with seconds left, offence totals per source (top 20)."""
        now = self._clock()
        busiest = sorted(self._sources.items(), key=lambda kv: -sum(kv[1].counts.values()))
        return {
            "alarms": self.alarms,
            "blocked": {s: round(v.blocked_until - now, 1) for s, v in self._sources.items()
                        if v.blocked_until > now},
            "offences": {s: dict(v.counts) for s, v in busiest[:20] if v.counts},
        }


def offence_of(category: str, field: str, reason: str) -> str | None:
    """The offence kind a transport's refusal counts as, None for honest mistakes.

    `category`/`field`/`reason` as federation/inbound.py's Invalid carries them (HTTPS and
    OPC UA map their refusals to the same words): a malformed or schema-breaking message is
    "malformed"; a bad signature, an unknown role or a rights refusal is "auth_failure"; a
    reused nonce or a stale or future issued-at is "replay". A value out of range is not an
    offence: operators mistype."""
    if category in ("malformed", "schema", "oversized", "unknown_topic", "retained"):
        return "malformed"
    if category == "auth":
        return "auth_failure"
    if category == "refused":
        if field in ("signature", "role") or reason.startswith("rights:"):
            return "auth_failure"
        if field in ("nonce", "timestamp", "signed_at", "issued_at"):
            return "replay"
        if field == "point":
            return "malformed"  # probing for point names
    return None
