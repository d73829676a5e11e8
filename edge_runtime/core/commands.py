"""Commands from outside the scan: queued, checked and applied at the start of the next scan.

Every command, accepted or refused, leaves an audit record saying who asked for what and why
it was refused, so an operator can always reconstruct what was done to the plant.

Every command is checked here, whatever its transport, like a PLC checks a write: the rights table
(core/authority.py: role x output class x kind, plus the channel of "mqtt.<kind>", "https.<kind>"
and "opcua.<kind>" sources), type and range of the point (ProcessImage.check_output: an integer
register refuses 2.5), and precedence: interlock > technician force > local operator hold > remote
command > automatic. A remote command never replaces a local hold, and a release releases only what
its sender holds (a remote one: its own role's remote hold). A refusal names the rule ("rights:
...", "precedence: ...") in the audit and in the command_refused event; a transport that answers
its sender (MQTT's error topic) calls `ManualOutputs.check` first.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from edge_runtime.core.authority import (
    CHANNELS,
    DEFAULT_RIGHTS,
    SYSTEM_SOURCES,
    Level,
    Refused,
    Rights,
    level_of,
    resolve_role,
)
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import OutOfRange, ProcessImage, UnknownPoint

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SetOutput:
    """Operator value for an output; held until released (manual mode for that output).

    With `held_by`, applied only over a hold whose source starts with it (see ReleaseOutput)."""

    point: str
    value: float
    source: str = "local"
    held_by: str = ""
    role: str = ""  # spec 10.2.2 role; "" only from a local panel (core/authority.py)


@dataclass(frozen=True, slots=True)
class ReleaseOutput:
    """Give an output back to automatic control.

    With `held_by`, only a hold whose source starts with it is released (the link-loss
    watchdog releases "mqtt." holds): decided at the scan that applies it, so an operator's
    hold set after the watchdog looked is never taken away. A remote release (source
    "mqtt.*", ...) releases only a remote hold of its own role."""

    point: str
    source: str = "local"
    held_by: str = ""
    role: str = ""


@dataclass(frozen=True, slots=True)
class ForceOutput:
    """Technician force of an output: applied after control, still below every interlock.

    With `expires_s` the safety layer releases the force that many seconds of scan time after
    it took it (audited as an event); `reason` says why it was forced (shown with the force)."""

    point: str
    value: float
    role: str  # as established by the authenticated channel the command came in on
    source: str = "local"
    expires_s: float | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReleaseForce:
    """End a technician force."""

    point: str
    role: str
    source: str = "local"


@dataclass(frozen=True, slots=True)
class ResetTrip:
    """Reset latched interlocks: one by name, or every latched one (interlock None)."""

    role: str
    interlock: str | None = None
    source: str = "local"


@dataclass(frozen=True, slots=True)
class SetControlMode:
    """Redfish ControlMode of a control loop (Override: its setpoint; Manual: its output)."""

    loop: str  # block name, e.g. "supply_temp", "pumps"
    mode: str  # Automatic | Override | Manual | Disabled
    value: float | None = None
    role: str = ""
    source: str = "local"


@dataclass(frozen=True, slots=True)
class AnnounceWorkload:
    """An accepted Annex A.1 announcement for this node's predictive blocks."""

    announcement: Any  # edge_runtime.messages.models.WorkloadAnnouncement
    role: str = ""
    source: str = "local"

    def __repr__(self) -> str:  # the audit names the workload, not the whole message
        wid = getattr(self.announcement, "workload_id", "?")
        return f"AnnounceWorkload(workload_id={wid!r}, role={self.role!r}, source={self.source!r})"


@dataclass(frozen=True, slots=True)
class LinkCommand:
    """Emergency disconnection of every external link (spec 10.4 c), or the explicit
    reconnection after it: action "disconnect" or "reconnect". Local control and safety carry
    on while the links are cut; a reconnect is accepted from a local source only."""

    action: str
    role: str = ""
    source: str = "local"
    reason: str = ""


Command = (SetOutput | ReleaseOutput | ForceOutput | ReleaseForce | ResetTrip | SetControlMode
           | AnnounceWorkload | LinkCommand)


# Transports whose sources name the channel a command came on ("<transport>.<kind>"): the
# MQTT command topics, the HTTPS control endpoints and OPC UA's SignedCommand carry the same
# kinds. (An OPC UA user named like a kind only gets the channel's check on top: stricter.)
CHANNEL_TRANSPORTS = ("mqtt", "https", "opcua")


class CommandRefused(Exception):
    """A command that was checked and refused; the message is the reason."""


class SafetyPort(Protocol):
    """What the command path needs from the safety layer."""

    def force(self, point: str, value: float, *, source: str = "local",
              expires_s: float | None = None, reason: str = "") -> None:
        """Force an output (released by the layer after `expires_s` of scan time if given)."""
        ...

    def release(self, point: str, *, source: str = "local") -> None:
        """Release a force."""
        ...

    def reset(self, role: str, name: str | None = None, *,
              source: str = "local") -> Sequence[Any]:
        """Reset latched interlocks; outcomes with `accepted`, `rule`, `reason`."""
        ...


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What was asked, by whom, and what became of it."""

    ts: float
    source: str
    command: str
    accepted: bool
    reason: str = ""


class CommandQueue:
    """Commands waiting for the next scan (deque append/popleft are thread-safe).

    `sink`, when set, gets every AuditRecord as it is made (the security layer's hash-chained
    audit log, security/audit.py: core never imports it); it must not block, and an exception
    from it is logged, never raised into the scan."""

    def __init__(self, audit_capacity: int = 1000,
                 sink: Callable[[AuditRecord], None] | None = None) -> None:
        self._pending: deque[Command] = deque()
        self.audit: deque[AuditRecord] = deque(maxlen=audit_capacity)
        self.sink = sink

    def submit(self, cmd: Command) -> None:
        """Queue a command; it is checked and applied at the start of the next scan."""
        self._pending.append(cmd)

    def drain(self) -> list[Command]:
        """Take every pending command, oldest first."""
        out: list[Command] = []
        while self._pending:
            out.append(self._pending.popleft())
        return out

    def record(self, ts: float, cmd: Command, accepted: bool, reason: str = "") -> AuditRecord:
        """Append an audit record."""
        rec = AuditRecord(ts, cmd.source, repr(cmd), accepted, reason)
        self.audit.append(rec)
        if self.sink is not None:
            try:
                self.sink(rec)
            except Exception:  # the audit trail failing must not stop the scan
                log.exception("audit sink failed on %r", rec)
        return rec

    def get_status(self) -> dict[str, Any]:
        """Pending count and the last audit records."""
        return {"pending": len(self._pending), "audit": [asdict(r) for r in list(self.audit)[-10:]]}


class ControlPort(Protocol):
    """What the command path needs from the role's control blocks."""

    def set_mode(self, loop: str, mode: str, value: float | None) -> None:
        """Change a loop's mode; CommandRefused with the reason."""
        ...

    def announce(self, msg: Any, now_wall: float) -> list[str]:
        """Pass an announcement on; the blocks that took it; CommandRefused with the reason."""
        ...


class LinkPort(Protocol):
    """What the command path needs from the node to cut and restore its external links."""

    links_cut: str  # why the links are cut, "" while they are up

    def disconnect(self, reason: str) -> None:
        """Cut every external link now (MQTT, OPC UA, HTTPS); idempotent."""
        ...

    def reconnect(self) -> None:
        """Bring the cut links back."""
        ...


class ManualOutputs:
    """First block of every scan: applies queued commands and holds operator output values."""

    name = "commands"

    def __init__(self, queue: CommandQueue, events: EventLog, wall: Any,
                 safety: SafetyPort | None = None, *, controls: ControlPort | None = None,
                 held: dict[str, float] | None = None, rights: Rights = DEFAULT_RIGHTS) -> None:
        self.queue = queue
        self.events = events
        self._wall = wall  # callable giving UTC seconds for audit records
        self.safety = safety  # forces and trip resets go to it; without one they are refused
        self.controls = controls  # mode changes and announcements go to it
        # Operator-held output values. The assembler hands the same dict to the role's blocks
        # (read-only for them), so a block never overwrites what an operator holds.
        self.manual: dict[str, float] = {} if held is None else held
        self._held_by: dict[str, str] = {}  # point -> source of the command holding it
        self._holder_role: dict[str, str] = {}  # point -> role of that command
        self.rights = rights  # the node's table ([rights] narrows the default)
        self._image: ProcessImage | None = None  # for check() from a transport
        self.links: LinkPort | None = None  # the node, for LinkCommand (set by Node)

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Apply pending commands, then write every held operator value."""
        self._image = image
        for cmd in self.queue.drain():
            self._apply(cmd, image)
        for point, value in self.manual.items():
            image.write(point, value)

    def holds(self) -> dict[str, str]:
        """Every operator-held output and the source of the command that holds it."""
        return dict(self._held_by)

    def check(self, cmd: SetOutput | ReleaseOutput, image: ProcessImage | None = None) -> None:
        """Refused (naming the rule) if `cmd` would be refused now: rights and precedence
        against the current holds. For a transport to answer its sender at once; the scan
        checks again when it applies the command (holds may change in between)."""
        image = image or self._image
        if image is None:
            return  # before the first scan: the scan's check decides
        info = image.outputs_info.get(cmd.point)
        if info is None:
            raise Refused(f"unknown point {cmd.point!r}")
        if cmd.held_by:
            return  # a conditional release/failsafe of the node's own watchdog
        kind = "set_output" if isinstance(cmd, SetOutput) else "release_output"
        role = self._authorize(cmd, kind, info.spec.output_class)
        self._precedence(cmd, role)

    def screen(self, cmd: SetOutput | ReleaseOutput) -> None:
        """check(), and a refusal audited (with its command_refused event) before Refused is
        raised again: for a transport that answers its sender and never queues the command."""
        try:
            self.check(cmd)
        except Refused as exc:
            self._refused(self._wall(), cmd, exc)
            raise

    def _refused(self, ts: float, cmd: Command, exc: Exception) -> None:
        self.queue.record(ts, cmd, False, str(exc))
        self.events.raise_event(ts, f"command.{cmd.source}", Severity.WARNING,
                                f"refused {cmd!r}: {exc}", "command_refused")

    def _authorize(self, cmd: Command, kind: str, output_class: str | None = None,
                   point: str = "") -> str:
        """The role `cmd` acts with, or Refused naming the rights rule; the channel a
        command came on ("mqtt.<kind>", "https.<kind>") must allow the class too."""
        if (cmd.source in SYSTEM_SOURCES and isinstance(cmd, SetOutput | ReleaseOutput)
                and cmd.held_by):
            return ""  # the node's own link-loss watchdog, acting only on remote holds
        role = resolve_role(getattr(cmd, "role", ""), cmd.source)
        point = point or getattr(cmd, "point", "")
        self.rights.check(role, kind, output_class, point)
        transport, _, channel = cmd.source.partition(".")
        if transport in CHANNEL_TRANSPORTS and channel in CHANNELS and channel != kind:
            self.rights.check(role, channel, output_class, point)
        return role

    def _precedence(self, cmd: SetOutput | ReleaseOutput, role: str) -> None:
        """Refused when a remote command would replace or release what it must not."""
        if (level_of(cmd.source) is not Level.REMOTE or cmd.point not in self.manual
                or cmd.source in SYSTEM_SOURCES):  # link_loss: its held_by decides
            return
        holder = self._held_by.get(cmd.point, "")
        if level_of(holder) is Level.LOCAL:
            verb = "replaces" if isinstance(cmd, SetOutput) else "releases"
            raise Refused(f"precedence: {cmd.point} is held by a local operator ({holder}); "
                          f"a remote command never {verb} a local hold")
        held_role = self._holder_role.get(cmd.point, "")
        if isinstance(cmd, ReleaseOutput) and held_role and held_role != role:
            raise Refused(f"precedence: {cmd.point} is held by {held_role} ({holder}); a "
                          f"release releases only what its sender ({role}) holds")

    def _apply(self, cmd: Command, image: ProcessImage) -> None:
        ts = self._wall()
        try:
            if (self.links is not None and self.links.links_cut
                    and level_of(cmd.source) is Level.REMOTE
                    and cmd.source not in SYSTEM_SOURCES and not isinstance(cmd, LinkCommand)):
                # A transport winding down after the cut (or a command queued just before it)
                # must not act: from the cut on, only local commands and the node's own.
                raise CommandRefused(f"links: cut by an emergency disconnect "
                                     f"({self.links.links_cut}); remote commands are refused "
                                     "until a local reconnect")
            if isinstance(cmd, SetOutput):
                info = image.check_output(cmd.point, cmd.value)
                if self._not_held_by(cmd, ts):
                    return
                role = self._authorize(cmd, "set_output", info.spec.output_class)
                self._precedence(cmd, role)
                self.manual[cmd.point] = float(cmd.value)
                self._held_by[cmd.point] = cmd.source
                self._holder_role[cmd.point] = role
            elif isinstance(cmd, ReleaseOutput):
                if cmd.point not in image.outputs_info:
                    raise UnknownPoint(cmd.point)
                if self._not_held_by(cmd, ts):
                    return
                role = self._authorize(cmd, "release_output",
                                       image.outputs_info[cmd.point].spec.output_class)
                self._precedence(cmd, role)
                self.manual.pop(cmd.point, None)
                self._held_by.pop(cmd.point, None)
                self._holder_role.pop(cmd.point, None)
            elif isinstance(cmd, SetControlMode | AnnounceWorkload):
                self._apply_control(cmd, ts)
            elif isinstance(cmd, LinkCommand):
                self._apply_links(cmd, ts)
            else:
                self._apply_safety(cmd, image)
        except (UnknownPoint, OutOfRange, TypeError, CommandRefused, Refused) as exc:
            self._refused(ts, cmd, exc)
            return
        self.queue.record(ts, cmd, True)
        log.info("applied %r", cmd)

    def _not_held_by(self, cmd: SetOutput | ReleaseOutput, ts: float) -> bool:
        """True (and audited as accepted, nothing done) when cmd.held_by does not match."""
        holder = self._held_by.get(cmd.point, "")
        if not cmd.held_by or (cmd.point in self.manual and holder.startswith(cmd.held_by)):
            return False
        why = f"held by {holder}" if cmd.point in self.manual else "not held"
        self.queue.record(ts, cmd, True, f"{why}: left as is")
        return True

    def _apply_control(self, cmd: SetControlMode | AnnounceWorkload, ts: float) -> None:
        self._authorize(cmd, "set_mode" if isinstance(cmd, SetControlMode) else "announce",
                        point=getattr(cmd, "loop", ""))
        if self.controls is None:
            raise CommandRefused("this node has no control blocks")
        if isinstance(cmd, SetControlMode):
            self.controls.set_mode(cmd.loop, cmd.mode, cmd.value)
        else:
            self.controls.announce(cmd.announcement, ts)

    def _apply_links(self, cmd: LinkCommand, ts: float) -> None:
        if cmd.action not in ("disconnect", "reconnect"):
            raise CommandRefused(f"action: expected 'disconnect' or 'reconnect', "
                                 f"got {cmd.action!r}")
        self._authorize(cmd, "disconnect")
        if self.links is None:
            raise CommandRefused("this node has no external links to cut")
        if cmd.action == "reconnect":
            if level_of(cmd.source) is not Level.LOCAL:
                raise Refused("rights: reconnection after an emergency disconnect is a local "
                              "command only")
            self.links.reconnect()
            return
        self.links.disconnect(cmd.reason or f"emergency disconnect from {cmd.source}")
        # Nobody outside can follow what they hold any more: every remote hold goes back to
        # local control now, as the link-loss watchdog's "release" would (local holds, forces
        # and interlocks are untouched).
        for point, holder in list(self._held_by.items()):
            if level_of(holder) is Level.REMOTE:
                self.manual.pop(point, None)
                self._held_by.pop(point, None)
                self._holder_role.pop(point, None)
                self.queue.record(ts, ReleaseOutput(point, "link_loss", held_by=holder), True,
                                  f"released by the emergency disconnect (held by {holder})")

    def _apply_safety(self, cmd: ForceOutput | ReleaseForce | ResetTrip,
                      image: ProcessImage) -> None:
        safety = self.safety
        if safety is None:
            raise CommandRefused("this node has no safety layer")
        if isinstance(cmd, ResetTrip):
            # the table may take reset_trip from a role; each latched rule then checks its
            # own [safety] reset_role (and raises its own event when it refuses)
            # The role the table checked (a panel's empty role acts as the local one): the
            # safety layer judges the same role, not the empty string.
            role = self._authorize(cmd, "reset_trip")
            outcomes = safety.reset(role, cmd.interlock, source=cmd.source)
            refused = [f"{o.rule}: {o.reason}" for o in outcomes if not o.accepted]
            if refused:  # the safety layer has already raised its own event for each
                raise CommandRefused("; ".join(refused))
            return
        if isinstance(cmd, ForceOutput):
            info = image.check_output(cmd.point, cmd.value)
            self._authorize(cmd, "force", info.spec.output_class)
            expires = cmd.expires_s
            if expires is not None and not (isinstance(expires, int | float)
                                            and 0.0 < expires < 1e9):
                raise CommandRefused(f"{cmd.point}: expires_s must be a positive number of "
                                     f"seconds, got {expires!r}")
            safety.force(cmd.point, float(cmd.value), source=cmd.source,
                         expires_s=None if expires is None else float(expires),
                         reason=cmd.reason)
        else:
            if cmd.point not in image.outputs_info:
                raise UnknownPoint(cmd.point)
            self._authorize(cmd, "release_force", image.outputs_info[cmd.point].spec.output_class)
            safety.release(cmd.point, source=cmd.source)
