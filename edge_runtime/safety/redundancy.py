"""Redundant sensors: 1oo2 failover and 2oo3 median voting into one derived input.

A group reads its sensors from the latched image and publishes one virtual input (by default
`<group>.voted`). Its quality says how much to trust it: GOOD only when it is the primary's own
GOOD value (1oo2) or a vote of three GOOD sensors (2oo3); SUBSTITUTED when it rests on a
backup or on fewer sensors; UNCERTAIN while the sensors it rests on disagree; BAD when too
few are usable. Every change of state is one event, never one per scan.

The latched input mapping is read-only; the group publishes through `ProcessImage.derive()`,
an overlay that lasts for the rest of the scan, so control blocks read the voted input by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import NEVER_READ, Quality, Sample
from edge_runtime.safety.limits import EPS

# The overlay moved into ProcessImage itself; the old name stays for callers that used it.
DerivedImage = ProcessImage


def publish(image: ProcessImage, name: str, sample: Sample, unit: str = "") -> None:
    """Publish a derived input on the image for the rest of this scan."""
    image.derive(name, sample, unit)


class Mode(StrEnum):
    """Redundancy scheme."""

    ONE_OUT_OF_TWO = "1oo2"
    TWO_OUT_OF_THREE = "2oo3"


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """One redundancy group: sensors in priority order, agreement tolerance and delay."""

    name: str
    mode: Mode
    sensors: tuple[str, ...]
    tolerance: float
    delay_s: float = 0.0
    output: str = ""  # derived input name; "" means "<name>.voted"
    unit: str = ""

    def __post_init__(self) -> None:
        need = 2 if self.mode is Mode.ONE_OUT_OF_TWO else 3
        if len(self.sensors) != need or len(set(self.sensors)) != need:
            raise ValueError(f"{self.name}: {self.mode} needs {need} distinct sensors")

    @property
    def out_name(self) -> str:
        """Name of the derived input."""
        return self.output or f"{self.name}.voted"


class RedundancyGroup:
    """Votes one group each scan; `sample` is the derived input."""

    def __init__(self, cfg: GroupConfig, events: EventLog | None = None,
                 wall: Callable[[], float] | None = None) -> None:
        self.cfg = cfg
        self.events = events if events is not None else EventLog()
        self._wall = wall
        self.sample = NEVER_READ
        self.source: str | None = None  # the sensor (1oo2) or "vote" the value comes from
        self.bad: set[str] = set()
        self.outvoted: set[str] = set()
        self._dev_since: dict[str, float] = {}
        self.discrepancy = False
        self._disc_since: float | None = None
        self._latched_ref: object = None
        self._started = False
        self.counts = {"failovers": 0, "discrepancies": 0, "outvotes": 0}

    @property
    def name(self) -> str:
        """Group name."""
        return self.cfg.name

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Vote from this scan's inputs and publish the result."""
        self._latched_ref = image.inputs
        self.update([image.sample(s) for s in self.cfg.sensors], now)
        publish(image, self.cfg.out_name, self.sample, self.cfg.unit)

    def ensure(self, image: ProcessImage, now: float) -> Sample:
        """The derived sample of this scan, voting now unless already done this scan."""
        # The latched mapping is a new object each scan: voting twice would double the timers.
        if image.inputs is not self._latched_ref:
            self.step(image, now, 0.0)
        return self.sample

    def update(self, samples: Sequence[Sample], now: float) -> Sample:
        """Vote from the sensors' samples (in config order) at scan time `now`."""
        if not self._started and all(s is NEVER_READ for s in samples):
            # Drivers not polled yet at start-up: BAD, but no alarm flood at every boot.
            self.sample = NEVER_READ
            return self.sample
        self._track_bad(samples, now)
        if self.cfg.mode is Mode.ONE_OUT_OF_TWO:
            self.sample = self._vote_1oo2(samples[0], samples[1], now)
        else:
            self.sample = self._vote_2oo3(samples, now)
        return self.sample

    # -- modes ------------------------------------------------------------------------------
    def _vote_1oo2(self, a: Sample, b: Sample, now: float) -> Sample:
        name_a, name_b = self.cfg.sensors
        self._check_pair(a, b, now)
        # A GOOD backup beats a primary that is only UNCERTAIN; A is kept when both are equal.
        if a.quality is Quality.GOOD or (a.quality.usable and b.quality is not Quality.GOOD):
            self._set_source(name_a, now)
            q = a.quality
            if q is Quality.GOOD and self.discrepancy:
                return Sample(a.value, Quality.UNCERTAIN, a.ts, f"{name_a} and {name_b} disagree")
            return Sample(a.value, q, a.ts, a.reason)
        if b.quality.usable:
            self._set_source(name_b, now)
            return Sample(b.value, Quality.SUBSTITUTED, b.ts,
                          f"{name_a} {a.quality}: {a.reason or 'not usable'}; from {name_b}")
        self._set_source(None, now)
        return Sample.bad(f"{self.name}: both sensors BAD", max(a.ts, b.ts))

    def _vote_2oo3(self, samples: Sequence[Sample], now: float) -> Sample:
        usable = [(n, s, s.value) for n, s in zip(self.cfg.sensors, samples, strict=True)
                  if s.quality.usable and s.value is not None]
        for name in self.cfg.sensors:
            if all(name != n for n, _, _ in usable):
                self._dev_since.pop(name, None)  # a deviation must be seen to persist
        if len(usable) == 3:
            self._check_pair(None, None, now)
            _, median, mv = sorted(usable, key=lambda u: u[2])[1]
            for n, _, v in usable:
                self._track_deviation(n, abs(v - mv) > self.cfg.tolerance, now)
            self._set_source("vote", now)
            all_good = all(s.quality is Quality.GOOD for _, s, _ in usable) and not self.outvoted
            if all_good:
                return Sample(mv, Quality.GOOD, median.ts)
            why = ", ".join(sorted(self.outvoted)) or "a non-GOOD sensor"
            return Sample(mv, Quality.SUBSTITUTED, median.ts, f"{self.name}: median, {why} "
                          "not trusted")
        if len(usable) == 2:
            (n1, s1, v1), (n2, s2, v2) = usable
            self._check_pair(s1, s2, now)
            trusted = [(n, s) for n, s, _ in usable if n not in self.outvoted]
            if len(trusted) == 1:  # one of the two survivors was already outvoted: not it
                name, s = trusted[0]
                self._set_source(name, now)
                return Sample(s.value, Quality.SUBSTITUTED, s.ts,
                              f"{self.name}: only {name} left trusted")
            self._set_source("vote", now)
            q = Quality.UNCERTAIN if self.discrepancy else Quality.SUBSTITUTED
            return Sample((v1 + v2) / 2, q, max(s1.ts, s2.ts),
                          f"{self.name}: mean of {n1} and {n2}")
        self._check_pair(None, None, now)
        self._set_source(None, now)
        return Sample.bad(f"{self.name}: fewer than two usable sensors",
                          max(s.ts for s in samples))

    # -- state tracking (events on transitions only) ----------------------------------------
    def _track_bad(self, samples: Sequence[Sample], now: float) -> None:
        for name, s in zip(self.cfg.sensors, samples, strict=True):
            if s is NEVER_READ:
                continue  # not polled yet: the driver reports a device that never answers
            if not s.quality.usable and name not in self.bad:
                self.bad.add(name)
                left = sum(x.quality.usable for x in samples)
                self._emit(now, Severity.ALARM, f"sensor {name} BAD ({s.reason or 'no reason'});"
                           f" {left} of {len(samples)} usable", "sensor_bad")
            elif s.quality.usable and name in self.bad:
                self.bad.discard(name)
                self._emit(now, Severity.INFO, f"sensor {name} usable again", "sensor_bad_clear")

    def _check_pair(self, a: Sample | None, b: Sample | None, now: float) -> None:
        # Discrepancy needs two usable values; with fewer there is nothing to disagree about.
        if (a is not None and b is not None and a.quality.usable and b.quality.usable
                and a.value is not None and b.value is not None):
            diff = abs(a.value - b.value)
            if diff > self.cfg.tolerance:
                if self._disc_since is None:
                    self._disc_since = now
                if not self.discrepancy and now - self._disc_since >= self.cfg.delay_s - EPS:
                    self.discrepancy = True
                    self.counts["discrepancies"] += 1
                    self._emit(now, Severity.ALARM, f"discrepancy {diff:g} > tolerance "
                               f"{self.cfg.tolerance:g}", "discrepancy")
                return
        self._disc_since = None
        if self.discrepancy:
            self.discrepancy = False
            self._emit(now, Severity.INFO, "discrepancy cleared", "discrepancy_clear")

    def _track_deviation(self, sensor: str, deviates: bool, now: float) -> None:
        if not deviates:
            self._dev_since.pop(sensor, None)
            if sensor in self.outvoted:
                self.outvoted.discard(sensor)
                self._emit(now, Severity.INFO, f"{sensor} agrees with the vote again",
                           "outvoted_clear")
            return
        since = self._dev_since.setdefault(sensor, now)
        if sensor not in self.outvoted and now - since >= self.cfg.delay_s - EPS:
            self.outvoted.add(sensor)
            self.counts["outvotes"] += 1
            self._emit(now, Severity.ALARM, f"{sensor} outvoted: more than "
                       f"{self.cfg.tolerance:g} from the median", "outvoted")

    def _set_source(self, source: str | None, now: float) -> None:
        old, self.source = self.source, source
        started, self._started = self._started, True
        if source == old and started:
            return
        primary = self.cfg.sensors[0]
        if source is None:
            self._emit(now, Severity.ALARM, f"{self.cfg.out_name} BAD: not enough usable "
                       "sensors", "group_bad")
        elif old is None:
            if started:
                self._emit(now, Severity.INFO, f"{self.cfg.out_name} usable again, from "
                           f"{source}", "group_bad_clear")
        elif self.cfg.mode is Mode.ONE_OUT_OF_TWO and source != primary:
            self.counts["failovers"] += 1
            self._emit(now, Severity.ALARM, f"failover from {primary} to {source}", "failover")
        elif self.cfg.mode is Mode.ONE_OUT_OF_TWO:
            self._emit(now, Severity.INFO, f"back on primary {primary}", "failover_clear")

    def _emit(self, now: float, severity: Severity, message: str, code: str) -> None:
        ts = self._wall() if self._wall is not None else now
        self.events.raise_event(ts, f"redundancy.{self.name}", severity, message, code)

    def get_status(self) -> dict[str, Any]:
        """Mode, output sample, source and fault states."""
        s = self.sample
        return {"mode": self.cfg.mode.value, "sensors": list(self.cfg.sensors),
                "output": self.cfg.out_name, "value": s.value, "quality": s.quality.value,
                "reason": s.reason, "source": self.source, "bad": sorted(self.bad),
                "outvoted": sorted(self.outvoted), "discrepancy": self.discrepancy,
                **self.counts}


class RedundancyBlock:
    """Estimation phase: votes every group at the start of the scan, before control."""

    name = "redundancy"

    def __init__(self, groups: Sequence[RedundancyGroup]) -> None:
        self.groups = list(groups)

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Vote all groups from this scan's inputs."""
        for group in self.groups:
            group.step(image, now, dt)

    def get_status(self) -> dict[str, Any]:
        """Every group's status."""
        return {g.name: g.get_status() for g in self.groups}
