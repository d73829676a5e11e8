"""Alarms & Conditions: limits as LimitAlarmType, trips (and the watchdog latch) as
OffNormalAlarmType, each a condition object a client can Acknowledge.

The safety layer decides; this only shows it. After each scan the bridge compares every
limit monitor's level and every interlock's state with what it last reported and fires a
condition event on a change (asyncua keeps retained conditions for ConditionRefresh). A new
activation is unacknowledged; Acknowledge (any of the four roles, not the viewer) is audited as
an event of the node. Events come from the Server object, with SourceNode the point's variable
or the controller, ConditionId the condition's own object under <node>/Alarms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import User
from asyncua.server.event_generator import EventGenerator

from edge_runtime.core.events import Severity
from edge_runtime.node import Node as EdgeNode
from edge_runtime.safety.interlocks import WATCHDOG, Action
from edge_runtime.safety.limits import Level
from edge_runtime.servers.opcua.methods import CURRENT_USER
from edge_runtime.servers.opcua.model import find_type
from edge_runtime.servers.opcua.uatypes import Node, ObjectIds, Server, StatusCodes, nodeid, status
from edge_runtime.servers.opcua.users import VIEWER, role_of
from edge_runtime.servers.opcua_model import TRIP_ALARM_TYPE

log = logging.getLogger(__name__)
LIMIT_ACTIVE = {Level.LOW_LOW, Level.LOW, Level.HIGH, Level.HIGH_HIGH}
SEVERITY = {Level.LOW: 500, Level.HIGH: 500, Level.LOW_LOW: 900, Level.HIGH_HIGH: 900}
RULE_SEVERITY = {Severity.INFO: 200, Severity.WARNING: 500, Severity.ALARM: 700,
                 Severity.CRITICAL: 900}


@dataclass(slots=True)
class Condition:
    """One condition's state as last reported."""

    key: str  # "limit.<point>", "interlock.<rule>", "watchdog"
    node: Node
    gen: EventGenerator
    severity: int
    active: bool = False
    acked: bool = True
    latched: bool = False
    event_id: bytes = b""
    detail: str = ""
    history: list[str] = field(default_factory=list)


def _set(ev: Any, name: str, value: Any) -> None:
    setattr(ev, name, value)


def _interlock(gen: EventGenerator, name: str) -> None:
    """PSWDTripAlarmType's Interlock field: the name ResetTrip takes (declared without a
    value, so asyncua's event has no such field until one is added)."""
    ev: Any = gen.event
    try:
        ev.add_property("Interlock", name, ua.VariantType.String)
    except Exception:  # an event object without add_property: the attribute alone
        setattr(ev, "Interlock", name)  # noqa: B010


class AlarmBridge:
    """Limit and trip conditions of one node, kept in step with its safety layer."""

    def __init__(self, server: Server, node: EdgeNode, controller: Node, ns: int,
                 points: dict[str, ua.NodeId]) -> None:
        self.server = server
        self.node = node
        self.controller = controller
        self.ns = ns
        self.points = points
        self.conditions: dict[str, Condition] = {}
        self.by_nodeid: dict[ua.NodeId, Condition] = {}
        self.fired = 0
        self.acks = 0

    async def setup(self) -> None:
        """Make one condition object and event generator per limit, rule and the watchdog."""
        name = self.node.config.name
        folder = await self.controller.add_folder(nodeid(f"{name}.Alarms", self.ns),
                                                  ua.QualifiedName("Alarms", self.ns))
        safety = self.node.safety
        # The model's trip type (an OffNormalAlarmType with the Interlock name) when imported.
        trip: Node | int = await find_type(self.server, self.ns, TRIP_ALARM_TYPE) or (
            ObjectIds.OffNormalAlarmType)
        for point, monitor in safety.monitors.items():
            gen = await self._condition(folder, f"limit.{point}",
                                        ObjectIds.ExclusiveLimitAlarmType,
                                        self.points.get(point), point, 500)
            lim = monitor.limits
            for attr, key in (("HighHighLimit", "high_high"), ("HighLimit", "high"),
                              ("LowLimit", "low"), ("LowLowLimit", "low_low")):
                value = getattr(lim, key, None)
                if value is not None:
                    _set(gen.event, attr, float(value))
        for rule in safety.rules:
            gen = await self._condition(folder, f"interlock.{rule.name}", trip, None, rule.name,
                                        RULE_SEVERITY.get(rule.severity, 700))
            _interlock(gen, rule.name)
        gen = await self._condition(folder, WATCHDOG, trip, None, WATCHDOG, 1000)
        _interlock(gen, WATCHDOG)

    async def _condition(self, folder: Node, key: str, etype: Node | int,
                         source: ua.NodeId | None, label: str, severity: int) -> EventGenerator:
        cond_node = await folder.add_object(nodeid(f"{self.node.config.name}.{key}", self.ns),
                                            ua.QualifiedName(key, self.ns))
        gen = await self.server.get_event_generator(etype, ObjectIds.Server)
        ev = gen.event
        ev.NodeId = cond_node.nodeid  # the ConditionId
        ev.SourceNode = source or self.controller.nodeid
        ev.SourceName = label
        ev.ConditionName = key
        ev.Severity = severity
        ev.Retain = False
        _set(ev, "EnabledState", ua.LocalizedText("Enabled"))
        _set(ev, "EnabledState/Id", True)
        if source is not None and hasattr(ev, "InputNode"):
            ev.InputNode = source
        cond = Condition(key, cond_node, gen, severity)
        self.conditions[key] = cond
        self.by_nodeid[cond_node.nodeid] = cond
        return gen

    async def refresh(self) -> None:
        """Compare with the safety layer; fire what changed."""
        safety = self.node.safety
        for point, monitor in safety.monitors.items():
            level = monitor.level
            cond = self.conditions[f"limit.{point}"]
            active = level in LIMIT_ACTIVE
            if active != cond.active or (active and cond.detail != level.value):
                cond.severity = SEVERITY.get(level, 500) if active else cond.severity
                await self._change(cond, active, False,
                                   f"{point} {level.value}" if active else f"{point} normal",
                                   level.value if active else "")
        for rule in safety.rules:
            st = safety.states[rule.name]
            cond = self.conditions[f"interlock.{rule.name}"]
            active = st.asserted or st.latched
            if active != cond.active or st.latched != cond.latched:
                what = "latched" if st.latched and not st.asserted else (
                    "active" if active else "cleared")
                verb = rule.action.value if rule.action is not Action.ALARM else "alarm"
                await self._change(cond, active, st.latched,
                                   f"{rule.message or rule.name}: {verb} {what}", what)
        wd = self.node.watchdog
        cond = self.conditions[WATCHDOG]
        if wd.tripped != cond.active:
            await self._change(cond, wd.tripped, wd.tripped,
                               "scan watchdog tripped: outputs at the safe image, latched until "
                               "reset" if wd.tripped else "watchdog reset", "")

    async def _change(self, cond: Condition, active: bool, latched: bool, message: str,
                      detail: str) -> None:
        if active and not cond.active:
            cond.acked = False  # a new activation waits for an operator
        cond.active, cond.latched, cond.detail = active, latched, detail
        await self._fire(cond, message)

    async def _fire(self, cond: Condition, message: str) -> None:
        ev = cond.gen.event
        ev.Severity = cond.severity
        _set(ev, "ActiveState", ua.LocalizedText("Active" if cond.active else "Inactive"))
        _set(ev, "ActiveState/Id", cond.active)
        _set(ev, "AckedState", ua.LocalizedText("Acknowledged" if cond.acked else "Unacknowledged"))
        _set(ev, "AckedState/Id", cond.acked)
        if hasattr(ev, "LatchedState/Id"):
            _set(ev, "LatchedState", ua.LocalizedText("Latched" if cond.latched else "Unlatched"))
            _set(ev, "LatchedState/Id", cond.latched)
        ev.Retain = cond.active or not cond.acked
        await cond.gen.trigger(message=message)
        eid = ev.EventId
        cond.event_id = eid.Value if isinstance(eid, ua.Variant) else eid
        self.fired += 1

    async def acknowledge(self, parent: ua.NodeId, *args: Any) -> Any:
        """AcknowledgeableConditionType.Acknowledge(EventId, Comment) on a condition."""
        user: User | None = CURRENT_USER.get()
        cond = self.by_nodeid.get(parent)
        if cond is None:
            return status(StatusCodes.BadNodeIdUnknown)
        if len(args) != 2:
            return status(StatusCodes.BadArgumentsMissing if len(args) < 2
                                 else StatusCodes.BadTooManyArguments)
        event_id = args[0].Value if isinstance(args[0], ua.Variant) else args[0]
        comment = args[1].Value if isinstance(args[1], ua.Variant) else args[1]
        role = role_of(user)
        who = getattr(user, "name", None) or "anonymous"
        text = comment.Text if isinstance(comment, ua.LocalizedText) else str(comment or "")
        wall = self.node.clock.wall()
        if role == VIEWER:
            self.node.events.raise_event(wall, f"alarm.{cond.key}", Severity.WARNING,
                                         f"acknowledge by {who} refused: the viewer role may "
                                         "not acknowledge", "alarm_ack_refused")
            return status(StatusCodes.BadUserAccessDenied)
        if event_id != cond.event_id:
            return status(StatusCodes.BadEventIdUnknown)
        if cond.acked:
            return status(StatusCodes.BadConditionBranchAlreadyAcked)
        cond.acked = True
        self.acks += 1
        self.node.events.raise_event(wall, f"alarm.{cond.key}", Severity.INFO,
                                     f"acknowledged by {who} ({role}) via opcua"
                                     f"{': ' + text if text else ''}", "alarm_ack")
        ev = cond.gen.event
        _set(ev, "Comment", ua.LocalizedText(text))
        _set(ev, "ClientUserId", who)
        await self._fire(cond, f"{cond.key} acknowledged by {who}")
        return []

    def get_status(self) -> dict[str, Any]:
        """Active and unacknowledged conditions, events fired, acknowledgements."""
        return {"active": sorted(k for k, c in self.conditions.items() if c.active),
                "unacked": sorted(k for k, c in self.conditions.items() if not c.acked),
                "fired": self.fired, "acks": self.acks}
