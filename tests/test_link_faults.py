"""Fault tests of the link: the broker killed and restarted mid-stream (no loss, in order,
through the outbox), and the node process killed with kill -9 (will published; the outbox is
replayed by the restarted process, marked historical)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.federation.config import MqttConfig
from edge_runtime.federation.state import parse_state
from tests.mosquitto import Broker
from tests.test_link_state import COUNTER, Telemetry, make_node, running, topics, watching

pytestmark = [pytest.mark.anyio]

T = topics()
ROOT = Path(__file__).resolve().parent.parent


def contiguous(values: list[float]) -> bool:
    """True if values are n, n+1, n+2, ... (in this order)."""
    return values == [values[0] + i for i in range(len(values))] if values else False


def first_seen(values: list[float]) -> list[float]:
    """At-least-once delivery may repeat what was in flight: keep first arrivals."""
    seen: set[float] = set()
    return [v for v in values if not (v in seen or seen.add(v))]  # type: ignore[func-returns-value]


@pytest.mark.timeout(60)
async def test_broker_killed_mid_stream_no_loss_in_order(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", persistence=True)
    broker.start()
    try:
        cfg = broker.mqtt_config(state_dir=tmp_path / "state")
        # The ingest side keeps its session at the broker (persisted), as a site would, so
        # what the node replays before the watcher is back is queued for it.
        async with watching(cfg, T.telemetry, clean_start=False,
                            session_expiry_s=3600) as inbox:
            node = make_node(tmp_path)
            async with running(node, cfg) as link:
                await inbox.wait_until(lambda b: len(Telemetry(b, T.telemetry).batches) >= 5)
                broker.kill()
                await inbox.wait_until(lambda _: link.outbox.count() >= 10,
                                       what="10 batches stored while the broker is down")
                assert not link.get_status()["online"]
                broker.start()
                await inbox.wait_until(lambda b: any(x.session == 2 and not x.historical
                                                     for x in Telemetry(b, T.telemetry).batches),
                                       timeout=15, what="live batches after the replay")
                stats = link.get_status()
                overruns = node.engine.stats.overruns
        tele = Telemetry(inbox, T.telemetry)
        values = first_seen(tele.counter_values())
        assert contiguous(values), values
        assert stats["replayed"] >= 10
        historical = [b for b in tele.batches if b.historical]
        assert historical and all(b.session == 2 for b in historical)
        # The replay comes before the new session's live batches, seq numbers run on.
        second = [b for b in tele.batches if b.session == 2]
        assert [b.seq for b in second] == list(range(len(second)))
        first_live = next(i for i, b in enumerate(second) if not b.historical)
        assert all(b.historical for b in second[:first_live])
        assert stats["outbox"]["dropped_telemetry"] == 0
        assert overruns <= 2, f"{overruns} scan overruns (CPU shared with other agents?)"
    finally:
        broker.kill()


NODE_SCRIPT = """
import asyncio, dataclasses, json, sys
from pathlib import Path
from edge_runtime.federation.config import MqttConfig
from edge_runtime.federation.link import NodeLink
from tests.test_link_state import make_node

args = json.loads(sys.argv[1])
cfg = MqttConfig(**{**args["cfg"], "state_dir": Path(args["cfg"]["state_dir"])})

async def main():
    node = make_node(Path(args["dir"]))
    link = NodeLink(node, cfg)
    tasks = [asyncio.create_task(node.run()), asyncio.create_task(link.run())]
    last = None
    while True:
        await asyncio.sleep(0.05)
        if link._outbox is not None and link.outbox.count() != last:
            last = link.outbox.count()
            print(f"stored {last} online {int(link.get_status()['online'])}", flush=True)

asyncio.run(main())
"""


class NodeProcess:
    """The link test node in its own Python process, so it can be killed with SIGKILL."""

    def __init__(self, tmp_path: Path, cfg: MqttConfig) -> None:
        script = tmp_path / "node_proc.py"
        script.write_text(NODE_SCRIPT)
        plain = {k: str(v) if isinstance(v, Path) else v
                 for k, v in dataclasses.asdict(cfg).items()}
        arg = json.dumps({"cfg": plain, "dir": str(tmp_path)})
        self.proc = subprocess.Popen([sys.executable, str(script), arg], cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)},
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.stored = 0

    async def wait_stored(self, n: int, timeout: float = 15.0) -> None:
        """Wait until the process reports at least n messages in its outbox."""
        assert self.proc.stdout is not None
        stdout = self.proc.stdout

        async def _read() -> None:
            while self.stored < n:
                line = await asyncio.to_thread(stdout.readline)
                if not line:
                    raise RuntimeError(f"node process exited with {self.proc.wait()}")
                self.stored = int(line.split()[1])
        await asyncio.wait_for(_read(), timeout)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.mark.timeout(60)
async def test_node_kill9_will_and_outbox_replay(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    cfg = broker.mqtt_config(state_dir=tmp_path / "state")
    procs: list[NodeProcess] = []
    try:
        async with watching(cfg, T.state, T.telemetry) as inbox:
            a = NodeProcess(tmp_path, cfg)
            procs.append(a)
            await inbox.wait_until(lambda b: len(Telemetry(b, T.telemetry).batches) >= 3,
                                   timeout=15, what="node A streaming")
            broker.kill()
            await a.wait_stored(20)  # 20 batches only on A's disk
            a.kill9()
            broker.start()
        async with watching(cfg, T.state, T.telemetry, client_id="watcher-2") as after:
            b = NodeProcess(tmp_path, cfg)
            procs.append(b)
            await after.wait_until(lambda x: any(not y.historical for y in
                                                 Telemetry(x, T.telemetry).batches),
                                   timeout=15, what="node B live after its replay")
            b.kill9()  # with the broker up: the will is published
            await after.wait_until(lambda x: not parse_state(x.on(T.state)[-1].payload).online,
                                   what="retained offline state")
        before = Telemetry(inbox, T.telemetry)
        replay = Telemetry(after, T.telemetry)
        states = [parse_state(m.payload) for m in after.on(T.state)]
        assert [(s.online, s.session) for s in states] == [(True, 2), (False, 2)]
        assert states[-1].reason == "connection lost"
        live_a = before.counter_values(historical=False)
        replayed = replay.counter_values(historical=True)
        assert len(replayed) >= 20 * 4  # 20 batches of about 5 samples
        assert all(x.session == 2 for x in replay.batches)
        assert contiguous(first_seen(live_a + replayed)), (live_a, replayed)
        live_b = replay.counter_values(historical=False)
        assert contiguous(live_b) and live_b[0] < replayed[0]  # B counts from 0 again
        assert COUNTER in {p.name for p in replay.births[2].points}
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.kill9()
        broker.kill()
