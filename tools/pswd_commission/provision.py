"""`provision`: the site CA (made when missing), the node's certificates and its command-signing
keys, installed with private files at mode 0600, and an inventory of fingerprints and expiry.

Certificates: MQTT (client), HTTPS (server, with the node's DNS names and addresses), OPC UA
(RSA-2048, server and client, the application URI as SubjectAltName URI, as OPC UA stacks
require); keys: one HMAC command-signing key per role (edge_runtime/security/signing.py).
Files already present are kept, never overwritten, and inventoried as they are. Nothing
secret is printed, journaled or put in the report: paths, fingerprints and dates only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_runtime.core.authority import USER_ROLES
from edge_runtime.security.pki import Issued, issue, make_ca, write_pem
from edge_runtime.security.signing import generate_key
from pswd_commission.session import CommissionError


@dataclass(frozen=True, slots=True)
class Item:
    """One installed file as the inventory records it."""

    name: str
    kind: str  # ca | certificate | private key | signing key
    path: str
    mode: str
    fingerprint_sha256: str
    subject: str = ""
    not_after: str = ""
    action: str = "created"  # created | kept

    def as_dict(self) -> dict[str, str]:
        """JSON form."""
        return asdict(self)


def opcua_uri(site: str, node: str) -> str:
    """The node's OPC UA application URI."""
    return f"urn:pswd-edge:{site}:{node}"


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _cert_item(name: str, path: Path, action: str) -> Item:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return Item(name, "ca" if name == "ca" else "certificate", str(path), _mode(path),
                _fingerprint(cert), cert.subject.rfc4514_string(),
                cert.not_valid_after_utc.isoformat(), action)


def _key_item(name: str, path: Path, action: str, kind: str = "private key") -> Item:
    # A digest of the key file identifies it without revealing it (SHA-256 is one-way).
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return Item(name, kind, str(path), _mode(path), f"sha256:{digest}...", action=action)


def _mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


def load_or_make_ca(ca_dir: Path, *, site: str) -> tuple[Issued, list[Item]]:
    """The site CA from ca_dir, made there first when it has none."""
    crt, key = ca_dir / "ca.crt", ca_dir / "ca.key"
    if crt.exists() != key.exists():
        raise CommissionError(f"{ca_dir}: ca.crt and ca.key must both be there or both be "
                              f"missing (nothing was changed)")
    if crt.exists():
        if key.stat().st_mode & 0o077:
            raise CommissionError(f"{key}: readable by group or others; chmod 600 it")
        try:
            cert = x509.load_pem_x509_certificate(crt.read_bytes())
            pkey = serialization.load_pem_private_key(key.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise CommissionError(f"{ca_dir}: cannot load the CA: {exc}") from None
        if not isinstance(pkey, ec.EllipticCurvePrivateKey):
            raise CommissionError(f"{key}: the site CA key must be an EC key")
        ca, action = Issued(cert, pkey), "kept"
    else:
        ca, action = make_ca(f"PSWD Edge site CA {site}"), "created"
        write_pem(crt, ca.cert_pem)
        write_pem(key, ca.key_pem, private=True)
    return ca, [_cert_item("ca", crt, action), _key_item("ca key", key, action)]


def _issue_opcua(ca: Issued, node: str, uri: str, hosts: Sequence[str],
                 days: int) -> tuple[bytes, bytes]:
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
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(ca.key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), pem


def provision(out_dir: Path, ca_dir: Path, *, node: str, site: str, hosts: Sequence[str],
              roles: Sequence[str], days: int = 825) -> list[Item]:
    """Install everything the node needs under out_dir; the inventory of what is there."""
    for role in roles:
        if role not in USER_ROLES:
            raise CommissionError(f"--roles: unknown role {role!r} "
                                  f"(one of {', '.join(USER_ROLES)})")
    try:
        ca, items = load_or_make_ca(ca_dir, site=site)
        out_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(out_dir, 0o700)
        ca_copy = out_dir / "ca.crt"
        if not ca_copy.exists():
            write_pem(ca_copy, ca.cert_pem)
        dns = [h for h in hosts if not _is_ip(h)] or ["localhost"]
        ips = [h for h in hosts if _is_ip(h)] or ["127.0.0.1"]
        uri = opcua_uri(site, node)
        plans: dict[str, Callable[[], tuple[bytes, bytes]]] = {
            "mqtt": lambda: _pem(issue(ca, node, client=True, days=days)),
            "https": lambda: _pem(issue(ca, node, server=True, dns_names=dns,
                                        ip_addresses=ips, days=days)),
            "opcua": lambda: _issue_opcua(ca, node, uri, [*dns, *ips], days),
        }
        for name, make in plans.items():
            crt, key = out_dir / f"{name}.crt", out_dir / f"{name}.key"
            if crt.exists() and key.exists():
                action = "kept"
            elif crt.exists() or key.exists():
                raise CommissionError(f"{out_dir}: {name}.crt and {name}.key must both be "
                                      f"there or both be missing (nothing was overwritten)")
            else:
                cert_pem, key_pem = make()
                write_pem(key, key_pem, private=True)
                write_pem(crt, cert_pem)
                action = "created"
            items += [_cert_item(name, crt, action), _key_item(f"{name} key", key, action)]
        for role in roles:
            path = out_dir / "keys" / f"{role}.key"
            action = "kept"
            if not path.exists():
                generate_key(path)
                action = "created"
            items.append(_key_item(f"{role} command key", path, action, "signing key"))
    except OSError as exc:
        raise CommissionError(f"cannot install into {exc.filename or out_dir}: "
                              f"{exc.strerror or exc}") from None
    loose = [i for i in items if i.kind in ("private key", "signing key") and i.mode != "0600"]
    if loose:
        raise CommissionError(f"{loose[0].path}: mode {loose[0].mode}, must be 0600")
    return items


def _pem(issued: Issued) -> tuple[bytes, bytes]:
    return issued.cert_pem, issued.key_pem


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
