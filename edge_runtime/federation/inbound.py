"""Messages arriving on `pswd/v1/{site}/{node}/cmd/{kind}`, checked into typed requests. Sans-IO.

    kind                                        payload
    thermal_control, battery_control,           {"PSWD_version": "1.0", "timestamp": RFC 3339,
    grid_signal                                  "action": "set_output" | "release_output",
                                                 "point": "device.point", "value": number,
                                                 optional "command_id", "signature", "nonce",
                                                 "role" (for the signature check)}
    rebirth                                     empty, or any JSON object
    workload                                    an Annex A.1 announcement (extra properties
                                                 allowed: the site adds "site_decision",
                                                 whose "roles" names the roles to prepare)
    prepare (pswd/v1/{site}/workload/prepare)   the same, from the site coordinator

With a verifier (`[mqtt] command_keys`), every kind but rebirth must carry a valid signed
envelope (security/signing.py), the A.1 kinds included: nothing unsigned changes anything.
The request then acts with the role that signed it; unsigned (no keys on this node), with the
channel's `role`. Which output the request may move is not decided here but by the rights
table (core/authority.py), checked by the command path for every transport.

Anything else raises Invalid(category, reason, field); the link answers it on the node's
error topic and counts it by category: unknown_topic, retained, oversized, malformed (not
UTF-8 JSON, not an object), schema (a field missing, mistyped or unknown), refused (unknown
point, out of range, failed signature).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from edge_runtime import PSWD_VERSION
from edge_runtime.core.commands import ReleaseOutput, SetOutput
from edge_runtime.core.image import OutOfRange, UnknownPoint
from edge_runtime.federation.topics import COMMAND_KINDS
from edge_runtime.messages.annex_a import ROOT, decode_json, parse_message
from edge_runtime.messages.models import MessageError, parse_datetime

CONTROL_FIELDS = frozenset({"PSWD_version", "timestamp", "action", "point", "value",
                            "command_id", "signature", "nonce", "role"})
KINDS = (*COMMAND_KINDS, "prepare")  # prepare: the site-wide workload/prepare topic
Verifier = Callable[[str, dict[str, Any]], "str | None"]


class Invalid(Exception):
    """A message refused: category (counted), reason (for people), field: the JSON path at
    fault, "$" for the message as a whole (never None: every refusal names its field)."""

    def __init__(self, category: str, reason: str, field: str = "$") -> None:
        super().__init__(reason)
        self.category, self.reason, self.field = category, reason, field


@dataclass(frozen=True, slots=True)
class Rebirth:
    """Republish the birth under a new session."""


@dataclass(frozen=True, slots=True)
class WorkloadNotice:
    """An announced workload, forwarded by the site so the node can prepare."""

    workload_id: str
    site_decision: str | None
    announcement: Any  # edge_runtime.messages.models.WorkloadAnnouncement
    roles: tuple[str, ...] | None = None  # None: every node it reaches
    role: str = ""  # the user role that signed it ("" unsigned: the channel's)


Request = SetOutput | ReleaseOutput | Rebirth | WorkloadNotice


class Outputs(Protocol):
    """The part of the process image a command is checked against."""

    @property
    def outputs_info(self) -> Mapping[str, Any]:
        """Output name -> its PointInfo."""
        ...

    def check_output(self, name: str, value: float) -> Any:
        """Raise UnknownPoint / OutOfRange / TypeError if value cannot go to output name."""
        ...


def parse_command(kind: str, payload: bytes, *, retain: bool, max_bytes: int, image: Outputs,
                  verify: Verifier | None = None, role: str = "",
                  transport: str = "mqtt") -> Request:
    """The request a `cmd/{kind}` message makes, or Invalid saying why it is refused.

    `role`: what an unsigned request acts as (the channel's role; ignored with `verify`).
    `transport` prefixes the command's source ("mqtt.grid_signal"; the HTTPS server's POSTs
    of the same envelope are "https.grid_signal"), so both are checked alike."""
    if kind not in KINDS:
        raise Invalid("unknown_topic", f"unknown command kind {kind!r}; one of "
                      f"{', '.join(COMMAND_KINDS)}", "topic")
    if retain:  # a retained command would be applied again at every reconnect
        raise Invalid("retained", "retained commands are refused; publish with retain false",
                      "retain")
    if len(payload) > max_bytes:
        raise Invalid("oversized", f"message is {len(payload)} bytes, larger than the "
                      f"{max_bytes}-byte limit", "$")
    if kind == "rebirth" and not payload.strip():
        return Rebirth()
    try:
        doc = decode_json(payload)
    except MessageError as exc:  # the field of a NaN or Infinity, else the whole message
        where = exc.problems[0].path if exc.problems else ROOT
        raise Invalid("malformed", str(exc), "$" if where == ROOT else where) from None
    if not isinstance(doc, dict):
        raise Invalid("malformed", "expected a JSON object", "$")
    if kind == "rebirth":
        return Rebirth()
    if verify is not None:
        role = _verified_role(kind, doc, verify)
    if kind in ("workload", "prepare"):
        return _workload(doc, role)
    return _control(kind, doc, image, role, transport)


def _verified_role(kind: str, doc: dict[str, Any], verify: Verifier) -> str:
    """The role that signed `doc`, or Invalid("refused") naming the envelope field at fault."""
    if kind not in ("workload", "prepare"):
        _check_envelope(doc)  # schema first: a malformed command says so, not "signature"
    if (why := verify(kind, doc)) is not None:
        # the verifier's reasons start with the envelope field at fault ("nonce: ...")
        field = why.split(":", 1)[0]
        known = CONTROL_FIELDS | {"signed_at"}
        raise Invalid("refused", why, field if field in known else "signature")
    return str(doc.get("role", ""))


def _workload(doc: dict[str, Any], role: str) -> WorkloadNotice:
    try:
        announcement = parse_message(json.dumps(doc))
    except MessageError as exc:
        raise Invalid("schema", str(exc), exc.problems[0].path if exc.problems else "$"
                      ) from None
    decision = doc.get("site_decision")
    status = decision.get("approval_status") if isinstance(decision, dict) else None
    roles = decision.get("roles") if isinstance(decision, dict) else None
    if roles is not None and (not isinstance(roles, list)
                              or not all(isinstance(r, str) for r in roles)):
        raise Invalid("schema", f"site_decision.roles: expected a list of role names, "
                      f"got {roles!r}"[:200], "site_decision.roles")
    return WorkloadNotice(str(getattr(announcement, "workload_id", "?")),
                          status if isinstance(status, str) else None, announcement,
                          None if roles is None else tuple(roles), role)


def _check_envelope(doc: dict[str, Any]) -> None:
    for key in ("PSWD_version", "timestamp", "action", "point"):
        if not isinstance(doc.get(key), str):
            raise Invalid("schema", f"{key}: required text, got {doc.get(key)!r}"[:200], key)
    if doc["PSWD_version"] != PSWD_VERSION:
        raise Invalid("schema", f"PSWD_version: expected '1.0', got {doc['PSWD_version']!r}",
                      "PSWD_version")
    try:
        parse_datetime(doc["timestamp"])
    except ValueError as exc:
        raise Invalid("schema", f"timestamp: {exc}", "timestamp") from None
    if extra := sorted(set(doc) - CONTROL_FIELDS):
        raise Invalid("schema", f"unknown field(s) {', '.join(extra)}", extra[0])


def _control(kind: str, doc: dict[str, Any], image: Outputs, role: str,
             transport: str = "mqtt") -> SetOutput | ReleaseOutput:
    _check_envelope(doc)
    action, point, source = doc["action"], doc["point"], f"{transport}.{kind}"
    if action not in ("set_output", "release_output"):
        raise Invalid("schema", f"action: expected 'set_output' or 'release_output', "
                      f"got {action!r}", "action")
    try:
        if action == "release_output":
            if point not in image.outputs_info:
                raise UnknownPoint(point)
            return ReleaseOutput(point, source, role=role)  # releases only what role holds
        value = doc.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise Invalid("schema", f"value: expected a finite number, got {value!r}", "value")
        image.check_output(point, value)  # refused now, with a reason; the scan checks again
        return SetOutput(point, float(value), source, role=role)
    except (UnknownPoint, OutOfRange, TypeError) as exc:
        raise Invalid("refused", str(exc),
                      "point" if isinstance(exc, UnknownPoint) else "value") from None
