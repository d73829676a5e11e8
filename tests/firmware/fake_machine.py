"""A stand-in `machine` module for hw.py on the VM (which has none): pins, ADC, WDT recorded.

Copied to the VM as /lib/machine.py for the hw scenario only; every other test replaces hw.py
as a whole (fakehw.py).
"""

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
pins = {}
adc_values = {}
wdts = []
cause = [WDT_RESET]


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 2

    def __init__(self, pin_id, mode=-1, pull=None, value=None):
        self.id = pin_id
        self.mode = mode
        self.pull = pull
        if value is None and mode == Pin.IN:  # an idle input reads its pull
            self.level = 1 if pull == Pin.PULL_UP else 0
        else:
            self.level = value
        self.writes = [] if value is None else [value]
        pins[pin_id] = self

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = v
        self.writes.append(v)
        return None


class ADC:
    def __init__(self, pin):
        self.pin = pin

    def read_u16(self):
        return adc_values.get(self.pin.id, 0)


class WDT:
    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        wdts.append(self)

    def feed(self):
        self.feeds += 1


def reset_cause():
    return cause[0]
