"""Each command of the data is delivered alone; what the board answered and did."""

import json

from scenario_util import load_data, make, result

data = load_data()
app, hw, broker = make(data)
app.run(2)
out = []
for name, topic, payload in data["cmds"]:
    before = len(broker.published)
    accepted = app.accepted
    broker.send(topic, payload)
    app.run(3)  # 300 ms apart: inside the 5 answers a second
    errors = [json.loads(p) for t, p, r, q in broker.published[before:]
              if t.endswith("/error")]
    out.append({"name": name, "errors": errors, "accepted": app.accepted - accepted,
                "valve": hw.level})
result({"cmds": out, "invalid_total": app.invalid_total, "scans": app.scans,
        "overruns": app.overruns})
