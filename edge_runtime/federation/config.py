"""The `[mqtt]` section of a node config, read into a frozen MqttConfig.

    [mqtt]
    host = "broker.site.local"     # required
    port = 8883                    # default 1883, or 8883 when [mqtt.tls] is given
    protocol = "5"                 # "5" (default) or "3.1.1"
    keepalive_s = 30               # 5..3600; the broker sends the death this long after silence
    client_id = "cdu-1"            # default: the node name
    reconnect_min_s = 0.5          # reconnect backoff doubles from min to max
    reconnect_max_s = 10.0
    telemetry_period_ms = 100      # one CBOR batch per period (100 ms resolution, spec 7.1.2)
    telemetry_qos = 1              # 1: every batch acknowledged before it leaves the outbox
    state_dir = "state"            # outbox and session counter (relative to the config file)
    outbox_capacity = 100000       # records kept while the link is down
    max_message_bytes = 65536      # larger command messages are refused on the error topic
    link_loss_s = 10.0             # site link down this long (node clock): on_link_loss applies;
                                   # 0 disables the watchdog (no release, no alarm)
    on_link_loss = "release"       # "release" (default): every output held by a site (MQTT)
                                   # command goes back to local automatic control; "failsafe":
                                   # each is held at its io_map failsafe value instead, until
                                   # an operator or the site (once back) sets or releases it;
                                   # "hold": keep them as the site set them (alarm only)
    require_coordinator = true     # no site coordinator online (their retained state on
                                   # pswd/v1/{site}/coordinator/+/state) counts as a lost
                                   # link; false for a site without coordinator (a lab)
    command_keys = "keys"          # directory of <role>.key files (pswd-edge keygen): every
                                   # command (cmd/* but rebirth, and workload/prepare) must
                                   # then carry a valid HMAC-SHA256 envelope
                                   # (security/signing.py, spec 5.3 b), acting with the role
                                   # that signed it; accepted nonces are journaled in
                                   # state_dir/nonces.log (a replay after a restart is
                                   # refused). Absent: accepted unsigned, as the link's
                                   # channel role, with a warning at start. A site
                                   # coordinator signs workload/prepare with the
                                   # infrastructure_manager.key found here.
    sensor_keys = "keys/sensors"   # directory of <sensor node id>.key files (64 hex digits,
                                   # mode 0600): the key this node signs its commands to
                                   # each MicroPython sensor node with (an io_map of
                                   # protocol "mqtt" with outputs; federation/sensor_node.py)
    [mqtt.tls]                     # TLS 1.3 with a client certificate (mutual authentication)
    ca = "pki/ca.crt"
    cert = "pki/node.crt"
    key = "pki/node.key"

Paths are relative to the config file's directory. `link_loss_s` and `on_link_loss` only
matter to a node's NodeLink (federation/link.py): a held site value must not outlive the
site's supervision of it. Outputs held by a local operator or forced by a technician are never
touched by it, and interlocks override every output as always.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.config.reader import ErrorLog, Section, read_toml
from edge_runtime.security.signing import KeyFileError, load_keys

PROTOCOLS = ("5", "3.1.1")
LINK_LOSS_POLICIES = ("release", "failsafe", "hold")


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """CA to trust, and this client's certificate and key (PEM files)."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """How a node (or a site process) reaches its broker."""

    host: str = "127.0.0.1"
    port: int = 1883
    protocol: str = "5"
    keepalive_s: int = 30
    client_id: str = ""
    tls: TlsConfig | None = None
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    telemetry_period_ms: int = 100
    telemetry_qos: int = 1
    state_dir: Path = Path("state")
    outbox_capacity: int = 100_000
    max_message_bytes: int = 65_536
    link_loss_s: float = 10.0  # 0: no link-loss watchdog
    on_link_loss: str = "release"  # one of LINK_LOSS_POLICIES
    require_coordinator: bool = True  # no coordinator online = link lost (link_loss.py)
    command_keys: Path | None = None  # None: control commands are not signature-checked
    sensor_keys: Path | None = None  # <sensor id>.key files: signs commands to sensor nodes

    @property
    def mqtt5(self) -> bool:
        """True for MQTT 5, False for 3.1.1."""
        return self.protocol == "5"


def read_mqtt(sec: Section, base_dir: Path) -> MqttConfig:
    """An MqttConfig from an `[mqtt]` Section; errors go to the section's ErrorLog."""
    d = MqttConfig()
    tls_sec = sec.sub("tls") if sec.has("tls") else None
    if tls_sec is None:
        sec.table("tls")  # mark as read: absent means plain TCP
    tls: TlsConfig | None = None
    if tls_sec is not None:
        paths = [_path(tls_sec, key, base_dir) for key in ("ca", "cert", "key")]
        tls_sec.finish()
        if all(p is not None for p in paths):
            ca, cert, key = paths
            assert ca is not None and cert is not None and key is not None
            tls = TlsConfig(ca, cert, key)
    cfg = MqttConfig(
        host=sec.get_str("host"),
        port=sec.get_int("port", 8883 if tls_sec is not None else 1883, minval=1, maxval=65535),
        protocol=sec.get_str("protocol", d.protocol, choices=PROTOCOLS),
        keepalive_s=sec.get_int("keepalive_s", d.keepalive_s, minval=5, maxval=3600),
        client_id=sec.get_str("client_id", d.client_id),
        tls=tls,
        reconnect_min_s=sec.get_float("reconnect_min_s", d.reconnect_min_s, minval=0.05,
                                      maxval=60.0),
        reconnect_max_s=sec.get_float("reconnect_max_s", d.reconnect_max_s, minval=0.05,
                                      maxval=600.0),
        telemetry_period_ms=sec.get_int("telemetry_period_ms", d.telemetry_period_ms,
                                        minval=10, maxval=60_000),
        telemetry_qos=sec.get_int("telemetry_qos", d.telemetry_qos, minval=0, maxval=1),
        state_dir=_path(sec, "state_dir", base_dir, default=str(d.state_dir)) or d.state_dir,
        outbox_capacity=sec.get_int("outbox_capacity", d.outbox_capacity, minval=100,
                                    maxval=100_000_000),
        max_message_bytes=sec.get_int("max_message_bytes", d.max_message_bytes, minval=1024,
                                      maxval=16 * 1024 * 1024),
        link_loss_s=sec.get_float("link_loss_s", d.link_loss_s, minval=0.0, maxval=86_400.0),
        on_link_loss=sec.get_str("on_link_loss", d.on_link_loss, choices=LINK_LOSS_POLICIES),
        require_coordinator=sec.get_bool("require_coordinator", d.require_coordinator),
        command_keys=_command_keys(sec, base_dir),
        sensor_keys=_path(sec, "sensor_keys", base_dir) if sec.has("sensor_keys") else None,
    )
    if cfg.reconnect_max_s < cfg.reconnect_min_s:
        sec.error("reconnect_max_s", f"must be >= reconnect_min_s ({cfg.reconnect_min_s:g})")
    if cfg.client_id and len(cfg.client_id) > 23 and cfg.protocol == "3.1.1":
        # MQTT 3.1.1 brokers need only accept ids up to 23 bytes (spec 3.1.3.1)
        sec.error("client_id", "at most 23 characters with protocol 3.1.1")
    sec.finish()
    return cfg


def _command_keys(sec: Section, base_dir: Path) -> Path | None:
    """The command-key directory, checked now so check-config reports a bad one."""
    if not sec.has("command_keys"):
        return None
    directory = _path(sec, "command_keys", base_dir)
    if directory is None:
        return None
    try:
        if not load_keys(directory):
            sec.error("command_keys", f"no <role>.key in {directory} (pswd-edge keygen "
                                      f"--role infrastructure_manager {directory})")
    except (KeyFileError, OSError) as exc:
        sec.error("command_keys", str(exc))
    return directory


def _path(sec: Section, key: str, base_dir: Path, default: Any = ...) -> Path | None:
    raw = sec.get_str(key) if default is ... else sec.get_str(key, default)
    if not isinstance(raw, str) or not raw:
        if isinstance(raw, str):
            sec.error(key, "must not be empty")
        return None
    p = Path(raw)
    return p if p.is_absolute() else (base_dir / p).resolve()


def load_mqtt_config(path: Path | str) -> MqttConfig | None:
    """The `[mqtt]` section of a config file alone, or None if it has none; ConfigError if
    bad. (The node config loader reads it with read_mqtt into NodeConfig.mqtt.)"""
    path = Path(path)
    errors = ErrorLog()
    data = read_toml(path, errors)
    errors.raise_if_any()
    assert data is not None
    if "mqtt" not in data:
        return None
    cfg = read_mqtt(Section(str(path), "mqtt", data["mqtt"], errors), path.parent)
    errors.raise_if_any()
    return cfg
