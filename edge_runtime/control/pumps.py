"""CDU pumps: flow or differential-pressure control by speed, lead/lag staging, rotation by
run hours and N+1 redundancy. Sans-IO, one ControlBlock.

Pumps are `cdu_pump_vfd` devices (io_maps/cdu_pump_vfd.toml):
    control_word  out, bit 0 run, bit 1 fault reset (acts on the rising edge)
    speed_ref     out, % of rated speed
    status_word   in,  bit 0 running, bit 1 fault, bit 2 ready and in remote
    run_hours     in,  h;  fault_code in, 0 = none

Every running pump gets the same speed (identical pumps in parallel share the flow). The
running set is ordered: lead first, lags after. A pump that reports a fault leaves the set in
the scan it is seen and the best standby (fewest run hours) is started in that same scan;
flow below `low_flow_lpm` with a pump running starts a standby after `low_flow_s` (N+1). Both
happen well inside the 1 s the issue asks (a pump counts as running for the low-flow check
once it has reported running for `start_grace_s`, so its own start ramp is not a failure).
The lead rotates when its run hours exceed the
least-used standby's by `rotate_hours`, make-before-break (`changeover_s` of overlap).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from edge_runtime.control.modes import ControlMode, ModalPid
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import ProcessImage

RUN_BIT, RESET_BIT = 1, 2
RUNNING_BIT, FAULT_BIT = 1, 2


@dataclass(frozen=True, slots=True)
class StagingConfig:
    """Which pumps, how many run, when to stage, rotate and fail over."""

    pumps: tuple[str, ...]  # pump device names, in preference order for equal run hours
    duty: int = 1  # pumps normally running (N); the others are standby (+1 ...)
    max_running: int = 0  # 0 = every pump may run on demand
    min_speed_pct: float = 20.0
    stage_up_pct: float = 95.0  # demand at or above this for stage_up_s starts a lag pump
    stage_up_s: float = 10.0
    stage_down_pct: float = 45.0  # demand at or below this for stage_down_s stops one
    stage_down_s: float = 60.0
    rotate_hours: float = 24.0
    changeover_s: float = 5.0
    low_flow_lpm: float | None = None  # N+1 on low flow (needs a flow point)
    low_flow_s: float = 0.5
    start_grace_s: float = 3.0  # a pump ramping up after its start does not count as low flow

    @property
    def most_running(self) -> int:
        """Upper bound of the running set."""
        return self.max_running or len(self.pumps)


@dataclass(frozen=True, slots=True)
class PumpView:
    """What one pump reports this scan."""

    name: str
    known: bool  # status readable
    running: bool
    faulted: bool
    fault_code: int
    run_hours: float


def read_pump(image: ProcessImage, name: str) -> PumpView:
    """The pump's status from the image (a BAD status is `known=False`)."""
    status = image.value(f"{name}.status_word")
    code = image.value(f"{name}.fault_code")
    hours = image.value(f"{name}.run_hours")
    word = int(status) if status is not None else 0
    fault_code = int(code) if code is not None else 0
    return PumpView(name, status is not None, bool(word & RUNNING_BIT),
                    bool(word & FAULT_BIT) or fault_code != 0, fault_code,
                    hours if hours is not None else 0.0)


class PumpStaging:
    """Decides which pumps run; keeps its reasons in the event log."""

    def __init__(self, config: StagingConfig, events: EventLog,
                 wall: Callable[[], float] | None = None) -> None:
        self.config = config
        self.events = events
        self._wall = wall
        self.running: list[str] = []  # lead first
        self.retiring: dict[str, float] = {}  # old lead -> time it stops (rotation overlap)
        self.failover_latched = False  # low-flow failover keeps the extra pump until reset
        self._up_since: float | None = None
        self._down_since: float | None = None
        self._low_since: float | None = None
        self._reset_pulse: set[str] = set()
        self._running_since: dict[str, float] = {}
        self._no_standby_alarm = False
        self._now = 0.0

    def event(self, severity: Severity, message: str, code: str) -> None:
        """Record an event from the pumps (wall time when known)."""
        ts = self._wall() if self._wall is not None else self._now
        self.events.raise_event(ts, "pumps", severity, message, code)

    def _standby(self, views: Mapping[str, PumpView]) -> list[PumpView]:
        """Pumps that may be started, best first: healthy ones by run hours, then unknown."""
        c = self.config
        idle = [views[p] for p in c.pumps if p not in self.running]
        healthy = sorted((v for v in idle if v.known and not v.faulted),
                         key=lambda v: (v.run_hours, c.pumps.index(v.name)))
        unknown = [v for v in idle if not v.known]
        return healthy + unknown

    def _start(self, views: Mapping[str, PumpView], why: str, *, lead: bool = False) -> bool:
        candidates = self._standby(views)
        if not candidates:
            if not self._no_standby_alarm:
                self._no_standby_alarm = True
                self.event(Severity.ALARM, f"no standby pump available ({why})", "no_standby")
            return False
        name = candidates[0].name
        self.retiring.pop(name, None)
        if lead:
            self.running.insert(0, name)
        else:
            self.running.append(name)
        self.event(Severity.INFO if why.startswith("stage") or why.startswith("rotat")
                    else Severity.ALARM, f"started {name}: {why}", "pump_start")
        return True

    def step(self, views: Mapping[str, PumpView], demand_pct: float, flow: float | None,
             now: float) -> None:
        """Update the running set from pump status, demand (%) and flow (L/min)."""
        c = self.config
        self._now = now
        # Faults first: a faulted pump leaves the set and a standby starts in this scan.
        for name in list(self.running):
            v = views[name]
            if v.faulted:
                self.running.remove(name)
                self.event(Severity.ALARM, f"{name} reports a fault (code {v.fault_code})",
                            "pump_fault")
                if len(self.running) < c.duty or not self.running:
                    self._start(views, f"{name} faulted")
        for name in [n for n, until in self.retiring.items()
                     if until <= now or views[n].faulted]:
            del self.retiring[name]
        while len(self.running) < c.duty:
            if not self._start(views, "duty pumps below N"):
                break
        if all(views[p].known and not views[p].faulted for p in c.pumps if p not in self.running):
            self._no_standby_alarm = False
        self._low_flow(views, flow, now)
        self._stage(views, demand_pct, now)
        self._rotate(views, now)

    def _low_flow(self, views: Mapping[str, PumpView], flow: float | None, now: float) -> None:
        c = self.config
        for name, v in views.items():
            if not v.running:
                self._running_since.pop(name, None)
            elif name not in self._running_since:
                self._running_since[name] = now
        spinning = any(now - self._running_since.get(p, now) >= c.start_grace_s
                       for p in self.running)
        if c.low_flow_lpm is None or flow is None or not spinning or flow >= c.low_flow_lpm:
            self._low_since = None
            return
        if self._low_since is None:
            self._low_since = now
        if now - self._low_since >= c.low_flow_s and len(self.running) < len(c.pumps):
            if self._start(views, f"low flow {flow:.0f} L/min < {c.low_flow_lpm:g} with "
                                  f"{', '.join(self.running)} running"):
                self.failover_latched = True
            self._low_since = now  # another standby only after another full delay

    def _stage(self, views: Mapping[str, PumpView], demand: float, now: float) -> None:
        c = self.config
        if demand >= c.stage_up_pct and len(self.running) < c.most_running:
            self._up_since = now if self._up_since is None else self._up_since
            if now - self._up_since >= c.stage_up_s:
                self._start(views, f"staged up, demand {demand:.0f} %")
                self._up_since = None
        else:
            self._up_since = None
        if (demand <= c.stage_down_pct and len(self.running) > c.duty
                and not self.failover_latched):
            self._down_since = now if self._down_since is None else self._down_since
            if now - self._down_since >= c.stage_down_s:
                name = self.running.pop()
                self.event(Severity.INFO, f"stopped {name}: staged down, demand "
                            f"{demand:.0f} %", "pump_stop")
                self._down_since = None
        else:
            self._down_since = None

    def _rotate(self, views: Mapping[str, PumpView], now: float) -> None:
        c = self.config
        if not self.running or self.retiring or c.rotate_hours <= 0.0:
            return
        lead = views[self.running[0]]
        standby = [v for v in self._standby(views) if v.known]
        if lead.known and standby and lead.run_hours - standby[0].run_hours >= c.rotate_hours:
            old = self.running.pop(0)
            self._start(views, f"rotation, {old} has {lead.run_hours:.0f} h against "
                        f"{standby[0].run_hours:.0f} h", lead=True)
            self.retiring[old] = now + c.changeover_s

    def reset_faults(self, views: Mapping[str, PumpView]) -> list[str]:
        """Pulse the fault-reset bit of every faulted pump on the next write."""
        names = [n for n, v in views.items() if v.faulted]
        self._reset_pulse.update(names)
        return names

    def acknowledge(self) -> None:
        """Release a low-flow failover: normal staging may stop the extra pump again."""
        self.failover_latched = False

    def control_words(self) -> dict[str, int]:
        """Control word per pump for this scan (consumes a pending reset pulse)."""
        out = {}
        for p in self.config.pumps:
            word = RUN_BIT if p in self.running or p in self.retiring else 0
            if p in self._reset_pulse:
                word |= RESET_BIT
            out[p] = word
        self._reset_pulse.clear()
        return out

    def get_status(self) -> dict[str, Any]:
        """Lead, lags, overlap and failover state."""
        return {"lead": self.running[0] if self.running else None, "lags": self.running[1:],
                "retiring": sorted(self.retiring), "failover_latched": self.failover_latched}


class SpeedFeedforward(Protocol):
    """What the pump block asks the thermal preparation each scan."""

    def flow_setpoint_lpm(self, now: float, base_lpm: float) -> float:
        """Flow setpoint to hold now (raised ahead of an announced load)."""
        ...

    def speed_bias_pct(self, now: float, speed_pct: float, base_lpm: float) -> float:
        """Speed to add now so the pumps are already where the new flow needs them."""
        ...


class PumpControl:
    """The pump block: speed PID on flow (L/min) or on supply-return dP (bar), then staging.

    With `dp_points` the loop regulates dP and `flow_point` (optional) only feeds the
    low-flow N+1 check; without, it regulates flow.
    """

    def __init__(self, *, staging: PumpStaging, loop: ModalPid, flow_point: str | None,
                 dp_points: tuple[str, str] | None = None, events: EventLog,
                 feedforward: SpeedFeedforward | None = None,
                 held: Mapping[str, float] | None = None, name: str = "pumps") -> None:
        if flow_point is None and dp_points is None:
            raise ValueError("pump control needs a flow point or two pressure points")
        self.name = name
        self.staging = staging
        self.loop = loop
        self.flow_point = flow_point
        self.dp_points = dp_points
        self.events = events
        self.feedforward = feedforward
        self.held = held if held is not None else {}
        self.speed_pct = loop.pid.output
        self.pv: float | None = None
        self._written: float | None = None  # speed this block left in the image last scan
        self._reset_requested = False

    def set_setpoint(self, value: float) -> None:
        """Command: new Automatic setpoint (L/min or bar) in the configured range; ValueError."""
        self.loop.mode.set_setpoint(value)

    def set_mode(self, mode: ControlMode | str, value: float | None = None) -> None:
        """Redfish ControlMode of the speed loop (Override: flow/dP setpoint; Manual: speed %)."""
        self.loop.set_mode(mode, value)

    def reset_faults(self) -> None:
        """Command: pulse fault reset (control word bit 1) on every faulted pump next scan."""
        self._reset_requested = True

    def acknowledge_failover(self) -> None:
        """Command: release a low-flow failover so staging may stop the extra pump again."""
        self.staging.acknowledge()

    def _pv(self, image: ProcessImage) -> float | None:
        if self.dp_points is not None:
            sup, ret = (image.value(p) for p in self.dp_points)
            return None if sup is None or ret is None else sup - ret
        assert self.flow_point is not None
        return image.value(self.flow_point)

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Regulate, stage, write control words and speed references."""
        pumps = self.staging.config.pumps
        views = {p: read_pump(image, p) for p in pumps}
        if self._reset_requested:
            self._reset_requested = False
            names = self.staging.reset_faults(views)
            self.staging.event(Severity.INFO, f"fault reset sent to "
                               f"{', '.join(names) or 'no faulted pump'}", "pump_fault_reset")
        self.pv = pv = self._pv(image)
        flow = image.value(self.flow_point) if self.flow_point is not None else None
        mode = self.loop.mode
        ff, setpoint = 0.0, None
        if (self.feedforward is not None and self.dp_points is None
                and mode.mode is ControlMode.AUTOMATIC):
            base = mode.auto_setpoint
            setpoint = self.feedforward.flow_setpoint_lpm(now, base)
            ff = self.feedforward.speed_bias_pct(now, self.loop.pid.output, base)
        held_speeds = [self.held[f"{p}.speed_ref"] for p in pumps if f"{p}.speed_ref" in self.held]
        lead = self.staging.running[0] if self.staging.running else pumps[0]
        current = image.output(f"{lead}.speed_ref")
        held = held_speeds[0] if held_speeds else None
        if held is None and self._written is not None and abs(current - self._written) > 1e-6:
            held = current  # an interlock (pumps to 100 %) overrode us: follow, bumplessly
        demand = self.loop.run(pv, dt, ff=ff, setpoint=setpoint, current_output=current,
                               held=held)
        if mode.mode is ControlMode.DISABLED:
            return
        self.staging.step(views, demand if demand is not None else self.speed_pct, flow, now)
        if demand is not None:
            self.speed_pct = max(demand, self.staging.config.min_speed_pct)
        if held is not None:
            self.speed_pct = held
        for p, word in self.staging.control_words().items():
            if f"{p}.control_word" not in self.held:
                image.write(f"{p}.control_word", word)
            if f"{p}.speed_ref" not in self.held:
                image.write(f"{p}.speed_ref", self.speed_pct)
        self._written = self.speed_pct

    def get_status(self) -> dict[str, Any]:
        """Loop, staging and what the block writes."""
        return {"loop": self.loop.get_status(), "staging": self.staging.get_status(),
                "speed_pct": self.speed_pct, "pv": self.pv}
