"""`provision`: the site CA (made when missing), the node's certificates and its command-signing
keys, installed with private files at mode 0600, and an inventory of fingerprints and expiry.

The CA is edge_runtime/security/ca.py's SiteCA (a directory: ca.crt, ca.key 0600, crl.pem,
index.json; it may live on the technician's laptop). For the node, in its install directory:
- `<node>.crt` / `<node>.key`: its TLS certificate (ECDSA P-256, server and client), the one
  `[security] cert/key` names: the MQTT link's client certificate and the HTTPS server's;
- `opcua.crt` / `opcua.key`: its OPC UA application certificate (RSA-2048, server and client,
  the application URI as SubjectAltName URI, as Basic256Sha256 requires), signed by the CA;
- `ca.crt`, `crl.pem`: the trust anchor and revocation list;
- `command_keys/<role>.key`: HMAC command-signing keys per role ([mqtt] command_keys);
- `security.toml`: the `[security]` lines for the node config.
Files already present are kept, never overwritten, and inventoried as they are; then the
runtime's own start check (secure_default.check_start) judges the result. Nothing secret is
printed, journaled or put in the report: paths, fingerprints and dates only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import shutil
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_runtime.core.authority import USER_ROLES
from edge_runtime.security.ca import SiteCA, ensure_command_keys
from edge_runtime.security.pki import Issued, write_pem
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
    cert = x509.load_pem_x509_certificate(path.read_bytes())
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


def _issue_opcua(ca: Issued, node: str, uri: str, hosts: Sequence[str],
                 days: int, *, server: bool = True) -> tuple[x509.Certificate, bytes]:
    """RSA-2048 certificate for an OPC UA application (Basic256Sha256 needs RSA)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    for h in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PSWD Edge"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{node} OPC UA")])
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(ca.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                         key_encipherment=True, data_encipherment=True,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(ca.key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return cert, pem


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

        ocrt, okey = out_dir / "opcua.crt", out_dir / "opcua.key"
        action = "kept" if _pair_state(ocrt, okey, "OPC UA") else "created"
        if action == "created":
            cert, key_pem = _issue_opcua(ca.issuer(), node, opcua_uri(site, node),
                                         [node, "localhost", *dns, "127.0.0.1", *ips], days)
            write_pem(okey, key_pem, private=True)
            write_pem(ocrt, cert.public_bytes(serialization.Encoding.PEM))
            ca.record(cert, ocrt)
        items += [_cert_item("OPC UA", ocrt, action,
                             f"OPC UA application {opcua_uri(site, node)}"),
                  _key_item("OPC UA key", okey, action, "OPC UA application key")]

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
            cert, key_pem = _issue_opcua(ca.issuer(), technician,
                                         f"urn:pswd-edge:technician:{slug}", [], days,
                                         server=False)
            out_dir.mkdir(parents=True, exist_ok=True)
            out_dir.chmod(0o700)
            write_pem(key, key_pem, private=True)
            write_pem(crt, cert.public_bytes(serialization.Encoding.PEM))
            ca.record(cert, crt)
    except (OSError, ValueError) as exc:
        raise CommissionError(f"cannot make the technician certificate in {out_dir}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    return [_cert_item(f"technician {technician}", crt, action,
                       "OPC UA client and user identity of the technician"),
            _key_item(f"technician {technician} key", key, action, "technician's key")]
