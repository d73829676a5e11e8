"""`pswd-edge certs ...` and `pswd-edge token ...`: the site CA and JWT keys from a shell.

    pswd-edge certs init-ca DIR [--name "Site A CA"]
    pswd-edge certs issue NAME --ca-dir DIR --out DIR [--server] [--client] [--dns N] [--ip A]
    pswd-edge certs sign-csr REQ.csr --ca-dir DIR --out CERT.crt [--server] [--client]
    pswd-edge certs revoke CERT|SERIAL --ca-dir DIR [--reason key_compromise]
    pswd-edge certs crl --ca-dir DIR [--copy-to PATH]
    pswd-edge certs list --ca-dir DIR [--json]
    pswd-edge certs rotate --ca-dir DIR --cert C --key K [--within-days 30] [--force]
    pswd-edge token init DIR | token rotate DIR
    pswd-edge token issue --keys DIR --role R --aud A --ttl S [--sub WHO] [--scope S]

Each prints what it made (paths, SHA-256 fingerprints, expiry) on stdout; errors are one
line on stderr, exit 2. The commissioning tool calls security/ca.py directly instead.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from dataclasses import asdict
from pathlib import Path

from edge_runtime.core.authority import USER_ROLES
from edge_runtime.security.ca import (
    REASONS,
    RENEW_WITHIN_DAYS,
    CertFiles,
    CrlError,
    SiteCA,
    fingerprint,
    renew_if_due,
)
from edge_runtime.security.tokens import KeyRing, TokenError

EXIT_USAGE = 2
CERTS_DESCRIPTION = "the site CA: init-ca, issue, sign-csr, revoke, crl, list, rotate"
TOKEN_DESCRIPTION = "JWT access tokens (ES256 under the site key): init, rotate, issue"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_certs_arguments(p: argparse.ArgumentParser,
                        parents: list[argparse.ArgumentParser]) -> None:
    """The `certs` subcommands."""
    sub = p.add_subparsers(dest="certs_command", required=True, metavar="ACTION")

    def add(name: str, help_text: str, *, ca_dir: bool = True) -> argparse.ArgumentParser:
        a = sub.add_parser(name, help=help_text, description=help_text, parents=parents)
        if ca_dir:
            a.add_argument("--ca-dir", required=True, type=Path, help="the site CA directory")
        return a

    init = add("init-ca", "create a site CA in DIR (refuses to overwrite one)", ca_dir=False)
    init.add_argument("directory", type=Path)
    init.add_argument("--name", default="PSWD Edge site CA", help="the CA's common name")
    init.add_argument("--days", type=int, default=3650)

    issue = add("issue", "issue NAME's key and certificate as OUT/NAME.crt and NAME.key")
    issue.add_argument("name", help="common name (the node or client name)")
    issue.add_argument("--out", required=True, type=Path, help="output directory")
    _usage_flags(issue)
    issue.add_argument("--dns", action="append", default=[], help="DNS name (repeatable)")
    issue.add_argument("--ip", action="append", default=[], help="IP address (repeatable)")

    csr = add("sign-csr", "sign a certificate request (the key stays with its owner)")
    csr.add_argument("csr", type=Path, help="PEM certificate request")
    csr.add_argument("--out", required=True, type=Path, help="where the certificate goes")
    _usage_flags(csr)

    revoke = add("revoke", "revoke a certificate (file or hex serial) and publish the CRL")
    revoke.add_argument("target", help="certificate file, or its serial in hex")
    revoke.add_argument("--reason", default="unspecified", choices=sorted(REASONS))

    crl = add("crl", "re-sign and publish the CRL (valid 7 days: do it weekly)")
    crl.add_argument("--copy-to", type=Path, action="append", default=[],
                     help="also copy it here (a node's [security] crl; repeatable)")

    lst = add("list", "every certificate issued, with expiry and revocation")
    lst.add_argument("--json", action="store_true", help="one JSON document")

    rotate = add("rotate", "renew a certificate (new key) when it is near its end")
    rotate.add_argument("--cert", required=True, type=Path)
    rotate.add_argument("--key", required=True, type=Path)
    rotate.add_argument("--within-days", type=_positive, default=RENEW_WITHIN_DAYS)
    rotate.add_argument("--force", action="store_true", help="renew now, due or not")


def _usage_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", action="store_true", help="TLS server use")
    p.add_argument("--client", action="store_true", help="TLS client use")
    p.add_argument("--days", type=int, default=397, help="validity (default 397)")


def add_token_arguments(p: argparse.ArgumentParser,
                        parents: list[argparse.ArgumentParser]) -> None:
    """The `token` subcommands."""
    sub = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    init = sub.add_parser("init", parents=parents, help="make a token key ring in DIR")
    init.add_argument("directory", type=Path)
    rot = sub.add_parser("rotate", parents=parents,
                         help="new active key; tokens of the old one stay valid until retired")
    rot.add_argument("directory", type=Path)
    issue = sub.add_parser("issue", parents=parents, help="print a signed token")
    issue.add_argument("--keys", required=True, type=Path, help="token key ring directory")
    issue.add_argument("--role", required=True, choices=USER_ROLES)
    issue.add_argument("--aud", required=True, action="append",
                       help="audience: a node name or 'site' (repeatable)")
    issue.add_argument("--ttl", required=True, type=_positive, metavar="S", help="seconds")
    issue.add_argument("--sub", default=None, help="who it is for (default: user@host)")
    issue.add_argument("--scope", action="append", default=[], help="scope (repeatable)")
    issue.add_argument("--issuer", default="pswd-site")


def _print_cert(cf: CertFiles) -> None:
    print(f"{cf.cert}: {cf.subject}, serial {cf.serial:x}, until {cf.not_after.isoformat()}, "
          f"SHA-256 {cf.fingerprint}")
    print(f"{cf.key}: private key (mode 0600; never copy it off this node)")


def _both_if_none(args: argparse.Namespace) -> tuple[bool, bool]:
    if not (args.server or args.client):
        return True, True
    return bool(args.server), bool(args.client)


def run_certs(args: argparse.Namespace) -> int:
    """`pswd-edge certs ACTION`; 0 done, 2 with one line saying why not."""
    try:
        return _certs(args)
    except (OSError, ValueError, KeyError, CrlError) as exc:
        what = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"pswd-edge certs {args.certs_command}: {what}", file=sys.stderr)
        return EXIT_USAGE


def _certs(args: argparse.Namespace) -> int:
    cmd = args.certs_command
    if cmd == "init-ca":
        ca = SiteCA.init(args.directory, name=args.name, days=args.days)
        print(f"{ca.cert_path}: site CA {args.name!r}, until "
              f"{ca.cert.not_valid_after_utc.isoformat()}, SHA-256 {fingerprint(ca.cert)}")
        print(f"{ca.key_path}: CA key (mode 0600): keep it here or offline, never on a node")
        print(f"{ca.crl_path}: revocation list (copy it with ca.crt to every node)")
        return 0
    ca = SiteCA.open(args.ca_dir)
    if cmd == "issue":
        server, client = _both_if_none(args)
        _print_cert(ca.issue_node(args.name, args.out, server=server, client=client,
                                  dns_names=args.dns, ip_addresses=args.ip, days=args.days))
    elif cmd == "sign-csr":
        server, client = _both_if_none(args)
        cert = ca.sign_csr(args.csr.read_bytes(), server=server, client=client, days=args.days)
        from cryptography.hazmat.primitives import serialization

        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        print(f"{args.out}: serial {cert.serial_number:x}, until "
              f"{cert.not_valid_after_utc.isoformat()}, SHA-256 {fingerprint(cert)}")
    elif cmd == "revoke":
        target = Path(args.target)
        what: Path | int = target if target.exists() else _serial(args.target)
        crl = ca.revoke(what, reason=args.reason)
        print(f"{crl}: published; copy it to every node's [security] crl")
    elif cmd == "crl":
        crl = ca.publish_crl()
        for dest in args.copy_to:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(crl.read_bytes())
        print(f"{crl}: published" + "".join(f"; copied to {d}" for d in args.copy_to))
    elif cmd == "list":
        records = ca.records()
        if args.json:
            print(json.dumps([asdict(r) for r in records], indent=1))
        for r in records if not args.json else ():
            state = f"REVOKED {r.revoked_at} ({r.reason})" if r.revoked_at else "valid"
            print(f"{r.serial}  {r.subject:<24} until {r.not_after}  {state}  {r.file}")
    elif cmd == "rotate":
        cf = (ca.renew(args.cert, args.key) if args.force
              else renew_if_due(ca, args.cert, args.key, within_days=args.within_days))
        if cf is None:
            print(f"{args.cert}: not due (more than {args.within_days:g} days left); "
                  "--force renews anyway")
        else:
            _print_cert(cf)
            print("running servers reload it (tls.CertWatcher); nothing to restart")
    return 0


def _serial(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise ValueError(f"{text}: neither a certificate file nor a hex serial") from None


def run_token(args: argparse.Namespace) -> int:
    """`pswd-edge token ACTION`; 0 done, 2 with one line saying why not."""
    try:
        if args.token_command == "init":
            ring = KeyRing.create(args.directory)
            print(f"{args.directory}: token key {ring.active_kid()} (copy the *.pub files to "
                  "every node's [https] token_keys)")
        elif args.token_command == "rotate":
            kid = KeyRing(args.directory).rotate()
            print(f"{args.directory}: new active key {kid}; older keys stay accepted until "
                  "their .pub files are removed")
        else:
            ring = KeyRing(args.keys, issuer=args.issuer)
            sub = args.sub or f"{getpass.getuser()}@{socket.gethostname()}"
            print(ring.issuer().issue(sub=sub, role=args.role, audience=args.aud,
                                      ttl_s=args.ttl, scope=args.scope))
        return 0
    except (OSError, ValueError, TokenError) as exc:
        print(f"pswd-edge token {args.token_command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
