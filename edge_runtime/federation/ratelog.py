"""A log line per kind of trouble per interval, with a count of what it held back.

    invalid_log = RateLimitedLog(log, interval_s=10.0, clock=node.clock.monotonic)
    invalid_log.warning("malformed", "%s: invalid message on %s: %s", node, topic, reason)

The first occurrence of a key is logged at once; later ones within `interval_s` are only
counted, and the next line logged for that key ends with "(N more since the last line)". A
sender flooding a node with invalid messages thus costs the log one line per key per interval,
where it used to cost one line per message. Keys should come from a small set (categories),
not from the messages themselves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """At most one line per key per `interval_s`; the lines held back are counted."""

    def __init__(self, logger: logging.Logger, *, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self.held_back: dict[str, int] = {}  # per key, since its last line
        self.total: dict[str, int] = {}  # per key, every call

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """Log `msg % args` at WARNING unless `key` was logged within the interval; True if
        it was logged."""
        return self.log(logging.WARNING, key, msg, *args)

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """As warning(), at `level`."""
        self.total[key] = self.total.get(key, 0) + 1
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self.held_back[key] = self.held_back.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self.held_back.pop(key, 0)
        if held:
            msg += f" ({held} more since the last line, {self.total[key]} in all)"
        self.logger.log(level, msg, *args)
        return True
