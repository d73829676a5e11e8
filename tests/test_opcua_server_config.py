"""[opcua] in a node config: read with errors naming the key, attached by the assembler; the
user store and the `pswd-edge opcua` commands (no default users, scrypt hashes, trust list)."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from edge_runtime import cli
from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.config.reader import ConfigError
from edge_runtime.security.opcua_certs import Signer, ensure_server_cert, make_app_cert
from edge_runtime.security.pki import make_ca
from edge_runtime.servers.opcua.server import OpcUaServer
from edge_runtime.servers.opcua.users import UserStore
from tests.fakes import FakeDevice

pytestmark = pytest.mark.timeout(30)

NODE = """
[node]
name = "cdu-01"
role = "cdu"

[devices.pump1]
io_map = "cdu_pump_vfd"
endpoint = "127.0.0.1:15020"
unit_id = 1
"""


def write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(NODE + extra)
    return path


def test_the_assembler_attaches_the_server_from_the_opcua_section(tmp_path: Path) -> None:
    path = write(tmp_path, '[opcua]\nport = 48401\nstate_dir = "ua"\n'
                           'history = ["pump1.speed_ref"]\n')
    cfg = load_node_config(path)
    assert cfg.opcua is not None
    assert cfg.opcua.state_dir == (tmp_path / "ua").resolve()
    assert cfg.opcua.allow_anonymous is False  # off unless said
    assert cfg.opcua.endpoint == "opc.tcp://0.0.0.0:48401/pswd/"
    assert "Basic256Sha256_SignAndEncrypt" in cfg.opcua.security
    node = assemble(cfg, watchdog_thread=False, blocks=[],
                    driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                         for d in c.devices})
    assert isinstance(node.services["opcua"], OpcUaServer)
    off = load_node_config(write(tmp_path, "[opcua]\nenabled = false\n"))
    node = assemble(off, watchdog_thread=False, blocks=[],
                    driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                         for d in c.devices})
    assert "opcua" not in node.services


@pytest.mark.parametrize(("extra", "key"), [
    ('port = 0', "port"),
    ('security = ["None"]', "security"),
    ('security = []', "security"),
    ('allow_anonymous = "yes"', "allow_anonymous"),
    ('history = ["pump1.nope"]', "history"),
    ('ca_cert = "ca.crt"', "ca_key"),
    ('colour = "blue"', "colour"),
])
def test_bad_opcua_keys_are_named(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_node_config(write(tmp_path, f"[opcua]\n{extra}\n"))
    assert any(f"[opcua] {key}" in line or f"opcua {key}" in line or
               (key in line and "opcua" in line) for line in err.value.lines), err.value.lines


def test_users_are_scrypt_hashed_and_nothing_is_provisioned_by_default(tmp_path: Path) -> None:
    store = UserStore(tmp_path)
    assert store.users() == {} and store.certificates() == {}
    assert store.check_password("admin", "admin") is None
    store.add_user("bms", "infrastructure_manager", "correct horse battery")
    data = json.loads((tmp_path / "users.json").read_text())
    assert "correct horse" not in json.dumps(data) and data["users"]["bms"]["n"] >= 2**14
    assert stat.S_IMODE((tmp_path / "users.json").stat().st_mode) == 0o600
    assert store.check_password("bms", "correct horse battery") == "infrastructure_manager"
    assert store.check_password("bms", "correct horse batterY") is None
    assert UserStore(tmp_path).check_password("bms", "correct horse battery") == (
        "infrastructure_manager")
    with pytest.raises(ValueError, match="password"):
        store.add_user("short", "viewer", "tooshort")
    with pytest.raises(ValueError, match="role"):
        store.add_user("x", "admin", "long enough password")


def test_cli_adds_users_trusts_certificates_and_makes_the_server_certificate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[opcua]\nstate_dir = "ua"\n')
    monkeypatch.setattr("sys.stdin", io.StringIO("a long operator password\n"))
    assert cli.main(["opcua", "add-user", "bms", "--role", "infrastructure_manager",
                     "--config", str(path)]) == 0
    store = UserStore(tmp_path / "ua")
    assert store.check_password("bms", "a long operator password") == "infrastructure_manager"
    client = make_app_cert("urn:test:bms", "bms", client=True)
    pem = tmp_path / "bms.pem"
    pem.write_bytes(client.cert_pem)
    assert cli.main(["opcua", "trust", str(pem), "--role", "viewer", "--config",
                     str(path)]) == 0
    assert UserStore(tmp_path / "ua").certificates() == {"bms": "viewer"}
    assert (tmp_path / "ua" / "trusted" / "bms.der").exists()
    assert cli.main(["opcua", "cert", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "self-signed" in out and "urn:pswd-edge:site:cdu-01" in out
    assert cli.main(["opcua", "client-cert", "tool", "--uri", "urn:example:tool", "--out",
                     str(tmp_path / "tool")]) == 0
    assert (tmp_path / "tool" / "tool.der").exists()
    assert stat.S_IMODE((tmp_path / "tool" / "tool-key.pem").stat().st_mode) == 0o600
    assert cli.main(["opcua", "client-cert", "tool", "--uri", "urn:example:tool", "--out",
                     str(tmp_path / "tool")]) == 2  # never overwritten
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["opcua", "add-user", "x", "--role", "viewer", "--config",
                     str(path)]) == 2
    assert cli.main(["opcua", "add-user", "x", "--role", "root", "--config", str(path)]) == 2


def test_a_server_certificate_signed_by_the_site_ca(tmp_path: Path) -> None:
    ca = make_ca()
    files = ensure_server_cert(tmp_path, "urn:pswd-edge:s:n", "n", ca=Signer(ca.cert, ca.key))
    assert files.created and files.signed_by != "self"
    from cryptography import x509
    cert = x509.load_der_x509_certificate(files.cert.read_bytes())
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]
    assert cert.issuer == ca.cert.subject
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment and ku.key_encipherment
    assert ku.data_encipherment and not ku.key_cert_sign
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "urn:pswd-edge:s:n" in san.get_values_for_type(x509.UniformResourceIdentifier)
    again = ensure_server_cert(tmp_path, "urn:pswd-edge:s:n", "n")
    assert not again.created and again.cert == files.cert  # kept: clients trust it
    with pytest.raises(ValueError, match="not 'urn:other'"):
        ensure_server_cert(tmp_path, "urn:other", "n")
