"""The PKI behind TLS: chains that verify, the right key usages, private keys not readable."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge_runtime.security.pki import ensure_pki, issue, make_ca, write_pki


def test_written_pki_verifies_and_is_private(tmp_path: Path) -> None:
    files = write_pki(tmp_path, client_name="cdu-1")
    for key in (files.server_key, files.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    client = x509.load_pem_x509_certificate(files.client_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    # The ssl module accepts them as a client context (what MqttClient builds).
    ctx = ssl.create_default_context(cafile=str(files.ca))
    ctx.load_cert_chain(files.client_cert, files.client_key)


def test_issue_needs_a_purpose() -> None:
    with pytest.raises(ValueError, match="server, a client or both"):
        issue(make_ca(), "nobody")


def test_ensure_pki_creates_once_and_refuses_half_a_pki(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path / "pki")
    before = first.ca.read_bytes()
    again = ensure_pki(tmp_path / "pki")
    assert again == first and again.ca.read_bytes() == before  # kept, not regenerated
    first.client_key.unlink()
    with pytest.raises(FileExistsError, match="incomplete PKI"):
        ensure_pki(tmp_path / "pki")
