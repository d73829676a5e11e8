"""Workload client: send an Annex A.1 announcement, wait for its A.2 answer.

    async with WorkloadClient(mqtt_config, site="demo") as wc:
        response = await wc.announce(announcement, timeout_s=0.5)   # InfrastructureResponse

Over MQTT 5 the announcement carries a response topic private to this client
(`pswd/v1/{site}/workload/reply/{client_id}`) and fresh correlation data; the coordinator
answers there (and on `workload/response/{workload_id}` for everyone else). Over MQTT 3.1.1
the client listens on `workload/response/+` and matches the workload id. No answer in time
raises AnnounceTimeout naming the workload id and the topic waited on; an announcement the
coordinator found invalid raises AnnounceInvalid with its reasons.

`pswd-edge announce FILE|- [--config NODE.toml | --host H --port P] [--site S] [--timeout S]`
prints the A.2 and its latency. Exit codes: 0 approved (with or without conditions),
1 invalid file, 2 bad config, 3 rejected, 4 no answer (timeout, broker unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_runtime.config.reader import ConfigError, ErrorLog
from edge_runtime.federation.config import MqttConfig, load_mqtt_config
from edge_runtime.federation.mqtt import Message, MqttClient
from edge_runtime.federation.preflight import check_tls
from edge_runtime.federation.topics import SiteTopics, check_level
from edge_runtime.messages.annex_a import (
    INFRASTRUCTURE_RESPONSE,
    InfrastructureResponse,
    MessageError,
    WorkloadAnnouncement,
    parse_message,
    validate,
)
from edge_runtime.messages.models import ApprovalStatus

EXIT_OK, EXIT_INVALID, EXIT_CONFIG, EXIT_REJECTED, EXIT_NO_ANSWER = 0, 1, 2, 3, 4


class AnnounceTimeout(TimeoutError):
    """No A.2 arrived in time."""

    def __init__(self, workload_id: str, topic: str, timeout_s: float) -> None:
        self.workload_id, self.topic, self.timeout_s = workload_id, topic, timeout_s
        super().__init__(f"no infrastructure response for workload {workload_id!r} within "
                         f"{timeout_s:g} s on {topic}")


class AnnounceInvalid(ValueError):
    """The coordinator answered that the announcement is invalid."""

    def __init__(self, workload_id: str, reason: str) -> None:
        self.workload_id, self.reason = workload_id, reason
        super().__init__(f"announcement of workload {workload_id!r} refused as invalid: {reason}")


def reply_topic(site: str, client_id: str) -> str:
    """This client's private MQTT 5 response topic."""
    return SiteTopics(site).reply(client_id)


class WorkloadClient:
    """Announces workloads over one MQTT connection; many announcements may be in flight."""

    def __init__(self, mqtt: MqttConfig, *, site: str, client_id: str | None = None) -> None:
        self.topics = SiteTopics(site)
        self.client_id = client_id or mqtt.client_id or f"workload-{uuid.uuid4().hex[:12]}"
        self.mqtt5 = mqtt.mqtt5
        self.reply_topic = reply_topic(site, self.client_id)
        self.wait_topic = self.reply_topic if self.mqtt5 else \
            f"{self.topics.base}/workload/response/+"
        self._by_corr: dict[bytes, asyncio.Future[InfrastructureResponse]] = {}
        self._by_id: dict[str, asyncio.Future[InfrastructureResponse]] = {}
        self.client = MqttClient(mqtt, client_id=self.client_id, on_message=self._on_message)
        self.client.subscribe(self.wait_topic, 1)
        self.ignored = 0
        validate({"message_type": INFRASTRUCTURE_RESPONSE})  # compile the A.2 validator now

    async def __aenter__(self) -> WorkloadClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, timeout_s: float = 10.0) -> None:
        """Connect; returns once the response subscription is acknowledged."""
        self.client.start()
        await self.client.wait_connected(timeout_s)
        await self.client.wait_subscribed(timeout_s)

    async def stop(self) -> None:
        """Disconnect; pending announcements fail with ConnectionError."""
        for fut in [*self._by_corr.values(), *self._by_id.values()]:
            if not fut.done():
                fut.set_exception(ConnectionError("workload client stopped"))
        await self.client.stop()

    async def announce(self, msg: WorkloadAnnouncement,
                       timeout_s: float = 0.5) -> InfrastructureResponse:
        """Publish `msg` and return its A.2; AnnounceTimeout, AnnounceInvalid, ConnectionError."""
        return await self.announce_raw(msg.workload_id, msg.to_json().encode(), timeout_s)

    async def announce_raw(self, workload_id: str, body: bytes,
                           timeout_s: float = 0.5) -> InfrastructureResponse:
        """As announce(), for a body already serialised (benchmarks, the CLI)."""
        fut: asyncio.Future[InfrastructureResponse] = asyncio.get_running_loop().create_future()
        if self.mqtt5:
            corr = uuid.uuid4().bytes
            self._by_corr[corr] = fut
            topic = self.reply_topic
            mid = self.client.publish(self.topics.announce, body, 1,
                                      response_topic=self.reply_topic, correlation_data=corr)
        else:
            corr = b""
            if workload_id in self._by_id:
                raise ValueError(f"workload {workload_id!r} is already being announced")
            self._by_id[workload_id] = fut
            topic = self.topics.response(workload_id)
            mid = self.client.publish(self.topics.announce, body, 1)
        try:
            if mid is None:
                raise ConnectionError(f"MQTT offline: announcement of workload {workload_id!r} "
                                      f"not sent to {self.topics.announce}")
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise AnnounceTimeout(workload_id, topic, timeout_s) from None
        finally:
            self._by_corr.pop(corr, None)
            if not self.mqtt5:
                self._by_id.pop(workload_id, None)

    def _on_message(self, m: Message) -> None:
        fut = (self._by_corr.get(m.correlation_data) if m.correlation_data is not None
               else None)
        if self.mqtt5 and fut is None:
            self.ignored += 1  # a late answer to a request that timed out
            return
        try:
            msg = parse_message(m.payload)
        except MessageError:
            msg = None
        if isinstance(msg, InfrastructureResponse):
            fut = fut or self._by_id.get(msg.workload_id)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        if fut is not None and not fut.done():  # an error answer on our response topic
            fut.set_exception(AnnounceInvalid(*_error_reason(m.payload)))
        else:
            self.ignored += 1


def _error_reason(payload: bytes) -> tuple[str, str]:
    try:
        doc = json.loads(payload)
    except ValueError:
        return "?", payload[:200].decode(errors="replace")
    if not isinstance(doc, dict):
        return "?", str(doc)[:200]
    return str(doc.get("workload_id", "?")), str(doc.get("error", doc))


# --- pswd-edge announce -----------------------------------------------------------------------

ANNOUNCE_DESCRIPTION = "send an Annex A.1 announcement, print the A.2"


def add_announce_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `pswd-edge announce` (also its subparser in cli.py)."""
    p.add_argument("file", help="A.1 JSON file, or - for stdin")
    add_broker_arguments(p)
    p.add_argument("--timeout", type=positive_seconds, default=2.0,
                   help="seconds to wait (default 2)")


def port_number(text: str) -> int:
    """argparse type: a TCP port 1..65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port 1..65535, got {text!r}")
    return int(text)


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1e9:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def finite_number(text: str) -> float:
    """argparse type: a finite number (no nan or inf, which JSON cannot carry)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _site_of(path: Path) -> str | None:
    import tomllib

    try:
        with path.open("rb") as fh:
            node = tomllib.load(fh).get("node", {})
    except (OSError, ValueError):  # ValueError: TOMLDecodeError, a file that is not UTF-8
        return None
    site = node.get("site") if isinstance(node, dict) else None
    return site if isinstance(site, str) else None


def add_broker_arguments(p: argparse.ArgumentParser) -> None:
    """The options that name the broker and the site, shared by the site-facing commands."""
    p.add_argument("--config", type=Path, help="config file whose [mqtt] names the broker")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=1883)
    p.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    p.add_argument("--site", default=None, help="site id (default: [node] site, else 'site')")


def broker_from_arguments(args: argparse.Namespace) -> tuple[MqttConfig, str] | None:
    """(MqttConfig, site) from add_broker_arguments' options; None after printing why the
    --config file cannot be used (every error, `file: [section] key: reason`)."""
    mqtt = MqttConfig(host=args.host, port=args.port, protocol=args.protocol)
    site = args.site
    if args.config is not None:
        try:
            loaded = load_mqtt_config(args.config)
        except ConfigError as exc:
            print("\n".join(exc.lines), file=sys.stderr)
            return None
        if loaded is None:
            print(f"{args.config}: [mqtt]: section missing", file=sys.stderr)
            return None
        errors = ErrorLog()
        check_tls(loaded, str(args.config), errors)
        if errors.lines:
            print("\n".join(errors.lines), file=sys.stderr)
            return None
        mqtt = loaded
        site = site or _site_of(args.config)
    return mqtt, site or "site"


def announce_main(argv: Sequence[str]) -> int:
    """`pswd-edge announce`: returns the exit code (see the module docstring)."""
    p = argparse.ArgumentParser(prog="pswd-edge announce", description=ANNOUNCE_DESCRIPTION)
    add_announce_arguments(p)
    return run_announce(p.parse_args(list(argv)))


def run_announce(args: argparse.Namespace) -> int:
    """`pswd-edge announce` with parsed arguments; returns the exit code."""
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"{args.file}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        msg = parse_message(raw)
        if not isinstance(msg, WorkloadAnnouncement):
            print(f"{args.file}: message_type: must be workload_announcement", file=sys.stderr)
            return EXIT_INVALID
    except MessageError as exc:
        for p in exc.problems:
            print(f"{args.file}: {p}", file=sys.stderr)
        return EXIT_INVALID
    broker = broker_from_arguments(args)
    if broker is None:
        return EXIT_CONFIG
    mqtt, site = broker
    try:
        SiteTopics(site)
        check_level("workload_id", msg.workload_id)
    except ValueError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return asyncio.run(_announce(mqtt, site, msg, args.timeout))


async def _announce(mqtt: MqttConfig, site: str, msg: WorkloadAnnouncement,
                    timeout_s: float) -> int:
    wc = WorkloadClient(mqtt, site=site, client_id=f"announce-{uuid.uuid4().hex[:10]}")
    try:
        # past the client's connect timeout, so a port that is not MQTT is named as such
        await wc.start(timeout_s=max(timeout_s, wc.client.connect_timeout_s + 1.0))
        t0 = time.perf_counter()
        resp = await wc.announce(msg, timeout_s)
        latency_ms = (time.perf_counter() - t0) * 1000.0
    except (TimeoutError, ConnectionError, AnnounceInvalid) as exc:
        print(f"pswd-edge announce: {exc}", file=sys.stderr)
        return EXIT_INVALID if isinstance(exc, AnnounceInvalid) else EXIT_NO_ANSWER
    finally:
        await wc.stop()
    out: dict[str, Any] = resp.to_dict()
    print(json.dumps(out, indent=2))
    print(f"{resp.approval_status.value} in {latency_ms:.1f} ms", file=sys.stderr)
    return EXIT_REJECTED if resp.approval_status is ApprovalStatus.REJECTED else EXIT_OK
