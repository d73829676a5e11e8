"""`pswd-edge opcua ...`: provision the OPC UA server's users, trust list and certificate.

    pswd-edge opcua add-user NAME --role ROLE --config node.toml   (password: prompt or stdin)
    pswd-edge opcua trust CLIENT.pem --role ROLE --config node.toml [--name NAME]
    pswd-edge opcua cert --config node.toml                       (made now if missing)
    pswd-edge opcua client-cert NAME --uri URN --out DIR          (for a client without one)

Nothing is provisioned by default; each command writes under the [opcua] state_dir of the
node's config (or --state-dir). Exit 0 done, 2 bad input (one line naming what is wrong).
This module imports nothing heavy at load: `pswd-edge` builds its parser from it.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = "provision the node's OPC UA server: users, trusted client certificates, " \
              "its own certificate"
ROLE_CHOICES = ("workload_operator", "infrastructure_manager", "grid_operator",
                "municipal_partner", "viewer")
EXIT_BAD = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `opcua` subcommands and their options."""
    sub = p.add_subparsers(dest="opcua_command", required=True, metavar="ACTION")

    def where(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", type=Path, help="node config whose [opcua] state_dir is used")
        q.add_argument("--state-dir", type=Path, help="the server's state dir (instead of "
                                                       "--config)")

    add = sub.add_parser("add-user", help="add (or replace) a username/password user",
                         description="add a user; the password is read from the terminal "
                                     "(twice) or from the first line of stdin")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLE_CHOICES)
    where(add)
    trust = sub.add_parser("trust", help="trust a client certificate and map it to a role")
    trust.add_argument("certificate", type=Path, help="client certificate, PEM or DER")
    trust.add_argument("--role", required=True, choices=ROLE_CHOICES)
    trust.add_argument("--name", help="name in the trust list (default: file name)")
    where(trust)
    client = sub.add_parser("client-cert", help="make an RSA-2048 client certificate (for a "
                                                "client that cannot make its own)")
    client.add_argument("name", help="certificate common name; files NAME.der, NAME.pem, "
                                     "NAME-key.pem")
    client.add_argument("--uri", required=True,
                        help="the client's application URI (must match what it announces)")
    client.add_argument("--out", type=Path, required=True, help="directory for the files")
    cert = sub.add_parser("cert", help="make the server certificate now (if missing) and "
                                       "show it")
    where(cert)


def _settings(args: argparse.Namespace) -> tuple[Path, Any, str, str]:
    """(state dir, OpcUaConfig or None, node name, site) from --config or --state-dir."""
    if args.config is not None:
        from edge_runtime.config.reader import ErrorLog, Section, read_toml
        from edge_runtime.servers.opcua.config import read_opcua

        errors = ErrorLog()
        data = read_toml(args.config, errors) or {}
        errors.raise_if_any()
        node = data.get("node", {}) if isinstance(data.get("node"), dict) else {}
        if "opcua" not in data:
            raise ValueError(f"{args.config}: no [opcua] section")
        cfg = read_opcua(Section(str(args.config), "opcua", data["opcua"], errors),
                         args.config.parent)
        errors.raise_if_any()
        return cfg.state_dir, cfg, str(node.get("name", "node")), str(node.get("site", "site"))
    if args.state_dir is None:
        raise ValueError("give --config FILE or --state-dir DIR")
    return args.state_dir, None, "node", "site"


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ValueError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def run(args: argparse.Namespace) -> int:
    """Run one `opcua` subcommand."""
    from edge_runtime.config.reader import ConfigError

    try:
        if args.opcua_command == "client-cert":
            return _client_cert(args)
        state_dir, cfg, name, site = _settings(args)
        if args.opcua_command == "add-user":
            from edge_runtime.servers.opcua.users import UserStore

            UserStore(state_dir).add_user(args.name, args.role, _password())
            print(f"{state_dir}: user {args.name} ({args.role}) added")
        elif args.opcua_command == "trust":
            from edge_runtime.servers.opcua.users import UserStore

            label = args.name or args.certificate.stem
            path = UserStore(state_dir).trust(label, args.role, args.certificate.read_bytes())
            print(f"{path}: trusted as {label} ({args.role})")
        else:
            return _cert(state_dir, cfg, name, site)
    except ConfigError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return EXIT_BAD
    except (ValueError, OSError) as exc:
        print(f"pswd-edge opcua {args.opcua_command}: {exc}", file=sys.stderr)
        return EXIT_BAD
    return 0


def _client_cert(args: argparse.Namespace) -> int:
    import socket

    from edge_runtime.security.opcua_certs import make_app_cert
    from edge_runtime.security.pki import write_pem

    made = make_app_cert(args.uri, args.name, client=True,
                         dns_names=sorted({"localhost", socket.gethostname()}))
    der = args.out / f"{args.name}.der"
    for path in (der, args.out / f"{args.name}.pem", args.out / f"{args.name}-key.pem"):
        if path.exists():
            raise ValueError(f"{path}: exists; nothing was overwritten")
    write_pem(der, made.cert_der)
    write_pem(args.out / f"{args.name}.pem", made.cert_pem)
    key = write_pem(args.out / f"{args.name}-key.pem", made.key_pem, private=True)
    print(f"{der}: client certificate for {args.uri}, key {key} (mode 0600); trust it on the "
          "node with `pswd-edge opcua trust`")
    return 0


def _cert(state_dir: Path, cfg: Any, name: str, site: str) -> int:
    from edge_runtime.security.opcua_certs import Signer, ensure_server_cert, load_signer

    uri = (cfg.application_uri if cfg is not None and cfg.application_uri
           else f"urn:pswd-edge:{site}:{name}")
    signer: Signer | None = None
    if cfg is not None and cfg.ca_cert is not None and cfg.ca_key is not None:
        signer = load_signer(cfg.ca_cert, cfg.ca_key)
    files = ensure_server_cert(state_dir, uri, f"PSWD Edge {name}", ca=signer)
    how = "self-signed" if files.signed_by == "self" else f"signed by {files.signed_by}"
    print(f"{files.cert}: {'made now' if files.created else 'exists'}, {how}, "
          f"application URI {uri}; give it to BMS clients to trust")
    return 0
