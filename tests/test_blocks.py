"""Request planner golden tests: read merging, gaps, limits, tables, block decode, FC16 merging."""

from __future__ import annotations

import itertools
import random

import pytest

from edge_runtime.config.codec import CodecError, DataType, Encoding, decode, encode
from edge_runtime.config.schema import Access, PointSpec, Table
from edge_runtime.io.blocks import (
    OutputSchedule,
    WriteBlock,
    WriteItem,
    minimum_requests,
    plan_reads,
    plan_writes,
)


def pt(name: str, address: int, dtype: str = "uint16", *, table: Table = Table.HOLDING,
       access: Access = Access.R, **enc: float | bool) -> PointSpec:
    """A point with a given type and encoding options."""
    return PointSpec(name=name, table=table, address=address,
                     encoding=Encoding(DataType.from_name(dtype), **enc),  # type: ignore[arg-type]
                     access=access)


def shape(points: list[PointSpec], max_gap: int) -> list[tuple[str, int, int, tuple[str, ...]]]:
    """Plan as comparable tuples: (table, start, count, names)."""
    return [(b.table.value, b.start, b.count, b.names) for b in plan_reads(points, max_gap=max_gap)]


def test_adjacent_points_merge_into_one_block() -> None:
    points = [pt("a", 0), pt("b", 1, "float32"), pt("c", 3, "int32"), pt("d", 5)]
    assert shape(points, max_gap=0) == [("holding", 0, 6, ("a", "b", "c", "d"))]


def test_block_points_carry_offsets() -> None:
    (block,) = plan_reads([pt("x", 10), pt("y", 12, "float32")], max_gap=1)
    assert [(bp.spec.name, bp.offset) for bp in block.points] == [("x", 0), ("y", 2)]
    assert block.end == 14


def test_gap_bridged_up_to_max_gap_inclusive() -> None:
    points = [pt("a", 0), pt("b", 5)]  # 4 unused registers between them
    assert shape(points, max_gap=4) == [("holding", 0, 6, ("a", "b"))]
    assert shape(points, max_gap=3) == [("holding", 0, 1, ("a",)), ("holding", 5, 1, ("b",))]


def test_unsorted_input_is_sorted_by_address() -> None:
    points = [pt("c", 2), pt("a", 0), pt("b", 1)]
    assert shape(points, max_gap=0) == [("holding", 0, 3, ("a", "b", "c"))]


def test_125_register_limit() -> None:
    points = [pt(f"p{i}", i) for i in range(130)]
    plan = plan_reads(points, max_gap=0)
    assert [(b.start, b.count) for b in plan] == [(0, 125), (125, 5)]


def test_32bit_point_is_never_split_across_blocks() -> None:
    points = [pt(f"p{i}", i) for i in range(124)] + [pt("f", 124, "float32")]
    plan = plan_reads(points, max_gap=0)
    assert [(b.start, b.count) for b in plan] == [(0, 124), (124, 2)]
    assert plan[1].names == ("f",)
    # Ending exactly at register 125 still fits.
    fits = [pt(f"p{i}", i) for i in range(123)] + [pt("f", 123, "float32")]
    assert [(b.start, b.count) for b in plan_reads(fits, max_gap=0)] == [(0, 125)]


def test_two_tables_planned_separately_and_outputs_not_read() -> None:
    points = [
        pt("h0", 0), pt("h1", 1),
        pt("i0", 0, table=Table.INPUT), pt("i1", 1, "float32", table=Table.INPUT),
        pt("w", 2, access=Access.W), pt("rw", 3, access=Access.RW),
    ]
    assert shape(points, max_gap=0) == [
        ("holding", 0, 2, ("h0", "h1")),
        ("holding", 3, 1, ("rw",)),
        ("input", 0, 3, ("i0", "i1")),
    ]


def test_minimum_requests_bridges_any_gap() -> None:
    points = [pt("a", 0), pt("b", 100), pt("c", 0, table=Table.INPUT)]
    assert len(plan_reads(points, max_gap=0)) == 3
    assert minimum_requests(points) == 2
    assert minimum_requests([pt("a", 0), pt("b", 200)]) == 2  # 201 registers > 125


def _optimal(points: list[PointSpec], max_gap: int) -> int:
    """Brute force: fewest contiguous runs of sorted points that each form a legal block."""
    pts = sorted(points, key=lambda p: p.address)
    best = [0] + [10**9] * len(pts)
    for j in range(1, len(pts) + 1):
        for i in range(j):
            run = pts[i:j]
            ok = run[-1].end - run[0].address <= 125 and all(
                b.address - a.end <= max_gap for a, b in itertools.pairwise(run))
            if ok:
                best[j] = min(best[j], best[i] + 1)
    return best[-1]


@pytest.mark.parametrize("seed", range(40))
def test_random_layouts_are_optimal_and_cover_every_point(seed: int) -> None:
    rng = random.Random(seed)
    points, addr = [], rng.randrange(0, 50)
    for i in range(rng.randrange(1, 60)):
        dtype = rng.choice(["uint16", "int16", "float32", "int32"])
        points.append(pt(f"p{i}", addr, dtype))
        addr += DataType.from_name(dtype).count + rng.choice([0, 0, 0, 1, 3, 10, 40])
    max_gap = rng.choice([0, 2, 10, 50])
    plan = plan_reads(points, max_gap=max_gap)
    assert sorted(n for b in plan for n in b.names) == sorted(p.name for p in points)
    for b in plan:
        assert 1 <= b.count <= 125
        assert all(b.start <= bp.spec.address and bp.spec.end <= b.end for bp in b.points)
    assert len(plan) == _optimal(points, max_gap)


ENCODINGS = [
    Encoding(dtype, scale=scale, offset=offset, byte_swap=bs, word_swap=ws)
    for dtype in DataType
    for bs in (False, True)
    for ws in (False, True)
    for scale, offset in ((1.0, 0.0), (0.1, -40.0))
]


def test_block_decode_equals_codec_for_every_encoding() -> None:
    rng = random.Random(7)
    points, addr = [], 3
    for i, enc in enumerate(ENCODINGS):
        points.append(PointSpec(f"p{i}", Table.HOLDING, addr, enc, Access.R))
        addr += enc.count + (i % 3)  # some gaps inside the block
    for _ in range(50):
        words = {a: rng.randrange(0, 65536) for a in range(addr)}
        for block in plan_reads(points, max_gap=2):
            got = block.decode([words[a] for a in range(block.start, block.end)])
            for bp in block.points:
                p = bp.spec
                want = decode([words[a] for a in range(p.address, p.end)], p.encoding)
                assert got[p.name] == want or (want != want and got[p.name] != got[p.name])


def test_block_decode_golden_vectors() -> None:
    points = [
        pt("flow", 0, "float32", word_swap=True),
        pt("energy", 2, "int32"),
        pt("temp", 4, "uint16", scale=0.1),
        pt("dp", 5, "int16", scale=0.01, offset=1.0),
    ]
    (block,) = plan_reads(points, max_gap=0)
    words = [0x0000, 0x4060, 0xFFFF, 0xFFFE, 1234, 0xFF9C]
    assert block.decode(words) == pytest.approx(
        {"flow": 3.5, "energy": -2, "temp": 123.4, "dp": 0.0})
    assert isinstance(block.decode(words)["energy"], int)
    assert encode(3.5, points[0].encoding) == words[0:2]


def test_block_decode_rejects_malformed_words() -> None:
    (block,) = plan_reads([pt("a", 0), pt("b", 1)], max_gap=0)
    with pytest.raises(CodecError, match="needs 2 registers, got 1"):
        block.decode([1])
    with pytest.raises(CodecError):
        block.decode([1, 70000])


def w(name: str, address: int, *words: int) -> WriteItem:
    """Shorthand WriteItem."""
    return WriteItem(name, address, tuple(words))


def test_contiguous_writes_merge_into_one_fc16() -> None:
    items = [w("b", 1, 7, 8), w("a", 0, 5), w("c", 3, 9)]
    assert plan_writes(items) == [WriteBlock(0, (5, 7, 8, 9), ("a", "b", "c"))]


def test_writes_never_bridge_gaps() -> None:
    items = [w("a", 0, 1), w("b", 2, 2)]
    assert plan_writes(items) == [WriteBlock(0, (1,), ("a",)), WriteBlock(2, (2,), ("b",))]


def test_write_blocks_respect_123_registers_and_keep_32bit_whole() -> None:
    items = [w(f"p{i}", 2 * i, i, i) for i in range(62)]  # 124 registers, all 32-bit
    plan = plan_writes(items)
    assert [(b.start, len(b.words)) for b in plan] == [(0, 122), (122, 2)]


def test_overlapping_writes_refused() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        plan_writes([w("a", 0, 1, 2), w("b", 1, 3)])


def test_plan_writes_empty() -> None:
    assert plan_writes([]) == []


def out(name: str, address: int, dtype: str = "uint16", *, hold: float | None = 1.0,
        failsafe: float | None = 0.0, lo: float | None = 0.0, hi: float | None = 100.0,
        scale: float = 1.0) -> PointSpec:
    """An output point."""
    return PointSpec(name=name, table=Table.HOLDING, address=address,
                     encoding=Encoding(DataType.from_name(dtype), scale=scale), access=Access.W,
                     minimum=lo, maximum=hi, failsafe=failsafe, max_hold_s=hold)


def due(s: OutputSchedule, now: float) -> dict[str, tuple[int, ...]]:
    """Writes due at `now`, acknowledged as if the device accepted them all."""
    items = s.due(now)
    s.acknowledged(i.name for i in items)
    s.finished(now, True, retry_s=0.1)
    return {i.name: i.words for i in items}


def test_schedule_writes_nothing_before_the_first_stage() -> None:
    s = OutputSchedule("d", [out("a", 0)], refresh_s=1.0)
    assert s.due(100.0) == [] and s.next_wake() == float("inf")


def test_schedule_writes_changes_only_then_refreshes_everything() -> None:
    s = OutputSchedule("d", [out("a", 0), out("b", 1, scale=0.1)], refresh_s=1.0)
    assert s.stage({"a": 5.0, "b": 2.5}, 0.0) is True
    assert due(s, 0.0) == {"a": (5,), "b": (25,)}
    assert s.stage({"a": 5.0, "b": 2.5}, 0.1) is False  # unchanged: no wake-up
    assert s.stage({"a": 6.0, "b": 2.5}, 0.2) is True
    assert due(s, 0.2) == {"a": (6,)}
    assert s.next_wake() == pytest.approx(1.0)  # the refresh (hold expiry is later: 1.2)
    assert due(s, 1.0) == {"a": (6,), "b": (25,)}


def test_schedule_failed_write_retries_and_keeps_unacknowledged_dirty() -> None:
    s = OutputSchedule("d", [out("a", 0)], refresh_s=10.0)
    s.stage({"a": 1.0}, 0.0)
    assert [i.name for i in s.due(0.0)] == ["a"]
    s.finished(0.0, False, retry_s=0.1)
    assert s.next_wake() == pytest.approx(0.1)
    assert due(s, 0.1) == {"a": (1,)}
    assert due(s, 0.2) == {}


def test_schedule_max_hold_drives_failsafe_until_staged_again() -> None:
    s = OutputSchedule("d", [out("a", 0, failsafe=7.0, hold=0.5), out("b", 1, hold=None)],
                       refresh_s=10.0)
    s.stage({"a": 50.0, "b": 3.0}, 0.0)
    due(s, 0.0)
    assert s.next_wake() == pytest.approx(0.5)
    assert due(s, 0.49) == {}
    assert due(s, 0.5) == {"a": (7,)}  # at the wake-up time itself, so the writer never spins
    assert s.held == {"a"}
    assert s.stage({"a": 50.0, "b": 3.0}, 0.6) is True  # fresh scan: leave failsafe
    assert s.held == set() and due(s, 0.6) == {"a": (50,)}


def test_schedule_hold_without_failsafe_never_busy_loops() -> None:
    s = OutputSchedule("d", [out("a", 0, failsafe=None, hold=0.5)], refresh_s=10.0)
    s.stage({"a": 1.0}, 0.0)
    due(s, 0.0)
    assert due(s, 5.0) == {}  # no failsafe to drive: the value stands
    assert s.next_wake() == pytest.approx(10.0)  # only the refresh wakes the writer


def test_schedule_refuses_bad_values_and_keeps_the_previous_one() -> None:
    s = OutputSchedule("d", [out("a", 0), out("big", 1, hi=None)], refresh_s=10.0)
    s.stage({"a": 5.0}, 0.0)
    due(s, 0.0)
    for bad in (101.0, -0.5, float("nan"), float("inf"), True, "5"):
        assert s.stage({"a": bad}, 0.1) is False  # type: ignore[dict-item]
    assert s.stage({"nope": 1.0}, 0.1) is False
    assert s.stage({"big": 70000.0}, 0.1) is False  # no max, but uint16 cannot hold it
    assert s.refused == 8 and "raw 70000" in s.last_refusal
    assert s.values == {"a": 5.0} and due(s, 0.2) == {}


def test_schedule_unencodable_failsafe_is_a_config_error() -> None:
    with pytest.raises(ValueError, match=r"d\.a: failsafe"):
        OutputSchedule("d", [out("a", 0, failsafe=-1.0, lo=None)], refresh_s=1.0)
