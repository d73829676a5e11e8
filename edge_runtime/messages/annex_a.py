"""Annex A messages: RFC 7159 JSON in, schema problems in plain words, typed frozen models out.

The A.1/A.2 schemas ship verbatim from the spec (`schemas/*.json`) and are applied with the
draft 2020-12 validator and its format checker, so `date-time` really is checked. Every problem
names the field as a JSON path (`power_profile.peak_power_mw`, `conditions[2]`, `(root)`).
The schemas allow extra properties; the models keep only the fields Annex A defines.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from importlib import resources
from types import UnionType
from typing import Any, ClassVar, Self, get_args, get_origin, get_type_hints

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

PSWD_VERSION = "1.0"
MAX_MESSAGE_BYTES = 64 * 1024  # an announcement is well under 2 KiB; this bounds parse cost
WORKLOAD_ANNOUNCEMENT = "workload_announcement"
INFRASTRUCTURE_RESPONSE = "infrastructure_response"
MESSAGE_TYPES = (WORKLOAD_ANNOUNCEMENT, INFRASTRUCTURE_RESPONSE)
ROOT = "(root)"


@dataclasses.dataclass(frozen=True, slots=True)
class ValidationProblem:
    """One reason a message is invalid: where (JSON path) and why (plain words)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class MessageError(ValueError):
    """A message that cannot be accepted; `problems` lists every reason."""

    def __init__(self, problems: Iterable[ValidationProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


# --- JSON text -------------------------------------------------------------------------------

_FLOAT_MAX = 1.7976931348623157e308


class _Rejected(ValueError):
    """Raised from json hooks for text that Python accepts but RFC 7159 does not."""


def _reject_constant(name: str) -> Any:
    raise _Rejected(f"{name} is not allowed in RFC 7159 JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf, which no peer can send back
        raise _Rejected(f"number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    # Number fields become floats: refuse what would overflow there (and spare int() a
    # 60,000-digit literal).
    if len(text) > 320 or abs(value := int(text)) > _FLOAT_MAX:
        raise _Rejected(f"number {text[:20]}... is out of range")
    return value


def decode_json(raw: bytes | bytearray | str) -> Any:
    """Parse one message body (UTF-8 bytes or text); any failure is a MessageError."""
    if not isinstance(raw, str):
        raw = bytes(raw)  # a bytearray straight from a socket
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_MESSAGE_BYTES:
        raise MessageError([ValidationProblem(
            ROOT, f"message is {size} bytes, larger than the {MAX_MESSAGE_BYTES}-byte limit")])
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        reason = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        raise MessageError([ValidationProblem(ROOT, reason)]) from None
    try:
        return json.loads(text, parse_constant=_reject_constant,
                          parse_float=_finite_float, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        reason = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except RecursionError:
        reason = "nested too deeply"
    except ValueError as exc:  # _Rejected, or int() refusing a 5,000-digit literal
        reason = str(exc)
    raise MessageError([ValidationProblem(ROOT, f"not valid JSON: {reason}")])


# --- schema validation -----------------------------------------------------------------------

@functools.cache
def load_schema(message_type: str) -> Mapping[str, Any]:
    """The Annex A schema for a message type, loaded from the package data."""
    if message_type not in MESSAGE_TYPES:
        raise KeyError(message_type)
    package = resources.files(__package__ or "edge_runtime.messages")
    text = package.joinpath("schemas", f"{message_type}.json").read_text(encoding="utf-8")
    schema: Mapping[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator(message_type: str) -> Any:
    schema = load_schema(message_type)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def json_path(parts: Iterable[str | int]) -> str:
    """`power_profile.peak_power_mw`, `conditions[2]`, or `(root)` for the document itself."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or ROOT


def _show(value: Any) -> str:
    """A value as an operator would read it: strings quoted, JSON spelling for the rest."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    return "an array" if isinstance(value, list) else "an object"


_TYPE_WORDS = {"object": "an object", "array": "an array", "string": "a string",
               "number": "a number", "integer": "an integer", "boolean": "a boolean"}


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {_show(value)}"
    if isinstance(value, int | float):
        return f"number {_show(value)}"
    if isinstance(value, str):
        return f"string {_show(value)}"
    return _show(value)


def _one_of(options: Sequence[Any]) -> str:
    return ", ".join(str(o) for o in options)


def _describe(error: Any) -> list[ValidationProblem]:
    """Plain words for one jsonschema error (several for `required`: one per missing field)."""
    path, kind, expected, got = json_path(error.absolute_path), error.validator, \
        error.validator_value, error.instance
    if kind == "required":
        return [ValidationProblem(path, f"required field '{name}' missing")
                for name in expected if name not in got]
    if kind == "type":
        words = _TYPE_WORDS.get(expected, str(expected))
        reason = f"must be {words}, got {_type_of(got)}"
    elif kind == "enum":
        reason = f"must be one of {_one_of(expected)}, got {_show(got)}"
    elif kind == "minimum":
        reason = f"must be >= {expected}, got {_show(got)}"
    elif kind == "format" and expected == "date-time":
        reason = f"not a valid RFC 3339 date-time: {_show(got)}"
    else:
        reason = str(error.message)
    return [ValidationProblem(path, reason)]


def _schema_problems(doc: Any, message_type: str) -> list[ValidationProblem]:
    errors = list(_validator(message_type).iter_errors(doc))
    # A wrong type also fails enum; the type is the real cause, so report only that.
    typed = {json_path(e.absolute_path) for e in errors if e.validator == "type"}
    problems: list[ValidationProblem] = []
    for error in errors:
        if error.validator != "type" and json_path(error.absolute_path) in typed:
            continue
        problems.extend(p for p in _describe(error) if p not in problems)
    return sorted(problems, key=lambda p: (p.path, p.reason))


def _message_type(doc: Any) -> tuple[str | None, list[ValidationProblem]]:
    if not isinstance(doc, dict):
        return None, [ValidationProblem(ROOT, f"must be a JSON object, got {_type_of(doc)}")]
    if "message_type" not in doc:
        return None, [ValidationProblem(
            ROOT, f"required field 'message_type' missing (one of {_one_of(MESSAGE_TYPES)})")]
    kind = doc["message_type"]
    if kind not in MESSAGE_TYPES:
        return None, [ValidationProblem(
            "message_type", f"must be one of {_one_of(MESSAGE_TYPES)}, got {_show(kind)}")]
    return kind, []


def _check(doc: Any) -> tuple[Message | None, list[ValidationProblem]]:
    kind, problems = _message_type(doc)
    if kind is None:
        return None, problems
    problems = _schema_problems(doc, kind)
    if problems:
        return None, problems
    cls = WorkloadAnnouncement if kind == WORKLOAD_ANNOUNCEMENT else InfrastructureResponse
    try:
        return cls._build(doc, ()), []
    except _ConversionError as exc:  # schema-valid but not representable, e.g. year 10000 UTC
        return None, [ValidationProblem(json_path(exc.parts), exc.reason)]


def validate(doc: Any) -> list[ValidationProblem]:
    """Every reason a parsed JSON document is not a valid Annex A message; empty when valid."""
    return _check(doc)[1]


def message_from_dict(doc: Any) -> Message:
    """Validate a parsed document and build its typed message, or raise MessageError."""
    message, problems = _check(doc)
    if message is None:
        raise MessageError(problems)
    return message


def parse_message(raw: bytes | bytearray | str) -> Message:
    """Parse, validate and type one Annex A message body, or raise MessageError."""
    return message_from_dict(decode_json(raw))


# --- typed models ----------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)", re.ASCII)


class _ConversionError(ValueError):
    def __init__(self, parts: tuple[str | int, ...], reason: str) -> None:
        super().__init__(reason)
        self.parts, self.reason = parts, reason


def parse_datetime(text: str) -> datetime:
    """An RFC 3339 date-time as an aware UTC datetime (fractions past microseconds dropped)."""
    m = _RFC3339.fullmatch(text)
    if m is None:  # the format checker's regex ends in `$`, which lets a trailing newline by
        raise ValueError(f"not a valid RFC 3339 date-time: {_show(text)}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m[7] or "0")[:6].ljust(6, "0"))
    zone = m[8].upper()
    offset = timedelta() if zone == "Z" else (
        (1 if zone[0] == "+" else -1) * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        local = datetime(year, month, day, hour, minute, second, micro, timezone(offset))
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"not a representable date-time (years 0001-9999 UTC): "
                         f"{_show(text)}") from None


def format_datetime(value: datetime) -> str:
    """An aware datetime as RFC 3339 UTC text, e.g. `2026-05-01T12:00:00.250Z`."""
    utc = value.astimezone(UTC)
    spec = "seconds" if not utc.microsecond else (
        "milliseconds" if not utc.microsecond % 1000 else "microseconds")
    return utc.isoformat(timespec=spec).replace("+00:00", "Z")


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:  # resolving string annotations is slow; once per class
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _unwrap_optional(tp: Any) -> Any:
    if isinstance(tp, UnionType):
        return next(a for a in get_args(tp) if a is not type(None))
    return tp


class _Model:
    """from_dict/to_dict driven by the dataclass field types, so the models stay declarative."""

    __slots__ = ()

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if isinstance(value, datetime):
                if value.tzinfo is None:  # a naive time would silently mean local time
                    raise ValueError(f"{field.name}: datetime must be timezone-aware")
                object.__setattr__(self, field.name, value.astimezone(UTC))

    @classmethod
    def _build(cls, doc: Mapping[str, Any], parts: tuple[str | int, ...]) -> Self:
        kwargs: dict[str, Any] = {}
        hints = _hints(cls)
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            if field.name in doc:
                tp = _unwrap_optional(hints[field.name])
                kwargs[field.name] = _convert(tp, doc[field.name], (*parts, field.name))
        return cls(**kwargs)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Self:
        """Build from a JSON object that already passed validation (nested parts too)."""
        return cls._build(doc, ())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict that validates against the schema; None fields are omitted."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if value is not None:
                out[field.name] = _unconvert(value)
        return out


def _convert(tp: Any, value: Any, parts: tuple[str | int, ...]) -> Any:
    if isinstance(tp, type) and issubclass(tp, _Model):
        return tp._build(value, parts)
    if tp is datetime:
        try:
            return parse_datetime(value)
        except ValueError as exc:
            raise _ConversionError(parts, str(exc)) from None
    if get_origin(tp) is tuple:
        return tuple(value)
    if tp is float:
        return float(value)
    if tp is int:  # draft 2020-12 counts 5.0 as an integer
        return int(value)
    return tp(value)  # str, bool and the StrEnums


def _unconvert(value: Any) -> Any:
    if isinstance(value, _Model):
        return value.to_dict()
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


class _Message(_Model):
    """A top-level message: from_dict validates, to_json emits RFC 7159 text."""

    __slots__ = ()
    MESSAGE_TYPE: ClassVar[str]

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Self:
        """Validate a parsed document and build this message type, or raise MessageError."""
        message = message_from_dict(doc)
        if not isinstance(message, cls):
            raise MessageError([ValidationProblem(
                "message_type", f"must be {cls.MESSAGE_TYPE}, got {_show(message.MESSAGE_TYPE)}")])
        return message

    def to_dict(self) -> dict[str, Any]:
        """The full message: PSWD_version and message_type first, None fields omitted."""
        return {"PSWD_version": PSWD_VERSION, "message_type": self.MESSAGE_TYPE,
                **super().to_dict()}

    def to_json(self) -> str:
        """Compact RFC 7159 text; NaN or infinity is refused rather than sent."""
        return json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":"))


class WorkloadType(StrEnum):
    """A.1 `workload_type`."""

    AI_TRAINING = "ai_training"
    AI_INFERENCE = "ai_inference"
    HPC = "hpc"
    TRADITIONAL_COMPUTE = "traditional_compute"


class PriorityLevel(StrEnum):
    """A.1 `flexibility_parameters.priority_level`."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class ApprovalStatus(StrEnum):
    """A.2 `approval_status`: the tri-state answer of 6.1.3 a)."""

    APPROVED = "approved"
    APPROVED_WITH_CONDITIONS = "approved_with_conditions"
    REJECTED = "rejected"


class CoolingSystemType(StrEnum):
    """A.2 `thermal_coordination.cooling_system_type`."""

    AIR = "air"
    SINGLE_PHASE_LIQUID = "single_phase_liquid"
    TWO_PHASE_LIQUID = "two_phase_liquid"


@dataclasses.dataclass(frozen=True, slots=True)
class PowerProfile(_Model):
    """A.1 `power_profile`, MW and seconds."""

    peak_power_mw: float
    baseline_power_mw: float
    ramp_rate_mw_per_sec: float
    duration_estimate_sec: int | None = None
    temporal_resolution_ms: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ThermalProfile(_Model):
    """A.1 `thermal_profile`."""

    heat_generation_kw: float | None = None
    preferred_operating_temp_c: float | None = None
    critical_temp_threshold_c: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class FlexibilityParameters(_Model):
    """A.1 `flexibility_parameters`."""

    throttling_capability: bool | None = None
    delay_tolerance_sec: int | None = None
    migration_capable: bool | None = None
    priority_level: PriorityLevel | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TimingConstraints(_Model):
    """A.1 `timing_constraints`, aware UTC datetimes."""

    earliest_start_time: datetime | None = None
    latest_completion_time: datetime | None = None
    deadline: datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class WorkloadAnnouncement(_Message):
    """Annex A.1 workload announcement."""

    MESSAGE_TYPE: ClassVar[str] = WORKLOAD_ANNOUNCEMENT
    timestamp: datetime
    workload_id: str
    workload_type: WorkloadType
    power_profile: PowerProfile
    thermal_profile: ThermalProfile | None = None
    flexibility_parameters: FlexibilityParameters | None = None
    timing_constraints: TimingConstraints | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class InfrastructureCapacity(_Model):
    """A.2 `infrastructure_capacity`."""

    available_power_mw: float | None = None
    cooling_capacity_kw: float | None = None
    battery_storage_available: bool | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ThermalCoordination(_Model):
    """A.2 `thermal_coordination`."""

    cooling_system_type: CoolingSystemType | None = None
    heat_recovery_available: bool | None = None
    municipal_heat_integration: bool | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class GridStatus(_Model):
    """A.2 `grid_status`."""

    carbon_intensity_g_co2_kwh: float | None = None
    renewable_energy_available: bool | None = None
    demand_response_required: bool | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class InfrastructureResponse(_Message):
    """Annex A.2 infrastructure response."""

    MESSAGE_TYPE: ClassVar[str] = INFRASTRUCTURE_RESPONSE
    timestamp: datetime
    workload_id: str
    approval_status: ApprovalStatus
    approved_power_mw: float | None = None
    infrastructure_capacity: InfrastructureCapacity | None = None
    thermal_coordination: ThermalCoordination | None = None
    grid_status: GridStatus | None = None
    conditions: tuple[str, ...] | None = None


Message = WorkloadAnnouncement | InfrastructureResponse
