"""OPC UA application instance certificates: RSA-2048, SubjectAltName URI = application URI.

OPC UA's security policies Basic256Sha256 and Aes256_Sha256_RsaPss need RSA keys (the site PKI
of security/pki.py makes ECDSA keys for TLS), with the key usages OPC 10000-6 6.2.2 lists:
digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment, plus serverAuth and/or
clientAuth. A certificate is signed by the site CA when one is given; otherwise it is
self-signed, and then (as OPC UA stacks expect of a self-signed application certificate)
carries cA=true and keyCertSign so a peer can put it in its trust list as its own anchor.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_runtime.security.pki import write_pem

KEY_BITS = 2048
CERT_FILE = "server_cert.der"
KEY_FILE = "server_key.pem"


@dataclass(frozen=True, slots=True)
class Signer:
    """A CA that signs application certificates (security/pki.py's Issued fits)."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes


@dataclass(frozen=True, slots=True)
class AppCert:
    """An application instance certificate and its RSA key."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey

    @property
    def cert_der(self) -> bytes:
        """The certificate, DER (what OPC UA puts on the wire)."""
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def cert_pem(self) -> bytes:
        """The certificate, PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM (written mode 0600)."""
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def make_app_cert(application_uri: str, common_name: str, *, server: bool = False,
                  client: bool = False, ca: Signer | None = None,
                  dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = (),
                  days: int = 825) -> AppCert:
    """An RSA-2048 application certificate for `application_uri`, signed by `ca` or self-signed."""
    if not (server or client):
        raise ValueError("an application certificate is for a server, a client or both")
    if not application_uri:
        raise ValueError("application_uri must not be empty (it is the SubjectAltName URI)")
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PSWD Edge"),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    self_signed = ca is None
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    alt += [x509.DNSName(n) for n in dns_names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(subject if ca is None else ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))  # clock skew
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=self_signed, path_length=0 if self_signed
                                                    else None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                            key_encipherment=True, data_encipherment=True,
                                            key_agreement=False, key_cert_sign=self_signed,
                                            crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.SubjectAlternativeName(alt), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if ca is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),  # type: ignore[arg-type]
            critical=False)
    signer_key: CertificateIssuerPrivateKeyTypes = key if ca is None else ca.key
    return AppCert(builder.sign(signer_key, hashes.SHA256()), key)


@dataclass(frozen=True, slots=True)
class ServerCertFiles:
    """Where a node's OPC UA server certificate and key are, and who signed it."""

    cert: Path
    key: Path
    created: bool  # made at this start
    signed_by: str  # "self" or the CA's subject


def ensure_server_cert(directory: Path, application_uri: str, common_name: str, *,
                       hostnames: Sequence[str] = ("localhost",),
                       ip_addresses: Sequence[str] = ("127.0.0.1",),
                       ca: Signer | None = None) -> ServerCertFiles:
    """The server certificate in `directory`, created at first start (existing files are kept:
    clients trust this very certificate). A certificate whose URI is not `application_uri`
    is an error: the application URI changed, and clients would refuse the server."""
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if cert_path.exists() and key_path.exists():
        cert = x509.load_der_x509_certificate(cert_path.read_bytes())
        uris = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
        if application_uri not in uris:
            raise ValueError(f"{cert_path}: certificate is for {uris}, not {application_uri!r}; "
                             "move it aside to have a new one made")
        signer = "self" if cert.issuer == cert.subject else cert.issuer.rfc4514_string()
        return ServerCertFiles(cert_path, key_path, False, signer)
    if cert_path.exists() or key_path.exists():
        raise FileExistsError(f"{directory}: only one of {CERT_FILE}, {KEY_FILE} is there; "
                              "complete the pair or move it aside (nothing was overwritten)")
    made = make_app_cert(application_uri, common_name, server=True, ca=ca,
                         dns_names=hostnames, ip_addresses=ip_addresses)
    write_pem(key_path, made.key_pem, private=True)
    write_pem(cert_path, made.cert_der)
    signer = "self" if ca is None else ca.cert.subject.rfc4514_string()
    return ServerCertFiles(cert_path, key_path, True, signer)


def load_signer(cert_pem: Path, key_pem: Path) -> Signer:
    """A CA from PEM files (the site CA's certificate and key)."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    key = serialization.load_pem_private_key(key_pem.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_pem}: a CA key must be RSA or ECDSA")
    return Signer(cert, key)
