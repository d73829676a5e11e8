"""Site aggregate: births, deaths, fresh telemetry, CDU heat, grid status, reservations."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_runtime.config.reader import ConfigError
from edge_runtime.core.points import Quality, Sample
from edge_runtime.messages.models import ApprovalStatus, MessageError
from edge_runtime.site.admission import Decision
from edge_runtime.site.aggregate import SiteAggregate, parse_grid_status
from edge_runtime.site.config import SiteConfig, read_site_section

T = 1_800_000_000.0
CFG = SiteConfig(power_limit_kw=1000.0, cooling_capacity_kw={"cdu-01": 900.0},
                 reservation_hold_s=60.0)


def good(v: float, ts: float = T) -> Sample:
    return Sample(v, Quality.GOOD, ts)


def site() -> SiteAggregate:
    agg = SiteAggregate(CFG)
    agg.node_online("rack-01", "rack", T)
    agg.node_online("rack-02", "rack", T)
    agg.node_online("cdu-01", "cdu", T)
    agg.update_points("rack-01", [("rack_meter.power_kw", good(200.0)),
                                  ("battery.soc_pct", good(80.0)),
                                  ("battery.w_dis_cha_max_kw", good(50.0))])
    agg.update_points("rack-02", [("rack_meter.power_kw", good(100.0)),
                                  ("battery.soc_pct", good(10.0)),
                                  ("battery.w_dis_cha_max_kw", good(50.0))])
    return agg


def test_load_battery_and_cooling_from_telemetry() -> None:
    s = site().snapshot(T + 1)
    assert s.measured_load_kw == 300.0 and s.power_headroom_kw == 700.0
    assert s.battery_available and s.battery_discharge_kw == 50.0  # rack-02 below min SOC
    assert s.cooling_capacity_kw == 900.0
    assert s.heat_load_kw == 300.0  # no CDU readings: the racks' load stands in
    assert s.power_known


def test_cdu_heat_from_flow_and_delta_t_and_leak_removes_capacity() -> None:
    agg = site()
    agg.update_points("cdu-01", [("flow.flow", good(600.0)),  # 10 kg/s
                                 ("supply_temp.temperature", good(30.0)),
                                 ("return_temp.temperature", good(36.0))])
    assert agg.snapshot(T).heat_load_kw == pytest.approx(10 * 4.186 * 6)
    agg.update_points("cdu-01", [("leak.leak_state", good(1.0, T + 1))])
    assert agg.snapshot(T + 1).cooling_capacity_kw == 0.0


def test_stale_bad_and_offline_readings_do_not_count() -> None:
    agg = site()
    agg.update_points("rack-02", [("rack_meter.power_kw", Sample.bad("comms lost", T + 1))])
    assert agg.snapshot(T + 1).measured_load_kw == 200.0
    agg.node_offline("rack-01", T + 1)
    s = agg.snapshot(T + 1)
    assert not s.power_known and "no fresh rack power telemetry" in s.unknown_reason
    agg.node_online("rack-01", "rack", T + 2)  # rebirth clears the old session's points
    assert not agg.snapshot(T + 2).power_known
    agg.update_points("rack-01", [("rack_meter.power_kw", good(250.0, T + 2))])
    assert agg.snapshot(T + 2).measured_load_kw == 250.0
    assert not agg.snapshot(T + 2 + CFG.telemetry_max_age_s + 0.1).power_known


def test_older_sample_never_replaces_newer() -> None:
    agg = site()
    agg.update_points("rack-01", [("rack_meter.power_kw", good(999.0, T - 1))])
    assert agg.snapshot(T).measured_load_kw == 300.0


def test_reservation_held_until_start_plus_hold() -> None:
    agg = site()
    d = Decision(ApprovalStatus.APPROVED, 400.0, 400.0, T + 10, 100.0, ())
    agg.reserve("job-1", d, T)
    s = agg.snapshot(T + 1)
    assert s.reserved_kw == 400.0 and s.power_headroom_kw == 300.0
    assert s.ramps[0].start == T + 10 and s.ramps[0].duration_s == 4.0
    assert agg.snapshot(T + 10 + 59).reserved_kw == 400.0
    assert agg.snapshot(T + 10 + 60).reserved_kw == 0.0
    assert agg.get_status(T + 71)["reservations"] == 0


def test_grid_status_lowers_limit_and_reports_dr() -> None:
    agg = site()
    agg.update_grid(parse_grid_status(
        b'{"PSWD_version":"1.0","timestamp":"2027-01-15T08:00:00Z","import_limit_kw":800,'
        b'"demand_response_required":true,"demand_response_until":"2027-01-15T08:05:00Z"}'))
    s = agg.snapshot(T)
    assert s.power_limit_kw == 800.0 and s.grid.demand_response_required
    assert s.grid.demand_response_until == datetime(2027, 1, 15, 8, 5, tzinfo=UTC).timestamp()
    status = agg.get_status(T)
    assert status["demand_response_required"] and status["nodes_online"] == {"rack": 2, "cdu": 1}


@pytest.mark.parametrize(("raw", "field"), [
    (b"{", "(root)"),
    (b"[1]", "(root)"),
    (b'{"timestamp":"2027-01-15T08:00:00Z"}', "PSWD_version"),
    (b'{"PSWD_version":"1.0","timestamp":"yesterday"}', "timestamp"),
    (b'{"PSWD_version":"1.0","timestamp":"2027-01-15T08:00:00Z","import_limit_kw":-1}',
     "import_limit_kw"),
    (b'{"PSWD_version":"1.0","timestamp":"2027-01-15T08:00:00Z","grid_available":"yes"}',
     "grid_available"),
])
def test_bad_grid_status_names_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(MessageError) as info:
        parse_grid_status(raw)
    assert info.value.problems[0].path == field


def load_site_config(path: Path) -> SiteConfig:
    """[site] of a file alone (the node loader reads it the same way, see assembly)."""
    import tomllib

    from edge_runtime.config.reader import ErrorLog, Section

    errors = ErrorLog()
    data = tomllib.loads(path.read_text())
    cfg = read_site_section(Section(str(path), "site", data.get("site", {}), errors))
    errors.raise_if_any()
    return cfg


def test_site_config_reads_bounds_and_rejects_unknown_keys(tmp_path: Path) -> None:
    good_file = tmp_path / "site.toml"
    good_file.write_text('[node]\nname = "site-1"\n[site]\npower_limit_kw = 5000\n'
                         '[site.cooling_capacity_kw]\ncdu-01 = 1500\n'
                         '[site.points]\nrack_power_kw = "meter.p"\n')
    cfg = load_site_config(good_file)
    assert cfg.power_limit_kw == 5000.0 and cfg.cooling_capacity_kw == {"cdu-01": 1500.0}
    assert cfg.points.rack_power_kw == "meter.p"
    bad = tmp_path / "bad.toml"
    bad.write_text('[site]\npower_limit_kw = -1\nramp_limit = 3\nshare_group = "a/b"\n'
                   'forward_roles = ["site"]\n[site.points]\nrack_power_kw = "nodot"\n')
    with pytest.raises(ConfigError) as info:
        load_site_config(bad)
    text = str(info.value)
    for line in [f"{bad}: [site] power_limit_kw: must be >= 0, got -1",
                 f"{bad}: [site] ramp_limit: unknown key",
                 f"{bad}: [site] share_group:", f"{bad}: [site] forward_roles:",
                 f"{bad}: [site.points] rack_power_kw: must name a point"]:
        assert line in text


def test_bookings_totals_replace_and_lazy_expiry() -> None:
    from edge_runtime.site.admission import Ramp
    from edge_runtime.site.aggregate import Bookings, Reservation

    b = Bookings()
    b.add(Reservation("a", 100.0, 90.0, T + 10, Ramp(T, 2.0, 50.0)))
    b.add(Reservation("b", 200.0, 180.0, T + 20, Ramp(T, 4.0, 50.0)))
    b.add(Reservation("a", 50.0, 45.0, T + 30, Ramp(T, 1.0, 50.0)))  # an update replaces
    assert len(b) == 2 and b.kw == 250.0 and b.heat_kw == 225.0
    b.expire(T + 1.5)  # a's new ramp ended; b's still running
    assert [r.duration_s for r in b.active_ramps()] == [4.0]
    b.expire(T + 10)  # a's stale heap entry (until T+10) must not drop the updated booking
    assert "a" in b and b.kw == 250.0
    b.expire(T + 20)
    assert "b" not in b and b.kw == 50.0 and b.active_ramps() == ()
    b.remove("a")
    assert len(b) == 0 and b.kw == 0.0 and b.get("a") is None


def test_telemetry_sums_are_reused_for_refresh_s_and_redone_on_births() -> None:
    """O(nodes) sums once per refresh_s, not per announcement; a birth, a death or a node's
    first reading are counted at once, a changed reading at most refresh_s late."""
    agg = SiteAggregate(dataclasses.replace(CFG, refresh_s=0.1))
    agg.node_online("rack-01", "rack", T)
    agg.update_points("rack-01", [("rack_meter.power_kw", good(100.0, T))])
    assert agg.snapshot(T).measured_load_kw == 100.0  # first reading: at once
    agg.update_points("rack-01", [("rack_meter.power_kw", good(300.0, T + 0.05))])
    assert agg.snapshot(T + 0.05).measured_load_kw == 100.0  # reused inside refresh_s
    assert agg.snapshot(T + 0.11).measured_load_kw == 300.0  # redone after it
    agg.node_online("rack-02", "rack", T + 0.12)
    agg.update_points("rack-02", [("rack_meter.power_kw", good(50.0, T + 0.12))])
    assert agg.snapshot(T + 0.12).measured_load_kw == 350.0  # a birth: at once
    agg.node_offline("rack-01", T + 0.13)
    assert agg.snapshot(T + 0.13).measured_load_kw == 50.0  # a death: at once
    assert agg.snapshot(T - 1).measured_load_kw == 50.0  # a clock step back: redone
