"""The board: the ONLY module that touches `machine` (ADC, pins, watchdog).

The app sees raw readings and logical levels only; scaling, ranges and failsafes are the
app's. Tests and the CPython end-to-end run hand the app a fake with the same methods
(tests/firmware/fakehw.py):

    temp_raw(i)        ADC reading 0..65535 of temperature input i (0 inlet, 1 outlet)
    leak()             1 when the leak detector reports water (active level applied)
    cable_fault()      1 when the detector reports a broken cable / fault
    set_valve(v)       drive the isolation valve: 1 open, 0 closed
    valve_feedback()   1 open / 0 closed as read back (the driven level without a feedback pin)
    wdt_start(ms)      start the hardware watchdog (cannot be stopped once started)
    wdt_feed()
    ticks_ms(), ticks_us(), wall_ms(), sleep_ms(ms)
    reset_cause()      why the board last reset, as text
"""

import machine

from . import compat

_CAUSES = {}
for _name in ("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET"):
    if hasattr(machine, _name):
        _CAUSES[getattr(machine, _name)] = _name.lower()


class Board:
    """Pins and ADCs as config.json's `inputs`/`outputs` name them."""

    def __init__(self, cfg):
        ins = cfg["inputs"]
        outs = cfg["outputs"]
        self._adc = [machine.ADC(machine.Pin(ins[n]["adc"])) for n in ("inlet_temp_c",
                                                                     "outlet_temp_c")]
        self._leak = self._din(ins["leak"])
        self._fault = self._din(ins["leak_cable_fault"])
        v = outs["valve"]
        self._valve_inv = 1 if v["active_low"] else 0
        # The valve starts at its failsafe level before anything else runs.
        self._valve = machine.Pin(v["pin"], machine.Pin.OUT,
                                  value=v["failsafe"] ^ self._valve_inv)
        self._valve_level = v["failsafe"]
        fb = v["feedback_pin"]
        self._feedback = None if fb is None else machine.Pin(fb, machine.Pin.IN)
        self._wdt = None
        self.ticks_ms = compat.ticks_ms
        self.ticks_us = compat.ticks_us
        self.sleep_ms = compat.sleep_ms
        self.wall_ms = compat.wall_ms

    @staticmethod
    def _din(spec):
        pull = machine.Pin.PULL_UP if spec.get("pull_up") else None
        pin = machine.Pin(spec["pin"], machine.Pin.IN, pull)
        return pin, 1 if spec["active_low"] else 0

    def temp_raw(self, i):
        return self._adc[i].read_u16()

    def leak(self):
        pin, inv = self._leak
        return pin.value() ^ inv

    def cable_fault(self):
        pin, inv = self._fault
        return pin.value() ^ inv

    def set_valve(self, v):
        if v != self._valve_level:
            self._valve.value(v ^ self._valve_inv)
            self._valve_level = v

    def valve_feedback(self):
        if self._feedback is None:
            return self._valve_level
        return self._feedback.value()

    def wdt_start(self, ms):
        self._wdt = machine.WDT(timeout=ms)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def reset_cause(self):
        return _CAUSES.get(machine.reset_cause(), "unknown")
