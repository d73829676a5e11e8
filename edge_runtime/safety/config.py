"""The [safety] section of a node config, read with bounds into frozen dataclasses.

    [safety]                          startup_s: grace before unread inputs count as BAD;
                                      state_dir: latch journal (relative to the config file;
                                      absent: latches are not kept across restarts);
                                      max_bypass_s: the longest any bypass may be configured
    [safety.limits."POINT"]           thresholds of points without device limits (voted ones)
    [safety.redundancy.NAME]          mode = "1oo2" | "2oo3", sensors, tolerance, delay_s, output
    [safety.inputs."POINT"]           on_bad = "substitute" (substitute = POINT) | "trip"
    [safety.outputs."POINT"]          on_comms_loss = "hold" | "zero" | "failsafe" | "trip"
    [safety.interlocks.NAME]          when, action, outputs, latch, reset_role, severity, ...
    [safety.bypasses.NAME]            interlocks, limits, armed_by, max_s (safety/bypass.py)

`when` is parsed here with anchored regular expressions, never evaluated as code:
    POINT OP NUMBER | POINT OP LEVEL | quality(POINT) ==|!= QUALITY | bit(POINT, N) ==|!= 0|1
    | comms_lost(DEVICE)       with OP one of == != < <= > >= and LEVEL low_low .. high_high.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edge_runtime.config.reader import ErrorLog, Section
from edge_runtime.config.schema import DeviceConfig, Limits
from edge_runtime.core.authority import USER_ROLES  # spec 10.2.2, one spelling
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import PointInfo
from edge_runtime.core.points import Quality
from edge_runtime.safety.bypass import BypassConfig
from edge_runtime.safety.interlocks import (
    DEFAULT_RESET_ROLE,
    WATCHDOG,
    Action,
    Reaction,
    Rule,
    SafetyLayer,
)
from edge_runtime.safety.journal import LatchJournal
from edge_runtime.safety.limits import (
    THRESHOLDS,
    BitIs,
    CommsLost,
    Compare,
    Condition,
    Level,
    LevelIs,
    QualityIs,
    check_limits,
)
from edge_runtime.safety.redundancy import GroupConfig, Mode, RedundancyGroup

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_P = r"[A-Za-z][A-Za-z0-9_-]*\.[A-Za-z][A-Za-z0-9_]*"
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_OP = r"==|!=|<=|>=|<|>"
_LEVELS = "|".join(lvl.value for lvl in Level if lvl is not Level.BAD)
_QUALITIES = "|".join(q.value for q in Quality)
_QUALITY_RE = re.compile(rf"quality\(\s*({_P})\s*\)\s*(==|!=)\s*({_QUALITIES})")
_BIT_RE = re.compile(rf"bit\(\s*({_P})\s*,\s*(\d{{1,2}})\s*\)\s*(==|!=)\s*([01])")
_COMMS_RE = re.compile(r"comms_lost\(\s*([A-Za-z][A-Za-z0-9_-]*)\s*\)")
_COMPARE_RE = re.compile(rf"({_P})\s*({_OP})\s*({_NUM})")
_LEVEL_RE = re.compile(rf"({_P})\s*({_OP})\s*({_LEVELS})")
_GRAMMAR = ("expected `point OP number`, `point OP level`, `quality(point) == bad`, "
            "`bit(point, n) == 1` or `comms_lost(device)`")


@dataclass(frozen=True, slots=True)
class SafetyConfig:
    """Everything the safety layer of one node needs."""

    rules: tuple[Rule, ...] = ()
    limits: Mapping[str, Limits] = field(default_factory=dict)  # device and safety limits
    groups: tuple[GroupConfig, ...] = ()
    substitutes: Mapping[str, str] = field(default_factory=dict)  # BAD input -> stand-in
    startup_s: float = 10.0
    state_dir: Path | None = None  # where the latch journal lives (None: not journaled)
    bypasses: tuple[BypassConfig, ...] = ()
    max_bypass_s: float = 60.0


def parse_when(text: str) -> Condition:
    """Parse a `when` expression; ValueError says what was expected."""
    t = text.strip()
    if m := _QUALITY_RE.fullmatch(t):
        return QualityIs(m[1], Quality(m[3]), m[2] == "==")
    if m := _BIT_RE.fullmatch(t):
        if int(m[2]) > 31:
            raise ValueError(f"bit {m[2]} is beyond a 32-bit word")
        return BitIs(m[1], int(m[2]), int(m[4]) if m[3] == "==" else 1 - int(m[4]))
    if m := _COMMS_RE.fullmatch(t):
        return CommsLost(m[1])
    if m := _LEVEL_RE.fullmatch(t):
        return LevelIs(m[1], m[2], Level(m[3]))
    if m := _COMPARE_RE.fullmatch(t):
        value = float(m[3])
        if not math.isfinite(value):
            raise ValueError(f"{m[3]} is not a finite number")
        return Compare(m[1], m[2], value)
    raise ValueError(f"cannot parse {text!r}: {_GRAMMAR}")


def device_points(
    devices: Iterable[DeviceConfig],
) -> tuple[dict[str, PointInfo], dict[str, PointInfo], dict[str, Limits]]:
    """Known inputs, known outputs and device limits of a node, by full point name."""
    inputs: dict[str, PointInfo] = {}
    outputs: dict[str, PointInfo] = {}
    limits: dict[str, Limits] = {}
    for dev in devices:
        for spec in dev.io_map.points:
            info = PointInfo(f"{dev.name}.{spec.name}", dev.name, spec)
            if spec.access.readable:
                inputs[info.name] = info
            if spec.access.writable:
                outputs[info.name] = info
        limits.update({f"{dev.name}.{p}": lim for p, lim in dev.limits.items()})
    return inputs, outputs, limits


class _Section(Section):
    """Section plus the raw read this schema needs (lists, list-or-table)."""

    def get_raw(self, key: str) -> Any:
        """Any value or None when absent; marks the key read, the caller checks the type."""
        return self._get(key, None)


class _Reader:
    """One load: the known names and the error log shared by every table."""

    def __init__(self, file: str, inputs: Collection[str],
                 outputs: Collection[str] | Mapping[str, PointInfo],
                 limits: Mapping[str, Limits], errors: ErrorLog) -> None:
        self.file, self.errors = file, errors
        self.inputs = set(inputs)
        self.outputs = outputs
        self.device_limits = limits
        self.devices = {n.split(".", 1)[0] for n in self.inputs}
        self.derived: set[str] = set()
        self.limits: dict[str, Limits] = {}
        self.rules: list[Rule] = []  # generated by input and output policies

    def section(self, kind: str, name: str, body: Any) -> _Section:
        label = f'"{name}"' if "." in name else name
        return _Section(self.file, f"safety.{kind}.{label}", body, self.errors)

    def readable(self, name: str) -> bool:
        return name in self.inputs or name in self.derived

    def check_output(self, sec: _Section, key: str, point: str, value: float | None) -> bool:
        if point not in self.outputs:
            sec.error(key, f"unknown output {point!r}")
            return False
        spec = self.outputs[point].spec if isinstance(self.outputs, Mapping) else None
        if value is not None and not math.isfinite(value):  # nan passes every comparison
            sec.error(key, f"{point} = {value}: not a finite number")
            return False
        if value is not None and spec is not None and (
                (spec.minimum is not None and value < spec.minimum)
                or (spec.maximum is not None and value > spec.maximum)):
            sec.error(key, f"{point} = {value:g} is outside {spec.minimum}..{spec.maximum}")
            return False
        if value is not None and spec is not None and spec.integral and value != int(value):
            # The scan would refuse it (an integer register is never rounded): refuse it now.
            sec.error(key, f"{point} = {value:g}: an integer register takes whole numbers only")
            return False
        return True

    def outputs_of(self, sec: _Section, action: Action) -> dict[str, float | None]:
        """`outputs`: a table point -> value, or (trip only) a list of points at failsafe."""
        raw = sec.get_raw("outputs")
        if action is Action.ALARM:
            if raw is not None:
                sec.error("outputs", "an alarm drives no outputs")
            return {}
        out: dict[str, float | None] = {}
        if isinstance(raw, list) and action is Action.TRIP and all(isinstance(p, str) for p in raw):
            out = dict.fromkeys(raw)
        elif isinstance(raw, dict):
            for point, value in _flatten(raw).items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    sec.error("outputs", f"{point}: value must be a number, got {value!r}")
                else:
                    out[point] = float(value)
        elif raw is not None:
            sec.error("outputs", "must be a table of output = value"
                      + (" or a list of outputs (to their failsafe)" if action is Action.TRIP
                         else ""))
            return {}
        if raw is not None and not out:
            sec.error("outputs", "must name at least one output")
        elif raw is None:
            sec.error("outputs", f"required for action {action}")
        return {p: v for p, v in out.items() if self.check_output(sec, "outputs", p, v)}

    def roles_of(self, sec: _Section, latched: bool) -> tuple[str, ...]:
        raw = sec.get_raw("reset_role")
        if raw is None:
            return (DEFAULT_RESET_ROLE,)
        roles = [raw] if isinstance(raw, str) else raw
        if not latched:
            sec.error("reset_role", "only a latched action is reset")
        elif (not isinstance(roles, list) or not roles
              or not all(isinstance(r, str) and r in USER_ROLES for r in roles)):
            sec.error("reset_role", f"must be one or a list of {', '.join(USER_ROLES)}; "
                      f"got {raw!r}")
        else:
            return tuple(roles)
        return (DEFAULT_RESET_ROLE,)

    def check_condition(self, sec: _Section, cond: Condition) -> None:
        if isinstance(cond, CommsLost):
            if cond.device not in self.devices:
                sec.error("when", f"no device {cond.device!r} with inputs")
            return
        if not self.readable(cond.point):
            sec.error("when", f"unknown input {cond.point!r}")
        elif isinstance(cond, LevelIs):
            lim = self.limits.get(cond.point)
            if lim is None:
                sec.error("when", f"{cond.point} has no limits")
            elif cond.level is not Level.NORMAL and getattr(lim, cond.level.value) is None:
                sec.error("when", f"{cond.point} has no {cond.level} limit")


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    # `{pump1.speed_ref = 0}` unquoted is a nested table in TOML; accept both spellings.
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _point_tables(table: Mapping[str, Any], known: set[str], prefix: str = "") -> dict[str, Any]:
    # `[safety.inputs.dev.point]` unquoted nests one level; a known point ends the descent.
    out: dict[str, Any] = {}
    for key, body in table.items():
        name = f"{prefix}{key}"
        if (name not in known and isinstance(body, dict) and body
                and all(isinstance(v, dict) for v in body.values())):
            out.update(_point_tables(body, known, f"{name}."))
        else:
            out[name] = body
    return out


def load_safety(
    section: Mapping[str, Any] | None,
    file: str,
    known_inputs: Collection[str],
    known_outputs: Collection[str] | Mapping[str, PointInfo],
    errors: ErrorLog,
    *,
    limits: Mapping[str, Limits] | None = None,
) -> SafetyConfig:
    """Read a node's [safety] table; errors go to `errors` as `file: [safety.X.NAME] key: why`."""
    rd = _Reader(file, known_inputs, known_outputs, limits or {}, errors)
    top = _Section(file, "safety", dict(section or {}), errors)
    startup_s = top.get_float("startup_s", 10.0, minval=0.0, maxval=600.0)
    state_dir = _state_dir(top, file)
    max_bypass_s = top.get_float("max_bypass_s", 60.0, above=0.0, maxval=3600.0)
    groups = [g for n, b in top.table("redundancy").items() if (g := _group(rd, n, b))]
    for point, lim in rd.device_limits.items():
        dev, _, name = point.partition(".")
        for key, reason in check_limits(lim):
            errors.add(file, f"devices.{dev}.limits.{name}", key, reason)
        rd.limits[point] = lim
    for point, body in _point_tables(top.table("limits"), rd.inputs | rd.derived).items():
        _limits(rd, point, body)
    substitutes: dict[str, str] = {}
    for point, body in _point_tables(top.table("inputs"), rd.inputs).items():
        _input_policy(rd, point, body, substitutes)
    for point, body in _point_tables(top.table("outputs"), set(rd.outputs)).items():
        _output_policy(rd, point, body)
    # Declared interlocks first: among rules of equal priority the first declared wins.
    rules = [r for n, b in top.table("interlocks").items() if (r := _rule(rd, n, b))]
    all_rules = (*rules, *rd.rules)
    bypasses = [bp for n, b in top.table("bypasses").items()
                if (bp := _bypass(rd, n, b, {r.name for r in all_rules}, max_bypass_s))]
    top.finish()
    return SafetyConfig(rules=all_rules, limits=MappingProxyType(rd.limits),
                        groups=tuple(groups), substitutes=MappingProxyType(substitutes),
                        startup_s=startup_s, state_dir=state_dir, bypasses=tuple(bypasses),
                        max_bypass_s=max_bypass_s if isinstance(max_bypass_s, float) else 60.0)


def _state_dir(top: _Section, file: str) -> Path | None:
    raw = top.get_str("state_dir", None)
    if not isinstance(raw, str):
        return None
    path = Path(raw)
    if not path.is_absolute():
        path = Path(file).resolve().parent / path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        top.error("state_dir", f"cannot create {path}: {exc.strerror or exc}")
        return None
    if not os.access(path, os.W_OK | os.X_OK):
        top.error("state_dir", f"{path} is not writable")
        return None
    return path


def _names(sec: _Section, key: str) -> list[str]:
    raw = sec.get_raw(key)
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        sec.error(key, f"must be a list of names, got {raw!r}")
        return []
    return list(raw)


def _bypass(rd: _Reader, name: str, body: Any, rules: set[str],
            max_bypass_s: Any) -> BypassConfig | None:
    errors_before = len(rd.errors.lines)
    sec = rd.section("bypasses", name, body)
    interlocks = _names(sec, "interlocks")
    limits = _names(sec, "limits")
    armed_by = _names(sec, "armed_by")
    max_s = sec.get_float("max_s", above=0.0, maxval=3600.0)
    sec.finish()
    for rule in interlocks:
        if rule not in rules or rule == WATCHDOG:
            sec.error("interlocks", f"unknown interlock {rule!r}")
    for point in limits:
        if point not in rd.limits:
            sec.error("limits", f"{point!r} has no limits to bypass")
    if not interlocks and not limits:
        sec.error("interlocks", "a bypass covers at least one interlock or limit")
    if not armed_by:
        sec.error("armed_by", "required: the outputs whose start command arms the bypass")
    for point in armed_by:
        if point not in rd.outputs:
            sec.error("armed_by", f"unknown output {point!r}")
    if (isinstance(max_s, float) and isinstance(max_bypass_s, float)
            and max_s > max_bypass_s):
        sec.error("max_s", f"{max_s:g} s is longer than [safety] max_bypass_s = "
                           f"{max_bypass_s:g} s")
    if len(rd.errors.lines) > errors_before or not isinstance(max_s, float):
        return None
    return BypassConfig(name, tuple(interlocks), tuple(limits), tuple(armed_by), max_s)


def _group(rd: _Reader, name: str, body: Any) -> GroupConfig | None:
    errors_before = len(rd.errors.lines)
    sec = rd.section("redundancy", name, body)
    mode = sec.get_str("mode", choices=[m.value for m in Mode])
    sensors = sec.get_raw("sensors")
    tolerance = sec.get_float("tolerance", minval=0.0)
    delay_s = sec.get_float("delay_s", 0.0, minval=0.0, maxval=3600.0)
    output = sec.get_str("output", f"{name}.voted")
    unit = sec.get_str("unit", "")
    sec.finish()
    if not _NAME.match(name):
        sec.error("(name)", "letters, digits, '-' and '_' only, starting with a letter")
    need = {"1oo2": 2, "2oo3": 3}.get(mode, 0)
    if (not isinstance(sensors, list) or not all(isinstance(s, str) for s in sensors)
            or len(set(sensors)) != len(sensors)):
        sec.error("sensors", f"required: a list of distinct input names, got {sensors!r}")
    elif need and len(sensors) != need:
        sec.error("sensors", f"{mode} needs {need} sensors, got {len(sensors)}")
    else:
        for unknown in (s for s in sensors if s not in rd.inputs):
            sec.error("sensors", f"unknown input {unknown!r}")
    if not isinstance(output, str) or not re.fullmatch(_P, output):
        sec.error("output", f"must be a point name like {name}.voted, got {output!r}")
    elif output in rd.inputs or output in rd.outputs or output in rd.derived:
        sec.error("output", f"{output!r} is already a point")
    if len(rd.errors.lines) > errors_before or not need:
        return None
    rd.derived.add(output)
    return GroupConfig(name, Mode(mode), tuple(sensors), tolerance, delay_s, output, unit)


def _limits(rd: _Reader, point: str, body: Any) -> None:
    errors_before = len(rd.errors.lines)
    sec = rd.section("limits", point, body)
    values = {lvl.value: sec.get_float(lvl.value, None) for lvl in THRESHOLDS}
    hysteresis = sec.get_float("hysteresis", 0.0, minval=0.0)
    delay_s = sec.get_float("delay_s", 0.0, minval=0.0, maxval=3600.0)
    sec.finish()
    if not rd.readable(point):
        sec.error("(point)", f"unknown input {point!r}")
        return
    if point in rd.device_limits:
        sec.error("(point)", f"{point} already has limits in its [devices] table")
        return
    if len(rd.errors.lines) > errors_before:
        return  # one report per mistake: check_limits would repeat the bounds errors
    lim = Limits(hysteresis=hysteresis, delay_s=delay_s, **values)
    problems = check_limits(lim)
    for key, reason in problems:
        sec.error(key, reason)
    if not problems:
        rd.limits[point] = lim


def _member(cls: Any, value: Any, fallback: Any) -> Any:
    """`cls(value)`, or `fallback` for a value get_str already recorded as an error (the load
    then fails with that error, not a ValueError from the enum)."""
    try:
        return cls(value)
    except ValueError:
        return fallback


def _input_policy(rd: _Reader, point: str, body: Any, substitutes: dict[str, str]) -> None:
    sec = rd.section("inputs", point, body)
    policy = sec.get_str("on_bad", choices=("substitute", "trip"))
    sub = sec.get_str("substitute", None)
    severity = sec.get_str("severity", "critical", choices=[s.value for s in Severity])
    trip = policy == "trip"
    outputs = rd.outputs_of(sec, Action.TRIP) if trip else {}
    roles = rd.roles_of(sec, trip)
    sec.finish()
    if not rd.readable(point):
        sec.error("(point)", f"unknown input {point!r}")
    elif policy == "substitute":
        if sub is None:
            sec.error("substitute", "required with on_bad = \"substitute\"")
        elif not rd.readable(sub) or sub == point:
            sec.error("substitute", f"must be another known input, got {sub!r}")
        else:
            substitutes[point] = sub
    elif trip:
        if sub is not None:
            sec.error("substitute", "only with on_bad = \"substitute\"")
        if outputs:
            rd.rules.append(Rule(f"bad.{point}", QualityIs(point, Quality.BAD), Action.TRIP,
                                 MappingProxyType(outputs), latch=True, reset_roles=roles,
                                 severity=_member(Severity, severity, Severity.CRITICAL),
                                 message=f"{point} BAD"))


_COMMS = {"hold": Action.HOLD, "zero": Action.OVERRIDE, "failsafe": Action.OVERRIDE,
          "trip": Action.TRIP}


def _output_policy(rd: _Reader, point: str, body: Any) -> None:
    sec = rd.section("outputs", point, body)
    policy = sec.get_str("on_comms_loss", choices=tuple(_COMMS))
    roles = rd.roles_of(sec, policy == "trip")
    sec.finish()
    device = point.split(".", 1)[0]
    value = 0.0 if policy == "zero" else None
    if not rd.check_output(sec, "(point)", point, value) or policy not in _COMMS:
        return
    if device not in rd.devices:
        sec.error("on_comms_loss", f"device {device!r} has no inputs to show a comms loss")
        return
    rd.rules.append(Rule(
        f"comms.{point}", CommsLost(device), _COMMS[policy], MappingProxyType({point: value}),
        latch=policy == "trip", reset_roles=roles,
        severity=Severity.CRITICAL if policy == "trip" else Severity.ALARM,
        message=f"comms lost to {device}: {point} -> {policy}"))


def _rule(rd: _Reader, name: str, body: Any) -> Rule | None:
    sec = rd.section("interlocks", name, body)
    when = sec.get_str("when")
    valid = [a.value for a in Action if a is not Action.HOLD]  # hold: comms loss only
    action_s = sec.get_str("action", choices=valid)
    action = Action(action_s) if action_s in valid else Action.ALARM
    latching = action in (Action.TRIP, Action.ISOLATE)
    latch = sec.get_bool("latch", latching)
    outputs = rd.outputs_of(sec, action)
    roles = rd.roles_of(sec, bool(latch))
    severity = sec.get_str("severity", "critical" if latching else "alarm",
                           choices=[s.value for s in Severity])
    delay_s = sec.get_float("delay_s", 0.0, minval=0.0, maxval=3600.0)
    reaction = sec.get_str("reaction", "force_off", choices=[r.value for r in Reaction])
    reaction_delay_s = sec.get_float("reaction_delay_s", 0.0, minval=0.0, maxval=3600.0)
    step_s = sec.get_float("step_s", 1.0, above=0.0, maxval=600.0)
    message = sec.get_str("message", "")
    sec.finish()
    if not _NAME.match(name):
        sec.error("(name)", "letters, digits, '-' and '_' only, starting with a letter")
    if latch and action is Action.ALARM:
        sec.error("latch", "an alarm has no outputs to latch")
    for key in ("reaction", "step_s"):
        if sec.has(key) and not latching:
            sec.error(key, "only for trip and isolate")
    if sec.has("step_s") and reaction != Reaction.GRACEFUL_SHUTDOWN:
        sec.error("step_s", "only with reaction = \"graceful_shutdown\"")
    if sec.has("reaction_delay_s") and action is Action.ALARM:
        sec.error("reaction_delay_s", "an alarm has no reaction")
    cond: Condition | None = None
    if isinstance(when, str):
        try:
            cond = parse_when(when)
        except ValueError as exc:
            sec.error("when", str(exc))
        else:
            rd.check_condition(sec, cond)
    if cond is None or action_s not in valid or not _NAME.match(name):
        return None
    return Rule(name, cond, action, MappingProxyType(outputs), latch=bool(latch),
                reset_roles=roles, severity=_member(Severity, severity, Severity.CRITICAL),
                delay_s=delay_s, reaction=_member(Reaction, reaction, Reaction.FORCE_OFF),
                reaction_delay_s=reaction_delay_s, step_s=step_s,
                message=message)


def build_safety_layer(cfg: SafetyConfig, events: EventLog, *,
                       wall: Callable[[], float] | None = None,
                       protections: Iterable[Rule] = ()) -> SafetyLayer:
    """The node's safety layer (an interlock for the scan engine) from its config, with the
    protections the role's control config generates (safety/protections.py)."""
    groups = [RedundancyGroup(g, events, wall) for g in cfg.groups]
    journal = LatchJournal(cfg.state_dir) if cfg.state_dir is not None else None
    return SafetyLayer((*cfg.rules, *protections), limits=cfg.limits, groups=groups,
                       substitutes=cfg.substitutes, events=events, wall=wall,
                       startup_s=cfg.startup_s, journal=journal, bypasses=cfg.bypasses)
