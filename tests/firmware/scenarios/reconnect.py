"""Connect failures back off (doubling, bounded); a dead link reconnects with a new birth."""

import json

from pswd_node.app import Sessions
from scenario_util import load_data, make, result

data = load_data()
app, hw, broker = make(data)
broker.fail_connects = data["fail_connects"]
attempts = []
seen = 0
for _ in range(data["scans"]):
    app.run(1)
    if broker.attempts != seen:
        seen = broker.attempts
        attempts.append([hw.t - hw.t0, app.uplink.connected])
first_connect = len(broker.published)
broker.fail_publish = True  # the next publish finds the socket dead
dead_at = hw.t
while app.uplink.connected:
    app.run(1)
dropped_at = hw.t
while not app.uplink.connected:
    app.run(1)
reconnected_at = hw.t
app.run(3)
states = [json.loads(p) for t, p, r, q in broker.topics("/state")]
result({
    "attempts": attempts,
    "wills": [json.loads(p) for t, p, r, q in broker.wills],
    "states": [[s["state"], s["session"]] for s in states],
    "retained_qos": [[t, r, q] for t, p, r, q in broker.published if r],
    "drop_ms": dropped_at - dead_at,
    "reconnect_ms": reconnected_at - dropped_at,
    "session_file": Sessions("/").current,
    "failures": app.uplink.failures,
    "last_error": app.uplink.last_error,
    "subscriptions": broker.subscriptions,
})
