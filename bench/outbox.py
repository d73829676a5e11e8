"""Benchmark: time one outbox put (200-byte payload) beside plain SQLite WAL in the same run.

Cases, each on a fresh file in a temp directory:
  ours NORMAL    Outbox, synchronous=NORMAL (the default), checkpoints on its own thread
  ours FULL      Outbox, synchronous=FULL (an fsync per commit)
  baseline       the same INSERT as one transaction on a plain sqlite3 connection in WAL mode,
                 synchronous=NORMAL, SQLite's default autocheckpoint (checkpoints, with their
                 fsyncs, run inside whichever commit crosses 1000 pages)
Puts run at a steady rate (a link that is down: telemetry and alarms pile up, --rate per
second); every put is followed, 20 puts later, by the ack a link would send. Then a replay:
pending(500) + ack_many over the backlog, in entries per second. Puts run on this thread, as
the link task would run them on the event loop, so the put time is what the scan could wait.
The last line of output is one JSON object with the figures.

    .venv/bin/python bench/outbox.py [--puts 5000] [--rate 1000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _jsonline import print_json_line

from edge_runtime.federation.outbox import Outbox

PAYLOAD = bytes(range(200))
TOPIC = "pswd/v1/site1/cdu1/alarm"
ACK_LAG = 20
TARGET_P99_US = 1000.0  # a put must stay far below a 10 ms scan period


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50/p99/p99.9/max in microseconds."""
    xs = sorted(samples_ns)

    def at(q: float) -> float:
        return round(xs[min(len(xs) - 1, int(q * len(xs)))] / 1000, 1)

    return {"p50_us": at(0.50), "p99_us": at(0.99), "p999_us": at(0.999),
            "max_us": round(xs[-1] / 1000, 1), "mean_us": round(statistics.fmean(xs) / 1000, 1)}


def paced(n: int, rate: float, put: Callable[[int], int], ack: Callable[[int], Any],
          wal: Path) -> tuple[list[int], int]:
    """n puts at `rate`/s, each acked ACK_LAG puts later; returns put times and peak WAL size."""
    period = 1.0 / rate
    times: list[int] = []
    seqs: list[int] = []
    wal_max = 0
    start = time.perf_counter()
    for i in range(n):
        deadline = start + i * period
        while time.perf_counter() < deadline:
            time.sleep(min(period / 4, 0.0005))
        t0 = time.perf_counter_ns()
        seqs.append(put(i))
        times.append(time.perf_counter_ns() - t0)
        if i >= ACK_LAG:
            ack(seqs[i - ACK_LAG])
        if i % 250 == 0 and wal.exists():
            wal_max = max(wal_max, wal.stat().st_size)
    return times, wal_max


def run_ours(directory: Path, synchronous: str, n: int, rate: float) -> dict[str, Any]:
    directory.mkdir(exist_ok=True)
    path = directory / f"ours-{synchronous}.sqlite"
    with Outbox(path, max_rows=1_000_000, max_bytes=1 << 30,
                synchronous=synchronous) as ob:  # type: ignore[arg-type]
        times, wal_max = paced(
            n, rate, lambda i: ob.put(TOPIC, PAYLOAD, kind="alarm" if i % 10 == 0 else
                                      "telemetry", qos=1), ob.ack, Path(f"{path}-wal"))
        backlog = [ob.put(TOPIC, PAYLOAD, kind="telemetry", qos=0) for _ in range(n)]
        t0 = time.perf_counter()
        cursor = 0
        while batch := ob.pending(500, after=cursor):
            cursor = batch[-1].seq
            ob.ack_many(e.seq for e in batch)
        replay_s = time.perf_counter() - t0
        assert ob.count() == 0 and cursor >= backlog[-1]
    return {**percentiles(times), "wal_max_mb": round(wal_max / 1e6, 1),
            "replay_per_s": round(n / replay_s)}


def run_baseline(directory: Path, n: int, rate: float) -> dict[str, Any]:
    directory.mkdir(exist_ok=True)
    path = directory / "baseline.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, "
               "topic TEXT, payload BLOB, qos INTEGER, retain INTEGER, properties BLOB, "
               "created_ms INTEGER, size INTEGER)")

    def put(i: int) -> int:
        db.execute("BEGIN IMMEDIATE")
        cur = db.execute("INSERT INTO outbox (kind, topic, payload, qos, retain, properties, "
                         "created_ms, size) VALUES (?, ?, ?, 1, 0, NULL, ?, ?)",
                         ("telemetry", TOPIC, PAYLOAD, int(time.time() * 1000), 224))
        db.execute("COMMIT")
        return int(cur.lastrowid or 0)

    def ack(seq: int) -> None:
        db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    try:
        times, wal_max = paced(n, rate, put, ack, Path(f"{path}-wal"))
    finally:
        db.close()
    return {**percentiles(times), "wal_max_mb": round(wal_max / 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="puts per second")
    parser.add_argument("--quick", action="store_true", help="a few seconds")
    args = parser.parse_args()
    n = 3000 if args.quick else args.puts
    full_n = max(500, n // 5)
    with tempfile.TemporaryDirectory(prefix="outbox-bench-") as tmp:
        d = Path(tmp)
        print(f"outbox put, 200-byte payload, {n} puts at {args.rate:.0f}/s, ack {ACK_LAG} "
              f"behind; cpu count {os.cpu_count()} (shared machine: figures are indicative)")
        baseline = run_baseline(d / "fast", n, args.rate)
        print(f"  baseline (sqlite3 WAL, NORMAL, autocheckpoint in the writer): {baseline}")
        ours = run_ours(d / "fast", "NORMAL", n, args.rate)
        print(f"  ours (Outbox, NORMAL, off-loop checkpoints):                 {ours}")
        full = run_ours(d / "fast", "FULL", full_n, args.rate)
        print(f"  ours (Outbox, FULL, {full_n} puts):                              {full}")
        slow_n, slow_rate = (600, 200.0) if args.quick else (6000, 200.0)
        print(f"{slow_n} puts at {slow_rate:.0f}/s (an outage at telemetry rates):")
        slow_base = run_baseline(d / "slow", slow_n, slow_rate)
        print(f"  baseline: {slow_base}")
        slow_ours = run_ours(d / "slow", "NORMAL", slow_n, slow_rate)
        print(f"  ours:     {slow_ours}")
    result = {"ours_normal": ours, "ours_full": full, "baseline_sqlite_wal": baseline,
              "ours_normal_200_per_s": slow_ours, "baseline_sqlite_wal_200_per_s": slow_base,
              "target_p99_us": TARGET_P99_US,
              "targets_met": max(ours["p99_us"], slow_ours["p99_us"]) <= TARGET_P99_US}
    print_json_line(result)


if __name__ == "__main__":
    main()
