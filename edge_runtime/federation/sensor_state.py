"""What a sensor node's messages mean for the rack's image (sans-IO): liveness from its births
and deaths, aliases from its telemetry birth, values and their quality from its batches,
staleness from the time handed in. federation/sensor_node.py does the I/O; the rules are in
its module docstring ("Quality").
"""

from __future__ import annotations

import math
from collections import Counter

import cbor2

from edge_runtime.config.codec import CodecError, encode
from edge_runtime.config.schema import DeviceConfig, PointSpec
from edge_runtime.core.points import Quality, Sample
from edge_runtime.federation.state import parse_state
from edge_runtime.messages.telemetry import (
    KEY_KIND,
    KIND_BIRTH,
    Birth,
    TelemetryError,
    decode_batch,
    decode_birth,
)

NOT_BORN = "waiting for the sensor node's birth"
NO_BROKER = "broker not connected: the sensor node cannot be heard"


def _is_birth(payload: bytes) -> bool:
    try:
        obj = cbor2.loads(payload)
    except Exception:  # cbor2 fails many ways; the decoder then says how
        return False
    return isinstance(obj, dict) and obj.get(KEY_KIND) == KIND_BIRTH


class SensorNodeState:
    """What one sensor node's messages say (sans-IO). Each method returns the samples to
    publish, by io_map point name; ValueError (TelemetryError) for a message not taken."""

    def __init__(self, device: DeviceConfig, sensor: str, stale_s: float) -> None:
        self.device, self.sensor, self.stale_s = device, sensor, stale_s
        self.specs: dict[str, PointSpec] = {p.ref: p for p in device.io_map.inputs}
        self.online = False
        self.session: int | None = None
        self.birth: Birth | None = None
        self.last_seq: int | None = None
        self.fresh_at = 0.0  # monotonic time of the last batch taken, of the birth, or start
        self.heard = False  # any news yet (the image holds NEVER_READ until then)
        self.why = NOT_BORN  # why every input is BAD; "" while batches flow
        self.good: dict[str, float] = {}  # last good value per point in this session
        self.last_value: dict[str, float | None] = {}
        self.counts: Counter[str] = Counter()

    def all_bad(self, why: str, wall: float) -> dict[str, Sample]:
        """Every input BAD for `why` (the last value kept for display only)."""
        self.why, self.heard = why, True
        return {p.name: Sample.bad(why, wall, self.last_value.get(p.name))
                for p in self.specs.values()}

    def state(self, payload: bytes, now: float, wall: float) -> dict[str, Sample]:
        """A birth or death on the state topic."""
        st = parse_state(payload)
        if st.node != self.sensor:
            raise ValueError(f"state: node: expected {self.sensor!r}, got {st.node!r}")
        if not st.online:
            self.online = False
            self.counts["deaths"] += 1
            return self.all_bad(f"sensor node offline: {st.reason or 'no reason given'}", wall)
        self.counts["births"] += 1
        self.online, self.fresh_at = True, now
        if st.session != self.session:
            self.session, self.last_seq = st.session, None
            self.good.clear()
            if self.birth is None or self.birth.session != st.session:
                self.birth = Birth(st.session, 0, st.points) if st.points else None
        return self.all_bad("born; no telemetry batch yet", wall)

    def telemetry(self, payload: bytes, now: float, wall: float) -> dict[str, Sample]:
        """A CBOR birth (aliases of a session) or a batch."""
        if _is_birth(payload):
            self.birth = decode_birth(payload)
            return {}
        birth = self.birth
        if not self.online:
            raise TelemetryError("batch while the sensor node is not born (no online state)")
        if birth is None or birth.session != self.session:
            raise TelemetryError(f"batch before the birth of session {self.session}")
        batch = decode_batch(payload, birth=birth)  # unknown aliases refused here
        if batch.historical:
            self.counts["historical"] += 1
            return {}
        if self.last_seq is not None and batch.seq <= self.last_seq:
            self.counts["out_of_order"] += 1
            return {}
        self.last_seq, self.fresh_at, self.why = batch.seq, now, ""
        self.counts["batches"] += 1
        names = birth.by_alias()
        out: dict[str, Sample] = {}
        for s in batch.samples:  # in frame order: the latest sample of a point wins
            spec = self.specs.get(names[s.alias].name)
            if spec is not None:
                out[spec.name] = self._sample(spec, s.value, s.quality, wall)
        declared = {p.name for p in birth.points}
        for ref, spec in self.specs.items():
            if spec.name in out:
                continue
            if ref not in declared:
                out[spec.name] = Sample.bad(f"{ref!r} is not in the sensor node's birth", wall)
            elif spec.name in self.good:  # sent on change only: still the value it last sent
                out[spec.name] = Sample(self.good[spec.name], Quality.GOOD, wall)
        return out

    def _sample(self, spec: PointSpec, value: float | None, quality: Quality,
                wall: float) -> Sample:
        self.good.pop(spec.name, None)
        self.last_value[spec.name] = value
        why = _invalid(spec, value, quality)
        if why:
            self.counts["bad_values"] += 1
            return Sample.bad(why, wall, value)
        assert value is not None
        if quality is Quality.GOOD:
            self.good[spec.name] = value
        return Sample(value, quality, wall)

    def check_stale(self, now: float, wall: float, *, connected: bool = True) -> dict[str, Sample]:
        """Every input BAD once no batch came for stale_s (after the birth or the last one);
        BAD saying why once nothing at all was heard for stale_s after the start (until then
        the inputs stay unread, inside the safety layer's start-up grace)."""
        if not self.heard:
            if now - self.fresh_at <= self.stale_s:
                return {}
            return self.all_bad(NOT_BORN if connected else NO_BROKER, wall)
        if not self.online or self.why.startswith("stale") or now - self.fresh_at <= self.stale_s:
            return {}
        self.counts["stale"] += 1
        return self.all_bad(f"stale: no telemetry batch for {(now - self.fresh_at) * 1e3:.0f} ms "
                            f"(timeout_ms {self.stale_s * 1e3:g})", wall)

    def link_down(self, wall: float) -> dict[str, Sample]:
        """This driver's broker connection is gone: nothing is known until it is back."""
        self.online = False
        return self.all_bad("broker connection lost: the sensor node cannot be heard", wall)


def _invalid(spec: PointSpec, value: float | None, quality: Quality) -> str:
    """Why a received value cannot be used ('' if it can)."""
    if quality is Quality.BAD or value is None:
        return "the sensor node reports it bad"
    if not math.isfinite(value):
        return "not a finite number"
    if spec.integral and not value.is_integer():
        return f"{value:g} is not a whole number ({spec.encoding.dtype.name.lower()})"
    try:
        encode(value, spec.encoding)
    except CodecError as exc:
        return f"{value:g} does not fit {spec.encoding.dtype.name.lower()}: {exc}"
    lo, hi = spec.minimum, spec.maximum
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return f"{value:g} {spec.unit} outside its range {lo}..{hi}: flagged, not used".replace(
            "  ", " ")
    return ""
