"""Annex A messages: RFC 7159 JSON in, schema problems in plain words, typed models out.

The A.1/A.2 schemas ship verbatim from the spec (`schemas/*.json`) and are applied with the
draft 2020-12 validator and its format checker, so `date-time` really is checked. Every problem
names the field as a JSON path (`power_profile.peak_power_mw`, `conditions[2]`, `(root)`).
The schemas allow extra properties; the models (models.py, re-exported here) keep only the
fields Annex A defines.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from edge_runtime import PSWD_VERSION
from edge_runtime.messages.models import (
    INFRASTRUCTURE_RESPONSE,
    WORKLOAD_ANNOUNCEMENT,
    ApprovalStatus,
    ConversionError,
    CoolingSystemType,
    FlexibilityParameters,
    GridStatus,
    InfrastructureCapacity,
    InfrastructureResponse,
    Message,
    MessageError,
    PowerProfile,
    PriorityLevel,
    ThermalCoordination,
    ThermalProfile,
    TimingConstraints,
    ValidationProblem,
    WorkloadAnnouncement,
    WorkloadType,
    format_datetime,
    parse_datetime,
)
from edge_runtime.messages.models import show_value as _show

__all__ = [
    "INFRASTRUCTURE_RESPONSE", "MAX_MESSAGE_BYTES", "MESSAGE_TYPES", "PSWD_VERSION",
    "WORKLOAD_ANNOUNCEMENT", "ApprovalStatus", "CoolingSystemType", "FlexibilityParameters",
    "GridStatus", "InfrastructureCapacity", "InfrastructureResponse", "Message", "MessageError",
    "PowerProfile", "PriorityLevel", "ThermalCoordination", "ThermalProfile",
    "TimingConstraints", "ValidationProblem", "WorkloadAnnouncement", "WorkloadType",
    "decode_json", "format_datetime", "json_path", "load_schema", "message_from_dict",
    "parse_as", "parse_datetime", "parse_message", "validate",
]

MAX_MESSAGE_BYTES = 64 * 1024  # an announcement is well under 2 KiB; this bounds parse cost
MESSAGE_TYPES = (WORKLOAD_ANNOUNCEMENT, INFRASTRUCTURE_RESPONSE)
ROOT = "(root)"
M = TypeVar("M", WorkloadAnnouncement, InfrastructureResponse)


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


class _Refused:
    """Stands in for a number the strict parse refused, so a second parse can find it."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _marking(hook: Callable[[str], Any]) -> Callable[[str], Any]:
    def mark(text: str) -> Any:
        try:
            return hook(text)
        except ValueError as exc:
            return _Refused(str(exc))
    return mark


def _where_refused(text: str) -> str:
    """JSON path of the first number (NaN, Infinity, 1e400) the strict parse refused, so the
    refusal names its field; (root) if it cannot be told. Runs only on that error path."""
    try:
        doc = json.loads(text, parse_constant=_marking(_reject_constant),
                         parse_float=_marking(_finite_float), parse_int=_marking(_bounded_int))
    except (ValueError, RecursionError):
        return ROOT
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), doc)]
    while stack:  # depth first, in document order, without recursion
        parts, value = stack.pop()
        if isinstance(value, _Refused):
            return json_path(parts)
        if isinstance(value, dict):
            stack.extend(((*parts, k), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(((*parts, i), v) for i, v in reversed(list(enumerate(value))))
    return ROOT


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
    except _Rejected as exc:  # valid JSON syntax, a number RFC 7159 refuses: name its field
        raise MessageError([ValidationProblem(_where_refused(text),
                                              f"not valid JSON: {exc}")]) from None
    except ValueError as exc:  # int() refusing a 5,000-digit literal
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
    except ConversionError as exc:  # schema-valid but not representable, e.g. year 10000 UTC
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


def parse_as(kind: type[M], doc: Any) -> M:
    """Validate a parsed document that must be a `kind` message (MessageError otherwise)."""
    message = message_from_dict(doc)
    if not isinstance(message, kind):
        raise MessageError([ValidationProblem(
            "message_type", f"must be {kind.MESSAGE_TYPE}, got {_show(message.MESSAGE_TYPE)}")])
    return message


def parse_message(raw: bytes | bytearray | str) -> Message:
    """Parse, validate and type one Annex A message body, or raise MessageError."""
    return message_from_dict(decode_json(raw))


