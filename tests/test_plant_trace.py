"""The synthetic AI-training trace: deterministic, bursty at 0.2-3 Hz, checkpoint pauses,
~40 ms edges, scaled from one rack to a site."""

from __future__ import annotations

import pytest

from pswd_plant_sim.trace import CHECKPOINT, TRAINING, Trace, TraceConfig, generate


def _rising_edges(samples: list[float], dt: float, lo: float, hi: float) -> list[float]:
    """Times where the signal crosses `hi` after having been below `lo` (hysteresis)."""
    edges: list[float] = []
    armed = False
    for i, x in enumerate(samples):
        if x < lo:
            armed = True
        elif x > hi and armed:
            edges.append(i * dt)
            armed = False
    return edges


def test_same_seed_same_trace_in_any_order() -> None:
    a = Trace(TraceConfig(seed=7, rack_kw=120.0)).generate(60.0, 0.01)
    b = Trace(TraceConfig(seed=7, rack_kw=120.0)).generate(60.0, 0.01)
    assert a == b
    other = Trace(TraceConfig(seed=8, rack_kw=120.0)).generate(60.0, 0.01)
    assert other != a
    # power_at is a pure function of t: asking late times first changes nothing
    fresh = Trace(TraceConfig(seed=7, rack_kw=120.0))
    late = fresh.power_at(59.99)
    assert fresh.power_at(12.34) == pytest.approx(a[1234], abs=1e-9)
    assert late == pytest.approx(a[5999], abs=1e-9)


def test_module_generate_matches_trace() -> None:
    samples = generate(5.0, 0.01, seed=3, rack_kw=100.0)
    assert len(samples) == 500
    assert samples == Trace(TraceConfig(seed=3, rack_kw=100.0)).generate(5.0, 0.01)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_burst_frequencies_are_within_02_to_3_hz(seed: int) -> None:
    cfg = TraceConfig(seed=seed, rack_kw=100.0, iter_hz_min=0.2, iter_hz_max=3.0,
                      checkpoint_every_s=40.0)
    trace = Trace(cfg)
    dt = 0.005
    for phase in trace.phases_until(150.0):
        if phase.kind != TRAINING or phase.end > 150.0:
            continue
        assert 0.2 <= phase.freq_hz <= 3.0
        samples = trace.generate(phase.end - phase.start, dt, t0=phase.start)
        edges = _rising_edges(samples, dt, lo=0.6 * cfg.peak_kw, hi=0.85 * cfg.peak_kw)
        assert len(edges) >= 3
        measured = (len(edges) - 1) / (edges[-1] - edges[0])
        assert 0.2 <= measured <= 3.0
        assert measured == pytest.approx(phase.freq_hz, rel=0.02)


def test_checkpoint_pauses_drop_to_baseline_for_seconds() -> None:
    cfg = TraceConfig(seed=4, rack_kw=100.0, checkpoint_every_s=45.0, checkpoint_s=6.0)
    trace = Trace(cfg)
    dt = 0.01
    samples = trace.generate(200.0, dt)
    threshold = (cfg.idle_frac + cfg.low_frac) / 2 * cfg.peak_kw
    runs: list[float] = []
    length = 0
    for x in samples:
        if x < threshold:
            length += 1
        else:
            if length:
                runs.append(length * dt)
            length = 0
    pauses = [r for r in runs if r >= 3.0]
    assert len(pauses) >= 3
    checkpoints = [p for p in trace.phases_until(200.0) if p.kind == CHECKPOINT]
    assert len(checkpoints) >= 3
    mid = checkpoints[0].start + (checkpoints[0].end - checkpoints[0].start) / 2
    assert trace.power_at(mid) == pytest.approx(cfg.idle_frac * cfg.peak_kw, rel=0.15)


def test_edges_take_about_40_ms() -> None:
    cfg = TraceConfig(seed=5, rack_kw=100.0, noise_frac=0.0, edge_s=0.04)
    trace = Trace(cfg)
    dt = 0.0005
    samples = trace.generate(10.0, dt)
    lo, hi = cfg.low_frac * cfg.peak_kw, 0.95 * cfg.high_frac * cfg.peak_kw
    edges = _rising_edges(samples, dt, lo=lo + 1.0, hi=hi)
    assert edges
    rise_times = []
    for t_edge in edges:
        i = int(t_edge / dt)
        while i > 0 and samples[i - 1] < samples[i]:
            i -= 1
        start = i
        top = samples[int(t_edge / dt) + int(0.1 / dt)]
        span = top - samples[start]
        base = samples[start]
        t10 = next(j for j in range(start, len(samples)) if samples[j] > base + 0.1 * span)
        t90 = next(j for j in range(start, len(samples)) if samples[j] > base + 0.9 * span)
        rise_times.append((t90 - t10) * dt)
    for r in rise_times:
        assert 0.025 <= r <= 0.045  # 10-90 % of a 40 ms linear ramp is 32 ms


def test_site_scale_is_racks_in_lockstep() -> None:
    rack = Trace(TraceConfig(seed=9, rack_kw=100.0))
    site = Trace(TraceConfig(seed=9, rack_kw=100.0, site_mw=200.0))
    assert site.config.peak_kw == 200_000.0
    assert site.config.racks == pytest.approx(2000.0)
    r = rack.generate(120.0, 0.05)
    s = site.generate(120.0, 0.05)
    mean_r, mean_s = sum(r) / len(r), sum(s) / len(s)
    assert mean_s / mean_r == pytest.approx(2000.0, rel=0.01)
    assert max(s) < 1.05 * 200_000.0
    assert min(s) > 0.15 * 200_000.0
    # racks in lockstep: the site swings as deeply as one rack (noise averages out)
    assert (max(s) - min(s)) / 200_000.0 == pytest.approx((max(r) - min(r)) / 100.0, abs=0.1)
