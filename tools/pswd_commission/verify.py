"""`verify`: read every point of a node config straight from the devices and judge it.

Per point: the read (device answers, decodes, finite), quality (the device's own status
bits), range (the io_map's min..max, else what the unit can plausibly be), the alarm band
(the config's limits) and plausibility against its neighbours (the same quantity on other
devices: supply and return temperature, supply and return pressure). A wrongly scaled point
shows as a value a power of ten away from its range or its neighbours; swapped words as a
float of absurd magnitude (or an integer out of range) that reads right in the other order.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace

from edge_runtime.assembly.config import NodeConfig
from edge_runtime.config.codec import CodecError, decode, decode_raw
from edge_runtime.config.schema import DeviceConfig, Limits, PointSpec
from edge_runtime.io.blocks import plan_reads
from pswd_commission.fieldlink import FieldError, FieldLink, PointRead

# Status bits that mean "this device's measurement is not to be trusted", per io_map model:
# model -> (status point, mask, what it means). From each model's io_map description.
STATUS_FAULTS: dict[str, tuple[str, int, str]] = {
    "temperature_transmitter": ("status", 0x1, "sensor fault"),
    "pressure_transmitter": ("status", 0x1, "sensor fault"),
    "flow_meter": ("status", 0x2, "sensor fault"),
    "cdu_pump_vfd": ("status_word", 0x2, "drive fault"),
    "control_valve": ("status", 0x2, "actuator fault"),
    "leak_detector": ("status", 0x1, "cable fault"),
}
# What a value in each unit can physically be, for points without a declared range.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "degC": (-60.0, 300.0), "bar": (-1.0, 400.0), "L/min": (-1.0, 1e6), "%": (-5.0, 120.0),
    "kW": (-1e6, 1e6), "kWh": (0.0, 1e12), "V": (0.0, 1e5), "A": (-1e5, 1e5),
    "Hz": (0.0, 1000.0), "m3": (0.0, 1e12), "h": (0.0, 1e7), "m": (0.0, 1e5),
}
_TINY, _HUGE = 1e-12, 1e12  # a float32 field value beyond these is garbage, not physics


@dataclass(frozen=True, slots=True)
class PointResult:
    """One row of the verify table."""

    point: str  # device.point
    device: str
    value: float | None
    unit: str
    range: str
    status: str  # PASS | FAIL | WARN | SKIP
    reason: str
    endpoint: str = ""
    unit_id: int = 0

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return asdict(self)


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:.6g}" if abs(value) < 1e7 else f"{value:.3e}"
    return f"{text} {unit}".rstrip()


def declared_range(spec: PointSpec) -> tuple[float, float] | None:
    """The io_map min..max (open ends filled from the unit), None when nothing bounds it."""
    lo, hi = PLAUSIBLE.get(spec.unit, (None, None))
    lo = spec.minimum if spec.minimum is not None else lo
    hi = spec.maximum if spec.maximum is not None else hi
    if lo is None and hi is None:
        return None
    return (-math.inf if lo is None else lo, math.inf if hi is None else hi)


def _range_text(spec: PointSpec) -> str:
    # Only what the io_map declares: the unit's plausible span is a check, not a spec.
    if spec.minimum is None and spec.maximum is None:
        return ""
    lo, hi = (f"{v:g}" if v is not None else "" for v in (spec.minimum, spec.maximum))
    return f"{lo}..{hi}"


def plausible(spec: PointSpec, value: float) -> bool:
    """Finite, within the declared (or unit) range, and of a sane magnitude for a float."""
    if not math.isfinite(value):
        return False
    if not spec.encoding.dtype.is_integer and value != 0.0 and not _TINY < abs(value) < _HUGE:
        return False
    rng = declared_range(spec)
    return rng is None or rng[0] <= value <= rng[1]


def other_order(spec: PointSpec, words: Iterable[int]) -> float | None:
    """The value the words give in the other word order (32-bit) or byte order (16-bit)."""
    enc = spec.encoding
    alt = (replace(enc, word_swap=not enc.word_swap) if enc.dtype.count > 1
           else replace(enc, byte_swap=not enc.byte_swap))
    try:
        return float(decode(list(words), alt))
    except CodecError:
        return None


async def read_device(link: FieldLink, dev: DeviceConfig,
                      advance: Callable[[int], None] = lambda n: None) -> dict[str, PointRead]:
    """Every readable point of one Modbus device, by point name (failures kept per point)."""
    out: dict[str, PointRead] = {}
    for block in plan_reads(dev.io_map.inputs, max_gap=dev.max_gap):
        try:
            words = await link.read(dev.host, dev.port, dev.unit_id, block.table, block.start,
                                    block.count)
        except FieldError as exc:
            for bp in block.points:
                out[bp.spec.name] = PointRead(None, (), exc.reason, exc.kind)
            advance(len(block.points))
            continue
        for bp in block.points:
            w = tuple(words[bp.offset:bp.offset + bp.spec.count])
            try:
                out[bp.spec.name] = PointRead(float(decode(w, bp.spec.encoding)), w)
            except CodecError as exc:
                out[bp.spec.name] = PointRead(None, w, str(exc), "codec")
        advance(len(block.points))
    return out


async def read_all(link: FieldLink, cfg: NodeConfig,
                   advance: Callable[[int], None] = lambda n: None) -> dict[str, PointRead]:
    """Every readable point of every Modbus device of a node, by "device.point"."""
    reads: dict[str, PointRead] = {}
    for dev in cfg.devices:
        if dev.protocol != "modbus":
            continue
        for name, r in (await read_device(link, dev, advance)).items():
            reads[f"{dev.name}.{name}"] = r
    return reads


def _pinned(spec: PointSpec, words: Iterable[int]) -> str:
    """A scaled integer point at its register's full scale: a transmitter pins there when its
    signal is over range or its sensor is broken, so the value is not a measurement."""
    enc = spec.encoding
    if not enc.dtype.is_integer or spec.integral:
        return ""
    try:
        raw = int(decode_raw(list(words), enc))
    except CodecError:
        return ""
    bits = 16 * enc.dtype.count
    signed = enc.dtype.name.startswith("INT")
    ends = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    if raw == ends[1] or (signed and raw == ends[0]):
        return (f"raw {raw} is the register's full scale: the transmitter is pinned (over "
                f"range or a broken sensor), not measuring")
    return ""


def _quality(dev: DeviceConfig, reads: Mapping[str, PointRead]) -> str:
    fault = STATUS_FAULTS.get(dev.io_map.model)
    if fault is None:
        return ""
    point, mask, meaning = fault
    r = reads.get(f"{dev.name}.{point}")
    if r is None or r.value is None or not int(r.value) & mask:
        return ""
    return f"device reports {meaning} ({point} = 0x{int(r.value):04X})"


def _alarm(value: float, limits: Limits | None, unit: str) -> str:
    if limits is None:
        return ""
    if limits.low_low is not None and value < limits.low_low:
        return f"below low_low {_fmt(limits.low_low, unit)}"
    if limits.high_high is not None and value > limits.high_high:
        return f"above high_high {_fmt(limits.high_high, unit)}"
    return ""


def _normal(value: float, limits: Limits | None) -> bool:
    """Between the low and high thresholds (the alarm-free band)."""
    if limits is None:
        return False
    lo = limits.low if limits.low is not None else limits.low_low
    hi = limits.high if limits.high is not None else limits.high_high
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _scale_hint(spec: PointSpec, value: float, peers: list[float]) -> str:
    """"looks scaled by 10" when dividing by a power of ten lands in range (near peers)."""
    rng = declared_range(spec)
    best: tuple[float, int, float] | None = None
    for k in (1, 2, 3, -1, -2, -3):
        cand = value / 10.0 ** k
        if not plausible(spec, cand) or (rng is not None and not rng[0] <= cand <= rng[1]):
            continue
        dist = abs(math.log10(abs(cand) / abs(statistics.median(peers)))) \
            if peers and cand and statistics.median(peers) else abs(k) * 0.01
        if best is None or dist < best[0]:
            best = (dist, k, cand)
    if best is None:
        return ""
    _, k, cand = best
    factor = f"{10 ** k:g}" if k > 0 else f"1/{10 ** -k:g}"
    return f"; looks scaled by {factor}: would read {_fmt(cand, spec.unit)}"


def judge(cfg: NodeConfig, reads: Mapping[str, PointRead],
          scale_problems: Mapping[str, str] | None = None) -> list[PointResult]:
    """The verify table from the reads (pure: tests feed it reads directly);
    `scale_problems` ("device.point" -> why) come from the SunSpec scale-factor check."""
    rows: dict[str, PointResult] = {}
    peers: dict[tuple[str, str], list[str]] = {}
    for dev in cfg.devices:
        if dev.protocol != "modbus":
            for spec in dev.io_map.inputs:
                rows[f"{dev.name}.{spec.name}"] = PointResult(
                    f"{dev.name}.{spec.name}", dev.name, None, spec.unit, _range_text(spec),
                    "SKIP", f"{dev.protocol} device: not read by this tool", dev.endpoint)
            continue
        quality = _quality(dev, reads)
        status_point = STATUS_FAULTS.get(dev.io_map.model, ("",))[0]
        for spec in dev.io_map.inputs:
            name = f"{dev.name}.{spec.name}"
            r = reads.get(name, PointRead(None, (), "not read", "missing"))
            row = PointResult(name, dev.name, r.value, spec.unit, _range_text(spec), "PASS", "",
                              dev.endpoint, dev.unit_id)
            if r.value is None:
                row = replace(row, status="FAIL", reason=r.error or "no value")
            elif pinned := _pinned(spec, r.words):
                row = replace(row, status="FAIL", reason=pinned)
            elif not plausible(spec, r.value):
                alt = other_order(spec, r.words)
                rng = declared_range(spec)
                if not math.isfinite(r.value):
                    what = "not a finite number"
                elif rng is not None and not rng[0] <= r.value <= rng[1]:
                    what = (f"{_fmt(r.value, spec.unit)} is outside "
                            f"{_range_text(spec) or 'what ' + spec.unit + ' can be'}")
                else:
                    what = f"{_fmt(r.value, spec.unit)} is not a plausible magnitude"
                order = "words" if spec.count > 1 else "bytes"
                swap_hint = (f"; {order} look swapped: the other order reads "
                             f"{_fmt(alt, spec.unit)}"
                             if alt is not None and plausible(spec, alt) else "")
                scale_hint = _scale_hint(spec, r.value, []) if math.isfinite(r.value) else ""
                # A float of absurd magnitude is word order; an integer register a power of
                # ten out is the commoner mistake (a transmitter set to the wrong unit).
                hints = [swap_hint, scale_hint] if spec.count > 1 else [scale_hint, swap_hint]
                hint = next((h for h in hints if h), "")
                row = replace(row, status="FAIL", reason=what + hint)
            elif quality and spec.name != status_point:
                row = replace(row, status="FAIL", reason=quality)
            elif scale_problems and name in scale_problems:
                row = replace(row, status="FAIL", reason=scale_problems[name])
            else:
                limits = cfg.safety.limits.get(name)
                alarm = _alarm(r.value, limits, spec.unit)
                alt = other_order(spec, r.words) if alarm and spec.count > 1 else None
                if alarm and alt is not None and plausible(spec, alt) and _normal(alt, limits):
                    row = replace(row, status="FAIL", reason=(
                        f"in alarm ({alarm}), but the other word order reads "
                        f"{_fmt(alt, spec.unit)}, inside the normal band: words look swapped"))
                elif alarm:
                    row = replace(row, status="WARN", reason=f"in alarm: {alarm}")
            rows[name] = row
            if spec.unit and not spec.integral:
                peers.setdefault((spec.name, spec.unit), []).append(name)
    _neighbours(rows, peers, cfg)
    return list(rows.values())


def _neighbours(rows: dict[str, PointResult], groups: Mapping[tuple[str, str], list[str]],
                cfg: NodeConfig) -> None:
    """Flag a point a power of ten away from the same quantity on other devices."""
    for members in groups.values():
        usable = [m for m in members if rows[m].status in ("PASS", "WARN")
                  and rows[m].value not in (None, 0.0)]
        if len(usable) < 2:
            continue
        suspects: list[tuple[str, float, float]] = []
        for m in usable:
            others = [abs(rows[o].value or 0.0) for o in usable if o != m]
            ref = statistics.median(others)
            ratio = math.log10(abs(rows[m].value or 0.0) / ref) if ref else 0.0
            if abs(ratio) >= 0.8 and abs(ratio - round(ratio)) <= 0.2:
                suspects.append((m, ratio, ref))
        if not suspects:
            continue
        if len(usable) == 2 and len(suspects) == 2:
            # Two devices a power of ten apart: the one in its alarm band is the wrong one;
            # when neither or both are, say so on both.
            in_alarm = [s for s in suspects if rows[s[0]].status == "WARN"]
            suspects = in_alarm if len(in_alarm) == 1 else suspects
            if len(suspects) == 2:
                a, b = suspects[0][0], suspects[1][0]
                for m, _, _ in suspects:
                    rows[m] = replace(rows[m], status="WARN", reason=(
                        f"{a} and {b} differ by a factor of "
                        f"{10 ** abs(round(suspects[0][1])):g}: one of them is scaled wrong"))
                continue
        for m, ratio, ref in suspects:
            row = rows[m]
            factor = 10 ** round(ratio)
            factor_text = f"{factor:g}" if factor >= 1 else f"1/{1 / factor:g}"
            rows[m] = replace(row, status="FAIL", reason=(
                f"{_fmt(row.value, row.unit)} is {factor_text} x its neighbours "
                f"(median {_fmt(ref, row.unit)}): looks scaled by {factor_text}"))
