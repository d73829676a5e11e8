"""Benchmark: battery load smoothing of a 200 MW AI-training site, 1 hour at 10 ms steps.

Load: `pswd_plant_sim.trace` (seeded) at site scale, iterations 0.2-3 Hz, 40 ms edges,
checkpoint pauses about every 60 s; the job starts after `--idle-s` of idle power. The same
battery (the plant simulator's `Battery`: efficiency, SoC limits, inverter ramp) is driven by
each controller; every controller sees the meter sample of step k and its setpoint reaches the
inverter at step k + 1 (one 10 ms control period of latency).

Cases: no control; moving-average filter (grid = mean of the last `--ma-window-s`); plain ramp
limiter (grid follows the load at most `--ramp-mw-s`); ours (`Smoother`, with its one-step
latency compensation `latency_comp_s` = 10 ms, which the plain baselines do not have; turn it
off with --no-latency-comp) without and with announcements (the job start and every
checkpoint pause announced `--lead-s` ahead, with the A.1 numbers a trainer would send: the
checkpoint level and the job's (peak + baseline) / 2, not the measured mean).

Figures, per case:
- largest 1 s change: max - min of the grid's 100 ms mean power (spec Table 1 monitoring
  interval) inside any 1 s window, sliding in 100 ms steps;
- windows > 50 MW: how many of the consecutive (non-overlapping) 1 s windows exceed 50 MW;
- band-energy reduction: 1 - E_grid / E_load, E = sum of |X(f)|^2 over 0.1 <= f <= 20 Hz of
  the periodogram of the mean-removed, Hann-windowed signal after 2-sample averaging to 50 Hz,
  zero-padded to a power of two (pure-Python radix-2 FFT; numpy is not installed);
- SoC drift: SoC at the end minus at the start, in % per hour (the target is checked on the
  change itself for runs of an hour or less);
- equivalent full cycles: cell-side throughput / (2 x capacity);
- energy lost: inverter + cell losses (|DC - AC| integrated), MWh;
- battery peak: largest |AC power|; SoC span: highest minus lowest SoC of the run.

Battery (default): 160 MW / 80 MWh, 92 % round trip, inverter at full power in 20 ms. The
power covers the largest step of this site (idle 44 MW -> compute 200 MW) with margin; the
energy is set by the cells' power rating (2C), not by smoothing, which moves < 1 MWh per event.

Why the cycles target (at most half the moving average's) cannot be met together with the
band target: the battery's net energy is about zero, so it cannot shift the iteration ripple
(two levels: 65 % of each iteration above the mean, 35 % below) anywhere; the best it can do
is leave a scaled copy r x ripple on the grid and carry (1 - r) of it (averaging any other
schedule over the iteration's phase gives a two-level one, no worse in cycles or in band
energy, both being convex; and a two-level zero-mean residual is such a copy). Band energy goes as
r^2, so >= 90 % reduction needs r <= sqrt(0.1) = 0.32: at least 68 % of the cycles of a
filter that takes the ripple off entirely, which the moving average does (97-98 % band
reduction). The trade-off is measured in every run: the moving average taking only a share
of the ripple (FRONTIER_SHARES) needs a share of ~0.7 for 90 %, at ~0.7 x its cycles, and at
half its cycles leaves ~74 % band reduction and thousands of 1 s windows above 50 MW.

    .venv/bin/python bench/smoothing.py [--quick] [--seed 1] [--duration-s 3600]
"""

from __future__ import annotations

import argparse
import cmath
import itertools
import json
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge_runtime.control.smoothing import BatteryLimits, Smoother, SmoothingConfig
from pswd_plant_sim.battery import Battery, BatteryConfig
from pswd_plant_sim.trace import CHECKPOINT, Trace, TraceConfig

DT = 0.01
SITE_MW = 200.0
PEAK_MW = 200.0  # what the trainer announces (A.1 power_profile; baseline = the sync level)
TARGET_WINDOW_MW = 50.0
BAND_TARGET = 0.90  # share of the 0.1-20 Hz energy kept off the grid
# the moving average taking only this share of the ripple: the cycles / band trade-off
FRONTIER_SHARES = (0.5, 0.6, 0.7, 0.8)


@dataclass(frozen=True)
class Plan:
    """Load samples (kW) and announcements (start s, delta kW, duration s | None)."""

    load: list[float]
    announcements: list[tuple[float, float, float | None]]


def build_load(duration_s: float, seed: int, idle_s: float, low_frac: float) -> Plan:
    """The site load: idle until idle_s, then the training trace; its announcements."""
    cfg = TraceConfig(seed=seed, site_mw=SITE_MW, iter_hz_min=0.2, iter_hz_max=3.0,
                      low_frac=low_frac)
    trace = Trace(cfg)
    n = math.floor(duration_s / DT + 1e-9)
    idle_kw = cfg.idle_frac * SITE_MW * 1000.0
    train = trace.generate(duration_s - idle_s, DT)
    k0 = n - len(train)
    load = [idle_kw] * k0 + train
    mean_kw = (PEAK_MW + low_frac * SITE_MW) / 2.0 * 1000.0  # A.1: (peak + baseline) / 2
    ann: list[tuple[float, float, float | None]] = [(idle_s, mean_kw - idle_kw, None)]
    for ph in trace.phases_until(duration_s - idle_s):
        if ph.kind == CHECKPOINT:
            ann.append((idle_s + ph.start, idle_kw - mean_kw, ph.end - ph.start))
    return Plan(load, ann)


class Case:
    """One controller: `setpoint(load_kw, soc_pct, limits) -> battery kW`."""

    def __init__(self, name: str, fn: Callable[[float, float, BatteryLimits], float],
                 on_time: Callable[[float], None] | None = None) -> None:
        self.name = name
        self.fn = fn
        self.on_time = on_time


def run_case(case: Case, load: Sequence[float], bcfg: BatteryConfig) -> dict[str, object]:
    """Drive the battery with the case's controller; grid samples and battery figures."""
    bat = Battery(bcfg)
    soc0 = bat.soc_pct
    grid: list[float] = []
    setpoint = 0.0
    throughput = lost = peak = 0.0
    soc_lo = soc_hi = soc0
    fn, on_time = case.fn, case.on_time
    for k, demand in enumerate(load):
        bat.command(enable=True, setpoint_kw=setpoint, ctrl_hb=k & 0xFFFF)
        bat.step(DT)
        ac, dc = bat.ac_kw, bat.dc_kw
        peak = max(peak, abs(ac))
        soc = bat.soc_pct
        if soc < soc_lo:
            soc_lo = soc
        elif soc > soc_hi:
            soc_hi = soc
        throughput += abs(dc)
        lost += abs(dc - ac)
        grid.append(demand - ac)
        if on_time is not None:
            on_time(k * DT)
        limits = BatteryLimits(bat.charge_limit_kw, bat.discharge_limit_kw)
        setpoint = fn(demand, bat.soc_pct, limits)  # reaches the inverter next step
    hours = len(load) * DT / 3600.0
    return {"grid": grid, "soc_drift_pct_per_h": (bat.soc_pct - soc0) / hours,
            "soc_change_pct": bat.soc_pct - soc0,
            "cycles": throughput * DT / 3600.0 / (2.0 * bcfg.capacity_kwh),
            "lost_mwh": lost * DT / 3600.0 / 1000.0, "peak_mw": peak / 1000.0,
            "soc_range_pct": soc_hi - soc_lo}


# -- figures -------------------------------------------------------------------------------
def means_100ms(x: Sequence[float]) -> list[float]:
    """100 ms means of 10 ms samples."""
    return [sum(x[i:i + 10]) / 10.0 for i in range(0, len(x) - 9, 10)]


def window_changes(x: Sequence[float]) -> tuple[float, int]:
    """(largest max-min in any sliding 1 s window, count of consecutive windows > 50 MW)."""
    m = means_100ms(x)
    hi: deque[int] = deque()
    lo: deque[int] = deque()
    largest = 0.0
    for i, v in enumerate(m):
        while hi and m[hi[-1]] <= v:
            hi.pop()
        hi.append(i)
        while lo and m[lo[-1]] >= v:
            lo.pop()
        lo.append(i)
        while hi[0] <= i - 10:
            hi.popleft()
        while lo[0] <= i - 10:
            lo.popleft()
        if i >= 9:
            largest = max(largest, m[hi[0]] - m[lo[0]])
    count = sum(1 for i in range(0, len(m) - 9, 10)
                if max(m[i:i + 10]) - min(m[i:i + 10]) > TARGET_WINDOW_MW * 1000.0)
    return largest / 1000.0, count


def fft(x: list[complex]) -> list[complex]:
    """Radix-2 decimation-in-time FFT (len(x) a power of two)."""
    n = len(x)
    if n == 1:
        return x
    even, odd = fft(x[0::2]), fft(x[1::2])
    tw = _twiddles(n)
    t = [w * o for w, o in zip(tw, odd, strict=True)]
    return ([e + u for e, u in zip(even, t, strict=True)]
            + [e - u for e, u in zip(even, t, strict=True)])


_TW: dict[int, list[complex]] = {}


def _twiddles(n: int) -> list[complex]:
    if n not in _TW:
        _TW[n] = [cmath.exp(-2j * math.pi * k / n) for k in range(n // 2)]
    return _TW[n]


def band_energies(signals: Sequence[Sequence[float]], f_lo: float = 0.1,
                  f_hi: float = 20.0) -> list[float]:
    """Periodogram energy in [f_lo, f_hi] of each signal (two real signals per complex FFT)."""
    prepared = []
    for s in signals:
        d = [(s[i] + s[i + 1]) / 2.0 for i in range(0, len(s) - 1, 2)]  # 50 Hz
        mean = sum(d) / len(d)
        n = len(d)
        prepared.append([(v - mean) * (0.5 - 0.5 * math.cos(2 * math.pi * i / (n - 1)))
                         for i, v in enumerate(d)])
    n = len(prepared[0])
    size = 1 << (n - 1).bit_length()
    fs = 1.0 / (2 * DT)
    k_lo, k_hi = math.ceil(f_lo * size / fs), math.floor(f_hi * size / fs)
    out: list[float] = []
    for j in range(0, len(prepared), 2):
        a = prepared[j]
        b = prepared[j + 1] if j + 1 < len(prepared) else [0.0] * n
        z = fft([complex(u, v) for u, v in zip(a, b, strict=True)] + [0j] * (size - n))
        ea = eb = 0.0
        for k in range(k_lo, k_hi + 1):
            zk, zc = z[k], z[-k].conjugate()
            ea += abs(zk + zc) ** 2 / 4.0
            eb += abs(zk - zc) ** 2 / 4.0
        out.extend([ea, eb])
    return out[:len(signals)]


# -- controllers -----------------------------------------------------------------------------
def clip(battery: float, lim: BatteryLimits) -> float:
    """Inverter limits."""
    return min(max(battery, -lim.charge_kw), lim.discharge_kw)


def moving_average(window_s: float, share: float = 1.0) -> Case:
    """grid = mean of the last window_s of load; with share < 1 the battery takes only that
    share of the difference, leaving the rest of the ripple on the grid."""
    n = max(1, round(window_s / DT))
    buf: deque[float] = deque()
    total = [0.0]

    def fn(load: float, soc: float, lim: BatteryLimits) -> float:
        buf.append(load)
        total[0] += load
        if len(buf) > n:
            total[0] -= buf.popleft()
        return clip(share * (load - total[0] / len(buf)), lim)

    name = f"moving_average_{window_s:g}s"
    return Case(name if share == 1.0 else f"{name}_x{share:g}", fn)


def ramp_limiter(ramp_kw_s: float) -> Case:
    """grid follows the load at most ramp_kw_s."""
    g: list[float | None] = [None]

    def fn(load: float, soc: float, lim: BatteryLimits) -> float:
        prev = load if g[0] is None else g[0]
        step = ramp_kw_s * DT
        target = prev + min(max(load - prev, -step), step)
        b = clip(load - target, lim)
        g[0] = load - b
        return b

    return Case("ramp_limiter", fn)


def ours(cfg: SmoothingConfig, plan: Plan | None, lead_s: float) -> Case:
    """Our Smoother, optionally fed the announcements lead_s ahead."""
    sm = Smoother(cfg)
    pending = sorted(plan.announcements) if plan else []

    def on_time(t: float) -> None:
        while pending and pending[0][0] - lead_s <= t:
            start, delta, dur = pending.pop(0)
            sm.announce(in_s=start - t, delta_kw=delta, duration_s=dur)

    def fn(load: float, soc: float, lim: BatteryLimits) -> float:
        return sm.step(load, soc, lim, DT)

    return Case("ours_announced" if plan else "ours", fn, on_time if plan else None)


def frontier(figures: dict[str, dict[str, float]], ma: str) -> dict[str, float]:
    """Where the share-scaled moving averages (and no control, share 0) cross the band target
    and half the full moving average's cycles, by linear interpolation between shares."""
    points = [(0.0, 0.0, 0.0)] + [
        (share, figures[f"{ma}_x{share:g}"]["band_energy_reduction_pct"],
         figures[f"{ma}_x{share:g}"]["equivalent_full_cycles"]) for share in FRONTIER_SHARES]
    points.append((1.0, figures[ma]["band_energy_reduction_pct"],
                   figures[ma]["equivalent_full_cycles"]))
    full = points[-1][2]

    def cross(index: int, level: float) -> tuple[float, float, float]:
        for a, b in itertools.pairwise(points):
            if a[index] <= level <= b[index] and b[index] > a[index]:
                f = (level - a[index]) / (b[index] - a[index])
                return tuple(x + f * (y - x) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]
        return (math.nan, math.nan, math.nan)

    at_band = cross(1, 100.0 * BAND_TARGET)
    at_half = cross(2, 0.5 * full)
    return {"share_for_90pct_band": round(at_band[0], 3),
            "cycles_vs_ma_at_90pct_band": round(at_band[2] / full, 3),
            "share_for_half_cycles": round(at_half[0], 3),
            "band_reduction_pct_at_half_cycles": round(at_half[1], 2)}


def main() -> None:
    """Run every case, print the table and the JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 s instead of an hour")
    ap.add_argument("--duration-s", type=float, default=3600.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--low-frac", type=float, default=0.45,
                    help="sync level between bursts (0.45: 110 MW swings; 0: 200 MW swings)")
    ap.add_argument("--lead-s", type=float, default=10.0)
    ap.add_argument("--ramp-mw-s", type=float, default=40.0)
    ap.add_argument("--ma-window-s", type=float, default=10.0)
    ap.add_argument("--filter-tau-s", type=float, default=2.0, help="ours: each low-pass")
    ap.add_argument("--no-latency-comp", action="store_true")
    ap.add_argument("--battery-mw", type=float, default=160.0)
    ap.add_argument("--battery-mwh", type=float, default=80.0)
    args = ap.parse_args()
    duration = 300.0 if args.quick else args.duration_s
    t0 = time.perf_counter()
    plan = build_load(duration, args.seed, args.idle_s, args.low_frac)
    kw = args.battery_mw * 1000.0
    bcfg = BatteryConfig(capacity_kwh=args.battery_mwh * 1000.0, max_charge_kw=kw,
                         max_discharge_kw=kw, efficiency=0.92, ramp_kw_per_s=kw / 0.02,
                         initial_soc_pct=50.0, soc_min_pct=5.0, soc_max_pct=95.0,
                         hb_timeout_s=1e9)
    scfg = SmoothingConfig(
        ramp_limit_kw_per_s=args.ramp_mw_s * 1000.0, range_kw=TARGET_WINDOW_MW * 700.0,
        filter_tau_s=args.filter_tau_s, capacity_kwh=bcfg.capacity_kwh,
        efficiency=bcfg.efficiency, max_charge_kw=kw,
        max_discharge_kw=kw, soc_correction_max_kw=0.1 * kw, soc_kp_kw_per_pct=0.01 * kw,
        soc_ki_kw_per_pct_s=0.0001 * kw, latency_comp_s=0.0 if args.no_latency_comp else DT)
    cases = [Case("no_control", lambda load, soc, lim: 0.0),
             moving_average(args.ma_window_s), ramp_limiter(args.ramp_mw_s * 1000.0),
             ours(scfg, None, args.lead_s), ours(scfg, plan, args.lead_s)]
    cases += [moving_average(args.ma_window_s, share) for share in FRONTIER_SHARES]
    results = {c.name: run_case(c, plan.load, bcfg) for c in cases}
    t_sim = time.perf_counter() - t0
    energies = band_energies([plan.load] + [r["grid"] for r in results.values()])  # type: ignore[misc]
    e_load = energies[0]
    figures: dict[str, dict[str, float]] = {}
    for (name, r), e in zip(results.items(), energies[1:], strict=True):
        largest, count = window_changes(r["grid"])  # type: ignore[arg-type]
        figures[name] = {
            "largest_1s_change_mw": round(largest, 2), "windows_over_50mw": count,
            "band_energy_reduction_pct": round(100.0 * (1.0 - e / e_load), 2),
            "soc_drift_pct_per_h": round(float(r["soc_drift_pct_per_h"]), 3),  # type: ignore[arg-type]
            "soc_change_pct": round(float(r["soc_change_pct"]), 3),  # type: ignore[arg-type]
            "equivalent_full_cycles": round(float(r["cycles"]), 4),  # type: ignore[arg-type]
            "energy_lost_mwh": round(float(r["lost_mwh"]), 3),  # type: ignore[arg-type]
            "battery_peak_mw": round(float(r["peak_mw"]), 1),  # type: ignore[arg-type]
            "soc_range_pct": round(float(r["soc_range_pct"]), 2)}  # type: ignore[arg-type]
    ma = figures[cases[1].name]
    checks = {}
    for name in ("ours", "ours_announced"):
        f = figures[name]
        checks[name] = {
            "windows": f["windows_over_50mw"] == 0,
            "band": f["band_energy_reduction_pct"] >= 100.0 * BAND_TARGET,
            # 5 % per hour; a shorter run may not drift more than 5 % either (a transient
            # over 5 minutes does not extrapolate to an hour)
            "soc_drift": abs(f["soc_change_pct"]) <= 5.0 * max(duration / 3600.0, 1.0),
            "cycles_vs_ma": f["equivalent_full_cycles"] <= 0.5 * ma["equivalent_full_cycles"]}
    print(f"site {SITE_MW:g} MW, sync level {args.low_frac:g} x peak, "
          f"{duration:g} s at {DT * 1000:g} ms, seed {args.seed}; battery "
          f"{args.battery_mw:g} MW / {args.battery_mwh:g} MWh, 92 % round trip; grid ramp "
          f"limit {args.ramp_mw_s:g} MW/s; simulated in {t_sim:.1f} s")
    head = ("case", "max1s MW", ">50MW", "band red %", "SoC %/h", "EFC", "lost MWh",
            "peak MW", "SoC span")
    print("{:<22}{:>9}{:>7}{:>11}{:>9}{:>8}{:>9}{:>9}{:>9}".format(*head))
    for name, f in figures.items():
        print(f"{name:<22}{f['largest_1s_change_mw']:>9.1f}{f['windows_over_50mw']:>7d}"
              f"{f['band_energy_reduction_pct']:>11.2f}{f['soc_drift_pct_per_h']:>9.2f}"
              f"{f['equivalent_full_cycles']:>8.3f}{f['energy_lost_mwh']:>9.3f}"
              f"{f['battery_peak_mw']:>9.1f}{f['soc_range_pct']:>9.2f}")
    for name, c in checks.items():
        print(f"targets {name}: " + ", ".join(f"{k} {'met' if v else 'MISSED'}"
                                              for k, v in c.items()))
    tradeoff = frontier(figures, cases[1].name)
    print(f"trade-off (the moving average taking a share of the ripple): >= 90 % band "
          f"reduction needs a share >= {tradeoff['share_for_90pct_band']:.2f}, which costs "
          f"{tradeoff['cycles_vs_ma_at_90pct_band']:.2f} x its cycles; half its cycles (share "
          f"{tradeoff['share_for_half_cycles']:.2f}) leaves "
          f"{tradeoff['band_reduction_pct_at_half_cycles']:.1f} % band reduction")
    print(f"total {time.perf_counter() - t0:.1f} s")
    print(json.dumps({
        "setup": {"site_mw": SITE_MW, "duration_s": duration, "dt_ms": DT * 1000,
                  "seed": args.seed, "low_frac": args.low_frac,
                  "battery_mw": args.battery_mw,
                  "battery_mwh": args.battery_mwh, "ramp_limit_mw_per_s": args.ramp_mw_s,
                  "ma_window_s": args.ma_window_s,
                  "latency_comp_ms": 0.0 if args.no_latency_comp else DT * 1000},
        **figures, "tradeoff": tradeoff, "targets": checks,
        "targets_met": all(all(c.values()) for c in checks.values())}))


if __name__ == "__main__":
    main()
