"""`pswd-edge command`: send one signed control command to a node, report a refusal.

    pswd-edge command --config operator.toml --node rack-01 --kind battery_control \\
        --point battery.w_set_kw --value -200 --role grid_operator --keys /etc/pswd/keys
    pswd-edge command ... --release      # give the output back to the node's own control

The command is signed with the role's key (security/signing.py: HMAC-SHA256 over node, kind
and fields, with a fresh nonce and the issue time), published at QoS 1 on
`pswd/v1/{site}/{node}/cmd/{kind}` with a command_id, and the node's error topic is watched
for `--wait` seconds: a node refuses on that topic with the reason (bad signature, expired,
unknown point, out of range), carrying the command's correlation data under MQTT 5. A node
applies an accepted command at its next scan and audits it; there is no positive answer.

Exit codes: 0 sent and not refused within --wait, 1 refused (the reason is printed),
2 usage or configuration (no key for the role, bad config), 3 no broker or no PUBACK.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_runtime import PSWD_VERSION
from edge_runtime.federation.config import MqttConfig
from edge_runtime.federation.mqtt import Message, MqttClient
from edge_runtime.federation.topics import NodeTopics
from edge_runtime.federation.workload_client import (
    add_broker_arguments,
    broker_from_arguments,
    finite_number,
    positive_seconds,
)
from edge_runtime.security.signing import ALLOWED_ROLES, ROLES, KeyFileError, load_keys, sign

EXIT_OK, EXIT_REFUSED, EXIT_CONFIG, EXIT_NO_BROKER = 0, 1, 2, 3


DESCRIPTION = "send one signed control command to a node"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `pswd-edge command` (also its subparser in cli.py)."""
    p.add_argument("--node", required=True, help="node name, e.g. rack-01")
    p.add_argument("--kind", required=True, choices=sorted(ALLOWED_ROLES))
    p.add_argument("--point", required=True, help="output point, e.g. battery.w_set_kw")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--value", type=finite_number, help="hold the output at this value")
    what.add_argument("--release", action="store_true", help="give the output back")
    p.add_argument("--role", required=True, choices=ROLES, help="who signs")
    p.add_argument("--keys", required=True, type=Path, help="directory of <role>.key files")
    add_broker_arguments(p)
    p.add_argument("--wait", type=positive_seconds, default=1.0,
                   help="seconds to watch the node's error topic (default 1)")


def command_main(argv: Sequence[str]) -> int:
    """`pswd-edge command`: returns the exit code (see the module docstring)."""
    p = argparse.ArgumentParser(prog="pswd-edge command", description=DESCRIPTION)
    add_arguments(p)
    return run_command(p.parse_args(list(argv)))


def run_command(args: argparse.Namespace) -> int:
    """`pswd-edge command` with parsed arguments; returns the exit code."""
    broker = broker_from_arguments(args)
    if broker is None:
        return EXIT_CONFIG
    mqtt, site = broker
    try:
        topics = NodeTopics(site, args.node)
        key = load_keys(args.keys).get(args.role)
    except (ValueError, KeyFileError, OSError) as exc:
        print(f"pswd-edge command: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if key is None:
        print(f"pswd-edge command: {args.keys}: no {args.role}.key", file=sys.stderr)
        return EXIT_CONFIG
    doc: dict[str, Any] = {"PSWD_version": PSWD_VERSION, "command_id": uuid.uuid4().hex,
                           "action": "release_output" if args.release else "set_output",
                           "point": args.point}
    if not args.release:
        doc["value"] = args.value
    signed = sign(key, args.node, args.kind, doc, role=args.role, now=time.time())
    return asyncio.run(send_command(mqtt, topics, args.kind, signed, args.wait))


async def send_command(mqtt: MqttConfig, topics: NodeTopics, kind: str,
                       doc: dict[str, Any], wait_s: float) -> int:
    """Publish the signed command, then watch the node's error topic; the exit code."""
    cmd_topic = topics.cmd(kind)
    corr = str(doc["command_id"]).encode()
    refusals: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def on_message(msg: Message) -> None:
        try:
            err = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(err, dict) or err.get("topic") != cmd_topic:
            return
        if msg.correlation_data is not None and msg.correlation_data != corr:
            return  # someone else's refused command on the same topic
        refusals.put_nowait(err)

    client = MqttClient(mqtt, client_id=f"command-{uuid.uuid4().hex[:10]}",
                        on_message=on_message)
    client.subscribe(topics.error, 1)
    client.start()
    try:
        try:
            # past the connect timeout: its TimeoutError then says why (refused, not MQTT)
            await client.wait_connected(client.connect_timeout_s + 1.0)
            await client.wait_subscribed(5.0)
            await client.publish_acked(cmd_topic, json.dumps(doc).encode(), 1,
                                       correlation_data=corr, timeout=5.0)
        except (TimeoutError, ConnectionError) as exc:
            print(f"pswd-edge command: {exc or 'no answer from the broker'}", file=sys.stderr)
            return EXIT_NO_BROKER
        try:
            err = await asyncio.wait_for(refusals.get(), wait_s)
        except TimeoutError:
            print(f"sent {doc['action']} {doc['point']} to {cmd_topic} as {doc['role']}; "
                  f"not refused within {wait_s:g} s (the node applies it at its next scan)")
            return EXIT_OK
        print(f"refused by {err.get('node', topics.node)}: {err.get('error')} "
              f"(field {err.get('field')}, {err.get('category')})", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        await client.stop()
