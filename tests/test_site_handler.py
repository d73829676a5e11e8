"""The coordinator's sans-IO handler: duplicates, peer bookings, state, telemetry, grid, clock."""

from __future__ import annotations

import json

import pytest

from edge_runtime.core.points import Quality, Sample
from edge_runtime.federation import state
from edge_runtime.federation.coordinator_state import state_json
from edge_runtime.federation.timesync import time_request
from edge_runtime.messages.annex_a import InfrastructureResponse, WorkloadAnnouncement, parse_as
from edge_runtime.messages.models import ApprovalStatus
from edge_runtime.messages.telemetry import (
    PointDef,
    PointType,
    declare_points,
    encode_batch,
    make_batch,
)
from edge_runtime.site.config import SiteConfig
from edge_runtime.site.handler import SiteHandler

T = 1_800_000_000.0  # 2027-01-15T08:00:00Z
KEY = bytes(range(32))  # a test key, generated here
B = "pswd/v1/demo"
REPLY = f"{B}/workload/reply/client-1"
POINTS = declare_points([("rack_meter.power_kw", "kW", PointType.FLOAT)])


def birth(node: str, role: str, session: int = 1,
          points: tuple[PointDef, ...] = POINTS) -> bytes:
    return state.birth_json(state.Identity("demo", node, role, "t"), session=session,
                            wall_s=T, points=points, period_ms=100)


def batch(load_kw: float, ts: float = T, session: int = 1, seq: int = 0) -> bytes:
    return encode_batch(make_batch([(0, Sample(load_kw, Quality.GOOD, ts))], session=session,
                                   seq=seq))


def a1(workload_id: str = "job-1", peak_mw: float = 0.2, stamp: str = "2027-01-15T08:00:00Z"
       ) -> bytes:
    return parse_as(WorkloadAnnouncement, {
        "PSWD_version": "1.0", "message_type": "workload_announcement", "timestamp": stamp,
        "workload_id": workload_id, "workload_type": "hpc",
        "power_profile": {"peak_power_mw": peak_mw, "baseline_power_mw": 0.0,
                          "ramp_rate_mw_per_sec": 0.1}}).to_json().encode()


def handler() -> SiteHandler:
    h = SiteHandler("demo", "site-1", SiteConfig(power_limit_kw=1000.0,
                                                 cooling_capacity_kw={"cdu-01": 5000.0}))
    assert h.handle(f"{B}/rack-01/state", birth("rack-01", "rack"), T) == []
    assert h.handle(f"{B}/cdu-01/state", birth("cdu-01", "cdu", points=()), T) == []
    assert h.handle(f"{B}/rack-01/telemetry", batch(100.0), T) == []
    return h


def test_state_birth_gives_aliases_and_late_will_is_ignored() -> None:
    h = handler()
    assert h.aggregate.snapshot(T).measured_load_kw == 100.0
    h.handle(f"{B}/rack-01/state", birth("rack-01", "rack"), T + 1)  # same birth redelivered
    assert h.aggregate.snapshot(T + 1).measured_load_kw == 100.0  # readings kept
    h.handle(f"{B}/rack-01/state", birth("rack-01", "rack", session=2), T + 1)
    assert not h.aggregate.snapshot(T + 1).power_known  # a new session: old readings gone
    will = state.death_json(state.Identity("demo", "rack-01", "rack", "t"), session=1,
                            wall_s=T, reason="connection lost")
    h.handle(f"{B}/rack-01/state", will, T + 2)  # the old connection's will, arriving late
    assert h.aggregate.nodes["rack-01"].online
    death = state.death_json(state.Identity("demo", "rack-01", "rack", "t"), session=2,
                             wall_s=T + 3, reason="shutdown")
    h.handle(f"{B}/rack-01/state", death, T + 3)
    assert not h.aggregate.nodes["rack-01"].online
    out = h.handle(f"{B}/rack-01/state", b'{"state": "sleeping"}', T)
    assert out[0].topic == f"{B}/site-1/error"
    assert json.loads(out[0].payload)["errors"][0]["field"] == "node"


def test_duplicate_announcement_answered_again_without_second_booking() -> None:
    h = handler()
    first = h.handle(f"{B}/workload/announce", a1(), T, response_topic=REPLY,
                     correlation_data=b"c1")
    assert [o.topic for o in first] == [REPLY, f"{B}/workload/response/job-1",
                                        f"{B}/workload/prepare"]
    assert first[0].correlation_data == b"c1" and first[1].correlation_data is None
    again = h.handle(f"{B}/workload/announce", a1(), T + 0.1, response_topic=REPLY,
                     correlation_data=b"c2")
    assert [o.payload for o in again] == [first[0].payload, first[1].payload]
    assert again[0].correlation_data == b"c2"
    assert h.counts["duplicates"] == 1 and h.aggregate.reservations.kw == 200.0
    # an updated announcement (new timestamp) replaces the booking
    h.handle(f"{B}/workload/announce", a1(peak_mw=0.3, stamp="2027-01-15T08:00:05Z"), T + 1)
    assert h.aggregate.reservations.kw == 300.0


def signed_handler(node: str = "site-1", key: bytes | None = KEY,
                   power_limit_kw: float = 1000.0) -> SiteHandler:
    h = SiteHandler("demo", node, SiteConfig(power_limit_kw=power_limit_kw, peer_key=key,
                                             cooling_capacity_kw={"cdu-01": 5000.0}))
    h.handle(f"{B}/rack-01/state", birth("rack-01", "rack"), T)
    h.handle(f"{B}/cdu-01/state", birth("cdu-01", "cdu", points=()), T)
    h.handle(f"{B}/rack-01/telemetry", batch(100.0), T)
    other = "site-2" if node == "site-1" else "site-1"  # another instance is online
    h.handle(f"{B}/coordinator/{other}/state", state_json(
        "demo", other, online=True, timestamp="2027-01-15T08:00:00Z"), T)
    return h


def test_decisions_go_to_peers_only_while_another_instance_is_online() -> None:
    h = handler()
    topics = [o.topic for o in h.handle(f"{B}/workload/announce", a1("a"), T)]
    assert f"{B}/coordinator/site-1/decision" not in topics  # alone: nobody to tell
    h.handle(f"{B}/coordinator/site-1/state", state_json(  # its own state changes nothing
        "demo", "site-1", online=True, timestamp="2027-01-15T08:00:00Z"), T)
    assert h.other_instances.online == ()
    h.handle(f"{B}/coordinator/site-2/state", state_json(
        "demo", "site-2", online=True, timestamp="2027-01-15T08:00:00Z"), T)
    topics = [o.topic for o in h.handle(f"{B}/workload/announce", a1("b"), T)]
    assert topics[-1] == f"{B}/coordinator/site-1/decision"
    assert h.get_status(T)["other_instances_online"] == ["site-2"]


def admitted_by(peer: SiteHandler, workload_id: str, now: float = T) -> bytes:
    """What `peer` publishes for its peers when it admits `workload_id`."""
    out = peer.handle(f"{B}/workload/announce", a1(workload_id, peak_mw=0.5), now)
    [mine] = [o for o in out if o.topic == f"{B}/coordinator/{peer.me.node}/decision"]
    return mine.payload


def test_peer_decisions_signed_by_a_coordinator_are_booked() -> None:
    h, peer = signed_handler(), signed_handler("site-2")
    body = admitted_by(peer, "peer-1")
    h.handle(f"{B}/coordinator/site-2/decision", body, T + 1)
    r = h.aggregate.reservations.get("peer-1")
    assert r is not None and r.kw == 500.0 and r.ramp.kw_per_s == 100.0
    assert r.ramp.start == T and h.counts["peer_decisions"] == 1
    out = h.handle(f"{B}/workload/announce", a1("next", peak_mw=0.5), T + 1)
    assert json.loads(out[0].payload)["approval_status"] == ApprovalStatus.REJECTED.value
    # the same decision again (a replay) and a changed one are refused
    h.handle(f"{B}/coordinator/site-2/decision", body, T + 2)
    forged = json.loads(body) | {"approved_power_kw": 10.0}
    h.handle(f"{B}/coordinator/site-2/decision", json.dumps(forged).encode(), T + 2)
    assert h.peers.refused == {"nonce": 1, "signature": 1}
    assert h.counts["peer_decisions"] == 1 and h.counts["peer_refused"] == 2


FORGED_A2 = InfrastructureResponse.from_dict({
    "PSWD_version": "1.0", "message_type": "infrastructure_response",
    "timestamp": "2099-01-01T00:00:00Z", "workload_id": "forged",
    "approval_status": "approved", "approved_power_mw": 1000.0}).to_json().encode()


def test_a_forged_a2_on_the_response_topic_books_nothing() -> None:
    # finding 10: anyone's A.2 on workload/response/+ was booked (1,000 MW until 2099)
    h = handler()
    assert h.handle(f"{B}/workload/response/forged", FORGED_A2, T) == []
    assert h.aggregate.reservations.get("forged") is None
    assert json.loads(h.handle(f"{B}/workload/announce", a1(), T)[0].payload)[
        "approval_status"] == "approved"
    assert all("workload/response" not in t for t, _ in h.subscriptions())


def test_unsigned_wrongly_signed_or_absurd_peer_decisions_are_refused(
        caplog: pytest.LogCaptureFixture) -> None:
    h = signed_handler()
    unsigned = admitted_by(signed_handler("site-2", key=None), "u-1")
    other_key = admitted_by(signed_handler("site-2", key=b"\x01" * 32), "k-1")
    from_site3 = admitted_by(signed_handler("site-3"), "i-1")
    for body, topic in ((unsigned, "site-2"), (other_key, "site-2"), (from_site3, "site-2"),
                        (b"{", "site-2"), (b"[]", "site-2")):
        h.handle(f"{B}/coordinator/{topic}/decision", body, T)
    # without keys (ACL-only), the body must still make sense
    acl = handler()
    future = json.loads(admitted_by(signed_handler("site-2", None, 1e9), "x", T))
    for change in ({"timestamp": "2099-01-01T00:00:00Z"}, {"start_time": "2099-01-01T00:00:00Z"},
                   {"timestamp": "1970-01-01T00:00:00Z"}, {"approved_power_kw": 1e6},
                   {"approved_power_kw": float("nan")}, {"approval_status": "rejected"},
                   {"instance": "site-9"}):
        acl.handle(f"{B}/coordinator/site-2/decision", json.dumps(future | change).encode(), T)
    assert not acl.aggregate.reservations and acl.counts["peer_refused"] == 7
    assert set(acl.peers.refused) == {"timestamp", "start_time", "approved_power_kw",
                                      "approval_status", "instance"}
    assert not h.aggregate.reservations and h.counts["peer_refused"] == 5
    assert set(h.peers.refused) == {"signature", "instance", "(root)"}
    # logged once per coordinator (two here) inside LOG_EVERY_S, not once per refusal
    assert len([r for r in caplog.records if "peer decision" in r.message]) == 2


def test_a_rejected_reannouncement_keeps_the_admitted_booking() -> None:
    # finding 10: re-announcing an admitted workload_id with a rejected body freed its booking
    h = handler()
    h.handle(f"{B}/workload/announce", a1("job-1", peak_mw=0.5), T)
    assert h.aggregate.reservations.kw == 500.0
    out = h.handle(f"{B}/workload/announce",
                   a1("job-1", peak_mw=5.0, stamp="2027-01-15T08:00:01Z"), T + 1)
    doc = json.loads(out[0].payload)
    assert doc["approval_status"] == "rejected"
    assert "reason:the earlier admission of job-1 stands" in doc["conditions"]
    assert h.aggregate.reservations.kw == 500.0 and h.counts["kept_on_reannounce"] == 1
    assert json.loads(h.handle(f"{B}/workload/announce", a1("job-2", peak_mw=0.5), T + 1)[0]
                      .payload)["approval_status"] == "rejected"  # the booking still counts
    # an admitted re-announcement replaces it
    h.handle(f"{B}/workload/announce", a1("job-1", peak_mw=0.1, stamp="2027-01-15T08:00:02Z"),
             T + 2)
    assert h.aggregate.reservations.kw == 100.0


@pytest.mark.parametrize(("stamp", "earliest", "field"), [
    ("1970-01-01T00:00:00Z", None, "timestamp"),
    ("2099-01-01T00:00:00Z", None, "timestamp"),
    ("2027-01-15T07:54:59Z", None, "timestamp"),  # 301 s old, max_clock_skew_s 300
    ("2027-01-15T08:00:00Z", "2099-01-01T00:00:00Z", "timing_constraints.earliest_start_time"),
])
def test_announcement_times_outside_the_window_are_refused(stamp: str, earliest: str | None,
                                                          field: str) -> None:
    h = handler()
    doc = json.loads(a1("t-1", stamp=stamp))
    if earliest:
        doc["timing_constraints"] = {"earliest_start_time": earliest}
    out = h.handle(f"{B}/workload/announce", json.dumps(doc).encode(), T, response_topic=REPLY)
    assert [o.topic for o in out] == [f"{B}/site-1/error", REPLY]
    assert json.loads(out[1].payload)["errors"][0]["field"] == field
    assert h.counts["clock_refused"] == 1 and not h.aggregate.reservations
    ok = json.loads(a1("t-2", stamp="2027-01-15T07:55:01Z"))
    ok["timing_constraints"] = {"earliest_start_time": "2027-01-16T07:59:00Z"}
    out = h.handle(f"{B}/workload/announce", json.dumps(ok).encode(), T)
    assert json.loads(out[0].payload)["approval_status"] == "approved"


def test_telemetry_without_birth_asks_rebirth_once_per_interval() -> None:
    h = handler()
    first = h.handle(f"{B}/rack-02/telemetry", batch(5.0), T)
    assert [o.topic for o in first] == [f"{B}/rack-02/cmd/rebirth"]
    assert h.handle(f"{B}/rack-02/telemetry", batch(5.0, seq=1), T + 1) == []
    assert len(h.handle(f"{B}/rack-02/telemetry", batch(5.0, seq=2), T + 11)) == 1
    # a batch of a newer session than the birth: aliases may differ, ask again
    assert h.handle(f"{B}/rack-01/telemetry", batch(5.0, session=9), T)[0].topic.endswith(
        "/cmd/rebirth")
    bad = h.handle(f"{B}/rack-01/telemetry", b"\xff\x00", T)
    assert bad[0].topic == f"{B}/site-1/error" and h.counts["telemetry_errors"] == 1


def test_grid_status_and_errors() -> None:
    h = handler()
    h.handle(f"{B}/grid/status", b'{"PSWD_version":"1.0","timestamp":"2027-01-15T08:00:00Z",'
             b'"grid_available":false}', T)
    out = h.handle(f"{B}/workload/announce", a1(), T)
    assert "grid unavailable" in json.loads(out[0].payload)["conditions"][0]
    err = h.handle(f"{B}/grid/status", b'{"PSWD_version":"1.0"}', T)
    assert json.loads(err[0].payload)["errors"] == [
        {"field": "timestamp", "reason": "required field missing"}]


def test_time_request_answered_to_response_topic_or_node_topic() -> None:
    h = handler()
    mine = f"{B}/rack-01/time"
    out = h.handle(f"{B}/time/request", time_request("rack-01", 5.0), T, response_topic=mine,
                   correlation_data=b"k")
    reply = json.loads(out[0].payload)
    assert out[0].topic == mine and out[0].correlation_data == b"k"
    assert (reply["t1"], reply["t2"], reply["t3"]) == (5.0, T, T)
    assert h.handle(f"{B}/time/request", time_request("rack-01", 5.0), T)[0].topic == \
        f"{B}/rack-01/time"
    err = h.handle(f"{B}/time/request", b'{"node": "r", "t1": "soon"}', T)
    assert json.loads(err[0].payload)["errors"][0]["field"] == "t1"


def test_a_bug_becomes_an_error_answer_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    h = handler()

    def boom(*args: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(h.aggregate, "snapshot", boom)
    out = h.handle(f"{B}/workload/announce", a1(), T)
    assert "internal error: kaboom" in json.loads(out[0].payload)["error"]
    assert h.counts["announcements"] == 1


def test_hand_built_a2_is_what_the_model_would_write() -> None:
    from edge_runtime.messages.annex_a import validate

    h = handler()
    h.handle(f"{B}/grid/status", b'{"PSWD_version":"1.0","timestamp":"2027-01-15T08:00:00Z",'
             b'"carbon_intensity_g_co2_kwh":120.5,"renewable_energy_available":true}', T)
    for body in (a1("ok-1"), a1("no-1", peak_mw=5.0)):
        raw = h.handle(f"{B}/workload/announce", body, T + 0.123)[0].payload
        doc = json.loads(raw)
        assert validate(doc) == []
        assert parse_as(InfrastructureResponse, doc).to_dict() == doc
        assert doc["grid_status"] == {"carbon_intensity_g_co2_kwh": 120.5,
                                      "renewable_energy_available": True,
                                      "demand_response_required": False}
    forward = h.handle(f"{B}/workload/announce", a1("ok-2"), T)[-1]
    body = json.loads(forward.payload)
    assert parse_as(WorkloadAnnouncement, body).workload_id == "ok-2"
    assert body["site_decision"]["approval_status"] == "approved"
    # an announcement that already carries the key: rebuilt, the site's decision wins
    sneaky = json.loads(a1("ok-3"))
    sneaky["site_decision"] = {"approval_status": "approved", "approved_power_kw": 1e9}
    h.handle(f"{B}/rack-01/telemetry", batch(100.0, ts=T + 10, seq=1), T + 10)
    out = h.handle(f"{B}/workload/announce", json.dumps(sneaky).encode(), T + 10)[-1]
    assert json.loads(out.payload)["site_decision"]["approved_power_kw"] == 200.0


def test_response_topics_are_confined() -> None:
    h = handler()
    for foreign in (f"{B}/rack-01/cmd/thermal_control", f"{B}/workload/reply/", "a/b",
                    f"{B}/workload/reply/+"):
        out = h.handle(f"{B}/workload/announce", a1(f"j-{len(h._recent)}"), T,
                       response_topic=foreign)
        assert foreign not in [o.topic for o in out]
    assert h.counts["foreign_response_topics"] == 4
    out = h.handle(f"{B}/time/request", time_request("rack-01", 1.0), T,
                   response_topic=f"{B}/rack-01/cmd/rebirth")
    assert [o.topic for o in out] == [f"{B}/rack-01/time"]
    bad = h.handle(f"{B}/workload/announce", b"{", T, response_topic=f"{B}/rack-01/cmd/x")
    assert [o.topic for o in bad] == [f"{B}/site-1/error"]
