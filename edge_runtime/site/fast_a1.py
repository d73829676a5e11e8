"""A fast path for plainly valid Annex A.1 announcements (the coordinator's hot path).

jsonschema's generic walk plus the generic model builder cost about 0.3 ms per announcement,
more than the admission decision itself. This checks the A.1 schema's rules directly and
builds the model by hand. It is conservative: it returns None for anything it is not sure
about (a float where an integer goes, a date-time it cannot read, any wrong value), and the
caller then runs the full validator, which finds and words the problems. So it may only
ever accept what the full path accepts, a property tests/test_site_fast_a1.py checks on
generated documents and on the Annex A vectors.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from edge_runtime import PSWD_VERSION
from edge_runtime.messages.annex_a import MessageError, decode_json
from edge_runtime.messages.models import (
    FlexibilityParameters,
    PowerProfile,
    PriorityLevel,
    ThermalProfile,
    TimingConstraints,
    WorkloadAnnouncement,
    WorkloadType,
    parse_datetime,
)

_TYPES = {t.value: t for t in WorkloadType}
_PRIORITIES = {p.value: p for p in PriorityLevel}


class _Unsure(Exception):
    """Leave this document to the full validator."""


def _num(doc: dict[str, Any], key: str, minimum: float | None = None,
         required: bool = False) -> float | None:
    if key not in doc:
        if required:
            raise _Unsure
        return None
    v = doc[key]
    if type(v) is not int and type(v) is not float:  # bool is not a number here
        raise _Unsure
    if not math.isfinite(v) or (minimum is not None and v < minimum):
        raise _Unsure
    return float(v)


def _int(doc: dict[str, Any], key: str, minimum: int) -> int | None:
    if key not in doc:
        return None
    v = doc[key]
    if type(v) is not int or v < minimum:
        raise _Unsure
    return v


def _bool(doc: dict[str, Any], key: str) -> bool | None:
    if key not in doc:
        return None
    v = doc[key]
    if type(v) is not bool:
        raise _Unsure
    return v


def _time(doc: dict[str, Any], key: str, required: bool = False) -> datetime | None:
    if key not in doc:
        if required:
            raise _Unsure
        return None
    v = doc[key]
    if type(v) is not str:
        raise _Unsure
    try:
        return parse_datetime(v)
    except ValueError:
        raise _Unsure from None


def _obj(doc: dict[str, Any], key: str) -> dict[str, Any] | None:
    if key not in doc:
        return None
    v = doc[key]
    if type(v) is not dict:
        raise _Unsure
    return v


def _build(doc: Any) -> WorkloadAnnouncement:
    if type(doc) is not dict or doc.get("PSWD_version") != PSWD_VERSION \
            or doc.get("message_type") != "workload_announcement":
        raise _Unsure
    wid, wtype = doc.get("workload_id"), doc.get("workload_type")
    if type(wid) is not str or type(wtype) is not str or wtype not in _TYPES:
        raise _Unsure
    timestamp = _time(doc, "timestamp", required=True)
    pp = _obj(doc, "power_profile")
    if pp is None:
        raise _Unsure
    power = PowerProfile(
        peak_power_mw=_num(pp, "peak_power_mw", 0, True) or 0.0,
        baseline_power_mw=_num(pp, "baseline_power_mw", 0, True) or 0.0,
        ramp_rate_mw_per_sec=_num(pp, "ramp_rate_mw_per_sec", 0, True) or 0.0,
        duration_estimate_sec=_int(pp, "duration_estimate_sec", 0),
        temporal_resolution_ms=_int(pp, "temporal_resolution_ms", 100))
    thermal = None
    if (tp := _obj(doc, "thermal_profile")) is not None:
        thermal = ThermalProfile(_num(tp, "heat_generation_kw", 0),
                                 _num(tp, "preferred_operating_temp_c"),
                                 _num(tp, "critical_temp_threshold_c"))
    flex = None
    if (fp := _obj(doc, "flexibility_parameters")) is not None:
        prio = fp.get("priority_level")
        if "priority_level" in fp and (type(prio) is not str or prio not in _PRIORITIES):
            raise _Unsure
        flex = FlexibilityParameters(_bool(fp, "throttling_capability"),
                                     _int(fp, "delay_tolerance_sec", 0),
                                     _bool(fp, "migration_capable"),
                                     _PRIORITIES[prio] if prio is not None else None)
    timing = None
    if (tc := _obj(doc, "timing_constraints")) is not None:
        timing = TimingConstraints(_time(tc, "earliest_start_time"),
                                   _time(tc, "latest_completion_time"), _time(tc, "deadline"))
    assert timestamp is not None
    return WorkloadAnnouncement(timestamp, wid, _TYPES[wtype], power, thermal, flex, timing)


def parse_announcement_fast(raw: bytes) -> WorkloadAnnouncement | None:
    """The A.1 in `raw` when it is plainly valid, else None (then use parse_message)."""
    try:
        return _build(decode_json(raw))
    except (_Unsure, MessageError):
        return None
