"""What a site coordinator does with each MQTT message, sans-IO: message in, publishes out.

    announce (A.1)            validate -> admission -> A.2 on workload/response/{id} and on the
                              MQTT 5 response topic (with the correlation data); accepted ones
                              are reserved and published once on workload/prepare, where the
                              rack and CDU nodes pick them up
    coordinator/+/decision    another instance's admission (peer.py: signed, from the
                              coordinator-only prefix): reserve it here too, so instances
                              behind one shared subscription do not hand out the same headroom;
                              A.2s on workload/response/+ are for workloads and never booked
    {node}/state              birth / death (federation/state.py)
    {node}/telemetry          CBOR births and batches (messages/telemetry.py) -> aggregate
    grid/status               GridState -> aggregate
    time/request              clock round trip (federation/timesync.py)
Anything invalid is answered on this coordinator's error topic with the reasons (and on the
response topic when the requester gave one), counted, and never raises. An A.1 whose
`timestamp` is further than `[site] max_clock_skew_s` from this coordinator's clock, or
whose `timing_constraints.earliest_start_time` lies more than `max_start_ahead_s` ahead, is
invalid in that sense (the error names the field; counted as `clock_refused`).

A re-announcement of an admitted workload_id (a new timestamp) is decided without its own
booking in the way; if it is rejected, the admitted booking stands (the A.2 says so), and
only an admitted re-announcement replaces it.

Response topics are the requester's choice, so they are confined: announcements are answered
there only under `pswd/v1/{site}/workload/reply/`, clock requests only on a
`pswd/v1/{site}/{node}/time` topic; anything else (say, a node's cmd topic) is not published
to and is counted as `foreign_response_topics` (broker ACLs are the real fence).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge_runtime import PSWD_VERSION
from edge_runtime.federation.coordinator_state import CoordinatorPresence
from edge_runtime.federation.state import parse_state
from edge_runtime.federation.timesync import parse_time_request, time_reply, time_reply_topic
from edge_runtime.federation.timesync import time_request_topic as _time_request_topic
from edge_runtime.federation.topics import ROOT, NodeTopics, SiteTopics, check_level
from edge_runtime.messages.annex_a import (
    INFRASTRUCTURE_RESPONSE,
    MESSAGE_TYPES,
    MessageError,
    ValidationProblem,
    WorkloadAnnouncement,
    format_datetime,
    parse_message,
    validate,
)
from edge_runtime.messages.models import ApprovalStatus
from edge_runtime.messages.telemetry import Birth, TelemetryError, decode_batch, decode_birth
from edge_runtime.site.admission import Condition, ConditionKind, Decision, SiteSnapshot, decide
from edge_runtime.site.aggregate import SiteAggregate, parse_grid_status
from edge_runtime.site.config import SiteConfig
from edge_runtime.site.fast_a1 import parse_announcement_fast
from edge_runtime.site.peer import PeerDecisions, PeerRefused, decision_body

log = logging.getLogger(__name__)
_RECENT = 4096  # answered announcements remembered for duplicate (QoS 1 redelivery) detection
REBIRTH_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    correlation_data: bytes | None = None


def _iso(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


class SiteHandler:
    """The coordinator's decisions and bookkeeping; the adapter publishes what it returns."""

    def __init__(self, site: str, node: str, config: SiteConfig,
                 aggregate: SiteAggregate | None = None) -> None:
        self.topics = SiteTopics(site)
        self.me = NodeTopics(site, node)
        self.config = config
        self.aggregate = aggregate or SiteAggregate(config)
        self.time_request_topic = _time_request_topic(site)
        self.peer_decisions = self.topics.all_coordinator_decisions
        self._peer_prefix = self.topics.coordinator_prefix
        self._my_decisions = self.topics.coordinator_decision(node)
        self.peers = PeerDecisions(site, config)
        # the other instances online (their liveness states): decisions are published for
        # them only while there is one (QoS 0, not retained: one starting later would not
        # get the earlier ones anyway)
        self.other_instances = CoordinatorPresence()
        self._reply_prefix = self.topics.reply_prefix
        self._thermal = {"cooling_system_type": config.cooling_system_type.value,
                         "heat_recovery_available": config.heat_recovery_available,
                         "municipal_heat_integration": config.municipal_heat_integration}
        self._births: dict[str, Birth] = {}
        self._sessions: dict[str, int] = {}
        self._rebirth_asked: dict[str, float] = {}
        self._recent: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self.counts = {"announcements": 0, "approved": 0, "approved_with_conditions": 0,
                       "rejected": 0, "invalid": 0, "duplicates": 0, "forwarded": 0,
                       "telemetry_batches": 0, "telemetry_errors": 0, "peer_decisions": 0,
                       "peer_refused": 0, "clock_refused": 0, "kept_on_reannounce": 0,
                       "foreign_response_topics": 0}
        self.last_decision: tuple[str, ApprovalStatus, tuple[str, ...]] | None = None
        for kind in MESSAGE_TYPES:  # compile the schema validators now, not on the first A.1
            validate({"message_type": kind})

    def subscriptions(self) -> list[tuple[str, int]]:
        """(topic filter, QoS) to subscribe; the announce and time topics are shared."""
        group = self.config.share_group
        return [(self.topics.shared_announce(group), 1),
                (f"$share/{group}/{self.time_request_topic}", 0),
                # QoS 0: a lost peer booking only costs precision, and it saves a PUBACK for
                # each of our own if they come back (MQTT 5 No Local prevents that)
                (self.peer_decisions, 0), (self.topics.all_coordinator_states, 1),
                (self.topics.all_states, 1), (self.topics.all_telemetry, 0),
                (self.topics.grid_status, 1)]

    def handle(self, topic: str, payload: bytes, now: float, *,
               response_topic: str | None = None,
               correlation_data: bytes | None = None) -> list[Outgoing]:
        """Dispatch one received message at UTC time `now`."""
        try:
            if topic == self.topics.announce:
                return self.on_announce(payload, now, response_topic, correlation_data)
            if topic == self.time_request_topic:
                return self.on_time_request(payload, now, response_topic, correlation_data)
            if topic == self.topics.grid_status:
                return self.on_grid_status(payload)
            parts = topic.split("/")
            if topic.startswith(self._peer_prefix):
                if len(parts) != 6 or parts[4] == self.me.node:
                    return []
                if parts[5] == "decision":
                    return self.on_peer_decision(parts[4], payload, now)
                if parts[5] == "state":
                    self.other_instances.update(parts[4], payload)
                return []
            if len(parts) == 5 and f"{parts[0]}/{parts[1]}" == ROOT:
                if parts[4] == "state":
                    return self.on_state(parts[3], payload, now)
                if parts[4] == "telemetry":
                    return self.on_telemetry(parts[3], payload, now)
        except Exception as exc:  # a bug must not take the coordinator down with it
            log.exception("site handler failed on %s", topic)
            return [self._error(topic, [ValidationProblem("(root)", f"internal error: {exc}")],
                                now)]
        return []

    # --- announcements ----------------------------------------------------------------------

    def on_announce(self, payload: bytes, now: float, response_topic: str | None,
                    correlation: bytes | None) -> list[Outgoing]:
        """Answer one A.1."""
        self.counts["announcements"] += 1
        try:
            msg = parse_announcement_fast(payload) or parse_message(payload)
            if not isinstance(msg, WorkloadAnnouncement):
                raise MessageError([ValidationProblem(
                    "message_type", f"must be workload_announcement on {self.topics.announce}, "
                                    f"got {msg.MESSAGE_TYPE}")])
            try:
                check_level("workload_id", msg.workload_id)
            except ValueError as exc:
                raise MessageError([ValidationProblem("workload_id", str(exc))]) from None
            self._check_times(msg, now)
        except MessageError as exc:
            self.counts["invalid"] += 1
            out = [self._error(self.topics.announce, exc.problems, now, payload)]
            if self._reply_ok(response_topic):
                assert response_topic is not None
                out.append(Outgoing(response_topic, out[0].payload,
                                    correlation_data=correlation))
            return out
        stamp = format_datetime(msg.timestamp)
        seen = self._recent.get(msg.workload_id)
        if seen is not None and seen[0] == stamp:  # a redelivery: same answer, no new booking
            self.counts["duplicates"] += 1
            return self._answers(msg.workload_id, seen[1], response_topic, correlation)
        # an update is decided without its own booking in the way, and replaces it only if
        # admitted: a rejected (or forged) re-announcement never frees an admitted booking
        admitted = self.aggregate.reservations.get(msg.workload_id)
        self.aggregate.reservations.remove(msg.workload_id)
        snap = self.aggregate.snapshot(now)
        decision = decide(msg, snap, now)
        if admitted is not None and decision.status is ApprovalStatus.REJECTED:
            self.aggregate.reservations.add(admitted)
            self.counts["kept_on_reannounce"] += 1
            decision = dataclasses.replace(decision, conditions=(*decision.conditions, Condition(
                ConditionKind.REASON, f"the earlier admission of {msg.workload_id} stands")))
        body = self._response(msg.workload_id, decision, snap, now)
        self._recent[msg.workload_id] = (stamp, body)
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        self.counts[decision.status.value] += 1
        self.last_decision = (msg.workload_id, decision.status, decision.condition_strings())
        out = self._answers(msg.workload_id, body, response_topic, correlation)
        if decision.status is not ApprovalStatus.REJECTED:
            self.aggregate.reserve(msg.workload_id, decision, now)
            out.extend(self._forward(payload, decision, now))
            if self.other_instances.online:  # for them (peer.py), after what nodes and
                # workloads wait for
                out.append(Outgoing(self._my_decisions, decision_body(
                    self.topics.site, self.me.node, msg.workload_id, decision, now,
                    self.config.peer_key), qos=0))
        return out

    def _check_times(self, msg: WorkloadAnnouncement, now: float) -> None:
        """MessageError naming the field when a time lies outside the configured window."""
        problems = []
        skew, ahead = self.config.max_clock_skew_s, self.config.max_start_ahead_s
        off = msg.timestamp.timestamp() - now
        if abs(off) > skew:
            problems.append(ValidationProblem("timestamp", (
                f"{off:+.0f} s from the site coordinator's clock, beyond max_clock_skew_s "
                f"{skew:g} s (a stale or replayed announcement, or a wrong clock)")))
        earliest = msg.timing_constraints.earliest_start_time if msg.timing_constraints else None
        if earliest is not None and earliest.timestamp() - now > ahead:
            problems.append(ValidationProblem("timing_constraints.earliest_start_time", (
                f"{earliest.timestamp() - now:.0f} s ahead, beyond max_start_ahead_s {ahead:g} s")))
        if problems:
            self.counts["clock_refused"] += 1
            raise MessageError(problems)

    def _answers(self, workload_id: str, body: bytes, response_topic: str | None,
                 correlation: bytes | None) -> list[Outgoing]:
        out = [Outgoing(self.topics.response(workload_id), body)]
        if self._reply_ok(response_topic):
            assert response_topic is not None
            out.insert(0, Outgoing(response_topic, body, correlation_data=correlation))
        return out

    def _reply_ok(self, topic: str | None, prefix: str = "", suffix: str = "") -> bool:
        """True for a response topic we may publish to (see the module docstring)."""
        if not topic:
            return False
        prefix = prefix or self._reply_prefix
        ok = (topic.startswith(prefix) and topic.endswith(suffix) and "+" not in topic
              and "#" not in topic and len(topic) > len(prefix) + len(suffix))
        if not ok:
            self.counts["foreign_response_topics"] += 1
        return ok

    def _response(self, workload_id: str, d: Decision, snap: SiteSnapshot,
                  now: float) -> bytes:
        """The A.2 as JSON; its capacity figures are those the decision was made on.

        Built as a plain dict in InfrastructureResponse.to_dict() order (None fields omitted)
        rather than through the model: this is the hot path, and the test suite checks that
        the model reads it back identically and that it validates."""
        g = snap.grid
        grid: dict[str, Any] = {}
        if g.carbon_intensity_g_co2_kwh is not None:
            grid["carbon_intensity_g_co2_kwh"] = g.carbon_intensity_g_co2_kwh
        if g.renewable_energy_available is not None:
            grid["renewable_energy_available"] = g.renewable_energy_available
        grid["demand_response_required"] = g.demand_response_required
        doc: dict[str, Any] = {
            "PSWD_version": PSWD_VERSION, "message_type": INFRASTRUCTURE_RESPONSE,
            "timestamp": _iso(now), "workload_id": workload_id,
            "approval_status": d.status.value, "approved_power_mw": d.approved_kw / 1000.0,
            "infrastructure_capacity": {
                "available_power_mw": snap.power_headroom_kw / 1000.0,
                "cooling_capacity_kw": snap.cooling_headroom_kw,
                "battery_storage_available": snap.battery_available},
            "thermal_coordination": self._thermal, "grid_status": grid}
        if d.conditions:
            doc["conditions"] = list(d.condition_strings())
        return _json(doc)

    def _forward(self, raw: bytes, d: Decision, now: float) -> list[Outgoing]:
        """Tell the rack and CDU nodes what is coming, so they prepare (pre-cool, hold SOC).

        One message on workload/prepare, which every node subscribes to, rather than one per
        node on its cmd/workload: the broker fans it out, so the coordinator's cost of an
        admission does not grow with the number of racks. Published only while a node of a
        forwarded role is online. The body is the A.1 itself (nodes validate it as one; the
        schema allows extra properties) plus `site_decision`: approval_status, start_time
        (RFC 3339), approved_power_kw, heat_kw, ramp_kw_per_s, conditions, and roles (the
        node roles that should prepare; others ignore it)."""
        roles = self.config.forward_roles
        if not any(s.online and s.role in roles for s in self.aggregate.nodes.values()):
            return []
        decision = {"timestamp": _iso(now), "approval_status": d.status.value,
                    "start_time": _iso(d.start), "approved_power_kw": d.approved_kw,
                    "heat_kw": d.heat_kw, "ramp_kw_per_s": d.ramp_kw_per_s,
                    "conditions": list(d.condition_strings()), "roles": list(roles)}
        text = raw.rstrip()
        if b'"site_decision"' in text or not text.endswith(b"}"):
            doc = json.loads(raw)  # the sender used the key itself: rebuild, ours wins
            body = _json({**doc, "site_decision": decision})
        else:  # splice into the validated JSON object rather than re-encode the whole A.1
            body = text[:-1] + b',"site_decision":' + _json(decision) + b"}"
        self.counts["forwarded"] += 1
        return [Outgoing(self.topics.prepare, body)]

    def on_peer_decision(self, instance: str, payload: bytes, now: float) -> list[Outgoing]:
        """Book what another instance admitted, if it passes peer.py's checks."""
        try:
            workload_id, decision = self.peers.check(instance, payload, now)
        except PeerRefused as why:
            self.counts["peer_refused"] += 1
            self.peers.refuse(instance, why, now)
            return []
        self.aggregate.reserve(workload_id, decision, now)
        self.counts["peer_decisions"] += 1
        return []

    # --- site state ---------------------------------------------------------------------------

    def on_state(self, node: str, payload: bytes, now: float) -> list[Outgoing]:
        """Birth or death of a node (retained, so a starting coordinator sees every node).

        A birth's point list gives the telemetry aliases even if the CBOR birth was missed;
        a death older than the node's current session (a late will) is ignored."""
        if not payload:  # a cleared retained state: the node was decommissioned
            self.aggregate.node_offline(node, now)
            return []
        try:
            st = parse_state(payload)
        except ValueError as exc:
            field, _, reason = str(exc).removeprefix("state: ").partition(": ")
            return [self._error(f"{self.topics.base}/{node}/state",
                                [ValidationProblem(field, reason or field)], now)]
        if st.online:
            known = self.aggregate.nodes.get(node)
            if known is not None and known.online and self._sessions.get(node) == st.session:
                return []  # the same birth again (a retained redelivery): keep the readings
            self.aggregate.node_online(node, st.role, now)
            self._sessions[node] = st.session
            self._births[node] = Birth(st.session, int(st.timestamp.timestamp() * 1000),
                                       st.points)
        elif st.session >= self._sessions.get(node, 0):
            self.aggregate.node_offline(node, now)
        return []

    def on_telemetry(self, node: str, payload: bytes, now: float) -> list[Outgoing]:
        """A CBOR birth (aliases) or batch (samples) of one node."""
        birth = self._births.get(node)
        try:
            batch = decode_batch(payload, birth=birth)
        except TelemetryError as exc:
            if str(exc).startswith("key 1 (kind): expected 0"):
                try:
                    self._births[node] = decode_birth(payload)
                    return []
                except TelemetryError as exc2:
                    exc = exc2
            elif birth is not None and "but the birth is of session" in str(exc):
                return self._ask_rebirth(node, now)
            self.counts["telemetry_errors"] += 1
            return [self._error(f"{self.topics.base}/{node}/telemetry",
                                [ValidationProblem("(root)", str(exc))], now)]
        if birth is None:
            return self._ask_rebirth(node, now)
        self.counts["telemetry_batches"] += 1
        self.aggregate.update_points(node, batch.named(birth))
        return []

    def _ask_rebirth(self, node: str, now: float) -> list[Outgoing]:
        """Batches without their birth: ask the node to republish it (at most every 10 s)."""
        if now - self._rebirth_asked.get(node, -1e18) < REBIRTH_INTERVAL_S:
            return []
        self._rebirth_asked[node] = now
        try:
            topic = NodeTopics(self.topics.site, node).cmd("rebirth")
        except ValueError:
            return []
        return [Outgoing(topic, _json({"PSWD_version": PSWD_VERSION, "timestamp": _iso(now),
                                       "kind": "rebirth",
                                       "reason": "telemetry without a known birth"}))]

    def on_grid_status(self, payload: bytes) -> list[Outgoing]:
        """A grid/status update."""
        try:
            self.aggregate.update_grid(parse_grid_status(payload))
        except MessageError as exc:
            return [self._error(self.topics.grid_status, exc.problems, None)]
        return []

    def on_time_request(self, payload: bytes, now: float, response_topic: str | None,
                        correlation: bytes | None) -> list[Outgoing]:
        """Answer a clock round trip; t3 is taken as late as possible by the caller's `now`."""
        try:
            node, t1 = parse_time_request(payload)
            topic = time_reply_topic(self.topics.site, node)
            if response_topic and self._reply_ok(response_topic, f"{self.topics.base}/",
                                                 "/time"):
                topic = response_topic
        except ValueError as exc:
            field, _, reason = str(exc).partition(": ")
            return [self._error(self.time_request_topic, [ValidationProblem(field, reason)],
                                now)]
        return [Outgoing(topic, time_reply(t1, now, now), qos=0, correlation_data=correlation)]

    # --- errors -------------------------------------------------------------------------------

    def _error(self, source: str, problems: tuple[ValidationProblem, ...] |
               list[ValidationProblem], now: float | None, payload: bytes = b"") -> Outgoing:
        doc: dict[str, Any] = {
            "PSWD_version": PSWD_VERSION,
            "timestamp": _iso(now if now is not None else datetime.now(UTC).timestamp()),
            "source_topic": source,
            "error": "; ".join(str(p) for p in problems),
            "errors": [{"field": p.path, "reason": p.reason} for p in problems]}
        wid = _workload_id(payload)
        if wid is not None:
            doc["workload_id"] = wid
        log.warning("invalid message on %s: %s", source, doc["error"])
        return Outgoing(self.me.error, _json(doc))

    def get_status(self, now: float) -> dict[str, Any]:
        """Counters, the last decision and the aggregate."""
        last = None
        if self.last_decision is not None:
            wid, status, conds = self.last_decision
            last = {"workload_id": wid, "approval_status": status.value,
                    "conditions": list(conds)}
        return {"counts": dict(self.counts), "last_decision": last,
                "other_instances_online": list(self.other_instances.online),
                "aggregate": self.aggregate.get_status(now)}


def _workload_id(payload: bytes) -> str | None:
    """The workload_id of a (possibly invalid) announcement, so errors can be matched to it."""
    if not payload or len(payload) > 65536:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    wid = doc.get("workload_id") if isinstance(doc, dict) else None
    return wid if isinstance(wid, str) else None
