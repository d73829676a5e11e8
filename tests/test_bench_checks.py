"""The benchmarks' own checks: strict JSON lines, telemetry sequence bookkeeping, A.2 answer
validation and the safety bench's percentile, tested without running the benchmarks."""

from __future__ import annotations

import importlib
import json
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """bench/ on the import path (as when a benchmark runs as a script)."""
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("_jsonline")
    finally:
        sys.path.remove(str(BENCH))


def test_json_line_writes_null_for_nan_and_infinity_at_any_depth(bench: ModuleType) -> None:
    line = bench.json_line({"p99_ms": math.nan, "cases": [{"max": math.inf}, (1.5, -math.inf)],
                            "n": 3, "ok": True, "name": "x"})
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line) == {"p99_ms": None, "cases": [{"max": None}, [1.5, None]], "n": 3,
                                "ok": True, "name": "x"}


def test_every_benchmark_ends_with_the_strict_json_line() -> None:
    # A bare json.dumps prints NaN, which is not JSON: each bench's closing line goes through
    # print_json_line, and any other JSON it prints (to its own worker processes) is strict.
    benches = sorted(BENCH.glob("[!_]*.py"))
    assert len(benches) >= 10
    for path in benches:
        source = path.read_text()
        assert "print_json_line(" in source, f"{path.name} does not use bench/_jsonline"
        for call in re.findall(r"print\(json\.dumps\((.*)", source):
            assert "allow_nan=False" in call, f"{path.name}: print(json.dumps({call}"


def test_sequence_check_counts_gaps_duplicates_and_order(bench: ModuleType) -> None:
    seq = importlib.import_module("_seqcheck").SequenceCheck()
    for stream, n in ((("a", 1), 0), (("a", 1), 1), (("a", 1), 3), (("a", 1), 2),
                      (("a", 1), 3), (("a", 2), 0), (("a", 2), 2)):
        seq.add(stream, n)
    # session 1: 0 1 3 2 3 -> 2 came after 3 (out of order), 3 twice; session 2: 1 missing
    assert seq.summary() == {"streams": 2, "batches": 7, "seq_gaps": 1, "seq_duplicates": 1,
                             "seq_out_of_order": 1}
    assert not seq.clean()
    clean = importlib.import_module("_seqcheck").SequenceCheck()
    assert all(clean.add("s", n) for n in range(5)) and clean.clean()
    assert clean.add("s", 4) is False  # a duplicate's samples are not counted again


def test_announce_answers_are_checked_as_a2_with_the_decision(bench: ModuleType) -> None:
    announce = importlib.import_module("announce_latency")
    a2 = {"PSWD_version": "1.0", "message_type": "infrastructure_response",
          "timestamp": "2027-01-15T08:00:00Z", "workload_id": "w-1",
          "approval_status": "approved", "approved_power_mw": 0.05}
    assert announce.a2_failure(json.dumps(a2).encode(), "w-1") is None
    assert announce.a2_failure(json.dumps(a2).encode(), "w-2") == "A.2 for another workload_id"
    rejected = {**a2, "approval_status": "rejected"}
    assert announce.a2_failure(json.dumps(rejected).encode(), "w-1") == (
        "decision rejected, expected approved")
    error = {"error": "invalid announcement", "field": "power_profile"}
    assert announce.a2_failure(json.dumps(error).encode(), "w-1").startswith(
        "not a valid Annex A message")
    assert announce.a2_failure(b"not json", "w-1").startswith("not a valid Annex A message")
    assert announce.echo_failure(b"abc", b"abc") is None
    assert announce.echo_failure(b"abd", b"abc") is not None


def test_safety_p99_is_nearest_rank_and_not_the_maximum_with_quick_trials(
        bench: ModuleType) -> None:
    safety = importlib.import_module("safety_latency")
    values = [float(i) for i in range(1, 121)]  # --quick: 120 trials
    assert safety.nearest_rank(values, 99) == 119.0  # the 119th of 120, below the maximum
    assert safety.nearest_rank(values[:100], 99) == 99.0  # 100 trials: one above it
    assert safety.nearest_rank(values[:99], 99) == 99.0  # fewer: it is the maximum
    f = safety.figures([v / 1000 for v in values], 0.1)
    assert f["n"] == 120 and f["above_p99"] == 1 and f["p99_ms"] < f["max_ms"]
