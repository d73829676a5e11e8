"""`[https]` of a node config: where the server listens, its TLS files, tokens and limits.

    [https]
    host = "0.0.0.0"            # listen address (default 127.0.0.1)
    port = 8443
    cert = "pki/node.crt"       # the node's server certificate and key (TLS 1.3 only)
    key = "pki/node.key"
    ca = "pki/ca.crt"           # the site CA: client certificates are verified against it
    crl = "pki/crl.pem"         # with it a revoked client certificate is refused
    client_cert = "required"    # required (spec 10.2.1, mutual) | optional | none
    token_keys = "token_keys"   # the site's JWT public keys (security/tokens.py KeyRing)
    audience = "rack-01"        # the aud a token must name (default: the node's name)
    issuer = "pswd-site"
    command_keys = "keys"       # <role>.key files for signed control POSTs (default: [mqtt]
                                # command_keys; without any, control POSTs are refused)
    state_dir = "state"         # nonces.log lives here when no [mqtt] shares its journal
    max_body_bytes = 65536
    rate_per_s = 20.0           # per source, after a burst of `burst` requests
    burst = 40

cert, key, ca, crl and token_keys default to the same keys of `[security]` (the node's one
PKI, security/secure_default.py), which `pswd-edge run` checks, and on a first start with an
online CA makes; given here, they must exist when the config is loaded. Paths are relative
to the config file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.config.reader import Section

CLIENT_CERT = ("required", "optional", "none")


@dataclass(frozen=True, slots=True)
class HttpsConfig:
    """The HTTPS server of one node."""

    cert: Path | None = None  # None: [security]'s (see with_security)
    key: Path | None = None
    ca: Path | None = None
    token_keys: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8443
    crl: Path | None = None
    client_cert: str = "required"
    audience: str = ""  # "" -> the node's name
    issuer: str = "pswd-site"
    command_keys: Path | None = None
    state_dir: Path = Path("state")
    max_body_bytes: int = 64 * 1024
    rate_per_s: float = 20.0
    burst: int = 40


def _path(sec: Section, key: str, base_dir: Path, *, required: bool = True,
          directory: bool = False) -> Path | None:
    raw = sec.get_str(key) if required else sec.get_str(key, None)
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw:
        sec.error(key, "must not be empty")
        return None
    p = Path(raw)
    p = p if p.is_absolute() else (base_dir / p).resolve()
    if directory and not p.is_dir():
        sec.error(key, f"{p} is not a directory")
    elif not directory and key != "state_dir" and not p.is_file():
        sec.error(key, f"{p} does not exist")
    return p


def read_https(sec: Section, base_dir: Path) -> HttpsConfig:
    """An HttpsConfig from `[https]`; errors (naming the key) go to the section's ErrorLog."""
    d = HttpsConfig()
    cfg = HttpsConfig(
        cert=_path(sec, "cert", base_dir, required=False),
        key=_path(sec, "key", base_dir, required=False),
        ca=_path(sec, "ca", base_dir, required=False),
        token_keys=_path(sec, "token_keys", base_dir, required=False, directory=True),
        host=sec.get_str("host", d.host),
        port=sec.get_int("port", d.port, minval=1, maxval=65535),
        crl=_path(sec, "crl", base_dir, required=False),
        client_cert=sec.get_str("client_cert", d.client_cert, choices=CLIENT_CERT),
        audience=sec.get_str("audience", d.audience),
        issuer=sec.get_str("issuer", d.issuer),
        command_keys=_path(sec, "command_keys", base_dir, required=False, directory=True),
        state_dir=(base_dir / sec.get_str("state_dir", str(d.state_dir))).resolve(),
        max_body_bytes=sec.get_int("max_body_bytes", d.max_body_bytes, minval=1024,
                                   maxval=16 * 1024 * 1024),
        rate_per_s=sec.get_float("rate_per_s", d.rate_per_s, above=0.0, maxval=100_000.0),
        burst=sec.get_int("burst", d.burst, minval=1, maxval=100_000),
    )
    sec.finish()
    return cfg


def with_security(cfg: HttpsConfig, security: Any, sec_name: str,
                  error: Callable[[str, str, str], None]) -> HttpsConfig:
    """`cfg` with the files it leaves out taken from `[security]` (SecurityConfig); an error
    (section, key, reason) for each still missing."""
    def pick(key: str) -> Path | None:
        own: Path | None = getattr(cfg, key)
        return own if own is not None else getattr(security, key, None)

    filled = dataclasses.replace(cfg, cert=pick("cert"), key=pick("key"), ca=pick("ca"),
                                 crl=pick("crl"), token_keys=pick("token_keys"))
    for key in ("cert", "key", "ca", "token_keys"):
        if getattr(filled, key) is None:
            error(sec_name, key, f"required here or in [security] (the node's {key})")
    return filled
