"""The few MicroPython builtins the firmware uses, with CPython stand-ins.

On a board `time.ticks_ms` and friends exist and are used as they are; under CPython (tests,
and the runtime's end-to-end test running the firmware against a real broker) the same names
are built on time.monotonic_ns with MicroPython's wrap-around arithmetic, so code written
with ticks_diff is exercised across a wrap either way.
"""

import time

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


if hasattr(time, "ticks_ms"):
    ticks_ms = time.ticks_ms
    ticks_us = time.ticks_us
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
    sleep_ms = time.sleep_ms
else:
    _PERIOD = 1 << 30  # MicroPython's ticks period on every port
    _HALF = _PERIOD >> 1

    def ticks_ms():
        return (time.monotonic_ns() // 1000000) % _PERIOD

    def ticks_us():
        return (time.monotonic_ns() // 1000) % _PERIOD

    def ticks_add(ticks, delta):
        return (ticks + delta) % _PERIOD

    def ticks_diff(a, b):
        return ((a - b + _HALF) % _PERIOD) - _HALF

    def sleep_ms(ms):
        if ms > 0:
            time.sleep(ms / 1000)


# Ports differ in their epoch (2000 on some, 1970 on most): UTC epoch ms either way.
_EPOCH_MS = 946684800000 if time.gmtime(0)[0] == 2000 else 0

if hasattr(time, "time_ns"):

    def wall_ms():
        """UTC epoch milliseconds from the board's clock."""
        return time.time_ns() // 1000000 + _EPOCH_MS

else:  # time.time() is whole seconds on some ports

    def wall_ms():
        """UTC epoch milliseconds from the board's clock."""
        return int(time.time() * 1000) + _EPOCH_MS
