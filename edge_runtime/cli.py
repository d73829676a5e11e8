"""`pswd-edge`: run a node, run the demo site, talk to a site (announce, signed commands)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from edge_runtime import __version__
from edge_runtime.config.loader import load_node_config
from edge_runtime.config.reader import ConfigError
from edge_runtime.config.schema import NodeConfig
from edge_runtime.security.signing import ROLES

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pswd-edge", description="PSWD edge controller runtime")
    p.add_argument("--version", action="version", version=f"pswd-edge {__version__}")
    p.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="logging threshold (default INFO; WARNING for the demo, whose view "
                        "would be drowned by routine log lines)")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one node from its TOML config")
    run.add_argument("--config", required=True, type=Path, help="node config file")
    run.add_argument("--duration", type=float, default=None,
                     help="stop after this many seconds (default: run until Ctrl-C)")

    check = sub.add_parser("check-config", help="load a node config and report every error")
    check.add_argument("config", type=Path)

    val = sub.add_parser("validate", add_help=False,
                         help="validate an Annex A message file (or - for stdin)")
    val.add_argument("args", nargs=argparse.REMAINDER)

    ann = sub.add_parser("announce", add_help=False,
                         help="send an Annex A.1 workload announcement and wait for its A.2")
    ann.add_argument("args", nargs=argparse.REMAINDER)

    cmd = sub.add_parser("command", add_help=False,
                         help="send one signed control command to a node")
    cmd.add_argument("args", nargs=argparse.REMAINDER)

    keygen = sub.add_parser("keygen", help="make a role's command-signing key (mode 0600)")
    keygen.add_argument("--role", required=True, choices=ROLES)
    keygen.add_argument("directory", type=Path, help="where <role>.key is written")

    demo = sub.add_parser("demo", help="run a simulated site on this machine")
    demo.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    demo.add_argument("--no-ui", action="store_true", help="plain log lines, no live view")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pswd-edge` console script."""
    args = _parser().parse_args(argv)
    level = args.log_level or ("WARNING" if args.command == "demo" else "INFO")
    logging.basicConfig(level=level,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    if args.command == "check-config":
        try:
            cfg = load_node_config(args.config)
        except ConfigError as exc:
            print("\n".join(exc.lines), file=sys.stderr)
            return EXIT_CONFIG
        print(f"{args.config}: ok: node {cfg.name} ({cfg.role}), {len(cfg.devices)} devices, "
              f"scan {cfg.scan_period_s * 1000:g} ms")
        return 0
    if args.command == "run":
        try:
            cfg = load_node_config(args.config)
        except ConfigError as exc:
            print("\n".join(exc.lines), file=sys.stderr)
            return EXIT_CONFIG
        return _run_until_signal(_run_node(cfg, args.config, args.duration))
    if args.command == "validate":
        from edge_runtime.messages.validate_cli import validate_main

        return validate_main(args.args)
    if args.command == "announce":
        from edge_runtime.federation.workload_client import announce_main

        return announce_main(args.args)
    if args.command == "command":
        from edge_runtime.federation.command_client import command_main

        return command_main(args.args)
    if args.command == "keygen":
        from edge_runtime.security.signing import generate_key

        path = args.directory / f"{args.role}.key"
        try:
            generate_key(path)
        except FileExistsError:
            print(f"{path}: exists; a key is never overwritten (delete it first to rotate)",
                  file=sys.stderr)
            return EXIT_CONFIG
        print(f"{path}: new {args.role} key; copy it (mode 0600) to every node's "
              f"[mqtt] command_keys directory and to whoever signs as {args.role}")
        return 0
    if args.command == "demo":
        from edge_runtime.demo import run_demo

        return _run_until_signal(run_demo(duration_s=args.duration, ui=not args.no_ui))
    return 1


async def _run_node(cfg: NodeConfig, path: Path, duration_s: float | None) -> None:
    """One node, its MQTT link when [mqtt] is configured, and for role site the coordinator."""
    from edge_runtime.federation.link import run_with_link
    from edge_runtime.node import Node

    jobs: list[Coroutine[Any, Any, None]] = []
    if cfg.role == "site":
        from edge_runtime.site.coordinator import run_site

        jobs.append(run_site(path, duration_s))
    if cfg.devices or cfg.role != "site":
        jobs.append(run_with_link(Node(cfg), cfg.mqtt, duration_s))
    await asyncio.gather(*jobs)


def _run_until_signal(coro: Coroutine[Any, Any, Any]) -> int:
    """Run a coroutine; SIGINT/SIGTERM cancel it so it shuts down cleanly (outputs to failsafe)."""

    async def runner() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(runner())
    return 0


if __name__ == "__main__":
    sys.exit(main())
