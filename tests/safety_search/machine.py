"""The safety search: a hypothesis state machine that drives one CDU node (the assembler's,
over fakes below the driver boundary) in simulated time through random sequences of plant
faults, controller faults and commands, and checks the safety invariants after every scan
against expectations computed from the config (model.py), not from the safety layer's state.

Driven (each action is followed by 1..n scans; `wait` lets time pass):
  plant      leak on / cable fault / off, sensor BAD / good, device comms lost / back,
             supply temperature high-high, two-phase loop pressure high-high, inverter fault
  controller safety-layer fault (an exception in the layer for some scans), loop freeze
             past the watchdog timeout (in-loop check or the watchdog thread), SIGSTOP-like
             pause and resume (watchdog or scan first), kill and restart (a new node from the
             same config and state dirs: plain kill, clean shutdown, or a torn or lost latch
             journal)
  commands   from every role: set / release output, force / release force, trip reset
             (named, watchdog, all) on the local panel (command queue); set / release over the
             MQTT command path (NodeLink's own message handler) on every channel, signed,
             unsigned, with a wrong key and replayed; Annex A.1 announcements on cmd/workload
             and the site's workload/prepare, signed or not; broker link down and up, the site
             coordinator offline (its will) and online (link-loss guard, liveness)

Checked after every scan (SafetySearch._check):
  I1 an engaged latch the config implies (condition present, its delay and any start-up
     bypass over) is engaged in that scan, and latched until an accepted reset;
  I2 a latch clears only in a scan that applied a reset from a role the rule names, while its
     condition was not present;
  I3 every output handed to the drivers is what the rules say: the safe image (failsafe
     overlaid by engaged trips and isolations, most restrictive wins) where a trip or isolation
     covers it, the watchdog is latched or the safety layer faulted; an override's value; a
     force's, a hold's; and an output nobody commands keeps its value; comms-loss registers
     hold the safe image;
  I4 the safety layer's published safe image is the one computed from the config;
  I5 holds and forces are exactly those of the commands the documented rights accept (a
     command from a role without the right moves nothing), and every command's audit verdict
     is the model's;
  I6 the watchdog latch is set exactly by a freeze past its timeout and cleared only by the
     infrastructure manager's reset;
  I7 at restart, before the first write, every journaled latch is engaged and the outputs
     staged are the safe image; the watchdog thread, the shutdown and the drivers' hold expiry
     write the safe image;
  I8 the project's own InvariantChecker (edge_runtime/safety/invariants.py) finds nothing.

A violation raises Violation ("t=<s since start>: I<n> ..."); hypothesis then shrinks the
sequence. SAFETY_SEARCH_DEBUG=1 also prints the safety layer's status and the plant at it.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import edge_runtime.node as node_module
from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.core.clock import VirtualClock
from edge_runtime.core.commands import (
    Command,
    ForceOutput,
    ReleaseForce,
    ReleaseOutput,
    ResetTrip,
    SetOutput,
)
from edge_runtime.federation.coordinator_state import state_json
from edge_runtime.federation.link import NodeLink
from edge_runtime.federation.mqtt import Message
from edge_runtime.federation.topics import NodeTopics, SiteTopics
from edge_runtime.messages.models import format_datetime
from edge_runtime.node import Node
from edge_runtime.safety.invariants import InvariantChecker
from edge_runtime.security.signing import generate_key, sign
from tests.safety_search import plant as plant_mod
from tests.safety_search.model import (
    CHANNEL_ROLES,
    CHANNELS,
    GO,
    IM,
    ROLES,
    WO,
    ConfigRules,
    allowed,
    output_specs,
)
from tests.safety_search.plant import Plant, WireDevice

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NODE_TOML = HERE / "cdu_search.toml"
TOL = 1e-6
# Outputs a control block writes over an operator hold (it says so: hold_overridden): the
# two-phase block regulates its condenser valve whatever holds it.
BLOCK_WRITES_OVER_HOLDS = frozenset({"condenser_valve.position_cmd"})
# Outputs no control block writes: with nobody commanding them they keep their value.
STICKY = frozenset({"heat.hp_cmd", "heat.net_pump_pct", "battery.w_set_kw",
                    "battery.w_set_ena"})
# What commands aim at, and values that include refused ones (2.5 on a bit field, out of range).
POINTS = ("pump1.control_word", "pump1.speed_ref", "pump2.control_word", "valve.position_cmd",
          "condenser_valve.position_cmd", "battery.w_set_kw", "battery.w_set_ena",
          "heat.hp_cmd", "heat.net_pump_pct", "pump1.loss_run", "battery.ctrl_hb")
VALUES = (0.0, 1.0, 1.0, 40.0, 100.0, 2.5, -200.0, 700.0, float("nan"), float("inf"))
# Every role, the infrastructure manager (the one with most rights) twice as often; "" is a
# local command that names no role (the panel's: the infrastructure manager's).
ROLE_CHOICES = ("", IM, *ROLES)
# Rules whose condition the model cannot always tell (the vote's timing): None means "cannot
# say", not "input BAD" (or, for comms loss, "not heard from since start-up").
UNCERTAIN = ("supply_blind",)
# Outputs a trip, isolation or override of the config drives (what a force must never beat).
PROTECTED = ("pump1.control_word", "pump2.control_word", "pump1.speed_ref", "valve.position_cmd",
             "heat.hp_cmd", "battery.w_set_kw", "battery.w_set_ena",
             "condenser_valve.position_cmd")
# (channel, role, point) a site command may rightly move (core/authority.py defaults)
SITE_ORDERS = (("thermal_control", IM, "pump1.speed_ref"), ("thermal_control", IM,
               "valve.position_cmd"), ("thermal_control", IM, "heat.hp_cmd"),
               ("battery_control", GO, "battery.w_set_kw"), ("grid_signal", GO,
               "battery.w_set_kw"), ("grid_signal", IM, "battery.w_set_ena"))
# An Annex A.1 announcement (the minimal test vector with a rack's heat, for the preparation
# block; id and time set per message).
A1 = {**json.loads((ROOT / "tests" / "vectors" / "annex_a" /
                    "valid_workload_announcement_minimal.json").read_text()),
      "thermal_profile": {"heat_generation_kw": 60.0}}
RESET_TARGETS = ("leak_isolate", "flow_low_low", "supply_blind", "inverter_fault",
                 "bad.return_temp.temperature", "comms.battery.w_set_kw", "watchdog", None)


class Violation(AssertionError):
    """A safety invariant that did not hold in a scan."""


def _work_base() -> Path:
    """Keys shared by every example of this process (made once) and the io_maps folder."""
    global _BASE
    if _BASE is None:
        base = Path(tempfile.mkdtemp(prefix="pswd-safety-search-"))
        maps = base / "io_maps"
        maps.mkdir()
        for path in (ROOT / "io_maps").glob("*.toml"):
            shutil.copy(path, maps)
        shutil.copy(HERE / "io_maps" / "district_heat_unit.toml", maps)
        for role in ROLES:
            generate_key(base / "keys" / f"{role}.key")
        _BASE = base
    return _BASE


_BASE: Path | None = None


@dataclass
class Pending:
    """A command submitted and what the model says of it."""

    cmd: Command
    accept: bool | None  # None: the model cannot say
    remote: bool = False
    invalid_before: int = 0


@dataclass
class Stats:
    """Counters of one process (the bench prints them)."""

    sequences: int = 0
    steps: int = 0
    scans: int = 0
    restarts: int = 0
    watchdog_trips: int = 0
    latches: int = 0
    commands: int = 0
    refused: int = 0
    link_losses: int = 0
    safety_faults: int = 0
    site_holds_released: int = 0
    violations: list[str] = field(default_factory=list)


STATS = Stats()


class SafetySearch(RuleBasedStateMachine):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        STATS.sequences += 1
        base = _work_base()
        self.tmp = Path(tempfile.mkdtemp(prefix="run-", dir=base))
        self.keys = {r: (base / "keys" / f"{r}.key").read_text().strip() for r in ROLES}
        self.config = load_node_config(NODE_TOML, overrides={
            "node": {"io_maps_dir": str(base / "io_maps")},
            "safety": {"state_dir": str(self.tmp / "safety")},
            "mqtt": {"state_dir": str(self.tmp / "mqtt"), "command_keys": str(base / "keys")}})
        self.period = self.config.scan_period_s
        self.clock = VirtualClock()
        self.plant = Plant()
        self.written: list[tuple[str, dict[str, float]]] = []  # blocking safe-image writes
        self._real_write = node_module.write_failsafe_blocking
        node_module.write_failsafe_blocking = self._capture  # type: ignore[assignment]
        # the model
        self.latched: set[str] = set()  # latches the config implies
        self.wd = False  # the watchdog latch
        self.holds: dict[str, tuple[float, str, str]] = {}  # point -> value, source, role
        self.forces: dict[str, float] = {}
        self.broker_up = True
        self.coord_online = True  # the site coordinator's retained state
        self.coord_ts = format_datetime(datetime.fromtimestamp(self.clock.wall(), UTC))
        self.down_since: float | None = None
        self.loss_declared = False
        self.pending_release: list[str] = []
        self.pending: list[Pending] = []
        self.true_since: dict[str, float | None] = {}
        self.cond: dict[str, bool | None] = {}
        self.last_start = 0.0
        self.prev_wire: dict[str, float] = {}
        self.sent_docs: list[tuple[str, bytes]] = []
        self.violations: list[str] = []
        self.faulty = False  # the safety layer fails in every scan (safety_fault)
        self.announced = 0
        self._build(first=True)

    # -- plumbing -----------------------------------------------------------------------------
    def _capture(self, devices: Any, timeout_s: float, values: Mapping[str, float],
                 writers: Any = None) -> list[str]:
        # the blocking Modbus writer of the watchdog thread and the shutdown: below the driver
        # boundary, so the search records what would have gone on the wire instead
        for dev in devices:
            self.written.append((dev.name, {
                f"{dev.name}.{p.name}": float(values.get(f"{dev.name}.{p.name}",
                                                         p.failsafe or 0.0))
                for p in dev.io_map.outputs}))
        return []

    def _build(self, *, first: bool = False) -> None:
        self.node: Node = assemble(self.config, clock=self.clock, watchdog_thread=False,
                                   driver_factory=plant_mod.drivers)
        if first:
            self.rules = ConfigRules(NODE_TOML, output_specs(self.node.image.outputs_info))
        link = self.node.services["mqtt"]
        assert isinstance(link, NodeLink)
        self.link = link
        self.node.engine.observers.append(link.link_loss)  # as NodeLink.run() does
        self.started = self.clock.monotonic()
        self.last_start = self.started  # a fresh node may start a pump: a bypass may arm
        if self.broker_up:
            link.link_loss.link(True)
            self._deliver_coordinator_state()  # retained: arrives at every connect
        if self.link_up:
            self.down_since = None
        else:
            self.down_since, self.loss_declared = self.started, False
        checker = InvariantChecker(self.node.safety, self.node.image, period_s=self.period,
                                   wire=self._on_wire)
        if not first:
            checker.violations = self.checker.violations
        self.checker = checker

    def teardown(self) -> None:
        node_module.write_failsafe_blocking = self._real_write  # type: ignore[assignment]
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _wire(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, d in self.node.drivers.items():
            assert isinstance(d, WireDevice)
            for point, value in (d.last or {}).items():
                out[f"{name}.{point}"] = value
        return out

    def _on_wire(self, point: str) -> float | None:
        """What the device last received (the InvariantChecker's wire)."""
        device, name = point.split(".", 1)
        last = self.node.drivers[device].last  # type: ignore[attr-defined]
        return None if last is None else last.get(name)

    def _safe(self) -> dict[str, float]:
        s = self.node.safety
        engaged = self.latched | {n for n, st_ in s.states.items()
                                  if st_.engaged and self.rules.rules[n].latches}
        return self.rules.safe_image(engaged)

    def _fail(self, what: str) -> None:
        msg = f"t={self.clock.monotonic() - 1000.0:.2f} s: {what}"
        STATS.violations.append(msg)
        if os.environ.get("SAFETY_SEARCH_DEBUG"):
            st_ = self.node.safety.get_status()
            print(msg, json.dumps({k: st_[k] for k in ("active", "engaged", "latched",
                                                        "unknown", "bypassed", "owners")},
                                  default=str), self.plant, self.node.image.outputs)
            print(json.dumps(st_["rules"], default=str)[:3000])
        raise Violation(msg)

    # -- conditions the config implies ----------------------------------------------------------
    def _conditions(self, now: float) -> dict[str, bool | None]:
        """Each latching / override rule: True present, False absent, None cannot say."""
        p, r = self.plant, self.rules
        alive = now - self.started >= r.startup_s + 2 * self.period  # comms loss is judged
        both_bad = not p.good("supply_temp.temperature") and not p.good(
            "supply_temp_b.temperature")
        return {
            "leak_isolate": (p.leak == 1) if p.good("leak.leak_state") else None,
            "supply_blind": True if both_bad else None,  # the vote's own timing: see below
            "flow_low_low": (p.flow() <= r.flow_low_low) if p.good("flow.flow") else None,
            "inverter_fault": (p.inverter_fault if "battery" not in p.lost else None),
            "bad.return_temp.temperature": not p.good("return_temp.temperature"),
            # silent since start-up: cannot be judged (True once the grace is over)
            **{f"comms.{d}.{o}": (d in p.lost and (True if alive else None)) for d, o in (
                ("battery", "w_set_kw"), ("pump1", "speed_ref"), ("pump2", "speed_ref"))},
            "two_phase.pressure_high_high": (p.pressure_bar > r.hh_bar)
            if p.good("loop_pressure.pressure") else None,
        }

    def _must_raise(self, name: str, now: float) -> bool:
        since = self.true_since.get(name)
        if since is None:
            return False
        held = now - since + 1e-9
        if name == "supply_blind":  # the 1oo2 vote turns BAD after its own delay
            return held >= 1.0 + 2 * self.period
        if name == "flow_low_low":  # its delay, and no start-up bypass can still be on
            return (held >= self.rules.rules[name].delay_s + self.period
                    and now - self.last_start >= self.rules.bypass_max_s + self.period)
        return True

    # -- one scan -------------------------------------------------------------------------------
    def _scan(self) -> None:
        node, period = self.node, self.period
        self.plant.step({n: d.last for n, d in node.drivers.items()  # type: ignore[attr-defined]
                         }, period)
        self.clock.advance(period)
        now = self.clock.monotonic()
        self.plant.publish(node.live, node.image.inputs_info, self.clock.wall())
        was_latched = {n for n, s in node.safety.states.items() if s.latched}
        reset_ok = self._model_commands()
        cond = self._conditions(now)
        for name, value in cond.items() if not self.faulty else ():
            # a faulted layer evaluates nothing: its delay timers neither start nor stop
            if value:
                self.true_since[name] = self.true_since.get(name) or now
            else:
                self.true_since[name] = None
        if not self.faulty:
            self.cond = cond
        node.engine.scan_once(now)
        node.watchdog.kick(now)
        STATS.scans += 1
        self._check(now, was_latched, reset_ok)
        if not self.link_up and self.down_since is not None and not self.loss_declared \
                and not now - self.down_since < self.config.mqtt.link_loss_s:  # type: ignore
            self.loss_declared = True  # the guard queued releases of every site hold
            self.pending_release = [p for p, (_, src, _) in self.holds.items()
                                    if src.startswith("mqtt.")]
            STATS.link_losses += 1
            STATS.site_holds_released += len(self.pending_release)

    def _scans(self, n: int) -> None:
        for _ in range(n):
            self._scan()

    # -- the command path, as the model has it --------------------------------------------------
    def _model_commands(self) -> dict[str, str]:
        """Apply the link-loss releases and the pending commands to the model (at the start of
        the scan, like ManualOutputs); returns the rules an accepted reset may clear -> role."""
        for point in self.pending_release:
            if point in self.holds and self.holds[point][1].startswith("mqtt."):
                del self.holds[point]
        self.pending_release = []
        may_clear: dict[str, str] = {}
        for p in self.pending:
            cmd = p.cmd
            if isinstance(cmd, ResetTrip):
                p.accept = self._model_reset(cmd, may_clear)
            elif not p.remote:
                p.accept = self._model_local(cmd)
            elif p.accept:  # screened at the link; checked again by the scan
                p.accept = self._model_remote_apply(cmd)
        return may_clear

    def _model_reset(self, cmd: ResetTrip, may_clear: dict[str, str]) -> bool | None:
        """The verdict on a reset (None: the model cannot say); fills `may_clear` with the
        latches it may clear."""
        s = self.node.safety
        impl_latched = {n for n, st_ in s.states.items() if st_.latched}
        if cmd.interlock is None:
            names = [*sorted(impl_latched), *(["watchdog"] if self.wd else [])]
        else:
            names = [cmd.interlock]
        outcomes: list[bool | None] = []
        role = cmd.role or IM  # a panel's reset without a role acts as the local role
        for name in names:
            if name == "watchdog":
                ok = self.wd and role == IM
                if ok:
                    self.wd = False
                outcomes.append(ok)
                continue
            rule = self.rules.rules[name]
            entitled = role in rule.reset_roles
            present = self.cond.get(name)
            if present is None and not name.startswith(UNCERTAIN):
                present = True  # its input is BAD: a reset must be refused
            if not entitled or present is True or name not in impl_latched:
                outcomes.append(False)
                continue
            may_clear[name] = role
            outcomes.append(None if present is None else True)
        if not outcomes or False in outcomes:
            return False
        return None if None in outcomes else True

    def _valid(self, point: str, value: float) -> bool:
        return self.rules.outputs[point].accepts(value)

    def _cls(self, point: str) -> str:
        return self.rules.outputs[point].output_class

    def _model_local(self, cmd: Command) -> bool:
        role = getattr(cmd, "role", "") or IM
        if isinstance(cmd, SetOutput):
            if not (self._valid(cmd.point, cmd.value)
                    and allowed(role, "set_output", self._cls(cmd.point))):
                return False
            self.holds[cmd.point] = (cmd.value, cmd.source, role)
        elif isinstance(cmd, ReleaseOutput):
            if not allowed(role, "release_output", self._cls(cmd.point)):
                return False
            self.holds.pop(cmd.point, None)
        elif isinstance(cmd, ForceOutput):
            if not (self._valid(cmd.point, cmd.value)
                    and allowed(role, "force", self._cls(cmd.point))):
                return False
            self.forces[cmd.point] = cmd.value
        elif isinstance(cmd, ReleaseForce):
            if not allowed(role, "release_force", self._cls(cmd.point)):
                return False
            self.forces.pop(cmd.point, None)
        return True

    def _model_remote_screen(self, kind: str, role: str, cmd: SetOutput | ReleaseOutput) -> bool:
        """Rights of the action and of the channel, then precedence over the current holds."""
        cls = self._cls(cmd.point)
        action = "set_output" if isinstance(cmd, SetOutput) else "release_output"
        if not (allowed(role, action, cls) and allowed(role, kind, cls)):
            return False
        held = self.holds.get(cmd.point)
        if held is None:
            return True
        if not held[1].startswith(("mqtt.", "link_loss")):
            return False  # a remote command never replaces nor releases a local hold
        return not (isinstance(cmd, ReleaseOutput) and held[2] != role)

    def _model_remote_apply(self, cmd: Command) -> bool:
        assert isinstance(cmd, SetOutput | ReleaseOutput)
        kind = cmd.source.removeprefix("mqtt.")
        if not self._model_remote_screen(kind, cmd.role, cmd):
            return False
        if isinstance(cmd, SetOutput):
            self.holds[cmd.point] = (cmd.value, cmd.source, cmd.role)
        else:
            self.holds.pop(cmd.point, None)
        return True

    # -- the checks -----------------------------------------------------------------------------
    def _check(self, now: float, was_latched: set[str], may_clear: Mapping[str, str]) -> None:
        node, s = self.node, self.node.safety
        wire = self._wire()
        engaged = {n for n, st_ in s.states.items() if st_.engaged}
        latched_now = {n for n, st_ in s.states.items() if st_.latched}
        # I2 / I1: latches clear only by an entitled reset, and engage in time
        for name in sorted(was_latched - latched_now):
            self.latched.discard(name)
            if name not in may_clear:
                self._fail(f"I2 {name}: latch cleared without an accepted reset by "
                           f"{' or '.join(self.rules.rules[name].reset_roles)} while its "
                           f"condition was absent")
        armed_by = self.rules.bypass_armed_by
        on = any(wire.get(a, 0.0) for a in armed_by)
        if self.wd or (on and not any(self.prev_wire.get(a, 0.0) for a in armed_by)):
            self.last_start = now  # a start-up bypass may have been armed in this scan
        for name in self.rules.latching if not self.faulty else ():  # it cannot judge
            if name not in self.latched and self._must_raise(name, now):
                self.latched.add(name)
                STATS.latches += 1
        for name in sorted(self.latched - engaged):
            self._fail(f"I1 {name}: the config implies it engaged (condition since "
                       f"{self.true_since.get(name)}), the safety layer has not engaged it")
        safe = self._safe()
        # I6: the watchdog latch
        if node.watchdog.tripped != self.wd:
            self._fail(f"I6 watchdog latched={node.watchdog.tripped}, the model says {self.wd}")
        # I4: the published safe image is the config's
        published = s.safe.get().values
        for point, value in safe.items():
            if abs(published.get(point, float("nan")) - value) > TOL:
                self._fail(f"I4 safe image {point} = {published.get(point)}, config says "
                           f"{value:g} (engaged {sorted(engaged)})")
        # I3: every output on the wire
        overrides: dict[str, list[float]] = {}
        for name, r in self.rules.rules.items():
            if r.action != "override":
                continue
            if name in engaged or self.cond.get(name) is True:
                for point, given in r.outputs.items():
                    overrides.setdefault(point, []).append(safe[point] if given is None
                                                           else given)
        covered = {p for n in engaged | self.latched if self.rules.rules[n].latches
                   for p in self.rules.rules[n].outputs}
        owners = s.owner
        for point, spec in self.rules.outputs.items():
            got = wire.get(point)
            if got is None:
                self._fail(f"I3 {point}: nothing handed to its driver")
            assert got is not None
            why, want = "", None
            if spec.mirrors:
                why, want = "comms-loss register at the safe image", safe[point]
            elif self.wd:
                why, want = "watchdog latched: safe image", safe[point]
            elif self.faulty:
                why, want = "safety layer faulted: safe image", safe[point]
            elif point in covered:
                why, want = "trip / isolation: safe image", safe[point]
                if owners.get(point) == "force":
                    self._fail(f"I3 {point}: a force beats a trip / isolation")
            elif point in overrides:
                vals = overrides[point]
                if max(vals) - min(vals) <= TOL:
                    why, want = "override", vals[0]
                if owners.get(point) == "force":
                    self._fail(f"I3 {point}: a force beats an override")
            elif point in self.forces:
                why, want = "force", self.forces[point]
            elif point in self.holds and point not in BLOCK_WRITES_OVER_HOLDS:
                why, want = "operator hold", self.holds[point][0]
            elif point in STICKY and point in self.prev_wire:
                why, want = "nobody commands it: unchanged", self.prev_wire[point]
            if want is not None and abs(got - want) > TOL:
                self._fail(f"I3 {point} = {got:g} on the wire, expected {want:g} ({why}); "
                           f"engaged {sorted(engaged)}, forces {self.forces}, holds "
                           f"{ {p: h[0] for p, h in self.holds.items()} }")
        self.prev_wire = wire
        # I5: holds, forces and verdicts are the documented rights'
        impl_holds = node.manual.holds()
        if set(impl_holds) != set(self.holds) or any(
                abs(node.manual.manual[p] - self.holds[p][0]) > TOL
                or impl_holds[p] != self.holds[p][1] for p in impl_holds):
            self._fail(f"I5 holds {impl_holds} {dict(node.manual.manual)}, the rights allow "
                       f"{self.holds}")
        if dict(s.forces) != self.forces:
            self._fail(f"I5 forces {dict(s.forces)}, the rights allow {self.forces}")
        audit = list(node.commands.audit)
        for p in self.pending:
            if p.remote and self.link.invalid.total() != p.invalid_before:
                got_ok = False  # refused at the link (signature, role, value, rights)
            else:
                recs = [r for r in audit if r.command == repr(p.cmd)]
                got_ok = bool(recs) and recs[-1].accepted
            STATS.commands += 1
            STATS.refused += not got_ok
            if p.accept is not None and got_ok != p.accept:
                self._fail(f"I5 {p.cmd!r}: {'accepted' if got_ok else 'refused'}, the "
                           f"documented rights say {'accept' if p.accept else 'refuse'} "
                           f"({audit[-1].reason if audit else ''})")
        self.pending = []
        # I8: the project's own checker
        found = self.checker.check(now)
        if found:
            self._fail(f"I8 InvariantChecker: {found}")

    def _expect_safe_written(self, what: str, values: Mapping[str, float]) -> None:
        safe = self._safe()
        for point, value in values.items():
            if abs(value - safe[point]) > TOL:
                self._fail(f"I7 {what}: {point} = {value:g}, safe image {safe[point]:g}")

    # -- rules: the plant -----------------------------------------------------------------------
    @initialize()
    def warm_up(self) -> None:
        """Past the start-up grace, pumps running, nothing latched."""
        self._scans(round((self.rules.startup_s + 1.0) / self.period))

    @rule(state=st.sampled_from([0, 1, 2]), n=st.integers(1, 12))
    def leak(self, state: int, n: int) -> None:
        """A leak, a cable fault, or none."""
        self.plant.leak = state
        self._step(n)

    @rule(sensor=st.sampled_from(plant_mod.SENSORS), bad=st.booleans(), n=st.integers(1, 12))
    def sensor(self, sensor: str, bad: bool, n: int) -> None:
        """A sensor fails (BAD) or comes back."""
        (self.plant.bad.add if bad else self.plant.bad.discard)(sensor)
        self._step(n)

    @rule(device=st.sampled_from(plant_mod.COMMS_DEVICES), lost=st.booleans(),
          n=st.integers(1, 12))
    def comms(self, device: str, lost: bool, n: int) -> None:
        """A device stops answering, or answers again."""
        (self.plant.lost.add if lost else self.plant.lost.discard)(device)
        self._step(n)

    @rule(supply=st.sampled_from([30.0, 46.0]), pressure=st.sampled_from([4.8, 9.0]),
          fault=st.booleans(), n=st.integers(1, 12))
    def process(self, supply: float, pressure: float, fault: bool, n: int) -> None:
        """Supply temperature (46: high-high), two-phase pressure (9: high-high), inverter
        fault."""
        self.plant.supply_c, self.plant.pressure_bar = supply, pressure
        self.plant.inverter_fault = fault
        self._step(n)

    @rule(n=st.integers(1, 70))
    def wait(self, n: int) -> None:
        """Time passes."""
        self._step(n)

    # -- rules: the controller ------------------------------------------------------------------
    @rule(n=st.integers(1, 5))
    def safety_fault(self, n: int) -> None:
        """The safety layer itself fails (an exception out of a limit monitor, as a bug would
        raise) for n scans: its exception handler must leave the safe image on the outputs."""
        monitor = self.node.safety.monitors["flow.flow"]

        def broken(*args: Any) -> Any:
            raise RuntimeError("injected safety-layer fault")
        monitor.update = broken  # type: ignore[method-assign]
        self.faulty = True
        STATS.safety_faults += 1
        try:
            self._step(n)
        finally:
            del monitor.update  # the class's method again
            self.faulty = False

    @rule(silent_s=st.sampled_from([0.3, 0.7, 2.5]), thread=st.booleans(), n=st.integers(1, 5))
    def freeze(self, silent_s: float, thread: bool, n: int) -> None:
        """The scan stops past (or within) the watchdog timeout; the in-loop monitor or the
        watchdog thread checks it."""
        self.clock.advance(silent_s)
        self.written.clear()
        before = {name: d.stages for name, d in self.node.drivers.items()}  # type: ignore
        tripped = self.node.watchdog.check(self.clock.monotonic(), from_thread=thread)
        if silent_s > self.node.watchdog.timeout_s and not self.wd:
            self.wd = True
            STATS.watchdog_trips += 1
            if thread:
                self._expect_safe_written("watchdog thread", {
                    k: v for _, vals in self.written for k, v in vals.items()})
                if not self.written:
                    self._fail("I7 watchdog thread tripped and wrote nothing")
            else:
                staged = self._wire()
                if all(d.stages == before[k] for k, d in self.node.drivers.items()):  # type: ignore
                    self._fail("I7 in-loop watchdog tripped and staged nothing")
                self._expect_safe_written("in-loop watchdog", staged)
        if tripped != self.wd:
            self._fail(f"I6 watchdog check returned {tripped}, the model says {self.wd}")
        self._step(n)

    @rule(paused_s=st.sampled_from([0.3, 1.0, 3.0, 12.0]), watchdog_first=st.booleans(),
          n=st.integers(1, 5))
    def pause(self, paused_s: float, watchdog_first: bool, n: int) -> None:
        """SIGSTOP and SIGCONT of the whole process: nothing runs for a while, the drives'
        own hold timers do; on resume the watchdog check or the scan runs first."""
        for name, d in self.node.drivers.items():
            source = d.safe_source  # type: ignore[attr-defined]
            if source is None:
                self._fail(f"I7 driver {name}: its hold expiry has no safe image")
            dev = self.node.config.device(name)  # type: ignore[attr-defined]
            vals = source()
            self._expect_safe_written(f"hold expiry of {name}", {
                f"{name}.{p.name}": vals.get(f"{name}.{p.name}", p.failsafe or 0.0)
                for p in dev.io_map.outputs})
        self.clock.advance(paused_s)
        if watchdog_first:
            self.node.watchdog.check(self.clock.monotonic())
            if paused_s > self.node.watchdog.timeout_s and not self.wd:
                self.wd = True
                STATS.watchdog_trips += 1
        self._step(n)

    @rule(how=st.sampled_from(["kill", "shutdown", "corrupt_journal", "lost_journal"]),
          down_s=st.sampled_from(
        [0.1, 2.0]), n=st.integers(1, 12))
    def restart(self, how: str, down_s: float, n: int) -> None:
        """The node dies (kill -9, a clean shutdown, or a kill that leaves a torn or no latch
        journal) and a new one starts from the same config and state dirs."""
        if how == "shutdown":
            self.written.clear()
            self.node._endpoints = [_Endpoint()]  # the path that writes over fresh sockets
            asyncio.run(self.node.shutdown([]))
            self._expect_safe_written("shutdown", {
                k: v for _, vals in self.written for k, v in vals.items()})
            if not self.written:
                self._fail("I7 shutdown wrote nothing")
        journal = self.tmp / "safety" / "safety.journal"
        if how == "lost_journal":
            journal.unlink(missing_ok=True)  # its marker says it existed
        if how == "corrupt_journal":
            journal.write_bytes(journal.read_bytes()[:-7] if journal.exists() else b"{")
        if how in ("corrupt_journal", "lost_journal"):
            self.latched = set(self.rules.latching)  # fails safe: every latch assumed engaged
            self.wd = True
        self.clock.advance(down_s)
        self.holds.clear()  # in memory only
        self.forces.clear()
        self.pending_release = []
        STATS.restarts += 1
        self._build()
        # I7: before the first write
        s = self.node.safety
        for name in sorted(self.latched):
            if not s.states[name].engaged:
                self._fail(f"I7 {name}: journaled latch not engaged before the first write")
        if self.node.watchdog.tripped != self.wd:
            self._fail(f"I7 watchdog latch after restart {self.node.watchdog.tripped}, "
                       f"journaled {self.wd}")
        if any(d.stages for d in self.node.drivers.values()):  # type: ignore[attr-defined]
            self._fail("I7 something was written before the first scan")
        self._expect_safe_written("output stage at start", self.node.image.outputs)
        self.prev_wire = {}
        self._step(n)

    # -- rules: commands ------------------------------------------------------------------------
    @rule(kind=st.sampled_from(["set", "release", "force", "release_force"]),
          point=st.sampled_from(POINTS), value=st.sampled_from(VALUES),
          role=st.sampled_from(ROLE_CHOICES), n=st.integers(1, 12))
    def local(self, kind: str, point: str, value: float, role: str, n: int) -> None:
        """A command on the local panel (the command queue), from any role."""
        cmd: Command
        if kind == "set":
            cmd = SetOutput(point, value, source="panel", role=role)
        elif kind == "release":
            cmd = ReleaseOutput(point, source="panel", role=role)
        elif kind == "force":
            cmd = ForceOutput(point, value, role=role, source="panel")
        else:
            cmd = ReleaseForce(point, role=role, source="panel")
        self.node.commands.submit(cmd)
        self.pending.append(Pending(cmd, False))
        self._step(n)

    @rule(point=st.sampled_from(PROTECTED), value=st.sampled_from([0.0, 1.0, 100.0]),
          release=st.booleans(), n=st.integers(1, 12))
    def technician(self, point: str, value: float, release: bool, n: int) -> None:
        """The common case of `local` forces: the commissioning technician (infrastructure
        manager) forces, or releases, an output some trip, isolation or override drives."""
        self.local("release_force" if release else "force", point, value, IM, n)

    @rule(latch=st.sampled_from(RESET_TARGETS), role=st.sampled_from(ROLE_CHOICES),
          n=st.integers(1, 12))
    def reset(self, latch: str | None, role: str, n: int) -> None:
        """A trip reset (one latch, the watchdog's, or all) from any role."""
        cmd = ResetTrip(role=role, interlock=latch, source="panel")
        self.node.commands.submit(cmd)
        self.pending.append(Pending(cmd, False))
        self._step(n)

    @precondition(lambda self: self.broker_up)
    @rule(order=st.sampled_from(SITE_ORDERS), release=st.booleans(),
          value=st.sampled_from([0.0, 1.0, 40.0, 100.0]), pick=st.integers(0, 255),
          n=st.integers(1, 12))
    def site_order(self, order: tuple[str, str, str], release: bool, value: float, pick: int,
                   n: int) -> None:
        """The common case of `remote`: a correctly signed command from a role the channel
        and the point's class allow (its own remote holds are what a link loss releases)."""
        kind, role, point = order
        self.remote(kind, release, point, value, role, "signed", pick, n)

    @precondition(lambda self: self.broker_up)
    @rule(kind=st.sampled_from(CHANNELS), release=st.booleans(), point=st.sampled_from(POINTS),
          value=st.sampled_from(VALUES), role=st.sampled_from((IM, *ROLES)),
          how=st.sampled_from(["signed", "signed", "unsigned", "wrong_key", "replay"]),
          pick=st.integers(0, 255), n=st.integers(1, 12))
    def remote(self, kind: str, release: bool, point: str, value: float, role: str, how: str,
               pick: int, n: int) -> None:
        """A command over MQTT, through NodeLink's own handler (parse, signature and nonce
        journal, rights screen, queue)."""
        topic = NodeTopics(self.config.site, self.config.name).cmd(kind)
        if how == "replay" and not self.sent_docs:
            how = "signed"  # nothing accepted yet to replay
        if not math.isfinite(value) and not release:
            how = "unsigned"  # no signer writes NaN (JSON has none): a forged one, refused
        if how == "replay":
            topic, payload = self.sent_docs[pick % len(self.sent_docs)]
            doc = json.loads(payload)
            accept = False
        else:
            doc = {"PSWD_version": "1.0", "point": point,
                   "action": "release_output" if release else "set_output"}
            if not release:
                doc["value"] = value
            signer = role if how != "wrong_key" else ROLES[(ROLES.index(role) + 1) % 4]
            if how == "unsigned":
                doc["timestamp"] = "2023-11-14T22:13:20Z"
            else:
                doc = sign(bytes.fromhex(self.keys[signer]), self.config.name, kind, doc,
                           role=role, now=self.clock.wall())
            accept = how == "signed" and role in CHANNEL_ROLES[kind] and (
                release or self._valid(point, value))
            payload = json.dumps(doc).encode()
            if accept:
                self.sent_docs.append((topic, payload))
        invalid_before = self.link.invalid.total()
        self.link._on_message(Message(topic, payload, 1, False))
        action_kind = topic.rsplit("/", 1)[1]
        cmd: SetOutput | ReleaseOutput = (
            ReleaseOutput(doc["point"], source=f"mqtt.{action_kind}", role=doc.get("role", ""))
            if doc["action"] == "release_output" else
            SetOutput(doc["point"], float(doc["value"]), source=f"mqtt.{action_kind}",
                      role=doc.get("role", "")))
        if accept:
            accept = self._model_remote_screen(action_kind, cmd.role, cmd)
        self.pending.append(Pending(cmd, accept, remote=True, invalid_before=invalid_before))
        self._step(n)

    @property
    def link_up(self) -> bool:
        """The site link as the link-loss guard must see it: broker and a coordinator."""
        return self.broker_up and self.coord_online

    def _deliver_coordinator_state(self) -> None:
        topic = f"{SiteTopics(self.config.site).coordinator_prefix}site-01/state"
        self.link._on_message(Message(topic, state_json(
            self.config.site, "site-01", online=self.coord_online, timestamp=self.coord_ts,
            reason="" if self.coord_online else "connection lost"), 1, True))

    def _link_changed(self, was_up: bool) -> None:
        if was_up and not self.link_up:
            self.down_since = self.clock.monotonic()
        elif self.link_up and not was_up:
            self.down_since, self.loss_declared = None, False

    @precondition(lambda self: self.broker_up)
    @rule(prepare=st.booleans(), how=st.sampled_from(["signed", "unsigned", "wrong_key"]),
          role=st.sampled_from(ROLES), n=st.integers(1, 12))
    def announce(self, prepare: bool, how: str, role: str, n: int) -> None:
        """An Annex A.1 announcement: to this node (cmd/workload) or the site's
        workload/prepare, signed by any role, unsigned or with a wrong key. With command keys
        nothing unsigned may reach the command path (issue 8, finding 9)."""
        self.announced += 1
        wid = f"search-{self.announced}"
        doc = {**A1, "workload_id": wid, "timestamp": format_datetime(
            datetime.fromtimestamp(self.clock.wall(), UTC))}
        kind = "prepare" if prepare else "workload"
        target = f"{self.config.site}/*" if prepare else self.config.name
        if how != "unsigned":
            signer = role if how == "signed" else ROLES[(ROLES.index(role) + 1) % 4]
            doc = sign(bytes.fromhex(self.keys[signer]), target, kind, doc, role=role,
                       now=self.clock.wall())
        topic = (SiteTopics(self.config.site).prepare if prepare
                 else NodeTopics(self.config.site, self.config.name).cmd("workload"))
        before = self.link.invalid.total()
        self.link._on_message(Message(topic, json.dumps(doc).encode(), 1, False))
        self._step(n)
        signed_ok = how == "signed" and role in ((IM,) if prepare else (IM, WO))
        audited = [r for r in self.node.commands.audit if f"workload_id={wid!r}" in r.command]
        refused_at_link = self.link.invalid.total() > before
        if not signed_ok and (audited or not refused_at_link):
            self._fail(f"I5 {kind} signed by {role} ({how}) reached the command path: "
                       f"{audited or 'not refused at the link'}")
        if signed_ok and refused_at_link:
            self._fail(f"I5 {kind} correctly signed by {role} refused at the link")

    @rule(up=st.booleans(), n=st.integers(1, 40))
    def site_link(self, up: bool, n: int) -> None:
        """The broker link goes down or comes back (with the coordinator's retained state)."""
        if up != self.broker_up:
            was_up = self.link_up
            self.broker_up = up
            self.link.link_loss.link(up)
            if up:
                self._deliver_coordinator_state()
            self._link_changed(was_up)
        self._step(n)

    @rule(online=st.booleans(), n=st.integers(1, 40))
    def coordinator(self, online: bool, n: int) -> None:
        """The site coordinator dies (its will: offline) or comes back (online, retained),
        through NodeLink's own handler of pswd/v1/{site}/coordinator/+/state."""
        if online != self.coord_online:
            was_up = self.link_up
            self.coord_online = online
            if online:  # a new connection: a later timestamp
                self.coord_ts = format_datetime(datetime.fromtimestamp(self.clock.wall(), UTC))
            if self.broker_up:
                self._deliver_coordinator_state()
            self._link_changed(was_up)
        self._step(n)

    def _step(self, n: int) -> None:
        STATS.steps += 1
        self._scans(n)

    @invariant()
    def nothing_pending(self) -> None:
        """Every command was applied (and judged) by the scan after it."""
        assert not self.pending


def reproduce_blocked_start() -> str | None:
    """The first unsafe path the search found (fixed in ba45c80): a leak isolates the loop
    and time passes, the low-low flow trip must engage. The violation raised, or None."""
    state = SafetySearch()
    try:
        state.warm_up()
        state.leak(state=1, n=12)
        state.wait(n=70)
    except Violation as exc:
        return str(exc)
    finally:
        state.teardown()
    return None


class _Endpoint:
    """A Modbus endpoint as node.shutdown sees it: something to close."""

    def close(self) -> None:
        """Nothing to close."""
