"""The site CA on disk (security/ca.py): init, issue, CSR signing, revocation and CRL checks,
renewal before expiry, file modes, an offline CA; checked with `cryptography` and `openssl`."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_runtime.core.authority import USER_ROLES
from edge_runtime.security.ca import (
    CrlError,
    SiteCA,
    cert_info,
    check_crl,
    ensure_command_keys,
    is_revoked,
    load_cert,
    needs_renewal,
    renew_if_due,
)

NOW = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.fail("openssl is missing; install it: make peers", pytrace=False)
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=20)


def test_init_issue_and_files(tmp_path: Path) -> None:
    ca = SiteCA.init(tmp_path / "ca", name="Site A CA")
    assert _mode(ca.directory) == 0o700 and _mode(ca.key_path) == 0o600
    assert _mode(ca.index_path) == 0o600 and _mode(ca.cert_path) == 0o644
    with pytest.raises(FileExistsError, match="nothing was overwritten"):
        SiteCA.init(ca.directory)
    assert SiteCA.ensure(ca.directory).cert == ca.cert          # kept, not replaced
    cf = ca.issue_node("rack-01", tmp_path / "node", dns_names=["rack-01.site"],
                       ip_addresses=["10.0.1.11"])
    assert (cf.cert, cf.key) == (tmp_path / "node/rack-01.crt", tmp_path / "node/rack-01.key")
    assert _mode(cf.key) == 0o600
    cert = load_cert(cf.cert)
    cert.verify_directly_issued_by(ca.cert)
    ca.verify_issued(cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["rack-01.site"]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cf == cert_info(cf.cert, cf.key)
    # The fingerprint is what openssl prints (colons, case aside).
    out = _openssl("x509", "-in", str(cf.cert), "-noout", "-fingerprint", "-sha256").stdout
    assert out.strip().split("=", 1)[1].lower() == cf.fingerprint
    # openssl agrees the chain holds.
    verified = _openssl("verify", "-CAfile", str(ca.cert_path), str(cf.cert))
    assert verified.returncode == 0, verified.stderr
    assert [r.subject for r in ca.records()] == ["rack-01"]
    with pytest.raises(ValueError, match="server, a client or both"):
        ca.issue_node("x", tmp_path, server=False, client=False)
    with pytest.raises(FileNotFoundError, match="no site CA"):
        SiteCA.open(tmp_path / "nothing")


def test_sign_csr_keeps_the_key_with_its_owner(tmp_path: Path) -> None:
    ca = SiteCA.init(tmp_path / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hmi-2")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("hmi-2.site")]),
                          critical=False)
           .sign(key, hashes.SHA256()))
    cert = ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), client=True)
    assert cert.public_key() == key.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "hmi-2"
    assert ca.records()[-1].file == ""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "r")]))
               .sign(rsa_key, hashes.SHA256()))
    with pytest.raises(ValueError, match="P-256"):
        ca.sign_csr(rsa_csr.public_bytes(serialization.Encoding.PEM), client=True)
    with pytest.raises(ValueError, match="not a PEM certificate request"):
        ca.sign_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", client=True)


def test_revocation_crl_and_its_checks(tmp_path: Path) -> None:
    ca = SiteCA.init(tmp_path / "ca")
    a = ca.issue_node("a", tmp_path / "n")
    b = ca.issue_node("b", tmp_path / "n")
    assert not is_revoked(a.cert, ca.crl_path, ca.cert_path)
    ca.revoke(a.cert, reason="key_compromise")
    assert is_revoked(a.cert, ca.crl_path, ca.cert_path)
    assert not is_revoked(b.cert, ca.crl_path, ca.cert_path)
    crl = check_crl(ca.crl_path, ca.cert_path)
    entry = crl.get_revoked_certificate_by_serial_number(a.serial)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.key_compromise
    ca.revoke(b.serial)                                   # by serial
    assert is_revoked(b.cert, ca.crl_path, ca.cert_path)
    numbers = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    newer = check_crl(ca.crl_path, ca.cert_path)
    assert newer.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > numbers
    assert newer.last_update_utc > crl.last_update_utc    # OpenSSL keeps the newest
    assert [r.reason for r in ca.records()] == ["key_compromise", "unspecified"]
    # openssl agrees: a revoked certificate fails verification with the CRL.
    out = _openssl("verify", "-crl_check", "-CAfile", str(ca.cert_path), "-CRLfile",
                   str(ca.crl_path), str(a.cert))
    assert out.returncode != 0 and "revoked" in (out.stdout + out.stderr)
    with pytest.raises(KeyError, match="not issued by this CA"):
        ca.revoke(12345)
    with pytest.raises(ValueError, match="reason"):
        ca.revoke(a.cert, reason="bored")
    # Stale: past next_update (7 days).
    with pytest.raises(CrlError, match="stale"):
        check_crl(ca.crl_path, ca.cert_path, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=8))
    # A CRL signed by another CA is refused, even with the same name.
    other = SiteCA.init(tmp_path / "other", name="PSWD Edge site CA")
    with pytest.raises(CrlError, match="not signed by the site CA"):
        check_crl(other.crl_path, ca.cert_path)
    (tmp_path / "junk.pem").write_text("not a crl")
    with pytest.raises(CrlError, match="not a readable PEM CRL"):
        check_crl(tmp_path / "junk.pem", ca.cert_path)


def test_renewal_before_expiry(tmp_path: Path) -> None:
    ca = SiteCA.init(tmp_path / "ca")
    old = ca.issue_node("rack-01", tmp_path / "n", ip_addresses=["127.0.0.1"], days=90)
    assert not needs_renewal(old.cert, within_days=30)
    assert renew_if_due(ca, old.cert, old.key, within_days=30) is None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=61)
    assert needs_renewal(old.cert, within_days=30, now=later)
    new = renew_if_due(ca, old.cert, old.key, within_days=30, now=later)
    assert new is not None and new.serial != old.serial and new.cert == old.cert
    cert = load_cert(new.cert)
    assert cert.not_valid_after_utc > later + dt.timedelta(days=300)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    key = serialization.load_pem_private_key(new.key.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()          # a new key, matching
    assert _mode(new.key) == 0o600
    # Never beyond the CA's own end.
    short = SiteCA.init(tmp_path / "short", days=10)
    cf = short.issue_node("x", tmp_path / "s", days=397)
    assert load_cert(cf.cert).not_valid_after_utc <= short.cert.not_valid_after_utc


def test_offline_ca_verifies_but_does_not_issue(tmp_path: Path) -> None:
    ca = SiteCA.init(tmp_path / "ca")
    cf = ca.issue_node("n", tmp_path / "n")
    ca.key_path.rename(tmp_path / "usb-ca.key")            # the key goes offline
    offline = SiteCA.open(ca.directory)
    assert not offline.has_key
    with pytest.raises(FileNotFoundError, match="offline CA"):
        offline.issue_node("m", tmp_path / "n")
    assert not is_revoked(cf.cert, offline.crl_path, offline.cert_path)


def test_command_keys_made_once(tmp_path: Path) -> None:
    keys = ensure_command_keys(tmp_path / "keys")
    assert set(keys) == set(USER_ROLES)
    first = {r: p.read_text() for r, p in keys.items()}
    assert all(_mode(p) == 0o600 for p in keys.values())
    again = ensure_command_keys(tmp_path / "keys")
    assert {r: p.read_text() for r, p in again.items()} == first
    with pytest.raises(ValueError, match="unknown role"):
        ensure_command_keys(tmp_path / "keys", ["root"])


def test_certs_and_token_command_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_runtime.cli import main
    from edge_runtime.security.tokens import KeyRing

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--log-level", "ERROR", *argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    ca_dir, out = str(tmp_path / "ca"), str(tmp_path / "pki")
    code, said, _ = run("certs", "init-ca", ca_dir, "--name", "Lab CA")
    assert code == 0 and "site CA 'Lab CA'" in said
    assert run("certs", "init-ca", ca_dir)[2].strip().endswith("(nothing was overwritten)")
    code, said, _ = run("certs", "issue", "rack-01", "--ca-dir", ca_dir, "--out", out,
                        "--dns", "rack-01.site", "--ip", "127.0.0.1")
    assert code == 0 and "SHA-256" in said
    cert = load_cert(tmp_path / "pki/rack-01.crt")
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    code, said, _ = run("certs", "rotate", "--ca-dir", ca_dir, "--cert", f"{out}/rack-01.crt",
                        "--key", f"{out}/rack-01.key")
    assert code == 0 and "not due" in said
    code, said, _ = run("certs", "rotate", "--ca-dir", ca_dir, "--cert", f"{out}/rack-01.crt",
                        "--key", f"{out}/rack-01.key", "--force")
    assert code == 0 and load_cert(tmp_path / "pki/rack-01.crt") != cert
    code, said, _ = run("certs", "revoke", f"{cert.serial_number:x}", "--ca-dir", ca_dir,
                        "--reason", "superseded")
    assert code == 0 and is_revoked(cert, tmp_path / "ca/crl.pem", tmp_path / "ca/ca.crt")
    assert run("certs", "crl", "--ca-dir", ca_dir, "--copy-to", f"{out}/crl.pem")[0] == 0
    assert (tmp_path / "pki/crl.pem").read_bytes() == (tmp_path / "ca/crl.pem").read_bytes()
    code, said, _ = run("certs", "list", "--ca-dir", ca_dir, "--json")
    listed = json.loads(said)
    assert [r["reason"] for r in listed] == ["superseded", ""]
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hmi")]))
           .sign(key, hashes.SHA256()))
    (tmp_path / "hmi.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    code, _, _ = run("certs", "sign-csr", str(tmp_path / "hmi.csr"), "--ca-dir", ca_dir,
                     "--out", str(tmp_path / "hmi.crt"), "--client")
    assert code == 0 and load_cert(tmp_path / "hmi.crt").public_key() == key.public_key()
    code, _, err = run("certs", "revoke", "nope", "--ca-dir", ca_dir)
    assert code == 2 and "neither a certificate file nor a hex serial" in err
    assert run("certs", "list", "--ca-dir", str(tmp_path / "none"))[0] == 2
    # Tokens.
    keys = str(tmp_path / "tk")
    assert run("token", "init", keys)[0] == 0
    code, token, _ = run("token", "issue", "--keys", keys, "--role", "grid_operator",
                         "--aud", "rack-01", "--ttl", "60", "--sub", "ops", "--scope", "read")
    assert code == 0
    claims = KeyRing(Path(keys)).verifier().verify(token.strip(), audience="rack-01")
    assert (claims.role, claims.sub, claims.scope) == ("grid_operator", "ops", ("read",))
    assert run("token", "rotate", keys)[0] == 0
    assert KeyRing(Path(keys)).verifier().verify(token.strip(), audience="rack-01")
    assert run("token", "issue", "--keys", keys, "--role", "root", "--aud", "x",
               "--ttl", "5")[0] == 2
    assert run("token", "issue", "--keys", str(tmp_path / "none"), "--role", "grid_operator",
               "--aud", "x", "--ttl", "5")[0] == 2
