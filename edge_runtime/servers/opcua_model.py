"""The PSWD OPC UA information model as data: namespace, types, methods, units, NodeSet path.

One description serves three readers: tools/gen_nodeset.py writes opcua_models/PSWD.NodeSet2.xml
from it, the OPC UA server instantiates the types by these BrowseNames and binds the process
image to the variables they declare, and the tests compare what a server shows after importing
the XML with what is declared here. Pure data and pure functions: nothing here imports asyncua.

NodeIds of the type nodes are strings, `ns=1;s=<Type>` and `ns=1;s=<Type>.<Child>...`, so they
stay the same whenever the model grows (numeric ids would shift with every insertion).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NAMESPACE_URI = "http://pswd-edge.org/UA/"
MODEL_VERSION = "1.0.0"
MODEL_PUBLICATION_DATE = "2026-12-06T00:00:00Z"
NODESET_PATH = Path(__file__).resolve().parents[2] / "opcua_models" / "PSWD.NodeSet2.xml"
UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"

CONTROLLER_TYPE = "ControllerType"
FIELD_DEVICE_TYPE = "FieldDeviceType"
CONTROL_LOOP_TYPE = "ControlLoopType"
TRIP_ALARM_TYPE = "PSWDTripAlarmType"  # its field "Interlock" is a String: with asyncua set it
# by event.add_property("Interlock", name, VariantType.String), as its declaration has no value
CONTROL_MODES = ("Automatic", "Override", "Manual", "Disabled")  # Redfish Control.ControlMode
COMM_STATES = ("Online", "Degraded", "Offline")  # FieldDeviceType.CommState
# ControllerType.Mode, first that applies: outputs at the safe image (watchdog, link loss),
# external links cut by the emergency disconnect (spec 10.4 c), else running.
NODE_MODES = ("SafeImage", "Disconnected", "Running")
HEALTH_STATES = ("OK", "Warning", "Critical")  # Redfish Status.Health
LOOPS_FOLDER, EQUIPMENT_FOLDER = "Loops", "Equipment"  # folders of a ControllerType object
WATCHDOG_INTERLOCK = "watchdog"  # ResetTrip(Interlock="watchdog") resets the watchdog latch


@dataclass(frozen=True, slots=True)
class Unit:
    """A UNECE Recommendation 20 unit as OPC UA EUInformation carries it (Part 8, 5.6.3)."""

    code: str  # UNECE common code
    symbol: str  # EUInformation.DisplayName
    name: str  # EUInformation.Description

    @property
    def unit_id(self) -> int:
        """EUInformation.UnitId: the common code's ASCII bytes as one big-endian integer."""
        return unece_unit_id(self.code)


def unece_unit_id(code: str) -> int:
    """UnitId of a UNECE common code (Part 8: each character shifted in, 8 bits each)."""
    if not 1 <= len(code) <= 3 or not code.isascii() or not code.isalnum():
        raise ValueError(f"UNECE common code must be 1-3 ASCII letters/digits, got {code!r}")
    uid = 0
    for ch in code.upper():
        uid = (uid << 8) | ord(ch)
    return uid


UNITS: dict[str, Unit] = {u.code: u for u in (
    Unit("CEL", "°C", "degree Celsius"),
    Unit("KEL", "K", "kelvin"),  # temperature differences
    Unit("BAR", "bar", "bar [unit of pressure]"),
    Unit("KWT", "kW", "kilowatt"),
    Unit("WTT", "W", "watt"),
    Unit("KPA", "kPa", "kilopascal"),
    Unit("RPM", "r/min", "revolutions per minute"),
    Unit("MAW", "MW", "megawatt"),
    Unit("KWH", "kWh", "kilowatt hour"),
    Unit("P1", "%", "percent"),
    Unit("L2", "l/min", "litre per minute"),
    Unit("HUR", "h", "hour"),
    Unit("SEC", "s", "second [unit of time]"),
    Unit("C26", "ms", "millisecond"),
    Unit("HTZ", "Hz", "hertz"),
    Unit("VLT", "V", "volt"),
    Unit("AMP", "A", "ampere"),
    Unit("MTR", "m", "metre"),
    Unit("MTQ", "m³", "cubic metre"),
)}

# io_map `unit = "..."` spellings -> UNECE code, for variables made from io_map points.
IO_MAP_UNITS: dict[str, str] = {
    "degC": "CEL", "°C": "CEL", "K": "KEL", "bar": "BAR", "kW": "KWT", "MW": "MAW",
    "kWh": "KWH", "%": "P1", "L/min": "L2", "l/min": "L2", "h": "HUR", "s": "SEC",
    "ms": "C26", "Hz": "HTZ", "V": "VLT", "A": "AMP", "m": "MTR", "m3": "MTQ", "W": "WTT",
    "kPa": "KPA", "rpm": "RPM",
}


@dataclass(frozen=True, slots=True)
class Var:
    """A variable instance declaration.

    Its VariableType follows from the fields: `prop` -> PropertyType; unit and range ->
    AnalogUnitRangeType (a subtype of AnalogItemType: EngineeringUnits and EURange);
    unit only -> AnalogUnitType; `unit_per_instance` -> BaseAnalogType whose EngineeringUnits the
    server sets on each instance; otherwise BaseDataVariableType."""

    name: str
    data_type: str = "Double"
    unit: str | None = None
    range: tuple[float, float] | None = None
    optional: bool = False
    writable: bool = False
    prop: bool = False
    array: bool = False
    unit_per_instance: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        if self.prop and (self.unit or self.unit_per_instance):
            # a Property cannot have Properties (Part 3), so it cannot carry EngineeringUnits
            raise ValueError(f"{self.name}: a property cannot have EngineeringUnits")
        if self.unit is not None and self.unit not in UNITS:
            raise ValueError(f"{self.name}: unit {self.unit!r} is not in UNITS")

    @property
    def variable_type(self) -> str:
        """BrowseName of the standard VariableType this declaration uses."""
        if self.prop:
            return "PropertyType"
        if self.unit and self.range:
            return "AnalogUnitRangeType"
        if self.unit:
            return "AnalogUnitType"
        if self.unit_per_instance:
            return "BaseAnalogType"
        return "BaseDataVariableType"


@dataclass(frozen=True, slots=True)
class Obj:
    """An object instance declaration (a folder or a functional group).

    A folder that holds instances names their type in `holds` (said in its Description). There
    are no OptionalPlaceholder declarations (<Pump>): asyncua's instantiate() copies them into
    every instance as if they were Optional members."""

    name: str
    type_name: str = "FolderType"
    children: tuple[Var | Obj, ...] = ()
    optional: bool = False
    holds: str = ""
    doc: str = ""


@dataclass(frozen=True, slots=True)
class Arg:
    """One method argument (an OPC UA Argument structure)."""

    name: str
    data_type: str
    array: bool = False
    doc: str = ""


@dataclass(frozen=True, slots=True)
class Method:
    """A method instance declaration with its arguments, in call order."""

    name: str
    inputs: tuple[Arg, ...] = ()
    outputs: tuple[Arg, ...] = ()
    doc: str = ""


@dataclass(frozen=True, slots=True)
class ObjectType:
    """An ObjectType (or event type, when its base is an event type) of the PSWD namespace."""

    name: str
    base: str
    children: tuple[Var | Obj | Method, ...] = ()
    abstract: bool = False
    events: tuple[str, ...] = ()  # GeneratesEvent targets
    doc: str = ""


def _an(name: str, unit: str, lo: float, hi: float, doc: str = "", **kw: bool) -> Var:
    """An analog Double with EngineeringUnits and EURange."""
    return Var(name, "Double", unit, (lo, hi), doc=doc, **kw)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("ResetTrip",
           (Arg("Interlock", "String",
                doc='latched interlock to reset; "" = every latched trip; '
                    '"watchdog" = the watchdog latch'),),
           (Arg("Reset", "String", array=True, doc="names of the latches that were reset"),),
           doc="Reset latched trips (ResetTrip command: the rights table and the safety "
               "layer decide; a trip whose cause persists stays latched)."),
    Method("Force",
           (Arg("Point", "String", doc="output point, <device>.<point>"),
            Arg("Value", "Double", doc="forced value in the point's engineering units"),
            Arg("ExpirySeconds", "Double", doc="the force ends by itself after this time"),
            Arg("Reason", "String", doc="why, for the audit")),
           doc="Technician force of an output: applied after control, still below every "
               "interlock (a force never beats a trip)."),
    Method("Release", (Arg("Point", "String", doc="output point, <device>.<point>"),),
           doc="End a force on an output."),
    Method("SetMode",
           (Arg("Loop", "String", doc="control loop (block) name"),
            Arg("Mode", "String", doc="Automatic | Override | Manual | Disabled"),
            Arg("Value", "Double",
                doc="Override: the setpoint; Manual: the output; ignored otherwise "
                    "(NaN = hold the current output for Manual)")),
           doc="Set the Redfish ControlMode of a control loop."),
    Method("SetSetpoint",
           (Arg("Loop", "String", doc="control loop (block) name"),
            Arg("Value", "Double", doc="setpoint in the loop's engineering units")),
           doc="Override the loop's setpoint (SetMode Override with this value)."),
    Method("SignedCommand",
           (Arg("Kind", "String", doc="thermal_control | battery_control | grid_signal"),
            Arg("Envelope", "String",
                doc="the signed command envelope (JSON), exactly as on the MQTT command "
                    "topics and the HTTPS control endpoints (HMAC-SHA256, nonce, role)")),
           (Arg("Result", "String", doc="JSON: the command as applied at the scan"),),
           doc="A signed control command: verified with the node's command keys and nonce "
               "store (shared with MQTT and HTTPS: a command is taken once), checked by the "
               "rights table for the signer's role and the session's role."),
)}

_IDENT = Obj("Identification", "BaseObjectType", (
    Var("Manufacturer", "LocalizedText", prop=True, optional=True),
    Var("Model", "LocalizedText", prop=True, optional=True),
    Var("SerialNumber", "String", prop=True, optional=True),
    Var("ProductCode", "String", prop=True, optional=True),
), optional=True, doc="Nameplate data (OPC 40223 / OPC 10000-100 Identification names)")


def _folder(name: str, holds: str, doc: str = "", *, optional: bool = True) -> Obj:
    """A folder that holds (Organizes) instances of one type."""
    return Obj(name, "FolderType", optional=optional, holds=holds, doc=doc)


TYPES: tuple[ObjectType, ...] = (
    ObjectType(CONTROLLER_TYPE, "BaseObjectType", (
        _an("ScanPeriod", "C26", 1, 1000, "configured scan period"),
        Var("ScanCount", "UInt64", doc="scans since start"),
        Var("ExecTimeP99", "Double", "C26", doc="scan execution time, p99 of the last window"),
        Var("JitterP99", "Double", "C26", doc="scan start lateness, p99 of the last window"),
        Var("Overruns", "UInt64", doc="scans that overran their period"),
        Var("ClockOffset", "Double", "C26", doc="wall clock offset from the time source"),
        Var("Mode", "String", doc="SafeImage | Disconnected | Running (the first that applies)"),
        Var("WatchdogTripped", "Boolean", doc="watchdog latch set"),
        Var("SafeImageActive", "Boolean", doc="outputs held at the safe image"),
        Var("ActiveTrips", "String", array=True, doc="latched interlocks"),
        *METHODS.values(),
        _folder(LOOPS_FOLDER, CONTROL_LOOP_TYPE, "one object per control block "
                "(a folder: a loop may share its name with a device)", optional=False),
        _folder(EQUIPMENT_FOLDER, "EquipmentBaseType",
                "cooling units, racks, loops made of the devices"),
    ), events=(TRIP_ALARM_TYPE, "ExclusiveLimitAlarmType"),
        doc="A PSWD Edge node: its scan, watchdog, safe image and operator methods. Its "
            "field devices are its components, BrowseName = the io_map device name."),
    ObjectType(FIELD_DEVICE_TYPE, "BaseObjectType", (
        Var("CommState", "String", doc="Online | Degraded | Offline"),
        Var("Endpoint", "String", prop=True, doc="device address, as in the io_map"),
        Var("Protocol", "String", prop=True, doc="modbus | opcua | mqtt"),
    ), events=("ExclusiveLimitAlarmType",),
        doc="A device on a field bus (io_map [device]). Every io_map point of the device is a "
            "variable of it, BrowseName = the point's io_map key; BINDINGS say which points "
            "also feed the variables its type declares."),
    ObjectType("EquipmentBaseType", "BaseObjectType", (
        Var("Health", "String", doc="OK | Warning | Critical (Redfish Status.Health)"),
    ), abstract=True, doc="Equipment made of several field devices."),
    ObjectType("PumpType", FIELD_DEVICE_TYPE, (
        _IDENT,
        Obj("Operational", "BaseObjectType", (
            Obj("Measurements", "BaseObjectType", (
                _an("Speed", "P1", 0, 100, "actual speed, percent of rated"),
                _an("Power", "KWT", 0, 100, "electrical input power"),
                _an("Flow", "L2", 0, 1000, optional=True),
                _an("DifferentialPressure", "BAR", 0, 10, optional=True),
            )),
            Obj("Actuation", "BaseObjectType", (
                _an("SpeedSetpoint", "P1", 0, 100, "speed reference written", writable=True),
            )),
            Obj("Signals", "BaseObjectType", (
                Var("Running", "Boolean"),
                Var("Fault", "Boolean"),
                Var("FaultCode", "UInt32", optional=True),
            )),
        )),
        Obj("Maintenance", "BaseObjectType", (
            Var("ServiceHours", "Double", "HUR", doc="Redfish Pump.ServiceHours"),
        ), optional=True),
    ), doc="A pump; FunctionalGroups and names follow OPC 40223 PumpType."),
    ObjectType("ValveType", FIELD_DEVICE_TYPE, (
        _an("Position", "P1", 0, 100, "position feedback"),
        _an("PositionSetpoint", "P1", 0, 100, "position command", writable=True),
        _an("FailPosition", "P1", 0, 100, "position the actuator takes on loss of link",
            optional=True),
    ), doc="A control valve."),
    ObjectType("LeakDetectorType", FIELD_DEVICE_TYPE, (
        Var("DetectorState", "String", doc="OK | Warning | Critical (Redfish LeakDetector)"),
        Var("LeakDetected", "Boolean"),
        _an("LeakPosition", "MTR", 0, 1000, "distance along the sensing cable", optional=True),
        Var("CableFault", "Boolean", optional=True),
    ), doc="A leak detector (Redfish LeakDetector)."),
    ObjectType("FilterType", FIELD_DEVICE_TYPE, (
        _an("DifferentialPressure", "BAR", 0, 5, "pressure drop across the filter"),
        Var("ServiceHours", "Double", "HUR", optional=True),
        Var("RatedServiceHours", "Double", "HUR", optional=True),
        Var("ServicedDate", "DateTime", prop=True, optional=True),
    ), doc="A coolant filter (Redfish Filter)."),
    ObjectType("BatteryType", FIELD_DEVICE_TYPE, (
        _IDENT,
        _an("SoC", "P1", 0, 100, "state of charge"),
        _an("SoH", "P1", 0, 100, "state of health", optional=True),
        _an("W", "KWT", -1000, 1000, "AC power, + discharging"),
        _an("WSet", "KWT", -1000, 1000, "active power setpoint", writable=True),
        Var("WSetEna", "Boolean", writable=True, doc="setpoint enabled"),
        _an("WSetRvrtTms", "SEC", 0, 3600, "revert timeout", optional=True),
        _an("Hz", "HTZ", 45, 65, optional=True),
        Var("InvSt", "UInt16", doc="SunSpec inverter state"),
        Var("ConnSt", "UInt16", optional=True, doc="SunSpec connection state"),
    ), doc="A battery system behind a SunSpec inverter (model 701/704/802 names)."),
    ObjectType("CoolantConnectorType", "EquipmentBaseType", (
        _an("SupplyTemperature", "CEL", 0, 100),
        _an("ReturnTemperature", "CEL", 0, 100),
        _an("DeltaTemperature", "KEL", -20, 50, optional=True),
        _an("Pressure", "BAR", 0, 10, "supply pressure"),
        _an("ReturnPressure", "BAR", 0, 10, optional=True),
        _an("DeltaPressure", "BAR", -10, 10, optional=True),
        _an("FlowRate", "L2", 0, 2000),
        _an("HeatRemoved", "KWT", 0, 5000),
    ), doc="A coolant connection (Redfish CoolantConnector)."),
    ObjectType("CoolingUnitType", "EquipmentBaseType", (
        Var("EquipmentType", "String", prop=True, doc="CDU | HeatExchanger | ImmersionUnit"),
        Var("CoolingCapacity", "Double", "KWT", optional=True),
        _folder("Pumps", "PumpType"),
        _folder("Valves", "ValveType"),
        _folder("Filters", "FilterType"),
        _folder("PrimaryCoolantConnectors", "CoolantConnectorType"),
        _folder("SecondaryCoolantConnectors", "CoolantConnectorType"),
        _folder("LeakDetection", "LeakDetectorType"),
    ), doc="A coolant distribution unit (Redfish CoolingUnit)."),
    ObjectType(CONTROL_LOOP_TYPE, "BaseObjectType", (
        Var("Mode", "String", doc="Automatic | Override | Manual | Disabled"),
        Var("Setpoint", unit_per_instance=True, doc="in the loop's units"),
        Var("ProcessValue", unit_per_instance=True, doc="in the loop's units"),
        _an("Output", "P1", 0, 100),
        Var("Kp", "Double", prop=True),
        Var("Ki", "Double", prop=True),
        Var("Kd", "Double", prop=True),
    ), doc="A control loop (Redfish Control, ControlType Temperature/Pressure/...)."),
    ObjectType("RackType", "EquipmentBaseType", (
        _an("Power", "KWT", 0, 500),
        Var("Energy", "Double", "KWH"),
        Var("PowerFactor", "Double", optional=True),
        _an("Voltage", "VLT", 0, 1000, optional=True),
        _an("Current", "AMP", 0, 2000, optional=True),
        _an("Frequency", "HTZ", 45, 65, optional=True),
    ), doc="An IT rack: its power metering."),
    ObjectType("TwoPhaseLoopType", "EquipmentBaseType", (
        Var("Refrigerant", "String", prop=True, doc="CoolProp fluid name"),
        _an("SaturationTemperature", "CEL", -40, 100),
        _an("Pressure", "BAR", 0, 40),
        _an("VaporQuality", "P1", 0, 100, "vapour mass fraction, percent"),
        Var("Phase", "String"),
        _an("Output", "P1", 0, 100),
    ), doc="A pumped two-phase refrigerant loop."),
    ObjectType("HeatRecoveryType", "EquipmentBaseType", (
        Var("Mode", "String", doc="direct | heat_pump"),
        _an("HeatPower", "KWT", 0, 5000, "heat delivered"),
        Var("Energy", "Double", "KWH"),
        Var("COP", "Double", doc="heat pump coefficient of performance"),
        _an("RecoveryEfficiency", "P1", 0, 100),
        _an("PumpOutput", "P1", 0, 100),
        _an("HeatPumpOutput", "P1", 0, 100),
    ), doc="Heat recovery to a district heating loop."),
    ObjectType(TRIP_ALARM_TYPE, "OffNormalAlarmType", (
        Var("Interlock", "String", prop=True, doc="the name ResetTrip takes"),
    ), doc="A latched interlock (trip) of a PSWD node."),
)


def object_type(name: str) -> ObjectType:
    """The ObjectType with this BrowseName; KeyError names it."""
    for t in TYPES:
        if t.name == name:
            return t
    raise KeyError(f"no PSWD ObjectType {name!r}")


def declarations(type_name: str, *, inherited: bool = True
                 ) -> Iterator[tuple[tuple[str, ...], Var | Obj | Method]]:
    """(browse path, declaration) of every instance declaration of a type, depth first."""
    t = object_type(type_name)
    if inherited and any(b.name == t.base for b in TYPES):
        yield from declarations(t.base)
    yield from _walk((), t.children)


def _walk(prefix: tuple[str, ...], items: tuple[Var | Obj | Method, ...]
          ) -> Iterator[tuple[tuple[str, ...], Var | Obj | Method]]:
    for item in items:
        path = (*prefix, item.name)
        yield path, item
        if isinstance(item, Obj):
            yield from _walk(path, item.children)


def declared_var(type_name: str, path: tuple[str, ...]) -> Var:
    """The variable a type (or one of its supertypes) declares at this browse path."""
    for p, d in declarations(type_name):
        if p == path and isinstance(d, Var):
            return d
    raise KeyError(f"{type_name} declares no variable {'/'.join(path)}")


# io_map `[device] model` -> ObjectType of the device; any other model is a FieldDeviceType.
IO_MAP_TYPES: dict[str, str] = {
    "cdu_pump_vfd": "PumpType", "control_valve": "ValveType",
    "leak_detector": "LeakDetectorType", "battery_inverter": "BatteryType",
}


@dataclass(frozen=True, slots=True)
class Binding:
    """One declared variable an io_map point feeds (besides the point's own variable).

    Double/UInt variables take the value as it is; a Boolean takes one `bit` of the register
    or `point == equals`; a String takes `states[int(value)]`."""

    path: tuple[str, ...]
    bit: int | None = None
    equals: float | None = None
    states: tuple[str, ...] = ()


def _b(path: str, *, bit: int | None = None, equals: float | None = None,
       states: tuple[str, ...] = ()) -> Binding:
    return Binding(tuple(path.split("/")), bit, equals, states)


# io_map model -> point key -> the declared variables of IO_MAP_TYPES[model] it feeds.
BINDINGS: dict[str, dict[str, tuple[Binding, ...]]] = {
    "cdu_pump_vfd": {
        "speed_actual": (_b("Operational/Measurements/Speed"),),
        "motor_power": (_b("Operational/Measurements/Power"),),
        "speed_ref": (_b("Operational/Actuation/SpeedSetpoint"),),
        "status_word": (_b("Operational/Signals/Running", bit=0),
                        _b("Operational/Signals/Fault", bit=1)),
        "fault_code": (_b("Operational/Signals/FaultCode"),),
        "run_hours": (_b("Maintenance/ServiceHours"),),
    },
    "control_valve": {
        "position_fb": (_b("Position"),), "position_cmd": (_b("PositionSetpoint"),),
        "fail_position": (_b("FailPosition"),),
    },
    "leak_detector": {
        "leak_state": (_b("LeakDetected", equals=1.0), _b("CableFault", equals=2.0),
                       _b("DetectorState", states=("OK", "Critical", "Warning"))),
        "leak_position_m": (_b("LeakPosition"),),
    },
    "battery_inverter": {
        "soc_pct": (_b("SoC"),), "soh_pct": (_b("SoH"),), "ac_w_kw": (_b("W"),),
        "w_set_kw": (_b("WSet"),), "w_set_ena": (_b("WSetEna", equals=1.0),),
        "w_set_rvrt_tms": (_b("WSetRvrtTms"),), "ac_hz": (_b("Hz"),),
        "inv_st": (_b("InvSt"),), "conn_st": (_b("ConnSt"),),
    },
}


def bound_value(binding: Binding, var: Var, value: float) -> float | int | bool | str:
    """The value a declared variable shows for a point value (ValueError if it cannot)."""
    if binding.bit is not None:
        return bool((int(value) >> binding.bit) & 1)
    if binding.equals is not None:
        return value == binding.equals
    if binding.states:
        i = int(value)
        if not 0 <= i < len(binding.states) or i != value:
            raise ValueError(f"{'/'.join(binding.path)}: no state for value {value!r}")
        return binding.states[i]
    if var.data_type in ("UInt16", "UInt32", "UInt64"):
        if value != int(value) or value < 0:
            raise ValueError(f"{'/'.join(binding.path)}: {value!r} is not a {var.data_type}")
        return int(value)
    return float(value)


def point_value(binding: Binding, written: float | bool) -> float:
    """The point value a client's write of a writable declared variable stands for."""
    if binding.equals is not None and isinstance(written, bool):
        return binding.equals if written else 0.0
    if binding.bit is not None or binding.states:
        raise ValueError(f"{'/'.join(binding.path)} is derived from a register: not writable")
    return float(written)
