"""Clock offset: chrony and linuxptp status, NTP-style estimate, the ±1 ms uncertainty flag."""

from __future__ import annotations

import pytest

from edge_runtime.federation.timesync import (
    CHRONY_CMD,
    PMC_CMD,
    OffsetEstimator,
    RoundTrip,
    clock_status,
    estimate_over_mqtt,
    parse_chronyc_tracking,
    parse_pmc_time_status,
    parse_time_reply,
    parse_time_request,
    run_command,
    system_clock_status,
    time_reply,
    time_reply_topic,
    time_request,
    time_request_topic,
)

CHRONY_SYNCED = """Reference ID    : C0A80001 (192.168.0.1)
Stratum         : 3
Ref time (UTC)  : Thu Nov 26 23:40:12 2026
System time     : 0.000012345 seconds slow of NTP time
Last offset     : -0.000006747 seconds
RMS offset      : 0.000035822 seconds
Frequency       : 3.225 ppm slow
Residual freq   : -0.000 ppm
Skew            : 0.129 ppm
Root delay      : 0.000400000 seconds
Root dispersion : 0.000100000 seconds
Update interval : 64.9 seconds
Leap status     : Normal
"""

CHRONY_UNSYNCED = CHRONY_SYNCED.replace("Normal", "Not synchronised").replace(
    "0.000012345 seconds slow", "0.003000000 seconds fast")

PMC_OUT = """sending: GET TIME_STATUS_NP
        90e2ba.fffe.20c7f8-0 seq 0 RESPONSE MANAGEMENT TIME_STATUS_NP
                master_offset              -310
                ingress_time               1361545089345029441
                cumulativeScaledRateOffset   +1.000000000
                scaledLastGmPhaseChange    0
                gmTimeBaseIndicator        0
                lastGmPhaseChange          0x0000'0000000000000000.0000
                gmPresent                  true
                gmIdentity                 00a069.fffe.0b552d
"""


def test_chrony_tracking_parsed() -> None:
    s = parse_chronyc_tracking(CHRONY_SYNCED)
    assert s is not None and s.source == "chrony" and s.synchronised
    assert s.offset_s == pytest.approx(-12.345e-6)  # slow: this clock is behind
    assert s.error_bound_s == pytest.approx(12.345e-6 + 0.0002 + 0.0001)
    assert not s.uncertain
    bad = parse_chronyc_tracking(CHRONY_UNSYNCED)
    assert bad is not None and bad.offset_s == pytest.approx(0.003)
    assert not bad.synchronised and bad.uncertain
    assert parse_chronyc_tracking("506 Cannot talk to daemon") is None


def test_pmc_time_status_parsed() -> None:
    s = parse_pmc_time_status(PMC_OUT)
    assert s is not None and s.source == "ptp" and s.offset_s == pytest.approx(-310e-9)
    assert s.synchronised and not s.uncertain and "00a069.fffe.0b552d" in s.detail
    lost = parse_pmc_time_status(PMC_OUT.replace("gmPresent                  true",
                                                 "gmPresent                  false"))
    assert lost is not None and not lost.synchronised and lost.uncertain
    assert parse_pmc_time_status("") is None


def test_round_trip_arithmetic() -> None:
    # node clock 2 ms ahead of the site; 0.3 ms out, 0.5 ms back, site holds it 0.1 ms
    true_send = 100.0
    trip = RoundTrip(t1=true_send + 0.002, t2=true_send + 0.0003, t3=true_send + 0.0004,
                     t4=true_send + 0.0009 + 0.002)
    assert trip.delay_s == pytest.approx(0.0008)
    # the slower way back reads as the node being further ahead: half the asymmetry
    assert trip.offset_s == pytest.approx(0.002 + 0.0001)


def test_min_delay_filter_and_flag() -> None:
    est = OffsetEstimator(window=4)
    assert est.status().uncertain and est.status().offset_s is None
    offset = 0.0015  # node 1.5 ms ahead: beyond the ±1 ms of spec 5.2.2
    for k, (out, back) in enumerate([(0.004, 0.0005), (0.0002, 0.0002), (0.003, 0.001)]):
        t = 10.0 * k
        est.add(RoundTrip(t + offset, t + out, t + out + 0.0001, t + out + 0.0001 + back + offset))
    s = est.status()
    assert s.source == "mqtt" and s.offset_s == pytest.approx(offset)  # the symmetric one won
    assert s.error_bound_s == pytest.approx(0.0002)
    assert s.uncertain and s.to_dict()["timestamps_uncertain"] is True
    assert s.to_dict()["offset_ms"] == pytest.approx(1.5)
    est.add(RoundTrip(5.0, 1.0, 1.0, 4.0))  # reply before request: a stepped clock, dropped
    assert len(est) == 3


def test_wire_format_round_trip_and_errors() -> None:
    assert parse_time_request(time_request("rack-01", 12.5)) == ("rack-01", 12.5)
    trip = parse_time_reply(time_reply(1.0, 2.0, 2.5), 3.0)
    assert (trip.t1, trip.t2, trip.t3, trip.t4) == (1.0, 2.0, 2.5, 3.0)
    for raw, word in [(b"{", "(root)"), (b"[]", "(root)"), (b'{"node":1,"t1":1}', "node"),
                      (b'{"node":"a","t1":"x"}', "t1"), (b'{"node":"a","t1":true}', "t1")]:
        with pytest.raises(ValueError, match=word.replace("(", r"\(").replace(")", r"\)")):
            parse_time_request(raw)
    with pytest.raises(ValueError, match="t3"):
        parse_time_reply(b'{"t1":1,"t2":2}', 3.0)
    assert time_request_topic("demo") == "pswd/v1/demo/time/request"
    assert time_reply_topic("demo", "rack-01") == "pswd/v1/demo/rack-01/time"


class SimSite:
    """A site clock and an exchange with a known offset and delays, in simulated time."""

    def __init__(self, node_ahead_s: float, delays: list[tuple[float, float]]) -> None:
        self.true = 1000.0
        self.ahead = node_ahead_s
        self.delays = delays
        self.k = 0

    def wall(self) -> float:
        return self.true + self.ahead

    async def exchange(self, request: bytes) -> tuple[bytes, float]:
        _, t1 = parse_time_request(request)
        out, back = self.delays[self.k % len(self.delays)]
        self.k += 1
        if out < 0:
            raise TimeoutError("no reply")
        self.true += out
        t2 = self.true
        self.true += 0.0001
        t3 = self.true
        self.true += back
        return time_reply(t1, t2, t3), self.wall()


@pytest.mark.anyio
async def test_estimate_over_exchange_skips_failures() -> None:
    site = SimSite(-0.0004, [(0.002, 0.0001), (-1, 0), (0.0003, 0.0003)])
    s = await estimate_over_mqtt("rack-01", site.exchange, site.wall, rounds=6)
    assert s.offset_s == pytest.approx(-0.0004) and not s.uncertain
    assert "of 4 round trips" in s.detail


@pytest.mark.anyio
async def test_source_preference() -> None:
    calls: list[list[str]] = []

    def runner(outputs: dict[str, str | None]):  # type: ignore[no-untyped-def]
        async def run(argv: list[str]) -> str | None:
            calls.append(argv)
            return outputs.get(argv[0])
        return run

    s = await system_clock_status(runner({"chronyc": CHRONY_SYNCED, "pmc": PMC_OUT}))
    assert s is not None and s.source == "chrony" and calls == [CHRONY_CMD]
    s = await system_clock_status(runner({"chronyc": CHRONY_UNSYNCED, "pmc": PMC_OUT}))
    assert s is not None and s.source == "ptp" and calls[-1] == PMC_CMD
    assert await system_clock_status(runner({})) is None
    site = SimSite(0.003, [(0.0002, 0.0002)])
    s = await clock_status("rack-01", site.exchange, site.wall, run=runner({}), rounds=3)
    assert s.source == "mqtt" and s.uncertain and s.offset_s == pytest.approx(0.003)
    s = await clock_status("rack-01", None, site.wall, run=runner({}))
    assert s.source == "none" and s.uncertain


@pytest.mark.anyio
async def test_run_command_real_processes() -> None:
    assert await run_command(["pswd-no-such-command-xyz"]) is None
    assert await run_command(["false"]) is None
    assert (await run_command(["echo", "System time"])) == "System time\n"
