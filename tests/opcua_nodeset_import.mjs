// node-opcua side of the NodeSet import test (tests/test_opcua_model.py runs it).
//
//   node tests/opcua_nodeset_import.mjs NODESET.xml PORT WORKDIR
//
// Starts a node-opcua OPCUAServer on 127.0.0.1:PORT that loads the standard NodeSet and ours,
// connects a node-opcua client to it over opc.tcp, finds every ObjectType of our namespace by
// browsing HasSubtype from BaseObjectType, walks each type's instance declarations, reads the
// EngineeringUnits / EURange / method argument values, stops both, and prints one line
// "PSWD-JSON {...}". Certificates go under WORKDIR (never ~/.config).
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(new URL("./npm/package.json", import.meta.url));
const {
  OPCUAServer, OPCUAClient, OPCUACertificateManager, nodesets, NodeClass, BrowseDirection,
  AttributeIds, MessageSecurityMode, SecurityPolicy,
} = require("node-opcua");

const NS_URI = "http://pswd-edge.org/UA/";
const [xml, portText, workdir] = process.argv.slice(2);
const port = Number(portText);
const HIERARCHICAL = "i=33"; // HierarchicalReferences: HasComponent, HasProperty, Organizes

function certManager(name) {
  return new OPCUACertificateManager({
    rootFolder: path.join(workdir, name), automaticallyAcceptUnknownCertificate: true,
  });
}

async function browse(session, nodeId, refType, includeSubtypes = true, nodeClassMask = 0) {
  const r = await session.browse({
    nodeId, referenceTypeId: refType, browseDirection: BrowseDirection.Forward,
    includeSubtypes, nodeClassMask, resultMask: 0x3f,
  });
  if (r.statusCode.value !== 0) throw new Error(`browse ${nodeId}: ${r.statusCode.toString()}`);
  return r.references;
}

async function firstTarget(session, nodeId, refType) {
  const refs = await browse(session, nodeId, refType, false);
  return refs.length ? refs[0] : null;
}

async function readValue(session, nodeId) {
  const dv = await session.read({ nodeId, attributeId: AttributeIds.Value });
  return dv.value.value;
}

function plain(v) {
  // extension objects (EUInformation, Range, Argument) as plain JSON
  return JSON.parse(JSON.stringify(v, (k, x) => (typeof x === "bigint" ? Number(x) : x)));
}

async function walk(session, nodeId, prefix, out) {
  // Object | Variable | Method: HasSubtype is hierarchical too, and subtypes are not members
  for (const ref of await browse(session, nodeId, HIERARCHICAL, true, 1 | 2 | 4)) {
    const name = ref.browseName.name;
    const p = prefix ? `${prefix}/${name}` : name;
    const id = ref.nodeId.toString();
    const rule = await firstTarget(session, id, "i=37"); // HasModellingRule
    const entry = {
      nodeClass: NodeClass[ref.nodeClass], typeDefinition: null, modellingRule: rule?.browseName.name ?? null,
      browseNamespace: ref.browseName.namespaceIndex,
    };
    const td = await firstTarget(session, id, "i=40"); // HasTypeDefinition
    if (td) entry.typeDefinition = td.browseName.name;
    if (ref.nodeClass === NodeClass.Variable) {
      const dt = await session.read({ nodeId: id, attributeId: AttributeIds.DataType });
      const vr = await session.read({ nodeId: id, attributeId: AttributeIds.ValueRank });
      entry.dataType = dt.value.value.toString();
      entry.valueRank = vr.value.value;
      if (["EngineeringUnits", "EURange", "InputArguments", "OutputArguments"].includes(name)) {
        entry.value = plain(await readValue(session, id));
      }
    }
    out[p] = entry;
    await walk(session, id, p, out);
  }
}

async function subtypes(session, nodeId, nsIndex, found) {
  const refs = await browse(session, nodeId, "i=45", false); // HasSubtype
  for (const ref of refs) {
    if (ref.nodeId.namespace === nsIndex) found.push([ref, nodeId]);
    await subtypes(session, ref.nodeId.toString(), nsIndex, found);
  }
}

const server = new OPCUAServer({
  port, hostname: "127.0.0.1", nodeset_filename: [nodesets.standard, xml],
  serverCertificateManager: certManager("server-pki"), userCertificateManager: certManager("user-pki"),
  securityModes: [MessageSecurityMode.None], securityPolicies: [SecurityPolicy.None],
  allowAnonymous: true,
});
const client = OPCUAClient.create({
  endpointMustExist: false, clientCertificateManager: certManager("client-pki"),
  connectionStrategy: { maxRetry: 0 },
});
let code = 0;
try {
  await server.start();
  await client.connect(`opc.tcp://127.0.0.1:${port}`);
  const session = await client.createSession();
  const nsArray = await readValue(session, "i=2255"); // Server.NamespaceArray
  const nsIndex = nsArray.indexOf(NS_URI);
  if (nsIndex < 0) throw new Error(`namespace ${NS_URI} not in ${nsArray}`);
  const found = [];
  await subtypes(session, "i=58", nsIndex, found); // BaseObjectType, event types included
  const types = {};
  for (const [ref, parent] of found) {
    const id = ref.nodeId.toString();
    const abs = await session.read({ nodeId: id, attributeId: AttributeIds.IsAbstract });
    const parentName = await session.read({ nodeId: parent, attributeId: AttributeIds.BrowseName });
    const members = {};
    await walk(session, id, "", members);
    const events = (await browse(session, id, "i=41", false)).map((r) => r.browseName.name);
    types[ref.browseName.name] = {
      nodeId: id, base: parentName.value.value.name, abstract: abs.value.value, events, members,
    };
  }
  await session.close();
  console.log("PSWD-JSON " + JSON.stringify({ namespaceIndex: nsIndex, types }));
} catch (err) {
  console.error("node-opcua import failed:", err);
  code = 1;
} finally {
  await client.disconnect().catch(() => {});
  await server.shutdown(0).catch(() => {});
}
process.exit(code);
