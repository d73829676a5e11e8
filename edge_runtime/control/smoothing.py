"""Battery load smoothing on a rack: the block around `Smoother` (control/smoother.py, the
algorithm and its description), its `[smoothing]` config and the A.1 feedforward.

TOML shape (every key optional; defaults below; `[smoothing.points]` for the rack block):

    [smoothing]
    ramp_limit_kw_per_s = 50.0     # grid-side ramp limit
    range_kw = 50.0                # grid may move at most this within range_window_s
    range_window_s = 1.0
    filter_tau_s = 2.0             # each of the two cascaded low-passes
    capacity_kwh = 100.0           # usable battery energy
    efficiency = 0.92              # round trip
    max_charge_kw = 100.0          # caps on top of the inverter's live 802 limits
    max_discharge_kw = 150.0
    soc_min_pct = 10.0
    soc_max_pct = 90.0
    soc_target_pct = 50.0
    soc_guard_pct = 5.0            # limits taper to 0 over this much SoC at each bound
    soc_kp_kw_per_pct = 2.0        # SoC drift-back: kW of grid bias per % of SoC error
    soc_ki_kw_per_pct_s = 0.02
    soc_correction_max_kw = 20.0
    ff_ramp_fraction = 0.5         # announced steps are ramped at this x ramp_limit
    follow_min_s = 30.0            # announced changes shorter than this: battery only
    announce_share = 1.0           # this node's share of an announced workload's power
    latency_comp_s = 0.0           # lead the measured demand along its slope by this much
    [smoothing.points]
    demand = "rack_meter.power_kw"
    soc = "battery.soc_pct"
    charge_max = "battery.w_cha_max_kw"
    discharge_max = "battery.w_dis_cha_max_kw"
    setpoint = "battery.w_set_kw"
    enable = "battery.w_set_ena"
    measured = "battery.ac_w_kw"     # "" = not read
    local_mode = "battery.loc_rem_ctl"  # 1: inverter in local control; "" = not read

Wiring (rack role): `cfg = load_smoothing(Section(file, "smoothing", data.get("smoothing",
{}), errors), file, errors)`, then `build_smoothing_block(cfg, events=engine.events,
wall_offset=clock.wall() - clock.monotonic())` goes into the scan's blocks (before the
heartbeat; the safety layer still has the last word on w_set_kw / w_set_ena); an accepted
A.1 announcement for this node is passed on with
`block.announce_workload(announcement, now_wall=clock.wall())`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from edge_runtime.config.devices import read_points
from edge_runtime.config.reader import ErrorLog, Section
from edge_runtime.control.smoother import (
    Announced,
    BatteryLimits,
    Smoother,
    SmoothingConfig,
    SmoothingPoints,
)
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import ProcessImage, UnknownPoint
from edge_runtime.messages.models import PowerProfile, WorkloadAnnouncement

__all__ = [
    "Announced",
    "BatteryLimits",
    "Smoother",
    "SmoothingBlock",
    "SmoothingConfig",
    "SmoothingPoints",
    "build_smoothing_block",
    "expected_mean_kw",
    "load_smoothing",
]

OPTIONAL_POINTS = ("measured", "local_mode")
UNCOVERED_CLEAR_S = 1.0  # the battery covers the load this long before the all-clear


def expected_mean_kw(profile: PowerProfile) -> float:
    """Mean power of an announced workload: midway between its baseline and peak (kW)."""
    return (profile.peak_power_mw + profile.baseline_power_mw) / 2.0 * 1000.0


class SmoothingBlock:
    """Rack control block: meter + SunSpec inverter points around one Smoother."""

    name = "smoothing"

    def __init__(self, config: SmoothingConfig, *, events: EventLog | None = None,
                 wall_offset: float = 0.0, held: Mapping[str, float] | None = None) -> None:
        self.config = config
        self.held = held if held is not None else {}  # operator-held outputs: never overwritten
        self.smoother = Smoother(config)
        self.events = events
        self.wall_offset = wall_offset  # wall - monotonic, for event timestamps
        self.degraded = ""  # why the block is not smoothing ("" when it is)
        self.setpoint_kw = 0.0
        self.uncovered = False  # the load is beyond the battery (reported once per episode)
        self._covered_since: float | None = None
        self._last_now: float | None = None

    def announce_workload(self, announcement: WorkloadAnnouncement, *, now_wall: float) -> None:
        """Feed an accepted A.1 announcement forward (start: earliest_start_time or timestamp)."""
        tc = announcement.timing_constraints
        start: datetime = (tc.earliest_start_time if tc and tc.earliest_start_time
                           else announcement.timestamp)
        profile = announcement.power_profile
        self.smoother.announce(
            in_s=start.timestamp() - now_wall,
            delta_kw=expected_mean_kw(profile) * self.config.announce_share,
            duration_s=(float(profile.duration_estimate_sec)
                        if profile.duration_estimate_sec else None),
            ramp_kw_per_s=profile.ramp_rate_mw_per_sec * 1000.0 * self.config.announce_share)

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Read demand, SoC and limits; write the setpoint and enable every scan."""
        p = self.config.points
        if p.setpoint in self.held:
            # An operator holds the battery setpoint: follow it, so releasing it is bumpless.
            self.setpoint_kw = self.held[p.setpoint]
            self.smoother.restart(self.setpoint_kw)
            self._set_degraded("operator", now)
            return
        demand, soc = image.value(p.demand), image.value(p.soc)
        charge, discharge = image.value(p.charge_max), image.value(p.discharge_max)
        why = ("demand" if demand is None else "soc" if soc is None
               else "limits" if charge is None or discharge is None else "")
        local = image.value(p.local_mode) if p.local_mode else None
        if not why and local is not None and local >= 1.0:
            why = "local_control"
        self._set_degraded(why, now)
        if why == "local_control":
            # The inverter ignores us: follow what it does, so taking over again is bumpless.
            measured = image.value(p.measured) if p.measured else None
            if measured is not None:
                self.setpoint_kw = measured
            self._write(image, self.setpoint_kw, enable=True)
            self.smoother.restart(self.setpoint_kw)
            return
        if demand is None or soc is None or charge is None or discharge is None:
            # Without a meter or SoC the battery cannot smooth safely: ramp it to 0 at the
            # grid ramp limit (no step on the grid), then stop following setpoints.
            step = self.config.ramp_limit_kw_per_s * max(dt, 0.0)
            self.setpoint_kw -= min(max(self.setpoint_kw, -step), step)
            self._write(image, self.setpoint_kw, enable=self.setpoint_kw != 0.0)
            self.smoother.restart(self.setpoint_kw)  # bumpless when inputs return
            return
        self.setpoint_kw = self.smoother.step(demand, soc, BatteryLimits(charge, discharge), dt)
        self._write(image, self.setpoint_kw, enable=True)
        self._report_uncovered(now)

    def _report_uncovered(self, now: float) -> None:
        """Say when the load is beyond what the battery can cover (outside the claim), once
        per episode: raised on the first such scan, cleared after a second without."""
        short = self.smoother.uncovered_kw
        if short != 0.0:
            self._covered_since = None
            if not self.uncovered and self.events is not None:
                self.events.raise_event(
                    now + self.wall_offset, self.name, Severity.WARNING,
                    f"load beyond the battery: {abs(short):.1f} kW reaches the grid "
                    f"unsmoothed ({'discharge' if short > 0 else 'charge'} limit)",
                    "smoothing_uncovered")
            self.uncovered = True
            return
        if not self.uncovered:
            return
        if self._covered_since is None:
            self._covered_since = now
        elif now - self._covered_since >= UNCOVERED_CLEAR_S:
            self.uncovered = False
            if self.events is not None:
                self.events.raise_event(now + self.wall_offset, self.name, Severity.INFO,
                                        "battery covers the load again", "smoothing_covered")

    def _write(self, image: ProcessImage, kw: float, *, enable: bool) -> None:
        p = self.config.points
        info = image.outputs_info.get(p.setpoint)
        if info is None:
            raise UnknownPoint(p.setpoint)
        lo, hi = info.spec.minimum, info.spec.maximum
        if lo is not None:
            kw = max(kw, lo)
        if hi is not None:
            kw = min(kw, hi)
        image.write(p.setpoint, kw)
        image.write(p.enable, 1.0 if enable else 0.0)

    def _set_degraded(self, why: str, now: float) -> None:
        if why == self.degraded:
            return
        if self.events is not None:
            if why:
                text = ("inverter in local control: setpoints ignored, smoothing follows it"
                        if why == "local_control"
                        else "battery setpoint held by an operator, smoothing follows it"
                        if why == "operator"
                        else f"{why} input BAD, battery ramps to 0 kW")
                severity = Severity.INFO if why == "operator" else Severity.ALARM
                self.events.raise_event(now + self.wall_offset, self.name, severity,
                                        f"smoothing degraded: {text}", "smoothing_degraded")
            else:
                self.events.raise_event(now + self.wall_offset, self.name, Severity.INFO,
                                        "smoothing restored", "smoothing_restored")
        self.degraded = why

    def get_status(self) -> dict[str, Any]:
        """Smoother status plus the block's mode."""
        return {**self.smoother.get_status(), "setpoint_kw": self.setpoint_kw,
                "degraded": self.degraded or None, "uncovered": self.uncovered}


def load_smoothing(sec: Section, file: str, errors: ErrorLog) -> SmoothingConfig:
    """Read `[smoothing]` (errors to `errors`, each naming file, section and key)."""
    d = SmoothingConfig()
    before = len(errors.lines)
    f = sec.get_float
    values: dict[str, Any] = {
        "ramp_limit_kw_per_s": f("ramp_limit_kw_per_s", d.ramp_limit_kw_per_s, above=0.0),
        "range_kw": f("range_kw", d.range_kw, above=0.0),
        "range_window_s": f("range_window_s", d.range_window_s, above=0.0, maxval=60.0),
        "filter_tau_s": f("filter_tau_s", d.filter_tau_s, minval=0.0, maxval=3600.0),
        "capacity_kwh": f("capacity_kwh", d.capacity_kwh, above=0.0),
        "efficiency": f("efficiency", d.efficiency, above=0.0, maxval=1.0),
        "max_charge_kw": f("max_charge_kw", d.max_charge_kw, minval=0.0),
        "max_discharge_kw": f("max_discharge_kw", d.max_discharge_kw, minval=0.0),
        "soc_min_pct": f("soc_min_pct", d.soc_min_pct, minval=0.0, maxval=100.0),
        "soc_max_pct": f("soc_max_pct", d.soc_max_pct, minval=0.0, maxval=100.0),
        "soc_target_pct": f("soc_target_pct", d.soc_target_pct, minval=0.0, maxval=100.0),
        "soc_guard_pct": f("soc_guard_pct", d.soc_guard_pct, above=0.0, maxval=50.0),
        "soc_kp_kw_per_pct": f("soc_kp_kw_per_pct", d.soc_kp_kw_per_pct, minval=0.0),
        "soc_ki_kw_per_pct_s": f("soc_ki_kw_per_pct_s", d.soc_ki_kw_per_pct_s, minval=0.0),
        "soc_correction_max_kw": f("soc_correction_max_kw", d.soc_correction_max_kw,
                                   minval=0.0),
        "ff_ramp_fraction": f("ff_ramp_fraction", d.ff_ramp_fraction, above=0.0, maxval=1.0),
        "follow_min_s": f("follow_min_s", d.follow_min_s, minval=0.0),
        "announce_share": f("announce_share", d.announce_share, minval=0.0, maxval=1.0),
        "latency_comp_s": f("latency_comp_s", d.latency_comp_s, minval=0.0, maxval=1.0),
    }
    lo, hi, target = values["soc_min_pct"], values["soc_max_pct"], values["soc_target_pct"]
    if isinstance(lo, float) and isinstance(hi, float) and isinstance(target, float):
        if lo >= hi:
            sec.error("soc_max_pct", f"must be above soc_min_pct ({lo:g}), got {hi:g}")
        elif not lo <= target <= hi:
            sec.error("soc_target_pct", f"must lie within {lo:g}..{hi:g}, got {target:g}")
    names = read_points(sec, SmoothingPoints(), OPTIONAL_POINTS)
    sec.finish()
    if len(errors.lines) > before:
        return d  # the caller raises; defaults keep the types honest meanwhile
    return SmoothingConfig(**values, points=SmoothingPoints(**names))


def build_smoothing_block(config: SmoothingConfig, *, events: EventLog | None = None,
                          wall_offset: float = 0.0,
                          held: Mapping[str, float] | None = None) -> SmoothingBlock:
    """The rack control block for a loaded config; `held` is ManualOutputs.manual."""
    return SmoothingBlock(config, events=events, wall_offset=wall_offset, held=held)
