"""Temperatures at a rail or outside the physical range are flagged BAD and alarmed."""

import binascii
import json

from scenario_util import load_data, make, result

data = load_data()
app, hw, broker = make(data)
for raw in data["raws"]:
    hw.raw[0] = raw
    app.run(10)  # one batch per raw value
result({
    "birth": next(binascii.hexlify(p).decode() for t, p, r, q in broker.topics("/telemetry")
                  if r),
    "batches": [binascii.hexlify(p).decode() for t, p, r, q in broker.topics("/telemetry")
                if not r],
    "alarms": [json.loads(p) for t, p, r, q in broker.topics("/alarm")],
    "valve": hw.level,
})
