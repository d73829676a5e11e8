"""The link's sans-IO parts: the scan recorder, batch splitting, command parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.core.commands import ReleaseOutput, SetOutput
from edge_runtime.core.points import NEVER_READ, Quality, Sample
from edge_runtime.federation.inbound import Invalid, Rebirth, parse_command
from edge_runtime.federation.recorder import MAX_OFFSET_MS, TelemetryRecorder, split_batches
from edge_runtime.federation.state import point_list
from edge_runtime.messages.telemetry import decode_batch, encode_batch
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
