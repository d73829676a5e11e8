"""`loopcheck`: command each output, watch its feedback, time the response, restore.

Direct mode talks to the devices with the node stopped. Before each output the tool reads
every input of the config and evaluates the config's [safety] rules on that snapshot (the
node's own parser and conditions): an output that an active or unknown-state rule drives, or
that a latched trip in the node's latch journal holds, is REFUSED, never moved.

Feedback pairing, first match wins:
1. a pairs file (`--pairs FILE`): `["pump1.speed_ref"] feedback = "pump1.speed_actual"`, with
   optional `bit`, `test_value`, `tolerance`, `timeout_s`;
2. the io_map names on the same device: `<stem>_ref|_cmd|_set|_sp` -> `<stem>_actual|_fb|
   _feedback|_pv`, and `control_word` -> `status_word` bit 0 (the run bit).
Outputs without feedback, device parameters (comms-loss registers) and heartbeats are SKIP.

A miswired output shows as no response on its own feedback while the same feedback point on a
sibling device (same io_map model) follows the test value: the row names that sibling.
"""

from __future__ import annotations

import asyncio
import math
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.assembly.config import NodeConfig
from edge_runtime.config.codec import CodecError
from edge_runtime.config.schema import DeviceConfig, Limits, PointSpec
from edge_runtime.core.points import NEVER_READ, Quality, Sample
from edge_runtime.safety import journal
from edge_runtime.safety.limits import Level, LimitMonitor
from pswd_commission.fieldlink import FieldError, FieldLink, PointRead
from pswd_commission.session import CommissionError
from pswd_commission.verify import read_all

_CMD_SUFFIXES = ("_ref", "_cmd", "_set", "_sp", "_setpoint")
_FB_SUFFIXES = ("_actual", "_fb", "_feedback", "_pv", "_measured")
_SPECIAL = {"control_word": ("status_word", 0)}  # run bit of a drive's control word


@dataclass(frozen=True, slots=True)
class Pairing:
    """An output, the input that reflects it and how to test it."""

    output: str
    feedback: str
    bit: int | None = None
    test_value: float | None = None
    tolerance: float | None = None
    timeout_s: float | None = None
    source: str = "io_map names"


@dataclass(slots=True)
class LoopResult:
    """One row of the loop-check table, with the samples for the report's plot."""

    output: str
    status: str  # PASS | FAIL | REFUSED | SKIP
    reason: str
    feedback: str = ""
    pairing: str = ""
    before: float | None = None
    test_value: float | None = None
    tolerance: float | None = None
    response_s: float | None = None
    restored: bool | None = None
    unit: str = ""
    samples: list[tuple[float, float]] = field(default_factory=list)
    sibling_samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON form (samples rounded)."""
        d = asdict(self)
        d["samples"] = [[round(t, 3), round(v, 4)] for t, v in self.samples]
        d["sibling_samples"] = {k: [[round(t, 3), round(v, 4)] for t, v in s]
                                for k, s in self.sibling_samples.items()}
        return d


def load_pairs(path: Path) -> dict[str, Pairing]:
    """The pairs file; CommissionError naming the key on any problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommissionError(f"{path}: pairs file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CommissionError(f"{path}: not a readable TOML file: {exc}") from None
    out: dict[str, Pairing] = {}
    for output, body in data.items():
        if not isinstance(body, dict) or not isinstance(body.get("feedback"), str):
            raise CommissionError(f"{path}: [\"{output}\"] feedback: required, a point name")
        unknown = set(body) - {"feedback", "bit", "test_value", "tolerance", "timeout_s"}
        if unknown:
            raise CommissionError(f"{path}: [\"{output}\"] {sorted(unknown)[0]}: unknown key")
        for key in ("test_value", "tolerance", "timeout_s"):
            if key in body and (isinstance(body[key], bool)
                                or not isinstance(body[key], int | float)):
                raise CommissionError(f"{path}: [\"{output}\"] {key}: must be a number")
        bit = body.get("bit")
        if bit is not None and (not isinstance(bit, int) or not 0 <= bit <= 31):
            raise CommissionError(f"{path}: [\"{output}\"] bit: must be 0..31")
        out[output] = Pairing(output, body["feedback"], bit, _num(body.get("test_value")),
                              _num(body.get("tolerance")), _num(body.get("timeout_s")),
                              f"pairs file {path.name}")
    return out


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def infer_pairing(dev: DeviceConfig, spec: PointSpec) -> Pairing | None:
    """The feedback of an output from the io_map's point names, or None."""
    names = {p.name for p in dev.io_map.inputs}
    if spec.name in _SPECIAL and _SPECIAL[spec.name][0] in names:
        fb, bit = _SPECIAL[spec.name]
        return Pairing(f"{dev.name}.{spec.name}", f"{dev.name}.{fb}", bit)
    for suffix in _CMD_SUFFIXES:
        if spec.name.endswith(suffix):
            stem = spec.name[: -len(suffix)]
            for fb_suffix in _FB_SUFFIXES:
                if stem + fb_suffix in names:
                    return Pairing(f"{dev.name}.{spec.name}", f"{dev.name}.{stem}{fb_suffix}")
    return None


class Snapshot:
    """The safety layer's PointView over one read of every input (delays not applied)."""

    def __init__(self, cfg: NodeConfig, reads: Mapping[str, PointRead]) -> None:
        self.cfg, self.reads = cfg, reads
        self.now = time.time()

    def sample(self, name: str) -> Sample:
        """GOOD with the value read, BAD with the reason when the read failed."""
        r = self.reads.get(name)
        if r is None:
            return NEVER_READ
        if r.value is None or not math.isfinite(r.value):
            return Sample.bad(r.error or "no value", self.now)
        return Sample(r.value, Quality.GOOD, self.now)

    def raw(self, name: str) -> Sample:
        """As sample (no substitution in a snapshot)."""
        return self.sample(name)

    def level(self, name: str) -> Level:
        """The limit level of the value now (hysteresis and delay do not apply to one read)."""
        limits = self.cfg.safety.limits.get(name)
        if limits is None:
            return Level.NORMAL
        monitor = LimitMonitor(name, Limits(limits.low_low, limits.low, limits.high,
                                            limits.high_high))
        monitor.update(self.sample(name), 0.0)
        return monitor.level

    def comms_lost(self, device: str) -> bool | None:
        """True when no input of the device could be read."""
        mine = [r for n, r in self.reads.items() if n.split(".", 1)[0] == device]
        return bool(mine) and all(r.value is None for r in mine)


def latched_trips(cfg: NodeConfig) -> tuple[frozenset[str], str]:
    """Trips the node's latch journal holds (empty without a state_dir), and a problem text."""
    state_dir = cfg.safety.state_dir
    if state_dir is None:
        return frozenset(), ""
    path = state_dir / journal.FILE
    if not path.exists():
        return frozenset(), ""
    try:
        latched, _watchdog = journal.decode(path.read_bytes())
    except (OSError, ValueError) as exc:
        return frozenset(), f"latch journal {path} unreadable ({exc}): every latch counts"
    return latched, ""


def forbidding(cfg: NodeConfig, output: str, view: Snapshot,
               latched: frozenset[str], journal_problem: str) -> str:
    """Why the safety config forbids moving `output` now, or ''."""
    for rule in cfg.safety.rules:
        if output not in rule.outputs or not rule.acts:
            continue
        if journal_problem and rule.latch:
            return journal_problem
        if rule.name in latched:
            return f"trip {rule.name} is latched in the node's journal (reset it first)"
        state = rule.when.evaluate(view)
        if state is None:
            return f"interlock {rule.name} cannot be evaluated ({rule.when}): inputs unreadable"
        if state:
            return f"interlock {rule.name} is active ({rule.when}) and drives {output}"
    return ""


def _feedback_value(r: PointRead, bit: int | None) -> float | None:
    if r.value is None:
        return None
    return float((int(r.value) >> bit) & 1) if bit is not None else r.value


def default_test(spec: PointSpec, now: float | None, bit: int | None) -> float:
    if bit is not None:  # a run bit: toggle it
        return 0.0 if now is not None and now >= 0.5 else 1.0
    lo = spec.minimum if spec.minimum is not None else 0.0
    hi = spec.maximum if spec.maximum is not None else lo + 100.0
    span = hi - lo
    ref = now if now is not None else (spec.failsafe if spec.failsafe is not None else lo)
    down = ref - 0.3 * span
    return round(down if down >= lo else ref + 0.3 * span, 3)


@dataclass(frozen=True, slots=True)
class Settings:
    """Tolerances and timing of one run."""

    tolerance_frac: float = 0.02  # of the output's span
    timeout_s: float = 15.0
    sample_s: float = 0.1
    refresh_s: float = 0.5  # rewrite the test value well inside max_hold_s
    settle_samples: int = 3
    steady_s: float = 0.3  # feedback must hold still this long before the test


class LoopChecker:
    """Runs the loop checks of one node config directly against its devices."""

    def __init__(self, cfg: NodeConfig, link: FieldLink, settings: Settings,
                 pairs: Mapping[str, Pairing] | None = None) -> None:
        self.cfg, self.link, self.settings = cfg, link, settings
        self.pairs = dict(pairs or {})
        self.devices = {d.name: d for d in cfg.devices}

    def outputs(self, chosen: list[str] | None = None) -> list[tuple[DeviceConfig, PointSpec]]:
        """The outputs to check, in config order; CommissionError for an unknown name."""
        every = [(d, p) for d in self.cfg.devices for p in d.io_map.outputs]
        if not chosen:
            return every
        by_name = {f"{d.name}.{p.name}": (d, p) for d, p in every}
        for name in chosen:
            if name not in by_name:
                raise CommissionError(f"--output {name}: not an output of {self.cfg.name} "
                                      f"(outputs: {', '.join(by_name)})")
        return [by_name[n] for n in chosen]

    def pairing(self, dev: DeviceConfig, spec: PointSpec) -> Pairing | None:
        """The declared pairing, else the inferred one."""
        return self.pairs.get(f"{dev.name}.{spec.name}") or infer_pairing(dev, spec)

    def _point(self, name: str) -> tuple[DeviceConfig, PointSpec]:
        dev_name, _, point = name.partition(".")
        dev = self.devices.get(dev_name)
        if dev is None:
            raise CommissionError(f"feedback {name}: no device {dev_name!r}")
        try:
            return dev, dev.io_map.point(point)
        except KeyError:
            raise CommissionError(f"feedback {name}: io_map {dev.io_map.model!r} has no "
                                  f"point {point!r}") from None

    async def _read(self, name: str) -> PointRead:
        dev, spec = self._point(name)
        return await self.link.read_point(dev.host, dev.port, dev.unit_id, spec)

    async def check(self, dev: DeviceConfig, spec: PointSpec,
                    progress: Callable[[str], None] = lambda s: None) -> LoopResult:
        """One output: refuse, skip or move it and watch its feedback."""
        name = f"{dev.name}.{spec.name}"
        res = LoopResult(name, "SKIP", "", unit=spec.unit)
        if dev.protocol != "modbus":
            res.reason = f"{dev.protocol} device: direct loop check is Modbus only"
            return res
        if spec.mirrors:
            res.reason = f"device comms-loss parameter (mirrors {spec.mirrors}): no feedback"
            return res
        pairing = self.pairing(dev, spec)
        if pairing is None:
            res.reason = "no feedback declared or inferable (add it to a --pairs file)"
            return res
        fb_dev, fb_spec = self._point(pairing.feedback)
        res.feedback, res.pairing = pairing.feedback, pairing.source
        progress(f"{name}: reading inputs and checking interlocks")
        reads = await read_all(self.link, self.cfg)
        latched, problem = latched_trips(self.cfg)
        why = forbidding(self.cfg, name, Snapshot(self.cfg, reads), latched, problem)
        if why:
            res.status, res.reason = "REFUSED", why
            return res
        fb_now = _feedback_value(reads.get(pairing.feedback, PointRead(None)), pairing.bit)
        if fb_now is not None:
            # A feedback still moving (a drive ramping after power-up) would time the ramp,
            # not the loop: wait until it holds still.
            fb_now = await self._steady(pairing, fb_now)
            if fb_now is None:
                res.status = "FAIL"
                res.reason = (f"feedback {pairing.feedback} never held still before the test "
                              f"({self.settings.timeout_s:g} s)")
                return res
        if fb_now is None:
            res.status = "FAIL"
            res.reason = f"feedback {pairing.feedback} unreadable: " + \
                reads.get(pairing.feedback, PointRead(None, error="not read")).error
            return res
        before = (await self.link.read_point(dev.host, dev.port, dev.unit_id, spec)).value
        if before is None or (spec.minimum is not None and before < spec.minimum) or \
                (spec.maximum is not None and before > spec.maximum):
            before = fb_now if pairing.bit is None else None
        if before is None:
            before = spec.failsafe
        test = pairing.test_value if pairing.test_value is not None else \
            default_test(spec, fb_now if pairing.bit is not None else before, pairing.bit)
        span = (spec.maximum - spec.minimum) if spec.maximum is not None and \
            spec.minimum is not None else 100.0
        tol = pairing.tolerance if pairing.tolerance is not None else (
            0.0 if pairing.bit is not None else max(self.settings.tolerance_frac * span, 1e-6))
        timeout = pairing.timeout_s or self.settings.timeout_s
        res.before, res.test_value, res.tolerance = before, test, tol
        siblings = [f"{d.name}.{fb_spec.name}" for d in self.cfg.devices
                    if d.io_map.model == fb_dev.io_map.model and d.name != fb_dev.name
                    and d.protocol == "modbus"]
        progress(f"{name}: {before} -> {test}, watching {pairing.feedback}")
        try:
            reached, samples, sib = await self._drive(dev, spec, test, test, pairing, tol,
                                                      timeout, siblings)
        except (FieldError, CodecError) as exc:
            res.status, res.reason = "FAIL", f"cannot write {name}: {exc}"
            return res
        res.samples, res.sibling_samples = samples, sib
        if reached is not None:
            res.status, res.response_s = "PASS", round(reached, 3)
            what = pairing.feedback if pairing.bit is None else \
                f"bit {pairing.bit} of {pairing.feedback}"
            res.reason = f"{what} reached {test:g} (tolerance {tol:g}) in {reached:.2f} s"
        else:
            last = samples[-1][1] if samples else None
            res.status = "FAIL"
            res.reason = (f"no response: {pairing.feedback} stayed at {last:g} (commanded "
                          f"{test:g}, tolerance {tol:g}, {timeout:g} s)" if last is not None
                          else f"{pairing.feedback} unreadable during the test")
            moved = [s for s, pts in sib.items()
                     if pts and abs(pts[-1][1] - test) <= max(tol, 0.25 * abs(test - fb_now))
                     and abs(pts[0][1] - test) > max(tol, 0.25 * abs(test - fb_now))]
            if moved:
                res.reason += (f"; {', '.join(moved)} followed the command instead: output "
                               f"miswired (crossed with {moved[0].split('.', 1)[0]})")
        if before is not None:
            progress(f"{name}: restoring {before}")
            res.restored = await self._restore(dev, spec, before, pairing, tol, timeout)
            if not res.restored:
                res.reason += f"; feedback did not return to {before:g} after restore"
        return res

    async def _drive(self, dev: DeviceConfig, spec: PointSpec, value: float, target: float,
                     pairing: Pairing, tol: float, timeout: float, siblings: list[str],
                     ) -> tuple[float | None, list[tuple[float, float]],
                                dict[str, list[tuple[float, float]]]]:
        s = self.settings
        t0 = time.monotonic()
        last_write = -math.inf
        samples: list[tuple[float, float]] = []
        sib: dict[str, list[tuple[float, float]]] = {n: [] for n in siblings}
        first_in: float | None = None
        in_row = 0
        while True:
            now = time.monotonic() - t0
            if now - last_write >= s.refresh_s:
                await self.link.write_point(dev.host, dev.port, dev.unit_id, spec, value)
                last_write = now
            r = await self._read(pairing.feedback)
            fb = _feedback_value(r, pairing.bit)
            t = time.monotonic() - t0
            if fb is not None:
                samples.append((t, fb))
                if abs(fb - target) <= tol:
                    first_in = t if first_in is None else first_in
                    in_row += 1
                else:
                    first_in, in_row = None, 0
            for n in siblings:
                v = _feedback_value(await self._read(n), pairing.bit)
                if v is not None:
                    sib[n].append((t, v))
            if in_row >= s.settle_samples:
                return first_in, samples, sib
            if t >= timeout:
                return None, samples, sib
            await asyncio.sleep(s.sample_s)

    async def _steady(self, pairing: Pairing, value: float) -> float | None:
        """The feedback once two reads `steady_s` apart agree within 0.5 % of its range (or
        exactly, for a bit); None when it keeps moving for timeout_s."""
        _, spec = self._point(pairing.feedback)
        band = 0.0 if pairing.bit is not None or spec.integral else 0.005 * (
            (spec.maximum - spec.minimum) if spec.maximum is not None
            and spec.minimum is not None else 100.0)
        deadline = time.monotonic() + self.settings.timeout_s
        while time.monotonic() < deadline:
            await asyncio.sleep(self.settings.steady_s)
            now = _feedback_value(await self._read(pairing.feedback), pairing.bit)
            if now is None:
                return None
            if abs(now - value) <= band:
                return now
            value = now
        return None

    async def _restore(self, dev: DeviceConfig, spec: PointSpec, before: float,
                       pairing: Pairing, tol: float, timeout: float) -> bool:
        expect = before if pairing.bit is None else float((int(before) >> pairing.bit) & 1)
        try:
            reached, _, _ = await self._drive(dev, spec, before, expect, pairing, tol, timeout,
                                              [])
        except (FieldError, CodecError):
            return False
        return reached is not None
