"""`provision`: the site CA (made when missing), the node's certificates and its command-signing
keys, installed with private files at mode 0600, and an inventory of fingerprints and expiry.

The CA is edge_runtime/security/ca.py's SiteCA (a directory: ca.crt, ca.key 0600, crl.pem,
index.json; it may live on the technician's laptop). For the node, in its install directory:
- `<node>.crt` / `<node>.key`: its TLS certificate (ECDSA P-256, server and client), the one
  `[security] cert/key` names: the MQTT link's client certificate and the HTTPS server's;
- `opcua/server_cert.der` / `server_key.pem`: its OPC UA server certificate (RSA-2048, the
  application URI as SubjectAltName URI, as Basic256Sha256 requires; security/opcua_certs.py),
  signed by the CA, where the node's server looks for it (`[opcua] state_dir`);
- `ca.crt`, `crl.pem`: the trust anchor and revocation list;
- `command_keys/<role>.key`: HMAC command-signing keys per role ([mqtt] command_keys);
- `security.toml`: the `[security]` lines for the node config.
Files already present are kept, never overwritten, and inventoried as they are; then the
runtime's own start check (secure_default.check_start) judges the result. Nothing secret is
printed, journaled or put in the report: paths, fingerprints and dates only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import shutil
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from edge_runtime.core.authority import USER_ROLES
from edge_runtime.security.ca import SiteCA, ensure_command_keys
from edge_runtime.security.opcua_certs import CERT_FILE, Signer, ensure_server_cert, make_app_cert
from edge_runtime.security.pki import write_pem
from edge_runtime.security.secure_default import SecurityConfig, check_start
from pswd_commission.session import CommissionError


@dataclass(frozen=True, slots=True)
class Item:
    """One installed file as the inventory records it."""

    name: str
    kind: str  # ca | crl | certificate | private key | signing key
    path: str
    mode: str
    fingerprint_sha256: str
    subject: str = ""
    not_after: str = ""
    action: str = "created"  # created | kept
    purpose: str = ""

    def as_dict(self) -> dict[str, str]:
        """JSON form."""
        return asdict(self)


def opcua_uri(site: str, node: str) -> str:
    """The node's OPC UA application URI."""
    return f"urn:pswd-edge:{site}:{node}"


def _mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


def _cert_item(name: str, path: Path, action: str, purpose: str, kind: str = "certificate",
               ) -> Item:
    data = path.read_bytes()
    cert = (x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_certificate(data))
    return Item(name, kind, str(path), _mode(path),
                cert.fingerprint(hashes.SHA256()).hex(":").upper(),
                cert.subject.rfc4514_string(), cert.not_valid_after_utc.isoformat(), action,
                purpose)


def _key_item(name: str, path: Path, action: str, purpose: str,
              kind: str = "private key") -> Item:
    # A digest of the key file identifies it without revealing it (SHA-256 is one-way).
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return Item(name, kind, str(path), _mode(path), f"sha256:{digest}...", action=action,
                purpose=purpose)


def _signer(ca: SiteCA) -> Signer:
    issuer = ca.issuer()
    return Signer(issuer.cert, issuer.key)


def _pair_state(crt: Path, key: Path, what: str) -> bool:
    """True when both exist (keep them), False when neither; refuses half a pair."""
    if crt.exists() and key.exists():
        return True
    if crt.exists() or key.exists():
        raise CommissionError(f"{crt.parent}: {crt.name} and {key.name} must both be there "
                              f"or both be missing ({what}; nothing was overwritten)")
    return False


def provision(out_dir: Path, ca_dir: Path, *, node: str, site: str, hosts: Sequence[str],
              roles: Sequence[str], days: int = 397) -> tuple[list[Item], list[str]]:
    """Install everything the node needs under out_dir: (inventory, start-check problems)."""
    for role in roles:
        if role not in USER_ROLES:
            raise CommissionError(f"--roles: unknown role {role!r} "
                                  f"(one of {', '.join(USER_ROLES)})")
    dns = [h for h in hosts if not _is_ip(h)]
    ips = [h for h in hosts if _is_ip(h)]
    items: list[Item] = []
    try:
        made_ca = not (ca_dir / "ca.crt").exists()
        ca = SiteCA.ensure(ca_dir, name=f"PSWD Edge site CA {site}")
        ca_action = "created" if made_ca else "kept"
        items.append(_cert_item("site CA", ca.cert_path, ca_action, "trust anchor", "ca"))
        if ca.has_key:
            if ca.key_path.stat().st_mode & 0o077:
                raise CommissionError(f"{ca.key_path}: readable by group or others; chmod 600")
            items.append(_key_item("site CA key", ca.key_path, ca_action,
                                   "signs certificates; stays in the CA directory"))
        out_dir.mkdir(parents=True, exist_ok=True)
        out_dir.chmod(0o700)

        crt, key = out_dir / f"{node}.crt", out_dir / f"{node}.key"
        action = "kept" if _pair_state(crt, key, "TLS") else "created"
        if action == "created":
            if not ca.has_key:
                raise CommissionError(f"{ca.key_path}: the CA key is not here (offline CA): "
                                      f"provision where it is")
            ca.issue_node(node, out_dir, server=True, client=True,
                          dns_names=[node, "localhost", *dns],
                          ip_addresses=["127.0.0.1", *ips], days=days)
        items += [_cert_item("node TLS", crt, action, "MQTT client and HTTPS server (TLS 1.3)"),
                  _key_item("node TLS key", key, action, "[security] key")]

        # The OPC UA server certificate where the node's server looks for it ([opcua]
        # state_dir): ensure_server_cert keeps a pair that is there, makes one otherwise.
        opcua_dir = out_dir / "opcua"
        opcua_existed = (opcua_dir / CERT_FILE).exists()
        made = ensure_server_cert(opcua_dir, opcua_uri(site, node), f"{node} OPC UA",
                                  hostnames=[node, "localhost", *dns],
                                  ip_addresses=["127.0.0.1", *ips], ca=_signer(ca))
        if made.created:
            ca.record(x509.load_der_x509_certificate(made.cert.read_bytes()), made.cert)
        action = "kept" if opcua_existed else "created"
        items += [_cert_item("OPC UA", made.cert, action,
                             f"OPC UA server {opcua_uri(site, node)} ([opcua] state_dir)"),
                  _key_item("OPC UA key", made.key, action, "OPC UA server key")]

        for src in (ca.cert_path, ca.crl_path):
            dst = out_dir / src.name
            if src.exists():
                shutil.copyfile(src, dst)
        items.append(Item("CRL", "crl", str(out_dir / "crl.pem"), _mode(out_dir / "crl.pem"),
                          "sha256:" + hashlib.sha256((out_dir / "crl.pem").read_bytes())
                          .hexdigest()[:16] + "...", action="copied",
                          purpose="[security] crl"))
        keys_dir = out_dir / "command_keys"
        existed = {r for r in roles if (keys_dir / f"{r}.key").exists()}
        for role, path in ensure_command_keys(keys_dir, roles).items():
            items.append(_key_item(f"{role} command key", path,
                                   "kept" if role in existed else "created",
                                   "[mqtt] command_keys", "signing key"))
        (out_dir / "security.toml").write_text(
            "# Paste into the node config (paths as installed by pswd-commission provision)\n"
            f'[security]\nca = "{out_dir / "ca.crt"}"\ncert = "{crt}"\nkey = "{key}"\n'
            f'crl = "{out_dir / "crl.pem"}"\n'
            f'# [opcua] state_dir = "{opcua_dir}"  (its server certificate is there)\n'
            f'# [mqtt] command_keys = "{keys_dir}"  (with [mqtt.tls] using the same files)\n',
            encoding="utf-8")
    except (OSError, ValueError) as exc:
        where = getattr(exc, "filename", None) or out_dir
        raise CommissionError(f"cannot provision into {where}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    loose = [i for i in items if i.kind in ("private key", "signing key") and i.mode != "0600"]
    if loose:
        raise CommissionError(f"{loose[0].path}: mode {loose[0].mode}, must be 0600")
    check = check_start(SecurityConfig(ca=out_dir / "ca.crt", cert=crt, key=key,
                                       crl=out_dir / "crl.pem", present=True),
                        node=node, links={}, generate=False)
    return items, [f"[security] {k}: {r}" for k, r in check.errors] + check.warnings


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def technician_slug(name: str) -> str:
    """A technician's name as a file and URI part."""
    slug = "".join(c if c.isalnum() else "-" for c in name.strip().lower()).strip("-")
    return slug or "technician"


def technician_cert(out_dir: Path, ca_dir: Path, *, technician: str,
                    days: int = 397) -> list[Item]:
    """The technician's OPC UA client certificate (RSA, URI urn:pswd-edge:technician:<slug>),
    signed by the site CA, for force / release / reset and loop checks through a node; the
    node must trust it (its OPC UA trust list maps it to a role)."""
    slug = technician_slug(technician)
    crt, key = out_dir / f"{slug}.crt", out_dir / f"{slug}.key"
    try:
        action = "kept" if _pair_state(crt, key, "technician") else "created"
        if action == "created":
            ca = SiteCA.ensure(ca_dir)
            made = make_app_cert(f"urn:pswd-edge:technician:{slug}", technician, client=True,
                                 ca=_signer(ca), days=days)
            out_dir.mkdir(parents=True, exist_ok=True)
            out_dir.chmod(0o700)
            write_pem(key, made.key_pem, private=True)
            write_pem(crt, made.cert_pem)
            ca.record(made.cert, crt)
    except (OSError, ValueError) as exc:
        raise CommissionError(f"cannot make the technician certificate in {out_dir}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    return [_cert_item(f"technician {technician}", crt, action,
                       "OPC UA client and user identity of the technician"),
            _key_item(f"technician {technician} key", key, action, "technician's key")]
