"""One simulated device's register memory, laid out by its io_map. Sans-IO.

Holds the holding and input tables over the span the io_map uses (gaps read as 0, as on
real devices, so a client may bridge them), checks client writes the way a strict device
does (only output registers, values within min..max), remembers when each output was last
written, and enforces the io_map's `max_hold_s` on the device side: an output not written
for longer than that falls back to its `failsafe` value (Klipper's `max_duration`), or, when
the io_map declares the device's own comms-loss register for it (`mirrors = "<output>"`: a
drive's fieldbus-loss action and preset speed, a positioner's fail position), to the value
that register holds: whatever the controller last set there, the factory default until then.
Comms-loss registers are device parameters: they never fall back themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from edge_runtime.config.codec import CodecError, Encoding, decode, encode
from edge_runtime.config.schema import IoMap, PointSpec, Table

log = logging.getLogger(__name__)

# Modbus exception codes a device answers with (kept here so this module needs no pymodbus).
ILLEGAL_FUNCTION = 1
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3
GATEWAY_NO_RESPONSE = 11

_INT_LIMITS = {"INT16": (-(2**15), 2**15 - 1), "UINT16": (0, 2**16 - 1),
               "INT32": (-(2**31), 2**31 - 1), "UINT32": (0, 2**32 - 1)}


def encode_saturating(value: float, enc: Encoding) -> list[int]:
    """Encode like a real transmitter: out-of-range values pin at the type's limit."""
    try:
        return encode(value, enc)
    except CodecError:
        limits = _INT_LIMITS.get(enc.dtype.name)
        if limits is None or value != value:  # float32 overflow or NaN
            return encode(0.0, enc)
        ends = sorted((limits[0] * enc.scale + enc.offset, limits[1] * enc.scale + enc.offset))
        return encode(min(max(value, ends[0]), ends[1]), enc)


class RegisterBank:
    """Registers of one device; the simulator writes inputs, clients write outputs."""

    def __init__(self, name: str, io_map: IoMap) -> None:
        self.name = name
        self.io_map = io_map
        self._tables: dict[Table, tuple[int, list[int]]] = {}
        for table in Table:
            points = [p for p in io_map.points if p.table is table]
            if points:
                base = min(p.address for p in points)
                end = max(p.end for p in points)
                self._tables[table] = (base, [0] * (end - base))
        self._writable: dict[int, PointSpec] = {}
        for p in io_map.outputs:
            for a in range(p.address, p.end):
                self._writable[a] = p
        self._points = {p.name: p for p in io_map.points}
        # output -> the comms-loss register whose value it takes when its hold expires
        self.loss_register: dict[str, PointSpec] = {
            p.mirrors: p for p in io_map.outputs if p.mirrors}
        self.written_at: dict[str, float] = {}
        self.client_words: dict[str, list[int]] = {}
        self.failsafe_active: set[str] = set()
        self.writes = 0
        # Inputs are encoded lazily: after a step the owner marks the bank stale, and the
        # first read (client or simulator side) calls `refresher` to write fresh inputs.
        # Devices nobody polls cost nothing, which keeps 1,000-point configs cheap.
        self.stale = False
        self.refresher: Callable[[], None] | None = None
        for p in io_map.outputs:
            assert p.failsafe is not None  # the io_map loader requires it on outputs
            self._put(p, encode_saturating(p.failsafe, p.encoding))
            self.written_at[p.name] = 0.0
            self.failsafe_active.add(p.name)  # outputs start at their failsafe

    # -- layout ------------------------------------------------------------------------
    def span(self, table: Table) -> tuple[int, int] | None:
        """(first address, register count) of a table, None when the device has none."""
        if table not in self._tables:
            return None
        base, regs = self._tables[table]
        return base, len(regs)

    def point(self, name: str) -> PointSpec:
        """Point spec by name."""
        return self._points[name]

    # -- client side ----------------------------------------------------------------------
    def refresh(self) -> None:
        """Bring the input registers up to date if a step made them stale."""
        if self.stale and self.refresher is not None:
            self.stale = False
            self.refresher()

    def read(self, table: Table, address: int, count: int) -> list[int] | None:
        """Registers for a client read; None when any address is outside the device."""
        if table not in self._tables or count < 1:
            return None
        self.refresh()
        base, regs = self._tables[table]
        off = address - base
        if off < 0 or off + count > len(regs):
            return None
        return regs[off:off + count]

    def write(self, address: int, values: Sequence[int], t: float) -> int | None:
        """A client write to holding registers at model time t; an exception code or None."""
        if not values:
            return ILLEGAL_VALUE
        touched: dict[str, PointSpec] = {}
        for a in range(address, address + len(values)):
            p = self._writable.get(a)
            if p is None:
                return ILLEGAL_ADDRESS
            touched[p.name] = p
        base, regs = self._tables[Table.HOLDING]
        trial = list(regs)
        trial[address - base:address - base + len(values)] = list(values)
        for p in touched.values():
            value = decode(trial[p.address - base:p.end - base], p.encoding)
            if (p.minimum is not None and value < p.minimum) or (
                p.maximum is not None and value > p.maximum
            ):
                log.info("%s: refused %s = %g (outside %s..%s)", self.name, p.name, value,
                         p.minimum, p.maximum)
                return ILLEGAL_VALUE
        regs[address - base:address - base + len(values)] = list(values)
        self.writes += 1
        for p in touched.values():
            self.written_at[p.name] = t
            self.client_words[p.name] = regs[p.address - base:p.end - base]
            if p.name in self.failsafe_active:
                self.failsafe_active.discard(p.name)
                log.info("%s: %s under client control again (was failsafe)", self.name, p.name)
        return None

    # -- simulator side -------------------------------------------------------------------
    def _put(self, p: PointSpec, words: Sequence[int]) -> None:
        base, regs = self._tables[p.table]
        regs[p.address - base:p.end - base] = list(words)

    def get(self, name: str) -> float:
        """Engineering value of a point as the registers hold it now."""
        p = self._points[name]
        if not p.access.writable:
            self.refresh()
        base, regs = self._tables[p.table]
        return decode(regs[p.address - base:p.end - base], p.encoding)

    def client_value(self, name: str) -> float | None:
        """Last value the client wrote to an output (failsafe substitution not applied)."""
        words = self.client_words.get(name)
        return None if words is None else decode(words, self._points[name].encoding)

    def set(self, name: str, value: float) -> None:
        """Store an engineering value in a point, saturating at the type's range."""
        p = self._points[name]
        self._put(p, encode_saturating(value, p.encoding))

    def set_words(self, table: Table, address: int, words: Sequence[int]) -> None:
        """Store raw words (e.g. SunSpec strings) inside the table's span."""
        base, regs = self._tables[table]
        off = address - base
        if off < 0 or off + len(words) > len(regs):
            raise ValueError(f"{self.name}: {address}+{len(words)} outside the {table.value} span")
        regs[off:off + len(words)] = list(words)

    def enforce_hold(self, t: float) -> list[str]:
        """Drive outputs not written for more than max_hold_s to failsafe; returns those
        that changed over just now."""
        changed: list[str] = []
        for p in self.io_map.outputs:
            if p.name in self.failsafe_active or p.max_hold_s is None or p.failsafe is None:
                continue
            if t - self.written_at[p.name] > p.max_hold_s:
                loss = self.loss_register.get(p.name)
                value = p.failsafe if loss is None else self.get(loss.name)
                self._put(p, encode_saturating(value, p.encoding))
                self.failsafe_active.add(p.name)
                changed.append(p.name)
                log.warning("%s: %s not written for %.1f s (max_hold_s %g): %s %g",
                            self.name, p.name, t - self.written_at[p.name], p.max_hold_s,
                            "failsafe" if loss is None else f"comms-loss value ({loss.name})",
                            value)
        return changed
