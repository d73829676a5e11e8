"""Benchmark: the long run of the safety search (issue 8, deliverable 11).

The state machine of tests/test_safety_search.py (tests/safety_search/machine.py: one CDU node
in simulated time, plant faults, freezes, pauses, restarts, commands from every role over the
panel and the MQTT path, the safety invariants checked after every scan) with many more and
longer sequences than `make test` runs, on fresh random seeds, until the time budget is spent.

It prints the sequences, steps (actions) and scans tried, the violations found (target 0)
with each one's shrunk failing sequence, then:
- regression: the sequence of the unsafe path the search found in its first run (a pump
  start an isolation blocks re-armed the start-up bypass every scan: low-low flow never
  tripped; fixed in ba45c80), to show it stays fixed;
- baseline, measured in the same run: the search against each mutant of
  tests/safety_search/mutants.py (one safety rule broken on purpose), with the sequences and
  seconds it needed to find it: what a search of this size can see.

Ends with one JSON line:
    {"search": {"sequences": N, "steps": M, "scans": K, "violations": 0, "seconds": s, ...}}

    .venv/bin/python bench/safety_search.py [--quick] [--seconds 300] [--steps 100]

Seconds are wall time on a machine other processes may load; sequences and steps are what
count.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from bench._jsonline import print_json_line
from tests.safety_search.machine import (
    STATS,
    SafetySearch,
    Violation,
    reproduce_blocked_start,
)
from tests.safety_search.mutants import MUTANTS, applied


def _settings(examples: int, steps: int, shrink: bool = True) -> settings:
    phases = [Phase.generate, Phase.shrink] if shrink else [Phase.generate]
    return settings(max_examples=examples, stateful_step_count=steps, deadline=None,
                    database=None, derandomize=False, phases=phases, print_blob=False,
                    suppress_health_check=list(HealthCheck))


def _sequence(exc: BaseException) -> str:
    """The shrunk failing sequence hypothesis attaches to the exception."""
    return "\n".join(getattr(exc, "__notes__", [])) or "(no sequence recorded)"


def search(seconds: float, steps: int, batch: int) -> dict[str, Any]:
    """Batches of random sequences until `seconds` are spent; every violation with its
    shrunk sequence."""
    start = time.perf_counter()
    before = (STATS.sequences, STATS.steps, STATS.scans)
    found: list[str] = []
    while time.perf_counter() - start < seconds:
        try:
            run_state_machine_as_test(SafetySearch, settings=_settings(batch, steps))
        except Violation as exc:
            found.append(f"{exc}\n{_sequence(exc)}")
            print(f"VIOLATION: {exc}\n{_sequence(exc)}", flush=True)
    return {"sequences": STATS.sequences - before[0], "steps": STATS.steps - before[1],
            "scans": STATS.scans - before[2], "violations": len(found),
            "seconds": round(time.perf_counter() - start, 1), "found": found}


def hunt(cls: type[SafetySearch], budget_s: float, steps: int) -> dict[str, Any]:
    """How many sequences and seconds the search needs to find a violation (None: not in
    the budget)."""
    start = time.perf_counter()
    seq0 = STATS.sequences
    while time.perf_counter() - start < budget_s:
        try:
            run_state_machine_as_test(cls, settings=_settings(10, steps, shrink=False))
        except Violation as exc:
            return {"found": True, "sequences": STATS.sequences - seq0,
                    "seconds": round(time.perf_counter() - start, 2),
                    "invariant": str(exc).split(": ", 1)[1][:2], "first": str(exc)[:160]}
    return {"found": False, "sequences": STATS.sequences - seq0,
            "seconds": round(time.perf_counter() - start, 2), "invariant": None,
            "first": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="about 30 s in all")
    ap.add_argument("--seconds", type=float, default=300.0, help="time for the main search")
    ap.add_argument("--steps", type=int, default=100, help="actions per sequence")
    args = ap.parse_args()
    seconds = 20.0 if args.quick else args.seconds
    steps = 50 if args.quick else args.steps
    hunt_s = 10.0 if args.quick else 60.0
    logging.disable(logging.CRITICAL)  # thousands of events a second would flood the console

    print(f"safety search: {seconds:g} s of sequences of up to {steps} actions", flush=True)
    main_run = search(seconds, steps, batch=20)
    print(f"  sequences {main_run['sequences']}, steps {main_run['steps']}, scans "
          f"{main_run['scans']} ({main_run['scans'] * 0.1 / 3600:.1f} h of plant time), "
          f"violations {main_run['violations']} (target 0), {main_run['seconds']} s")
    print(f"  restarts {STATS.restarts}, watchdog trips {STATS.watchdog_trips}, latches "
          f"engaged {STATS.latches}, commands {STATS.commands} ({STATS.refused} refused), "
          f"site link losses {STATS.link_losses} ({STATS.site_holds_released} site holds "
          "released)")

    print("regression, the unsafe path found in the search's first run:")
    again = reproduce_blocked_start()
    print("  low-low flow trip under a leak isolation: " + (f"BACK: {again}" if again
                                                          else "holds"))

    print("baseline, the search against each safety rule broken on purpose:")
    mutants: dict[str, Any] = {}
    for name in sorted(MUTANTS):
        with applied(name):
            mutants[name] = hunt(SafetySearch, hunt_s, steps)
        m = mutants[name]
        print(f"  {name:30s} " + (f"found by {m['invariant']} after {m['sequences']} "
                                  f"sequences, {m['seconds']} s" if m["found"]
                                  else f"NOT found in {m['sequences']} sequences"))
    found = sum(m["found"] for m in mutants.values())
    print_json_line({"search": {
        "sequences": main_run["sequences"], "steps": main_run["steps"],
        "scans": main_run["scans"], "violations": main_run["violations"],
        "seconds": main_run["seconds"], "max_steps_per_sequence": steps,
        "regression_holds": again is None,
        "mutants_found": found, "mutants": len(mutants),
        "mutant_sequences_to_find": {n: m["sequences"] if m["found"] else None
                                     for n, m in mutants.items()}}})


if __name__ == "__main__":
    main()
