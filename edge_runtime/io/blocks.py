"""Modbus request planning (sans-IO): which registers to read and write, in how few requests.

Reads: points of one table, sorted by address, are merged greedily into blocks of at most
`max_count` registers (125, the FC3/FC4 limit), bridging at most `max_gap` unused registers;
a point is never split. Greedy extension is optimal here because any sub-run of a valid block
is itself valid. Writes: contiguous registers merge into FC16 blocks of at most 123 registers;
writes never bridge gaps, since that would overwrite registers nobody asked to change.

A ReadBlock carries a decoder compiled once: at most four `struct.Struct`s over the block's
bytes (big- or little-endian, bytes as received or byte-swapped per word), so decoding a block
of 100 points costs a few C calls instead of one codec call per point. The result equals
`codec.decode` point by point (golden-tested).

OutputSchedule decides which outputs are due for writing at a given time: changed ones,
all of them every refresh period, and failsafe values once the scan has not staged anything
for longer than an output's max_hold_s. The driver does the I/O; time is handed in.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from edge_runtime.config.codec import CodecError, encode
from edge_runtime.config.schema import PointSpec, Table

log = logging.getLogger(__name__)

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


def output_words(spec: PointSpec | None, value: object) -> tuple[int, ...]:
    """Registers for a staged output value; CodecError says why it is refused."""
    if spec is None:
        raise CodecError("not an output of this device")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CodecError("not a finite number")
    lo = -math.inf if spec.minimum is None else spec.minimum
    hi = math.inf if spec.maximum is None else spec.maximum
    if not lo <= value <= hi:
        raise CodecError(f"outside {lo:g}..{hi:g}")
    return tuple(encode(value, spec.encoding))


class OutputSchedule:
    """Which outputs of one device to write at time `now`: changed, refresh due, or failsafe."""

    def __init__(self, device: str, outputs: Iterable[PointSpec], refresh_s: float) -> None:
        self.device, self.refresh_s = device, refresh_s
        self.specs = {p.name: p for p in outputs}
        self.failsafe: dict[str, tuple[int, ...]] = {}
        for p in self.specs.values():
            if p.failsafe is not None:
                try:
                    self.failsafe[p.name] = tuple(encode(p.failsafe, p.encoding))
                except CodecError as exc:  # a config bug: refuse to start rather than guess
                    raise ValueError(f"{device}.{p.name}: failsafe {exc}") from None
        self.values: dict[str, float] = {}  # accepted engineering values
        self.commanded: dict[str, tuple[int, ...]] = {}  # their registers
        self.written: dict[str, tuple[int, ...]] = {}  # registers the device last acknowledged
        self.held: set[str] = set()  # outputs at failsafe because staging stopped
        self.last_stage: float | None = None
        self.refused = 0
        self.last_refusal = ""
        self._refused_last: dict[str, object] = {}
        self._last_refresh = -math.inf
        self._retry_at = math.inf
        self._refreshing = False
        self._targets: dict[str, tuple[int, ...]] = {}

    def stage(self, values: Mapping[str, float], now: float) -> bool:
        """Accept the scan's values (refusing bad ones); True when something must be written."""
        changed = False
        for name, value in values.items():
            if self.values.get(name, math.nan) == value and type(value) is not bool:
                continue  # unchanged: the common case every scan
            try:
                words = output_words(self.specs.get(name), value)
            except CodecError as exc:
                self._refuse(name, value, str(exc))
                continue
            self.values[name] = value
            self._refused_last.pop(name, None)
            if self.commanded.get(name) != words:
                self.commanded[name] = words
                changed = True
        self.last_stage = now
        if self.held:
            log.info("%s: outputs staged again; leaving failsafe for %s",
                     self.device, ", ".join(sorted(self.held)))
            self.held.clear()
            changed = True
        return changed

    def _refuse(self, name: str, value: object, why: str) -> None:
        self.refused += 1
        self.last_refusal = f"output {name} = {value!r} refused: {why}; keeping the previous value"
        if self._refused_last.get(name, object()) != value:  # log once per refused value
            self._refused_last[name] = value
            log.warning("%s: %s", self.device, self.last_refusal)

    def next_wake(self) -> float:
        """Monotonic time of the next refresh, retry or max-hold expiry (inf: only on stage)."""
        if self.last_stage is None:
            return math.inf
        # A pending retry replaces an overdue refresh (the retry writes everything due then):
        # taking the earlier of the two would spin while the device is unreachable.
        wake = self._retry_at if self._retry_at < math.inf else self._last_refresh + self.refresh_s
        for name, spec in self.specs.items():
            if spec.max_hold_s is not None and name in self.failsafe and name not in self.held:
                wake = min(wake, self.last_stage + spec.max_hold_s)
        return wake

    def due(self, now: float) -> list[WriteItem]:
        """Writes to make now; nothing before the first stage()."""
        if self.last_stage is None:
            return []
        silent = now - self.last_stage
        targets: dict[str, tuple[int, ...]] = {}
        for name, spec in self.specs.items():
            failsafe = self.failsafe.get(name)
            if spec.max_hold_s is not None and failsafe is not None and silent >= spec.max_hold_s:
                if name not in self.held:
                    self.held.add(name)
                    log.warning("%s: output %s: no new value for %.0f ms (max_hold_s %g): "
                                "writing failsafe %g", self.device, name, silent * 1e3,
                                spec.max_hold_s, spec.failsafe)
                targets[name] = failsafe
            elif name in self.commanded:
                targets[name] = self.commanded[name]
        self._targets = targets
        self._refreshing = now >= self._last_refresh + self.refresh_s
        return [WriteItem(n, self.specs[n].address, w) for n, w in targets.items()
                if self._refreshing or self.written.get(n) != w]

    def acknowledged(self, names: Iterable[str]) -> None:
        """The device accepted the write of these outputs (from the last due())."""
        for name in names:
            self.written[name] = self._targets[name]

    def finished(self, now: float, ok: bool, retry_s: float) -> None:
        """The writes of the last due() are done; retry after retry_s if any failed."""
        if ok and self._refreshing:
            self._last_refresh = now
        self._retry_at = math.inf if ok else now + retry_s
