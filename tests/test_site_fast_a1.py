"""The A.1 fast path never accepts what the full validator rejects, and agrees when it accepts."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.messages.annex_a import MessageError, parse_message
from edge_runtime.site.fast_a1 import parse_announcement_fast

VECTORS = Path(__file__).parent / "vectors" / "annex_a"
FULL: dict[str, Any] = {
    "PSWD_version": "1.0", "message_type": "workload_announcement",
    "timestamp": "2027-01-15T08:00:00.250+01:00", "workload_id": "job-7",
    "workload_type": "ai_training",
    "power_profile": {"peak_power_mw": 120, "baseline_power_mw": 20.5,
                      "ramp_rate_mw_per_sec": 40.0, "duration_estimate_sec": 3600,
                      "temporal_resolution_ms": 100},
    "thermal_profile": {"heat_generation_kw": 110000.0, "preferred_operating_temp_c": -5,
                        "critical_temp_threshold_c": 85.5},
    "flexibility_parameters": {"throttling_capability": True, "delay_tolerance_sec": 0,
                               "migration_capable": False, "priority_level": "critical"},
    "timing_constraints": {"earliest_start_time": "2027-01-15T09:00:00Z",
                           "latest_completion_time": "2027-01-16T09:00:00Z",
                           "deadline": "2027-01-16T10:00:00Z"},
    "extra_vendor_field": {"anything": [1, 2]},
}
ODD_VALUES: list[Any] = [None, True, False, 0, -1, -0.5, 1.5, 5.0, 99, 100, 1e308, "", "x",
                         "ai_training", "critical", "2027-01-15T08:00:00Z",
                         "2027-02-30T08:00:00Z", "2027-01-15T08:00:00Z\n",
                         "9999-12-31T23:59:59-01:00", [], {}, [1], {"a": 1}]


def full_result(doc: Any) -> Any:
    try:
        return parse_message(json.dumps(doc))
    except MessageError:
        return None


def paths(doc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((*prefix, k))
            out.extend(paths(v, (*prefix, k)))
    return out


def mutate(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths(doc))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if rng.random() < 0.2:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
    return doc


def test_valid_documents_take_the_fast_path_and_agree() -> None:
    for doc in [FULL] + [json.loads(p.read_text()) for p in sorted(VECTORS.glob("valid_w*"))]:
        fast = parse_announcement_fast(json.dumps(doc).encode())
        assert fast is not None and fast == full_result(doc)


@pytest.mark.timeout(60)
def test_fast_path_never_accepts_what_the_full_validator_rejects() -> None:
    rng = random.Random(20261127)
    accepted = rejected = 0
    for _ in range(1500):
        doc = mutate(FULL, rng)
        fast = parse_announcement_fast(json.dumps(doc).encode())
        full = full_result(doc)
        if fast is not None:
            assert fast == full, doc
            accepted += 1
        elif full is None:
            rejected += 1
    assert accepted > 50 and rejected > 500  # both branches really exercised


def test_invalid_vectors_and_non_json_fall_back() -> None:
    for p in sorted(VECTORS.glob("invalid_w*")):
        assert parse_announcement_fast(p.read_bytes()) is None
    for raw in [b"", b"{", b"[]", b"null", b'{"PSWD_version": "1.0"}', b"\xff",
                b'{"a": NaN}']:
        assert parse_announcement_fast(raw) is None
