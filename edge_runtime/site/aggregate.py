"""Site-level aggregate state: node births/deaths, named telemetry, grid status, reservations.

Sans-IO: the coordinator feeds it decoded messages with the time they arrived; admission
reads `snapshot(now)`. Times are UTC epoch seconds (telemetry carries source timestamps).

What counts:
  load        sum of the rack meters' power of online racks (GOOD or SUBSTITUTED samples
              younger than telemetry_max_age_s); with no fresh meter at all the state is
              unknown and admission rejects rather than guess
  heat        heat the CDUs remove (flow x 4.186 kJ/(kg K) x return-supply dT, water at
              1 kg/L); a CDU without fresh readings counts the racks' load instead
  cooling     configured capacity of each online CDU; a CDU reporting a leak counts 0
  battery     online racks with SOC above battery_min_soc_pct: available, discharge kW summed
  reserved    admitted workloads until they show in telemetry: from admission to their
              start plus reservation_hold_s (their later draw is in the measured load)

Cost: the sums are kept incrementally. Each node holds its share of them (its load, battery,
cooling, heat), redone when its telemetry, birth or death comes in, and when a reading it
counts goes stale (a heap of the times that happens): a snapshot costs O(1) in the number of
nodes, an A.1 at 10,000 nodes as at 10 (bench/scaling.py). An offline node is forgotten
telemetry_max_age_s after its death, when nothing of it could count any more. `recount(now)`
is the full O(nodes) count the sums must equal (tests/test_site_aggregate.py checks it).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.core.points import Quality, Sample
from edge_runtime.messages.annex_a import decode_json
from edge_runtime.messages.models import MessageError, ValidationProblem, parse_datetime
from edge_runtime.site.admission import Decision, GridState, Ramp, SiteSnapshot
from edge_runtime.site.config import SiteConfig

WATER_KJ_PER_KG_K = 4.186
_FRESH = frozenset((Quality.GOOD, Quality.SUBSTITUTED, Quality.FORCED))


@dataclass(frozen=True, slots=True)
class _Share:
    """One node's part of the site sums, and until when it holds (its first reading to go
    stale)."""

    racks: int = 0
    load_kw: float | None = None
    battery: bool = False
    battery_kw: float = 0.0
    cooling_kw: float = 0.0
    heat_kw: float | None = None
    until: float = math.inf


_NOTHING = _Share()


@dataclass(slots=True)
class NodeState:
    """One node as the site sees it."""

    role: str
    online: bool
    since: float
    points: dict[str, Sample] = field(default_factory=dict)
    share: _Share = _NOTHING  # what it adds to the site sums now
    version: int = 0  # +1 whenever its share is redone: older heap entries are stale


@dataclass(frozen=True, slots=True)
class Reservation:
    """An admitted workload not yet visible in telemetry."""

    workload_id: str
    kw: float
    heat_kw: float
    until: float
    ramp: Ramp


_GRID_BOOLS = ("grid_available", "demand_response_required", "renewable_energy_available")
_GRID_NUMBERS = ("import_limit_kw", "ramp_limit_kw_per_s", "carbon_intensity_g_co2_kwh")


def parse_grid_status(raw: bytes | str) -> GridState:
    """`grid/status` JSON as a GridState; MessageError naming the field on bad input.

    Fields (all optional besides PSWD_version and timestamp): grid_available (bool),
    import_limit_kw, ramp_limit_kw_per_s, carbon_intensity_g_co2_kwh (numbers >= 0),
    demand_response_required, renewable_energy_available (bool), demand_response_until
    (RFC 3339 date-time).
    """
    doc = decode_json(raw)  # RFC 7159 only, size-bounded; MessageError otherwise
    if not isinstance(doc, dict):
        raise MessageError([ValidationProblem("(root)", "must be a JSON object")])
    problems = [ValidationProblem(k, "required field missing")
                for k in ("PSWD_version", "timestamp") if k not in doc]
    for key in _GRID_BOOLS:
        if key in doc and not isinstance(doc[key], bool):
            problems.append(ValidationProblem(key, f"must be a boolean, got {doc[key]!r}"))
    for key in _GRID_NUMBERS:
        v = doc.get(key)
        if key in doc and (isinstance(v, bool) or not isinstance(v, int | float)
                           or not math.isfinite(v) or v < 0):
            problems.append(ValidationProblem(key, f"must be a number >= 0, got {v!r}"))
    until: float | None = None
    for key in ("timestamp", "demand_response_until"):
        if key in doc:
            try:
                stamp = parse_datetime(doc[key]) if isinstance(doc[key], str) else None
            except ValueError as exc:
                problems.append(ValidationProblem(key, str(exc)))
                continue
            if stamp is None:
                problems.append(ValidationProblem(key, "must be an RFC 3339 date-time string"))
            elif key == "demand_response_until":
                until = stamp.timestamp()
    if problems:
        raise MessageError(problems)

    def num(key: str) -> float | None:
        return float(doc[key]) if key in doc else None

    return GridState(
        available=doc.get("grid_available", True),
        import_limit_kw=num("import_limit_kw"),
        ramp_limit_kw_per_s=num("ramp_limit_kw_per_s"),
        demand_response_required=doc.get("demand_response_required", False),
        demand_response_until=until,
        carbon_intensity_g_co2_kwh=num("carbon_intensity_g_co2_kwh"),
        renewable_energy_available=doc.get("renewable_energy_available"))


class Bookings:
    """Reservations with running totals and lazy expiry, so a snapshot costs O(active ramps)
    rather than O(reservations): at 1,000 announcements/s and a 120 s hold there are 120,000."""

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[int, Reservation]] = {}
        self._expiry: list[tuple[float, int, str]] = []  # heap of (until, seq, id)
        self._ramp_ends: list[tuple[float, int, str]] = []  # heap of (ramp end, seq, id)
        self._ramps: dict[str, Ramp] = {}  # ramps not yet known to have ended
        self._seq = 0
        self.kw = 0.0
        self.heat_kw = 0.0

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, workload_id: object) -> bool:
        return workload_id in self._by_id

    def get(self, workload_id: str) -> Reservation | None:
        """The reservation of a workload, if it holds one."""
        entry = self._by_id.get(workload_id)
        return entry[1] if entry else None

    def add(self, r: Reservation) -> None:
        """Book (replacing the workload's earlier booking)."""
        self.remove(r.workload_id)
        self._seq += 1
        self._by_id[r.workload_id] = (self._seq, r)
        heapq.heappush(self._expiry, (r.until, self._seq, r.workload_id))
        heapq.heappush(self._ramp_ends, (r.ramp.end, self._seq, r.workload_id))
        self._ramps[r.workload_id] = r.ramp
        self.kw += r.kw
        self.heat_kw += r.heat_kw

    def remove(self, workload_id: str) -> None:
        """Drop a booking (its heap entries go stale and are skipped)."""
        entry = self._by_id.pop(workload_id, None)
        self._ramps.pop(workload_id, None)
        if entry is not None:
            self.kw -= entry[1].kw
            self.heat_kw -= entry[1].heat_kw
        if not self._by_id:  # no drift from float subtraction once empty
            self.kw = self.heat_kw = 0.0

    def _live(self, seq: int, workload_id: str) -> bool:
        entry = self._by_id.get(workload_id)
        return entry is not None and entry[0] == seq

    def expire(self, now: float) -> None:
        """Drop bookings whose hold ended by `now`, and forget ramps that ended."""
        while self._expiry and self._expiry[0][0] <= now:
            _, seq, wid = heapq.heappop(self._expiry)
            if self._live(seq, wid):
                self.remove(wid)
        while self._ramp_ends and self._ramp_ends[0][0] <= now:
            _, seq, wid = heapq.heappop(self._ramp_ends)
            if self._live(seq, wid):
                self._ramps.pop(wid, None)

    def active_ramps(self) -> tuple[Ramp, ...]:
        """Ramps of live bookings not ended at the last expire()."""
        return tuple(self._ramps.values())


@dataclass(frozen=True, slots=True)
class _Plant:
    """The part of a snapshot that comes from node telemetry."""

    load_kw: float
    known: bool
    unknown: str
    battery: bool
    battery_kw: float
    cooling_kw: float
    heat_kw: float


class _Sums:
    """Running totals of the online nodes' shares."""

    __slots__ = (
        "batteries",
        "battery_kw",
        "cdus_measured",
        "cooling_kw",
        "heat_kw",
        "load_kw",
        "loads",
        "racks",
        "shares",
    )

    def __init__(self) -> None:
        self.shares = self.racks = self.loads = self.batteries = self.cdus_measured = 0
        self.load_kw = self.battery_kw = self.cooling_kw = self.heat_kw = 0.0

    def add(self, s: _Share, sign: int) -> None:
        if s is _NOTHING:
            return
        self.shares += sign
        self.racks += sign * s.racks
        if s.load_kw is not None:
            self.loads += sign
            self.load_kw += sign * s.load_kw
        if s.battery:
            self.batteries += sign
            self.battery_kw += sign * s.battery_kw
        self.cooling_kw += sign * s.cooling_kw
        if s.heat_kw is not None:
            self.cdus_measured += sign
            self.heat_kw += sign * s.heat_kw
        if not self.shares:  # no drift from float subtraction once empty
            self.load_kw = self.battery_kw = self.cooling_kw = self.heat_kw = 0.0


class SiteAggregate:
    """Live site state built from what the nodes and the grid interface publish."""

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.nodes: dict[str, NodeState] = {}
        self.grid = GridState()
        self.reservations = Bookings()
        self._sums = _Sums()
        self._now = -math.inf  # the latest time the shares are known to hold at
        self._stale: list[tuple[float, int, str]] = []  # heap of (share until, version, node)
        self._gone: list[tuple[float, str]] = []  # heap of (forget at, node) of offline nodes
        pts = config.points  # the readings a node's share is made of, by role
        self._role_points = {
            "rack": (pts.rack_power_kw, pts.battery_soc_pct, pts.battery_discharge_max_kw),
            "cdu": (pts.cdu_leak_state, pts.cdu_flow_lpm, pts.cdu_supply_temp_c,
                    pts.cdu_return_temp_c)}

    # --- feeding ------------------------------------------------------------------------------

    def node_online(self, node: str, role: str, now: float) -> None:
        """A birth: the node is up; its previous points are gone with its old session."""
        old = self.nodes.get(node)
        state = self.nodes[node] = NodeState(role, True, now)
        if old is not None:
            self._sums.add(old.share, -1)
            state.version = old.version + 1
        self._reshare(node, state)

    def node_offline(self, node: str, now: float) -> None:
        """A death (or will): the node's readings no longer count."""
        state = self.nodes.get(node)
        if state is not None:
            state.online, state.since = False, now
            self._reshare(node, state)
            heapq.heappush(self._gone, (now + self.config.telemetry_max_age_s, node))

    def update_points(self, node: str, samples: Iterable[tuple[str, Sample]]) -> None:
        """Latest samples of a node, by point name; older samples never replace newer ones."""
        state = self.nodes.get(node)
        if state is None:  # telemetry before any birth: hold it, role unknown until birth
            state = self.nodes[node] = NodeState("", True, 0.0)
        points = state.points
        for name, sample in samples:
            old = points.get(name)
            if old is None or sample.ts >= old.ts:
                points[name] = sample
        if state.online and state.role in self._role_points:
            self._reshare(node, state)
            self._tidy()

    def update_grid(self, grid: GridState) -> None:
        """A grid/status message."""
        self.grid = grid

    def reserve(self, workload_id: str, decision: Decision, now: float) -> None:
        """Hold an admitted workload's power, heat and ramp until telemetry shows it."""
        ramp_s = decision.approved_kw / decision.ramp_kw_per_s if decision.ramp_kw_per_s else 0.0
        self.reservations.add(Reservation(
            workload_id, decision.approved_kw, decision.heat_kw,
            decision.start + self.config.reservation_hold_s,
            Ramp(decision.start, ramp_s, decision.ramp_kw_per_s)))

    # --- the sums -----------------------------------------------------------------------------

    def _reshare(self, node: str, state: NodeState) -> None:
        """Redo one node's share of the sums, as of self._now."""
        share = self._share(node, state, self._now) if state.online else _NOTHING
        sums = self._sums
        sums.add(state.share, -1)
        sums.add(share, 1)
        state.share = share
        state.version += 1
        if share.until < math.inf:
            heapq.heappush(self._stale, (share.until, state.version, node))

    def _share(self, node: str, state: NodeState, now: float) -> _Share:
        names = self._role_points.get(state.role)
        if names is None:
            return _NOTHING
        cfg, get = self.config, state.points.get
        max_age, until = cfg.telemetry_max_age_s, math.inf
        fresh: list[float | None] = []
        for name in names:
            s = get(name)
            # stale_after is the very expression the stale heap is keyed on: a share redone
            # at `now` never holds a reading already due (or _advance would redo it forever)
            if s is None or s.value is None or s.quality not in _FRESH or \
                    (stale_after := s.ts + max_age) < now:
                fresh.append(None)
                continue
            until = min(until, stale_after)
            fresh.append(s.value)
        if state.role == "rack":
            load, soc, discharge = fresh
            battery = soc is not None and soc > cfg.battery_min_soc_pct
            return _Share(1, load, battery, (discharge or 0.0) if battery else 0.0, until=until)
        leak, flow, t_sup, t_ret = fresh
        cooling = 0.0
        if not leak:  # a leaking CDU (1) or cable fault (2) takes no new heat
            cooling = cfg.cooling_capacity_kw.get(node, cfg.default_cooling_capacity_kw)
        heat = None
        if flow is not None and t_sup is not None and t_ret is not None:
            heat = max(0.0, flow / 60.0 * WATER_KJ_PER_KG_K * (t_ret - t_sup))
        return _Share(cooling_kw=cooling, heat_kw=heat, until=until)

    def _tidy(self) -> None:
        """Drop superseded entries from the top of the stale-time heap. Every reshare pushes
        one, so a node that reports every second leaves one behind each time: clearing them
        here, on the telemetry path, keeps a snapshot from paying for them."""
        stale, nodes = self._stale, self.nodes
        while stale:
            _, version, node = stale[0]
            state = nodes.get(node)
            if state is not None and state.version == version:
                return
            heapq.heappop(stale)

    def _advance(self, now: float) -> None:
        """Bring the shares to `now`: redo those with a reading gone stale, forget nodes dead
        long enough. A clock stepped back redoes every share (rare, O(nodes))."""
        if now < self._now:
            self._now = now
            self._stale.clear()
            for node, state in self.nodes.items():
                self._reshare(node, state)
            return
        self._now = now
        stale, nodes = self._stale, self.nodes
        while stale and stale[0][0] < now:
            _, version, node = heapq.heappop(stale)
            due = nodes.get(node)
            if due is not None and due.version == version:
                self._reshare(node, due)
        self._tidy()
        gone, max_age = self._gone, self.config.telemetry_max_age_s
        while gone and gone[0][0] <= now:
            _, node = heapq.heappop(gone)
            dead = nodes.get(node)
            if dead is not None and not dead.online and dead.since + max_age <= now:
                del nodes[node]

    # --- reading ------------------------------------------------------------------------------

    def snapshot(self, now: float) -> SiteSnapshot:
        """The aggregate at UTC time `now`, expired reservations dropped."""
        cfg = self.config
        self.reservations.expire(now)
        self._advance(now)
        plant = self._plant()
        limit = cfg.power_limit_kw
        if self.grid.import_limit_kw is not None:
            limit = min(limit, self.grid.import_limit_kw)
        res = self.reservations
        return SiteSnapshot(
            power_limit_kw=limit, measured_load_kw=plant.load_kw,
            reserved_kw=max(0.0, res.kw), cooling_capacity_kw=plant.cooling_kw,
            heat_load_kw=plant.heat_kw, reserved_heat_kw=max(0.0, res.heat_kw),
            battery_available=plant.battery, battery_discharge_kw=plant.battery_kw,
            ramp_limit_kw_per_s=cfg.ramp_limit_kw_per_s, grid=self.grid,
            ramps=res.active_ramps(), power_known=plant.known, unknown_reason=plant.unknown)

    def _plant(self, sums: _Sums | None = None) -> _Plant:
        s = sums or self._sums
        unknown = ""
        if not s.loads:
            unknown = (f"no fresh rack power telemetry ({self.config.points.rack_power_kw}, "
                       f"max age {self.config.telemetry_max_age_s:g} s) from {s.racks} online "
                       f"rack(s)")
        return _Plant(s.load_kw, s.loads > 0, unknown, s.batteries > 0, s.battery_kw,
                      s.cooling_kw, s.heat_kw if s.cdus_measured else s.load_kw)

    def recount(self, now: float) -> _Plant:
        """The plant figures counted afresh over every node, O(nodes): what the running sums
        must equal (the tests check it; the bench times it as the old per-A.1 cost)."""
        sums = _Sums()
        for node, state in self.nodes.items():
            if state.online:
                sums.add(self._share(node, state, now), 1)
        return self._plant(sums)

    def get_status(self, now: float) -> dict[str, Any]:
        """Plain-data view for the live view, OPC UA and HTTPS."""
        snap = self.snapshot(now)
        counts: dict[str, int] = {}
        for s in self.nodes.values():
            if s.online:
                counts[s.role or "unknown"] = counts.get(s.role or "unknown", 0) + 1
        return {
            "nodes_online": counts,
            "power_limit_kw": snap.power_limit_kw, "load_kw": snap.measured_load_kw,
            "reserved_kw": snap.reserved_kw, "power_headroom_kw": snap.power_headroom_kw,
            "cooling_capacity_kw": snap.cooling_capacity_kw, "heat_load_kw": snap.heat_load_kw,
            "cooling_headroom_kw": snap.cooling_headroom_kw,
            "battery_available": snap.battery_available,
            "battery_discharge_kw": snap.battery_discharge_kw,
            "grid_available": snap.grid.available,
            "demand_response_required": snap.grid.demand_response_required,
            "reservations": len(self.reservations), "state_known": snap.power_known,
        }
