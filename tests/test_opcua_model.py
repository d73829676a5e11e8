"""The PSWD NodeSet2: generated from the model, imported by asyncua and by node-opcua, browsed back.

Each server is real and each browse goes over opc.tcp: asyncua imports the XML (strict mode,
no importer warning allowed) and an asyncua Client walks every type; node-opcua loads the same
XML beside its standard NodeSet and its own client walks it (tests/opcua_nodeset_import.mjs).
Both walks must equal what edge_runtime/servers/opcua_model.py declares, and the contract other
helpers code against (type names, method arguments) is checked here from literals, not from
the model, so a rename in the model fails a test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, Server, ua

from edge_runtime.servers.opcua_model import (
    BINDINGS,
    IO_MAP_TYPES,
    IO_MAP_UNITS,
    NAMESPACE_URI,
    NODESET_PATH,
    TYPES,
    UNECE_NAMESPACE,
    UNITS,
    Method,
    Obj,
    Var,
    bound_value,
    declarations,
    declared_var,
    point_value,
    unece_unit_id,
)

ROOT = Path(__file__).resolve().parents[1]
NPM = ROOT / "tests" / "npm"
DATA_TYPES = {"Boolean": 1, "UInt16": 5, "UInt32": 7, "UInt64": 9, "Double": 11, "String": 12,
              "DateTime": 13, "LocalizedText": 21, "BaseDataType": 24}

# The contract with the OPC UA server (issue 12): names and argument lists, exactly.
CONTRACT_TYPES = {
    "ControllerType", "FieldDeviceType", "CoolingUnitType", "PumpType", "ValveType",
    "CoolantConnectorType", "LeakDetectorType", "FilterType", "ControlLoopType", "BatteryType",
    "RackType", "TwoPhaseLoopType", "HeatRecoveryType", "PSWDTripAlarmType",
}
CONTRACT_METHODS: dict[str, tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]] = {
    "ResetTrip": ([("Interlock", "String", -1)], [("Reset", "String", 1)]),
    "Force": ([("Point", "String", -1), ("Value", "Double", -1),
               ("ExpirySeconds", "Double", -1), ("Reason", "String", -1)], []),
    "Release": ([("Point", "String", -1)], []),
    "SetMode": ([("Loop", "String", -1), ("Mode", "String", -1), ("Value", "Double", -1)], []),
    "SetSetpoint": ([("Loop", "String", -1), ("Value", "Double", -1)], []),
    "SignedCommand": ([("Kind", "String", -1), ("Envelope", "String", -1)],
                      [("Result", "String", -1)]),
}
CONTRACT_CONTROLLER_VARS = {
    "ScanPeriod": ("Double", -1), "ScanCount": ("UInt64", -1), "ExecTimeP99": ("Double", -1),
    "JitterP99": ("Double", -1), "Overruns": ("UInt64", -1), "ClockOffset": ("Double", -1),
    "Mode": ("String", -1), "WatchdogTripped": ("Boolean", -1),
    "SafeImageActive": ("Boolean", -1), "ActiveTrips": ("String", 1),
}
CONTRACT_MEMBERS = {
    "FieldDeviceType": {"CommState", "Endpoint", "Protocol"},
    "CoolantConnectorType": {"SupplyTemperature", "ReturnTemperature", "Pressure", "FlowRate",
                             "HeatRemoved"},
    "ControlLoopType": {"Mode", "Setpoint", "ProcessValue", "Output", "Kp", "Ki", "Kd"},
    "PumpType": {"Identification", "Operational/Measurements/Speed",
                 "Operational/Measurements/Flow", "Operational/Measurements/Power",
                 "Operational/Measurements/DifferentialPressure"},
    "BatteryType": {"SoC", "W", "WSet"},
}

Members = dict[str, tuple[str, str | None, str | None]]


def _rule(optional: bool) -> str:
    return "Optional" if optional else "Mandatory"


def expected_members(type_name: str) -> Members:
    """path -> (node class, type definition, modelling rule) of a type's own declarations."""
    out: Members = {}
    for path, d in declarations(type_name, inherited=False):
        p = "/".join(path)
        if isinstance(d, Var):
            out[p] = ("Variable", d.variable_type, _rule(d.optional))
            if d.unit or d.unit_per_instance:
                out[f"{p}/EngineeringUnits"] = ("Variable", "PropertyType",
                                                _rule(d.unit_per_instance))
            if d.unit and d.range:
                out[f"{p}/EURange"] = ("Variable", "PropertyType", "Mandatory")
        elif isinstance(d, Obj):
            out[p] = ("Object", d.type_name, _rule(d.optional))
        else:
            out[p] = ("Method", None, "Mandatory")
            for prop, args in (("InputArguments", d.inputs), ("OutputArguments", d.outputs)):
                if args:
                    out[f"{p}/{prop}"] = ("Variable", "PropertyType", "Mandatory")
    return out


def expected_units(type_name: str) -> dict[str, tuple[int, tuple[float, float] | None]]:
    """path -> (EUInformation.UnitId, EURange) of every analog variable with a fixed unit."""
    return {"/".join(p): (unece_unit_id(d.unit), d.range if d.unit else None)
            for p, d in declarations(type_name, inherited=False)
            if isinstance(d, Var) and d.unit}


def method_decls(type_name: str) -> dict[str, Method]:
    """path -> Method of a type's own methods."""
    return {"/".join(p): d for p, d in declarations(type_name, inherited=False)
            if isinstance(d, Method)}


def test_unece_unit_ids_match_the_published_table() -> None:
    # Golden values from the UNECE Rec. 20 -> OPC UA UnitId table (Part 8 annex).
    assert unece_unit_id("CEL") == 4408652
    assert unece_unit_id("BAR") == 4342098
    assert unece_unit_id("KWT") == 4937556
    assert unece_unit_id("P1") == 20529
    assert unece_unit_id("L2") == 19506
    assert UNITS["CEL"].unit_id == 4408652
    with pytest.raises(ValueError, match="UNECE common code"):
        unece_unit_id("°C")
    with pytest.raises(ValueError, match="a property cannot have EngineeringUnits"):
        Var("RatedPower", unit="KWT", prop=True)
    with pytest.raises(ValueError, match="unit 'XYZ' is not in UNITS"):
        Var("Power", unit="XYZ")


def test_the_nodeset_is_valid_against_the_ua_nodeset_schema() -> None:
    xsd_path = NPM / "node_modules" / "node-opcua-nodesets" / "nodesets" / "UANodeSet.xsd"
    if not xsd_path.is_file():
        pytest.fail(f"{xsd_path} is missing (node-opcua's copy of the OPC Foundation schema): "
                    "run make peers")
    try:
        from lxml import etree
    except ImportError:
        pytest.fail("lxml is missing: pip install -e '.[dev]'")
    schema = etree.XMLSchema(etree.parse(str(xsd_path)))
    ok = schema.validate(etree.parse(str(NODESET_PATH)))
    assert ok, [f"line {e.line}: {e.message}" for e in schema.error_log]


def test_io_map_units_and_bindings_name_real_points_and_declared_variables() -> None:
    for unit, code in IO_MAP_UNITS.items():
        assert code in UNITS, unit
    for model, points in BINDINGS.items():
        io_map = tomllib.loads((ROOT / "io_maps" / f"{model}.toml").read_text())
        type_name = IO_MAP_TYPES[model]
        for key, bindings in points.items():
            spec = io_map["points"][key]  # KeyError: the binding names no io_map point
            if "unit" in spec:
                assert spec["unit"] in IO_MAP_UNITS, (model, key)
            is_output = spec.get("class", "parameter") != "parameter"
            for b in bindings:
                var = declared_var(type_name, b.path)
                assert var.writable == (is_output and b.bit is None and not b.states), (
                    model, key, b.path)
                if var.unit and "unit" in spec:
                    assert IO_MAP_UNITS[spec["unit"]] == var.unit, (model, key)


def test_bound_values_take_the_declared_data_types() -> None:
    def fed(model: str, key: str, value: float) -> dict[str, object]:
        type_name = IO_MAP_TYPES[model]
        return {"/".join(b.path): bound_value(b, declared_var(type_name, b.path), value)
                for b in BINDINGS[model][key]}

    assert fed("cdu_pump_vfd", "status_word", 3.0) == {"Operational/Signals/Running": True,
                                                       "Operational/Signals/Fault": True}
    assert fed("cdu_pump_vfd", "status_word", 2.0)["Operational/Signals/Running"] is False
    assert fed("leak_detector", "leak_state", 2.0) == {
        "LeakDetected": False, "CableFault": True, "DetectorState": "Warning"}
    assert fed("cdu_pump_vfd", "fault_code", 2.0) == {"Operational/Signals/FaultCode": 2}
    assert fed("battery_inverter", "w_set_kw", 2.0) == {"WSet": 2.0}
    with pytest.raises(ValueError, match=r"DetectorState: no state for value 7\.0"):
        fed("leak_detector", "leak_state", 7.0)
    with pytest.raises(ValueError, match=r"FaultCode: 2\.5 is not a UInt32"):
        fed("cdu_pump_vfd", "fault_code", 2.5)
    [ena] = BINDINGS["battery_inverter"]["w_set_ena"]
    assert (point_value(ena, True), point_value(ena, False)) == (1.0, 0.0)
    [wset] = BINDINGS["battery_inverter"]["w_set_kw"]
    assert point_value(wset, -12.5) == -12.5
    with pytest.raises(ValueError, match="not writable"):
        point_value(BINDINGS["cdu_pump_vfd"]["status_word"][0], True)


def test_the_committed_nodeset_is_what_the_generator_writes() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_nodeset.py"), "--check"],
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_the_model_keeps_the_contract_names() -> None:
    assert {t.name for t in TYPES} >= CONTRACT_TYPES
    ctrl = dict(("/".join(p), d) for p, d in declarations("ControllerType"))
    for name, (inputs, outputs) in CONTRACT_METHODS.items():
        m = ctrl[name]
        assert isinstance(m, Method)
        assert [(a.name, a.data_type, 1 if a.array else -1) for a in m.inputs] == inputs
        assert [(a.name, a.data_type, 1 if a.array else -1) for a in m.outputs] == outputs
    for name, (dt, rank) in CONTRACT_CONTROLLER_VARS.items():
        v = ctrl[name]
        assert isinstance(v, Var) and (v.data_type, 1 if v.array else -1) == (dt, rank), name
    for type_name, names in CONTRACT_MEMBERS.items():
        assert names <= set(expected_members(type_name)), type_name


STANDARD_PROPS = ("EngineeringUnits", "EURange", "InputArguments", "OutputArguments")


async def _walk(client: Client, node: Node, prefix: str, out: Members, idx: int) -> None:
    mask = ua.NodeClass.Object | ua.NodeClass.Variable | ua.NodeClass.Method
    for child in await node.get_children(refs=ua.ObjectIds.HierarchicalReferences,
                                         nodeclassmask=mask):
        qname = await child.read_browse_name()
        name = qname.Name
        path = f"{prefix}/{name}" if prefix else name
        assert qname.NamespaceIndex == (0 if name in STANDARD_PROPS else idx), path
        cls = await child.read_node_class()
        tdef = None
        if cls != ua.NodeClass.Method:
            tdef = (await client.get_node(await child.read_type_definition())
                    .read_browse_name()).Name
        rules = await child.get_referenced_nodes(refs=ua.ObjectIds.HasModellingRule)
        rule = (await rules[0].read_browse_name()).Name if rules else None
        assert path not in out, f"{path} reached twice"
        out[path] = (cls.name, tdef, rule)
        await _walk(client, child, path, out, idx)


async def _check_type_over_the_wire(client: Client, idx: int, type_name: str) -> None:
    t = next(t for t in TYPES if t.name == type_name)
    node = client.get_node(ua.NodeId(type_name, idx))
    assert await node.read_browse_name() == ua.QualifiedName(type_name, idx)
    supers = await node.get_referenced_nodes(refs=ua.ObjectIds.HasSubtype,
                                             direction=ua.BrowseDirection.Inverse)
    assert [(await s.read_browse_name()).Name for s in supers] == [t.base]
    abstract = await node.read_attribute(ua.AttributeIds.IsAbstract)
    assert abstract.Value.Value is t.abstract
    got: Members = {}
    await _walk(client, node, "", got, idx)
    assert got == expected_members(type_name)
    for path, (unit_id, rng) in expected_units(type_name).items():
        var = await node.get_child([f"{idx}:{p}" for p in path.split("/")])
        eu = await (await var.get_child("0:EngineeringUnits")).read_value()
        assert (eu.NamespaceUri, eu.UnitId) == (UNECE_NAMESPACE, unit_id), path
        assert eu.DisplayName.Text, path
        if rng:
            r = await (await var.get_child("0:EURange")).read_value()
            assert (r.Low, r.High) == rng, path
    for path, m in method_decls(type_name).items():
        method = await node.get_child([f"{idx}:{p}" for p in path.split("/")])
        for prop, args in (("InputArguments", m.inputs), ("OutputArguments", m.outputs)):
            if not args:
                continue
            got_args = await (await method.get_child(f"0:{prop}")).read_value()
            assert [(a.Name, a.DataType, a.ValueRank) for a in got_args] == [
                (a.name, ua.NodeId(DATA_TYPES[a.data_type]), 1 if a.array else -1)
                for a in args], path


@pytest.mark.timeout(90)
@pytest.mark.anyio
async def test_asyncua_imports_the_nodeset_and_a_client_browses_every_type(
        port: int, caplog: pytest.LogCaptureFixture) -> None:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    with caplog.at_level(logging.WARNING, logger="asyncua"):
        added = await server.import_xml(str(NODESET_PATH))  # strict mode: a bad node raises
    importer_warnings = [r.getMessage() for r in caplog.records
                         if r.name.startswith("asyncua.common.xml")]
    assert importer_warnings == []
    assert len(added) > 200
    async with server, Client(f"opc.tcp://127.0.0.1:{port}/", timeout=10) as client:
        idx = await client.get_namespace_index(NAMESPACE_URI)
        for t in TYPES:
            await _check_type_over_the_wire(client, idx, t.name)
        ctrl = client.get_node(ua.NodeId("ControllerType", idx))
        for name, (inputs, outputs) in CONTRACT_METHODS.items():
            method = await ctrl.get_child(f"{idx}:{name}")
            for prop, want in (("InputArguments", inputs), ("OutputArguments", outputs)):
                if want:
                    args = await (await method.get_child(f"0:{prop}")).read_value()
                    assert [(a.Name, a.DataType, a.ValueRank) for a in args] == [
                        (n, ua.NodeId(DATA_TYPES[dt]), r) for n, dt, r in want]


@pytest.mark.anyio
async def test_instances_of_the_types_carry_methods_and_units() -> None:
    server = Server()
    await server.init()
    await server.import_xml(str(NODESET_PATH))
    idx = await server.get_namespace_index(NAMESPACE_URI)
    objects = server.nodes.objects
    node = await objects.add_object(idx, "cdu-01", objecttype=ua.NodeId("ControllerType", idx))
    names = {(await c.read_browse_name()).Name for c in await node.get_children()}
    assert set(CONTRACT_METHODS) | set(CONTRACT_CONTROLLER_VARS) <= names
    loops = await node.get_child(f"{idx}:Loops")
    assert await loops.get_children() == []  # filled by the server, one object per loop
    pump = await node.add_object(idx, "pump1", objecttype=ua.NodeId("PumpType", idx))
    speed = await pump.get_child([f"{idx}:Operational", f"{idx}:Measurements", f"{idx}:Speed"])
    eu = await (await speed.get_child("0:EngineeringUnits")).read_value()
    assert (eu.UnitId, eu.DisplayName.Text) == (unece_unit_id("P1"), "%")
    rng = await (await speed.get_child("0:EURange")).read_value()
    assert (rng.Low, rng.High) == (0.0, 100.0)
    assert {(await c.read_browse_name()).Name for c in await pump.get_children()} >= {
        "CommState", "Endpoint", "Protocol", "Identification", "Operational"}
    loop = await loops.add_object(idx, "supply_temp",
                                  objecttype=ua.NodeId("ControlLoopType", idx))
    setpoint = await loop.get_child(f"{idx}:Setpoint")
    per_instance = await setpoint.get_child("0:EngineeringUnits")
    await per_instance.write_value(ua.EUInformation(
        NamespaceUri=UNECE_NAMESPACE, UnitId=unece_unit_id("CEL"),
        DisplayName=ua.LocalizedText("°C", "en"), Description=ua.LocalizedText("degree Celsius")))
    assert (await per_instance.read_value()).UnitId == 4408652


def _node_opcua_walk(tmp_path: Path, port: int) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (NPM / "node_modules" / "node-opcua").is_dir():
        pytest.fail("node-opcua is missing (Node.js + tests/npm/node_modules): run make peers")
    r = subprocess.run([node, str(ROOT / "tests" / "opcua_nodeset_import.mjs"),
                        str(NODESET_PATH), str(port), str(tmp_path)],
                       capture_output=True, text=True, timeout=75, cwd=ROOT)
    lines = r.stdout.splitlines()
    complaints = [ln for ln in lines if "nodeset" in ln.lower() or "PSWD.NodeSet2" in ln]
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    assert complaints == [], complaints
    [payload] = [ln.removeprefix("PSWD-JSON ") for ln in lines if ln.startswith("PSWD-JSON ")]
    result: dict[str, Any] = json.loads(payload)
    return result


@pytest.mark.timeout(90)
def test_node_opcua_loads_the_nodeset_and_its_client_browses_every_type(
        tmp_path: Path, port: int) -> None:
    got = _node_opcua_walk(tmp_path, port)
    types = got["types"]
    assert set(types) == {t.name for t in TYPES}
    for t in TYPES:
        seen = types[t.name]
        assert (seen["base"], seen["abstract"]) == (t.base, t.abstract), t.name
        assert set(seen["events"]) == set(t.events), t.name
        members = {p: (m["nodeClass"], m["typeDefinition"], m["modellingRule"])
                   for p, m in seen["members"].items()}
        assert members == expected_members(t.name), t.name
        for path, m in seen["members"].items():
            ns = 0 if path.rsplit("/", 1)[-1] in STANDARD_PROPS else got["namespaceIndex"]
            assert m["browseNamespace"] == ns, path
        for path, (unit_id, rng) in expected_units(t.name).items():
            eu = seen["members"][f"{path}/EngineeringUnits"]["value"]
            assert (eu["namespaceUri"], eu["unitId"]) == (UNECE_NAMESPACE, unit_id), path
            if rng:
                r = seen["members"][f"{path}/EURange"]["value"]
                assert (r["low"], r["high"]) == rng, path
    ctrl = types["ControllerType"]["members"]
    for name, (inputs, outputs) in CONTRACT_METHODS.items():
        for prop, want in (("InputArguments", inputs), ("OutputArguments", outputs)):
            if want:
                args = ctrl[f"{name}/{prop}"]["value"]
                assert [(a["name"], a["dataType"], a["valueRank"]) for a in args] == [
                    (n, f"ns=0;i={DATA_TYPES[dt]}", r) for n, dt, r in want], name
    for name, (dt, rank) in CONTRACT_CONTROLLER_VARS.items():
        assert (ctrl[name]["dataType"], ctrl[name]["valueRank"]) == (
            f"ns=0;i={DATA_TYPES[dt]}", rank), name


class _Events:
    """Collects event notifications from an asyncua subscription."""

    def __init__(self) -> None:
        self.got: list[Any] = []
        self.arrived = asyncio.Event()

    def event_notification(self, event: Any) -> None:
        self.got.append(event)
        self.arrived.set()


@pytest.mark.timeout(90)
@pytest.mark.anyio
async def test_a_pswd_trip_alarm_reaches_a_client_with_its_interlock(port: int) -> None:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    await server.import_xml(str(NODESET_PATH))
    idx = await server.get_namespace_index(NAMESPACE_URI)
    node = await server.nodes.objects.add_object(idx, "cdu-01",
                                                 objecttype=ua.NodeId("ControllerType", idx))
    await node.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
    trip_type = ua.NodeId("PSWDTripAlarmType", idx)
    gen = await server.get_event_generator(trip_type, node)
    events = _Events()
    async with server, Client(f"opc.tcp://127.0.0.1:{port}/", timeout=10) as client:
        sub = await client.create_subscription(50, events)
        await sub.subscribe_events(node.nodeid, trip_type)
        # asyncua types each event field from the type's Value, null here: say String
        gen.event.add_property("Interlock", "flow_low_low", ua.VariantType.String)
        gen.event.Message = ua.LocalizedText("flow low-low: pumps tripped")
        await gen.trigger()
        await asyncio.wait_for(events.arrived.wait(), timeout=20)
        await sub.delete()
    [event] = events.got
    assert event.Interlock == "flow_low_low"
    assert event.EventType == trip_type
