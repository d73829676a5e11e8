"""Fake board for the firmware: pswd_node.hw.Board's methods, no `machine`.

Runs on the MicroPython VM (the tests copy it there) and under CPython (the runtime's
end-to-end test drives the firmware with it). Two clocks:
  manual (default): ticks advance only through sleep_ms() and `cost_ms` (each scan's first
      ADC read adds it: a slow scan body), so scans are deterministic;
  real: ticks and wall time from the host (pswd_node.compat), for runs against a broker.
`log`, when a list, records every call in order (what the same-scan leak test reads).
"""

from pswd_node import compat

_MASK = (1 << 30) - 1


class FakeHw:
    """Inputs settable by the test; outputs and watchdog feeds recorded."""

    def __init__(self, real_clock=False, t0_ms=1000, wall0_ms=1796529600000, log=None):
        self.real = real_clock
        self.t = t0_ms
        self.t0 = t0_ms
        self.wall0 = wall0_ms
        self.raw = [30000, 33000]  # about 34 and 40 degC with the default scaling
        self.leak_in = 0
        self.fault_in = 0
        self.feedback = None  # None: the driven level reads back
        self.level = None
        self.writes = 0
        self.cost_ms = 0
        self.feeds = 0
        self.wdt_ms = None
        self.last_feed = None
        self.bites = 0  # times the modelled watchdog would have reset the board
        self.log = log

    # clock
    def ticks_ms(self):
        return compat.ticks_ms() if self.real else self.t & _MASK

    def ticks_us(self):
        return compat.ticks_us() if self.real else (self.t * 1000) & _MASK

    def wall_ms(self):
        return compat.wall_ms() if self.real else self.wall0 + (self.t - self.t0)

    def sleep_ms(self, ms):
        if self.real:
            compat.sleep_ms(ms)
        else:
            self.t += ms

    def advance(self, ms):
        self.t += ms

    # inputs
    def temp_raw(self, i):
        if i == 0 and self.cost_ms and not self.real:
            self.t += self.cost_ms
        if self.log is not None:
            self.log.append(("temp", i))
        return self.raw[i]

    def leak(self):
        if self.log is not None:
            self.log.append(("leak", self.leak_in))
        return self.leak_in

    def cable_fault(self):
        return self.fault_in

    # outputs
    def set_valve(self, v):
        if self.log is not None:
            self.log.append(("valve", v))
        if v != self.level:
            self.writes += 1
        self.level = v

    def valve_feedback(self):
        return self.level if self.feedback is None else self.feedback

    def wdt_start(self, ms):
        self.wdt_ms = ms
        self.last_feed = self.ticks_ms()

    def wdt_feed(self):
        now = self.ticks_ms()
        if self.wdt_ms is not None and now - self.last_feed > self.wdt_ms:
            self.bites += 1  # the real WDT would have reset the board before this feed
        self.last_feed = now
        self.feeds += 1
        if self.log is not None:
            self.log.append(("feed",))

    def reset_cause(self):
        return "pwron_reset"
