"""Modbus request planning (sans-IO): group points into as few read and write requests as allowed.

Reads: points of one table, sorted by address, are merged greedily into blocks of at most
`max_count` registers (125, the FC3/FC4 limit), bridging at most `max_gap` unused registers;
a point is never split. Greedy extension is optimal here because any sub-run of a valid block
is itself valid. Writes: contiguous registers merge into FC16 blocks of at most 123 registers;
writes never bridge gaps, since that would overwrite registers nobody asked to change.

A ReadBlock carries a decoder compiled once: at most four `struct.Struct`s over the block's
bytes (big- or little-endian, bytes as received or byte-swapped per word), so decoding a block
of 100 points costs a few C calls instead of one codec call per point. The result equals
`codec.decode` point by point (golden-tested).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from edge_runtime.config.schema import PointSpec, Table
from edge_runtime.io.codec import CodecError

MAX_READ_COUNT = 125  # FC3/FC4: registers per request
MAX_WRITE_COUNT = 123  # FC16: registers per request


@dataclass(frozen=True, slots=True)
class BlockPoint:
    """A point inside a read block, `offset` registers from the block start."""

    spec: PointSpec
    offset: int


# One unpacking group: (struct over the block, byte-swapped buffer?, [(name, scale, offset)]).
_Group = tuple[struct.Struct, bool, list[tuple[str, float, float]]]


def _compile(points: Sequence[BlockPoint]) -> list[_Group]:
    """Group points by (buffer, endianness) and build one Struct per group with pad bytes.

    With the block's big-endian bytes `be` and per-word byte-swapped bytes `le`, the codec's
    word/byte order options reduce to: plain ">fmt" on be; byte_swap ">fmt" on le;
    word_swap "<fmt" on le; both "<fmt" on be (see codec._words_to_bytes).
    """
    groups: dict[tuple[bool, str], list[BlockPoint]] = {}
    for bp in points:
        enc = bp.spec.encoding
        word_swap = enc.word_swap and enc.dtype.count > 1  # a 1-word swap is the identity
        swapped_buf = enc.byte_swap != word_swap
        groups.setdefault((swapped_buf, "<" if word_swap else ">"), []).append(bp)
    compiled: list[_Group] = []
    for (swapped_buf, endian), members in groups.items():
        fmt, pos = endian, 0
        members = sorted(members, key=lambda m: m.offset)
        for bp in members:
            pad = 2 * bp.offset - pos
            if pad:
                fmt += f"{pad}x"
            fmt += bp.spec.encoding.dtype.fmt
            pos = 2 * (bp.offset + bp.spec.count)
        scaling = [(m.spec.name, m.spec.encoding.scale, m.spec.encoding.offset) for m in members]
        compiled.append((struct.Struct(fmt), swapped_buf, scaling))
    return compiled


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: table, start address, register count and the points it covers."""

    table: Table
    start: int
    count: int
    points: tuple[BlockPoint, ...]
    _groups: list[_Group] = field(init=False, repr=False, compare=False)
    _be: struct.Struct = field(init=False, repr=False, compare=False)
    _le: struct.Struct = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_groups", _compile(self.points))
        object.__setattr__(self, "_be", struct.Struct(f">{self.count}H"))
        object.__setattr__(self, "_le", struct.Struct(f"<{self.count}H"))

    @property
    def end(self) -> int:
        """One past the last register read."""
        return self.start + self.count

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the points in this block."""
        return tuple(bp.spec.name for bp in self.points)

    def decode(self, words: Sequence[int]) -> dict[str, float]:
        """The block's registers -> {point name: engineering value}; CodecError if malformed."""
        if len(words) != self.count:
            raise CodecError(f"block {self.table.value}@{self.start} needs {self.count} "
                             f"registers, got {len(words)}")
        try:
            be = self._be.pack(*words)
        except struct.error as exc:
            raise CodecError(f"block {self.table.value}@{self.start}: {exc}") from None
        le: bytes | None = None
        out: dict[str, float] = {}
        for st, swapped_buf, scaling in self._groups:
            if swapped_buf:
                if le is None:
                    le = self._le.pack(*words)
                raw = st.unpack_from(le)
            else:
                raw = st.unpack_from(be)
            for (name, scale, offset), value in zip(scaling, raw, strict=True):
                # Same rule as codec.decode: unit scale and no offset keeps integers exact.
                out[name] = value if scale == 1.0 and offset == 0.0 else value * scale + offset
        return out


def plan_reads(
    points: Iterable[PointSpec], *, max_gap: int, max_count: int = MAX_READ_COUNT
) -> list[ReadBlock]:
    """Readable points -> the fewest read blocks per table given max_gap and max_count."""
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    by_table: dict[Table, list[PointSpec]] = {}
    for p in points:
        if p.access.readable:
            by_table.setdefault(p.table, []).append(p)
    blocks: list[ReadBlock] = []
    for table in sorted(by_table, key=lambda t: t.value):
        run: list[PointSpec] = []
        start = end = 0
        for p in sorted(by_table[table], key=lambda q: q.address):
            if p.count > max_count:
                raise ValueError(f"point {p.name!r} ({p.count} registers) exceeds max_count")
            if run and p.address - end <= max_gap and max(end, p.end) - start <= max_count:
                run.append(p)
                end = max(end, p.end)
                continue
            if run:
                blocks.append(_block(table, start, end, run))
            run, start, end = [p], p.address, p.end
        if run:
            blocks.append(_block(table, start, end, run))
    return blocks


def _block(table: Table, start: int, end: int, run: list[PointSpec]) -> ReadBlock:
    return ReadBlock(table, start, end - start,
                     tuple(BlockPoint(p, p.address - start) for p in run))


def minimum_requests(points: Iterable[PointSpec], max_count: int = MAX_READ_COUNT) -> int:
    """Fewest read requests that can cover these points (any gap bridged), for reporting."""
    return len(plan_reads(points, max_gap=65536, max_count=max_count))


@dataclass(frozen=True, slots=True)
class WriteItem:
    """One output's registers to write."""

    name: str
    address: int
    words: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class WriteBlock:
    """One FC16 request: start address, registers, and the outputs it carries."""

    start: int
    words: tuple[int, ...]
    names: tuple[str, ...]


def plan_writes(items: Iterable[WriteItem], max_count: int = MAX_WRITE_COUNT) -> list[WriteBlock]:
    """Merge contiguous holding-register writes into FC16 blocks of at most max_count."""
    blocks: list[WriteBlock] = []
    start = 0
    words: list[int] = []
    names: list[str] = []
    for item in sorted(items, key=lambda i: i.address):
        if not item.words or len(item.words) > max_count:
            raise ValueError(f"write {item.name!r}: {len(item.words)} registers")
        end = start + len(words)
        if names and item.address < end:
            raise ValueError(f"write {item.name!r} at {item.address} overlaps {names[-1]!r}")
        if names and item.address == end and len(words) + len(item.words) <= max_count:
            words.extend(item.words)
            names.append(item.name)
            continue
        if names:
            blocks.append(WriteBlock(start, tuple(words), tuple(names)))
        start, words, names = item.address, list(item.words), [item.name]
    if names:
        blocks.append(WriteBlock(start, tuple(words), tuple(names)))
    return blocks
