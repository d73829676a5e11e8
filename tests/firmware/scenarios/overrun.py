"""Slow scan bodies are counted as overruns; the schedule restarts rather than bursts."""

import binascii

from scenario_util import load_data, make, result

data = load_data()
app, hw, broker = make(data)
trace = []
for cost in data["costs"]:
    hw.cost_ms = cost
    t = hw.t
    app.run(1)
    trace.append([cost, app.overruns, hw.t - t])
hw.cost_ms = 0
app.run(10)
bites_before = hw.bites
hw.cost_ms = data["hang_ms"]  # a scan stuck that long (a hung socket, a bug)
app.run(1)
hw.cost_ms = 0
app.run(1)
result({"trace": trace, "overruns": app.overruns, "scans": app.scans, "feeds": hw.feeds,
        "bites_before": bites_before, "bites_after": hw.bites, "wdt_ms": hw.wdt_ms,
        "batches": [binascii.hexlify(p).decode() for t, p, r, q in broker.topics("/telemetry")]})
