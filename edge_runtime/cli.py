"""`pswd-edge`: run a node, run the demo site, talk to a site (announce, signed commands).

One argparse tree: every subcommand declares its own options (flags in any order, `-h` on
each). Exit codes: 0 done, 2 bad command line or config (one line per problem, naming the
file, section and key), others as each subcommand documents. No traceback reaches the user:
an unexpected error is one line (`--log-level DEBUG` shows the traceback), exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_runtime import __version__
from edge_runtime.assembly import NodeConfig, assemble, load_node_config
from edge_runtime.config.reader import ConfigError, ErrorLog
from edge_runtime.federation import command_client, workload_client
from edge_runtime.federation.workload_client import positive_seconds
from edge_runtime.messages import validate_cli
from edge_runtime.security import certs_cli
from edge_runtime.security.secure_default import StartCheck, check_start
from edge_runtime.security.signing import ROLES
from edge_runtime.servers.opcua import admin as opcua_admin

EXIT_CONFIG = 2
EXIT_INTERNAL = 1
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
log = logging.getLogger("edge_runtime.cli")


def _parser() -> argparse.ArgumentParser:
    # --log-level is accepted before or after the subcommand; SUPPRESS keeps a value given
    # before it from being reset by the subcommand's default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS,
                        help="logging threshold (default INFO; WARNING for the demo, whose "
                             "view would be drowned by routine log lines)")
    p = argparse.ArgumentParser(prog="pswd-edge", description="PSWD edge controller runtime",
                                parents=[common])
    p.add_argument("--version", action="version", version=f"pswd-edge {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    run = add("run", "run one node from its TOML config")
    run.add_argument("--config", required=True, type=Path, help="node config file")
    run.add_argument("--duration", type=positive_seconds, default=None, metavar="S",
                     help="stop after S seconds (default: run until Ctrl-C)")
    run.add_argument("--status-every", type=positive_seconds, default=60.0, metavar="S",
                     help="seconds between status lines in the log (default 60)")

    check = add("check-config", "load a node config and report every error (the checks "
                                "`run` makes before it starts)")
    check.add_argument("config", type=Path, help="node config file")

    validate_cli.add_arguments(add("validate", validate_cli.DESCRIPTION))
    workload_client.add_announce_arguments(add("announce",
                                               workload_client.ANNOUNCE_DESCRIPTION))
    command_client.add_arguments(add("command", command_client.DESCRIPTION))

    certs_cli.add_certs_arguments(add("certs", certs_cli.CERTS_DESCRIPTION), [common])
    certs_cli.add_token_arguments(add("token", certs_cli.TOKEN_DESCRIPTION), [common])

    opcua_admin.add_arguments(add("opcua", opcua_admin.DESCRIPTION))

    keygen = add("keygen", "make a role's command-signing key (mode 0600)")
    keygen.add_argument("--role", required=True, choices=ROLES)
    keygen.add_argument("directory", type=Path, help="where <role>.key is written")

    audit = add("audit", "the hash-chained audit log (security/audit.py)")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    audit_verify = audit_sub.add_parser(
        "verify", parents=[common], help="check a log's chain and head: exit 0 intact, "
        "1 broken (the first entry at fault named), 2 unreadable")
    audit_verify.add_argument("file", type=Path, help="audit log ([audit] path)")

    demo = add("demo", "run a simulated site on this machine")
    demo.add_argument("--duration", type=positive_seconds, default=60.0, metavar="S",
                      help="seconds to run (default 60)")
    demo.add_argument("--no-ui", action="store_true", help="plain log lines, no live view")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pswd-edge` console script."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage error (2) or the help (0)
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    level = getattr(args, "log_level", None) or ("WARNING" if args.command == "demo" else "INFO")
    logging.basicConfig(level=level,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # asyncua logs each publish and request at INFO; the OPC UA driver and server log the
    # transitions an operator needs themselves, so only its warnings and errors go through.
    logging.getLogger("asyncua").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # the last net: one line, the traceback only when asked for
        log.debug("pswd-edge %s failed", args.command, exc_info=True)
        print(f"pswd-edge {args.command}: internal error: {type(exc).__name__}: {exc} "
              f"(--log-level DEBUG shows where)", file=sys.stderr)
        return EXIT_INTERNAL


def load_for_run(path: Path, *, first_start: bool = False) -> NodeConfig:
    """Every check `run` makes before it starts anything (ConfigError lists the problems):
    the node config (one loader for every role), the secure start (certificates, keys, TLS
    and signed commands, unless [security] insecure = true: security/secure_default.py; with
    `first_start`, what an online CA can make is made first), then what its [mqtt] needs from
    the machine (a writable state_dir, created if missing; TLS files that load)."""
    cfg = load_node_config(path)
    errors = ErrorLog()
    check = security_check(cfg, generate=first_start)
    for made in check.made:
        log.warning("%s: first start made %s", path, made)
    if cfg.security.insecure:
        log.critical("%s: INSECURE: [security] insecure = true (a lab setting); a production "
                     "node would refuse to start: %s", path,
                     "; ".join(check.reasons) or "nothing missing")
    else:
        check.report(str(path), errors)
        for warning in check.warnings:
            log.warning("%s: %s", path, warning)
    if cfg.mqtt is not None:
        from edge_runtime.federation.preflight import check_mqtt_runtime

        check_mqtt_runtime(cfg.mqtt, str(path), errors)
    errors.raise_if_any()
    return cfg


def security_check(cfg: NodeConfig, *, generate: bool = False) -> StartCheck:
    """What keeps `cfg` from a secure start (security/secure_default.py), every link named."""
    check = check_start(cfg.security, node=cfg.name, links={"mqtt": cfg.mqtt},
                        generate=generate)
    if cfg.https is not None and cfg.https.client_cert == "none":
        check.error("https.client_cert", "none: a production node authenticates its HTTPS "
                    "clients by certificate (mutual TLS, spec 10.2.1; \"optional\" lets an "
                    "endpoint decide)")
    if cfg.https is not None and cfg.https.crl is None:
        check.warnings.append("[https] crl not set: a revoked client certificate is accepted")
    return check


def _load_or_report(path: Path, *, first_start: bool = False) -> NodeConfig | None:
    try:
        return load_for_run(path, first_start=first_start)
    except ConfigError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return None


def _check_config(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    print(f"{args.config}: ok: node {cfg.name} ({cfg.role}), {len(cfg.devices)} devices, "
          f"scan {cfg.scan_period_s * 1000:g} ms"
          + (" - INSECURE ([security] insecure = true: a lab only)" if cfg.security.insecure
             else ""))
    return 0


def _run(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config, first_start=True)
    if cfg is None:
        return EXIT_CONFIG
    if cfg.mqtt is not None:
        from edge_runtime.federation.preflight import state_dir_in_use

        if (busy := state_dir_in_use(cfg.mqtt)) is not None:
            print(f"{args.config}: [mqtt] state_dir: {busy}", file=sys.stderr)
            return EXIT_INTERNAL
    return _run_until_signal(_run_node(cfg, args.config, args.duration, args.status_every))


def _validate(args: argparse.Namespace) -> int:
    return validate_cli.run_validate(args)


def _announce(args: argparse.Namespace) -> int:
    return workload_client.run_announce(args)


def _command(args: argparse.Namespace) -> int:
    return command_client.run_command(args)


def _keygen(args: argparse.Namespace) -> int:
    from edge_runtime.security.signing import generate_key

    path = args.directory / f"{args.role}.key"
    try:
        generate_key(path)
    except FileExistsError:
        print(f"{path}: exists; a key is never overwritten (delete it first to rotate)",
              file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"{path}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path}: new {args.role} key; copy it (mode 0600) to every node's "
          f"[mqtt] command_keys directory and to whoever signs as {args.role}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from edge_runtime.security.audit import verify

    try:
        verdict = verify(args.file)
    except OSError as exc:
        print(f"{args.file}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.file}: {verdict}", file=sys.stdout if verdict.ok else sys.stderr)
    return 0 if verdict.ok else 1


def _opcua(args: argparse.Namespace) -> int:
    return opcua_admin.run(args)


def _demo(args: argparse.Namespace) -> int:
    from edge_runtime.demo import run_demo

    return _run_until_signal(run_demo(duration_s=args.duration, ui=not args.no_ui))


COMMANDS: Mapping[str, Callable[[argparse.Namespace], int]] = {
    "run": _run, "check-config": _check_config, "validate": _validate, "announce": _announce,
    "command": _command, "keygen": _keygen, "opcua": _opcua, "audit": _audit, "demo": _demo,
    "certs": certs_cli.run_certs, "token": certs_cli.run_token,
}


async def _run_node(cfg: NodeConfig, path: Path, duration_s: float | None,
                    status_every_s: float = 60.0) -> None:
    """One node as the assembler builds it for its role (MQTT link, site coordinator), with
    a status line every `status_every_s` and a closing summary."""
    from edge_runtime.runlog import RunLog

    node = assemble(cfg)
    if cfg.security.insecure:  # said at start and every minute, as an alarm on the node
        from edge_runtime.security.secure_default import InsecureNotice

        node.attach("insecure", InsecureNotice(node.events, node.clock,
                                               security_check(cfg).reasons), external=False)
    elif cfg.security.cert is not None:  # renewed before its end while running (online CA)
        from edge_runtime.security.secure_default import CertMonitor

        node.attach("certs", CertMonitor(cfg.security, node.events, node.clock),
                    external=False)
    runlog = RunLog(cfg.name, period_s=status_every_s)
    runlog.add("node", node.get_status)
    await runlog.around(node.run(duration_s))


def _run_until_signal(coro: Coroutine[Any, Any, Any]) -> int:
    """Run a coroutine; SIGINT/SIGTERM cancel it so it shuts down cleanly (outputs to failsafe).
    Its result when it returns an int (the demo's exit code), else 0."""
    result: list[Any] = []

    async def runner() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            result.append(await task)

    asyncio.run(runner())
    return result[0] if result and isinstance(result[0], int) else 0


if __name__ == "__main__":
    sys.exit(main())
