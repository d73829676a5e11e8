"""Secure channel set-up of the OPC UA client driver (`[devices.X] security`).

Basic256Sha256 with Sign or SignAndEncrypt, the client's application instance certificate and
key, and the server's certificate pinned from a file: the channel is opened with that public
key, so a server presenting any other certificate cannot complete OpenSecureChannel. Without
the pin asyncua would take whatever certificate the endpoint list offers, which is why
`server_cert` is required (config/devices.py).
"""

from __future__ import annotations

from pathlib import Path

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509

from edge_runtime.config.schema import ClientSecurity

_MODES = {"Sign": ua.MessageSecurityMode.Sign,
          "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}


def application_uri(cert_path: Path) -> str | None:
    """The SubjectAltName URI of a certificate (PEM or DER): the client's application URI."""
    data = cert_path.read_bytes()
    cert = (x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_certificate(data))
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = alt.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


async def apply_security(client: Client, security: ClientSecurity) -> None:
    """Configure `client` (before connect) for the device's security settings."""
    policy, _, mode = security.policy_mode.partition("_")
    if policy != "Basic256Sha256" or mode not in _MODES:
        raise ValueError(f"unsupported security {security.policy_mode!r}")
    # The session's ApplicationUri must equal the certificate's: servers check it.
    uri = application_uri(security.client_cert)
    if uri:
        client.application_uri = uri
    await client.set_security(SecurityPolicyBasic256Sha256,
                              certificate=str(security.client_cert),
                              private_key=str(security.client_key),
                              server_certificate=str(security.server_cert),
                              mode=_MODES[mode])
