"""What the POST endpoints do: control commands into the command queue, announcements to the
site coordinator's admission. Sans-IO (the app hands in bytes and the token's role).

Control POSTs (/PSWD/thermal/control, /PSWD/grid/signal, /PSWD/battery/control) carry the
same signed envelope as the MQTT command topics (federation/inbound.py, security/signing.py:
the MAC names the node and the kind, thermal_control, grid_signal or battery_control), and
are parsed by the same parse_command, with source "https.<kind>": the command path then
checks them exactly like an MQTT command (rights table for the action and for the channel,
precedence). The node's one CommandVerifier (shared with its MQTT link when it has one)
checks the envelope, so a command is taken once whichever transport it arrives on. The
envelope's role must be the token's role.

    refusal                                                      status
    not JSON, not an object                                      400
    no valid envelope signature, unknown key, replayed nonce,    401
      issued too long ago
    role without the right (rights table, envelope role for     403
      the kind), envelope signed as another role than the token
    a local hold (precedence), a technician force or an          409
      interlock drives the output now
    a field missing or mistyped, unknown point, value out of     422
      range
An accepted command is queued (202) and applied, audited, at the next scan.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, Protocol

from edge_runtime.core.authority import Refused, Rights
from edge_runtime.core.commands import CommandQueue, ReleaseOutput, SetOutput
from edge_runtime.federation.inbound import Invalid, Verifier, parse_command
from edge_runtime.messages.annex_a import (
    ROOT,
    MessageError,
    WorkloadAnnouncement,
    decode_json,
    parse_as,
)
from edge_runtime.servers.https.errors import ApiError
from edge_runtime.site.coordinator import SiteCoordinator

CONTROL_KINDS = {"/PSWD/thermal/control": "thermal_control",
                 "/PSWD/grid/signal": "grid_signal",
                 "/PSWD/battery/control": "battery_control"}
ANNOUNCE_KINDS = ("announce", "workload")  # the action and the channel an A.1 is checked for
_VERIFIER_FIELDS = ("signature", "role", "nonce", "timestamp", "signed_at")


class CommandPath(Protocol):
    """What a control POST needs of the node (edge_runtime.core.commands.ManualOutputs)."""

    rights: Rights

    def screen(self, cmd: SetOutput | ReleaseOutput) -> None:
        """Refused (audited) if the command path would refuse `cmd` now."""
        ...


def _field(path: str) -> str:
    return "$" if path in (ROOT, "") else path


class ControlGate:
    """Turns a control POST into a queued command, or an ApiError saying why not."""

    def __init__(self, *, image: Any, manual: CommandPath, commands: CommandQueue,
                 owner: Callable[[str], str], wall: Callable[[], float],
                 verifier: Verifier | None, max_bytes: int) -> None:
        self.image = image
        self.manual = manual
        self.commands = commands
        self.owner = owner  # output -> what drives it after the last scan ("" for control)
        self.wall = wall
        self.verifier = verifier
        self.max_bytes = max_bytes
        self.accepted = 0

    def submit(self, kind: str, body: bytes, role: str) -> dict[str, Any]:
        """Check and queue one control command signed by and for `role`."""
        if self.verifier is None:
            raise ApiError(403, "this node holds no command keys: control over HTTPS takes "
                           "signed commands only ([https] or [mqtt] command_keys)", "signature")
        verifier = self.verifier
        verdict: list[str | None] = []

        def verify(k: str, doc: dict[str, Any]) -> str | None:
            signer = doc.get("role")
            if signer != role:  # before the verifier: a mismatch must not spend the nonce
                verdict.append("forbidden")
                return f"role: signed as {signer!r}, but the token is for {role}"
            why = verifier(k, doc)
            verdict.append(why)
            return why

        try:
            cmd = parse_command(kind, body, retain=False, max_bytes=self.max_bytes,
                                image=self.image, verify=verify, role=role, transport="https")
        except Invalid as bad:
            raise _api_error(bad, verdict) from None
        if not isinstance(cmd, SetOutput | ReleaseOutput):  # parse_command of a control kind
            raise ApiError(422, f"not a control command: {cmd!r}", "action")
        try:
            self.manual.screen(cmd)  # rights and precedence; a refusal is audited there
        except Refused as exc:
            why = str(exc)
            if why.startswith("precedence"):
                raise ApiError(409, why, "point") from None
            raise ApiError(403, why, "role") from None
        driver = self.owner(cmd.point)
        if isinstance(cmd, SetOutput) and driver and driver != "safe_image":
            # A force or an engaged interlock outranks any remote command (ARCHITECTURE 2):
            # the command would only be overridden, so the sender hears it now.
            why = (f"interlock: {cmd.point} is driven by {driver}; a remote command never "
                   f"overrides a technician force or an interlock")
            self.commands.record(self.wall(), cmd, False, why)
            raise ApiError(409, why, "point")
        self.commands.submit(cmd)
        self.accepted += 1
        doc = json.loads(body)
        return {"accepted": True, "kind": kind, "action": doc.get("action"), "point": cmd.point,
                "command_id": doc.get("command_id"), "source": cmd.source, "role": role,
                "applies": "at the next scan (checked again and audited there)"}


def _api_error(bad: Invalid, verdict: list[str | None]) -> ApiError:
    """The status of an Invalid from parse_command (see the module docstring)."""
    if bad.category in ("malformed", "unknown_topic"):
        return ApiError(400, bad.reason, bad.field)
    if bad.category == "oversized":
        return ApiError(413, bad.reason, bad.field)
    if bad.category == "refused" and verdict and verdict[-1] is not None:
        forbidden = verdict[-1] == "forbidden" or " may not send " in bad.reason
        field = bad.field if bad.field in _VERIFIER_FIELDS else "signature"
        return ApiError(403 if forbidden else 401, bad.reason, field)
    return ApiError(422, bad.reason, bad.field)


class Admission(Protocol):
    """Who answers an A.1 with an A.2 (the site coordinator)."""

    def announce(self, payload: bytes, now: float) -> tuple[bytes | None, dict[str, Any]]:
        """(the A.2 body, None) or (None, an error document with `errors` by field)."""
        ...


class CoordinatorAdmission:
    """The site coordinator's admission for an A.1 that came over HTTPS: the same decision,
    booking and workload/prepare forwarding as one that came over MQTT."""

    def __init__(self, coordinator: SiteCoordinator) -> None:
        self.coordinator = coordinator
        # The handler runs on the MQTT client's network thread under the coordinator's lock;
        # an HTTPS announcement takes the same lock.
        self._lock: threading.Lock = coordinator._lock

    def announce(self, payload: bytes, now: float) -> tuple[bytes | None, dict[str, Any]]:
        """Decide, book and forward as the coordinator does; (A.2, {}) or (None, error)."""
        handler = self.coordinator.handler
        with self._lock:
            out = handler.on_announce(payload, now, None, None)
        self.coordinator.publish(out)  # workload/response, workload/prepare (offline: logged)
        prefix = f"{handler.topics.base}/workload/response/"
        for o in out:
            if o.topic.startswith(prefix):
                return o.payload, {}
        errors = [json.loads(o.payload) for o in out if o.topic == handler.me.error]
        return None, errors[0] if errors else {"error": "no answer", "errors": []}


def announce(body: bytes, role: str, rights: Rights, admission: Admission | None,
             now: float) -> bytes:
    """The A.2 answering the A.1 in `body`, or an ApiError (400, 403, 404, 422)."""
    try:
        doc = decode_json(body)
    except MessageError as exc:
        where = exc.problems[0].path if exc.problems else ROOT
        raise ApiError(400 if where == ROOT else 422, str(exc), _field(where)) from None
    if not isinstance(doc, dict):
        raise ApiError(400, "expected a JSON object (an Annex A.1 announcement)", "$")
    try:
        parse_as(WorkloadAnnouncement, doc)
    except MessageError as exc:
        raise ApiError(422, str(exc), _field(exc.problems[0].path if exc.problems else ROOT)
                       ) from None
    for kind in ANNOUNCE_KINDS:
        try:
            rights.check(role, kind)
        except Refused as exc:
            raise ApiError(403, str(exc), "role") from None
    if admission is None:
        raise ApiError(404, "this site node runs no coordinator ([mqtt] and [site]): "
                       "announcements are admitted by the site coordinator", "$")
    answer, error = admission.announce(body, now)
    if answer is None:
        problems = error.get("errors") or [{}]
        raise ApiError(422, str(error.get("error", "refused")),
                       _field(str(problems[0].get("field", ROOT))))
    return answer
