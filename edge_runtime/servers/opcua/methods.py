"""OPC UA writes and method calls -> the node's command queue, answered with precise codes.

Every request is checked at once where the answer is known now (unknown point or loop:
BadInvalidArgument; the rights table: BadUserAccessDenied; precedence: BadInvalidState; type:
BadTypeMismatch; range: BadOutOfRange), each refusal audited in the queue's audit records with
a command_refused event, like the scan's own refusals. What passes is submitted to the queue
and the caller waits (bounded) for the scan that applies it: its verdict (the safety layer
refusing a reset while the condition is present, say) is the answer. Source "opcua.<user>",
role the session's authenticated role, so the rights table judges OPC UA like any transport.

With `[opcua] require_signed_commands` (config.py), output writes, Force, Release, SetMode and
SetSetpoint answer BadUserAccessDenied naming the option; outputs then move over OPC UA only
through SignedCommand (signed.py). ResetTrip stays open to authenticated roles.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User

from edge_runtime.core.authority import Refused
from edge_runtime.core.commands import (
    Command,
    ForceOutput,
    ReleaseForce,
    ResetTrip,
    SetControlMode,
    SetOutput,
)
from edge_runtime.core.events import Severity
from edge_runtime.core.image import OutOfRange
from edge_runtime.node import Node
from edge_runtime.servers.opcua.binding import ScanTap
from edge_runtime.servers.opcua.uatypes import StatusCodes, status
from edge_runtime.servers.opcua.users import VIEWER, role_of

log = logging.getLogger(__name__)
MODES = ("Automatic", "Override", "Manual", "Disabled")
WATCHDOG = "watchdog"
MAX_FORCE_S = 86_400.0  # an OPC UA force lasts at most a day; none lasts forever
# SignedCommand's work (signed.py): (session user, kind, envelope JSON) -> the Result JSON
SignedRunner = Callable[[Any, str, str], Awaitable[str]]

# The user of the request being processed: set by SessionRoles (asyncua's permission check,
# run in the connection's task just before the service), read by the method handlers that
# asyncua awaits in that same task (it passes them no session).
CURRENT_USER: contextvars.ContextVar[User | None] = contextvars.ContextVar(
    "opcua_user", default=None)


class SessionRoles(SimpleRoleRuleset):
    """asyncua's permission ruleset, which also tells the handlers who is asking."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        """Record the request's user, then asyncua's own check."""
        CURRENT_USER.set(user)
        return bool(super().check_validity(user, action_type_id, body))  # type: ignore[no-untyped-call]


class DiscoveryOnly(SimpleRoleRuleset):
    """The rules of an unsecured channel: discovery only. asyncua lets a client open a None
    channel (to read the endpoints) even where no None endpoint is offered, and then create
    and activate a session over it; with this ruleset every service of such a session is
    refused (BadUserAccessDenied), so nothing is read or written in the clear."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        """Never: a session over an unsecured channel may do nothing."""
        CURRENT_USER.set(None)
        return False


class Answer(Exception):
    """A refusal with its OPC UA status code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def code_for(reason: str) -> int:
    """The Bad code of a refusal the scan (or the rights table) gave as text."""
    if reason.startswith("rights:") or "may not reset it" in reason:
        return StatusCodes.BadUserAccessDenied
    if reason.startswith("precedence:"):
        return StatusCodes.BadInvalidState
    if reason.startswith("unknown point") or "no control loop" in reason:
        return StatusCodes.BadInvalidArgument
    if " outside " in reason or "expires_s" in reason:
        return StatusCodes.BadOutOfRange
    if "not a whole number" in reason or "must be a number" in reason:
        return StatusCodes.BadTypeMismatch
    if "mode must be one of" in reason or "takes no value" in reason or "needs a" in reason:
        return StatusCodes.BadInvalidArgument
    return StatusCodes.BadInvalidState


class CommandGate:
    """OPC UA requests as node commands: checked, audited, queued, answered."""

    def __init__(self, node: Node, tap: ScanTap, *, timeout_s: float = 5.0,
                 require_signed: bool = False) -> None:
        self.node = node
        self.tap = tap
        self.timeout_s = timeout_s
        self.require_signed = require_signed  # [opcua] require_signed_commands
        self.answered = {"accepted": 0, "refused": 0}

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def who(user: User | None) -> tuple[str, str]:
        """(source, role) of a session user."""
        name = getattr(user, "name", None) or "anonymous"
        return f"opcua.{name}", role_of(user)

    def refuse(self, cmd: Command, code: int, reason: str) -> Answer:
        """Audit a refusal decided here (as the scan audits its own) and make the answer."""
        ts = self.node.clock.wall()
        self.node.commands.record(ts, cmd, False, reason)
        self.node.events.raise_event(ts, f"command.{cmd.source}", Severity.WARNING,
                                     f"refused {cmd!r}: {reason}", "command_refused")
        self.answered["refused"] += 1
        return Answer(code, reason)

    def _unsigned(self, cmd: Command, what: str) -> None:
        """Refuse an unsigned output command when the node takes signed ones only."""
        if self.require_signed:
            raise self.refuse(cmd, StatusCodes.BadUserAccessDenied,
                              f"rights: [opcua] require_signed_commands is true on this node: "
                              f"{what} is refused; send a SignedCommand (the signed envelope)")

    def _rights(self, cmd: Command, role: str, kind: str, output_class: str | None = None,
                point: str = "") -> None:
        try:
            if role == VIEWER:
                raise Refused(f"rights: the viewer role may browse, read and subscribe only "
                              f"(not {kind})")
            self.node.manual.rights.check(role, kind, output_class, point)
        except Refused as exc:
            raise self.refuse(cmd, StatusCodes.BadUserAccessDenied, str(exc)) from None

    def _output(self, cmd: Command, point: str, value: float | None = None) -> str | None:
        """The output class of `point`; Answer for an unknown point, a wrong type or range."""
        info = self.node.image.outputs_info.get(point)
        if info is None:
            raise self.refuse(cmd, StatusCodes.BadInvalidArgument,
                              f"unknown point {point!r} (not an output of this node)")
        return info.spec.output_class

    def _value(self, cmd: Command, point: str, value: float) -> None:
        try:
            self.node.image.check_output(point, value)
        except TypeError as exc:
            raise self.refuse(cmd, StatusCodes.BadTypeMismatch, str(exc)) from None
        except OutOfRange as exc:
            raise self.refuse(cmd, StatusCodes.BadOutOfRange, str(exc)) from None

    async def _run(self, cmd: Command) -> str:
        """Submit `cmd`, wait for the scan that applies it; "" if accepted, else the reason."""
        # list() copies the deque at once: the scan (another thread) appends to it meanwhile
        before = {id(r) for r in list(self.node.commands.audit)}
        self.node.commands.submit(cmd)
        text = repr(cmd)
        for _ in range(3):
            try:
                await self.tap.next_scan(self.timeout_s)
            except TimeoutError:
                break
            for rec in reversed(list(self.node.commands.audit)):
                if id(rec) not in before and rec.command == text:
                    if rec.accepted:
                        self.answered["accepted"] += 1
                        return ""
                    self.answered["refused"] += 1
                    return rec.reason or "refused"
        raise Answer(StatusCodes.BadTimeout, "the scan did not apply the command in time")

    async def _submit(self, cmd: Command) -> None:
        reason = await self._run(cmd)
        if reason:
            raise Answer(code_for(reason), reason)

    async def apply(self, cmd: Command) -> None:
        """Queue a checked command and wait for the scan's verdict (Answer if refused)."""
        await self._submit(cmd)

    # -- requests ---------------------------------------------------------------------------
    async def set_output(self, user: User | None, point: str, value: Any) -> None:
        """A client's write of an output variable: an operator hold (SetOutput)."""
        source, role = self.who(user)
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
        cmd = SetOutput(point, float(number), source=source, role=role)
        self._unsigned(cmd, "an output write")
        self._output(cmd, point)
        if role == VIEWER:
            self._rights(cmd, role, "set_output")
        try:
            self.node.manual.screen(cmd)  # rights and precedence, audited when refused
        except Refused as exc:
            self.answered["refused"] += 1
            raise Answer(code_for(str(exc)), str(exc)) from None
        if number is not value:
            raise self.refuse(cmd, StatusCodes.BadTypeMismatch, f"{point}: value must be a number, "
                                                       f"got {type(value).__name__}")
        self._value(cmd, point, float(number))
        await self._submit(cmd)

    async def force(self, user: User | None, point: str, value: float, expiry_s: float,
                    reason: str) -> None:
        """Force(Point, Value, ExpirySeconds, Reason)."""
        source, role = self.who(user)
        cmd = ForceOutput(point, value, role=role, source=source, expires_s=expiry_s,
                          reason=reason)
        self._unsigned(cmd, "Force")
        cls = self._output(cmd, point)
        self._rights(cmd, role, "force", cls, point)
        self._value(cmd, point, value)
        if not (0.0 < expiry_s <= MAX_FORCE_S):
            raise self.refuse(cmd, StatusCodes.BadOutOfRange, "ExpirySeconds must be > 0 and at "
                              f"most {MAX_FORCE_S:g}, got {expiry_s!r}")
        if not reason.strip():
            raise self.refuse(cmd, StatusCodes.BadInvalidArgument,
                              "Reason must say why the output is forced")
        await self._submit(cmd)

    async def release(self, user: User | None, point: str) -> None:
        """Release(Point): end a force."""
        source, role = self.who(user)
        cmd = ReleaseForce(point, role=role, source=source)
        self._unsigned(cmd, "Release")
        cls = self._output(cmd, point)
        self._rights(cmd, role, "release_force", cls, point)
        if point not in self.node.safety.forces:
            raise self.refuse(cmd, StatusCodes.BadInvalidState, f"{point} is not forced")
        await self._submit(cmd)

    async def reset_trip(self, user: User | None, interlock: str) -> list[str]:
        """ResetTrip(Interlock) -> the latches reset ("" all latched, "watchdog" the
        watchdog's: the safety layer's one reset path)."""
        source, role = self.who(user)
        cmd = ResetTrip(role=role, interlock=interlock or None, source=source)
        if interlock and interlock != WATCHDOG and interlock not in self.node.safety.states:
            raise self.refuse(cmd, StatusCodes.BadInvalidArgument, f"no interlock {interlock!r} "
                              f"(one of {', '.join(sorted(self.node.safety.states))}, "
                              f"{WATCHDOG})")
        self._rights(cmd, role, "reset_trip")
        log_before = len(self.node.safety.reset_log)
        why = await self._run(cmd)
        done = [name for name, _, ok in list(self.node.safety.reset_log)[log_before:] if ok]
        if why and not done:
            raise Answer(code_for(why), why)
        return done

    async def set_mode(self, user: User | None, loop: str, mode: str,
                       value: float | None) -> None:
        """SetMode(Loop, Mode, Value) (NaN: no value)."""
        source, role = self.who(user)
        cmd = SetControlMode(loop, mode, value, role=role, source=source)
        self._unsigned(cmd, "SetMode/SetSetpoint")
        loops = getattr(self.node.manual.controls, "loops", None)
        if isinstance(loops, dict) and loop not in loops:
            raise self.refuse(cmd, StatusCodes.BadInvalidArgument,
                              f"no control loop {loop!r} on this node (loops: "
                              f"{', '.join(sorted(loops)) or 'none'})")
        self._rights(cmd, role, "set_mode", point=loop)
        if mode not in MODES:
            raise self.refuse(cmd, StatusCodes.BadInvalidArgument, f"mode must be one of "
                                                          f"{', '.join(MODES)}; got {mode!r}")
        await self._submit(cmd)

    def get_status(self) -> dict[str, Any]:
        """Requests answered."""
        return dict(self.answered)


# -- asyncua method handlers ----------------------------------------------------------------

def _unpack(args: Sequence[Any], types: Sequence[ua.VariantType]) -> list[Any]:
    """Variant arguments checked against the signature (Answer with the code if not)."""
    if len(args) < len(types):
        raise Answer(StatusCodes.BadArgumentsMissing, f"expected {len(types)} arguments")
    if len(args) > len(types):
        raise Answer(StatusCodes.BadTooManyArguments, f"expected {len(types)} arguments")
    out: list[Any] = []
    for arg, vt in zip(args, types, strict=True):
        var = arg if isinstance(arg, ua.Variant) else ua.Variant(arg)
        if var.is_array or isinstance(var.Value, list):  # every argument is one scalar
            raise Answer(StatusCodes.BadTypeMismatch, f"argument {len(out) + 1} must be one "
                                                      f"{vt.name}, got an array")
        if var.VariantType != vt:
            if vt is ua.VariantType.Double and var.VariantType in _NUMERIC:
                out.append(float(var.Value))
                continue
            raise Answer(StatusCodes.BadTypeMismatch, f"argument {len(out) + 1} must be {vt.name}, "
                                             f"got {var.VariantType.name}")
        out.append(var.Value)
    return out


_NUMERIC = {ua.VariantType.Float, ua.VariantType.Int16, ua.VariantType.Int32,
            ua.VariantType.Int64, ua.VariantType.UInt16, ua.VariantType.UInt32,
            ua.VariantType.Byte, ua.VariantType.SByte, ua.VariantType.UInt64}
S, D = ua.VariantType.String, ua.VariantType.Double


class MethodHandlers:
    """The controller's methods as asyncua callbacks (coroutines: run in the request's task)."""

    def __init__(self, gate: CommandGate, signed: SignedRunner | None = None) -> None:
        self.gate = gate
        self.signed = signed

    async def _call(self, fn: Any, args: Sequence[Any], types: Sequence[ua.VariantType],
                    user: User | None = None) -> Any:
        user = CURRENT_USER.get() if user is None else user
        try:
            values = _unpack(args, types)
            result = await fn(user, *values)
        except Answer as ans:
            log.info("OPC UA call refused: %s", ans)
            return status(ans.code)
        return [] if result is None else result

    async def reset_trip(self, parent: ua.NodeId, *args: Any) -> Any:
        """ResetTrip(Interlock: String) -> (Reset: String[])."""
        async def run(user: User | None, interlock: str) -> list[ua.Variant]:
            done = await self.gate.reset_trip(user, interlock)
            return [ua.Variant(done, ua.VariantType.String)]
        return await self._call(run, args, (S,))

    async def force(self, parent: ua.NodeId, *args: Any) -> Any:
        """Force(Point: String, Value: Double, ExpirySeconds: Double, Reason: String)."""
        return await self._call(self.gate.force, args, (S, D, D, S))

    async def release(self, parent: ua.NodeId, *args: Any) -> Any:
        """Release(Point: String)."""
        return await self._call(self.gate.release, args, (S,))

    async def set_mode(self, parent: ua.NodeId, *args: Any) -> Any:
        """SetMode(Loop: String, Mode: String, Value: Double); Value NaN for none."""
        async def run(user: User | None, loop: str, mode: str, value: float) -> None:
            await self.gate.set_mode(user, loop, mode, None if math.isnan(value) else value)
        return await self._call(run, args, (S, S, D))

    async def set_setpoint(self, parent: ua.NodeId, *args: Any) -> Any:
        """SetSetpoint(Loop: String, Value: Double): the loop's Override setpoint."""
        async def run(user: User | None, loop: str, value: float) -> None:
            await self.gate.set_mode(user, loop, "Override", value)
        return await self._call(run, args, (S, D))

    async def signed_command(self, parent: ua.NodeId, *args: Any) -> Any:
        """SignedCommand(Kind: String, Envelope: String) -> (Result: String)."""
        async def run(user: User | None, kind: str, envelope: str) -> list[ua.Variant]:
            if self.signed is None:
                raise Answer(StatusCodes.BadNotImplemented, "SignedCommand is not served here")
            result = await self.signed(user, kind, envelope)
            return [ua.Variant(result, ua.VariantType.String)]
        return await self._call(run, args, (S, S))

    def table(self) -> dict[str, Any]:
        """Method browse name -> handler."""
        return {"ResetTrip": self.reset_trip, "Force": self.force, "Release": self.release,
                "SetMode": self.set_mode, "SetSetpoint": self.set_setpoint,
                "SignedCommand": self.signed_command}
