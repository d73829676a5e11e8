"""Load io_maps/<model>.toml into an IoMap, checking types, access rules and overlaps."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from edge_runtime.config.codec import CodecError, DataType, Encoding, encode
from edge_runtime.config.reader import ErrorLog, Section, read_toml
from edge_runtime.config.schema import OUTPUT_CLASSES, PROTOCOLS, Access, IoMap, PointSpec, Table

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TYPES = [t.name.lower() for t in DataType]
_DIRECTIONS = ("low", "high", "zero")  # safe_direction: which way is safer (safety/safe_image)


def default_io_maps_dir() -> Path:
    """The io_maps/ folder of this checkout (the package is installed in editable mode)."""
    return Path(__file__).resolve().parents[2] / "io_maps"


def load_io_map(path: Path, errors: ErrorLog) -> IoMap | None:
    """Parse one io_map file; problems go to `errors`, None if the file is unusable."""
    data = read_toml(path, errors)
    if data is None:
        return None
    file = str(path)
    top = Section(file, "", data, errors)
    dev = top.sub("device", required=True)
    model = dev.get_str("model")
    description = dev.get_str("description", "")
    protocol = dev.get_str("protocol", "modbus", choices=PROTOCOLS)
    dev.finish()
    protocol = protocol if protocol in PROTOCOLS else "modbus"
    if isinstance(model, str) and model != path.stem:
        dev.error("model", f"must equal the file name {path.stem!r}, got {model!r}")
    points_table = top.table("points", required=True)
    top.finish()

    points: list[PointSpec] = []
    for name, body in points_table.items():
        sec = Section(file, f"points.{name}", body, errors)
        if not _NAME.match(name):
            sec.error("(name)", "point names are lower_snake_case")
        point = _read_point(name, sec, protocol)
        sec.finish()
        if point is not None:
            points.append(point)
    if not points:
        errors.add(file, "points", "(table)", "an io_map needs at least one point")
    if protocol == "modbus":
        _check_overlaps(file, points, errors)
        points.sort(key=lambda p: (p.table.value, p.address))
    else:
        _check_refs(file, points, errors)
    _check_mirrors(file, points, errors)
    return IoMap(model=str(model), description=str(description), points=tuple(points),
                 source=path, protocol=protocol)


def _read_point(name: str, sec: Section, protocol: str = "modbus") -> PointSpec | None:
    # A Modbus point lives at a register; any other at a `ref` (an OPC UA NodeId, a sensor
    # node's telemetry name), its `type` still deciding what values it may take.
    modbus = protocol == "modbus"
    table = sec.get_str("table", "holding", choices=[t.value for t in Table]) if modbus \
        else "holding"
    address = sec.get_int("address", minval=0, maxval=65535) if modbus else 0
    ref = "" if modbus else sec.get_str("ref")
    type_name = sec.get_str("type", choices=_TYPES)
    access_name = sec.get_str("access", "r", choices=[a.value for a in Access])
    scale = sec.get_float("scale", 1.0)
    offset = sec.get_float("offset", 0.0)
    byte_swap = sec.get_bool("byte_swap", False)
    word_swap = sec.get_bool("word_swap", False)
    unit = sec.get_str("unit", "")
    description = sec.get_str("description", "")
    minimum = sec.get_float("min", None)
    maximum = sec.get_float("max", None)
    failsafe = sec.get_float("failsafe", None)
    max_hold_s = sec.get_float("max_hold_s", None, above=0.0, maxval=3600.0)
    output_class = sec.get_str("class", None, choices=OUTPUT_CLASSES)
    safe_direction = sec.get_str("safe_direction", None, choices=_DIRECTIONS)
    mirrors = sec.get_str("mirrors", None)

    if scale == 0.0:
        sec.error("scale", "must not be 0")
    try:
        dtype = DataType.from_name(type_name) if isinstance(type_name, str) else None
        access = Access(access_name)
        tbl = Table(table)
    except (KeyError, ValueError):
        return None  # already reported by the choice check
    if dtype is None or not isinstance(address, int):
        return None
    if word_swap and dtype.count == 1:
        sec.error("word_swap", f"only applies to 32-bit types, not {type_name}")
    if address + dtype.count > 65536:
        sec.error("address", f"{type_name} at {address} runs past register 65535")
    if access.writable:
        if tbl is Table.INPUT:
            sec.error("access", "input registers are read-only; outputs live in the holding table")
        if failsafe is None:
            sec.error("failsafe", "required for an output (value driven when control is lost)")
        if max_hold_s is None and mirrors is None:
            sec.error("max_hold_s", "required for an output (longest a value may stand)")
        if mirrors is not None and max_hold_s is not None:
            sec.error("max_hold_s", "a comms-loss register (mirrors) is a device parameter: "
                                    "it does not fall back")
        if output_class is None:  # the rights table grants per class (core/authority.py)
            sec.error("class", f"required for an output (what it moves: one of "
                               f"{', '.join(OUTPUT_CLASSES)})")
    else:
        if failsafe is not None:
            sec.error("failsafe", "only outputs (access w or rw) have a failsafe")
        if max_hold_s is not None:
            sec.error("max_hold_s", "only outputs (access w or rw) have max_hold_s")
        if output_class is not None:
            sec.error("class", "only outputs (access w or rw) have a class")
        for key, given in (("safe_direction", safe_direction), ("mirrors", mirrors)):
            if given is not None:
                sec.error(key, "only outputs (access w or rw) have it")
    if minimum is not None and maximum is not None and minimum >= maximum:
        sec.error("min", f"must be < max ({minimum:g} >= {maximum:g})")
    encoding = Encoding(dtype, scale=scale, offset=offset, byte_swap=byte_swap,
                        word_swap=word_swap)
    # A failsafe the register cannot hold would only fail when it is needed most.
    for key, bound in (("failsafe", failsafe), ("min", minimum), ("max", maximum)):
        if bound is not None and scale != 0.0:
            try:
                encode(bound, encoding)
            except CodecError as exc:
                sec.error(key, f"does not fit the register: {exc}")
    if failsafe is not None:
        lo = minimum if minimum is not None else float("-inf")
        hi = maximum if maximum is not None else float("inf")
        if not lo <= failsafe <= hi:
            sec.error("failsafe", f"{failsafe:g} is outside min..max")
    return PointSpec(
        name=name,
        table=tbl,
        address=address,
        encoding=encoding,
        access=access,
        unit=unit,
        description=description,
        minimum=minimum,
        maximum=maximum,
        failsafe=failsafe,
        max_hold_s=max_hold_s,
        output_class=output_class if isinstance(output_class, str) and access.writable else "",
        safe_direction=safe_direction if safe_direction in _DIRECTIONS else "low",
        mirrors=mirrors if isinstance(mirrors, str) else "",
        ref=ref if isinstance(ref, str) else "",
    )


def _check_mirrors(file: str, points: list[PointSpec], errors: ErrorLog) -> None:
    """A comms-loss register must be able to hold every value of the output it stands for."""
    by_name = {p.name: p for p in points}
    for p in points:
        if not p.mirrors:
            continue
        target = by_name.get(p.mirrors)
        where = f"points.{p.name}"
        if target is None or not target.access.writable:
            errors.add(file, where, "mirrors", f"must name an output of this io_map, "
                                               f"got {p.mirrors!r}")
        elif target.mirrors:
            errors.add(file, where, "mirrors", f"{p.mirrors!r} is itself a comms-loss register")
        elif ((p.minimum is not None and (target.minimum is None or target.minimum < p.minimum))
              or (p.maximum is not None
                  and (target.maximum is None or target.maximum > p.maximum))):
            errors.add(file, where, "mirrors", f"range {p.minimum}..{p.maximum} cannot hold "
                       f"every value of {p.mirrors} ({target.minimum}..{target.maximum})")


def _check_refs(file: str, points: list[PointSpec], errors: ErrorLog) -> None:
    seen: dict[str, str] = {}
    for p in points:
        if not p.ref:
            errors.add(file, f"points.{p.name}", "ref", "must not be empty")
        elif p.ref in seen:
            errors.add(file, f"points.{p.name}", "ref",
                       f"{p.ref!r} is already point {seen[p.ref]!r}")
        else:
            seen[p.ref] = p.name


def _check_overlaps(file: str, points: list[PointSpec], errors: ErrorLog) -> None:
    by_table = sorted(points, key=lambda p: (p.table.value, p.address))
    for prev, cur in itertools.pairwise(by_table):
        if prev.table is cur.table and cur.address < prev.end:
            errors.add(file, f"points.{cur.name}", "address",
                       f"registers {cur.address}..{cur.end - 1} overlap point {prev.name!r} "
                       f"({prev.address}..{prev.end - 1}) in the {cur.table.value} table")
