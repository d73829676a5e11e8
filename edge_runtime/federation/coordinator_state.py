"""Site coordinator liveness, after Sparkplug 3.0's host application STATE (issue 8, finding 7).

Each coordinator instance keeps one retained message on
`pswd/v1/{site}/coordinator/{instance}/state`:

    {"PSWD_version": "1.0", "timestamp": "2026-12-06T01:00:00.000Z", "site": "s1",
     "instance": "site-01", "online": true}

and registers the same body with `"online": false` (and a "reason") as its MQTT will, with
the same timestamp, so the broker marks it offline when it dies without a DISCONNECT (kill,
crash, cable; after 1.5 x keepalive at most); on a clean stop it publishes the offline
state itself. The timestamp is the one of the connection the state belongs to, and each new
connection takes a later one: a receiver ignores an offline state older than the online
state it holds for that instance (the late will of a connection already replaced).

Nodes subscribe to `pswd/v1/{site}/coordinator/+/state` and treat "no instance online" as a
lost site link (federation/link_loss.py), unless `[mqtt] require_coordinator = false`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from edge_runtime import PSWD_VERSION
from edge_runtime.messages.models import parse_datetime


def state_json(site: str, instance: str, *, online: bool, timestamp: str,
               reason: str = "") -> bytes:
    """The retained state (online) or the will / clean-stop body (offline)."""
    doc: dict[str, object] = {"PSWD_version": PSWD_VERSION, "timestamp": timestamp, "site": site,
                              "instance": instance, "online": online}
    if reason:
        doc["reason"] = reason
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class CoordinatorState:
    """One state message read back."""

    online: bool
    timestamp: float  # UTC epoch s of the connection it belongs to


def parse_state(payload: bytes) -> CoordinatorState:
    """A coordinator state; ValueError naming the field when it is not one."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        raise ValueError("(root): not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("(root): not a JSON object")
    online = doc.get("online")
    if not isinstance(online, bool):
        raise ValueError(f"online: must be true or false, got {online!r}"[:120])
    try:
        ts = parse_datetime(str(doc.get("timestamp"))).timestamp()
    except ValueError as exc:
        raise ValueError(f"timestamp: {exc}") from None
    return CoordinatorState(online, ts)


class CoordinatorPresence:
    """Which coordinator instances of the site are online, from their retained states."""

    def __init__(self) -> None:
        self._online: dict[str, float] = {}  # instance -> timestamp of its online state
        self.invalid = 0

    @property
    def online(self) -> tuple[str, ...]:
        return tuple(sorted(self._online))

    def update(self, instance: str, payload: bytes) -> None:
        """One message on the instance's state topic (empty: the retained state was cleared)."""
        if not payload:
            self._online.pop(instance, None)
            return
        try:
            st = parse_state(payload)
        except ValueError:
            self.invalid += 1  # not a state: changes nothing (the broker ACL is the fence)
            return
        if st.online:
            self._online[instance] = st.timestamp
        elif st.timestamp >= self._online.get(instance, -1.0):
            self._online.pop(instance, None)  # older: the late will of a replaced connection

    def clear(self) -> None:
        """The broker link is gone: nothing is known until the retained states come again."""
        self._online.clear()
