"""Who may do what to which output: the user roles, the rights table, precedence. Sans-IO.

One list of user roles (spec 10.2.2), one spelling, used by the safety config (reset_role),
the signed-command envelope (security/signing.py), the key tool and every transport.

Every command is checked against this table whatever its transport: the command path
(core/commands.py ManualOutputs) checks each command it applies, and a transport that answers
its sender (MQTT today; OPC UA and HTTPS next) calls `ManualOutputs.screen` first, which
audits a refusal: role x output class x command kind -> allowed. The output class is
declared per io_map output (`class = "pump"`, config/schema.py OUTPUT_CLASSES), so authority
follows what a command moves, not the topic it came on: a grid signal signed by the grid
operator that names a pump's control word is refused, because the grid operator has no right
on class pump. A command over MQTT is checked twice, for its action (set_output, ...) and for
its channel (the cmd kind: thermal_control, ...); both must allow the class.

    kind            about            default holders (classes)
    set_output,     one output       infrastructure_manager: every class but heartbeat and
    release_output                     parameter; grid_operator: battery;
                                       municipal_partner: heat_recovery
    force,          one output       infrastructure_manager: every class (commissioning)
    release_force
    thermal_control MQTT channel     infrastructure_manager: pump, valve, heater,
                                       heat_recovery, setpoint
    battery_control MQTT channel     infrastructure_manager, grid_operator: battery
    grid_signal     MQTT channel     grid_operator, infrastructure_manager: battery
    reset_trip      no output        every role; each latched rule then checks its own
                                       [safety] reset_role (the finer table)
    set_mode        no output        infrastructure_manager
    disconnect      no output        infrastructure_manager: emergency disconnect of every
                                       external link, and (from a local source only) the
                                       reconnect after it
    announce,       no output        workload_operator, infrastructure_manager
    workload
    prepare         no output        infrastructure_manager (the site coordinator)

A node config may narrow the table, never widen it:

    [rights.grid_operator]
    grid_signal = []              # no grid signals on this node at all
    set_output = ["battery"]
    [rights.workload_operator]
    announce = false              # kinds about no output take true / false

Precedence (the PLC's): interlock > technician force > local operator hold > remote command >
automatic. Forces and interlocks live in the safety layer, which runs after every hold; the
command path keeps the middle of the order: a remote command never replaces, nor releases, a
local operator's hold (`level_of`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import Any

from edge_runtime.config.reader import Section
from edge_runtime.config.schema import OUTPUT_CLASSES

USER_ROLES = ("workload_operator", "infrastructure_manager", "grid_operator", "municipal_partner")
# A command typed at the node's own panel (or the commissioning tool on the node) carries no
# role: whoever stands at the cabinet is the facility's infrastructure manager.
LOCAL_ROLE = "infrastructure_manager"

ACTIONS = ("set_output", "release_output", "force", "release_force", "reset_trip", "set_mode",
           "announce", "disconnect")
CHANNELS = ("thermal_control", "battery_control", "grid_signal", "workload", "prepare")
KINDS = ACTIONS + CHANNELS
OUTPUT_KINDS = frozenset({"set_output", "release_output", "force", "release_force",
                          "thermal_control", "battery_control", "grid_signal"})
NO_OUTPUT = "-"  # the class slot of kinds that move no output

# Sources of commands that came over a network (inbound.py sets "mqtt.<kind>"); "link_loss"
# acts for the site that went away, so its holds rank with the site's.
REMOTE_SOURCES = ("mqtt.", "opcua.", "https.", "link_loss")
SYSTEM_SOURCES = ("link_loss",)  # the node's own watchdogs: never role-checked


class Level(IntEnum):
    """Who wins over whom on one output (higher wins)."""

    AUTOMATIC = 0
    REMOTE = 1
    LOCAL = 2
    FORCE = 3
    INTERLOCK = 4


def level_of(source: str) -> Level:
    """The precedence of a hold made by a command from `source`."""
    return Level.REMOTE if source.startswith(REMOTE_SOURCES) else Level.LOCAL


class Refused(Exception):
    """A command the rights table or the precedence order refuses; the message names the rule
    ("rights: ..." or "precedence: ...")."""


def _all_but(*excluded: str) -> frozenset[str]:
    return frozenset(c for c in OUTPUT_CLASSES if c not in excluded)


_YES = frozenset({NO_OUTPUT})
_NO: frozenset[str] = frozenset()
_THERMAL = frozenset({"pump", "valve", "heater", "heat_recovery", "setpoint"})
_BATTERY = frozenset({"battery"})

_DEFAULT: dict[str, dict[str, frozenset[str]]] = {
    "infrastructure_manager": {
        "set_output": _all_but("heartbeat", "parameter"),
        "release_output": _all_but("heartbeat", "parameter"),
        "force": frozenset(OUTPUT_CLASSES), "release_force": frozenset(OUTPUT_CLASSES),
        "thermal_control": _THERMAL, "battery_control": _BATTERY, "grid_signal": _BATTERY,
        "reset_trip": _YES, "set_mode": _YES, "announce": _YES, "workload": _YES,
        "prepare": _YES, "disconnect": _YES,
    },
    "grid_operator": {
        "set_output": _BATTERY, "release_output": _BATTERY,
        "battery_control": _BATTERY, "grid_signal": _BATTERY, "reset_trip": _YES,
    },
    "workload_operator": {"announce": _YES, "workload": _YES, "reset_trip": _YES},
    "municipal_partner": {
        "set_output": frozenset({"heat_recovery"}), "release_output": frozenset({"heat_recovery"}),
        "reset_trip": _YES,
    },
}


@dataclass(frozen=True, slots=True)
class Rights:
    """role -> kind -> output classes it may touch ({NO_OUTPUT} for kinds about no output)."""

    grants: Mapping[str, Mapping[str, frozenset[str]]]

    def allows(self, role: str, kind: str, output_class: str | None = None) -> bool:
        """True when `role` may do `kind` (on an output of `output_class`)."""
        classes = self.grants.get(role, {}).get(kind, _NO)
        return (output_class if kind in OUTPUT_KINDS else NO_OUTPUT) in classes

    def roles_for(self, kind: str) -> frozenset[str]:
        """Every role that may do `kind` on at least something."""
        return frozenset(r for r, kinds in self.grants.items() if kinds.get(kind))

    def check(self, role: str, kind: str, output_class: str | None = None,
              point: str = "") -> None:
        """Refused naming the rule unless `role` may do `kind` (on `point` of its class)."""
        if role not in USER_ROLES:
            raise Refused(f"rights: unknown role {role!r} (one of {', '.join(USER_ROLES)})")
        if self.allows(role, kind, output_class):
            return
        if kind not in OUTPUT_KINDS:
            raise Refused(f"rights: {role} may not do this: {kind} (allowed: "
                          f"{', '.join(sorted(self.roles_for(kind))) or 'nobody'})")
        on = f" ({point})" if point else ""
        raise Refused(f"rights: {role} may not {kind} on class {output_class or '(none)'}{on}")

    def narrowed(self, role: str, kind: str, classes: Iterable[str]) -> Rights:
        """A copy where `role` keeps only `classes` of `kind` (never more than it had)."""
        grants = {r: dict(k) for r, k in self.grants.items()}
        grants.setdefault(role, {})[kind] = grants.get(role, {}).get(kind, _NO) & set(classes)
        return Rights(MappingProxyType({r: MappingProxyType(k) for r, k in grants.items()}))


DEFAULT_RIGHTS = Rights(MappingProxyType({r: MappingProxyType(k) for r, k in _DEFAULT.items()}))


def resolve_role(role: str, source: str) -> str:
    """The role a command acts with: its own, or LOCAL_ROLE for a local one without any."""
    if role:
        return role
    if level_of(source) is Level.REMOTE:
        raise Refused(f"rights: a remote command ({source}) must carry its role")
    return LOCAL_ROLE


def read_rights(sec: Section, base: Rights = DEFAULT_RIGHTS) -> Rights:
    """The `[rights]` section narrowing `base`; every error names its key (role, kind, class).

    Checks every key itself (the section needs no finish())."""
    rights = base
    for role, body in sec.data.items():
        sec.table(role)  # marks it read; a non-table is reported under its name
        if role not in USER_ROLES:
            sec.error(role, f"unknown role; one of {', '.join(USER_ROLES)}")
            continue
        where = f"{sec.name}.{role}"
        for kind, raw in (body.items() if isinstance(body, dict) else ()):
            classes, why = _grant(kind, raw)
            if classes is not None:
                wider = classes - base.grants.get(role, {}).get(kind, _NO)
                if not wider:
                    rights = rights.narrowed(role, kind, classes)
                    continue
                why = (f"may only narrow the default table: {role} has no {kind} right on "
                       f"{', '.join(sorted(wider))}")
            sec.errors.add(sec.file, where, kind, why)
    return rights


def _grant(kind: str, raw: Any) -> tuple[frozenset[str] | None, str]:
    """The classes a `[rights.<role>] <kind> = ...` line keeps, or None and why not."""
    if kind not in KINDS:
        return None, f"unknown command kind; one of {', '.join(KINDS)}"
    if kind not in OUTPUT_KINDS:
        if not isinstance(raw, bool):
            return None, f"must be true or false ({kind} moves no output), got {raw!r}"[:200]
        return (_YES if raw else _NO), ""
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        return None, f"must be a list of output classes, got {raw!r}"[:200]
    unknown = [c for c in raw if c not in OUTPUT_CLASSES]
    if unknown:
        return None, f"unknown output class {unknown[0]!r}; one of {', '.join(OUTPUT_CLASSES)}"
    return frozenset(raw), ""
