"""A host command holds the valve for max_hold_ms, then the failsafe returns."""

import json

from scenario_util import load_data, make, result

data = load_data()
app, hw, broker = make(data)
cmd = "pswd/v1/s1/rs-01/cmd/output"
trace = []
app.run(3)
for at_scan, name in data["schedule"]:
    while app.scans < at_scan:
        app.run(1)
        trace.append([app.scans, hw.level, app.held])
    broker.send(cmd, data[name])
while app.scans < data["end"]:
    app.run(1)
    trace.append([app.scans, hw.level, app.held])
result({"trace": trace,
        "alarms": [json.loads(p) for t, p, r, q in broker.topics("/alarm")],
        "errors": [json.loads(p) for t, p, r, q in broker.topics("/error")],
        "accepted": app.accepted})
