"""Puts messages into an outbox as fast as it can, printing each returned seq; a test kills it.

    python tests/outbox_writer.py PATH START COUNT

Message i (from START) has payload b"msg-<i>" and alternates telemetry (QoS 0) and alarm
(QoS 1). Each line on stdout is "<seq> <i>", flushed after put() returned: a line the test
has read is a put the outbox promised to keep. "ready" is printed once the outbox is open.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edge_runtime.federation.outbox import Kind, Outbox


def main(argv: list[str]) -> int:
    path, start, count = Path(argv[1]), int(argv[2]), int(argv[3])
    outbox = Outbox(path, max_rows=10_000_000, max_bytes=1 << 30)
    print("ready", flush=True)
    for i in range(start, start + count):
        kind: Kind = "telemetry" if i % 2 else "alarm"
        seq = outbox.put("pswd/v1/test/node/" + kind, f"msg-{i}".encode(), kind=kind,
                         qos=0 if kind == "telemetry" else 1,
                         properties={"i": i} if i % 3 == 0 else None)
        sys.stdout.write(f"{seq} {i}\n")
        sys.stdout.flush()
    outbox.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
