"""Secure by default (security/secure_default.py, cli.load_for_run): a production config
without certificates, TLS or signed commands refuses to start, naming each missing piece;
`ca_dir` makes what is missing at first start; `insecure = true` starts and says so at start
and every minute on the node's clock."""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.cli import load_for_run, main
from edge_runtime.config.reader import ConfigError
from edge_runtime.core.clock import VirtualClock
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.security.ca import SiteCA, load_cert
from edge_runtime.security.secure_default import (
    CertMonitor,
    InsecureNotice,
    SecurityConfig,
    check_start,
)
from edge_runtime.security.signing import generate_key
from tests.mosquitto import free_port
from tests.test_cli_errors import dump_toml, example

pytestmark = pytest.mark.timeout(60)

PKI = {"ca": "pki/ca.crt", "cert": "pki/node.crt", "key": "pki/node.key", "crl": "pki/crl.pem"}


def _write(tmp_path: Path, doc: dict[str, Any], name: str = "node.toml") -> Path:
    path = tmp_path / name
    path.write_text(dump_toml(doc))
    return path


def _production(name: str, security: dict[str, Any] | None) -> dict[str, Any]:
    doc = example(name, free_port())
    doc.pop("security", None)
    if security is not None:
        doc["security"] = security
    return doc


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--log-level", "ERROR", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_shipped_examples_are_labelled_insecure() -> None:
    for name in ("cdu.toml", "rack.toml", "site.toml", "cdu_heat.toml"):
        text = (Path(__file__).resolve().parents[1] / "examples" / name).read_text()
        assert "[security]\ninsecure = true" in text, name


def test_production_config_without_keys_refuses_to_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path, _production("site.toml", None))
    for argv in (("check-config", str(config)),
                 ("run", "--config", str(config), "--duration", "0.1")):
        code, _, err = _cli(capsys, *argv)
        assert code == 2, err
        lines = err.strip().splitlines()
        for key in ("ca", "cert", "key"):
            assert any(line.startswith(f"{config}: [security] {key}: required for a "
                                       "production node") for line in lines), err
        assert f"{config}: [mqtt] tls: required: a production link is TLS 1.3" in err
        assert f"{config}: [mqtt] command_keys: required: commands must be signed" in err
        assert "insecure = true only in a lab" in err
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


def test_first_start_makes_what_is_missing_from_ca_dir(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _production("rack.toml", {"ca_dir": "site-ca", "token_keys": "token_keys",
                                    "dns_name": "rack-01.site", "ip_address": "10.0.1.11",
                                    **PKI})
    config = _write(tmp_path, doc)
    # check-config says what run will make, and makes nothing.
    code, out, err = _cli(capsys, "check-config", str(config))
    assert code == 0, err
    assert "INSECURE" not in out
    assert not (tmp_path / "site-ca").exists() and not (tmp_path / "pki").exists()
    code, _, err = _cli(capsys, "run", "--config", str(config), "--duration", "0.1")
    assert code == 0, err
    ca = SiteCA.open(tmp_path / "site-ca")
    cert = load_cert(tmp_path / "pki/node.crt")
    cert.verify_directly_issued_by(ca.cert)
    assert stat.S_IMODE((tmp_path / "pki/node.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert (tmp_path / "pki/ca.crt").read_bytes() == ca.cert_path.read_bytes()
    assert (tmp_path / "token_keys" / "active").exists()
    assert [r.subject for r in ca.records()] == ["rack-01"]
    # A second start keeps everything as it is.
    before = (tmp_path / "pki/node.crt").read_bytes()
    assert _cli(capsys, "run", "--config", str(config), "--duration", "0.1")[0] == 0
    assert (tmp_path / "pki/node.crt").read_bytes() == before
    assert len(ca.records()) == 1


def _secure(tmp_path: Path) -> tuple[SiteCA, SecurityConfig]:
    ca = SiteCA.init(tmp_path / "ca")
    cf = ca.issue_node("n", tmp_path / "pki")
    return ca, SecurityConfig(ca=ca.cert_path, cert=cf.cert, key=cf.key, crl=ca.crl_path)


def _errors(sec: SecurityConfig, **kw: Any) -> list[str]:
    return check_start(sec, node="n", links={}, generate=False, **kw).reasons


def test_each_bad_file_is_named(tmp_path: Path) -> None:
    ca, sec = _secure(tmp_path)
    assert _errors(sec) == []
    assert sec.key is not None and sec.cert is not None and sec.crl is not None
    os.chmod(sec.key, 0o644)
    assert _errors(sec) == [f"[security] key: {sec.key}: readable by group or others; "
                            "chmod 600 it"]
    os.chmod(sec.key, 0o600)
    other = SiteCA.init(tmp_path / "other")
    foreign = other.issue_node("n", tmp_path / "foreign")
    errs = _errors(SecurityConfig(ca=ca.cert_path, cert=foreign.cert, key=foreign.key,
                                  crl=ca.crl_path))
    assert errs == [f"[security] cert: {foreign.cert} is not issued by the CA {ca.cert_path}"]
    mismatched = SecurityConfig(ca=ca.cert_path, cert=sec.cert, key=foreign.key,
                                crl=ca.crl_path)
    assert any("does not match" in e for e in _errors(mismatched))
    errs = _errors(SecurityConfig(ca=ca.cert_path, cert=sec.cert, key=sec.key,
                                  crl=other.crl_path))
    assert errs == [f"[security] crl: {other.crl_path}: not signed by the site CA "
                    f"{ca.cert_path}"]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    assert any("expired on" in e for e in _errors(sec, now=later))
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=380)
    check = check_start(sec, node="n", links={}, generate=False, now=soon)
    assert check.errors == [] and any("expires on" in w for w in check.warnings)
    ca.revoke(sec.cert)
    assert _errors(sec) == [f"[security] cert: {sec.cert} is revoked by {sec.crl}: issue a "
                            "new one"]


def test_first_start_renews_a_certificate_near_its_end(tmp_path: Path) -> None:
    ca = SiteCA.init(tmp_path / "ca")
    cf = ca.issue_node("n", tmp_path / "pki", days=20)
    sec = SecurityConfig(ca=ca.cert_path, cert=cf.cert, key=cf.key, crl=ca.crl_path,
                         ca_dir=ca.directory)
    check = check_start(sec, node="n", links={}, generate=True)
    assert check.errors == [] and check.made and "renewed" in check.made[0]
    assert load_cert(cf.cert).serial_number != cf.serial


def test_links_must_be_authenticated(tmp_path: Path) -> None:
    _, sec = _secure(tmp_path)

    class Link:
        def __init__(self, tls: object, command_keys: Path | None) -> None:
            self.tls, self.command_keys = tls, command_keys

    keys = tmp_path / "keys"
    generate_key(keys / "infrastructure_manager.key")
    ok = check_start(sec, node="n", links={"mqtt": Link(object(), keys)}, generate=False)
    assert ok.errors == []
    bad = check_start(sec, node="n", links={"mqtt": Link(None, None)}, generate=False)
    assert [k for k, _ in bad.errors] == ["mqtt.tls", "mqtt.command_keys"]


def test_load_for_run_accepts_an_insecure_lab_config_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = _write(tmp_path, _production("site.toml", {"insecure": True}))
    with caplog.at_level(logging.CRITICAL, logger="edge_runtime.cli"):
        cfg = load_for_run(config)
    assert cfg.security.insecure
    said = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(said) == 1 and "INSECURE" in said[0].getMessage()
    assert "[mqtt] command_keys: required" in said[0].getMessage()
    with pytest.raises(ConfigError, match=r"\[security\] insecure: must be true or false"):
        load_for_run(_write(tmp_path, _production("site.toml", {"insecure": "yes"}), "b.toml"))


def test_insecure_alarm_every_minute_on_the_node_clock() -> None:
    clock = VirtualClock(start=100.0)
    events = EventLog()
    notice = InsecureNotice(events, clock, ["[security] cert: required"])
    times = []
    for _ in range(400):                  # 200 s of 0.5 s scans
        if notice.poll():
            times.append(clock.monotonic())
        clock.advance(0.5)
    assert times == [100.0, 160.0, 220.0, 280.0]
    alarms = [e for e in events.recent(10) if e.code == "insecure_mode"]
    assert len(alarms) == 4 and all(e.severity is Severity.ALARM for e in alarms)
    assert "INSECURE" in alarms[0].message and "[security] cert: required" in alarms[0].message
    assert [e.ts - alarms[0].ts for e in alarms] == [0.0, 60.0, 120.0, 180.0]
    clock.advance(1000)                   # a paused process: one alarm, not sixteen
    assert notice.poll() and not notice.poll()
    assert notice.get_status() == {"insecure": True, "missing": ["[security] cert: required"],
                                   "alarms": 5}


def test_run_of_an_insecure_node_raises_the_alarm(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    config = _write(tmp_path, _production("rack.toml", {"insecure": True}))
    with caplog.at_level(logging.ERROR):
        code = main(["--log-level", "ERROR", "run", "--config", str(config),
                     "--duration", "0.3"])
    assert code == 0, capsys.readouterr().err
    alarms = [r.getMessage() for r in caplog.records
              if r.name == "edge_runtime.core.events" and "INSECURE" in r.getMessage()]
    assert len(alarms) == 1 and alarms[0].startswith("security: INSECURE")


def test_running_node_renews_its_certificate_before_its_end(tmp_path: Path) -> None:
    """On the node's (virtual) clock: an hour after start the certificate, 20 days from its
    end, is renewed in place from the online CA; a TLS context watching it reloads it."""
    from edge_runtime.security.tls import CertWatcher, server_context

    ca = SiteCA.init(tmp_path / "ca")
    cf = ca.issue_node("n", tmp_path / "pki", days=20)
    sec = SecurityConfig(ca=ca.cert_path, cert=cf.cert, key=cf.key, crl=ca.crl_path,
                         ca_dir=ca.directory)
    clock = VirtualClock(start=0.0, wall_offset=dt.datetime.now(dt.UTC).timestamp())
    events = EventLog()
    ctx = server_context(cf.cert, cf.key, ca.cert_path, crl=ca.crl_path)
    watcher = CertWatcher(ctx, cf.cert, cf.key, crl=ca.crl_path)
    monitor = CertMonitor(sec, events, clock)
    assert monitor.poll() is None                         # the start checked it just now
    clock.advance(3599.0)
    assert monitor.poll() is None
    clock.advance(1.0)
    assert monitor.poll() == "renewed"
    renewed = load_cert(cf.cert)
    assert renewed.serial_number != cf.serial
    assert renewed.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
    assert [e.code for e in events.recent(5)] == ["cert_renewed"]
    assert watcher.check()                                # the live context has it now
    clock.advance(3600.0)
    assert monitor.poll() is None                         # not due any more
    # Offline CA: a warning each period while due, nothing written.
    short = ca.issue_node("m", tmp_path / "pki2", days=10)
    ca.key_path.rename(tmp_path / "offline.key")
    offline = CertMonitor(SecurityConfig(ca=ca.cert_path, cert=short.cert, key=short.key,
                                         ca_dir=ca.directory), events, clock)
    clock.advance(3600.0)
    assert offline.poll() == "warned"
    assert events.recent(1)[0].code == "cert_expiring"
    assert load_cert(short.cert).serial_number == short.serial


def test_first_start_node_joins_a_tls13_broker_with_what_it_made(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole chain: a site CA, a Mosquitto requiring client certificates from it, and a
    production site node whose certificate does not exist yet: `pswd-edge run` makes it
    from ca_dir, its [mqtt.tls] uses the same files, and the broker takes it as 'site-01'."""
    from tests.mosquitto import Broker

    ca = SiteCA.init(tmp_path / "site-ca")
    broker_cf = ca.issue_node("localhost", tmp_path / "broker", server=True, client=False,
                              dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    broker = Broker(tmp_path / "mosq")
    broker.config_path.write_text(broker.config_path.read_text() + "\n".join([
        f"cafile {ca.cert_path}", f"certfile {broker_cf.cert}", f"keyfile {broker_cf.key}",
        "tls_version tlsv1.3", "require_certificate true", "use_identity_as_username true",
        f"crlfile {ca.crl_path}", ""]))
    broker.start()
    try:
        doc = _production("site.toml", {"ca_dir": str(ca.directory), **PKI})
        doc["mqtt"].update(port=broker.port, command_keys="keys",
                           tls={"ca": PKI["ca"], "cert": PKI["cert"], "key": PKI["key"]})
        from edge_runtime.security.ca import ensure_command_keys

        ensure_command_keys(tmp_path / "keys", ["infrastructure_manager"])
        config = _write(tmp_path, doc)
        code, _, err = _cli(capsys, "run", "--config", str(config), "--duration", "2")
        assert code == 0, err
        assert load_cert(tmp_path / "pki/node.crt").issuer == ca.cert.subject
        assert "u'site-01'" in broker.log_tail(60), \
            broker.log_tail(60)
    finally:
        broker.kill()


def test_https_without_client_certificates_is_not_production(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from edge_runtime.security.tokens import KeyRing

    ca = SiteCA.init(tmp_path / "site-ca")
    ca.issue_files(tmp_path / PKI["cert"], tmp_path / PKI["key"], "rack-01", server=True,
                   client=True)
    shutil.copyfile(ca.cert_path, tmp_path / PKI["ca"])
    shutil.copyfile(ca.crl_path, tmp_path / PKI["crl"])
    KeyRing.create(tmp_path / "token_keys")
    doc = _production("rack.toml", {"token_keys": "token_keys", **PKI})
    doc["https"] = {"port": free_port(), "client_cert": "none"}
    config = _write(tmp_path, doc)
    code, _, err = _cli(capsys, "check-config", str(config))
    assert code == 2 and f"{config}: [https] client_cert: none: a production node" in err, err
    doc["https"]["client_cert"] = "optional"
    code, out, err = _cli(capsys, "check-config", str(_write(tmp_path, doc)))
    assert code == 0 and "INSECURE" not in out, err
