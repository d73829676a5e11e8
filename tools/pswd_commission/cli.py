"""`pswd-commission`: the field technician's tool, from discovery to the signed report.

    pswd-commission discover  --ports 15502,15503 [--hosts 127.0.0.1] [--units 1-16]
    pswd-commission validate  CONFIG
    pswd-commission verify    --config CONFIG
    pswd-commission loopcheck --config CONFIG [--output DEV.POINT ...] [--pairs FILE]
    pswd-commission provision --config CONFIG [--out DIR] [--ca-dir DIR] [--technician-cert]
    pswd-commission report    [--out FILE] | --verify FILE
    pswd-commission force     --url URL --point DEV.POINT --value V --expiry-s S --reason TEXT
    pswd-commission release   --url URL --point DEV.POINT
    pswd-commission reset     --url URL [--interlock NAME]
    (loopcheck --url URL runs the loop checks through the running node instead)

Every subcommand takes --json (one JSON document on stdout), --work-dir (the session's
journal) and --technician. Exit codes: 0 passed, 1 a check failed, 2 bad input (usage, a
config with errors, an unreadable file), 3 nothing reachable. Every problem is one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_runtime.config.iomap import default_io_maps_dir
from pswd_commission import node_cli
from pswd_commission.field_cli import cmd_discover, cmd_loopcheck, cmd_verify, load_config
from pswd_commission.output import Output
from pswd_commission.provision import provision, technician_cert
from pswd_commission.report import render, verify_report
from pswd_commission.session import (
    BAD_INPUT,
    FAILED,
    OK,
    CommissionError,
    Session,
    technician_name,
)
from pswd_commission.validate import validate

Result = tuple[int, dict[str, Any]]
PROG = "pswd-commission"


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0 or value != value:
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return value
    return parse


# -- subcommands --------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace, out: Output, session: Session) -> Result:
    """Lint a config and its io_maps."""
    findings, cfg = validate(Path(args.config), io_maps=not args.no_io_maps)
    errors = [f for f in findings if f.severity == "error"]
    if findings:
        out.table(f"validate {args.config}", ("severity", "where", "finding"),
                  [("WARN" if f.severity == "warning" else "ERROR", f.where, f.message)
                   for f in findings], status_column=0)
    summary = (f"{len(errors)} error(s), {len(findings) - len(errors)} warning(s)"
               + ("" if cfg is not None else "; the node would refuse to start"))
    out.line(("FAIL " if errors else "PASS ") + summary)
    return (FAILED if errors else OK), {"summary": summary,
                                        "findings": [f.as_dict() for f in findings]}


def cmd_provision(args: argparse.Namespace, out: Output, session: Session) -> Result:
    """CA, certificates and keys for one node."""
    if args.config:
        cfg = load_config(args.config)
        node, site = cfg.name, cfg.site
    elif args.node:
        node, site = args.node, args.site
    else:
        raise CommissionError("give --config CONFIG (or --node NAME)")
    out_dir = Path(args.out) if args.out else session.work_dir / "pki" / node
    ca_dir = Path(args.ca_dir) if args.ca_dir else session.work_dir / "ca"
    items, problems = provision(out_dir, ca_dir, node=node, site=site, hosts=args.host or [],
                                roles=args.roles.split(","), days=args.days)
    if args.technician_cert:
        items += technician_cert(session.work_dir / "technician", ca_dir,
                                 technician=session.technician, days=args.days)
    out.table(f"provision {node} ({out_dir})",
              ("item", "kind", "mode", "fingerprint (SHA-256)", "expires", "action", "purpose"),
              [(i.name, i.kind, i.mode, i.fingerprint_sha256, i.not_after[:10], i.action,
                i.purpose) for i in items])
    for line in problems:
        out.line(f"start check: {line}")
    created = sum(i.action == "created" for i in items)
    summary = (f"{created} created, {len(items) - created} kept or copied in {out_dir}; "
               f"[security] lines in {out_dir / 'security.toml'}")
    out.line(summary)
    return (FAILED if problems else OK), {
        "summary": summary, "node": node, "site": site, "out": str(out_dir),
        "ca_dir": str(ca_dir), "items": [i.as_dict() for i in items],
        "start_check": problems}


def cmd_report(args: argparse.Namespace, out: Output, session: Session) -> Result:
    """Render the journal, or check a report's hash."""
    if args.verify:
        try:
            text = Path(args.verify).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommissionError(f"{args.verify}: cannot read: {exc}") from None
        ok, stated, actual = verify_report(text)
        summary = (f"intact: SHA-256 {stated}" if ok else
                   f"NOT intact: states {stated or 'no hash'}, content hashes to {actual or '-'}")
        out.line(summary)
        return (OK if ok else FAILED), {"summary": summary, "stated": stated,
                                        "actual": actual, "intact": ok}
    entries = session.entries()
    document = render(entries, title=args.title)
    path = Path(args.out) if args.out else session.work_dir / "report.html"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(document, encoding="utf-8")
    except OSError as exc:
        raise CommissionError(f"cannot write {path}: {exc.strerror or exc}") from None
    _, digest, _ = verify_report(document)
    summary = f"report {path} ({len(entries)} journal entries), SHA-256 {digest}"
    out.line(summary)
    return OK, {"summary": summary, "path": str(path), "sha256": digest}


# -- parser -------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON document on stdout")
    common.add_argument("--work-dir", default=os.environ.get("PSWD_COMMISSION_DIR",
                                                             "commissioning"),
                        help="session directory holding the journal (default ./commissioning "
                             "or $PSWD_COMMISSION_DIR)")
    common.add_argument("--technician", default=None,
                        help="who is working (default $PSWD_TECHNICIAN or the login name)")
    common.add_argument("--verbose", action="store_true", help="say each step; show logs")
    field = argparse.ArgumentParser(add_help=False)
    field.add_argument("--timeout-ms", type=_positive(float), default=500.0,
                       help="per request (default 500)")
    field.add_argument("--rate", type=_positive(float), default=200.0,
                       help="requests per second at most (default 200)")

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n", 1)[0],
                                parents=[common])
    sub = p.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    s = sub.add_parser("discover", parents=[common, field],
                       help="scan Modbus TCP, identify devices, propose node configs")
    s.add_argument("--hosts", default="127.0.0.1",
                   help="addresses or CIDR blocks, comma-separated (default 127.0.0.1; at "
                        "most 256 addresses)")
    s.add_argument("--ports", default="502", help="e.g. 502 or 15502,15503 (default 502)")
    s.add_argument("--units", default="1-16", help="unit ids, e.g. 1-16,247 (default 1-16)")
    s.add_argument("--max-requests", type=int, default=5000,
                   help="stop the scan after this many requests (default 5000)")
    s.add_argument("--io-maps", default=str(default_io_maps_dir()),
                   help="io_map directory the probes come from")
    s.add_argument("--site", default="site", help="site name for the proposed configs")
    s.add_argument("--out", default=None, help="where proposed-*.toml go (default work dir)")
    s.set_defaults(handler=cmd_discover)

    s = sub.add_parser("validate", parents=[common], help="lint a node config and its io_maps")
    s.add_argument("config", help="node config TOML")
    s.add_argument("--no-io-maps", action="store_true",
                   help="only the io_maps the config uses, not the whole directory")
    s.set_defaults(handler=cmd_validate)

    s = sub.add_parser("verify", parents=[common, field],
                       help="read every point and judge range, quality, unit, scaling")
    s.add_argument("--config", required=True, help="node config TOML")
    s.set_defaults(handler=cmd_verify)

    s = sub.add_parser("loopcheck", parents=[common, field],
                       help="command each output, time its feedback, restore")
    s.add_argument("--config", required=True, help="node config TOML")
    s.add_argument("--output", action="append", default=None, metavar="DEV.POINT",
                   help="check only this output (repeatable; default every output)")
    s.add_argument("--pairs", default=None, help="TOML declaring output -> feedback pairs")
    s.add_argument("--tolerance-pct", type=_positive(float), default=2.0,
                   help="of the output's span (default 2)")
    s.add_argument("--timeout-s", type=_positive(float), default=15.0,
                   help="per output to reach the test value (default 15)")
    node_cli.add_node_options(s, required=False)
    s.set_defaults(handler=cmd_loopcheck)

    s = sub.add_parser("provision", parents=[common],
                       help="site CA, node certificates (MQTT, OPC UA, HTTPS), signing keys")
    s.add_argument("--config", default=None, help="node config TOML (node and site name)")
    s.add_argument("--node", default=None, help="node name (without --config)")
    s.add_argument("--site", default="site", help="site name (without --config)")
    s.add_argument("--out", default=None, help="install directory (default WORK/pki/NODE)")
    s.add_argument("--ca-dir", default=None, help="site CA directory (default WORK/ca)")
    s.add_argument("--host", action="append", default=None,
                   help="DNS name or address the node serves on (repeatable; the node name, "
                        "localhost and 127.0.0.1 always are)")
    s.add_argument("--roles", default="infrastructure_manager",
                   help="roles to make command-signing keys for, comma-separated")
    s.add_argument("--days", type=int, default=397, help="certificate validity (default 397)")
    s.add_argument("--technician-cert", action="store_true",
                   help="also make your OPC UA client certificate (WORK/technician/NAME.crt) "
                        "for force, release, reset and loopcheck --url")
    s.set_defaults(handler=cmd_provision)

    node_cli.add_subcommands(sub, [common, field])

    s = sub.add_parser("report", parents=[common], help="HTML report from the journal")
    s.add_argument("--out", default=None, help="report file (default WORK/report.html)")
    s.add_argument("--title", default="", help="report title")
    s.add_argument("--verify", default=None, metavar="FILE",
                   help="check a report's SHA-256 instead of writing one")
    s.set_defaults(handler=cmd_report)
    return p


def _journal_args(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"handler", "json", "work_dir", "technician", "verbose", "command"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage error (or --help)
        return int(exc.code) if isinstance(exc.code, int) else BAD_INPUT
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL,
                        format="%(levelname)s %(name)s: %(message)s")
    out = Output(json_mode=args.json)
    session = Session(Path(args.work_dir), technician_name(args.technician))
    command = args.command
    try:
        handler: Callable[[argparse.Namespace, Output, Session], Result] = args.handler
        code, result = handler(args, out, session)
    except CommissionError as exc:
        code, result = exc.code, {"error": str(exc), "summary": str(exc)}
    except KeyboardInterrupt:
        code, result = FAILED, {"error": "interrupted", "summary": "interrupted"}
    except Exception as exc:  # never a traceback in the technician's face
        code = 70
        result = {"error": f"internal error: {type(exc).__name__}: {exc}"}
        result["summary"] = result["error"]
    if "error" in result:
        print(f"{PROG} {command}: {result['error']}", file=sys.stderr)
    if not (command == "report" and getattr(args, "verify", None)):
        try:
            session.record(command, _journal_args(args), code, result)
        except CommissionError as exc:
            print(f"{PROG} {command}: {exc}", file=sys.stderr)
            code = code or BAD_INPUT
    out.emit({"command": command, "exit": code, "technician": session.technician, **result})
    return code


if __name__ == "__main__":
    sys.exit(main())
