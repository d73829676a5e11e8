"""The status documents of the GET endpoints, built from the process image. Sans-IO except
PowerHistory.run, the 100 ms sampler.

    /PSWD/power/realtime   every power input (unit W, kW, MW): the latest sample, and the
                           samples taken every 100 ms over the last `window_s` (spec 7.1.2 a)
    /PSWD/thermal/status   temperature, flow, pressure and level inputs; the thermal outputs
                           (pump, valve, heater, heat recovery, setpoint, isolation) with who
                           drives each; the thermal control blocks; engaged and latched trips
    /PSWD/grid/status      power and battery inputs; battery outputs; the smoothing block;
                           on the site node, the coordinator's grid state and headroom

Timestamps are RFC 3339 UTC with milliseconds (the source timestamp of each sample).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from edge_runtime import PSWD_VERSION
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Sample

RESOLUTION_S = 0.1  # spec Table 1 and 7.1.2 a: power at 100 ms
POWER_UNITS = frozenset({"W", "kW", "MW"})
THERMAL_UNITS = frozenset({"degC", "K", "L/min", "m3/h", "bar", "kPa", "Pa"})
THERMAL_CLASSES = frozenset({"pump", "valve", "heater", "heat_recovery", "setpoint",
                             "isolation"})
GRID_CLASSES = frozenset({"battery"})
GRID_BLOCKS = frozenset({"smoothing"})


def iso_ms(ts: float) -> str:
    """RFC 3339 UTC with milliseconds ("2026-12-06T03:50:42.123Z")."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _value(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def sample_doc(sample: Sample, unit: str) -> dict[str, Any]:
    """One sample as JSON: value (null when bad), unit, quality, source timestamp."""
    return {"value": _value(sample.value), "unit": unit, "quality": sample.quality.value,
            "timestamp": iso_ms(sample.ts) if sample.ts > 0 else None,
            **({"reason": sample.reason} if sample.reason else {})}


def power_points(image: ProcessImage) -> list[str]:
    """Every input of the image measured in W, kW or MW."""
    return sorted(n for n, i in image.inputs_info.items() if i.unit in POWER_UNITS)


def _inputs(image: ProcessImage, names: Iterable[str]) -> dict[str, Any]:
    return {n: sample_doc(image.inputs[n], image.inputs_info[n].unit) for n in names
            if n in image.inputs}


def _outputs(image: ProcessImage, classes: frozenset[str],
             owner: Mapping[str, str]) -> dict[str, Any]:
    return {n: {"value": _value(image.outputs[n]), "unit": i.unit, "class": i.spec.output_class,
                "quality": image.output_quality[n].value, "driven_by": owner.get(n, "control")}
            for n, i in sorted(image.outputs_info.items()) if i.spec.output_class in classes}


class PowerHistory:
    """Power inputs sampled every 100 ms: the last `window_s` seconds of them."""

    def __init__(self, image: ProcessImage, wall: Callable[[], float], *,
                 window_s: float = 10.0, period_s: float = RESOLUTION_S) -> None:
        self.image = image
        self.wall = wall
        self.period_s = period_s
        self.points = power_points(image)
        self._rows: deque[tuple[float, tuple[float | None, ...]]] = deque(
            maxlen=max(1, round(window_s / period_s)))

    @property
    def window_s(self) -> float:
        """How far back the history reaches."""
        return (self._rows.maxlen or 1) * self.period_s

    def sample(self) -> None:
        """Take one row: the latched value of every power input now."""
        inputs = self.image.inputs
        self._rows.append((self.wall(), tuple(
            _value(inputs[n].value) if n in inputs and inputs[n].quality.usable else None
            for n in self.points)))

    async def run(self) -> None:
        """Sample every period on absolute deadlines (no drift) until cancelled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            self.sample()
            deadline += self.period_s
            delay = deadline - loop.time()
            if delay < -self.period_s:  # a stalled loop: skip, never burst to catch up
                deadline, delay = loop.time(), 0.0
            await asyncio.sleep(max(0.0, delay))

    def rows(self, window_s: float) -> list[dict[str, Any]]:
        """The rows of the last `window_s` seconds, oldest first."""
        if not self._rows:
            return []
        since = self._rows[-1][0] - window_s
        return [{"timestamp": iso_ms(t), "values": dict(zip(self.points, vals, strict=True))}
                for t, vals in self._rows if t > since]


def envelope(node: str, role: str, now: float) -> dict[str, Any]:
    """The fields every status document starts with."""
    return {"PSWD_version": PSWD_VERSION, "node": node, "role": role, "timestamp": iso_ms(now)}


def realtime_doc(head: dict[str, Any], image: ProcessImage, history: PowerHistory,
                 window_s: float) -> dict[str, Any]:
    """GET /PSWD/power/realtime."""
    return {**head, "resolution_ms": round(history.period_s * 1000),
            "points": _inputs(image, history.points),
            "samples": history.rows(window_s)}


def thermal_doc(head: dict[str, Any], image: ProcessImage, owner: Mapping[str, str],
                control: Mapping[str, Any], safety: Mapping[str, Any]) -> dict[str, Any]:
    """GET /PSWD/thermal/status."""
    names = sorted(n for n, i in image.inputs_info.items() if i.unit in THERMAL_UNITS)
    return {**head, "points": _inputs(image, names),
            "outputs": _outputs(image, THERMAL_CLASSES, owner),
            "control": {k: v for k, v in control.items() if k not in GRID_BLOCKS},
            "interlocks": {"engaged": list(safety.get("engaged", ())),
                           "latched": list(safety.get("latched", ()))}}


def grid_doc(head: dict[str, Any], image: ProcessImage, owner: Mapping[str, str],
             control: Mapping[str, Any], site: Any | None) -> dict[str, Any]:
    """GET /PSWD/grid/status; `site` is the coordinator's SiteSnapshot on the site node."""
    battery_devices = {i.device for i in image.outputs_info.values()
                       if i.spec.output_class in GRID_CLASSES}
    names = sorted(n for n, i in image.inputs_info.items()
                   if i.unit in POWER_UNITS or i.device in battery_devices)
    doc = {**head, "points": _inputs(image, names),
           "outputs": _outputs(image, GRID_CLASSES, owner),
           "control": {k: v for k, v in control.items() if k in GRID_BLOCKS}}
    if site is not None:
        doc["site"] = {"grid": asdict(site.grid), "power_limit_kw": site.power_limit_kw,
                       "measured_load_kw": site.measured_load_kw,
                       "reserved_kw": site.reserved_kw,
                       "power_headroom_kw": site.power_headroom_kw,
                       "battery_available": site.battery_available,
                       "power_known": site.power_known}
    return doc
