"""Secure by default: the `[security]` section and the start-up check of a production node.

A node started by `pswd-edge run` (cli.load_for_run, which `check-config` shares) must have
its certificate, key and trust anchor, and every link it opens must be authenticated: MQTT over
TLS 1.3 with a client certificate, commands signed (`[mqtt] command_keys`). Without them it
refuses to start, each missing piece one error line naming the key and how to make it. A lab
says `insecure = true`: the node then starts, and says so loudly at start and every minute on
its own clock (an alarm event, `InsecureNotice`), listing what is missing. A secure node runs
a `CertMonitor`: its certificate is renewed before its end from an online CA (ca_dir), or an
hourly warning event says it is due (offline CA). cli.security_check adds the rules for other
sections (an [https] server must ask for client certificates).

    [security]
    insecure = false          # true only in a lab: starts without the below, alarm every minute
    ca = "pki/ca.crt"         # the site CA certificate (trust anchor for every TLS peer)
    cert = "pki/node.crt"     # this node's certificate (TLS server and client), ECDSA P-256
    key = "pki/node.key"      # its key: mode 0600 (refused if group or others can read it)
    crl = "pki/crl.pem"       # the site CA's revocation list (every server of ours checks it)
    ca_dir = "/var/lib/pswd/ca"  # optional, an online site CA: what is missing above is made
                                 # at first start (the CA itself too, if the directory is empty)
    token_keys = "token_keys" # optional: JWT key ring (security/tokens.py), made at first start
    dns_name = "rack-01.site" # optional: names written into a certificate made at first start
    ip_address = "10.0.1.11"  # (the node name, localhost and 127.0.0.1 always are)
    renew_within_days = 30    # a certificate this close to its end is renewed (online CA)
                              # or warned about (offline CA)

Why the check sits in the production start path and not in the config loader: tests, the
scenario runner and benches build NodeConfigs (or load example files) for one process on
loopback with fakes below the driver boundary; they never face a network, and making each of
them carry a PKI would test the PKI a thousand times and the control code no better. The demo
runs the same way and says it is insecure. `pswd-edge run` and `check-config` are what a site
uses, so that is where the refusal is.

Paths are relative to the config file. Nothing here ever writes a default password or a key
that ships: what first start makes is random and stays on the machine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import shutil
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from edge_runtime.config.reader import ErrorLog, Section
from edge_runtime.core.clock import Clock
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.security.ca import (
    RENEW_WITHIN_DAYS,
    CrlError,
    SiteCA,
    check_crl,
    load_cert,
    needs_renewal,
    renew_if_due,
)
from edge_runtime.security.tokens import KeyRing

log = logging.getLogger(__name__)

NOTICE_PERIOD_S = 60.0
SECTION = "security"


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """The `[security]` section (see the module docstring)."""

    insecure: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    crl: Path | None = None
    ca_dir: Path | None = None
    token_keys: Path | None = None
    dns_name: str = ""
    ip_address: str = ""
    renew_within_days: float = RENEW_WITHIN_DAYS
    present: bool = field(default=False, compare=False)  # the file had a [security] table


def _path(sec: Section, key: str, base_dir: Path) -> Path | None:
    if not sec.has(key):
        sec.get_str(key, None)  # mark as read
        return None
    raw = sec.get_str(key)
    if not isinstance(raw, str) or not raw:
        sec.error(key, "must be a non-empty path")
        return None
    p = Path(raw)
    return p if p.is_absolute() else (base_dir / p).resolve()


def read_security(sec: Section, base_dir: Path) -> SecurityConfig:
    """A SecurityConfig from a `[security]` Section; errors go to the section's ErrorLog."""
    d = SecurityConfig()
    cfg = SecurityConfig(
        insecure=sec.get_bool("insecure", d.insecure),
        ca=_path(sec, "ca", base_dir), cert=_path(sec, "cert", base_dir),
        key=_path(sec, "key", base_dir), crl=_path(sec, "crl", base_dir),
        ca_dir=_path(sec, "ca_dir", base_dir), token_keys=_path(sec, "token_keys", base_dir),
        dns_name=sec.get_str("dns_name", ""), ip_address=sec.get_str("ip_address", ""),
        renew_within_days=sec.get_float("renew_within_days", d.renew_within_days, minval=1,
                                        maxval=365),
        present=True,
    )
    if cfg.ip_address:
        try:
            ipaddress.ip_address(cfg.ip_address)
        except ValueError:
            sec.error("ip_address", f"not an IP address: {cfg.ip_address!r}")
    if (cfg.cert is None) != (cfg.key is None):
        sec.error("cert" if cfg.cert is None else "key", "cert and key go together")
    sec.finish()
    return cfg


class LinkSettings(Protocol):
    """What the check reads of a link section ([mqtt]): its TLS and its command keys."""

    @property
    def tls(self) -> Any: ...

    @property
    def command_keys(self) -> Path | None: ...


@dataclass
class StartCheck:
    """The outcome of `check_start`: errors refuse the start; the rest is told at start."""

    errors: list[tuple[str, str]] = field(default_factory=list)   # (key, reason)
    warnings: list[str] = field(default_factory=list)
    made: list[str] = field(default_factory=list)                 # what first start generated

    def error(self, key: str, reason: str) -> None:
        """A reason to refuse the start."""
        self.errors.append((key, reason))

    def report(self, file: str, errors: ErrorLog) -> None:
        """Errors as config error lines (`file: [section] key: reason`)."""
        for key, reason in self.errors:
            section, _, name = key.rpartition(".") if "." in key else (SECTION, "", key)
            errors.add(file, section, name, reason)

    @property
    def reasons(self) -> list[str]:
        """Every error as one line (what an insecure node is told every minute)."""
        return [f"[{k.rpartition('.')[0] or SECTION}] {k.rpartition('.')[2]}: {r}"
                for k, r in self.errors]


def check_start(sec: SecurityConfig, *, node: str, links: Mapping[str, LinkSettings | None],
                generate: bool, now: dt.datetime | None = None) -> StartCheck:
    """What keeps `node` from a secure start; with `generate`, first make what an online CA
    (`ca_dir`) can make. `links` maps a section name ("mqtt") to its settings, or None."""
    out = StartCheck()
    if generate and sec.ca_dir is not None:
        _first_start(sec, node, out, now)
    _check_files(sec, out, now, deferred=not generate and sec.ca_dir is not None)
    for name, link in links.items():
        if link is None:
            continue
        if link.tls is None:
            out.error(f"{name}.tls", "required: a production link is TLS 1.3 with a client "
                      "certificate (ca, cert, key: pswd-edge certs issue)")
        if link.command_keys is None:
            out.error(f"{name}.command_keys", "required: commands must be signed "
                      "(HMAC-SHA256 envelopes; pswd-edge keygen --role ROLE DIR)")
    return out


def _check_files(sec: SecurityConfig, out: StartCheck, now: dt.datetime | None, *,
                 deferred: bool) -> None:
    """`deferred`: a missing file is a note, `run` makes it from ca_dir (check-config)."""
    hint = "(pswd-edge certs issue NAME --ca-dir DIR --out DIR, or ca_dir to make it at " \
           "first start; insecure = true only in a lab)"
    missing = False
    for key in ("ca", "cert", "key"):
        path: Path | None = getattr(sec, key)
        if path is None:
            out.error(key, f"required for a production node {hint}")
        elif not path.is_file():
            missing = True
            if deferred:
                out.warnings.append(f"[security] {key}: {path} will be made at first start "
                                    f"from {sec.ca_dir}")
            else:
                out.error(key, f"{path}: no such file {hint}")
    if out.errors or missing:
        return
    assert sec.ca is not None and sec.cert is not None and sec.key is not None
    if sec.key.stat().st_mode & 0o077:
        out.error("key", f"{sec.key}: readable by group or others; chmod 600 it")
    try:
        ca = load_cert(sec.ca)
        cert = load_cert(sec.cert)
    except ValueError as exc:
        out.error("cert", f"not a PEM certificate ({sec.ca} / {sec.cert}): {exc}")
        return
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        out.error("cert", f"{sec.cert} is not issued by the CA {sec.ca}")
    try:
        ssl.create_default_context().load_cert_chain(str(sec.cert), str(sec.key))
    except (ssl.SSLError, OSError) as exc:
        out.error("key", f"{sec.key} does not match {sec.cert}: {exc}")
    when = now or dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc <= when:
        out.error("cert", f"{sec.cert} expired on {cert.not_valid_after_utc.isoformat()}")
    elif cert.not_valid_before_utc > when:
        out.error("cert", f"{sec.cert} is not valid before "
                  f"{cert.not_valid_before_utc.isoformat()} (is this clock right?)")
    elif cert.not_valid_after_utc - when <= dt.timedelta(days=sec.renew_within_days):
        out.warnings.append(f"{sec.cert} expires on {cert.not_valid_after_utc.date()}: renew "
                            "it (pswd-edge certs rotate)")
    if sec.crl is None:
        out.warnings.append("[security] crl not set: revoked peers cannot be refused")
        return
    try:
        crl = check_crl(sec.crl, sec.ca, now=when)
    except CrlError as exc:
        if "stale" not in str(exc):
            out.error("crl", str(exc))
            return
        out.warnings.append(str(exc))
        crl = x509.load_pem_x509_crl(sec.crl.read_bytes())
    if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
        out.error("cert", f"{sec.cert} is revoked by {sec.crl}: issue a new one")


def _first_start(sec: SecurityConfig, node: str, out: StartCheck,
                 now: dt.datetime | None) -> None:
    """Make what is missing from the online CA in ca_dir (the CA too if the folder is empty)."""
    assert sec.ca_dir is not None
    try:
        if not (sec.ca_dir / "ca.crt").exists():
            SiteCA.init(sec.ca_dir, name=f"PSWD Edge {node} site CA")
            out.made.append(f"site CA in {sec.ca_dir}")
        ca = SiteCA.open(sec.ca_dir)
        if sec.ca is not None and not sec.ca.exists():
            _copy(ca.cert_path, sec.ca)
            out.made.append(f"CA certificate {sec.ca}")
        if sec.crl is not None and not sec.crl.exists():
            _copy(ca.crl_path, sec.crl)
            out.made.append(f"CRL {sec.crl}")
        if sec.cert is not None and sec.key is not None:
            if not sec.cert.exists() or not sec.key.exists():
                if not ca.has_key:
                    out.error("cert", f"{sec.cert}: missing, and the CA in {sec.ca_dir} is "
                              "offline (no ca.key): issue it where the CA key is")
                    return
                cf = ca.issue_files(sec.cert, sec.key, node, server=True, client=True,
                                    dns_names=_dns(node, sec.dns_name),
                                    ip_addresses=_ips(sec.ip_address), now=now)
                out.made.append(f"certificate {sec.cert} (SHA-256 {cf.fingerprint}, until "
                                f"{cf.not_after.date()})")
            elif ca.has_key and sec.ca is not None and sec.ca.exists() \
                    and load_cert(sec.ca) == ca.cert:
                renewed = renew_if_due(ca, sec.cert, sec.key, now=now,
                                       within_days=sec.renew_within_days)
                if renewed is not None:
                    out.made.append(f"renewed certificate {sec.cert} (until "
                                    f"{renewed.not_after.date()})")
        if sec.token_keys is not None and not (sec.token_keys / "active").exists():
            ring = KeyRing.create(sec.token_keys)
            out.made.append(f"token key {ring.active_kid()} in {sec.token_keys}")
    except (OSError, ValueError) as exc:
        out.error("ca_dir", f"{sec.ca_dir}: cannot make what is missing: {exc}")


def _dns(node: str, extra: str) -> list[str]:
    names = [node, "localhost"]
    if extra and extra not in names:
        names.append(extra)
    return names


def _ips(extra: str) -> list[str]:
    return ["127.0.0.1"] + ([extra] if extra and extra != "127.0.0.1" else [])


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


class InsecureNotice:
    """A node service for `insecure = true`: an alarm at start and every minute, by the node's
    clock. It only reads the clock (a virtual clock is driven by the scan, not by this)."""

    def __init__(self, events: EventLog, clock: Clock, reasons: Sequence[str], *,
                 period_s: float = NOTICE_PERIOD_S) -> None:
        self.events = events
        self.clock = clock
        self.reasons = list(reasons)
        self.period_s = period_s
        self.count = 0
        self._next: float | None = None

    def message(self) -> str:
        """The alarm text: insecure, and what is missing."""
        missing = "; ".join(self.reasons) or "nothing checked"
        return (f"INSECURE: this node runs with [security] insecure = true (a lab setting): "
                f"links may be unauthenticated and commands unsigned; missing: {missing}")

    def poll(self) -> bool:
        """Raise the alarm if it is due (at the first call, then every period_s); True if so."""
        now = self.clock.monotonic()
        if self._next is not None and now < self._next:
            return False
        # On the period's grid; after a gap (a paused process) one alarm, then on from now.
        step = self._next + self.period_s if self._next is not None else now + self.period_s
        self._next = step if step > now else now + self.period_s
        self.count += 1
        self.events.raise_event(self.clock.wall(), "security", Severity.ALARM, self.message(),
                                "insecure_mode")
        return True

    async def run(self) -> None:
        """Poll about once a second until cancelled."""
        while True:
            self.poll()
            await asyncio.sleep(min(1.0, self.period_s))

    def get_status(self) -> dict[str, Any]:
        """Insecure, why, and how often it was said."""
        return {"insecure": True, "missing": list(self.reasons), "alarms": self.count}


class CertMonitor:
    """A node service: the node's certificate renewed before its end while the node runs
    (online CA in ca_dir: new key and certificate in place, which a tls.CertWatcher loads into
    running servers), or a warning event every period while it is due (offline CA)."""

    def __init__(self, sec: SecurityConfig, events: EventLog, clock: Clock, *,
                 period_s: float = 3600.0) -> None:
        if sec.cert is None or sec.key is None:
            raise ValueError("CertMonitor needs [security] cert and key")
        self.sec = sec
        self.cert, self.key = sec.cert, sec.key
        self.events = events
        self.clock = clock
        self.period_s = period_s
        self._next = clock.monotonic() + period_s  # the start has just checked it
        self.renewed = 0
        self.warned = 0

    def _event(self, severity: Severity, message: str, code: str) -> None:
        self.events.raise_event(self.clock.wall(), "security", severity, message, code)

    def poll(self) -> str | None:
        """Check if a period has passed: "renewed", "warned", "failed", or None."""
        if self.clock.monotonic() < self._next:
            return None
        self._next = self.clock.monotonic() + self.period_s
        now = dt.datetime.fromtimestamp(self.clock.wall(), dt.UTC)
        try:
            if not needs_renewal(self.cert, within_days=self.sec.renew_within_days, now=now):
                return None
            ca = SiteCA.open(self.sec.ca_dir) if self.sec.ca_dir is not None else None
            if ca is None or not ca.has_key or self.sec.ca is None \
                    or load_cert(self.sec.ca) != ca.cert:
                self.warned += 1
                end = load_cert(self.cert).not_valid_after_utc
                self._event(Severity.WARNING, f"certificate {self.cert} expires on "
                            f"{end.isoformat()}: renew it (pswd-edge certs rotate)",
                            "cert_expiring")
                return "warned"
            cf = ca.renew(self.cert, self.key, now=now)
        except (OSError, ValueError) as exc:
            self._event(Severity.ALARM, f"certificate renewal of {self.cert} failed: {exc}",
                        "cert_renewal_failed")
            return "failed"
        self.renewed += 1
        self._event(Severity.INFO, f"certificate {self.cert} renewed: new key, until "
                    f"{cf.not_after.isoformat()}, SHA-256 {cf.fingerprint}", "cert_renewed")
        return "renewed"

    async def run(self) -> None:
        """Poll about once a minute until cancelled."""
        while True:
            self.poll()
            await asyncio.sleep(min(60.0, self.period_s))

    def get_status(self) -> dict[str, Any]:
        """The certificate watched and what was done."""
        return {"cert": str(self.cert), "renewed": self.renewed, "warned": self.warned}
