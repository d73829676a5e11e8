"""Benchmark: fuzz every external parser, 100,000 cases, beside a node scanning at 10 ms.

The input classes and their real parsers are tests/fuzz_targets.py: Annex A messages and the
`pswd-edge validate` path, MQTT command envelopes (parse_command with a real CommandVerifier
and a ProcessImage over the shipped io_maps), JWTs (ES256 verify), CBOR telemetry, the sensor
node's state and telemetry, HTTP requests to the node's HTTPS app, OPC UA method calls and
writes (servers/opcua's handlers and command gate), node configs and io_maps. Each case is
accepted, refused with a named error, or a CRASH (any other exception, an HTTP 500, a hang).
Cases come from a seeded generator (valid inputs mutated structurally and byte-wise, re-signed
mutations, random bytes, deep nesting, huge lengths).

The node is examples/rack.toml with [https], on fake drivers, on the wall clock, scanning at
10 ms (SCHED_FIFO 50 as root, as a deployment runs it). First it scans alone (the baseline),
then beside a loop kept as busy as the fuzzing keeps it but parsing nothing (the control for
a CPU-bound process on a shared machine); then the transport classes are fed in one
interleaved stream, in slices that yield to the loop as a transport receiving them would,
and the scan's overruns and start jitter are measured; then the config class (read at start,
not received while running) in a phase of its own.

    .venv/bin/python bench/fuzz.py [--quick] [--cases N] [--seed S]

Targets (issue 10, item 8): 0 crashes; 0 scan overruns during the transport fuzzing.
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from random import Random
from typing import Any

from _jsonline import print_json_line

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_runtime.security.signing import NonceJournal  # noqa: E402
from tests import fuzz_targets as ft  # noqa: E402
from tests.https_env import Env, running  # noqa: E402

# Share of the cases per class (config last, in its own phase).
WEIGHTS = {"annex_a": 13, "validate_cli": 5, "command": 16, "jwt": 13, "cbor": 15,
           "sensor_node": 9, "http": 12, "opcua": 8, "config": 9}
ASYNC_CLASSES = ("http", "opcua")  # awaited: they answer through the loop (and the scan)
SLICE_S = 0.001  # feed for at most this long, then yield to the loop (the scan's turn)
MAX_EXAMPLES_SHOWN = 3
SLOW_S = 0.002  # a parse this long holds the loop for a fifth of a 10 ms scan period
WARMUP_CASES = 30  # per class, before the baseline: caches (schema validators) are built


class LogCount(logging.Handler):
    """Counts log records by level instead of printing 100,000 refusals."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()  # by message template

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] += 1
        if record.levelno >= logging.ERROR:
            self.errors[f"{record.name}: {record.msg}"[:160]] += 1


class GcPauses:
    """The garbage collector's pauses (a full collection holds the loop like a slow parse)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.max_s = 0.0
        self.total_s = 0.0
        self.count = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        # No calls that could recurse: a collection may start at the recursion limit (a deep
        # JSON being refused).
        now = time.perf_counter()
        if phase == "start":
            self.started = now
            return
        took = now - self.started
        self.count += 1
        self.total_s += took
        if took > self.max_s:
            self.max_s = took

    def figures(self) -> dict[str, Any]:
        return {"collections": self.count, "max_ms": round(self.max_s * 1e3, 3),
                "total_ms": round(self.total_s * 1e3, 1)}


class Timed:
    """Wall time of every call of one function the node makes in the loop's thread (the nonce
    journal's append, fdatasync included: a stall there is a stall of the scan)."""

    def __init__(self, owner: Any, name: str) -> None:
        self.owner, self.name = owner, name
        self.original = getattr(owner, name)
        self.count, self.total_s, self.max_s = 0, 0.0, 0.0

    def __enter__(self) -> Timed:
        original = self.original

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                took = time.perf_counter() - start
                self.count, self.total_s = self.count + 1, self.total_s + took
                self.max_s = max(self.max_s, took)

        setattr(self.owner, self.name, timed_call)
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(self.owner, self.name, self.original)

    def figures(self) -> dict[str, Any]:
        return {"calls": self.count, "max_ms": round(self.max_s * 1e3, 3),
                "total_ms": round(self.total_s * 1e3, 1)}


class Tally:
    """Outcomes by class: accepted, refused by reason, crashes with examples."""

    def __init__(self) -> None:
        self.by_class: dict[str, dict[str, Any]] = {}
        self.examples: list[str] = []
        self.slowest: dict[str, float] = collections.defaultdict(float)
        self.slow: list[tuple[float, str, str]] = []  # (seconds, class, input) over SLOW_S
        self.generator_errors: list[str] = []

    def add(self, name: str, case: Any, out: ft.Outcome, took: float) -> None:
        row = self.by_class.setdefault(name, {"cases": 0, "accepted": 0, "refused": {},
                                              "crashes": {}})
        row["cases"] += 1
        self.slowest[name] = max(self.slowest[name], took)
        if took > SLOW_S and name not in ASYNC_CLASSES:  # their time is the loop's too
            self.slow.append((took, name, repr(case)[:160]))
        if out.kind == ft.ACCEPTED:
            row["accepted"] += 1
        elif out.kind == ft.REFUSED:
            row["refused"][out.reason] = row["refused"].get(out.reason, 0) + 1
        else:
            row["crashes"][out.reason] = row["crashes"].get(out.reason, 0) + 1
            if len(self.examples) < 20 and sum(row["crashes"].values()) <= MAX_EXAMPLES_SHOWN:
                self.examples.append(f"CRASH {name}: {repr(case)[:300]}\n  {out.detail}")

    @property
    def crashes(self) -> int:
        return sum(sum(r["crashes"].values()) for r in self.by_class.values())

    @property
    def cases(self) -> int:
        return sum(r["cases"] for r in self.by_class.values())


def scan_figures(node: Any) -> dict[str, Any]:
    s = node.engine.get_status()
    return {"cycles": s["cycles"], "overruns": s["overruns"],
            "jitter_p50_ms": round(s["jitter_ms"]["p50"], 4),
            "jitter_p99_ms": round(s["jitter_ms"]["p99"], 4),
            "jitter_max_ms": round(s["jitter_ms"]["max"], 4),
            "exec_p99_ms": round(s["exec_ms"]["p99"], 4)}


def reset_scan(node: Any) -> None:
    stats = node.engine.stats
    stats.window = 1_000_000  # every scan of the run in the percentiles, not the last 100 s
    stats.reset()


async def pause(spent: float, duty: float) -> None:
    """Yield to the loop; below full duty, long enough that feeding takes `duty` of the time."""
    await asyncio.sleep(spent * (1.0 - duty) / duty if duty < 1.0 else 0)


async def feed_stream(schedule: list[str], targets: dict[str, Any], rng: Random,
                      tally: Tally, duty: float = 1.0) -> None:
    """Generate and feed each case of `schedule`, yielding to the loop every SLICE_S (and
    pausing, below full duty, so the stream takes at most `duty` of the loop's time)."""
    mark = time.perf_counter()
    for name in schedule:
        target = targets[name]
        try:
            case = target.generate(rng)
        except Exception as exc:  # a fault of the generator, not of a parser: counted apart
            tally.generator_errors.append(f"{name}: {exc!r}"[:300])
            continue
        start = time.perf_counter()
        if name in ASYNC_CLASSES:
            out = await target.feed(case)
            mark = time.perf_counter()
        else:
            out = ft.timed(target.feed, case)
        took = time.perf_counter() - start
        tally.add(name, case, out, took)
        if (spent := time.perf_counter() - mark) >= SLICE_S:
            await pause(spent, duty)
            mark = time.perf_counter()


async def busy(seconds: float, duty: float) -> None:
    """Keep the loop as busy as the fuzzing does, without parsing anything: SLICE_S of
    spinning, then a yield (the control for a CPU-bound process on a shared machine)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        spin = time.perf_counter() + SLICE_S
        while time.perf_counter() < spin:
            pass
        await pause(SLICE_S, duty)


def line(case: str, f: dict[str, Any]) -> str:
    return (f"{case:34} {f['cycles']:6d} scans  overruns {f['overruns']:3d}  jitter "
            f"p50/p99/max {f['jitter_p50_ms']:.3f}/{f['jitter_p99_ms']:.3f}/"
            f"{f['jitter_max_ms']:.3f} ms  exec p99 {f['exec_p99_ms']:.3f} ms")


async def main_async(total: int, seed: int, baseline_s: float,
                     duty: float) -> dict[str, Any]:
    rng = Random(seed)
    weight_sum = sum(WEIGHTS.values())
    counts = {n: max(1, round(total * w / weight_sum)) for n, w in WEIGHTS.items()}
    counts["annex_a"] += total - sum(counts.values())
    transport = [n for n in WEIGHTS if n != "config"]
    schedule = [n for n in transport for _ in range(counts[n])]
    rng.shuffle(schedule)
    tally = Tally()
    with tempfile.TemporaryDirectory() as tmp:
        env = Env.create(Path(tmp) / "site")
        realtime = 50 if os.geteuid() == 0 else 0
        # Built before the node starts, as a node builds its parsers' keys and tables: the
        # scan's gc.freeze() at start then covers them too.
        targets: dict[str, Any] = {
            "annex_a": ft.AnnexA(), "validate_cli": ft.ValidateCli(),
            "command": ft.Commands(), "jwt": ft.Tokens(), "cbor": ft.Telemetry(),
            "sensor_node": ft.SensorNode(), "config": ft.Config(Path(tmp))}
        async with running(env, "rack.toml", rate_per_s=100_000.0, burst=100_000,
                           overrides={"node": {"scan_period_ms": 10,
                                               "realtime_priority": realtime}}) as r:
            targets["http"] = ft.Http(r)
            targets["opcua"] = ft.OpcUa(r.node)
            await targets["http"].start()
            try:
                node = r.node
                # the node's thread (this one: the fuzzing shares the scan's loop) while it runs
                fifo = os.sched_getscheduler(0) == os.SCHED_FIFO
                warm = Tally()
                await feed_stream([n for n in WEIGHTS for _ in range(WARMUP_CASES)], targets,
                                  Random(seed + 1), warm)
                if warm.crashes:
                    tally.by_class.update({f"warmup_{k}": v for k, v in warm.by_class.items()})
                await asyncio.sleep(1.0)  # warm-up: first scans, the HTTPS sampler
                reset_scan(node)
                await asyncio.sleep(baseline_s)
                base = scan_figures(node)
                print(line("baseline: scanning, no fuzzing", base), flush=True)
                reset_scan(node)
                await busy(baseline_s, duty)
                base_busy = scan_figures(node)
                print(line("baseline: loop kept busy, no parsing", base_busy), flush=True)
                reset_scan(node)
                pauses = GcPauses()
                gc.callbacks.append(pauses)
                t0 = time.perf_counter()
                try:
                    with Timed(NonceJournal, "append") as journal:
                        await feed_stream(schedule, targets, rng, tally, duty)
                finally:
                    gc.callbacks.remove(pauses)
                fuzz_s = time.perf_counter() - t0
                during = scan_figures(node)
                print(line(f"fuzzing {len(schedule)} transport cases", during), flush=True)
                gcf, jf = pauses.figures(), journal.figures()
                print(f"garbage collections while fuzzing: {gcf['collections']}, longest "
                      f"{gcf['max_ms']:.2f} ms, {gcf['total_ms']:.0f} ms in all; nonce journal "
                      f"appends (fdatasync, in the scan's thread): {jf['calls']}, longest "
                      f"{jf['max_ms']:.2f} ms, {jf['total_ms']:.0f} ms in all", flush=True)
                reset_scan(node)
                t1 = time.perf_counter()
                await feed_stream(["config"] * counts["config"], targets, rng, tally)
                config_s = time.perf_counter() - t1
                cfg = scan_figures(node)
                print(line(f"fuzzing {counts['config']} configs", cfg), flush=True)
            finally:
                await targets["http"].close()
                targets["opcua"].close()
    for name, row in tally.by_class.items():
        refused = ", ".join(f"{k} {v}" for k, v in sorted(row["refused"].items(),
                                                          key=lambda kv: -kv[1]))
        crashes = sum(row["crashes"].values())
        print(f"{name:12} {row['cases']:6d} cases  accepted {row['accepted']:5d}  crashes "
              f"{crashes}  slowest {tally.slowest[name] * 1e3:.1f} ms  refused: {refused}")
    for example in tally.examples:
        print(example)
    if tally.generator_errors:
        print(f"{len(tally.generator_errors)} generator errors (no input made), e.g. "
              f"{tally.generator_errors[0]}")
    tally.slow.sort(reverse=True)
    print(f"{len(tally.slow)} inputs took over {SLOW_S * 1e3:g} ms to refuse or accept; the "
          f"slowest:")
    for took, name, text in tally.slow[:8]:
        print(f"  {took * 1e3:7.1f} ms  {name}: {text}")
    met = tally.crashes == 0 and during["overruns"] == 0
    print(f"{tally.cases} cases in {fuzz_s + config_s:.1f} s; targets: 0 crashes, 0 overruns "
          f"while fuzzing: {'met' if met else 'NOT met'}  (machine: {platform.machine()}, "
          f"{os.cpu_count()} cpus, Python {platform.python_version()}, scheduling "
          f"{'SCHED_FIFO' if fifo else 'normal'})")
    by_class = {n: {"cases": row["cases"], "accepted": row["accepted"],
                    "refused": row["refused"], "crashes": sum(row["crashes"].values())}
                for n, row in tally.by_class.items()}
    return {"cases": tally.cases, "crashes": tally.crashes, "by_class": by_class,
            "scan_10ms": {"overruns": during["overruns"],
                          "jitter_p99_ms": during["jitter_p99_ms"], **during},
            "scan_10ms_config_phase": cfg, "baseline_10ms": base,
            "baseline_busy_10ms": base_busy, "gc_while_fuzzing": gcf,
            "nonce_journal_appends": jf,
            "cases_per_s": round(tally.cases / (fuzz_s + config_s), 1), "seed": seed,
            "generator_errors": len(tally.generator_errors), "duty": duty,
            "scheduling": "SCHED_FIFO" if fifo else "normal", "targets_met": met}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 3,000 cases")
    parser.add_argument("--cases", type=int, default=None, help="number of cases")
    parser.add_argument("--seed", type=int, default=1, help="generator seed")
    parser.add_argument("--duty", type=float, default=1.0,
                        help="share of the loop's time the fuzzing may take (default 1: flat "
                             "out, a flood; 0.5: heavy traffic that leaves the loop idle half "
                             "the time)")
    args = parser.parse_args()
    total = args.cases or (3_000 if args.quick else 100_000)
    counter = LogCount()
    logging.basicConfig(level=logging.WARNING, handlers=[counter])
    start = time.monotonic()
    result = asyncio.run(main_async(total, args.seed, 3.0 if args.quick else 20.0, args.duty))
    result["log_records"] = dict(counter.counts)
    for text, n in counter.errors.most_common(5):
        print(f"logged at ERROR {n} times: {text}")
    result["run_s"] = round(time.monotonic() - start, 1)
    print_json_line(result)


if __name__ == "__main__":
    main()
