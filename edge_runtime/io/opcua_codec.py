"""OPC UA point codec (sans-IO): io_map refs -> NodeIds, DataValues -> Samples, outputs -> Variants.

A point's `ref` is one of
- a NodeId in OPC UA's string form: "ns=2;s=BESS.SoC", "i=2258", "ns=3;g=...", "ns=3;b=...";
- the same with the namespace URI, "nsu=urn:vendor:bess;s=BESS.SoC": servers may renumber
  their namespaces between restarts, the URI stays; resolved against the server's namespace
  array on every connect;
- a browse path from the Root folder, "/Objects/2:BESS/2:SoC" (each element "index:Name", or
  "Name" in namespace 0), resolved with TranslateBrowsePathsToNodeIds on every connect.

Values on the wire are engineering values already; the io_map's `scale` and `offset` still
apply (a PLC that publishes 0.1 degC counts), and its `type` decides what may be written. An
output is written as the server's own DataType where it names a numeric built-in type (read on
connect), else as the io_map type (int16 -> Int16, ..., float32 -> Float).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from asyncua import ua
from asyncua.ua.object_ids import ObjectIds

from edge_runtime.config.codec import CodecError, DataType, decode_raw
from edge_runtime.config.schema import DeviceConfig, PointSpec
from edge_runtime.core.points import Quality, Sample

IO_TYPES = {
    DataType.INT16: ua.VariantType.Int16, DataType.UINT16: ua.VariantType.UInt16,
    DataType.INT32: ua.VariantType.Int32, DataType.UINT32: ua.VariantType.UInt32,
    DataType.FLOAT32: ua.VariantType.Float,
}
# Numeric built-in types a server may declare for a variable (DataType i=1..11 in ns 0).
_INT_RANGES = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1), ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1), ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1), ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1), ua.VariantType.UInt64: (0, 2**64 - 1),
}
_NUMERIC = {ua.VariantType.Boolean, ua.VariantType.Float, ua.VariantType.Double, *_INT_RANGES}


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed io_map ref: a NodeId, a NodeId under a namespace URI, or a browse path."""

    text: str
    nodeid: ua.NodeId | None = None  # a plain NodeId: usable as is
    uri: str = ""  # "nsu=": the namespace URI and the identifier part ("s=BESS.SoC")
    ident: str = ""
    path: tuple[ua.QualifiedName, ...] = field(default=())  # a browse path from Root


def parse_ref(text: str) -> Ref:
    """Parse one ref; ValueError says what is wrong with it."""
    if text.startswith("/"):
        names = [e for e in text.split("/")[1:]]
        if not names or any(not e for e in names):
            raise ValueError(f"browse path {text!r} has an empty element")
        try:
            path = tuple(ua.QualifiedName.from_string(e) for e in names)
        except Exception as exc:  # asyncua raises several kinds for bad text
            raise ValueError(f"browse path {text!r}: {exc}") from None
        return Ref(text, path=path)
    if text.startswith("nsu="):
        uri, sep, ident = text[4:].partition(";")
        if not uri or not sep:
            raise ValueError(f"{text!r}: give 'nsu=URI;s=...' (or i=, g=, b=)")
        _parse_nodeid(f"ns=1;{ident}", text)  # the identifier part must parse on its own
        return Ref(text, uri=uri, ident=ident)
    return Ref(text, nodeid=_parse_nodeid(text, text))


def _parse_nodeid(text: str, shown: str) -> ua.NodeId:
    try:
        nodeid = ua.NodeId.from_string(text)
    except Exception as exc:  # UaStringParsingError and friends
        raise ValueError(f"{shown!r} is not a NodeId ({exc}); give e.g. 'ns=2;s=Name', "
                         f"'nsu=URI;i=5' or a browse path '/Objects/2:Folder/2:Name'") from None
    if isinstance(nodeid, ua.ExpandedNodeId) and (nodeid.NamespaceUri or nodeid.ServerIndex):
        raise ValueError(f"{shown!r}: a server index or namespace URI here is not supported")
    return nodeid


def device_refs(device: DeviceConfig) -> dict[str, Ref]:
    """Every point's parsed ref; ValueError names the device, the point and the ref."""
    refs: dict[str, Ref] = {}
    for p in device.io_map.points:
        try:
            refs[p.name] = parse_ref(p.ref)
        except ValueError as exc:
            raise ValueError(f"device {device.name!r} (io_map {device.io_map.model!r}): point "
                             f"{p.name!r}: ref {exc}") from None
    return refs


def resolve_uri(ref: Ref, namespaces: Sequence[str]) -> ua.NodeId | None:
    """The NodeId of an "nsu=" ref on a server with this namespace array; None if absent."""
    try:
        index = list(namespaces).index(ref.uri)
    except ValueError:
        return None
    return ua.NodeId.from_string(f"ns={index};{ref.ident}")


def browse_path(ref: Ref) -> ua.BrowsePath:
    """The TranslateBrowsePathsToNodeIds request for a path ref (from the Root folder)."""
    elements = [ua.RelativePathElement(
        ReferenceTypeId=ua.NodeId(ua.Int32(ObjectIds.HierarchicalReferences)),
        IsInverse=cast(ua.Boolean, False), TargetName=name)  # Boolean is a bare marker class
        for name in ref.path]
    return ua.BrowsePath(StartingNode=ua.NodeId(ua.Int32(ObjectIds.RootFolder)),
                         RelativePath=ua.RelativePath(Elements=elements))


def server_type(datatype: ua.DataValue) -> ua.VariantType | None:
    """The numeric built-in type a DataType attribute names, None for anything else."""
    value = datatype.Value.Value if datatype.Value is not None else None
    if (isinstance(value, ua.NodeId) and value.NamespaceIndex == 0
            and isinstance(value.Identifier, int)):
        try:
            vtype = ua.VariantType(value.Identifier)
        except ValueError:
            return None
        return vtype if vtype in _NUMERIC else None
    return None


def status_text(code: ua.StatusCode | None) -> str:
    """A status code's name, e.g. 'BadNodeIdUnknown'."""
    if code is None:
        return "Good"
    try:
        return str(code.name)
    except Exception:  # an unknown code: its number
        return f"0x{code.value:08X}"


def _epoch(stamp: dt.datetime | None) -> float | None:
    if stamp is None:
        return None
    if stamp.tzinfo is None:  # asyncua decodes UTC without a zone
        stamp = stamp.replace(tzinfo=dt.UTC)
    ts = stamp.timestamp()
    return ts if ts > 0 else None  # DateTime 0 (1601) means "not given"


def to_sample(dv: ua.DataValue, spec: PointSpec, now: float,
              previous: Sample | None = None) -> Sample:
    """A point's Sample from its DataValue: value scaled, quality from the status code,
    timestamp the source's (else the server's, else `now`)."""
    ts = _epoch(dv.SourceTimestamp) or _epoch(dv.ServerTimestamp) or now
    code = dv.StatusCode
    if code is not None and code.is_bad():
        return Sample.bad(f"{spec.ref}: {status_text(code)}", ts,
                          previous.value if previous is not None else None)
    raw = dv.Value.Value if dv.Value is not None else None
    if isinstance(raw, bool):
        raw = int(raw)
    if not isinstance(raw, int | float):
        return Sample.bad(f"{spec.ref}: not a number ({type(raw).__name__})", ts)
    enc = spec.encoding
    value: float = raw if enc.scale == 1.0 and enc.offset == 0.0 else raw * enc.scale + enc.offset
    if not math.isfinite(value):
        return Sample.bad(f"{spec.ref}: not a finite number", ts)
    if code is not None and code.is_uncertain():
        return Sample(value, Quality.UNCERTAIN, ts, f"{spec.ref}: {status_text(code)}")
    return Sample(value, Quality.GOOD, ts)


def to_variant(spec: PointSpec, words: Sequence[int],
               vtype: ua.VariantType | None) -> ua.Variant:
    """The Variant that writes an output whose value the OutputSchedule holds as `words`
    (range already checked against the io_map); CodecError when the type cannot hold it."""
    raw = decode_raw(words, spec.encoding)  # the value in the io_map's raw type
    vtype = vtype or IO_TYPES[spec.encoding.dtype]
    if vtype is ua.VariantType.Boolean:
        if raw not in (0, 1):
            raise CodecError(f"{raw:g} is not a Boolean (0 or 1)")
        return ua.Variant(bool(raw), vtype)
    if vtype in _INT_RANGES:
        lo, hi = _INT_RANGES[vtype]
        whole = round(raw)
        if not lo <= whole <= hi:
            raise CodecError(f"{raw:g} is outside the server's {vtype.name} {lo}..{hi}")
        return ua.Variant(whole, vtype)
    return ua.Variant(float(raw), vtype)


def by_nodeid(resolved: Mapping[str, ua.NodeId]) -> dict[ua.NodeId, list[str]]:
    """Point names per NodeId (two refs may resolve to one node)."""
    out: dict[ua.NodeId, list[str]] = {}
    for name, nodeid in resolved.items():
        out.setdefault(nodeid, []).append(name)
    return out
