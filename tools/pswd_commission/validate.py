"""`validate`: lint a node config and its io_maps, for the bench and for CI.

First the runtime's own loader (edge_runtime.assembly.loader.load_node_config): everything it
refuses (overlapping or out-of-table addresses, unit-id collisions, thresholds out of order,
outputs without a class, failsafe or max_hold_s, bad [rights]) is an error, one line each,
`file: [section] key: reason`. A config that loads is then checked for what loads but cannot
be right: thresholds or interlock values outside a point's range, unknown engineering units,
outputs nobody may force or trips nobody may reset under the node's rights table.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_runtime.assembly.config import NodeConfig
from edge_runtime.assembly.loader import load_node_config
from edge_runtime.config.iomap import default_io_maps_dir, load_io_map
from edge_runtime.config.reader import ConfigError, ErrorLog
from edge_runtime.config.schema import PointSpec
from edge_runtime.core.authority import USER_ROLES
from edge_runtime.safety.limits import Compare, thresholds_of

# Engineering units the io_maps may use; anything else is a typo until someone adds it here.
KNOWN_UNITS = frozenset({"", "degC", "K", "bar", "kPa", "Pa", "%", "L/min", "m3", "m3/h",
                         "kW", "kWh", "W", "MW", "V", "A", "Hz", "h", "s", "ms", "m", "rpm",
                         "kg/s", "kvar", "kVA"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: error (the node must not run like this) or warning."""

    severity: str  # "error" | "warning"
    where: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """JSON form."""
        return asdict(self)


def _split(line: str) -> Finding:
    # Loader lines are `file: [section] key: reason`; keep the location apart for the table.
    head, sep, reason = line.rpartition(": ")
    return Finding("error", head if sep else "", reason if sep else line)


def _maps_dir_of(path: Path) -> Path:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        raw = data.get("node", {}).get("io_maps_dir")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        raw = None
    return (path.parent / raw).resolve() if isinstance(raw, str) else default_io_maps_dir()


def lint_io_maps(directory: Path) -> list[Finding]:
    """Every io_map in a directory, loaded with the runtime's checks; unknown units warned."""
    findings: list[Finding] = []
    files = sorted(directory.glob("*.toml"))
    if not files:
        return [Finding("error", str(directory), "no io_map files (*.toml) here")]
    for file in files:
        errors = ErrorLog()
        io_map = load_io_map(file, errors)
        findings += [_split(line) for line in errors.lines]
        if io_map is not None:
            findings += [Finding("warning", f"{file}: [points.{p.name}] unit",
                                 f"unknown engineering unit {p.unit!r}")
                         for p in io_map.points if p.unit not in KNOWN_UNITS]
    return findings


def _range(spec: PointSpec) -> str:
    return f"{spec.minimum:g}..{spec.maximum:g} {spec.unit}".rstrip()


def _outside(spec: PointSpec, value: float) -> bool:
    return ((spec.minimum is not None and value < spec.minimum)
            or (spec.maximum is not None and value > spec.maximum))


def lint_node(cfg: NodeConfig) -> list[Finding]:
    """What a loadable config can still get wrong."""
    file = str(cfg.source)
    findings: list[Finding] = []
    specs = {f"{d.name}.{p.name}": p for d in cfg.devices for p in d.io_map.points}
    for point, limits in cfg.safety.limits.items():
        spec = specs.get(point)
        if spec is None:
            continue
        for level, value in thresholds_of(limits):
            if _outside(spec, value):
                findings.append(Finding(
                    "error", f"{file}: [limits {point}] {level}",
                    f"{value:g} is outside the point's range {_range(spec)}: it can never "
                    f"be reached (wrong unit?)"))
        if not spec.unit:
            findings.append(Finding("warning", f"{file}: [limits {point}]",
                                    "limits on a point without an engineering unit"))
    for dev in cfg.devices:
        findings += [Finding("warning", f"{file}: [devices.{dev.name}] io_map {dev.io_map.model}",
                             f"point {p.name!r}: unknown engineering unit {p.unit!r}")
                     for p in dev.io_map.points if p.unit not in KNOWN_UNITS]
    for rule in cfg.safety.rules:
        cond = rule.when
        if isinstance(cond, Compare) and cond.point in specs and _outside(specs[cond.point],
                                                                          cond.value):
            findings.append(Finding(
                "warning", f"{file}: [safety.interlocks.{rule.name}] when",
                f"{cond} compares with a value outside {cond.point}'s range "
                f"{_range(specs[cond.point])}"))
        if rule.latch and not any(cfg.rights.allows(r, "reset_trip") for r in rule.reset_roles):
            findings.append(Finding(
                "error", f"{file}: [safety.interlocks.{rule.name}] reset_role",
                f"none of {', '.join(rule.reset_roles)} may reset_trip under [rights]: "
                f"the latch could never be reset"))
        for out in rule.outputs:
            spec = specs.get(out)
            if spec is not None and not spec.output_class:
                findings.append(Finding("error", f"{file}: [safety.interlocks.{rule.name}]",
                                        f"output {out} has no class"))
    for name, spec in specs.items():
        if not spec.access.writable:
            continue
        if not any(cfg.rights.allows(r, "force", spec.output_class) for r in USER_ROLES):
            findings.append(Finding(
                "warning", f"{file}: [rights]",
                f"no role may force {name} (class {spec.output_class}): it cannot be "
                f"loop-checked through the node"))
    return findings


def validate(path: Path, *, io_maps: bool = True) -> tuple[list[Finding], NodeConfig | None]:
    """Lint a node config (and, with io_maps, every io_map of its directory)."""
    findings: list[Finding] = []
    cfg: NodeConfig | None = None
    try:
        cfg = load_node_config(path)
    except ConfigError as exc:
        findings += [_split(line) for line in exc.lines]
    if cfg is not None:
        findings += lint_node(cfg)
    if io_maps:
        maps_dir = cfg.io_maps_dir if cfg is not None else _maps_dir_of(path)
        if maps_dir.is_dir():
            seen = {f.where + f.message for f in findings}
            findings += [f for f in lint_io_maps(maps_dir) if f.where + f.message not in seen]
    return findings, cfg
