"""Synthetic AI-training IT power trace: bursty iterations, checkpoint pauses, noise.

Deterministic for a seed and a pure function of time: `power_at(t)` and `generate()` agree
sample for sample, so the simulator, the tests and the benchmarks see the same load.

The shape is built from a piecewise-constant target level L(t) (compute burst `high`,
communication/sync `low`, checkpoint `idle`), averaged over a sliding window of `edge_s`:
the moving average of a step is a linear ramp of exactly `edge_s`, which gives the ~40 ms
edges of real accelerator power without sampling artefacts. The average is evaluated in
closed form from the integral of L, so any time can be asked in any order.

Unannounced job crashes (`outages`): at the first full-power moment at or after each given
time (the middle of a compute burst), the level falls to idle in one edge and stays there for
the given down time; then the job restarts at full power in one edge, holds it for
`restart_full_s`, and the schedule goes on. Nothing announces either step: they are the
grid-destabilizing events of spec 12.1.2 a, as a smoother meets them.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from typing import Any, Protocol

TRAINING = "training"
CHECKPOINT = "checkpoint"
_MASK64 = (1 << 64) - 1


class PowerSource(Protocol):
    """Anything that gives IT power (kW) at a time (s)."""

    def power_at(self, t: float) -> float:
        """IT power in kW at time t."""
        ...


@dataclass(frozen=True, slots=True)
class TraceConfig:
    """Parameters of the training pattern; levels are fractions of the peak power."""

    seed: int = 1
    rack_kw: float = 100.0  # peak power of one rack
    site_mw: float | None = None  # when set, the output is a whole site of racks in lockstep
    iter_hz_min: float = 0.5  # training iteration rate, drawn per training phase
    iter_hz_max: float = 2.0
    duty: float = 0.65  # fraction of an iteration spent in the compute burst
    high_frac: float = 1.0  # compute burst level
    low_frac: float = 0.45  # communication / all-reduce level between bursts
    idle_frac: float = 0.22  # checkpoint pause level
    edge_s: float = 0.04  # rise / fall time of every level change
    checkpoint_every_s: float = 60.0  # mean training time between checkpoints
    checkpoint_s: float = 6.0  # mean checkpoint pause
    jitter: float = 0.2  # relative spread of phase durations
    noise_frac: float = 0.02  # per-rack noise, standard-ish deviation as a fraction of peak
    noise_dt: float = 0.02  # correlation time of the noise
    outages: tuple[tuple[float, float], ...] = ()  # (crash at or after s, down s), unannounced
    restart_full_s: float = 5.0  # full power held after each restart

    @property
    def peak_kw(self) -> float:
        """Power at the compute level, at the configured scale."""
        return self.site_mw * 1000.0 if self.site_mw is not None else self.rack_kw

    @property
    def racks(self) -> float:
        """Number of racks the output stands for (1 without site_mw)."""
        return self.peak_kw / self.rack_kw


@dataclass(frozen=True, slots=True)
class Phase:
    """One training run between checkpoints, or one checkpoint pause."""

    start: float
    end: float
    kind: str
    freq_hz: float  # iteration rate (training only)
    high: float  # level fractions used in this phase
    low: float
    duty: float  # fraction of an iteration at `high`
    integral0: float  # integral of the level from 0 to `start`

    def level_integral(self, t: float) -> float:
        """Integral of the target level from `start` to t (start <= t <= end)."""
        u = t - self.start
        if self.kind == CHECKPOINT:
            return u * self.low
        period = 1.0 / self.freq_hz
        on = period * self.duty
        n = math.floor(u / period)
        r = u - n * period
        full = n * (on * self.high + (period - on) * self.low)
        return full + min(r, on) * self.high + max(0.0, r - on) * self.low

    def level(self, t: float) -> float:
        """Target level (before edge smoothing) at t inside this phase."""
        if self.kind == CHECKPOINT:
            return self.low
        period = 1.0 / self.freq_hz
        r = (t - self.start) % period
        return self.high if r < period * self.duty else self.low


@dataclass(frozen=True, slots=True)
class Outage:
    """One unannounced crash (full power -> idle) and restart (idle -> full power), in s."""

    crash: float
    restart: float
    full_until: float  # end of the full-power hold after the restart


class Trace:
    """A seeded AI-training power trace; `power_at(t)` in kW at the configured scale."""

    def __init__(self, config: TraceConfig | None = None) -> None:
        self.config = cfg = config or TraceConfig()
        if not 0.0 < cfg.iter_hz_min <= cfg.iter_hz_max:
            raise ValueError("need 0 < iter_hz_min <= iter_hz_max")
        if cfg.edge_s <= 0.0:
            raise ValueError("edge_s must be > 0")
        self._rng = random.Random(cfg.seed)
        self._phases: list[Phase] = []
        self._starts: list[float] = []
        self._noise_seed = (cfg.seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK64
        self._noise_amp = cfg.noise_frac / math.sqrt(max(cfg.racks, 1.0))
        self._extend(0.0)
        self.outages = self._place_outages()
        # what each outage adds to the integral of the level, once it is over
        self._outage_offsets = [self._overlay_integral(o, o.full_until) for o in self.outages]

    # -- schedule -------------------------------------------------------------------------
    def _append(self, kind: str, duration: float, freq: float, high: float, low: float) -> None:
        start = self._phases[-1].end if self._phases else 0.0
        integral0 = 0.0
        if self._phases:
            last = self._phases[-1]
            integral0 = last.integral0 + last.level_integral(last.end)
        phase = Phase(start, start + duration, kind, freq, high, low, self.config.duty, integral0)
        self._phases.append(phase)
        self._starts.append(start)

    def _extend(self, t: float) -> None:
        cfg = self.config
        rng = self._rng
        while not self._phases or self._phases[-1].end <= t:
            if not self._phases or self._phases[-1].kind == CHECKPOINT:
                freq = rng.uniform(cfg.iter_hz_min, cfg.iter_hz_max)
                wanted = cfg.checkpoint_every_s * rng.uniform(1 - cfg.jitter, 1 + cfg.jitter)
                # whole iterations, so a phase ends after a burst's fall, in the sync level
                iterations = max(1, round(wanted * freq))
                high = cfg.high_frac * rng.uniform(0.95, 1.0)
                self._append(TRAINING, iterations / freq, freq, high, cfg.low_frac)
            else:
                pause = cfg.checkpoint_s * rng.uniform(1 - cfg.jitter, 1 + cfg.jitter)
                self._append(CHECKPOINT, max(pause, cfg.edge_s), 0.0, cfg.idle_frac,
                             cfg.idle_frac)

    def _phase(self, t: float) -> Phase:
        self._extend(t)
        i = bisect.bisect_right(self._starts, t) - 1
        return self._phases[max(i, 0)]

    def phases_until(self, t: float) -> list[Phase]:
        """The schedule of phases that start before t (for tests and plots)."""
        self._extend(t)
        return [p for p in self._phases if p.start < t]

    def phase_at(self, t: float) -> Phase:
        """The phase containing t (t >= 0)."""
        return self._phase(max(t, 0.0))

    # -- unannounced crashes and restarts --------------------------------------------------
    def _place_outages(self) -> tuple[Outage, ...]:
        cfg = self.config
        placed: list[Outage] = []
        after = 0.0
        for at, down in sorted(cfg.outages):
            if not (math.isfinite(at) and at >= 0.0 and math.isfinite(down)
                    and down >= cfg.edge_s):
                raise ValueError(f"outage ({at!r}, {down!r}): need a crash time >= 0 and a "
                                 f"down time >= edge_s ({cfg.edge_s:g} s)")
            crash = self._full_power_at_or_after(max(at, after))
            placed.append(Outage(crash, crash + down, crash + down + cfg.restart_full_s))
            after = placed[-1].full_until + cfg.edge_s
        return tuple(placed)

    def _full_power_at_or_after(self, t: float) -> float:
        """The middle of the first compute burst whose middle is at or after t."""
        while True:
            ph = self._phase(t)
            if ph.kind == TRAINING:
                period = 1.0 / ph.freq_hz
                half_on = period * ph.duty / 2.0
                k = max(math.ceil((t - ph.start - half_on) / period - 1e-9), 0)
                middle = ph.start + k * period + half_on
                if middle < ph.end:
                    return middle
            t = ph.end

    def _overlay_integral(self, o: Outage, t: float) -> float:
        """Integral up to t of (outage level - scheduled level) for one outage."""
        if t <= o.crash:
            return 0.0
        down_end = min(t, o.restart)
        total = (self.config.idle_frac * (down_end - o.crash)
                 - self._base_integral(down_end) + self._base_integral(o.crash))
        if t > o.restart:
            full_end = min(t, o.full_until)
            total += (self.config.high_frac * (full_end - o.restart)
                      - self._base_integral(full_end) + self._base_integral(o.restart))
        return total

    # -- values -------------------------------------------------------------------------
    def _base_integral(self, t: float) -> float:
        if t <= 0.0:
            return t * self.config.idle_frac  # before the job starts: idle
        phase = self._phase(t)
        return phase.integral0 + phase.level_integral(min(t, phase.end))

    def _integral(self, t: float) -> float:
        total = self._base_integral(t)
        for o, offset in zip(self.outages, self._outage_offsets, strict=True):
            if t <= o.crash:
                break
            total += offset if t >= o.full_until else self._overlay_integral(o, t)
        return total

    def level_at(self, t: float) -> float:
        """Smoothed level (fraction of peak) without noise."""
        edge = self.config.edge_s
        return (self._integral(t) - self._integral(t - edge)) / edge

    def _noise(self, t: float) -> float:
        step = self.config.noise_dt
        x = t / step
        k = math.floor(x)
        frac = x - k
        a, b = self._hash_noise(k), self._hash_noise(k + 1)
        return a + (b - a) * frac

    def _hash_noise(self, k: int) -> float:
        # splitmix64 of (seed, k): deterministic, order-independent noise without state
        z = (self._noise_seed + (k & _MASK64) * 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
        u1 = (z & 0xFFFFFFFF) / 0xFFFFFFFF
        u2 = (z >> 32) / 0xFFFFFFFF
        return (u1 + u2 - 1.0) * math.sqrt(6.0)  # triangular, unit variance

    def fraction_at(self, t: float) -> float:
        """Power as a fraction of peak, with noise, never negative."""
        return max(0.0, self.level_at(t) + self._noise_amp * self._noise(t))

    def power_at(self, t: float) -> float:
        """IT power in kW at time t."""
        return self.config.peak_kw * self.fraction_at(t)

    def generate(self, duration_s: float, dt: float, t0: float = 0.0) -> list[float]:
        """Samples of power_at at t0, t0 + dt, ... for duration_s (kW)."""
        if dt <= 0.0:
            raise ValueError("dt must be > 0")
        n = math.floor(duration_s / dt + 1e-9)
        return [self.power_at(t0 + i * dt) for i in range(n)]


class ConstantPower:
    """A flat IT load, for steady-state tests and commissioning practice."""

    def __init__(self, kw: float) -> None:
        self.kw = kw

    def power_at(self, t: float) -> float:
        """The constant power (kW)."""
        return self.kw


def generate(
    duration_s: float,
    dt: float,
    *,
    seed: int = 1,
    rack_kw: float = 100.0,
    site_mw: float | None = None,
    **params: Any,
) -> list[float]:
    """Standalone helper for benchmarks: kW samples of a seeded training trace."""
    config = TraceConfig(seed=seed, rack_kw=rack_kw, site_mw=site_mw, **params)
    return Trace(config).generate(duration_s, dt)
