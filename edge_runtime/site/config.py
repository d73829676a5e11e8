"""The `[site]` section of a site node's TOML config: admission policy and telemetry mapping.

    [site]
    power_limit_kw = 2000.0          # the site's connection limit (grid/status may lower it)
    ramp_limit_kw_per_s = 200.0      # fastest total load ramp the connection agreement allows
    telemetry_max_age_s = 5.0        # older readings stop counting (a dead node is
                                     # forgotten this long after its death)
    reservation_hold_s = 120.0       # an admitted workload is reserved until start + this
    battery_min_soc_pct = 20.0       # below this a rack battery is not counted as available
    cooling_system_type = "single_phase_liquid"
    heat_recovery_available = false
    municipal_heat_integration = false
    share_group = "site"             # MQTT 5 shared-subscription group of the coordinators
    forward_roles = ["rack", "cdu"]  # roles whose nodes get accepted announcements
    max_clock_skew_s = 300.0         # A.1 / peer decision timestamps further than this from
                                     # the coordinator's clock are refused (field: timestamp)
    max_start_ahead_s = 86400.0      # an earliest_start_time (or a peer decision's start)
                                     # further ahead than this is refused
    coordinator_keys = "keys"        # directory holding infrastructure_manager.key (pswd-edge
                                     # keygen): admissions exchanged between coordinator
                                     # instances are signed with it (HMAC-SHA256) and unsigned
                                     # ones refused; absent: only the broker ACL on
                                     # pswd/v1/{site}/coordinator/# fences them (warned at start)
    [site.cooling_capacity_kw]       # nominal heat each CDU can remove, by node name
    cdu-01 = 1500.0
    [site.points]                    # which telemetry points mean what ("device.point")
    rack_power_kw = "rack_meter.power_kw"
    ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.config.reader import Section
from edge_runtime.federation.topics import check_level
from edge_runtime.messages.models import CoolingSystemType
from edge_runtime.security.signing import KeyFileError, load_keys

ROLES_FORWARDED = ("rack", "cdu")
# The coordinators act for the infrastructure manager (spec 10.2.2); the kind in the MAC
# (peer.KIND) keeps their decisions apart from the commands this key also signs.
PEER_ROLE = "infrastructure_manager"


@dataclass(frozen=True, slots=True)
class PointMap:
    """Telemetry point names the aggregate reads, per role."""

    rack_power_kw: str = "rack_meter.power_kw"
    battery_soc_pct: str = "battery.soc_pct"
    battery_discharge_max_kw: str = "battery.w_dis_cha_max_kw"
    cdu_flow_lpm: str = "flow.flow"
    cdu_supply_temp_c: str = "supply_temp.temperature"
    cdu_return_temp_c: str = "return_temp.temperature"
    cdu_leak_state: str = "leak.leak_state"


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """Admission policy and aggregate settings of a site coordinator."""

    power_limit_kw: float = 2000.0
    ramp_limit_kw_per_s: float = 200.0
    telemetry_max_age_s: float = 5.0
    reservation_hold_s: float = 120.0
    battery_min_soc_pct: float = 20.0
    cooling_capacity_kw: dict[str, float] = field(default_factory=dict)
    default_cooling_capacity_kw: float = 0.0
    cooling_system_type: CoolingSystemType = CoolingSystemType.SINGLE_PHASE_LIQUID
    heat_recovery_available: bool = False
    municipal_heat_integration: bool = False
    share_group: str = "site"
    forward_roles: tuple[str, ...] = ROLES_FORWARDED
    points: PointMap = field(default_factory=PointMap)
    max_clock_skew_s: float = 300.0
    max_start_ahead_s: float = 86_400.0
    coordinator_keys: Path | None = None  # None: peer decisions unsigned (broker ACL only)
    # the key that signs peer decisions (load_site_node reads it from coordinator_keys)
    peer_key: bytes | None = field(default=None, repr=False)


def read_site_section(sec: Section, base_dir: Path | None = None) -> SiteConfig:
    """Read `[site]` from an open Section (errors go to its ErrorLog); call finish() inside.
    `base_dir`: where relative paths (coordinator_keys) start (default: the file's)."""
    d = SiteConfig()
    power = sec.get_float("power_limit_kw", d.power_limit_kw, minval=0.0)
    ramp = sec.get_float("ramp_limit_kw_per_s", d.ramp_limit_kw_per_s, above=0.0)
    max_age = sec.get_float("telemetry_max_age_s", d.telemetry_max_age_s, above=0.0,
                            maxval=3600.0)
    hold = sec.get_float("reservation_hold_s", d.reservation_hold_s, minval=0.0,
                         maxval=86_400.0)
    soc = sec.get_float("battery_min_soc_pct", d.battery_min_soc_pct, minval=0.0, maxval=100.0)
    default_cool = sec.get_float("default_cooling_capacity_kw", d.default_cooling_capacity_kw,
                                 minval=0.0)
    cooling_type = sec.get_str("cooling_system_type", d.cooling_system_type.value,
                               choices=[c.value for c in CoolingSystemType])
    recovery = sec.get_bool("heat_recovery_available", d.heat_recovery_available)
    municipal = sec.get_bool("municipal_heat_integration", d.municipal_heat_integration)
    group = sec.get_str("share_group", d.share_group)
    if isinstance(group, str):
        try:
            check_level("share_group", group)
        except ValueError as exc:
            sec.error("share_group", str(exc))
    roles = sec._get("forward_roles", list(d.forward_roles))
    if not isinstance(roles, list) or not all(r in ROLES_FORWARDED for r in roles):
        sec.error("forward_roles", f"must be a list of {', '.join(ROLES_FORWARDED)}, "
                                   f"got {roles!r}")
        roles = list(d.forward_roles)
    skew = sec.get_float("max_clock_skew_s", d.max_clock_skew_s, above=0.0, maxval=86_400.0)
    ahead = sec.get_float("max_start_ahead_s", d.max_start_ahead_s, above=0.0,
                          maxval=366 * 86_400.0)
    keys_dir, peer_key = _coordinator_key(sec, base_dir or Path(sec.file).parent)

    cool_sec = sec.sub("cooling_capacity_kw")
    cooling: dict[str, float] = {}
    for node in list(cool_sec.data):
        value = cool_sec.get_float(node, minval=0.0)
        if isinstance(value, float):
            cooling[node] = value
    cool_sec.finish()

    pts_sec = sec.sub("points")
    defaults = PointMap()
    names: dict[str, Any] = {}
    for key in PointMap.__dataclass_fields__:
        value = pts_sec.get_str(key, getattr(defaults, key))
        if isinstance(value, str) and "." not in value:
            pts_sec.error(key, f"must name a point as 'device.point', got {value!r}")
        names[key] = value
    pts_sec.finish()
    sec.finish()
    return SiteConfig(
        power_limit_kw=power, ramp_limit_kw_per_s=ramp, telemetry_max_age_s=max_age,
        reservation_hold_s=hold, battery_min_soc_pct=soc,
        cooling_capacity_kw=cooling, default_cooling_capacity_kw=default_cool,
        cooling_system_type=CoolingSystemType(cooling_type) if cooling_type in
        [c.value for c in CoolingSystemType] else d.cooling_system_type,
        heat_recovery_available=recovery, municipal_heat_integration=municipal,
        share_group=group if isinstance(group, str) else d.share_group,
        forward_roles=tuple(roles), points=PointMap(**names), max_clock_skew_s=skew,
        max_start_ahead_s=ahead, coordinator_keys=keys_dir, peer_key=peer_key)


def _coordinator_key(sec: Section, base_dir: Path) -> tuple[Path | None, bytes | None]:
    """`coordinator_keys`: the directory and the key read from it, checked at load."""
    if not sec.has("coordinator_keys"):
        return None, None
    raw = sec.get_str("coordinator_keys")
    if not isinstance(raw, str) or not raw:
        sec.error("coordinator_keys", "must name a directory")
        return None, None
    directory = Path(raw) if Path(raw).is_absolute() else (base_dir / raw).resolve()
    try:
        key = load_keys(directory).get(PEER_ROLE)
    except (KeyFileError, OSError) as exc:
        sec.error("coordinator_keys", str(exc))
        return directory, None
    if key is None:
        sec.error("coordinator_keys", f"no {PEER_ROLE}.key in {directory} (pswd-edge keygen "
                                      f"--role {PEER_ROLE} {directory})")
    return directory, key
