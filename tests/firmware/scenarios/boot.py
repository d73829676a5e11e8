"""main.py as a board runs it: config, key, board, Wi-Fi, NTP, uplink, scans (on stand-ins)."""

import json

import machine
import main
import network
import ntptime
from umqtt.simple import broker

main.main(iterations=12)
with open("session") as f:
    session = f.read().strip()  # 12 scans at 100 ms (VM clock), then the death (shutdown)
result = {
    "valve_writes": machine.pins[16].writes,
    "wdt": [[w.timeout, w.feeds] for w in machine.wdts],
    "wifi": network.state,
    "ntp_calls": ntptime.calls,
    "server": list(broker.server),
    "attempts": broker.attempts,
    "states": [json.loads(p) for t, p, r, q in broker.topics("/state")],
    "topics": [t for t, p, r, q in broker.published],
    "wills": [json.loads(p)["session"] for t, p, r, q in broker.wills],
    "session_file": session,
}
print("RESULT " + json.dumps(result))
