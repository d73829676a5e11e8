"""What the safety search expects, computed from the node's config and the documented rights,
never from the safety layer's own bookkeeping.

- RIGHTS: the rights table as core/authority.py documents its defaults (written out again here,
  so a change to the table in the code is a difference the search sees).
- ConfigRules: the trips, isolations and overrides of the node TOML (read with tomllib), their
  outputs and reset roles; the io_map failsafe, safe direction and comms-loss mirror of every
  output; and the safe image: every output's failsafe, overlaid by the engaged trips and
  isolations, the more restrictive value winning by the output's safe direction.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

IM, GO, WO, MP = ("infrastructure_manager", "grid_operator", "workload_operator",
                  "municipal_partner")
ROLES = (WO, IM, GO, MP)
_ALL = frozenset({"pump", "valve", "battery", "heater", "heat_recovery", "isolation",
                  "setpoint", "heartbeat", "parameter"})
_THERMAL = frozenset({"pump", "valve", "heater", "heat_recovery", "setpoint"})
_BATTERY = frozenset({"battery"})
# role -> kind -> classes (core/authority.py module docstring, "default holders").
RIGHTS: dict[str, dict[str, frozenset[str]]] = {
    IM: {"set_output": _ALL - {"heartbeat", "parameter"},
         "release_output": _ALL - {"heartbeat", "parameter"},
         "force": _ALL, "release_force": _ALL, "thermal_control": _THERMAL,
         "battery_control": _BATTERY, "grid_signal": _BATTERY},
    GO: {"set_output": _BATTERY, "release_output": _BATTERY, "battery_control": _BATTERY,
         "grid_signal": _BATTERY},
    WO: {},
    MP: {"set_output": frozenset({"heat_recovery"}),
         "release_output": frozenset({"heat_recovery"})},
}
CHANNELS = ("thermal_control", "battery_control", "grid_signal")
# Roles that may sign each MQTT channel at all (the signature check's "allowed" list).
CHANNEL_ROLES = {k: frozenset(r for r in ROLES if RIGHTS[r].get(k)) for k in CHANNELS}


def allowed(role: str, kind: str, output_class: str) -> bool:
    """The documented default rights."""
    return output_class in RIGHTS.get(role, {}).get(kind, frozenset())


@dataclass(frozen=True)
class OutputSpec:
    """What the io_map says of one output."""

    failsafe: float
    direction: str  # low | high | zero
    mirrors: str  # full name of the output this comms-loss register stands for ("" if none)
    output_class: str
    minimum: float | None
    maximum: float | None
    integral: bool

    def accepts(self, value: float) -> bool:
        """True when a command may write `value` (type and range, like a PLC write)."""
        if not math.isfinite(value) or (self.integral and not float(value).is_integer()):
            return False
        return not ((self.minimum is not None and value < self.minimum)
                    or (self.maximum is not None and value > self.maximum))


@dataclass(frozen=True)
class ModelRule:
    """One rule as the config declares it."""

    name: str
    action: str  # isolate | trip | override
    outputs: Mapping[str, float | None]  # None: the output's safe image value
    reset_roles: tuple[str, ...]
    delay_s: float = 0.0

    @property
    def latches(self) -> bool:
        """Trips and isolations latch (the config default; none of ours unlatches them)."""
        return self.action in ("trip", "isolate")


def _restrictive(direction: str, a: float, b: float) -> float:
    if direction == "zero":
        return a if abs(a) <= abs(b) else b
    return max(a, b) if direction == "high" else min(a, b)


class ConfigRules:
    """The node config's rules and outputs (see the module docstring)."""

    # The conditions the search models, as the TOML must spell them (a changed file must
    # change the model too, not silently pass).
    WHEN: ClassVar[dict[str, str]] = {
        "leak_isolate": "leak.leak_state == 1",
        "supply_high_high": "supply.voted >= high_high",
        "supply_blind": "quality(supply.voted) == bad",
        "flow_low_low": "flow.flow <= low_low",
        "inverter_fault": "battery.inv_st == 6",
    }

    def __init__(self, toml_path: Path, outputs: Mapping[str, OutputSpec]) -> None:
        with toml_path.open("rb") as fh:
            doc = tomllib.load(fh)
        self.doc = doc
        self.outputs = dict(outputs)
        safety = doc["safety"]
        self.startup_s = float(safety.get("startup_s", 10.0))
        self.rules: dict[str, ModelRule] = {}
        for name, body in safety.get("interlocks", {}).items():
            if self.WHEN.get(name) != body["when"]:
                raise ValueError(f"the search does not model interlock {name}: "
                                 f"{body['when']!r}")
            raw = body["outputs"]
            outs = (dict.fromkeys(raw) if isinstance(raw, list)
                    else {p: float(v) for p, v in raw.items()})
            roles = body.get("reset_role", IM)
            self.rules[name] = ModelRule(name, body["action"], outs,
                                         tuple([roles] if isinstance(roles, str) else roles),
                                         float(body.get("delay_s", 0.0)))
        for point, body in safety.get("inputs", {}).items():
            if body.get("on_bad") == "trip":
                self.rules[f"bad.{point}"] = ModelRule(f"bad.{point}", "trip",
                                                       dict.fromkeys(body["outputs"]), (IM,))
        for point, body in safety.get("outputs", {}).items():
            policy = body["on_comms_loss"]
            action = {"trip": "trip", "failsafe": "override", "zero": "override"}[policy]
            value = 0.0 if policy == "zero" else None
            self.rules[f"comms.{point}"] = ModelRule(f"comms.{point}", action, {point: value},
                                                     (IM,))
        tp = doc.get("two_phase")
        if tp is not None:
            name = f"{tp.get('name', 'two_phase')}.pressure_high_high"
            self.hh_bar = float(tp["pressure_high_high_bar"])
            self.rules[name] = ModelRule(name, "override", {
                tp["points"]["output"]: float(tp.get("output_max_pct", 100.0))}, (IM,))
        bp = safety["bypasses"]["pump_start"]
        self.bypass_max_s = float(bp["max_s"])
        self.bypass_armed_by = tuple(bp["armed_by"])
        self.flow_low_low = float(doc["devices"]["flow"]["limits"]["flow"]["low_low"])
        self.leak_outputs = tuple(self.rules["leak_isolate"].outputs)

    @property
    def latching(self) -> list[str]:
        """Every rule that latches."""
        return [n for n, r in self.rules.items() if r.latches]

    def safe_image(self, engaged: Iterable[str]) -> dict[str, float]:
        """Failsafes overlaid by the engaged trips and isolations (see the module docstring)."""
        values = {p: s.failsafe for p, s in self.outputs.items()}
        driven: dict[str, float] = {}
        for name in engaged:
            rule = self.rules[name]
            if not rule.latches:
                continue
            for point, given in rule.outputs.items():
                value = self.outputs[point].failsafe if given is None else given
                prev = driven.get(point)
                driven[point] = value if prev is None else _restrictive(
                    self.outputs[point].direction, prev, value)
        values.update(driven)
        for point, spec in self.outputs.items():
            if spec.mirrors:
                values[point] = values[spec.mirrors]
        return values


def output_specs(outputs_info: Mapping[str, Any]) -> dict[str, OutputSpec]:
    """OutputSpec per output, from the io_map point specs of a built image."""
    out = {}
    for name, info in outputs_info.items():
        s = info.spec
        device = name.split(".", 1)[0]
        out[name] = OutputSpec(float(s.failsafe or 0.0), s.safe_direction or "low",
                               f"{device}.{s.mirrors}" if s.mirrors else "", s.output_class,
                               s.minimum, s.maximum, bool(s.integral))
    return out
