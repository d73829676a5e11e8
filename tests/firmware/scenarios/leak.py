"""A leak closes the valve in the scan that reads it, latches, and beats the host's commands."""

import json

from scenario_util import load_data, make, result

data = load_data()
log = []
app, hw, broker = make(data, log=log)
cmd = "pswd/v1/s1/rs-01/cmd/output"
out = {}
app.run(5)
out["before"] = hw.level
hw.leak_in = 1
mark = len(log)
scans = app.scans
app.run(1)
out["scan_log"] = [list(e) for e in log[mark:]]
out["scans_for_leak"] = app.scans - scans
out["after_leak"] = hw.level
n_pub = len(broker.published)
broker.send(cmd, data["open_during_leak"])
app.run(2)
out["after_open_during_leak"] = hw.level
hw.leak_in = 0
app.run(20)  # 2 s: past max_hold_ms (1000), the latch keeps the valve shut
out["after_clear_and_hold"] = hw.level
broker.send(cmd, data["open_after_clear"])
app.run(1)
out["scan_of_reset_command"] = hw.level
app.run(1)
out["after_reset"] = hw.level
out["latched"] = app.latched
out["messages"] = [[t, p.decode() if not t.endswith("telemetry") else p.hex()]
                   for t, p, r, q in broker.published]
out["errors"] = [json.loads(p) for t, p, r, q in broker.topics("/error")]
result(out)
