"""Connect, birth, 25 scans at the 100 ms period: what the broker and the board saw."""

import binascii

from scenario_util import load_data, make, result

data = load_data()
app, hw, broker = make(data)
app.run(25)
result({
    "published": [[t, binascii.hexlify(p).decode(), r, q] for t, p, r, q in broker.published],
    "wills": [[t, p.decode(), r, q] for t, p, r, q in broker.wills],
    "subscriptions": broker.subscriptions,
    "status": app.status(),
    "feeds": hw.feeds,
    "wdt_ms": hw.wdt_ms,
    "valve": hw.level,
    "elapsed_ms": hw.t - hw.t0,
})
