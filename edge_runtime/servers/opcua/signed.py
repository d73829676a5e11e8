"""ControllerType.SignedCommand(Kind, Envelope) -> (Result): the signed envelope over OPC UA.

The envelope is exactly what the MQTT command topics and the HTTPS control endpoints take
(federation/inbound.py, security/signing.py: HMAC-SHA256 over "{node}/{kind}" and the fields,
nonce, issued-at, signing role), parsed by the same parse_command with source "opcua.<kind>",
and verified by the node's ONE CommandVerifier (the assembler hands the server the verifier
MQTT and HTTPS use), so its nonce journal is shared: a command taken over MQTT or HTTPS is a
replay over OPC UA, and the other way round.

Two roles are in play: the role that signed the envelope (its key) and the session's
authenticated role. The stricter wins: both must hold the right, in the one rights table, to
do the action (set_output / release_output) and to use the channel (the kind) on the output's
class. The session is checked first, before the verifier takes the nonce (a session that may
not send it does not spend a genuine command); the command then acts as the signer (its hold
is the signer's, so the signer may release it on any transport) and the command path checks
that role again, action and channel, at screen() and at the scan. Why both: the signature
says who decided, the session who delivers; a viewer or a tenant relaying an envelope it got
hold of (within the skew window, before its sender used it) must not move an output, and a
BMS account must not move more than its own role may by carrying someone else's envelope.

    refusal                                                       Bad code          IDS
    blocked account (intrusion detection)                         UserAccessDenied  -
    commands faster than the detector's rate                      TooManyOperations rate
    viewer session, session or signer without the right,          UserAccessDenied  auth_failure
      bad or missing signature, unknown role, no key, no keys
    replayed nonce, issued-at too old or in the future,           RequestNotAllowed replay
      nonce journal unwritable
    unknown kind, not JSON, a field missing / mistyped / extra    InvalidArgument   malformed
      (unknown point too)
    value out of the point's range                                OutOfRange        -
    value not what the register holds (2.5 to an integer)         TypeMismatch      -
    a local hold (precedence); the scan's own refusal              InvalidState      -

Every refusal is logged with its reason, audited (the command queue's audit records, which the
hash-chained audit log mirrors, and a command_refused event) and, where it is an offence
(security/ids.py offence_of), counted by the node's intrusion detector under
"opcua:user:<name>", the source the user manager blocks logins of.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from asyncua.crypto.permission_rules import User

from edge_runtime.core.authority import Refused
from edge_runtime.core.commands import AuditRecord, ReleaseOutput, SetOutput
from edge_runtime.core.events import Severity
from edge_runtime.federation.inbound import Invalid, Verifier, parse_command
from edge_runtime.security.ids import IntrusionDetector, offence_of
from edge_runtime.security.signing import CONTROL_KINDS
from edge_runtime.servers.opcua.methods import Answer, CommandGate, code_for
from edge_runtime.servers.opcua.uatypes import StatusCodes
from edge_runtime.servers.opcua.users import VIEWER, role_of

log = logging.getLogger(__name__)
MAX_ENVELOPE_BYTES = 65_536  # as MQTT's max_message_bytes and HTTPS's max_body_bytes
_REPLAY_FIELDS = ("nonce", "timestamp", "signed_at")


class _SessionRefused(Exception):
    """The session's role may not send this command (raised before the nonce is taken)."""


class SignedCommands:
    """SignedCommand's work: verify, check both roles, queue, wait for the scan, answer."""

    def __init__(self, gate: CommandGate, verifier: Verifier | None, *,
                 guard: IntrusionDetector | None = None,
                 max_bytes: int = MAX_ENVELOPE_BYTES) -> None:
        """`verifier`: the node's one CommandVerifier (None: no command keys, all refused);
        `guard`: the node's intrusion detector."""
        self.gate = gate
        self.node = gate.node
        self.verifier = verifier
        self.guard = guard
        self.max_bytes = max_bytes
        self.answered = {"accepted": 0, "refused": 0}

    async def __call__(self, user: User | None, kind: str, envelope: str) -> str:
        """The Result JSON of an applied command, or Answer with the Bad code."""
        name = getattr(user, "name", None) or "anonymous"
        who, session = f"opcua:user:{name[:64]}", role_of(user)
        source = f"opcua.{kind}" if kind in CONTROL_KINDS else "opcua.signed"
        text = f"SignedCommand(kind={kind[:40]!r}, {len(envelope)} characters)"
        if self.guard is not None:
            if (left := self.guard.blocked(who)) > 0:
                raise self._refuse(text, source, StatusCodes.BadUserAccessDenied,
                                   f"{who} is blocked for {left:.0f} s more after repeated "
                                   "offences (intrusion detection)", who, "blocked")
            if not self.guard.command(who):  # counts the "rate" offence itself
                raise self._refuse(text, source, StatusCodes.BadTooManyOperations,
                                   f"{who}: commands arrive faster than "
                                   f"{self.guard.command_rate:g}/s", who, "blocked")
        if session == VIEWER:
            raise self._refuse(text, source, StatusCodes.BadUserAccessDenied,
                               "rights: the viewer role may browse, read and subscribe only "
                               "(not SignedCommand)", who, "auth")
        if kind not in CONTROL_KINDS:
            raise self._refuse(text, source, StatusCodes.BadInvalidArgument,
                               f"Kind: expected one of {', '.join(CONTROL_KINDS)}, "
                               f"got {kind[:40]!r}", who, "malformed")
        if self.verifier is None:
            raise self._refuse(text, source, StatusCodes.BadUserAccessDenied,
                               "signature: this node holds no command keys ([mqtt] or [https] "
                               "command_keys): SignedCommand cannot be verified", who)
        cmd = self._parse(kind, envelope, session, source, text, who)
        try:
            self.node.manual.screen(cmd)  # the signer's role: action, channel, precedence
        except Refused as exc:
            why = str(exc)
            self.answered["refused"] += 1
            self._report(who, "refused", "", why)  # rights: an offence; precedence: not
            log.warning("OPC UA SignedCommand from %s refused: %s", who, why)
            raise Answer(code_for(why), why) from None
        try:
            await self.gate.apply(cmd)
        except Answer as ans:
            self.answered["refused"] += 1
            log.warning("OPC UA SignedCommand from %s refused at the scan: %s", who, ans)
            raise
        self.answered["accepted"] += 1
        doc = json.loads(envelope)
        return json.dumps({"accepted": True, "kind": kind, "action": doc.get("action"),
                           "point": cmd.point, "command_id": doc.get("command_id"),
                           "source": cmd.source, "role": cmd.role, "session_role": session,
                           "applied": "at the scan that answered this call"})

    def _parse(self, kind: str, envelope: str, session: str, source: str, text: str,
               who: str) -> SetOutput | ReleaseOutput:
        """The command of a verified envelope the session may send, or Answer."""
        verifier = self.verifier
        assert verifier is not None

        def verify(k: str, doc: dict[str, Any]) -> str | None:
            self._session_may(k, doc, session)  # before the nonce is taken
            return verifier(k, doc)

        try:
            cmd = parse_command(kind, envelope.encode("utf-8", errors="replace"),
                                retain=False, max_bytes=self.max_bytes, image=self.node.image,
                                verify=verify, transport="opcua")
        except _SessionRefused as exc:
            raise self._refuse(text, source, StatusCodes.BadUserAccessDenied, str(exc), who,
                               "refused", "role") from None
        except Invalid as bad:
            raise self._refuse(text, source, _code_of(bad), bad.reason, who, bad.category,
                               bad.field) from None
        if not isinstance(cmd, SetOutput | ReleaseOutput):  # a control kind gives one
            raise self._refuse(text, source, StatusCodes.BadInvalidArgument,
                               f"not a control command: {cmd!r}", who, "malformed")
        return cmd

    def _session_may(self, kind: str, doc: dict[str, Any], session: str) -> None:
        """_SessionRefused unless the session's role may do the envelope's action on its
        channel for the output's class (an unknown point is left to parse_command)."""
        point = doc.get("point")
        info = self.node.image.outputs_info.get(point) if isinstance(point, str) else None
        if info is None:
            return
        action = doc.get("action")
        kinds = [action, kind] if action in ("set_output", "release_output") else [kind]
        try:
            for what in kinds:
                self.node.manual.rights.check(session, str(what), info.spec.output_class,
                                              str(point))
        except Refused as exc:
            raise _SessionRefused(f"{exc} (the session's role; a SignedCommand needs the "
                                  f"right for the signer and for the session)") from None

    def _refuse(self, text: str, source: str, code: int, reason: str, who: str,
                category: str = "refused", field: str = "signature") -> Answer:
        """Log, audit and report a refusal decided here; the Answer to raise."""
        ts = self.node.clock.wall()
        queue = self.node.commands
        rec = AuditRecord(ts, source, text, False, reason)
        queue.audit.append(rec)
        if queue.sink is not None:
            try:
                queue.sink(rec)
            except Exception:  # the audit trail failing must not fail the answer
                log.exception("audit sink failed on %r", rec)
        self.node.events.raise_event(ts, f"command.{source}", Severity.WARNING,
                                     f"refused {text} from {who}: {reason}"[:400],
                                     "command_refused")
        self._report(who, category, field, reason)
        self.answered["refused"] += 1
        log.warning("OPC UA SignedCommand from %s refused: %s", who, reason)
        return Answer(code, reason)

    def _report(self, who: str, category: str, field: str, reason: str) -> None:
        kind = offence_of(category, field, reason)
        if self.guard is not None and kind is not None:
            self.guard.record(who, kind, reason[:120])

    def get_status(self) -> dict[str, Any]:
        """Signed commands answered."""
        return dict(self.answered)


def _code_of(bad: Invalid) -> int:
    """The Bad code of a refusal parse_command (or the verifier behind it) gave."""
    if bad.category != "refused":  # malformed, schema, oversized
        return StatusCodes.BadInvalidArgument
    if bad.field in _REPLAY_FIELDS:
        return StatusCodes.BadRequestNotAllowed
    if bad.field == "point":
        return StatusCodes.BadInvalidArgument
    if bad.field == "value":
        return (StatusCodes.BadTypeMismatch if "whole number" in bad.reason
                or "must be a number" in bad.reason else StatusCodes.BadOutOfRange)
    return StatusCodes.BadUserAccessDenied  # signature, role, and anything else refused

