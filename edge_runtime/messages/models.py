"""Annex A typed models: frozen dataclasses with from_dict/to_dict, aware UTC timestamps.

Conversion is driven by the dataclass field types, so each model is a plain declaration in
schema order. `from_dict` on a nested model expects input that already passed validation;
on a whole message it validates first (see annex_a.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from types import UnionType
from typing import Any, ClassVar, Self, get_args, get_origin, get_type_hints

from edge_runtime import PSWD_VERSION

WORKLOAD_ANNOUNCEMENT = "workload_announcement"
INFRASTRUCTURE_RESPONSE = "infrastructure_response"


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


def show_value(value: Any) -> str:
    """A value as an operator would read it: strings quoted, JSON spelling for the rest."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    return "an array" if isinstance(value, list) else "an object"


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)", re.ASCII)


class ConversionError(ValueError):
    """A schema-valid value the model cannot hold (a date-time beyond year 9999 in UTC)."""

    def __init__(self, parts: tuple[str | int, ...], reason: str) -> None:
        super().__init__(reason)
        self.parts, self.reason = parts, reason


def parse_datetime(text: str) -> datetime:
    """An RFC 3339 date-time as an aware UTC datetime (fractions past microseconds dropped)."""
    m = _RFC3339.fullmatch(text)
    if m is None:  # the format checker's regex ends in `$`, which lets a trailing newline by
        raise ValueError(f"not a valid RFC 3339 date-time: {show_value(text)}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m[7] or "0")[:6].ljust(6, "0"))
    zone = m[8].upper()
    offset = timedelta() if zone == "Z" else (
        (1 if zone[0] == "+" else -1) * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        local = datetime(year, month, day, hour, minute, second, micro, timezone(offset))
    except ValueError:  # 30 February, hour 24: parse_datetime is also used unvalidated
        raise ValueError(f"not a valid RFC 3339 date-time: {show_value(text)}") from None
    try:
        return local.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is year 0 in UTC
        raise ValueError(f"not a representable date-time (years 0001-9999 UTC): "
                         f"{show_value(text)}") from None


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


_DATETIME_FIELDS: dict[type, tuple[str, ...]] = {}


def _datetime_fields(cls: type) -> tuple[str, ...]:
    """The fields of a model declared as datetimes: the only ones __post_init__ converts.
    Once per class; walking dataclasses.fields() on every construction cost ~8 us a model,
    four models an announcement on the coordinator's hot path."""
    names = _DATETIME_FIELDS.get(cls)
    if names is None:
        hints = _hints(cls)
        names = _DATETIME_FIELDS[cls] = tuple(
            f.name for f in dataclasses.fields(cls)
            if _unwrap_optional(hints[f.name]) is datetime)
    return names


def _unwrap_optional(tp: Any) -> Any:
    if isinstance(tp, UnionType):
        return next(a for a in get_args(tp) if a is not type(None))
    return tp


class _Model:
    """from_dict/to_dict driven by the dataclass field types, so the models stay declarative."""

    __slots__ = ()

    def __post_init__(self) -> None:
        for name in _datetime_fields(type(self)):
            value = getattr(self, name)
            if isinstance(value, datetime):
                if value.tzinfo is None:  # a naive time would silently mean local time
                    raise ValueError(f"{name}: datetime must be timezone-aware")
                object.__setattr__(self, name, value.astimezone(UTC))

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
            raise ConversionError(parts, str(exc)) from None
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
    """A top-level message: to_json emits RFC 7159 text. Build one from untrusted input with
    edge_runtime.messages.annex_a (parse_message, message_from_dict, parse_as), which checks
    it against the schema first; the inherited from_dict trusts its input."""

    __slots__ = ()
    MESSAGE_TYPE: ClassVar[str]

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
