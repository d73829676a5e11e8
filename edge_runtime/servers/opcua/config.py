"""The `[opcua]` section of a node config: the node's OPC UA server for BMS clients.

    [opcua]
    enabled = true
    host = "0.0.0.0"                 # endpoint opc.tcp://host:port/pswd/
    port = 4840
    security = ["Basic256Sha256_SignAndEncrypt", "Aes256Sha256RsaPss_SignAndEncrypt"]
    allow_anonymous = false          # anonymous sessions get the read-only viewer role
    state_dir = "state/opcua"        # certificate, users, trust list, history (relative)
    ca_cert = "pki/ca.crt"           # optional site CA (PEM) that signs the server certificate;
    ca_key = "pki/ca.key"            #   without one the certificate is self-signed
    history = ["supply_temp.temperature"]   # points kept for HistoryRead (default: limited
    history_hours = 24.0                    #   points and every output)
    max_connections = 32             # floods of connections and subscriptions are refused
    max_subscriptions = 100          #   (BadTooManySubscriptions)
    require_signed_commands = false  # true: outputs move only by SignedCommand (see below)

`require_signed_commands` (default false): a stock BMS client cannot compute our HMAC
envelope, so by default an authenticated session with the right role may still write output
variables and call Force, Release, SetMode and SetSetpoint. When true, those answer
BadUserAccessDenied naming the option, and outputs move over OPC UA only through the
ControllerType's SignedCommand method (the MQTT/HTTPS envelope, the node's command keys).
ResetTrip stays open to authenticated roles: it moves no output (the safety layer and each
rule's reset_role decide), and a site must be able to reset a trip from its BMS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_runtime.config.reader import Section

# asyncua's ua.SecurityPolicyType names of the endpoints we offer (no None endpoint: a BMS
# session is always signed, and SignAndEncrypt is the default).
SECURITY_CHOICES = (
    "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt",
    "Aes256Sha256RsaPss_Sign", "Aes256Sha256RsaPss_SignAndEncrypt",
)
DEFAULT_SECURITY = SECURITY_CHOICES


@dataclass(frozen=True, slots=True)
class OpcUaConfig:
    """What the node's OPC UA server needs from its config."""

    state_dir: Path
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = 4840
    security: tuple[str, ...] = DEFAULT_SECURITY
    allow_anonymous: bool = False
    ca_cert: Path | None = None
    ca_key: Path | None = None
    history: tuple[str, ...] | None = None  # None: points with limits and every output
    history_hours: float = 24.0
    application_uri: str = ""  # "" : urn:pswd-edge:<site>:<node>
    max_connections: int = 32  # TCP connections, pre-activation included (floods refused)
    max_subscriptions: int = 100  # across all sessions (more: BadTooManySubscriptions)
    require_signed_commands: bool = False  # outputs move only by SignedCommand

    @property
    def endpoint(self) -> str:
        """The opc.tcp URL the server listens on."""
        return f"opc.tcp://{self.host}:{self.port}/pswd/"


def _path(sec: Section, key: str, base_dir: Path, default: str | None) -> Path | None:
    raw = sec.get_str(key, default)
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw:
        sec.error(key, "must not be empty")
        return None
    p = Path(raw)
    return p if p.is_absolute() else (base_dir / p).resolve()


def read_opcua(sec: Section, base_dir: Path, points: set[str] | None = None) -> OpcUaConfig:
    """The `[opcua]` section; every error names its key. `points` (the node's point names)
    checks `history`."""
    enabled = sec.get_bool("enabled", True)
    host = sec.get_str("host", "0.0.0.0")
    port = sec.get_int("port", 4840, minval=1, maxval=65535)
    raw_security = sec._get("security", list(DEFAULT_SECURITY))
    security: tuple[str, ...] = DEFAULT_SECURITY
    if not isinstance(raw_security, list) or not raw_security or not all(
            isinstance(s, str) for s in raw_security):
        sec.error("security", f"must be a non-empty list of {', '.join(SECURITY_CHOICES)}")
    else:
        unknown = [s for s in raw_security if s not in SECURITY_CHOICES]
        if unknown:
            sec.error("security", f"unknown policy {unknown[0]!r}; one of "
                                  f"{', '.join(SECURITY_CHOICES)}")
        security = tuple(raw_security)
    allow_anonymous = sec.get_bool("allow_anonymous", False)
    state_dir = _path(sec, "state_dir", base_dir, "state/opcua") or base_dir / "state/opcua"
    ca_cert = _path(sec, "ca_cert", base_dir, None)
    ca_key = _path(sec, "ca_key", base_dir, None)
    if (ca_cert is None) != (ca_key is None):
        sec.error("ca_key" if ca_key is None else "ca_cert", "give ca_cert and ca_key together")
    history: tuple[str, ...] | None = None
    raw = sec._get("history", None)
    if raw is not None:
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            sec.error("history", "must be a list of point names (\"device.point\")")
        else:
            history = tuple(raw)
            bad = [p for p in history if points is not None and p not in points]
            if bad:
                sec.error("history", f"unknown point {bad[0]!r}")
    history_hours = sec.get_float("history_hours", 24.0, above=0.0, maxval=24.0 * 366)
    application_uri = sec.get_str("application_uri", "")
    max_connections = sec.get_int("max_connections", 32, minval=1, maxval=1000)
    max_subscriptions = sec.get_int("max_subscriptions", 100, minval=1, maxval=10_000)
    require_signed = sec.get_bool("require_signed_commands", False)
    sec.finish()
    return OpcUaConfig(state_dir=state_dir, enabled=bool(enabled), host=str(host),
                       port=int(port), security=security, allow_anonymous=bool(allow_anonymous),
                       ca_cert=ca_cert, ca_key=ca_key, history=history,
                       history_hours=float(history_hours), application_uri=str(application_uri),
                       max_connections=int(max_connections),
                       max_subscriptions=int(max_subscriptions),
                       require_signed_commands=bool(require_signed))
