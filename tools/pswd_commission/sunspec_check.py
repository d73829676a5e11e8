"""SunSpec scale factors: what the device publishes against what the io_map assumes.

A SunSpec device publishes a power-of-ten exponent (sunssf) beside each scaled value; our
io_maps carry a static `scale`. For a device with the "SunS" marker this walks the model
chain the device publishes, finds each io_map point's SunSpec definition by its offset in its
model (pysunspec2's model definitions), reads the point's scale-factor register and compares
10^sf, converted from the SunSpec unit to the io_map's, with the io_map's scale. A mismatch is
a wrongly scaled point: it reads off by exactly that power of ten.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sunspec2 import device as sunspec_device
from sunspec2.mdef import ModelDefinitionError

from edge_runtime.config.schema import DeviceConfig, Table
from pswd_commission.fieldlink import FieldError, FieldLink

SUNS = (0x5375, 0x6E53)
BASES = (40000, 0, 50000)
# SunSpec unit -> io_map unit -> factor (value in io_map unit = value in SunSpec unit x factor)
UNIT_FACTORS: dict[tuple[str, str], float] = {
    ("W", "kW"): 1e-3, ("W", "W"): 1.0, ("W", "MW"): 1e-6, ("Wh", "kWh"): 1e-3,
    ("Wh", "Wh"): 1.0, ("VA", "kVA"): 1e-3, ("var", "kvar"): 1e-3, ("Var", "kvar"): 1e-3,
    ("A", "A"): 1.0, ("V", "V"): 1.0, ("Hz", "Hz"): 1.0, ("Pct", "%"): 1.0, ("C", "degC"): 1.0,
    ("AH", "Ah"): 1.0, ("S", "s"): 1.0, ("Secs", "s"): 1.0,
}


def _offsets(mdef: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Top-level points of a model by register offset (ID = 0)."""
    out: dict[int, dict[str, Any]] = {}
    offset = 0
    for point in mdef["group"]["points"]:
        out[offset] = point
        offset += int(point.get("size", 1))
    return out


def speaks_sunspec(dev: DeviceConfig, values: Mapping[str, float | None]) -> bool:
    """True when the verify reads show the marker's first word at a SunSpec base address."""
    return any(p.table is Table.HOLDING and p.address in BASES and values.get(p.name) == SUNS[0]
               for p in dev.io_map.points)


async def check_scale_factors(link: FieldLink, dev: DeviceConfig) -> dict[str, str]:
    """{point name: why its io_map scale disagrees with the device}; {} when all agree or the
    device speaks no SunSpec."""
    async def read(addr: int, count: int) -> list[int]:
        return await link.read(dev.host, dev.port, dev.unit_id, Table.HOLDING, addr, count)

    base = None
    for b in BASES:
        try:
            if tuple(await read(b, 2)) == SUNS:
                base = b
                break
        except FieldError:
            continue
    if base is None:
        return {}
    models: list[tuple[int, int, int]] = []  # (id, start address, length)
    addr = base + 2
    for _ in range(64):
        try:
            mid, length = await read(addr, 2)
        except FieldError:
            break
        if mid == 0xFFFF:
            break
        models.append((mid, addr, length))
        addr += 2 + length
    problems: dict[str, str] = {}
    for spec in dev.io_map.points:
        if spec.table is not Table.HOLDING:
            continue
        model = next((m for m in models if m[1] <= spec.address < m[1] + 2 + m[2]), None)
        if model is None:
            continue
        try:
            mdef = sunspec_device.get_model_def(model[0])
        except ModelDefinitionError:  # a vendor model pysunspec2 does not define
            continue
        offsets = _offsets(mdef)
        point = offsets.get(spec.address - model[1])
        if point is None or not point.get("sf"):
            continue
        sf_offset = next((o for o, p in offsets.items() if p["name"] == point["sf"]), None)
        factor = UNIT_FACTORS.get((str(point.get("units", "")), spec.unit))
        if sf_offset is None or factor is None:
            continue
        try:
            (raw,) = await read(model[1] + sf_offset, 1)
        except FieldError:
            continue
        sf = raw - 0x10000 if raw >= 0x8000 else raw
        if raw == 0x8000:  # "not implemented"
            continue
        expected = 10.0 ** sf * factor
        if not math.isclose(expected, spec.encoding.scale, rel_tol=1e-6):
            ratio = expected / spec.encoding.scale
            problems[spec.name] = (
                f"the device publishes {point['sf']} = {sf} (model {model[0]}): one count is "
                f"{expected:g} {spec.unit}, the io_map's scale is {spec.encoding.scale:g}: "
                f"reads {ratio:g} x off (wrongly scaled)")
    return problems
