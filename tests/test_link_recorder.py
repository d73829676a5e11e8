"""The link's sans-IO parts: the scan recorder, batch splitting, command parsing."""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import pytest

from edge_runtime.core.commands import ReleaseOutput, SetOutput
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import NEVER_READ, Quality, Sample
from edge_runtime.federation.inbound import Invalid, Rebirth, parse_command
from edge_runtime.federation.recorder import (
    MAX_OFFSET_MS,
    TelemetryRecorder,
    encode_batches,
    split_batches,
)
from edge_runtime.federation.state import point_list
from edge_runtime.messages.telemetry import PointDef, decode_batch, encode_batch
from tests.fakes import device, load_map, write_io_map
from tests.test_link_state import make_node


def test_recorder_keeps_new_samples_and_changed_outputs_only(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    image = node.image
    points = point_list(image.inputs_info, image.outputs_info)
    wall = [1000.0]  # the scan's wall time
    rec = TelemetryRecorder(points, image.inputs_info, lambda: wall[0])
    alias = {p.name: p.alias for p in points}
    image.latch()
    rec.step(image, 0.0, 0.1)  # nothing read yet: inputs skipped, the output's first value
    assert [(a, s.value) for a, s in rec.take()] == [(alias["pump1.speed_ref"], 100.0)]
    node.live["pump1.flow"] = Sample(12.5, Quality.GOOD, 500.0)
    image.latch()
    rec.step(image, 0.1, 0.1)
    rec.step(image, 0.2, 0.1)  # same latched sample, same output: nothing new
    image.write("pump1.speed_ref", 40.0)
    wall[0] = 1003.0
    rec.step(image, 0.3, 0.1)
    got = [(a, s.value, s.ts) for a, s in rec.take()]
    assert got == [(alias["pump1.flow"], 12.5, 500.0), (alias["pump1.speed_ref"], 40.0, 1003.0)]
    assert NEVER_READ.ts == 0  # why the recorder skips ts <= 0


def test_recorder_bounded_when_nobody_takes(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    points = point_list(node.image.inputs_info, node.image.outputs_info)
    rec = TelemetryRecorder(points, node.image.inputs_info, lambda: 1.0, max_pending=5)
    for i in range(10):
        node.live["pump1.flow"] = Sample(float(i), Quality.GOOD, 10.0 + i)
        node.image.latch()
        rec.step(node.image, i, 0.1)
    kept = list(rec.take())
    assert len(kept) == 5 and rec.dropped > 0
    assert kept[-1][1].value == 9.0  # the newest are kept


def test_split_batches_bounds_size_and_offsets() -> None:
    samples = [(0, Sample(float(i), Quality.GOOD, 1000.0 + i * 0.001)) for i in range(2500)]
    # past a uint32 of ms from the third batch's base (1002.0 s): needs a batch of its own
    samples.append((1, Sample(1.0, Quality.BAD, 1002.0 + (MAX_OFFSET_MS + 10) / 1000)))
    batches = list(split_batches(samples, session=4, first_seq=7, max_samples=1000))
    assert [len(b.samples) for b in batches] == [1000, 1000, 500, 1]
    assert [b.seq for b in batches] == [7, 8, 9, 10] and {b.session for b in batches} == {4}
    for b in batches:  # every batch encodes and round-trips
        assert decode_batch(encode_batch(b)) == b


MANY_POINTS = "[device]\nmodel = \"many\"\n" + "".join(
    f"[points.in{i}]\ntable = \"input\"\naddress = {2 * i}\ntype = \"float32\"\nunit = \"kW\"\n"
    for i in range(12)) + "".join(
    f"[points.out{i}]\naddress = {i}\ntype = \"uint16\"\naccess = \"{a}\"\nscale = 0.01\n"
    f"unit = \"%\"\nmin = 0.0\nmax = 100.0\nfailsafe = 0.0\nmax_hold_s = 2.0\n"
    f"class = \"setpoint\"\n"
    for i, a in enumerate(["w", "w", "w", "rw"]))


class NaiveRecorder:
    """The recorder's rule, one point at a time: a new input Sample object (read at least
    once), an output whose value or quality changed, stamped with the scan's wall time."""

    def __init__(self, points: tuple[PointDef, ...], inputs: Iterable[str]) -> None:
        self.alias = {p.name: p.alias for p in points}
        self.inputs = set(inputs)
        self.last_in: dict[str, Sample] = {}
        self.last_out: dict[str, tuple[float, Quality]] = {}
        self.kept: list[tuple[int, float | None, Quality, float]] = []

    def step(self, image: ProcessImage, wall: float) -> None:
        for name in self.inputs:
            s = image.inputs[name]
            if s is not self.last_in.get(name) and s.ts > 0:
                self.last_in[name] = s
                self.kept.append((self.alias[name], s.value, s.quality, s.ts))
        for name, value in image.outputs.items():
            now = (value, image.output_quality.get(name, Quality.GOOD))
            if name not in self.inputs and self.last_out.get(name) != now:
                self.last_out[name] = now
                self.kept.append((self.alias[name], value, now[1], wall))


def test_recorder_keeps_what_a_point_by_point_check_keeps(tmp_path: Path) -> None:
    """Random scans: new samples on random inputs (some never read), outputs and their
    qualities changed, a key the image does not know appearing in the drivers' table,
    scans the recorder skips. It keeps exactly what the naive rule keeps."""
    dev = device(load_map(write_io_map(tmp_path, "many", MANY_POINTS)), name="d")
    live: dict[str, Sample] = {}
    image = ProcessImage([dev], live)
    points = point_list(image.inputs_info, image.outputs_info)
    wall = [1000.0]
    rec = TelemetryRecorder(points, image.inputs_info, lambda: wall[0])
    naive = NaiveRecorder(points, image.inputs_info)
    rng = random.Random(3)
    outs = [n for n in image.outputs_info if n not in image.inputs_info]
    for scan in range(600):
        wall[0] += 0.01
        for name in rng.sample(sorted(image.inputs_info), rng.randrange(5)):
            live[name] = Sample(rng.random(), rng.choice(list(Quality)),
                                0.0 if rng.random() < 0.1 else wall[0] - 0.003)
        if rng.random() < 0.01:
            live[f"d.unknown{scan}"] = Sample(1.0, Quality.GOOD, wall[0])
        image.latch()
        for name in rng.sample(outs, rng.randrange(3)):
            image.write(name, rng.choice([0.0, 50.0, rng.uniform(0, 100)]))
        if rng.random() < 0.05:
            image.output_quality[rng.choice(outs)] = rng.choice(list(Quality))
        if rng.random() < 0.03:
            continue  # a scan the recorder did not see: the next one still finds the change
        rec.step(image, scan, 0.01)
        naive.step(image, wall[0])
        if scan % 7 == 0:
            got = sorted((a, s.value, s.quality, s.ts) for a, s in rec.take())
            assert got == sorted(naive.kept)
            naive.kept.clear()


def test_encode_batches_round_trip_bounded_and_in_order_per_point() -> None:
    """Polls interleave: samples come in out of time order across points, in order for
    each point (a driver stamps its polls in time)."""
    rng = random.Random(9)
    last = dict.fromkeys(range(50), 1.7e9)
    samples = []
    for i in range(2345):
        alias = rng.randrange(50)
        last[alias] += rng.uniform(0.0, 0.05)
        samples.append((alias, Sample(float(i), Quality.GOOD, last[alias])))
    batches = list(encode_batches(samples, session=2, first_seq=5, max_samples=400))
    decoded = [decode_batch(b.payload) for b in batches]
    assert [b.samples for b in batches] == [len(d.samples) for d in decoded]
    assert all(b.samples <= 400 for b in batches) and [d.seq for d in decoded] == list(
        range(5, 5 + len(batches)))
    got = [(s.alias, s.to_sample(d.base_ms)) for d in decoded for s in d.samples]
    assert sorted((a, s.value) for a, s in got) == sorted((a, s.value) for a, s in samples)
    for d in decoded:  # each batch in time order
        offsets = [s.offset_ms for s in d.samples]
        assert offsets == sorted(offsets)
    for alias in range(50):  # a point's samples in the order they were recorded
        mine = [s.value for a, s in got if a == alias]
        assert mine == [s.value for a, s in samples if a == alias]


def test_a_sample_the_codec_refuses_is_dropped_not_its_batch(
        caplog: pytest.LogCaptureFixture) -> None:
    """A driver's bad value (a bool here) costs that sample and one error line; the batch
    with the other samples is still encoded, so the link never loses a whole batch to it."""
    good = [(i, Sample(float(i), Quality.GOOD, 1.7e9 + i)) for i in range(5)]
    bad = (9, Sample(True, Quality.GOOD, 1.7e9 + 2.5))  # type: ignore[arg-type]
    [batch] = encode_batches([*good[:3], bad, *good[3:]], session=1, first_seq=0)
    assert batch.samples == 5
    assert [s.alias for s in decode_batch(batch.payload).samples] == [0, 1, 2, 3, 4]
    assert "alias 9 dropped" in caplog.text and "value must be a number" in caplog.text


IMAGE_ARGS = {"max_bytes": 1024}


@pytest.mark.parametrize("payload, expected", [
    (b'{"PSWD_version": "1.0", "timestamp": "2026-01-01T00:00:00Z", "action": "set_output",'
     b' "point": "pump1.speed_ref", "value": 30}', SetOutput("pump1.speed_ref", 30.0,
                                                              "mqtt.thermal_control")),
    (b'{"PSWD_version": "1.0", "timestamp": "2026-01-01T00:00:00Z", '
     b'"action": "release_output", "point": "pump1.speed_ref"}',
     ReleaseOutput("pump1.speed_ref", "mqtt.thermal_control")),
])
def test_parse_control_commands(tmp_path: Path, payload: bytes, expected: object) -> None:
    image = make_node(tmp_path).image
    assert parse_command("thermal_control", payload, retain=False, image=image,
                         **IMAGE_ARGS) == expected


def test_parse_rebirth_and_signature_hook(tmp_path: Path) -> None:
    image = make_node(tmp_path).image
    assert parse_command("rebirth", b"", retain=False, image=image, **IMAGE_ARGS) == Rebirth()
    assert parse_command("rebirth", b"{}", retain=False, image=image, **IMAGE_ARGS) == Rebirth()
    body = (b'{"PSWD_version": "1.0", "timestamp": "2026-01-01T00:00:00Z", "action": '
            b'"set_output", "point": "pump1.speed_ref", "value": 30, "signature": "00"}')
    with pytest.raises(Invalid) as err:
        parse_command("grid_signal", body, retain=False, image=image,
                      verify=lambda kind, doc: f"bad signature on {kind}", **IMAGE_ARGS)
    assert (err.value.category, err.value.field) == ("refused", "signature")
    assert "grid_signal" in err.value.reason


def test_resequence_equals_a_fresh_encoding() -> None:
    import dataclasses
    import random

    from edge_runtime.federation.recorder import resequence
    from edge_runtime.messages.telemetry import make_batch
    rng = random.Random(7)
    for _ in range(200):
        samples = [(rng.randrange(65536),
                    Sample(rng.choice([None, rng.uniform(-1e9, 1e9), 0.5]), q,
                           1.7e9 + rng.uniform(0, 1e3)))
                   for q in rng.choices(list(Quality), k=rng.randrange(40))]
        samples = [(a, s) for a, s in samples if s.value is not None or s.quality != Quality.GOOD]
        batch = make_batch(samples, session=rng.randrange(2**64), seq=rng.randrange(2**64),
                           historical=rng.random() < 0.5)
        session, seq = rng.randrange(2**64), rng.choice([0, 23, 24, 255, 256, 2**32, 2**64 - 1])
        historical = rng.random() < 0.5
        assert resequence(encode_batch(batch), session=session, seq=seq,
                          historical=historical) == encode_batch(
            dataclasses.replace(batch, session=session, seq=seq, historical=historical))
    with pytest.raises(ValueError):
        resequence(b"\xa2\x00\x01", session=1, seq=1, historical=False)
