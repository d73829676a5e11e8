"""Node state on `pswd/v1/{site}/{node}/state`: birth and death JSON, session and message
sequence numbers. Sans-IO apart from the small session file.

Birth (retained, QoS 1, published first on every connection and on a rebirth command):

    {"PSWD_version": "1.0", "timestamp": "2026-11-27T00:00:00.125Z", "state": "online",
     "site": "s1", "node": "cdu-1", "role": "cdu", "firmware_version": "0.1.0", "session": 7,
     "telemetry": {"encoding": "cbor", "period_ms": 100,
                   "points": [{"alias": 0, "name": "pump1.flow", "unit": "L/min",
                               "type": "float"}, ...]}}

Death (retained, QoS 1): the same identity with "state": "offline", "reason" and "session".
It is registered as the MQTT will at CONNECT, so the broker publishes it when the connection
dies without a DISCONNECT (crash, kill -9, cable, keepalive expiry); on a clean shutdown the
node publishes it itself. The will is fixed at CONNECT, so its "timestamp" is the connection
time and its "session" is the session of that connection's first birth; a death ends every
session >= its own (a rebirth moves the session on without reconnecting).

Sessions: +1 on every birth (connect or rebirth), persisted in `state_dir/session` so a node
restarted after kill -9 never reuses one. Telemetry batches carry (session, seq), seq 0 after
each birth (edge_runtime.messages.telemetry), so receivers tell gaps from duplicates.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_runtime import PSWD_VERSION
from edge_runtime.messages.models import format_datetime, parse_datetime
from edge_runtime.messages.telemetry import PointDef, PointType, declare_points


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a node is, as its births and deaths say."""

    site: str
    node: str
    role: str
    firmware_version: str


def timestamp(wall_s: float) -> str:
    """UTC epoch seconds as RFC 3339 text with milliseconds."""
    return format_datetime(datetime.fromtimestamp(round(wall_s, 3), UTC))


def birth_json(who: Identity, *, session: int, wall_s: float, points: Iterable[PointDef],
               period_ms: int) -> bytes:
    """The retained online state with the full point list (aliases, units, types)."""
    return _dump({
        **_head(who, wall_s), "state": "online", "session": session,
        "telemetry": {"encoding": "cbor", "period_ms": period_ms,
                      "points": [{"alias": p.alias, "name": p.name, "unit": p.unit,
                                  "type": p.data_type.value} for p in points]},
    })


def death_json(who: Identity, *, session: int, wall_s: float, reason: str) -> bytes:
    """The retained offline state (also the MQTT will)."""
    return _dump({**_head(who, wall_s), "state": "offline", "session": session,
                  "reason": reason})


def _head(who: Identity, wall_s: float) -> dict[str, Any]:
    return {"PSWD_version": PSWD_VERSION, "timestamp": timestamp(wall_s), "site": who.site,
            "node": who.node, "role": who.role, "firmware_version": who.firmware_version}


def _dump(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class NodeState:
    """A parsed state message, for receivers (the site coordinator, the demo view)."""

    node: str
    role: str
    online: bool
    session: int
    timestamp: datetime
    points: tuple[PointDef, ...] = ()
    reason: str = ""


def parse_state(raw: bytes) -> NodeState:
    """Parse a birth or death; ValueError naming the field when it is not one."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"state: not valid JSON: {exc}") from None
    except RecursionError:  # deep nesting is not a state; a ValueError is what callers catch
        raise ValueError("state: not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ValueError("state: expected a JSON object")
    for key, kind in (("node", str), ("role", str), ("state", str), ("session", int),
                      ("timestamp", str), ("PSWD_version", str)):
        if not isinstance(doc.get(key), kind) or isinstance(doc.get(key), bool):
            raise ValueError(f"state: {key}: expected {kind.__name__}, got {doc.get(key)!r}")
    if doc["state"] not in ("online", "offline"):
        raise ValueError(f"state: state: expected 'online' or 'offline', got {doc['state']!r}")
    points: tuple[PointDef, ...] = ()
    if doc["state"] == "online":
        try:
            points = tuple(PointDef(int(p["alias"]), str(p["name"]), str(p["unit"]),
                                    PointType(p["type"]))
                           for p in doc["telemetry"]["points"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # int(Infinity)
            raise ValueError(f"state: telemetry.points: {exc!r}") from None
    return NodeState(doc["node"], doc["role"], doc["state"] == "online", doc["session"],
                     parse_datetime(doc["timestamp"]), points, str(doc.get("reason", "")))


def point_list(inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> tuple[PointDef, ...]:
    """Aliases for a node's points: inputs, then outputs that are not also inputs, in name
    order so the same config always gives the same aliases. Values are PointInfo-like
    (a `unit` attribute). A read-back output (access rw) is reported by its input."""
    names = sorted(inputs) + sorted(n for n in outputs if n not in inputs)
    info = {**outputs, **inputs}
    return declare_points((n, str(getattr(info[n], "unit", "")), PointType.FLOAT) for n in names)


class SessionCounter:
    """The session sequence, persisted so a restarted node never reuses a session number."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "session"
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.current = int(self.path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            self.current = 0

    def next(self) -> int:
        """Advance and persist (write then rename: a crash leaves the old or the new value)."""
        self.current += 1
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{self.current}\n")
        os.replace(tmp, self.path)
        return self.current

    @property
    def upcoming(self) -> int:
        """The number the next birth will take (for the will registered before it)."""
        return self.current + 1
