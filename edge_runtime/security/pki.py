"""A small X.509 PKI with `cryptography`: a CA, server and client certificates, PEM files.

Used by tests (a real TLS 1.3 Mosquitto with client certificates) and by a node's first start
when it has no certificates yet. Keys are ECDSA P-256: as strong as RSA-3072 for TLS 1.3 and
generated in about a millisecond, so every test can make its own PKI.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        """The certificate, PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM (files holding it are mode 0600)."""
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PSWD Edge"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)  # 5 min for clock skew


def make_ca(common_name: str = "PSWD Edge CA", *, days: int = 3650) -> Issued:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)


def issue(ca: Issued, common_name: str, *, server: bool = False, client: bool = False,
          dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = (),
          days: int = 825) -> Issued:
    """An end-entity certificate signed by `ca`, for TLS server and/or client authentication."""
    if not (server or client):
        raise ValueError("a certificate must be for a server, a client or both")
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    builder = (x509.CertificateBuilder()
               .subject_name(_name(common_name)).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True,
                                            key_cert_sign=False, crl_sign=False,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.key.public_key()), critical=False))
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def write_pem(path: Path, data: bytes, *, private: bool = False) -> Path:
    """Write a PEM file; private keys get mode 0600 from creation on (never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


@dataclass(frozen=True, slots=True)
class PkiFiles:
    """Paths of a CA, one server and one client certificate with their keys."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def write_pki(directory: Path, *, server_name: str = "localhost",
              server_ips: Sequence[str] = ("127.0.0.1",), client_name: str = "node") -> PkiFiles:
    """Create a CA, a server certificate and a client certificate as PEM files in `directory`."""
    ca = make_ca()
    server = issue(ca, server_name, server=True, dns_names=[server_name], ip_addresses=server_ips)
    client = issue(ca, client_name, client=True)
    return PkiFiles(
        ca=write_pem(directory / "ca.crt", ca.cert_pem),
        server_cert=write_pem(directory / "server.crt", server.cert_pem),
        server_key=write_pem(directory / "server.key", server.key_pem, private=True),
        client_cert=write_pem(directory / f"{client_name}.crt", client.cert_pem),
        client_key=write_pem(directory / f"{client_name}.key", client.key_pem, private=True),
    )


def ensure_pki(directory: Path, *, server_name: str = "localhost",
               server_ips: Sequence[str] = ("127.0.0.1",), client_name: str = "node") -> PkiFiles:
    """The PKI in `directory`, created on first start; existing files are kept as they are."""
    files = PkiFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key",
                     directory / f"{client_name}.crt", directory / f"{client_name}.key")
    if all(p.exists() for p in (files.ca, files.server_cert, files.server_key,
                                files.client_cert, files.client_key)):
        return files
    if any(p.exists() for p in (files.ca, files.server_cert, files.client_cert)):
        raise FileExistsError(f"{directory}: an incomplete PKI is there already; "
                              "complete it or move it aside (nothing was overwritten)")
    return write_pki(directory, server_name=server_name, server_ips=server_ips,
                     client_name=client_name)
