"""The site CA on disk: init, issue node and client certificates, sign CSRs, revoke, CRL, renew.

Offline-capable: the CA is a directory that can live on a commissioning laptop or a USB key.
A node needs only the CA certificate (its trust anchor) and the CRL; the CA's key stays where
certificates are issued. Certificates are ECDSA P-256 for TLS 1.3 (pki.py; OPC UA's RSA
application certificates are made by security/opcua_certs.py under the same CA: `issuer()`).

Directory layout (`SiteCA.directory`, mode 0700):

    ca.crt       the site CA certificate (copy it to every node: [security] ca)
    ca.key       its private key, mode 0600 (never leaves this directory; never committed)
    crl.pem      the revocation list, signed by the CA (copy it to every node: [security] crl)
    index.json   every certificate issued (serial, subject, expiry, fingerprint, file, revoked)

Function API (the commissioning tool `provision` and `pswd-edge certs` call these):

    ca = SiteCA.ensure(dir, name="Site A CA")     # open, or init on first use
    ca = SiteCA.init(dir, name=...)               # FileExistsError if a CA is there
    ca = SiteCA.open(dir)                         # FileNotFoundError if none
    cf = ca.issue_node("rack-01", out_dir, server=True, client=True,
                       dns_names=["rack-01.site"], ip_addresses=["10.0.1.11"])
                                                  # -> CertFiles(cert, key, fingerprint,
                                                  #    serial, not_after, subject);
                                                  # out_dir/rack-01.crt and rack-01.key (0600)
    cf = ca.issue_files(cert_path, key_path, "operator-1", client=True)  # explicit paths
    cert = ca.sign_csr(csr_pem, client=True)      # x509.Certificate (key stays with the caller)
    ca.revoke(cert_path_or_serial, reason="key_compromise")   # -> the new crl.pem
    ca.publish_crl()                              # re-sign it (before next_update: 7 days)
    ca.records()                                  # [Record], what was issued and revoked
    cf = ca.renew(cert_path, key_path)            # same subject, names, usages; new key
    cf = renew_if_due(ca, cert_path, key_path, within_days=30)   # None when not due
    keys = ensure_command_keys(dir)               # role -> Path, HMAC command keys (0600)
    info = cert_info(cert_path, key_path)         # CertFiles of an existing pair
    check_crl(crl_path, ca_cert_path)             # the CRL, CrlError if forged or stale
    is_revoked(cert, crl_path, ca_cert_path)      # True/False (CrlError if the CRL is bad)

Rotation without a restart: renew writes the new key and certificate over the old files
(atomically each); a running server's `tls.CertWatcher` (re-exported here) reloads them into
its live SSLContext. Fingerprints are SHA-256 of the DER certificate, colon-separated hex
(as `openssl x509 -fingerprint -sha256` prints them, lower case). Times come from `now`
(a datetime, UTC) where given, so tests can age certificates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_runtime.core.authority import USER_ROLES
from edge_runtime.security.pki import Issued, make_ca
from edge_runtime.security.signing import generate_key
from edge_runtime.security.tls import CertWatcher

__all__ = ["CertFiles", "CertWatcher", "CrlError", "Record", "SiteCA", "cert_info",
           "check_crl", "ensure_command_keys", "fingerprint", "is_revoked", "load_cert",
           "needs_renewal", "renew_if_due"]

NODE_DAYS = 397          # the CA/Browser limit: short enough that renewal is routine
CA_DAYS = 3650
CRL_DAYS = 7             # nodes refuse nothing on a stale CRL but warn (secure_default)
RENEW_WITHIN_DAYS = 30
SKEW = dt.timedelta(minutes=5)   # certificates start 5 min early: node clocks disagree a little
REASONS = {r.name: r for r in x509.ReasonFlags
           if r not in (x509.ReasonFlags.remove_from_crl,)}


class CrlError(ValueError):
    """A CRL that cannot be trusted (wrong signer, stale) or read."""


@dataclass(frozen=True, slots=True)
class CertFiles:
    """A certificate on disk with its key, and what the commissioning report shows of it."""

    cert: Path
    key: Path
    fingerprint: str
    serial: int
    not_after: dt.datetime
    subject: str


@dataclass(frozen=True, slots=True)
class Record:
    """One issued certificate in the CA's index."""

    serial: str          # hex
    subject: str
    not_after: str       # ISO 8601 UTC
    fingerprint: str
    file: str            # where it was written ("" for a signed CSR)
    revoked_at: str = ""
    reason: str = ""


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.UTC)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, colon-separated lower-case hex."""
    return cert.fingerprint(hashes.SHA256()).hex(":")


def load_cert(path: Path) -> x509.Certificate:
    """A PEM certificate from `path`."""
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def cert_info(cert: Path, key: Path) -> CertFiles:
    """The CertFiles of an existing certificate and key."""
    c = load_cert(cert)
    return CertFiles(Path(cert), Path(key), fingerprint(c), c.serial_number,
                     c.not_valid_after_utc, _cn(c))


def needs_renewal(cert: Path, *, within_days: float = RENEW_WITHIN_DAYS,
                  now: dt.datetime | None = None) -> bool:
    """True when `cert` expires within `within_days` (or has expired)."""
    left = load_cert(cert).not_valid_after_utc - _now(now)
    return left <= dt.timedelta(days=within_days)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file and rename, so a reader sees the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask and ignored for old files
    os.replace(tmp, path)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def check_crl(crl: Path, ca_cert: Path, *, now: dt.datetime | None = None,
              allow_stale: bool = False) -> x509.CertificateRevocationList:
    """The CRL at `crl` if the CA at `ca_cert` signed it and it is current; else CrlError."""
    try:
        parsed = x509.load_pem_x509_crl(Path(crl).read_bytes())
    except (OSError, ValueError) as exc:
        raise CrlError(f"{crl}: not a readable PEM CRL: {exc}") from None
    ca = load_cert(ca_cert)
    public = ca.public_key()
    if parsed.issuer != ca.subject or not isinstance(public, ec.EllipticCurvePublicKey) \
            or not parsed.is_signature_valid(public):
        raise CrlError(f"{crl}: not signed by the site CA {ca_cert}")
    next_update = parsed.next_update_utc
    if not allow_stale and next_update is not None and next_update < _now(now):
        raise CrlError(f"{crl}: stale since {next_update.isoformat()} "
                       "(pswd-edge certs crl re-publishes it)")
    return parsed


def is_revoked(cert: x509.Certificate | Path, crl: Path, ca_cert: Path, *,
               now: dt.datetime | None = None) -> bool:
    """True if `cert` is on the CA's CRL (a stale CRL still counts for what it lists)."""
    c = load_cert(cert) if isinstance(cert, Path) else cert
    parsed = check_crl(crl, ca_cert, now=now, allow_stale=True)
    return parsed.get_revoked_certificate_by_serial_number(c.serial_number) is not None


def ensure_command_keys(directory: Path, roles: Iterable[str] = USER_ROLES) -> dict[str, Path]:
    """The HMAC command-signing key of each role in `directory`, made (0600) where missing."""
    out: dict[str, Path] = {}
    for role in roles:
        if role not in USER_ROLES:
            raise ValueError(f"unknown role {role!r} (one of {', '.join(USER_ROLES)})")
        path = Path(directory) / f"{role}.key"
        if not path.exists():
            generate_key(path)
        out[role] = path
    return out


class SiteCA:
    """A site CA in a directory; see the module docstring for the layout and the API."""

    def __init__(self, directory: Path) -> None:
        """Open the CA in `directory` (use open/init/ensure rather than this directly)."""
        self.directory = Path(directory)
        self.cert_path = self.directory / "ca.crt"
        self.key_path = self.directory / "ca.key"
        self.crl_path = self.directory / "crl.pem"
        self.index_path = self.directory / "index.json"
        self.cert = load_cert(self.cert_path)

    # -- life cycle -----------------------------------------------------------------------
    @classmethod
    def init(cls, directory: Path, *, name: str = "PSWD Edge site CA",
             days: int = CA_DAYS) -> SiteCA:
        """Create a new CA in `directory` (with an empty CRL); FileExistsError if one is there."""
        directory = Path(directory)
        if (directory / "ca.crt").exists() or (directory / "ca.key").exists():
            raise FileExistsError(f"{directory}: a CA is there already (nothing was "
                                  "overwritten)")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        ca = make_ca(name, days=days)
        _atomic_write(directory / "ca.key", ca.key_pem, 0o600)
        _atomic_write(directory / "ca.crt", ca.cert_pem, 0o644)
        site = cls(directory)
        site._save_index({"crl_number": 0, "crl_last_update": "", "issued": []})
        site.publish_crl()
        return site

    @classmethod
    def open(cls, directory: Path) -> SiteCA:
        """The CA in `directory`; FileNotFoundError naming the directory if there is none."""
        if not (Path(directory) / "ca.crt").exists():
            raise FileNotFoundError(f"{directory}: no site CA (pswd-edge certs init-ca "
                                    f"{directory})")
        return cls(directory)

    @classmethod
    def ensure(cls, directory: Path, *, name: str = "PSWD Edge site CA") -> SiteCA:
        """The CA in `directory`, created on first use."""
        if (Path(directory) / "ca.crt").exists():
            return cls(directory)
        return cls.init(directory, name=name)

    @property
    def has_key(self) -> bool:
        """True where certificates can be issued (the CA key is here, not offline)."""
        return self.key_path.exists()

    def issuer(self) -> Issued:
        """The CA certificate and key (pki.Issued), to sign with (OPC UA certificates)."""
        if not self.has_key:
            raise FileNotFoundError(f"{self.key_path}: the CA key is not here (offline CA): "
                                    "issue certificates where it is")
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.key_path}: not an EC private key")
        return Issued(self.cert, key)

    # -- issuing --------------------------------------------------------------------------
    def issue_node(self, name: str, out_dir: Path, *, server: bool = True, client: bool = True,
                   dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = (),
                   days: int = NODE_DAYS, now: dt.datetime | None = None) -> CertFiles:
        """Issue `name`'s certificate and key as out_dir/<name>.crt and <name>.key (0600)."""
        out_dir = Path(out_dir)
        return self.issue_files(out_dir / f"{name}.crt", out_dir / f"{name}.key", name,
                                server=server, client=client, dns_names=dns_names,
                                ip_addresses=ip_addresses, days=days, now=now)

    def issue_files(self, cert_path: Path, key_path: Path, common_name: str, *,
                    server: bool = False, client: bool = False,
                    dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = (),
                    days: int = NODE_DAYS, now: dt.datetime | None = None) -> CertFiles:
        """Issue a new key and certificate for `common_name`, written to the paths given
        (the key first, so a watcher never pairs a new certificate with a missing key)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(common_name, key.public_key(), server=server, client=client,
                          dns_names=dns_names, ip_addresses=ip_addresses, days=days, now=now)
        cert_path, key_path = Path(cert_path), Path(key_path)
        _atomic_write(key_path, _key_pem(key), 0o600)
        _atomic_write(cert_path, _pem(cert), 0o644)
        self.record(cert, cert_path)
        return CertFiles(cert_path, key_path, fingerprint(cert), cert.serial_number,
                         cert.not_valid_after_utc, common_name)

    def sign_csr(self, csr_pem: bytes, *, server: bool = False, client: bool = False,
                 days: int = NODE_DAYS, now: dt.datetime | None = None) -> x509.Certificate:
        """A certificate for a CSR (its subject CN and SubjectAltNames); the key never moved."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise ValueError(f"not a PEM certificate request: {exc}") from None
        if not csr.is_signature_valid:
            raise ValueError("the CSR's signature does not verify (altered, or not its key)")
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or \
                not isinstance(public.curve, ec.SECP256R1):
            raise ValueError("the CSR's key must be ECDSA P-256 (TLS certificates of this site)")
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cns:
            raise ValueError("the CSR has no common name")
        dns: list[str] = []
        ips: list[str] = []
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = list(san.get_values_for_type(x509.DNSName))
            ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            pass
        cert = self._sign(str(cns[0].value), public, server=server, client=client,
                          dns_names=dns, ip_addresses=ips, days=days, now=now)
        self.record(cert, None)
        return cert

    def renew(self, cert_path: Path, key_path: Path, *, days: int = NODE_DAYS,
              now: dt.datetime | None = None) -> CertFiles:
        """Re-issue `cert_path` with a new key: same subject, names and usages; files replaced
        in place (a CertWatcher reloads them). The old certificate stays valid until it ends."""
        old = load_cert(cert_path)
        eku: list[x509.ObjectIdentifier] = []
        with contextlib.suppress(x509.ExtensionNotFound):
            eku = list(old.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        dns: list[str] = []
        ips: list[str] = []
        try:
            san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = list(san.get_values_for_type(x509.DNSName))
            ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            pass
        return self.issue_files(cert_path, key_path, _cn(old),
                                server=ExtendedKeyUsageOID.SERVER_AUTH in eku,
                                client=ExtendedKeyUsageOID.CLIENT_AUTH in eku,
                                dns_names=dns, ip_addresses=ips, days=days, now=now)

    def _sign(self, common_name: str, public: ec.EllipticCurvePublicKey, *, server: bool,
              client: bool, dns_names: Sequence[str], ip_addresses: Sequence[str], days: int,
              now: dt.datetime | None) -> x509.Certificate:
        if not (server or client):
            raise ValueError("a certificate must be for a server, a client or both")
        if not common_name:
            raise ValueError("empty common name")
        ca = self.issuer()
        start = _now(now) - SKEW
        end = min(start + SKEW + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([
                       x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PSWD Edge"),
                       x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(self.cert.subject)
                   .public_key(public).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True,
                                                key_cert_sign=False, crl_sign=False,
                                                content_commitment=False,
                                                key_encipherment=False, data_encipherment=False,
                                                encipher_only=False, decipher_only=False),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public),
                                  critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       ca.key.public_key()), critical=False))
        alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return builder.sign(ca.key, hashes.SHA256())

    # -- index, revocation ----------------------------------------------------------------
    def _load_index(self) -> dict[str, Any]:
        if not self.index_path.exists():
            return {"crl_number": 0, "crl_last_update": "", "issued": []}
        data: dict[str, Any] = json.loads(self.index_path.read_text())
        return data

    def _save_index(self, data: dict[str, Any]) -> None:
        _atomic_write(self.index_path, json.dumps(data, indent=1).encode() + b"\n", 0o600)

    def record(self, cert: x509.Certificate, path: Path | None) -> None:
        """Add a certificate this CA signed elsewhere (OPC UA) to the index, for list/revoke."""
        if cert.issuer != self.cert.subject:
            raise ValueError(f"{_cn(cert)}: not issued by this CA")
        data = self._load_index()
        data["issued"].append(asdict(Record(
            serial=f"{cert.serial_number:x}", subject=_cn(cert),
            not_after=cert.not_valid_after_utc.isoformat(), fingerprint=fingerprint(cert),
            file=str(path) if path is not None else "")))
        self._save_index(data)

    def records(self) -> list[Record]:
        """Every certificate issued here, oldest first."""
        return [Record(**r) for r in self._load_index()["issued"]]

    def revoke(self, cert: x509.Certificate | Path | int, *, reason: str = "unspecified",
               now: dt.datetime | None = None) -> Path:
        """Revoke a certificate (object, file or serial) and publish the new CRL (its path)."""
        if reason not in REASONS:
            raise ValueError(f"reason {reason!r}: one of {', '.join(sorted(REASONS))}")
        if isinstance(cert, int):
            serial = cert
        else:
            c = load_cert(cert) if isinstance(cert, Path) else cert
            if c.issuer != self.cert.subject:
                raise ValueError(f"{_cn(c)}: not issued by this CA")
            serial = c.serial_number
        data = self._load_index()
        matches = [r for r in data["issued"] if r["serial"] == f"{serial:x}"]
        if not matches:
            raise KeyError(f"serial {serial:x} was not issued by this CA (pswd-edge certs list)")
        when = _now(now).isoformat()
        for r in matches:
            if not r["revoked_at"]:
                r["revoked_at"], r["reason"] = when, reason
        self._save_index(data)
        return self.publish_crl(now=now)

    def publish_crl(self, *, days: int = CRL_DAYS, now: dt.datetime | None = None) -> Path:
        """Sign and write crl.pem with every revoked certificate; valid `days`."""
        ca = self.issuer()
        data = self._load_index()
        # OpenSSL keeps the CRL with the latest lastUpdate when a live context has several,
        # among those already valid: each new CRL must be strictly later than the previous
        # one (whole seconds) and not in the future of a verifier whose clock is a little
        # behind, hence backdated like a certificate's start.
        stamp = (_now(now) - SKEW).replace(microsecond=0)
        if data["crl_last_update"]:
            previous = dt.datetime.fromisoformat(data["crl_last_update"])
            stamp = max(stamp, previous + dt.timedelta(seconds=1))
        data["crl_number"] += 1
        data["crl_last_update"] = stamp.isoformat()
        builder = (x509.CertificateRevocationListBuilder()
                   .issuer_name(self.cert.subject)
                   .last_update(stamp).next_update(stamp + dt.timedelta(days=days))
                   .add_extension(x509.CRLNumber(data["crl_number"]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       ca.key.public_key()), critical=False))
        seen: set[str] = set()
        for r in data["issued"]:
            if not r["revoked_at"] or r["serial"] in seen:
                continue
            seen.add(r["serial"])
            revoked = (x509.RevokedCertificateBuilder()
                       .serial_number(int(r["serial"], 16))
                       .revocation_date(dt.datetime.fromisoformat(r["revoked_at"])))
            if r["reason"] != "unspecified":
                revoked = revoked.add_extension(x509.CRLReason(REASONS[r["reason"]]),
                                                critical=False)
            builder = builder.add_revoked_certificate(revoked.build())
        crl = builder.sign(ca.key, hashes.SHA256())
        _atomic_write(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
        self._save_index(data)
        return self.crl_path

    def verify_issued(self, cert: x509.Certificate) -> None:
        """Raise ValueError unless this CA signed `cert`."""
        public = self.cert.public_key()
        if cert.issuer != self.cert.subject or not isinstance(public, ec.EllipticCurvePublicKey):
            raise ValueError(f"{_cn(cert)}: not issued by this CA")
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ValueError(f"{_cn(cert)}: not issued by this CA ({exc})") from None


def renew_if_due(ca: SiteCA, cert: Path, key: Path, *, within_days: float = RENEW_WITHIN_DAYS,
                 days: int = NODE_DAYS, now: dt.datetime | None = None) -> CertFiles | None:
    """Renew `cert` when it expires within `within_days`; None when it is not due yet."""
    if not needs_renewal(cert, within_days=within_days, now=now):
        return None
    return ca.renew(cert, key, days=days, now=now)
