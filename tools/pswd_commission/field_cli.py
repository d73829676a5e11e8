"""The subcommands that talk to the field devices directly: verify, loopcheck, discover."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from edge_runtime.assembly.config import NodeConfig
from edge_runtime.assembly.loader import load_node_config
from edge_runtime.config.reader import ConfigError
from pswd_commission import discover as disc
from pswd_commission import loopcheck as lc
from pswd_commission import node_cli
from pswd_commission.fieldlink import FieldLink
from pswd_commission.node_client import NodeSession
from pswd_commission.node_loopcheck import NodeLoopChecker
from pswd_commission.output import Output
from pswd_commission.session import (
    FAILED,
    OK,
    UNREACHABLE,
    CommissionError,
    Session,
)
from pswd_commission.sunspec_check import check_scale_factors, speaks_sunspec
from pswd_commission.verify import judge, read_all

Result = tuple[int, dict[str, Any]]


def load_config(path: str) -> NodeConfig:
    try:
        return load_node_config(Path(path))
    except ConfigError as exc:
        more = f" (and {len(exc.lines) - 1} more; run validate)" if len(exc.lines) > 1 else ""
        raise CommissionError(f"config has errors: {exc.lines[0]}{more}") from None



async def _reachable(link: FieldLink, cfg: NodeConfig) -> list[str]:
    """Connect to each Modbus endpoint once; raise when none answers."""
    endpoints = sorted({(d.host, d.port) for d in cfg.devices if d.protocol == "modbus"})
    problems = [why for h, p in endpoints if (why := await link.connect(h, p))]
    if endpoints and len(problems) == len(endpoints):
        raise CommissionError(problems[0], code=UNREACHABLE)
    return problems


def cmd_verify(args: argparse.Namespace, out: Output, session: Session) -> Result:
    """Read and judge every point."""
    cfg = load_config(args.config)
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
    cfg = load_config(args.config)
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


