"""Clock offset of a node and whether its timestamps are trustworthy (spec 5.2.2: within ±1 ms).

Sources, best first:
  chrony    `chronyc -n tracking`: "System time : X seconds fast|slow of NTP time"; the error
            bound is |offset| + root delay / 2 + root dispersion; "Leap status : Not
            synchronised" means no usable reference
  linuxptp  `pmc -u -b 0 'GET TIME_STATUS_NP'`: master_offset (ns) of the PTP hardware clock;
            gmPresent false means no grandmaster (phc2sys keeps the system clock on the PHC)
  mqtt      estimated against the site coordinator's clock over MQTT round trips, NTP style:
            four timestamps t1 (request sent, node clock), t2 (received, site clock),
            t3 (reply sent, site clock), t4 (reply received, node clock);
            offset = ((t1 - t2) + (t4 - t3)) / 2, delay = (t4 - t1) - (t3 - t2); of the last
            few rounds the one with the smallest delay wins (its queueing error is smallest)
            and its error bound is delay / 2
Offsets are local minus reference: positive means this node's clock is ahead.
Timestamps are flagged uncertain when |offset| > 1 ms, or when no source is synchronised.

The round-trip wire format (JSON, RFC 7159), request on `time_request_topic(site)` through a
shared subscription (any coordinator answers), reply to the MQTT 5 response topic when given,
else to `time_reply_topic(site, node)`:
    request  {"PSWD_version": "1.0", "node": "rack-01", "t1": 1800000000.123456}
    reply    {"PSWD_version": "1.0", "t1": ..., "t2": ..., "t3": ...}
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import shutil
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edge_runtime import PSWD_VERSION
from edge_runtime.federation.mqtt import Message, MqttClient
from edge_runtime.federation.topics import NodeTopics, SiteTopics

log = logging.getLogger(__name__)
OFFSET_LIMIT_S = 0.001  # spec 5.2.2: ±1 ms
Runner = Callable[[list[str]], Awaitable[str | None]]


def time_request_topic(site: str) -> str:
    """Where nodes send clock round-trip requests (site-level family `time`)."""
    return SiteTopics(site).time_request


def time_reply_topic(site: str, node: str) -> str:
    """Where a coordinator answers a node that gave no MQTT 5 response topic."""
    return NodeTopics(site, node).time


@dataclass(frozen=True, slots=True)
class ClockStatus:
    """This node's clock against its reference."""

    source: str  # "chrony", "ptp", "mqtt" or "none"
    offset_s: float | None  # local minus reference; None when unknown
    error_bound_s: float | None = None
    synchronised: bool = True
    detail: str = ""

    @property
    def uncertain(self) -> bool:
        """True when timestamps from this clock may be off by more than 1 ms."""
        return (not self.synchronised or self.offset_s is None
                or abs(self.offset_s) > OFFSET_LIMIT_S)

    def to_dict(self) -> dict[str, Any]:
        """For the node's birth/state message and get_status()."""
        return {"source": self.source, "offset_ms": _ms(self.offset_s),
                "error_bound_ms": _ms(self.error_bound_s), "synchronised": self.synchronised,
                "timestamps_uncertain": self.uncertain, "detail": self.detail}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 6)


UNKNOWN = ClockStatus("none", None, None, False, "no chrony, linuxptp or round-trip estimate")

# --- chrony / linuxptp status text -----------------------------------------------------------

_SYSTEM_TIME = re.compile(r"^System time\s*:\s*([0-9.]+) seconds (fast|slow) of NTP time",
                          re.MULTILINE)
_FIELD = re.compile(r"^(Root delay|Root dispersion|Leap status|Reference ID)\s*:\s*(.+?)\s*$",
                    re.MULTILINE)


def parse_chronyc_tracking(text: str) -> ClockStatus | None:
    """`chronyc tracking` output as a ClockStatus; None if it is not that output."""
    m = _SYSTEM_TIME.search(text)
    if m is None:
        return None
    offset = float(m[1]) * (1 if m[2] == "fast" else -1)
    fields = dict(_FIELD.findall(text))
    leap = fields.get("Leap status", "")
    synced = bool(leap) and "not synchron" not in leap.lower()
    bound = abs(offset)
    for key, share in (("Root delay", 0.5), ("Root dispersion", 1.0)):
        num = re.match(r"([0-9.]+) seconds", fields.get(key, ""))
        if num:
            bound += float(num[1]) * share
    return ClockStatus("chrony", offset, bound, synced,
                       f"reference {fields.get('Reference ID', '?')}, leap status {leap or '?'}")


def parse_pmc_time_status(text: str) -> ClockStatus | None:
    """`pmc ... 'GET TIME_STATUS_NP'` output as a ClockStatus; None if it is not that output."""
    m = re.search(r"master_offset\s+(-?\d+)", text)
    if m is None:
        return None
    gm = re.search(r"gmPresent\s+(true|false)", text)
    present = gm is not None and gm[1] == "true"
    ident = re.search(r"gmIdentity\s+(\S+)", text)
    offset = int(m[1]) / 1e9
    return ClockStatus("ptp", offset, abs(offset), present,
                       f"grandmaster {ident[1] if ident else '?'}"
                       + ("" if present else " (not present)"))


async def run_command(argv: list[str], timeout_s: float = 2.0) -> str | None:
    """stdout of a status command, or None if missing, failing or too slow."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    return out.decode(errors="replace") if proc.returncode == 0 else None


CHRONY_CMD = ["chronyc", "-n", "tracking"]
PMC_CMD = ["pmc", "-u", "-b", "0", "GET TIME_STATUS_NP"]


async def system_clock_status(run: Runner = run_command) -> ClockStatus | None:
    """The clock as chrony or linuxptp sees it; None when neither is present and answering."""
    text = await run(CHRONY_CMD)
    status = parse_chronyc_tracking(text) if text else None
    if status is not None and status.synchronised:
        return status
    text = await run(PMC_CMD)
    ptp = parse_pmc_time_status(text) if text else None
    return ptp if ptp is not None and (ptp.synchronised or status is None) else status


# --- estimate over MQTT round trips (sans-IO) ------------------------------------------------

@dataclass(frozen=True, slots=True)
class RoundTrip:
    """The four timestamps of one exchange (t1, t4 on this node's clock; t2, t3 the site's)."""

    t1: float
    t2: float
    t3: float
    t4: float

    @property
    def offset_s(self) -> float:
        """Local minus reference."""
        return ((self.t1 - self.t2) + (self.t4 - self.t3)) / 2.0

    @property
    def delay_s(self) -> float:
        """Network round trip, the site's processing time taken out."""
        return (self.t4 - self.t1) - (self.t3 - self.t2)


class OffsetEstimator:
    """Minimum-delay filter over the last `window` round trips."""

    def __init__(self, window: int = 8) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self._trips: deque[RoundTrip] = deque(maxlen=window)

    def add(self, trip: RoundTrip) -> None:
        """One completed exchange; impossible ones (negative delay, reply before request) are
        dropped, since they mean a clock stepped mid-exchange."""
        if trip.t4 >= trip.t1 and trip.t3 >= trip.t2 and trip.delay_s >= 0:
            self._trips.append(trip)

    def __len__(self) -> int:
        return len(self._trips)

    def status(self) -> ClockStatus:
        """The estimate so far (UNKNOWN before the first usable round trip)."""
        if not self._trips:
            return UNKNOWN
        best = min(self._trips, key=lambda t: t.delay_s)
        return ClockStatus("mqtt", best.offset_s, best.delay_s / 2.0, True,
                           f"min delay {best.delay_s * 1000:.3f} ms of {len(self._trips)} "
                           "round trips to the site")


def time_request(node: str, t1: float) -> bytes:
    """A round-trip request body."""
    return json.dumps({"PSWD_version": PSWD_VERSION, "node": node, "t1": t1}).encode()


def parse_time_request(raw: bytes) -> tuple[str, float]:
    """(node, t1) of a request; ValueError naming the field when malformed."""
    doc = _object(raw)
    node, t1 = doc.get("node"), doc.get("t1")
    if not isinstance(node, str):
        raise ValueError(f"node: must be a string, got {node!r}")
    return node, _finite(t1, "t1")


def time_reply(t1: float, t2: float, t3: float) -> bytes:
    """The coordinator's answer: t1 echoed, t2 and t3 on its clock."""
    return json.dumps({"PSWD_version": PSWD_VERSION, "t1": t1, "t2": t2, "t3": t3}).encode()


def parse_time_reply(raw: bytes, t4: float) -> RoundTrip:
    """A reply plus its arrival time as a RoundTrip; ValueError naming the field."""
    doc = _object(raw)
    return RoundTrip(_finite(doc.get("t1"), "t1"), _finite(doc.get("t2"), "t2"),
                     _finite(doc.get("t3"), "t3"), t4)


def _object(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"(root): not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("(root): must be a JSON object")
    return doc


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    return float(value)


Exchange = Callable[[bytes], Awaitable[tuple[bytes, float]]]


async def estimate_over_mqtt(node: str, exchange: Exchange, wall: Callable[[], float], *,
                             rounds: int = 8,
                             estimator: OffsetEstimator | None = None) -> ClockStatus:
    """Run `rounds` exchanges (each: send request, get (reply, arrival wall time)); a failed
    round (timeout, bad reply) is skipped. `exchange` is the MQTT request/response adapter."""
    est = estimator or OffsetEstimator(rounds)
    for _ in range(rounds):
        try:
            reply, t4 = await exchange(time_request(node, wall()))
            est.add(parse_time_reply(reply, t4))
        except (TimeoutError, ValueError):
            continue
    return est.status()


async def clock_status(node: str, exchange: Exchange | None, wall: Callable[[], float], *,
                       run: Runner = run_command, rounds: int = 8) -> ClockStatus:
    """chrony or linuxptp when present and synchronised, else the MQTT estimate, else UNKNOWN."""
    status = await system_clock_status(run)
    if status is not None and status.synchronised:
        return status
    if exchange is not None:
        estimate = await estimate_over_mqtt(node, exchange, wall, rounds=rounds)
        if estimate.offset_s is not None:
            return estimate
    return status or UNKNOWN


class MqttTimeExchange:
    """The `Exchange` of estimate_over_mqtt over an MqttClient the node already runs.

    The node's on_message passes every message to `handle()` first. Replies come to the node's
    own reply topic (MQTT 5 response topic too, so both protocols work); one round trip at a
    time, so a late reply to a timed-out request is told apart by its t1.
    """

    def __init__(self, client: MqttClient, *, site: str, node: str,
                 wall: Callable[[], float], timeout_s: float = 0.5) -> None:
        self.client, self.node, self.wall, self.timeout_s = client, node, wall, timeout_s
        self.request_topic = time_request_topic(site)
        self.reply_topic = time_reply_topic(site, node)
        client.subscribe(self.reply_topic, 0)
        self._pending: tuple[float, asyncio.Future[tuple[bytes, float]]] | None = None

    def handle(self, msg: Message) -> bool:
        """True if `msg` was a clock reply (consumed)."""
        if msg.topic != self.reply_topic:
            return False
        t4 = self.wall()
        if self._pending is not None:
            t1, fut = self._pending
            try:
                same = parse_time_reply(msg.payload, t4).t1 == t1
            except ValueError:
                same = False
            if same and not fut.done():
                fut.set_result((msg.payload, t4))
        return True

    async def __call__(self, request: bytes) -> tuple[bytes, float]:
        _, t1 = parse_time_request(request)
        fut: asyncio.Future[tuple[bytes, float]] = asyncio.get_running_loop().create_future()
        self._pending = (t1, fut)
        try:
            if self.client.publish(self.request_topic, request, 0,
                                   response_topic=self.reply_topic) is None:
                raise TimeoutError("MQTT offline")
            return await asyncio.wait_for(fut, self.timeout_s)
        finally:
            self._pending = None


class ClockMonitor:
    """Keeps a node's ClockStatus fresh: every `interval_s`, chrony/linuxptp if present and
    synchronised, else a round-trip estimate against the site over the node's MqttClient.

        monitor = ClockMonitor(client, site=..., node=..., wall=clock.wall)
        # in the node's on_message, first: if monitor.handle(msg): return
        task = asyncio.create_task(monitor.run())
        monitor.status  # -> ClockStatus, for the birth and get_status()["clock"]
    """

    def __init__(self, client: MqttClient, *, site: str, node: str,
                 wall: Callable[[], float], interval_s: float = 60.0, rounds: int = 8,
                 run: Runner = run_command) -> None:
        self.exchange = MqttTimeExchange(client, site=site, node=node, wall=wall)
        self.client, self.node, self.wall = client, node, wall
        self.interval_s, self.rounds, self._run = interval_s, rounds, run
        self.status: ClockStatus = UNKNOWN

    def handle(self, msg: Message) -> bool:
        """True if `msg` was a clock reply (consumed)."""
        return self.exchange.handle(msg)

    async def measure(self) -> ClockStatus:
        """One measurement now; updates and returns `status`."""
        exchange = self.exchange if self.client.connected else None
        new = await clock_status(self.node, exchange, self.wall, run=self._run,
                                 rounds=self.rounds)
        if new.uncertain and not self.status.uncertain:
            log.warning("clock of %s uncertain: %s", self.node, new.to_dict())
        self.status = new
        return new

    async def run(self) -> None:
        """Measure every interval_s until cancelled."""
        while True:
            await self.measure()
            await asyncio.sleep(self.interval_s)
