"""Benchmark: 10 Hz telemetry through a broker outage (Mosquitto killed with SIGKILL).

A node scans every 100 ms; one point counts scans (one new sample per scan). Its NodeLink
publishes through the outbox. After a live period the broker is killed for the outage, then
started again; the link reconnects, publishes a new birth and replays what it stored
(historical = true). A receiver with a persistent session on a broker with persistence
collects everything. Figures: samples lost (target 0), order kept, duplicates, scan overruns
and scan start lateness during the outage (target 0 overruns), replay time, outbox peak.

Losses are counted over every sample the node produced, from the first to the last: the
link is running (its recorder attached) before the node's first scan, so the counter's 0 is
the first sample telemetry can carry; at the end the counter stops, the node scans on until
its last value is latched, and the receiver is given a bounded time to receive it. Expected
= every value 0 .. last produced; lost = expected values never received (none is assumed
received because a later one was). The baseline is counted the same way: every value it
published, 0 .. sent - 1.

Baselines in the same run: a bare paho client publishing the same counter at QoS 0 straight
to the broker (telemetry without store-and-forward): what it loses is what the outbox saves;
and a control node, the same node without any link, scanning in a process of its own during
the outage: overruns it sees too come from the machine (other load), not from the link.

    .venv/bin/python bench/outage.py            # 60 s outage
    .venv/bin/python bench/outage.py --quick    # 10 s outage
    .venv/bin/python bench/outage.py --full     # 10 min outage

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from _jsonline import print_json_line  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edge_runtime.core.image import ProcessImage  # noqa: E402
from edge_runtime.core.points import Quality, Sample  # noqa: E402
from edge_runtime.core.stats import percentile  # noqa: E402
from edge_runtime.federation.link import NodeLink  # noqa: E402
from edge_runtime.federation.mqtt import MqttClient  # noqa: E402
from edge_runtime.node import Node  # noqa: E402
from tests.mosquitto import Broker, Inbox  # noqa: E402
from tests.test_link_state import COUNTER, Telemetry, make_node, topics  # noqa: E402

T = topics()
BASELINE_TOPIC = "bench/baseline/counter"


class StoppableCounter:
    """One new input sample per scan, 0, 1, 2, ... (as tests.test_link_state.Counter), until
    stop(): then no new sample, so the last one produced is known exactly."""

    name = "counter"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.n = 0  # samples produced: values 0 .. n - 1
        self.running = True

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        if self.running:
            # the live table, as a driver writes it: the next scan latches it
            self.node.live[COUNTER] = Sample(float(self.n), Quality.GOOD,
                                             self.node.clock.wall())
            self.n += 1


class BarePublisher:
    """The baseline: a 10 Hz counter published at QoS 0 by plain paho, no outbox."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="baseline",
                                  protocol=paho.MQTTv5)
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(max(0.0, t0 + self.sent * 0.1 - time.monotonic())):
            self.client.publish(BASELINE_TOPIC, str(self.sent).encode(), qos=0)
            self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.disconnect()
        self.client.loop_stop()


async def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout} s")
        await asyncio.sleep(0.05)


async def control_node(seconds: float) -> dict[str, Any]:
    """The same node without a link, for `seconds`: its scan overruns and lateness."""
    with tempfile.TemporaryDirectory() as tmp:
        node = make_node(Path(tmp), period_ms=100.0)
        await node.run(seconds)
    late = sorted(node.engine.stats.jitter_recent)
    return {"scan_overruns": node.engine.stats.overruns, "scans": node.engine.stats.cycles,
            "scan_start_late_p99_ms": round(percentile(late, 99) * 1000, 3) if late else None,
            "scan_start_late_max_ms": round(late[-1] * 1000, 3) if late else None}


async def run(outage_s: float, live_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker(work / "broker", persistence=True)
        broker.start()
        cfg = broker.mqtt_config(state_dir=work / "state", reconnect_max_s=2.0)
        inbox = Inbox()
        receiver = MqttClient(cfg, client_id="receiver", on_message=inbox, clean_start=False,
                              session_expiry_s=3600)
        receiver.subscribe(T.telemetry, qos=1)
        receiver.subscribe(BASELINE_TOPIC, qos=0)
        receiver.start()
        await receiver.wait_subscribed(10)
        node = make_node(work, period_ms=100.0)
        counter = StoppableCounter(node)
        node.engine.blocks[-1] = counter  # in place of make_node's counter
        link = NodeLink(node, cfg)
        tasks = [asyncio.create_task(link.run())]
        baseline = BarePublisher(broker.port)
        try:
            # the recorder first, then the first scan: every sample is offered to telemetry
            await wait(lambda: link.recorder in node.engine.observers, 10, "recorder attached")
            tasks.insert(0, asyncio.create_task(node.run()))
            await wait(lambda: link.get_status()["online"], 10, "link online")
            await asyncio.sleep(live_s)
            stats = node.engine.stats
            over0, cycles0 = stats.overruns, stats.cycles
            stats.jitter_recent.clear()
            print(f"killing the broker for {outage_s:g} s ...", flush=True)
            control = subprocess.Popen([sys.executable, __file__, "--control", str(outage_s)],
                                       stdout=subprocess.PIPE, text=True)
            broker.kill()
            t_kill = time.monotonic()
            peak = 0
            while time.monotonic() - t_kill < outage_s:
                await asyncio.sleep(0.5)
                peak = max(peak, link.outbox.count())
            overruns = stats.overruns - over0
            assert control.stdout is not None
            control_result = json.loads(
                (await asyncio.to_thread(control.communicate, None, 60))[0].splitlines()[-1])
            cycles = stats.cycles - cycles0
            late = sorted(stats.jitter_recent)
            broker.start()
            t_up = time.monotonic()
            await wait(lambda: link.get_status()["online"] and link.outbox.count() == 0,
                       60 + outage_s, "replay done")
            replay_s = time.monotonic() - t_up
            await asyncio.sleep(live_s)
            counter.running = False
            produced = counter.n
            baseline.stop()
            # the last value is latched by the next scan and recorded; allow it 20 s to arrive,
            # then count whatever did not as lost (no exception: a loss is a figure)
            with contextlib.suppress(TimeoutError):
                await wait(lambda: float(produced - 1) in set(_counter_values(inbox)), 20,
                           "the last sample")
        finally:
            for t in reversed(tasks):
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)
            await receiver.stop()
            broker.kill()
    values = _counter_values(inbox)
    unique = list(dict.fromkeys(values))
    expected = {float(v) for v in range(produced)}  # first sample produced to the last
    lost = len(expected - set(unique))
    base_got = {int(m.payload) for m in inbox.on(BASELINE_TOPIC)}
    base_lost = len(set(range(baseline.sent)) - base_got)
    tele = Telemetry(inbox, T.telemetry)
    return {
        "outage_s": outage_s,
        "ours": {
            "samples_produced": produced, "samples_lost": lost,
            "first_lost": min(expected - set(unique), default=None),
            "last_lost": max(expected - set(unique), default=None),
            "unexpected_values": len(set(unique) - expected),
            "duplicates": len(values) - len(unique),
            "order_kept": unique == sorted(unique),
            "historical_batches": sum(b.historical for b in tele.batches),
            "scan_overruns_during_outage": overruns, "scans_during_outage": cycles,
            "scan_start_late_p99_ms": round(percentile(late, 99) * 1000, 3) if late else None,
            "scan_start_late_max_ms": round(late[-1] * 1000, 3) if late else None,
            "replay_s": round(replay_s, 2), "outbox_peak_messages": peak,
        },
        "baseline_bare_paho_qos0": {"samples_sent": baseline.sent,
                                    "samples_lost": base_lost},
        "control_node_without_link": control_result,
    }


def _counter_values(inbox: Inbox) -> list[float]:
    return Telemetry(inbox, T.telemetry).counter_values()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="10 s outage")
    mode.add_argument("--full", action="store_true", help="10 min outage")
    parser.add_argument("--outage", type=float, help="outage in seconds (overrides the mode)")
    parser.add_argument("--control", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.control:
        print_json_line(asyncio.run(control_node(args.control)))
        return
    outage = args.outage or (10.0 if args.quick else 600.0 if args.full else 60.0)
    result = asyncio.run(run(outage, live_s=2.0 if args.quick else 5.0))
    ours = result["ours"]
    print(f"ours: {ours}")
    print(f"baseline (bare paho, QoS 0, no outbox): {result['baseline_bare_paho_qos0']}")
    print(f"control node without link, own process: {result['control_node_without_link']}")
    result["targets_met"] = (ours["samples_lost"] == 0 and ours["order_kept"]
                             and ours["unexpected_values"] == 0
                             and ours["scan_overruns_during_outage"] == 0)
    print_json_line(result)


if __name__ == "__main__":
    main()
