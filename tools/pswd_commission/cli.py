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
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_runtime.assembly.config import NodeConfig
from edge_runtime.assembly.loader import load_node_config
from edge_runtime.config.iomap import default_io_maps_dir
from edge_runtime.config.reader import ConfigError
from pswd_commission import discover as disc
from pswd_commission import loopcheck as lc
from pswd_commission import node_cli
from pswd_commission.fieldlink import FieldLink
from pswd_commission.node_client import NodeSession
from pswd_commission.node_loopcheck import NodeLoopChecker
from pswd_commission.output import Output
from pswd_commission.provision import provision, technician_cert
from pswd_commission.report import render, verify_report
from pswd_commission.session import (
    BAD_INPUT,
    FAILED,
    OK,
    UNREACHABLE,
    CommissionError,
    Session,
    technician_name,
)
from pswd_commission.sunspec_check import check_scale_factors, speaks_sunspec
from pswd_commission.validate import validate
from pswd_commission.verify import judge, read_all

Result = tuple[int, dict[str, Any]]
PROG = "pswd-commission"


# -- helpers ------------------------------------------------------------------------------
def _load(path: str) -> NodeConfig:
    try:
        return load_node_config(Path(path))
    except ConfigError as exc:
        more = f" (and {len(exc.lines) - 1} more; run validate)" if len(exc.lines) > 1 else ""
        raise CommissionError(f"config has errors: {exc.lines[0]}{more}") from None


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


async def _reachable(link: FieldLink, cfg: NodeConfig) -> list[str]:
    """Connect to each Modbus endpoint once; raise when none answers."""
    endpoints = sorted({(d.host, d.port) for d in cfg.devices if d.protocol == "modbus"})
    problems = [why for h, p in endpoints if (why := await link.connect(h, p))]
    if endpoints and len(problems) == len(endpoints):
        raise CommissionError(problems[0], code=UNREACHABLE)
    return problems


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


def cmd_verify(args: argparse.Namespace, out: Output, session: Session) -> Result:
    """Read and judge every point."""
    cfg = _load(args.config)
    link = FieldLink(timeout_s=args.timeout_ms / 1000.0, rate=args.rate)
    total = sum(len(d.io_map.inputs) for d in cfg.devices if d.protocol == "modbus")

    async def run() -> tuple[list[str], dict[str, Any], dict[str, str]]:
        try:
            problems = await _reachable(link, cfg)
            with out.progress("reading points", total) as advance:
                reads = dict(await read_all(link, cfg, advance))
            scaling: dict[str, str] = {}
            for dev in cfg.devices:
                values = {n.split(".", 1)[1]: r.value for n, r in reads.items()
                          if n.split(".", 1)[0] == dev.name}
                if dev.protocol == "modbus" and speaks_sunspec(dev, values):
                    found = await check_scale_factors(link, dev)
                    scaling.update({f"{dev.name}.{p}": why for p, why in found.items()})
            return problems, reads, scaling
        finally:
            link.close()

    t0 = time.monotonic()
    problems, reads, scaling = asyncio.run(run())
    rows = judge(cfg, reads, scaling)
    counts = {s: sum(r.status == s for r in rows) for s in ("PASS", "FAIL", "WARN", "SKIP")}
    out.table(f"verify {cfg.name} ({args.config})",
              ("point", "value", "unit", "range", "result", "reason"),
              [(r.point, "-" if r.value is None else f"{r.value:.6g}", r.unit, r.range,
                r.status, r.reason) for r in rows], status_column=4)
    for p in problems:
        out.line(f"unreachable: {p}")
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" of {len(rows)} points"
    out.line(("FAIL " if counts["FAIL"] else "PASS ") + summary)
    return (FAILED if counts["FAIL"] else OK), {
        "summary": summary, "node": cfg.name, "points": [r.as_dict() for r in rows],
        "unreachable": problems, "stats": link.stats.as_dict(),
        "duration_s": round(time.monotonic() - t0, 3)}


def cmd_loopcheck(args: argparse.Namespace, out: Output, session: Session) -> Result:
    """Move each output and time its feedback."""
    cfg = _load(args.config)
    pairs = lc.load_pairs(Path(args.pairs)) if args.pairs else {}
    settings = lc.Settings(tolerance_frac=args.tolerance_pct / 100.0, timeout_s=args.timeout_s)
    link = FieldLink(timeout_s=args.timeout_ms / 1000.0, rate=args.rate)
    checker = lc.LoopChecker(cfg, link, settings, pairs)
    chosen = checker.outputs(args.output)
    for name in pairs:
        if name not in {f"{d.name}.{p.name}" for d, p in checker.outputs()}:
            raise CommissionError(f"{args.pairs}: [\"{name}\"] is not an output of {cfg.name}")

    async def through_node() -> list[lc.LoopResult]:
        results: list[lc.LoopResult] = []
        async with NodeSession(node_cli.target(args, session)) as s:
            checker = NodeLoopChecker(cfg, s, settings, pairs)
            with out.progress("loop checks", len(chosen)) as advance:
                for dev, spec in chosen:
                    results.append(await checker.check(dev, spec, out.line if args.verbose
                                                       else lambda s: None))
                    advance(1)
        return results

    async def run() -> list[lc.LoopResult]:
        if args.url:
            return await through_node()
        results: list[lc.LoopResult] = []
        try:
            await _reachable(link, cfg)
            with out.progress("loop checks", len(chosen)) as advance:
                for dev, spec in chosen:
                    results.append(await checker.check(dev, spec, out.line if args.verbose
                                                       else lambda s: None))
                    advance(1)
        finally:
            link.close()
        return results

    results = asyncio.run(run())
    mode = f"through the node at {args.url}" if args.url else "direct, node stopped"
    out.table(f"loopcheck {cfg.name} ({mode})",
              ("output", "feedback", "test", "response", "result", "reason"),
              [(r.output, r.feedback or "-",
                "-" if r.test_value is None else f"{r.before:g} -> {r.test_value:g}"
                if r.before is not None else f"{r.test_value:g}",
                "-" if r.response_s is None else f"{r.response_s:.2f} s", r.status, r.reason)
               for r in results], status_column=4)
    counts = {s: sum(r.status == s for r in results)
              for s in ("PASS", "FAIL", "REFUSED", "SKIP")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) + \
        f" of {len(results)} outputs"
    bad = counts["FAIL"] + counts["REFUSED"]
    out.line(("FAIL " if bad else "PASS ") + summary)
    return (FAILED if bad else OK), {"summary": summary, "node": cfg.name,
                                     "mode": "node" if args.url else "direct",
                                     "outputs": [r.as_dict() for r in results],
                                     "stats": link.stats.as_dict()}


def cmd_discover(args: argparse.Namespace, out: Output, session: Session) -> Result:
    """Scan, identify, propose configs."""
    hosts = disc.parse_hosts(args.hosts)
    ports = disc.parse_ints(args.ports, "ports", 1, 65535)
    units = disc.parse_ints(args.units, "units", 0, 247)
    maps = disc.load_maps(Path(args.io_maps))
    link = FieldLink(timeout_s=args.timeout_ms / 1000.0, rate=args.rate)
    scanner = disc.Scanner(link, maps, max_requests=args.max_requests)

    async def run() -> tuple[list[disc.Found], list[str]]:
        try:
            with out.progress("scanning", len(hosts) * len(ports) * len(units)) as advance:
                return await scanner.scan(hosts, ports, units, advance)
        finally:
            link.close()

    t0 = time.monotonic()
    found, unreachable = asyncio.run(run())
    duration = round(time.monotonic() - t0, 3)
    if unreachable and not found and len(unreachable) == len(hosts) * len(ports):
        raise CommissionError(unreachable[0] + (f" (and {len(unreachable) - 1} more)"
                                                if len(unreachable) > 1 else ""),
                              code=UNREACHABLE)
    proposals = disc.propose(found, site=args.site)
    out_dir = Path(args.out) if args.out else session.work_dir
    written: list[str] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for role, text in proposals.items():
            path = out_dir / f"proposed-{role}.toml"
            path.write_text(text, encoding="utf-8")
            written.append(str(path))
    except OSError as exc:
        raise CommissionError(f"cannot write the proposal: {exc.strerror or exc}") from None

    def firmware(f: disc.Found) -> str:
        common: dict[str, Any] = next(
            (m for m in (f.sunspec or {}).get("models", []) if m.get("id") == 1), {})
        return " ".join(str(common.get(k, "")) for k in ("Mn", "Md", "Vr")).strip()

    out.table(f"discover: {len(found)} unit(s) on {', '.join(hosts)} ports {args.ports}",
              ("endpoint", "unit", "io_map", "SunSpec", "note"),
              [(f"{f.host}:{f.port}", f.unit_id, f.model or "unidentified",
                firmware(f) or ("-" if f.sunspec is None else "marker"), f.note)
               for f in found])
    for line in unreachable:
        out.line(f"unreachable: {line}")
    stats = link.stats.as_dict()
    summary = (f"{len(found)} unit(s) found, {sum(1 for f in found if f.model)} identified, "
               f"{stats['requests']} requests in {duration:g} s")
    out.line(summary)
    for written_path in written:
        out.line(f"proposed config: {written_path}")
    return OK, {"summary": summary, "hosts": hosts, "ports": ports, "units": args.units,
                "found": [f.as_dict() for f in found], "unreachable": unreachable,
                "proposed": written, "stats": stats, "duration_s": duration}


def cmd_provision(args: argparse.Namespace, out: Output, session: Session) -> Result:
    """CA, certificates and keys for one node."""
    if args.config:
        cfg = _load(args.config)
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
