"""The coordinator's sans-IO handler: duplicates, peer bookings, state, telemetry, grid, clock."""

from __future__ import annotations

import json

import pytest

from edge_runtime.core.points import Quality, Sample
from edge_runtime.federation import state
from edge_runtime.federation.timesync import time_request
from edge_runtime.messages.annex_a import InfrastructureResponse, WorkloadAnnouncement
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

T = 1_800_000_000.0
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
    return WorkloadAnnouncement.from_dict({
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


def test_peer_decisions_are_booked() -> None:
    h = handler()
    peer = InfrastructureResponse.from_dict({
        "PSWD_version": "1.0", "message_type": "infrastructure_response",
        "timestamp": "2027-01-15T08:00:00Z", "workload_id": "peer-1",
        "approval_status": "approved_with_conditions", "approved_power_mw": 0.5,
        "conditions": ["delay_start:PT10S", "ramp_limit_kw_per_s:50", "reason:x", "bogus"]})
    h.handle(f"{B}/workload/response/peer-1", peer.to_json().encode(), T)
    r = h.aggregate.reservations.get("peer-1")
    assert r is not None and r.kw == 500.0 and r.ramp.kw_per_s == 50.0
    assert r.ramp.start == peer.timestamp.timestamp() + 10
    out = h.handle(f"{B}/workload/announce", a1("next", peak_mw=0.5), T)
    assert json.loads(out[0].payload)["approval_status"] == ApprovalStatus.REJECTED.value
    h.handle(f"{B}/workload/response/x", b"garbage", T)  # not ours to judge: ignored
    assert h.counts["peer_decisions"] == 1


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
        assert InfrastructureResponse.from_dict(doc).to_dict() == doc
        assert doc["grid_status"] == {"carbon_intensity_g_co2_kwh": 120.5,
                                      "renewable_energy_available": True,
                                      "demand_response_required": False}
    forward = h.handle(f"{B}/workload/announce", a1("ok-2"), T)[-1]
    body = json.loads(forward.payload)
    assert WorkloadAnnouncement.from_dict(body).workload_id == "ok-2"
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
