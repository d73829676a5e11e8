"""The subcommands that act through a running node's OPC UA server: force, release, reset,
and the options they share with `loopcheck --url`."""

from __future__ import annotations

import argparse
import asyncio
import math
from pathlib import Path
from typing import Any

from pswd_commission.node_client import NodeSession, NodeTarget
from pswd_commission.output import Output
from pswd_commission.provision import technician_slug
from pswd_commission.session import FAILED, OK, CommissionError, Session

Result = tuple[int, dict[str, Any]]
MAX_EXPIRY_S = 86_400.0  # the node refuses longer forces too: none lasts forever


def add_node_options(p: argparse.ArgumentParser, *, required: bool) -> None:
    """--url and the technician's credentials."""
    p.add_argument("--url", required=required, default=None,
                   help="the node's OPC UA endpoint, e.g. opc.tcp://10.0.1.5:4840/pswd/")
    p.add_argument("--cert", default=None,
                   help="technician's certificate (default WORK/technician/<name>.crt, made by "
                        "provision --technician-cert)")
    p.add_argument("--key", default=None, help="its key (default beside --cert)")
    p.add_argument("--ca", default=None,
                   help="site CA the node's certificate must chain to (default WORK/ca/ca.crt)")
    p.add_argument("--server-cert", default=None, help="or: the node's pinned certificate")
    p.add_argument("--node", default="", help="controller name when a server has several")
    p.add_argument("--node-timeout-s", type=float, default=10.0,
                   help="per OPC UA request to the node, connect included (default 10: "
                        "RSA handshakes on a busy controller take seconds)")
    p.add_argument("--user", default="",
                   help="log in as this user instead of the certificate (password from "
                        "$PSWD_OPCUA_PASSWORD)")


def target(args: argparse.Namespace, session: Session) -> NodeTarget:
    """The NodeTarget from the options, defaults from the work directory."""
    if not (math.isfinite(args.node_timeout_s) and args.node_timeout_s > 0):
        raise CommissionError("--node-timeout-s must be > 0")
    slug = technician_slug(session.technician)
    cert = Path(args.cert) if args.cert else session.work_dir / "technician" / f"{slug}.crt"
    key = Path(args.key) if args.key else cert.with_suffix(".key")
    if not cert.exists():
        raise CommissionError(f"--cert {cert}: not found (pswd-commission provision "
                              f"--technician-cert makes one)")
    ca: Path | None = Path(args.ca) if args.ca else session.work_dir / "ca" / "ca.crt"
    if args.ca is None and ca is not None and not ca.exists():
        ca = None
    return NodeTarget(args.url, cert, key, ca=ca,
                      server_cert=Path(args.server_cert) if args.server_cert else None,
                      node=args.node, user=args.user, timeout_s=args.node_timeout_s)


def cmd_force(args: argparse.Namespace, out: Output, session: Session) -> Result:
    """Force one output through the node, with expiry, reason and identity."""
    if not (math.isfinite(args.expiry_s) and 0 < args.expiry_s <= MAX_EXPIRY_S):
        raise CommissionError(f"--expiry-s must be within 0..{MAX_EXPIRY_S:g} s (every force "
                              f"expires)")
    if not args.reason.strip():
        raise CommissionError("--reason: say why (it is audited)")
    if not math.isfinite(args.value):
        raise CommissionError("--value must be a finite number")
    t = target(args, session)

    async def run() -> tuple[str, float | None, list[str]]:
        async with NodeSession(t) as s:
            await s.force(args.point, args.value, args.expiry_s,
                          f"{args.reason.strip()} (technician {session.technician})")
            # The safety layer runs after every force: read what the output really is now.
            now: float | None = None
            for _ in range(30):  # a loaded node may take a few scans to publish it
                await asyncio.sleep(0.1)
                now = await s.read(args.point)
                if now is not None and abs(now - args.value) <= 1e-6 * max(1.0, abs(now)):
                    return s.identity, now, []
            return s.identity, now, await s.holding()

    identity, now, holding = asyncio.run(run())
    summary = (f"forced {args.point} = {args.value:g} for {args.expiry_s:g} s "
               f"({args.reason.strip()}) as {identity}")
    shown = now is not None and abs(now - args.value) <= 1e-6 * max(1.0, abs(now))
    if holding:
        summary += (f"; but the node holds it at {now if now is not None else 'a bad value'}: "
                    f"{', '.join(holding)} wins over a force")
    elif not shown:
        summary += (f"; the node still shows {now} (a busy node, or an override interlock "
                    f"holding it)")
    out.line(("FAIL " if holding else "") + summary)
    return (FAILED if holding else OK), {"summary": summary, "identity": identity,
                                         "url": args.url, "value_now": now,
                                         "holding": holding}


def cmd_release(args: argparse.Namespace, out: Output, session: Session) -> Result:
    """Release a force."""
    t = target(args, session)

    async def run() -> str:
        async with NodeSession(t) as s:
            await s.release(args.point)
            return s.identity

    identity = asyncio.run(run())
    summary = f"released {args.point} as {identity}"
    out.line(summary)
    return OK, {"summary": summary, "identity": identity, "url": args.url}


def cmd_reset(args: argparse.Namespace, out: Output, session: Session) -> Result:
    """Reset a latched trip (the node's safety layer and reset roles decide)."""
    t = target(args, session)

    async def run() -> tuple[list[str], str]:
        async with NodeSession(t) as s:
            return await s.reset(args.interlock), s.identity

    reset, identity = asyncio.run(run())
    summary = (f"reset {', '.join(reset)}" if reset else "nothing was latched") + \
        f" as {identity}"
    out.line(summary)
    return OK, {"summary": summary, "reset": reset, "identity": identity, "url": args.url}


def add_subcommands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """force, release, reset."""
    s = sub.add_parser("force", parents=parents,
                       help="force an output through the running node (expiry, reason)")
    add_node_options(s, required=True)
    s.add_argument("--point", required=True, metavar="DEV.POINT")
    s.add_argument("--value", required=True, type=float)
    s.add_argument("--expiry-s", required=True, type=float,
                   help="the force ends by itself after this long (at most 86400)")
    s.add_argument("--reason", required=True, help="why (audited with your identity)")
    s.set_defaults(handler=cmd_force)

    s = sub.add_parser("release", parents=parents, help="end a force")
    add_node_options(s, required=True)
    s.add_argument("--point", required=True, metavar="DEV.POINT")
    s.set_defaults(handler=cmd_release)

    s = sub.add_parser("reset", parents=parents, help="reset a latched trip")
    add_node_options(s, required=True)
    s.add_argument("--interlock", default="",
                   help="the trip to reset (default: every latched one you may reset)")
    s.set_defaults(handler=cmd_reset)
