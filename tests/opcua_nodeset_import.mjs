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

// Every helper takes a batch: one request per tree level, not per node (a loaded 2-core
// machine makes a round trip per node cost tens of seconds).
async function browseMany(session, nodeIds, refType, includeSubtypes, nodeClassMask = 0) {
  if (!nodeIds.length) return [];
  const results = await session.browse(nodeIds.map((nodeId) => ({
    nodeId, referenceTypeId: refType, browseDirection: BrowseDirection.Forward,
    includeSubtypes, nodeClassMask, resultMask: 0x3f,
  })));
  return results.map((r, i) => {
    if (r.statusCode.value !== 0) throw new Error(`browse ${nodeIds[i]}: ${r.statusCode.toString()}`);
    return r.references;
  });
}

async function readMany(session, nodeIds, attributeId) {
  if (!nodeIds.length) return [];
  const dvs = await session.read(nodeIds.map((nodeId) => ({ nodeId, attributeId })));
  return dvs.map((dv) => dv.value.value);
}

function plain(v) {
  // extension objects (EUInformation, Range, Argument) as plain JSON
  return JSON.parse(JSON.stringify(v, (k, x) => (typeof x === "bigint" ? Number(x) : x)));
}

const VALUES = ["EngineeringUnits", "EURange", "InputArguments", "OutputArguments"];

// Instance declarations of every type, breadth first: path -> what a client sees.
async function walk(session, roots) {
  let frontier = roots.map(([type, id]) => ({ type, id, path: "" }));
  const out = Object.fromEntries(roots.map(([type]) => [type, {}]));
  while (frontier.length) {
    // Object | Variable | Method: HasSubtype is hierarchical too, and subtypes are not members
    const lists = await browseMany(session, frontier.map((f) => f.id), HIERARCHICAL, true, 1 | 2 | 4);
    const next = [];
    lists.forEach((refs, i) => refs.forEach((ref) => {
      const name = ref.browseName.name;
      const path = frontier[i].path ? `${frontier[i].path}/${name}` : name;
      next.push({ type: frontier[i].type, id: ref.nodeId.toString(), path, ref });
    }));
    const ids = next.map((n) => n.id);
    const rules = await browseMany(session, ids, "i=37", false); // HasModellingRule
    const tdefs = await browseMany(session, ids, "i=40", false); // HasTypeDefinition
    const vars = next.filter((n) => n.ref.nodeClass === NodeClass.Variable);
    const vids = vars.map((n) => n.id);
    const dts = await readMany(session, vids, AttributeIds.DataType);
    const vrs = await readMany(session, vids, AttributeIds.ValueRank);
    const withValue = vars.filter((n) => VALUES.includes(n.ref.browseName.name));
    const values = await readMany(session, withValue.map((n) => n.id), AttributeIds.Value);
    next.forEach((n, i) => {
      n.entry = {
        nodeClass: NodeClass[n.ref.nodeClass], typeDefinition: tdefs[i][0]?.browseName.name ?? null,
        modellingRule: rules[i][0]?.browseName.name ?? null, browseNamespace: n.ref.browseName.namespaceIndex,
      };
      out[n.type][n.path] = n.entry;
    });
    vars.forEach((n, i) => { n.entry.dataType = dts[i].toString(); n.entry.valueRank = vrs[i]; });
    withValue.forEach((n, i) => { n.entry.value = plain(values[i]); });
    frontier = next;
  }
  return out;
}

// ObjectTypes of namespace nsIndex below BaseObjectType: [ref, parent name], breadth first.
async function ourTypes(session, nsIndex) {
  let frontier = [["i=58", "BaseObjectType"]];
  const found = [];
  while (frontier.length) {
    const lists = await browseMany(session, frontier.map(([id]) => id), "i=45", false, 8);
    const next = [];
    lists.forEach((refs, i) => refs.forEach((ref) => {
      if (ref.nodeId.namespace === nsIndex) found.push([ref, frontier[i][1]]);
      next.push([ref.nodeId.toString(), ref.browseName.name]);
    }));
    frontier = next;
  }
  return found;
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
  const [nsArray] = await readMany(session, ["i=2255"], AttributeIds.Value); // NamespaceArray
  const nsIndex = nsArray.indexOf(NS_URI);
  if (nsIndex < 0) throw new Error(`namespace ${NS_URI} not in ${nsArray}`);
  const found = await ourTypes(session, nsIndex); // event types are below BaseObjectType too
  const ids = found.map(([ref]) => ref.nodeId.toString());
  const abstract = await readMany(session, ids, AttributeIds.IsAbstract);
  const events = await browseMany(session, ids, "i=41", false); // GeneratesEvent
  const members = await walk(session, found.map(([ref]) => [ref.browseName.name, ref.nodeId.toString()]));
  const types = {};
  found.forEach(([ref, base], i) => {
    const name = ref.browseName.name;
    types[name] = {
      nodeId: ids[i], base, abstract: abstract[i], events: events[i].map((r) => r.browseName.name),
      members: members[name],
    };
  });
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
