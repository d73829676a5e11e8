"""The one JSON line every benchmark ends with: strict JSON, no NaN or Infinity.

`json.dumps` writes float('nan') as the bare token NaN, which is not JSON: a strict reader
(jq, JavaScript's JSON.parse, Python's json with parse_constant raising) refuses the whole
line. A figure that could not be measured (no samples, a division by zero) is written as null
instead, and `json.dumps(..., allow_nan=False)` then guarantees that nothing else slipped
through.

    from bench._jsonline import print_json_line
    print_json_line({"p99_ms": p99, ...})
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_line(obj: Any) -> str:
    """`obj` as one line of strict JSON (non-finite floats as null)."""
    return json.dumps(finite(obj), allow_nan=False)


def print_json_line(obj: Any) -> None:
    """Print `obj` as the benchmark's closing JSON line (flushed: a parent may be reading)."""
    print(json_line(obj), flush=True)
