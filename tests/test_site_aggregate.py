"""Site aggregate: births, deaths, fresh telemetry, CDU heat, grid status, reservations."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.config.reader import ConfigError
from edge_runtime.core.points import Quality, Sample
from edge_runtime.messages.models import ApprovalStatus, MessageError
from edge_runtime.site.admission import Decision, SiteSnapshot
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


def test_sums_follow_every_reading_birth_death_and_staleness_at_once() -> None:
    """The running sums: a changed reading, a birth, a death and a reading going stale all
    count at the next snapshot; a clock stepped back is counted afresh."""
    agg = SiteAggregate(CFG)
    agg.node_online("rack-01", "rack", T)
    agg.update_points("rack-01", [("rack_meter.power_kw", good(100.0, T))])
    assert agg.snapshot(T).measured_load_kw == 100.0
    agg.update_points("rack-01", [("rack_meter.power_kw", good(300.0, T + 0.05))])
    assert agg.snapshot(T + 0.05).measured_load_kw == 300.0
    agg.node_online("rack-02", "rack", T + 0.12)
    agg.update_points("rack-02", [("rack_meter.power_kw", good(50.0, T + 0.12))])
    assert agg.snapshot(T + 0.12).measured_load_kw == 350.0
    agg.node_offline("rack-01", T + 0.13)
    assert agg.snapshot(T + 0.13).measured_load_kw == 50.0
    max_age = CFG.telemetry_max_age_s
    assert agg.snapshot(T + 0.12 + max_age).power_known  # exactly max_age old: still fresh
    assert not agg.snapshot(T + 0.13 + max_age).power_known  # then stale
    assert agg.snapshot(T + 1).measured_load_kw == 50.0  # a clock step back: counted afresh


def _plant_of(s: SiteSnapshot) -> tuple[Any, ...]:
    return (s.measured_load_kw, s.power_known, s.unknown_reason, s.battery_available,
            s.battery_discharge_kw, s.cooling_capacity_kw, s.heat_load_kw)


def _reference(agg: SiteAggregate, now: float) -> tuple[Any, ...]:
    """The module docstring's rules, written out over every node (the old full count)."""
    cfg, pts = agg.config, agg.config.points

    def fresh(node: Any, name: str) -> float | None:
        s = node.points.get(name)
        if s is None or s.value is None or s.quality not in (
                Quality.GOOD, Quality.SUBSTITUTED, Quality.FORCED) or now - s.ts > \
                cfg.telemetry_max_age_s:
            return None
        return float(s.value)

    racks = [n for n in agg.nodes.values() if n.online and n.role == "rack"]
    loads = [v for n in racks if (v := fresh(n, pts.rack_power_kw)) is not None]
    battery_kw, battery = 0.0, False
    for n in racks:
        soc = fresh(n, pts.battery_soc_pct)
        if soc is not None and soc > cfg.battery_min_soc_pct:
            battery = True
            battery_kw += fresh(n, pts.battery_discharge_max_kw) or 0.0
    cooling = heat = 0.0
    measured = 0
    for name, n in agg.nodes.items():
        if not (n.online and n.role == "cdu"):
            continue
        if not fresh(n, pts.cdu_leak_state):
            cooling += cfg.cooling_capacity_kw.get(name, cfg.default_cooling_capacity_kw)
        flow, sup, ret = (fresh(n, p) for p in (pts.cdu_flow_lpm, pts.cdu_supply_temp_c,
                                                  pts.cdu_return_temp_c))
        if flow is not None and sup is not None and ret is not None:
            heat += max(0.0, flow / 60.0 * 4.186 * (ret - sup))
            measured += 1
    return (sum(loads), bool(loads), battery, battery_kw, cooling,
            heat if measured else sum(loads))


def test_running_sums_equal_a_full_recount_under_random_traffic() -> None:
    """Births, deaths, telemetry of every kind (GOOD, BAD, late, out of order, unknown
    nodes), time going on, now and then stepping back: after each event the incremental
    snapshot equals the O(nodes) count over every node."""
    rng = random.Random(2026)
    cfg = SiteConfig(power_limit_kw=1e6, cooling_capacity_kw={"cdu-0": 900.0},
                     default_cooling_capacity_kw=400.0, telemetry_max_age_s=2.0)
    agg = SiteAggregate(cfg)
    names = [f"rack-{i}" for i in range(8)] + [f"cdu-{i}" for i in range(4)] + ["odd-0"]
    points = {"rack": ["rack_meter.power_kw", "battery.soc_pct", "battery.w_dis_cha_max_kw"],
              "cdu": ["flow.flow", "supply_temp.temperature", "return_temp.temperature",
                      "leak.leak_state"], "odd": ["x.y"]}
    now = T
    for _ in range(4000):
        node = rng.choice(names)
        role = node.split("-")[0]
        event = rng.random()
        if event < 0.04:
            agg.node_online(node, role, now)
        elif event < 0.07:
            agg.node_offline(node, now)
        elif event < 0.8:
            agg.update_points(node, [(name, Sample(
                rng.choice([None, rng.uniform(0, 100), 0.0, 1.0, 2.0]),
                rng.choice([Quality.GOOD] * 4 + list(Quality)),
                now - rng.choice([0.0, 0.1, 1.5, 1.99, 2.5, -0.5])))
                for name in rng.sample(points[role], rng.randrange(1, len(points[role]) + 1))])
        else:
            now += rng.choice([0.0, 0.01, 0.3, 1.0, 2.5]) if rng.random() > 0.02 else -3.0
        snap = agg.snapshot(now)
        full = agg.recount(now)
        expect = (full.load_kw, full.known, full.unknown, full.battery, full.battery_kw,
                  full.cooling_kw, full.heat_kw)
        got = _plant_of(snap)
        assert got[1:4] == expect[1:4]  # known, why not, battery
        assert [got[0], *got[4:]] == pytest.approx([expect[0], *expect[4:]], rel=1e-9,
                                                   abs=1e-9)
        load, known, battery, battery_kw, cooling, heat = _reference(agg, now)
        assert (got[1], got[3]) == (known, battery)
        assert [got[0], got[4], got[5], got[6]] == pytest.approx(
            [load, battery_kw, cooling, heat], rel=1e-9, abs=1e-9)


def test_a_snapshot_costs_the_same_at_10_nodes_or_1000(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes that keep reporting cost the snapshot nothing (no share is redone there); a
    node gone silent is redone once when its readings go stale; a dead one is forgotten."""
    agg = SiteAggregate(CFG)
    for i in range(1000):
        agg.node_online(f"rack-{i}", "rack", T)
    redone: list[str] = []
    share = SiteAggregate._share
    monkeypatch.setattr(SiteAggregate, "_share",
                        lambda self, node, *a: redone.append(node) or share(self, node, *a))
    for second in range(12):
        t = T + second
        for i in range(1000):
            if not (i == 7 and second > 3):  # rack-7 falls silent after 3 s
                agg.update_points(f"rack-{i}", [("rack_meter.power_kw", good(1.0, t))])
        redone.clear()
        snap = agg.snapshot(t + 0.5)
        assert redone == (["rack-7"] if second == 3 + CFG.telemetry_max_age_s else []), second
        assert snap.measured_load_kw == (999.0 if second >= 3 + CFG.telemetry_max_age_s
                                         else 1000.0)
    agg.node_offline("rack-9", T + 12)
    agg.snapshot(T + 12 + CFG.telemetry_max_age_s)
    assert "rack-9" not in agg.nodes and "rack-7" in agg.nodes
