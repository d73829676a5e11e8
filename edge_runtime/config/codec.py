"""Register codec: Modbus words <-> typed, scaled engineering values. Pure functions, no I/O.

It sits with the device-level config because every io_map point carries its Encoding and the
loader checks failsafe values against it; the Modbus driver and the simulator use it too.

Word order: the protocol puts the high word first ("big", ABCD). `word_swap` puts the low word
first (CDAB, common on meters); `byte_swap` swaps the bytes inside each word (BADC); both
together give DCBA.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class DataType(Enum):
    """Register data types: value is (struct format, register count, is integer)."""

    INT16 = ("h", 1, True)
    UINT16 = ("H", 1, True)
    INT32 = ("i", 2, True)
    UINT32 = ("I", 2, True)
    FLOAT32 = ("f", 2, False)

    @property
    def fmt(self) -> str:
        """struct format character."""
        return self.value[0]

    @property
    def count(self) -> int:
        """Number of 16-bit registers."""
        return self.value[1]

    @property
    def is_integer(self) -> bool:
        """True for the integer types (values are rounded on encode)."""
        return self.value[2]

    @classmethod
    def from_name(cls, name: str) -> DataType:
        """Look up by the io_map spelling, e.g. 'float32'."""
        return cls[name.upper()]


_INT_RANGES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38


class CodecError(ValueError):
    """A value cannot be represented, or words are malformed."""


@dataclass(frozen=True, slots=True)
class Encoding:
    """How one point's engineering value maps to registers: value = raw * scale + offset."""

    dtype: DataType
    scale: float = 1.0
    offset: float = 0.0
    byte_swap: bool = False
    word_swap: bool = False

    @property
    def count(self) -> int:
        """Number of registers the point occupies."""
        return self.dtype.count


def _words_to_bytes(words: Sequence[int], enc: Encoding) -> bytes:
    if enc.word_swap:
        words = list(reversed(words))
    raw = struct.pack(f">{len(words)}H", *words)
    if enc.byte_swap:
        raw = bytes(b for i in range(0, len(raw), 2) for b in (raw[i + 1], raw[i]))
    return raw


def _bytes_to_words(raw: bytes, enc: Encoding) -> list[int]:
    if enc.byte_swap:
        raw = bytes(b for i in range(0, len(raw), 2) for b in (raw[i + 1], raw[i]))
    words = list(struct.unpack(f">{len(raw) // 2}H", raw))
    if enc.word_swap:
        words.reverse()
    return words


def decode_raw(words: Sequence[int], enc: Encoding) -> int | float:
    """Registers -> raw (unscaled) number."""
    if len(words) != enc.dtype.count:
        name = enc.dtype.name.lower()
        raise CodecError(f"{name} needs {enc.dtype.count} registers, got {len(words)}")
    for w in words:
        if not 0 <= w <= 0xFFFF:
            raise CodecError(f"register value {w} is not a 16-bit word")
    value: int | float = struct.unpack(">" + enc.dtype.fmt, _words_to_bytes(words, enc))[0]
    return value


def decode(words: Sequence[int], enc: Encoding) -> float:
    """Registers -> engineering value (raw * scale + offset).

    Integer points with unit scale and no offset stay exact integers (status words, counters).
    """
    raw = decode_raw(words, enc)
    if enc.scale == 1.0 and enc.offset == 0.0:
        return raw
    return raw * enc.scale + enc.offset


def encode(value: float, enc: Encoding) -> list[int]:
    """Engineering value -> registers; refuses values the type cannot hold."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CodecError(f"value must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise CodecError(f"value must be finite, got {value}")
    raw: int | float = (value - enc.offset) / enc.scale
    if not math.isfinite(raw):
        raise CodecError(f"{value:g} overflows {enc.dtype.name.lower()} after scaling")
    if enc.dtype.is_integer:
        raw = round(raw)
        lo, hi = _INT_RANGES[enc.dtype]
        if not lo <= raw <= hi:
            raise CodecError(
                f"{value:g} scales to raw {raw}, outside {enc.dtype.name.lower()} range {lo}..{hi}"
            )
    elif abs(raw) > _FLOAT32_MAX:
        raise CodecError(f"{value:g} overflows float32")
    return _bytes_to_words(struct.pack(">" + enc.dtype.fmt, raw), enc)
