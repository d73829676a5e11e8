"""hw.Board on a stand-in `machine`: levels, inversions, failsafe at start, watchdog."""

import machine
from pswd_node import config, hw
from scenario_util import result

cfg = config.check({"site": "s1", "sensor_id": "rs-01", "outputs": {"valve": {
    "active_low": True, "failsafe": 1}}})
board = hw.Board(cfg)
out = {"valve_init_writes": list(machine.pins[16].writes),
       "valve_mode": machine.pins[16].mode,
       "leak_pull": machine.pins[14].pull == machine.Pin.PULL_UP}
machine.adc_values[26] = 30000
machine.adc_values[27] = 65535
out["temps"] = [board.temp_raw(0), board.temp_raw(1)]
machine.pins[14].level = 0  # active low: water
machine.pins[15].level = 0  # active low: detector fault
out["leak_cable"] = [board.leak(), board.cable_fault()]
machine.pins[14].level = 1
out["leak_dry"] = board.leak()
board.set_valve(0)
board.set_valve(0)  # unchanged: no second write
board.set_valve(1)
out["valve_writes"] = list(machine.pins[16].writes)
out["feedback"] = board.valve_feedback()
board.wdt_feed()  # before start: nothing to feed
board.wdt_start(4000)
board.wdt_feed()
board.wdt_feed()
out["wdt"] = [[w.timeout, w.feeds] for w in machine.wdts]
out["cause"] = board.reset_cause()
result(out)
