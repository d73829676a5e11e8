// node-opcua side of the OPC UA interop test (tests/test_opcua_server_nodeopcua.py runs it).
//
//   node tests/opcua_client_session.mjs CONFIG.json
//
// A BMS session with a stock client over SignAndEncrypt: browse, read, subscribe (a data
// change arrives), alarms (a trip arrives, is acknowledged), HistoryRead, every method (reset a
// trip, force an output with an expiry and see it expire, release, set mode and setpoint), and
// the refusals (wrong role, untrusted certificate, out of range, wrong type). Every result is
// one line "PSWD {json}" on stdout; where the plant must change, it prints
// PSWD {"wait": "..."} and reads one line from stdin before going on. Certificates of the
// client's certificate manager live under the test's temp dir (never ~/.config).
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";

const require = createRequire(new URL("./npm/package.json", import.meta.url));
const {
  OPCUAClient, OPCUACertificateManager, MessageSecurityMode, SecurityPolicy, UserTokenType,
  AttributeIds, TimestampsToReturn, ClientSubscription, ClientMonitoredItem, DataType,
  BrowseDirection, constructEventFilter, StatusCodes,
} = require("node-opcua");

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const NS_URI = "http://pswd-edge.org/UA/";
const lines = readline.createInterface({ input: process.stdin });
const pending = [];
lines.on("line", (l) => { const r = pending.shift(); if (r) r(l); });

function out(obj) { process.stdout.write(`PSWD ${JSON.stringify(obj)}\n`); }
async function waitFor(what) {
  out({ wait: what });
  return new Promise((resolve) => pending.push(resolve));
}
function code(sc) { return sc ? sc.name : "none"; }
async function until(pred, ms, what) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function connect(user, cert, label) {
  const mgr = new OPCUACertificateManager({
    rootFolder: path.join(cfg.workdir, `pki-${label}`),
    automaticallyAcceptUnknownCertificate: false,
  });
  await mgr.initialize();
  await mgr.trustCertificate(fs.readFileSync(cfg.serverCertDer));  // the server, known beforehand
  const client = OPCUAClient.create({
    applicationName: `bms-${label}`, applicationUri: cert.uri,
    securityMode: MessageSecurityMode.SignAndEncrypt, securityPolicy: SecurityPolicy.Basic256Sha256,
    certificateFile: cert.pem, privateKeyFile: cert.key, clientCertificateManager: mgr,
    endpointMustExist: false, connectionStrategy: { maxRetry: 0, initialDelay: 100 },
    requestedSessionTimeout: 60000,
  });
  await client.connect(cfg.url);
  try {
    const session = await client.createSession({
      type: UserTokenType.UserName, userName: user, password: cfg.passwords[user],
    });
    return { client, session };
  } catch (err) {
    await client.disconnect();
    throw err;
  }
}

async function main() {
  const { client, session } = await connect("bms", cfg.trusted, "bms");
  const nsArray = (await session.read({ nodeId: "i=2255", attributeId: AttributeIds.Value })).value.value;
  const ns = nsArray.indexOf(NS_URI);
  const id = (s) => `ns=${ns};s=${s}`;
  const node = cfg.node;

  // browse: the controller object, its devices and methods
  const browsed = await session.browse({
    nodeId: id(node), browseDirection: BrowseDirection.Forward, referenceTypeId: "i=33",
    includeSubtypes: true, resultMask: 0x3f,
  });
  const children = Object.fromEntries(browsed.references.map((r) => [r.browseName.name, r.nodeId.toString()]));
  const typeDef = (await session.browse({ nodeId: id(node), browseDirection: BrowseDirection.Forward,
    referenceTypeId: "i=40", resultMask: 0x3f })).references.map((r) => r.browseName.name);
  out({ browse: Object.keys(children).sort(), typeDefinition: typeDef });

  // read: value, status, engineering units and range
  const temp = id(`${node}.supply_temp.temperature`);
  const dv = await session.read({ nodeId: temp, attributeId: AttributeIds.Value });
  const props = await session.browse({ nodeId: temp, browseDirection: BrowseDirection.Forward,
    referenceTypeId: "i=46", resultMask: 0x3f });
  const prop = Object.fromEntries(props.references.map((r) => [r.browseName.name, r.nodeId]));
  const eu = (await session.read({ nodeId: prop.EngineeringUnits, attributeId: AttributeIds.Value })).value.value;
  const range = (await session.read({ nodeId: prop.EURange, attributeId: AttributeIds.Value })).value.value;
  out({ read: { value: dv.value.value, status: code(dv.statusCode),
    sourceTimestamp: dv.sourceTimestamp ? dv.sourceTimestamp.toISOString() : null,
    unit: eu.displayName.text, unitId: eu.unitId, low: range.low, high: range.high } });

  // subscribe: data changes of the temperature and of the pump speed reference
  const sub = ClientSubscription.create(session, {
    requestedPublishingInterval: 100, requestedLifetimeCount: 600, requestedMaxKeepAliveCount: 20,
    maxNotificationsPerPublish: 100, publishingEnabled: true, priority: 10,
  });
  const changes = { temp: [], speed: [] };
  const watch = (nodeId, into) => {
    const item = ClientMonitoredItem.create(sub, { nodeId, attributeId: AttributeIds.Value },
      { samplingInterval: 50, discardOldest: true, queueSize: 100 }, TimestampsToReturn.Both);
    item.on("changed", (v) => into.push({ value: v.value.value, status: code(v.statusCode) }));
  };
  watch(temp, changes.temp);
  const speed = id(`${node}.pump1.speed_ref`);
  watch(speed, changes.speed);
  await until(() => new Set(changes.temp.map((c) => c.value)).size >= 2, 20000, "two temperatures");
  out({ datachange: changes.temp.length, distinct: new Set(changes.temp.map((c) => c.value)).size });

  // alarms: events of the Server object, a trip arrives and is acknowledged
  const fields = ["EventId", "ConditionName", "ConditionId", "Retain", "ActiveState", "ActiveState.Id",
    "AckedState", "AckedState.Id", "Message", "Severity"];
  const events = [];
  const evItem = ClientMonitoredItem.create(sub, { nodeId: "i=2253", attributeId: AttributeIds.EventNotifier },
    { samplingInterval: 0, discardOldest: true, queueSize: 100, filter: constructEventFilter(fields) },
    TimestampsToReturn.Both);
  evItem.on("changed", (values) => {
    const e = Object.fromEntries(fields.map((f, i) => [f, values[i] ? values[i].value : null]));
    events.push(e);
  });
  await new Promise((r) => setTimeout(r, 300));
  await waitFor("trip");
  const isTrip = (e) => e.ConditionName === "interlock.leak_isolate" && e["ActiveState.Id"] === true;
  await until(() => events.some(isTrip), 20000, "the trip alarm");
  const trip = events.filter(isTrip).pop();
  const ack = await session.call({
    objectId: trip.ConditionId, methodId: "i=9111",
    inputArguments: [{ dataType: DataType.ByteString, value: trip.EventId },
      { dataType: DataType.LocalizedText, value: { text: "acknowledged from node-opcua" } }],
  });
  await until(() => events.some((e) => e.ConditionName === "interlock.leak_isolate" && e["AckedState.Id"] === true),
    10000, "the acknowledged state");
  out({ alarm: { condition: trip.ConditionName, severity: trip.Severity, ack: code(ack.statusCode) } });

  // methods
  const methodIds = {};
  for (const name of ["ResetTrip", "Force", "Release", "SetMode", "SetSetpoint"]) methodIds[name] = children[name];
  const call = async (s, name, args) => {
    const r = await s.call({ objectId: id(node), methodId: methodIds[name], inputArguments: args });
    return { status: code(r.statusCode), out: (r.outputArguments || []).map((a) => a.value) };
  };
  const str = (v) => ({ dataType: DataType.String, value: v });
  const dbl = (v) => ({ dataType: DataType.Double, value: v });
  out({ resetWhilePresent: await call(session, "ResetTrip", [str("leak_isolate")]) });
  await waitFor("dry");
  out({ reset: await call(session, "ResetTrip", [str("")]) });

  // force with an expiry, seen to expire from this side: GoodLocalOverride, then Good again
  const before = changes.speed.length;
  const force = await call(session, "Force", [str("pump1.speed_ref"), dbl(42.0), dbl(1.0), str("interop test")]);
  await until(() => changes.speed.slice(before).some((c) => c.status === "GoodLocalOverride" && c.value === 42),
    10000, "the forced value");
  const forcedAt = changes.speed.length;
  await until(() => changes.speed.slice(forcedAt).some((c) => c.status === "Good"), 15000, "the force to expire");
  out({ force: force.status, forcedSeen: true, expiredSeen: true });
  out({ releaseNotForced: await call(session, "Release", [str("pump1.speed_ref")]) });
  const held = await call(session, "Force", [str("pump1.speed_ref"), dbl(60.0), dbl(60.0), str("held")]);
  out({ forceHeld: held, release: await call(session, "Release", [str("pump1.speed_ref")]) });
  out({ setSetpoint: await call(session, "SetSetpoint", [str("supply_temp"), dbl(28.0)]) });
  out({ setMode: await call(session, "SetMode", [str("supply_temp"), str("Automatic"), dbl(NaN)]) });

  // refusals: out of range, wrong type (method argument and write), unknown point
  out({ outOfRange: await call(session, "Force", [str("pump1.speed_ref"), dbl(150), dbl(5), str("x")]) });
  out({ wrongType: await call(session, "Force", [str("pump1.speed_ref"), str("fast"), dbl(5), str("x")]) });
  out({ unknownPoint: await call(session, "Force", [str("nope.nothing"), dbl(1), dbl(5), str("x")]) });
  const w = await session.write({ nodeId: speed, attributeId: AttributeIds.Value,
    value: { value: { dataType: DataType.String, value: "fast" } } });
  out({ writeWrongType: code(w) });
  const setpointOutOfRange = await call(session, "SetSetpoint", [str("supply_temp"), dbl(95.0)]);
  out({ setpointOutOfRange });

  // HistoryRead of the last 24 h
  const now = new Date();
  const hist = await session.readHistoryValue(temp, new Date(now.getTime() - 24 * 3600 * 1000), now);
  out({ history: { status: code(hist.statusCode), count: hist.historyData ? hist.historyData.dataValues.length : 0 } });

  // wrong role: the grid operator has no right on class pump
  const grid = await connect("grid", cfg.trusted, "grid");
  out({ gridForce: await call(grid.session, "Force", [str("pump1.speed_ref"), dbl(20), dbl(5), str("x")]) });
  const gw = await grid.session.write({ nodeId: speed, attributeId: AttributeIds.Value,
    value: { value: { dataType: DataType.Double, value: 20.0 } } });
  out({ gridWrite: code(gw) });
  await grid.session.close();
  await grid.client.disconnect();

  // untrusted application certificate
  try {
    const s = await connect("bms", cfg.stranger, "stranger");
    await s.session.close();
    await s.client.disconnect();
    out({ untrusted: "connected" });
  } catch (err) {
    out({ untrusted: String(err.message || err) });
  }

  await sub.terminate();
  await session.close();
  await client.disconnect();
  out({ done: true });
}

main().then(() => process.exit(0)).catch((err) => {
  out({ error: String(err && err.stack ? err.stack : err) });
  process.exit(1);
});
