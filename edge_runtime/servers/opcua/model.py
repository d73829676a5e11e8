"""The node's instances in the PSWD information model: Objects/PSWD/<node> and its devices.

The types come from the shipped NodeSet2 (opcua_models/PSWD.NodeSet2.xml, imported with
`import_xml`): one ControllerType object for the node, one object per device typed by its
io_map model (FieldDeviceType otherwise), holding one AnalogItemType variable per point with
EngineeringUnits (UNECE code) and EURange from the io_map's unit/min/max. Where the NodeSet or
one of its types is missing, the same objects are made of base types and the controller's
methods are added here with the model's signatures, so the server still serves the plant
(status says which).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asyncua import ua
from asyncua.ua.uaerrors import UaError

from edge_runtime.core.image import PointInfo, ProcessImage
from edge_runtime.servers.opcua.uatypes import Node, ObjectIds, Server, nodeid
from edge_runtime.servers.opcua_model import (
    BINDINGS,
    CONTROL_LOOP_TYPE,
    CONTROLLER_TYPE,
    FIELD_DEVICE_TYPE,
    IO_MAP_TYPES,
    IO_MAP_UNITS,
    LOOPS_FOLDER,
    NAMESPACE_URI,
    NODESET_PATH,
    UNECE_NAMESPACE,
    UNITS,
    Binding,
    Var,
    declared_var,
)
from edge_runtime.servers.opcua_model import METHODS as MODEL_METHODS

log = logging.getLogger(__name__)

NAMESPACE = NAMESPACE_URI
# ControlLoopType variables kept up to date (once a second, from the block's status).
LOOP_VARS = ("Mode", "Setpoint", "ProcessValue", "Output")
# ControllerType variables the server keeps up to date (the others stay empty).
CONTROLLER_VARS = ("ScanPeriod", "ScanCount", "ExecTimeP99", "JitterP99", "Overruns", "Mode",
                   "WatchdogTripped", "SafeImageActive", "ActiveTrips")
NODESET = NODESET_PATH

# io_map model -> object type of the PSWD model; any other model is a FieldDeviceType.
DEVICE_TYPES: Mapping[str, str] = IO_MAP_TYPES
_VT = {"String": ua.VariantType.String, "Double": ua.VariantType.Double}
ArgDefs = tuple[tuple[str, ua.VariantType, bool], ...]
# Method -> (input arguments, output arguments), from the model's declarations.
METHODS: Mapping[str, tuple[ArgDefs, ArgDefs]] = {
    m.name: (tuple((a.name, _VT[a.data_type], a.array) for a in m.inputs),
             tuple((a.name, _VT[a.data_type], a.array) for a in m.outputs))
    for m in MODEL_METHODS.values()
}


def eu_information(unit: str) -> ua.EUInformation:
    """EngineeringUnits for an io_map unit (UnitId -1 for a unit the model does not code)."""
    code = IO_MAP_UNITS.get(unit)
    known = UNITS.get(code) if code else None
    if known is None:
        return ua.EUInformation(NamespaceUri=UNECE_NAMESPACE, UnitId=-1,
                                DisplayName=ua.LocalizedText(unit),
                                Description=ua.LocalizedText(unit))
    return ua.EUInformation(NamespaceUri=UNECE_NAMESPACE, UnitId=known.unit_id,
                            DisplayName=ua.LocalizedText(known.symbol),
                            Description=ua.LocalizedText(known.name))


@dataclass(frozen=True, slots=True)
class Derived:
    """A variable the device's type declares, fed by one io_map point (opcua_model.BINDINGS)."""

    point: str
    binding: Binding
    var: Var
    nodeid: ua.NodeId


@dataclass(slots=True)
class AddressSpace:
    """What the server built: namespace, controller object, methods, point variables."""

    ns: int
    controller: Node
    methods: dict[str, Node] = field(default_factory=dict)
    points: dict[str, ua.NodeId] = field(default_factory=dict)  # "device.point" -> variable
    outputs: dict[ua.NodeId, str] = field(default_factory=dict)  # writable variable -> point
    devices: dict[str, Node] = field(default_factory=dict)
    derived: list[Derived] = field(default_factory=list)
    controller_vars: dict[str, ua.NodeId] = field(default_factory=dict)
    loops: dict[str, dict[str, ua.NodeId]] = field(default_factory=dict)  # loop -> var -> id
    comm_state: dict[str, ua.NodeId] = field(default_factory=dict)  # device -> CommState
    typed: bool = False  # the PSWD NodeSet's types were used
    missing_types: list[str] = field(default_factory=list)


async def find_type(server: Server, ns: int, name: str) -> Node | None:
    """An ObjectType (event types included) of the PSWD namespace by BrowseName, or None.
    The model gives its types the NodeIds `s=<Type>` (servers/opcua_model.py)."""
    node = server.get_node(nodeid(name, ns))
    try:
        bname = await node.read_browse_name()
    except UaError:
        return None
    return node if bname.Name == name else None


async def _child(parent: Node, ns: int, name: str) -> Node | None:
    try:
        return await parent.get_child(f"{ns}:{name}")
    except UaError:
        return None


async def _folder(parent: Node, ns: int, name: str, ident: str) -> Node:
    """The folder `name` the type instantiated under `parent`, made when the type lacks it."""
    return await _child(parent, ns, name) or await parent.add_folder(
        nodeid(ident, ns), ua.QualifiedName(name, ns))


async def _analog(server: Server, parent: Node, ns: int, node_name: str, info: PointInfo,
                  writable: bool) -> Node:
    spec = info.spec
    vid = nodeid(f"{node_name}.{info.name}", ns)
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = vid
    item.BrowseName = ua.QualifiedName(spec.name, ns)
    item.NodeClass = ua.NodeClass.Variable
    item.ParentNodeId = parent.nodeid
    item.ReferenceTypeId = nodeid(ObjectIds.HasComponent)
    item.TypeDefinition = nodeid(ObjectIds.AnalogUnitRangeType)
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText(spec.name)
    attrs.Description = ua.LocalizedText(getattr(spec, "description", "") or info.name)
    attrs.DataType = nodeid(ObjectIds.Double)
    attrs.Value = ua.Variant(None, ua.VariantType.Null)
    attrs.ValueRank = ua.ValueRank.Scalar
    access = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask
    if writable:
        access |= ua.AccessLevel.CurrentWrite.mask
    attrs.AccessLevel = attrs.UserAccessLevel = access
    item.NodeAttributes = attrs
    (res,) = await server.iserver.isession.add_nodes([item])
    res.StatusCode.check()
    var = server.get_node(vid)
    await var.add_property(ns, "EngineeringUnits", ua.Variant(eu_information(spec.unit)),
                           datatype=nodeid(ObjectIds.EUInformation))
    lo = spec.minimum if spec.minimum is not None else -math.inf
    hi = spec.maximum if spec.maximum is not None else math.inf
    await var.add_property(ns, "EURange", ua.Variant(ua.Range(Low=float(lo), High=float(hi))),
                           datatype=nodeid(ObjectIds.Range))
    return var


def _args(defs: tuple[tuple[str, ua.VariantType, bool], ...]) -> list[ua.Argument]:
    out = []
    for name, vt, array in defs:
        arg = ua.Argument(Name=name, DataType=nodeid(vt.value),
                          ValueRank=ua.ValueRank.OneDimension if array else ua.ValueRank.Scalar,
                          Description=ua.LocalizedText(name))
        if array:
            arg.ArrayDimensions = [0]
        out.append(arg)
    return out


async def build(server: Server, node_name: str, image: ProcessImage,
                models: Mapping[str, str], nodeset: Path | None = NODESET,
                loops: Sequence[str] = ()) -> AddressSpace:
    """Import the model and build this node's objects; `models` maps device -> io_map model,
    `loops` names the control loops (ControlLoopType objects under Loops)."""
    typed = nodeset is not None and nodeset.exists()
    if typed:
        assert nodeset is not None
        await server.import_xml(str(nodeset))
        ns = await server.get_namespace_index(NAMESPACE)
    else:
        log.warning("OPC UA: %s not found: objects of base types, methods added in code",
                    nodeset)
        ns = await server.register_namespace(NAMESPACE)
    objects = server.nodes.objects
    root = await _child(objects, ns, "PSWD") or await objects.add_folder(
        nodeid("PSWD", ns), ua.QualifiedName("PSWD", ns))
    missing: list[str] = []
    ctype = await find_type(server, ns, CONTROLLER_TYPE)
    if ctype is None:
        missing.append(CONTROLLER_TYPE)
    controller = await root.add_object(nodeid(node_name, ns), ua.QualifiedName(node_name, ns),
                                       objecttype=ctype.nodeid if ctype else None)
    space = AddressSpace(ns, controller, typed=typed, missing_types=missing)
    for name, (inputs, outputs) in METHODS.items():
        method = await _child(controller, ns, name)
        if method is None:
            method = await controller.add_method(
                nodeid(f"{node_name}.{name}", ns), ua.QualifiedName(name, ns), None,
                _args(inputs), _args(outputs))
        space.methods[name] = method
    type_cache: dict[str, Node | None] = {}
    for device, model in models.items():
        tname = DEVICE_TYPES.get(model, FIELD_DEVICE_TYPE)
        if tname not in type_cache:
            type_cache[tname] = await find_type(server, ns, tname)
            if type_cache[tname] is None and tname not in missing:
                missing.append(tname)
        dtype = type_cache[tname]
        space.devices[device] = await controller.add_object(
            nodeid(f"{node_name}.{device}", ns), ua.QualifiedName(device, ns),
            objecttype=dtype.nodeid if dtype else None)
    names = sorted({*image.inputs_info, *image.outputs_info})
    for full in names:
        info = image.inputs_info.get(full) or image.outputs_info[full]
        parent = space.devices[info.device]
        writable = full in image.outputs_info
        var = await _child(parent, ns, info.spec.name)
        if var is None:
            var = await _analog(server, parent, ns, node_name, info, writable)
        space.points[full] = var.nodeid
        if writable:
            space.outputs[var.nodeid] = full
    for device, model in models.items():
        dtype_name = DEVICE_TYPES.get(model)
        if dtype_name is None or type_cache.get(dtype_name) is None:
            continue
        for key, bindings in BINDINGS.get(model, {}).items():
            full = f"{device}.{key}"
            if full not in space.points:
                continue
            for b in bindings:
                try:
                    decl = declared_var(dtype_name, b.path)
                    target = await space.devices[device].get_child([f"{ns}:{p}" for p in b.path])
                except (KeyError, UaError):
                    continue  # an optional declaration this instance does not have
                space.derived.append(Derived(full, b, decl, target.nodeid))
    for device, obj in space.devices.items():
        if (var := await _child(obj, ns, "CommState")) is not None:
            space.comm_state[device] = var.nodeid
    for name in CONTROLLER_VARS:
        if (var := await _child(controller, ns, name)) is not None:
            space.controller_vars[name] = var.nodeid
    if loops:
        folder = await _folder(controller, ns, LOOPS_FOLDER, f"{node_name}.Loops")
        ltype = await find_type(server, ns, CONTROL_LOOP_TYPE)
        for loop in loops:
            obj = await folder.add_object(nodeid(f"{node_name}.Loops.{loop}", ns),
                                          ua.QualifiedName(loop, ns),
                                          objecttype=ltype.nodeid if ltype else None)
            space.loops[loop] = {name: var.nodeid for name in LOOP_VARS
                                 if (var := await _child(obj, ns, name)) is not None}
    return space
