"""Write opcua_models/PSWD.NodeSet2.xml from edge_runtime/servers/opcua_model.py.

    python tools/gen_nodeset.py            # (re)write the XML
    python tools/gen_nodeset.py --check    # exit 1 if the committed XML is stale

The XML is generated so that it cannot drift from the constants the server uses; never edit
it by hand. Output is deterministic (no timestamps besides the model's publication date).
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from edge_runtime.servers.opcua_model import (
    MODEL_PUBLICATION_DATE,
    MODEL_VERSION,
    NAMESPACE_URI,
    NODESET_PATH,
    TYPES,
    UNECE_NAMESPACE,
    UNITS,
    Arg,
    Method,
    Obj,
    ObjectType,
    Var,
)

UANS = "http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"
UAX = "http://opcfoundation.org/UA/2008/02/Types.xsd"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
UA_MODEL = ("http://opcfoundation.org/UA/", "1.05.03", "2023-12-15T00:00:00Z")

# Namespace 0 nodes the model refers to. Names double as the NodeSet's Aliases where they
# are DataTypes or ReferenceTypes (the usual convention of the OPC Foundation's NodeSets).
ALIASES = {
    "Boolean": 1, "UInt16": 5, "UInt32": 7, "UInt64": 9, "Double": 11, "String": 12,
    "DateTime": 13, "LocalizedText": 21, "BaseDataType": 24, "Number": 26,
    "Argument": 296, "Range": 884, "EUInformation": 887,
    "Organizes": 35, "HasEventSource": 36, "HasModellingRule": 37, "HasTypeDefinition": 40,
    "GeneratesEvent": 41, "HasSubtype": 45, "HasProperty": 46, "HasComponent": 47,
}
NS0 = {
    "BaseObjectType": 58, "FolderType": 61, "BaseDataVariableType": 63, "PropertyType": 68,
    "BaseAnalogType": 15318, "AnalogUnitType": 17497, "AnalogUnitRangeType": 17570,
    "LimitAlarmType": 2955, "ExclusiveLimitAlarmType": 9341, "OffNormalAlarmType": 10637,
    "Mandatory": 78, "Optional": 80,
}
ENCODING_XML = {"Argument": 297, "Range": 885, "EUInformation": 888}
OUR_TYPES = {t.name for t in TYPES}


def _q(tag: str, ns: str = UANS) -> str:
    return f"{{{ns}}}{tag}"


def type_ref(name: str) -> str:
    """NodeId of a type by BrowseName: ours (ns=1;s=Name) or namespace 0."""
    return f"ns=1;s={name}" if name in OUR_TYPES else f"i={NS0[name]}"


class NodeSetWriter:
    """Accumulates the UANodeSet element tree, node after node."""

    def __init__(self) -> None:
        ET.register_namespace("", UANS)
        ET.register_namespace("uax", UAX)
        ET.register_namespace("xsi", XSI)
        self.root = ET.Element(_q("UANodeSet"), {"LastModified": MODEL_PUBLICATION_DATE})
        uris = ET.SubElement(self.root, _q("NamespaceUris"))
        ET.SubElement(uris, _q("Uri")).text = NAMESPACE_URI
        models = ET.SubElement(self.root, _q("Models"))
        model = ET.SubElement(models, _q("Model"), {
            "ModelUri": NAMESPACE_URI, "Version": MODEL_VERSION,
            "PublicationDate": MODEL_PUBLICATION_DATE})
        ET.SubElement(model, _q("RequiredModel"), {
            "ModelUri": UA_MODEL[0], "Version": UA_MODEL[1], "PublicationDate": UA_MODEL[2]})
        aliases = ET.SubElement(self.root, _q("Aliases"))
        for alias, ident in ALIASES.items():
            ET.SubElement(aliases, _q("Alias"), {"Alias": alias}).text = f"i={ident}"

    def node(self, kind: str, node_id: str, name: str, *, parent: str | None = None,
             doc: str = "", **attrs: str) -> tuple[ET.Element, ET.Element]:
        """Append a UA node; returns (node element, its References element)."""
        a = {"NodeId": node_id, "BrowseName": name, **attrs}
        if parent:
            a["ParentNodeId"] = parent
        el = ET.SubElement(self.root, _q(kind), a)
        ET.SubElement(el, _q("DisplayName")).text = name.split(":", 1)[-1]
        if doc:
            ET.SubElement(el, _q("Description")).text = doc
        return el, ET.SubElement(el, _q("References"))

    @staticmethod
    def ref(refs: ET.Element, ref_type: str, target: str, forward: bool = True) -> None:
        """Add one reference."""
        attrs = {"ReferenceType": ref_type}
        if not forward:
            attrs["IsForward"] = "false"
        ET.SubElement(refs, _q("Reference"), attrs).text = target

    # -- type members -------------------------------------------------------------------

    def object_type(self, t: ObjectType) -> None:
        """An ObjectType and every instance declaration below it."""
        nid = type_ref(t.name)
        attrs = {"IsAbstract": "true"} if t.abstract else {}
        _, refs = self.node("UAObjectType", nid, f"1:{t.name}", doc=t.doc, **attrs)
        self.ref(refs, "HasSubtype", type_ref(t.base), forward=False)
        for ev in t.events:
            self.ref(refs, "GeneratesEvent", type_ref(ev))
        self.members(nid, refs, t.children)

    def members(self, parent: str, refs: ET.Element,
                items: tuple[Var | Obj | Method, ...]) -> None:
        """Instance declarations of one parent, in declaration order."""
        for item in items:
            nid = f"{parent}.{item.name}"
            if isinstance(item, Var):
                ref_type = "HasProperty" if item.prop else "HasComponent"
                self.ref(refs, ref_type, nid)
                self.variable(parent, nid, item, ref_type)
            elif isinstance(item, Obj):
                self.ref(refs, "HasComponent", nid)
                self.obj(parent, nid, item)
            else:
                self.ref(refs, "HasComponent", nid)
                self.method(parent, nid, item)

    @staticmethod
    def rule(optional: bool) -> str:
        """NodeId of the modelling rule."""
        return f"i={NS0['Optional' if optional else 'Mandatory']}"

    def variable(self, parent: str, nid: str, v: Var, ref_type: str) -> None:
        """A variable with its EngineeringUnits/EURange properties."""
        attrs = {"DataType": v.data_type}
        if v.array:
            attrs |= {"ValueRank": "1", "ArrayDimensions": "0"}
        if v.writable:
            attrs |= {"AccessLevel": "3", "UserAccessLevel": "3"}
        _, refs = self.node("UAVariable", nid, f"1:{v.name}", parent=parent, doc=v.doc, **attrs)
        self.ref(refs, "HasTypeDefinition", type_ref(v.variable_type))
        self.ref(refs, "HasModellingRule", self.rule(v.optional))
        self.ref(refs, ref_type, parent, forward=False)
        if v.unit:
            self.ref(refs, "HasProperty", f"{nid}.EngineeringUnits")
            self.property_ext(nid, "EngineeringUnits", "EUInformation", [self.eu_body(v.unit)])
        elif v.unit_per_instance:
            self.ref(refs, "HasProperty", f"{nid}.EngineeringUnits")
            self.property_ext(nid, "EngineeringUnits", "EUInformation", [], optional=True)
        if v.range and v.unit:
            self.ref(refs, "HasProperty", f"{nid}.EURange")
            body = ET.Element(_q("Range", UAX))
            ET.SubElement(body, _q("Low", UAX)).text = repr(float(v.range[0]))
            ET.SubElement(body, _q("High", UAX)).text = repr(float(v.range[1]))
            self.property_ext(nid, "EURange", "Range", [body])

    def obj(self, parent: str, nid: str, o: Obj) -> None:
        """An object instance declaration (folder or functional group)."""
        doc = f"{o.doc} Holds {o.holds} instances (Organizes).".strip() if o.holds else o.doc
        _, refs = self.node("UAObject", nid, f"1:{o.name}", parent=parent, doc=doc)
        self.ref(refs, "HasTypeDefinition", type_ref(o.type_name))
        self.ref(refs, "HasModellingRule", self.rule(o.optional))
        self.ref(refs, "HasComponent", parent, forward=False)
        self.members(nid, refs, o.children)

    def method(self, parent: str, nid: str, m: Method) -> None:
        """A method with its InputArguments/OutputArguments properties."""
        _, refs = self.node("UAMethod", nid, f"1:{m.name}", parent=parent, doc=m.doc)
        for prop, args in (("InputArguments", m.inputs), ("OutputArguments", m.outputs)):
            if args:
                self.ref(refs, "HasProperty", f"{nid}.{prop}")
                self.property_ext(nid, prop, "Argument", [self.arg_body(a) for a in args],
                                  array=True)
        self.ref(refs, "HasModellingRule", self.rule(False))
        self.ref(refs, "HasComponent", parent, forward=False)

    def property_ext(self, parent: str, name: str, data_type: str, bodies: list[ET.Element],
                     *, array: bool = False, optional: bool = False) -> None:
        """A standard (namespace 0 BrowseName) property holding extension objects."""
        attrs = {"DataType": data_type}
        if array:
            attrs |= {"ValueRank": "1", "ArrayDimensions": str(len(bodies))}
        el, refs = self.node("UAVariable", f"{parent}.{name}", name, parent=parent, **attrs)
        self.ref(refs, "HasTypeDefinition", type_ref("PropertyType"))
        self.ref(refs, "HasModellingRule", self.rule(optional))
        self.ref(refs, "HasProperty", parent, forward=False)
        if not bodies:
            return
        value = ET.SubElement(el, _q("Value"))
        holder = ET.SubElement(value, _q("ListOfExtensionObject", UAX)) if array else value
        for body in bodies:
            ext = ET.SubElement(holder, _q("ExtensionObject", UAX))
            tid = ET.SubElement(ext, _q("TypeId", UAX))
            ET.SubElement(tid, _q("Identifier", UAX)).text = f"i={ENCODING_XML[data_type]}"
            ET.SubElement(ext, _q("Body", UAX)).append(body)

    @staticmethod
    def eu_body(code: str) -> ET.Element:
        """EUInformation of a UNECE unit."""
        u = UNITS[code]
        body = ET.Element(_q("EUInformation", UAX))
        ET.SubElement(body, _q("NamespaceUri", UAX)).text = UNECE_NAMESPACE
        ET.SubElement(body, _q("UnitId", UAX)).text = str(u.unit_id)
        for tag, text in (("DisplayName", u.symbol), ("Description", u.name)):
            lt = ET.SubElement(body, _q(tag, UAX))
            ET.SubElement(lt, _q("Locale", UAX)).text = "en"
            ET.SubElement(lt, _q("Text", UAX)).text = text
        return body

    @staticmethod
    def arg_body(a: Arg) -> ET.Element:
        """Argument structure of one method argument."""
        body = ET.Element(_q("Argument", UAX))
        ET.SubElement(body, _q("Name", UAX)).text = a.name
        dt = ET.SubElement(body, _q("DataType", UAX))
        ET.SubElement(dt, _q("Identifier", UAX)).text = f"i={ALIASES[a.data_type]}"
        ET.SubElement(body, _q("ValueRank", UAX)).text = "1" if a.array else "-1"
        dims = ET.SubElement(body, _q("ArrayDimensions", UAX))
        if a.array:
            ET.SubElement(dims, _q("UInt32", UAX)).text = "0"
        desc = ET.SubElement(body, _q("Description", UAX))
        ET.SubElement(desc, _q("Locale", UAX)).text = "en"
        ET.SubElement(desc, _q("Text", UAX)).text = a.doc
        return body


def render() -> str:
    """The whole NodeSet2 document as text."""
    w = NodeSetWriter()
    for t in TYPES:
        w.object_type(t)
    ET.indent(w.root, space="  ")
    body = ET.tostring(w.root, encoding="unicode")
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            "<!-- Generated by tools/gen_nodeset.py from edge_runtime/servers/opcua_model.py:"
            " do not edit. -->\n" + body + "\n")


def main(argv: list[str] | None = None) -> int:
    """Write the NodeSet, or with --check compare it with the committed file."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the file is stale")
    ap.add_argument("--out", type=Path, default=NODESET_PATH)
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run python tools/gen_nodeset.py", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
