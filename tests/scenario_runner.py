"""Scenarios as data: a real Node against the real plant simulator, stepped in simulated time.

A scenario file (tests/scenarios/*.toml) names a node config and a plant config (usually the
examples, with optional overrides merged in), then scripts what happens and what must follow:

    [scenario]     name, description, node, plant, warmup_s, duration_s
    [node_overrides] / [plant_overrides]   tables merged into the two configs
    [[step]]       t = 1.0 and one of
                   inject = {device, kind, ...}   a simulator fault (Simulator.inject)
                   clear = {device, kind?}        end faults
                   command = {type, ...}          set_output, release_output, force,
                                                  release_force, reset_trip, set_control_mode
                                                  (node command queue)
                   link = "up" | "down"           the site link, as the node's link-loss
                                                  guard sees it (needs [mqtt] in the node
                                                  config; up from the start)
                   node = "restart" | "watchdog"  a power cycle (a new node from the same
                                                  config and latch journal, no shutdown) or
                                                  a scan watchdog trip (the scan fell silent)
    [[expect]]     t (and `until`: checked at every scan from t to until) and one of
                   output = POINT   value the node handed its driver at the end of the scan
                   wire = POINT     value the simulated device last received over Modbus
                   input = POINT    latched or derived input (`quality` may be checked too)
                   plant = NAME     a field of the simulator's truth (PlantState.as_dict();
                                    NAME[i] indexes a tuple field)
                   event = CODE     an event with this code (and `source` prefix) since t = 0
                   no_event = [CODES]  none of these codes from t = 0 to the check
                   audit = {accepted, contains}  the last audit record of the command queue
                   owner = POINT    who had the last word on an output (`is`, "" = control)
                   value checks: equals, tol (default 1e-6), min, max

Every scan of every scenario (warm-up included) also runs the safety invariant checker
(edge_runtime/safety/invariants.py, with the simulator's registers as the wire): a violation
fails the scenario like an expectation. The node journals its latches into a temporary
`[safety] state_dir` of its own.

Time: t = 0 is the end of the warm-up. Each scan period the runner, in this order, applies
the steps due, advances the simulator by one period, has every driver poll once over Modbus
TCP, runs one scan at the virtual time, has every driver write what is due, then checks the
expectations due. Every exchange is awaited in turn, so a run is deterministic: no driver
task races the scan, and only the contents of the registers cross the loopback sockets.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.config.reader import ErrorLog, Section
from edge_runtime.core.clock import VirtualClock
from edge_runtime.core.commands import (
    Command,
    ForceOutput,
    ReleaseForce,
    ReleaseOutput,
    ResetTrip,
    SetControlMode,
    SetOutput,
)
from edge_runtime.core.events import Event
from edge_runtime.federation.link_loss import LinkLossGuard
from edge_runtime.io.modbus import ModbusDevice
from edge_runtime.safety.invariants import InvariantChecker
from pswd_plant_sim.config import build_sim_config
from pswd_plant_sim.simulator import Simulator
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
_EPS = 1e-6
_TARGETS = ("output", "wire", "input", "plant", "event", "no_event", "audit", "owner")


class ScenarioError(Exception):
    """A scenario file that cannot be run; the message names file, table and key."""


@dataclass
class Check:
    """One expectation."""

    index: int
    t: float
    until: float
    target: str
    name: Any
    body: Mapping[str, Any]
    checked: int = 0

    def label(self) -> str:
        """How the failure names this expectation."""
        return f"expect[{self.index}] {self.target} {self.name!r}"


@dataclass
class Result:
    """What a run saw: failures (empty = pass), checks made, the events."""

    name: str
    failures: list[str] = field(default_factory=list)
    checks: int = 0
    events: list[Event] = field(default_factory=list)
    scans: int = 0

    @property
    def passed(self) -> bool:
        """True when every expectation held at every scan it was checked."""
        return not self.failures


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = (_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict)
                  else v)
    return out


def _command(body: Any, where: str) -> Command:
    if not isinstance(body, dict):
        raise ScenarioError(f"{where} command: must be a table")
    b = dict(body)
    kind = b.pop("type", None)
    b.setdefault("source", "scenario")
    makers: dict[str, type[Any]] = {"set_output": SetOutput, "release_output": ReleaseOutput,
                                    "force": ForceOutput, "release_force": ReleaseForce,
                                    "reset_trip": ResetTrip, "set_control_mode": SetControlMode}
    maker = makers.get(str(kind))
    if maker is None:
        raise ScenarioError(f"{where} command.type: one of {', '.join(makers)}; got {kind!r}")
    try:
        cmd: Command = maker(**b)
    except TypeError as exc:
        raise ScenarioError(f"{where} command: {exc}") from None
    return cmd


class Scenario:
    """A loaded scenario file, ready to run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        file = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        errors = ErrorLog()
        top = Section(file, "", data, errors)
        sc = top.sub("scenario", required=True)
        self.name = sc.get_str("name")
        self.description = sc.get_str("description", "")
        self.node_path = ROOT / sc.get_str("node", "examples/cdu.toml")
        self.plant_path = ROOT / sc.get_str("plant", "examples/plant.toml")
        self.warmup_s = sc.get_float("warmup_s", 6.0, minval=0.0, maxval=600.0)
        self.duration_s = sc.get_float("duration_s", minval=0.0, maxval=3600.0)
        sc.finish()
        self.node_overrides = top.table("node_overrides")
        self.plant_overrides = top.table("plant_overrides")
        steps_raw = data.get("step", [])
        expects_raw = data.get("expect", [])
        top._read.update({"step", "expect"})  # arrays of tables, checked below
        top.finish()
        errors.raise_if_any()
        self.steps: list[tuple[float, str, Any]] = []
        for i, body in enumerate(steps_raw):
            where = f"{file}: [[step]] #{i}"
            if not isinstance(body, dict) or not isinstance(body.get("t"), int | float):
                raise ScenarioError(f"{where} t: required, a number of seconds")
            actions = [k for k in body if k != "t"]
            if len(actions) != 1 or actions[0] not in ("inject", "clear", "command", "link",
                                                       "node"):
                raise ScenarioError(f"{where}: exactly one of inject, clear, command, link, "
                                    "node")
            what = actions[0]
            value = body[what]
            if what == "command":
                value = _command(value, where)
            elif what == "link":
                if value not in ("up", "down"):
                    raise ScenarioError(f"{where} link: \"up\" or \"down\"")
            elif what == "node":
                if value not in ("restart", "watchdog"):
                    raise ScenarioError(f"{where} node: \"restart\" or \"watchdog\"")
            elif not isinstance(value, dict) or "device" not in value:
                raise ScenarioError(f"{where} {what}: a table with at least `device`")
            self.steps.append((float(body["t"]), what, value))
        self.steps.sort(key=lambda s: s[0])
        self.checks: list[Check] = []
        for i, body in enumerate(expects_raw):
            where = f"{file}: [[expect]] #{i}"
            if not isinstance(body, dict) or not isinstance(body.get("t"), int | float):
                raise ScenarioError(f"{where} t: required, a number of seconds")
            targets = [k for k in _TARGETS if k in body]
            if len(targets) != 1:
                raise ScenarioError(f"{where}: exactly one of {', '.join(_TARGETS)}")
            unknown = set(body) - {"t", "until", targets[0], "equals", "tol", "min", "max",
                                   "quality", "source", "is", "note"}
            if unknown:
                raise ScenarioError(f"{where} {sorted(unknown)[0]}: unknown key")
            t = float(body["t"])
            self.checks.append(Check(i, t, float(body.get("until", t)), targets[0],
                                     body[targets[0]], body))


class Harness:
    """A Node and a Simulator wired over loopback Modbus TCP, stepped one scan at a time."""

    def __init__(self, scenario: Scenario, *, state_dir: Path | None = None) -> None:
        self.scenario = scenario
        with scenario.plant_path.open("rb") as fh:
            plant = _merge(tomllib.load(fh), scenario.plant_overrides)
        ports: dict[int, int] = {}
        for ep in plant["endpoints"].values():
            new = free_port()
            ports[int(ep["port"])] = new
            ep["port"] = new
        errors = ErrorLog()
        self.sim = Simulator(build_sim_config(plant, str(scenario.plant_path),
                                              scenario.plant_path.parent, errors))
        errors.raise_if_any()
        with scenario.node_path.open("rb") as fh:
            node_data = _merge(tomllib.load(fh), scenario.node_overrides)
        overrides = dict(scenario.node_overrides)
        devices: dict[str, Any] = {}
        for name, dev in node_data.get("devices", {}).items():
            m = re.fullmatch(r"(.+):(\d+)", str(dev.get("endpoint", "")))
            if m and int(m[2]) in ports:
                devices[name] = {"endpoint": f"{m[1]}:{ports[int(m[2])]}"}
                # Time is simulated: only a stalled machine could time a loopback request out,
                # and that must not turn into a BAD input (and a different scenario).
                devices[name]["timeout_ms"] = max(float(dev.get("timeout_ms", 250.0)), 5000.0)
        # Latches journaled where this run alone sees them (never the example's own folder).
        self._own_state = state_dir is None  # a test passing its own keeps it for a restart
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="pswd-scenario-"))
        overrides = _merge(overrides, {"devices": devices,
                                       "safety": {"state_dir": str(self.state_dir)}})
        self.config = load_node_config(scenario.node_path, overrides=overrides)
        self.clock = VirtualClock()
        self.node = assemble(self.config, clock=self.clock, watchdog_thread=False)
        self.period = self.config.scan_period_s
        self.invariants = InvariantChecker(self.node.safety, self.node.image,
                                           period_s=self.period, wire=self.wire)
        self.events_before = 0
        self._carried: list[Event] = []
        # [mqtt] in the node config: its link-loss guard, link up until a `link` step
        self.link: LinkLossGuard | None = None
        if self.config.mqtt is not None:
            self.link = LinkLossGuard(self.node, self.config.mqtt.link_loss_s,
                                      self.config.mqtt.on_link_loss)
            self.node.engine.observers.append(self.link)
            self.link.link(True)
        self.scans = 0

    async def __aenter__(self) -> Harness:
        await self.sim.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ep in self.node._endpoints:
            ep.close()
        await self.sim.stop()
        if self._own_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def restart(self) -> None:
        """A new node from the same config (latch journal included), as after a power cycle;
        the old one is dropped without a shutdown. Nothing is written before the next tick."""
        for ep in self.node._endpoints:
            ep.close()
        self._carried += self.node.events.since(self.events_before)
        self.events_before = 0
        violations = self.invariants.violations
        self.node = assemble(self.config, clock=self.clock, watchdog_thread=False)
        self.invariants = InvariantChecker(self.node.safety, self.node.image,
                                           period_s=self.period, wire=self.wire)
        self.invariants.violations = violations
        if self.link is not None and self.config.mqtt is not None:
            self.link = LinkLossGuard(self.node, self.config.mqtt.link_loss_s,
                                      self.config.mqtt.on_link_loss)
            self.node.engine.observers.append(self.link)
            self.link.link(True)

    def events(self) -> list[Event]:
        """Every event since `events_before` (across restarts)."""
        return self._carried + self.node.events.since(self.events_before)

    def wire(self, point: str) -> float | None:
        """The value the simulated device last received for an output (None: never written)."""
        dev, name = point.split(".", 1)
        unit = self.sim.rig.units.get(dev)
        return None if unit is None else unit.bank.client_value(name)

    async def tick(self) -> None:
        """Plant forward one period, poll everything, one scan, write what is due."""
        self.sim.step(self.period)
        drivers = [d for d in self.node.drivers.values() if isinstance(d, ModbusDevice)]
        for d in drivers:
            await d.poll_once()
        self.clock.advance(self.period)
        self.node.engine.scan_once(self.clock.monotonic())
        for d in drivers:
            await d.write_due()
        self.scans += 1
        self.invariants.check(self.clock.monotonic())


async def run_scenario(path: Path) -> Result:
    """Run one scenario file; the result lists every expectation that did not hold."""
    sc = Scenario(path)
    result = Result(sc.name)
    async with Harness(sc) as h:
        for _ in range(round(sc.warmup_s / h.period)):
            await h.tick()
        h.events_before = h.node.events.total
        steps = list(sc.steps)
        n = round(sc.duration_s / h.period)
        for k in range(n + 1):
            t = round(k * h.period, 9)
            while steps and steps[0][0] <= t + _EPS:
                _, what, value = steps.pop(0)
                _apply(h, what, value)
            await h.tick()
            events = h.events()
            for check in sc.checks:
                if check.t - _EPS <= t <= check.until + _EPS:
                    problem = _check(h, check, events)
                    check.checked += 1
                    result.checks += 1
                    if problem:
                        result.failures.append(f"t={t:.2f} s: {check.label()}: {problem}")
        result.events = h.events()
        result.scans = h.scans
        result.failures += [f"invariant: {v}" for v in h.invariants.violations]
    for check in sc.checks:
        if not check.checked:
            result.failures.append(f"{check.label()}: never checked (t beyond duration_s?)")
    return result


def _apply(h: Harness, what: str, value: Any) -> None:
    if what == "command":
        h.node.commands.submit(value)
    elif what == "node":
        if value == "restart":
            h.restart()
        else:
            now = h.clock.monotonic()
            h.node.watchdog.kick(now)
            h.node.watchdog.check(now + 2 * h.node.watchdog.timeout_s)
    elif what == "link":
        if h.link is None:
            raise ScenarioError("a link step needs [mqtt] in the node config (node_overrides)")
        h.link.link(value == "up")
    elif what == "inject":
        params = dict(value)
        h.sim.inject(params.pop("device"), params.pop("kind"), **params)
    else:
        h.sim.clear(value["device"], value.get("kind"))


def _value_problem(check: Check, value: float | None) -> str:
    b = check.body
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"no value (got {value!r})"
    tol = float(b.get("tol", _EPS))
    if "equals" in b and abs(value - float(b["equals"])) > tol:
        return f"{value:g} != {b['equals']:g} (tol {tol:g})"
    if "min" in b and value < float(b["min"]) - _EPS:
        return f"{value:g} < min {b['min']:g}"
    if "max" in b and value > float(b["max"]) + _EPS:
        return f"{value:g} > max {b['max']:g}"
    return ""


def _check(h: Harness, check: Check, events: list[Event]) -> str:
    node, b, name = h.node, check.body, check.name
    if check.target == "output":
        return _value_problem(check, node.image.output(name))
    if check.target == "wire":
        dev, point = name.split(".", 1)
        return _value_problem(check, h.sim.rig.units[dev].bank.client_value(point))
    if check.target == "plant":  # "flow_lpm", or "pump_speeds_pct[1]" for a tuple field
        m = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", name)
        if m is None:
            return f"not a plant field: {name!r}"
        truth = h.sim.state.as_dict()[m[1]]
        return _value_problem(check, float(truth[int(m[2])] if m[2] else truth))
    if check.target == "input":
        s = node.image.sample(name)
        if "quality" in b and s.quality.value != b["quality"]:
            return f"quality {s.quality.value} != {b['quality']} ({s.reason})"
        if not any(k in b for k in ("equals", "min", "max")):
            return ""
        return _value_problem(check, s.value)
    if check.target == "event":
        source = str(b.get("source", ""))
        if not any(e.code == name and e.source.startswith(source) for e in events):
            seen = sorted({f"{e.source}:{e.code}" for e in events})
            return f"no event {name!r} from {source or 'anywhere'!r}; saw {seen}"
        return ""
    if check.target == "no_event":
        bad = [f"{e.source}:{e.code}: {e.message}" for e in events if e.code in name]
        return f"unexpected events {bad}" if bad else ""
    if check.target == "owner":
        owner = node.safety.owner.get(name, "")
        return "" if owner == b.get("is", "") else f"owner {owner!r} != {b.get('is', '')!r}"
    # audit
    if not node.commands.audit:
        return "no audit record"
    rec = node.commands.audit[-1]
    if "accepted" in name and rec.accepted != name["accepted"]:
        return f"last audit accepted={rec.accepted} ({rec.command}: {rec.reason})"
    if "contains" in name and name["contains"] not in f"{rec.command} {rec.reason}":
        return f"last audit {rec.command} {rec.reason!r} lacks {name['contains']!r}"
    return ""
