"""Register codec golden vectors: every type, every byte/word order, both directions.

Expected register words are written out by hand (integers in two's complement, floats from
their IEEE-754 bit pattern), never computed with struct, so a codec bug cannot hide behind
the same bug in the test.
"""

from __future__ import annotations

import math

import pytest

from edge_runtime.config.codec import CodecError, DataType, Encoding, decode, decode_raw, encode

I16, U16, I32, U32, F32 = (DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32,
                           DataType.FLOAT32)

# (byte_swap, word_swap) -> order name, for readable test ids.
ORDERS = {(False, False): "ABCD", (False, True): "CDAB", (True, False): "BADC",
          (True, True): "DCBA"}


def enc(dtype: DataType, order: str = "ABCD", scale: float = 1.0,
        offset: float = 0.0) -> Encoding:
    """An Encoding from an order name (ABCD default, CDAB word swap, BADC byte swap, DCBA)."""
    byte_swap, word_swap = next(k for k, v in ORDERS.items() if v == order)
    return Encoding(dtype, scale=scale, offset=offset, byte_swap=byte_swap, word_swap=word_swap)


# (type, order, raw value, registers on the wire). Each raw value is exact in its type, so
# decode(words) == value and encode(value) == words both hold.
GOLDEN: list[tuple[DataType, str, int | float, list[int]]] = [
    # int16: two's complement, one register; byte swap exchanges its two bytes
    (I16, "ABCD", 0, [0x0000]),
    (I16, "ABCD", 12345, [0x3039]),
    (I16, "ABCD", -2, [0xFFFE]),
    (I16, "ABCD", -32768, [0x8000]),
    (I16, "ABCD", 32767, [0x7FFF]),
    (I16, "BADC", 12345, [0x3930]),
    (I16, "BADC", -2, [0xFEFF]),
    (I16, "BADC", -32768, [0x0080]),
    # uint16
    (U16, "ABCD", 0, [0x0000]),
    (U16, "ABCD", 48879, [0xBEEF]),
    (U16, "ABCD", 65535, [0xFFFF]),
    (U16, "BADC", 48879, [0xEFBE]),
    (U16, "BADC", 1, [0x0100]),
    # int32 0x12345678 = 305419896: all four bytes distinct, so every order is visible
    (I32, "ABCD", 305419896, [0x1234, 0x5678]),
    (I32, "CDAB", 305419896, [0x5678, 0x1234]),
    (I32, "BADC", 305419896, [0x3412, 0x7856]),
    (I32, "DCBA", 305419896, [0x7856, 0x3412]),
    # int32 -1 000 000 (-1 MW in watts) = 0xFFF0BDC0
    (I32, "ABCD", -1000000, [0xFFF0, 0xBDC0]),
    (I32, "CDAB", -1000000, [0xBDC0, 0xFFF0]),
    (I32, "BADC", -1000000, [0xF0FF, 0xC0BD]),
    (I32, "DCBA", -1000000, [0xC0BD, 0xF0FF]),
    (I32, "ABCD", -2147483648, [0x8000, 0x0000]),
    (I32, "ABCD", 2147483647, [0x7FFF, 0xFFFF]),
    (I32, "ABCD", 65536, [0x0001, 0x0000]),
    # uint32 0xDEADBEEF = 3735928559
    (U32, "ABCD", 3735928559, [0xDEAD, 0xBEEF]),
    (U32, "CDAB", 3735928559, [0xBEEF, 0xDEAD]),
    (U32, "BADC", 3735928559, [0xADDE, 0xEFBE]),
    (U32, "DCBA", 3735928559, [0xEFBE, 0xADDE]),
    (U32, "ABCD", 4294967295, [0xFFFF, 0xFFFF]),
    (U32, "CDAB", 65536, [0x0000, 0x0001]),
    # float32, exact binary fractions: 1.0 = 0x3F800000; -2.5 = -1.25 * 2^1 -> sign 1,
    # exponent 128, fraction 0.25 -> 0xC0200000; 100.5 = 1.5703125 * 2^6 -> exponent 133,
    # fraction 2^-1 + 2^-4 + 2^-7 -> 0x42C90000
    (F32, "ABCD", 0.0, [0x0000, 0x0000]),
    (F32, "ABCD", 1.0, [0x3F80, 0x0000]),
    (F32, "ABCD", -2.5, [0xC020, 0x0000]),
    (F32, "ABCD", 100.5, [0x42C9, 0x0000]),
    (F32, "CDAB", 100.5, [0x0000, 0x42C9]),
    (F32, "BADC", 100.5, [0xC942, 0x0000]),
    (F32, "DCBA", 100.5, [0x0000, 0xC942]),
    # float32 pi rounds to 0x40490FDB = 3.1415927410125732 (four distinct bytes)
    (F32, "ABCD", 3.1415927410125732, [0x4049, 0x0FDB]),
    (F32, "CDAB", 3.1415927410125732, [0x0FDB, 0x4049]),
    (F32, "BADC", 3.1415927410125732, [0x4940, 0xDB0F]),
    (F32, "DCBA", 3.1415927410125732, [0xDB0F, 0x4940]),
    # largest finite float32 0x7F7FFFFF = (2 - 2^-23) * 2^127
    (F32, "ABCD", 3.4028234663852886e38, [0x7F7F, 0xFFFF]),
    (F32, "DCBA", -3.4028234663852886e38, [0xFFFF, 0x7FFF]),
]


def _id(case: tuple[DataType, str, int | float, list[int]]) -> str:
    dtype, order, value, _ = case
    return f"{dtype.name.lower()}-{order}-{value!r}"


@pytest.mark.parametrize("case", GOLDEN, ids=_id)
def test_encode_golden(case: tuple[DataType, str, int | float, list[int]]) -> None:
    dtype, order, value, words = case
    assert encode(value, enc(dtype, order)) == words


@pytest.mark.parametrize("case", GOLDEN, ids=_id)
def test_decode_golden(case: tuple[DataType, str, int | float, list[int]]) -> None:
    dtype, order, value, words = case
    got = decode(words, enc(dtype, order))
    assert got == value
    assert type(got) is (float if dtype is F32 else int)  # integers stay exact, unscaled
    assert decode_raw(words, enc(dtype, order)) == value


def test_every_type_and_order_has_a_golden_vector() -> None:
    seen = {(dtype, order) for dtype, order, _, _ in GOLDEN}
    for dtype in DataType:
        orders = ORDERS.values() if dtype.count == 2 else ("ABCD", "BADC")
        for order in orders:
            assert (dtype, order) in seen, (dtype, order)


def test_float32_rounds_to_nearest_single() -> None:
    # 0.1 has no exact binary form; the nearest float32 is 0x3DCCCCCD
    assert encode(0.1, enc(F32)) == [0x3DCC, 0xCCCD]
    assert encode(math.pi, enc(F32)) == [0x4049, 0x0FDB]
    assert decode([0x3DCC, 0xCCCD], enc(F32)) == pytest.approx(0.1, rel=1e-7)


def test_float32_special_words_decode() -> None:
    # -0.0 and subnormals are ordinary values on the wire
    assert math.copysign(1.0, decode([0x8000, 0x0000], enc(F32))) == -1.0
    assert decode([0x0000, 0x0001], enc(F32)) == pytest.approx(1.401298464324817e-45)


def test_data_type_table() -> None:
    assert [(t.name, t.count, t.is_integer) for t in DataType] == [
        ("INT16", 1, True), ("UINT16", 1, True), ("INT32", 2, True), ("UINT32", 2, True),
        ("FLOAT32", 2, False)]
    assert DataType.from_name("float32") is F32
    assert Encoding(U32).count == 2 and Encoding(I16).count == 1
    with pytest.raises(KeyError):
        DataType.from_name("float64")


# -- scale and offset --------------------------------------------------------------------------

SCALED = [
    # (encoding, engineering value, words)
    (enc(U16, scale=0.01), 42.5, [0x109A]),  # 4250
    (enc(U16, scale=0.01), 100.0, [0x2710]),  # 10000
    (enc(I16, scale=0.01), -12.34, [0xFB2E]),  # -1234 = 0x10000 - 0x04D2
    (enc(I16, scale=0.001), 0.95, [0x03B6]),  # 950
    (enc(U16, scale=0.1, offset=-40.0), 25.0, [0x028A]),  # (25 + 40) / 0.1 = 650
    (enc(U16, scale=0.001), 10.0, [0x2710]),  # 10 bar at 1 mbar
    (enc(U32, "CDAB", scale=0.001), 70000.0, [0x1D80, 0x042C]),  # 70 000 000 = 0x042C1D80
    (enc(I32, scale=0.001), -250.0, [0xFFFC, 0x2F70]),  # -250 000 W = 0xFFFC2F70
    (enc(U16, scale=100.0), 250000.0, [0x09C4]),  # 2500 counts of 100 W
    (enc(F32, "CDAB", scale=2.0, offset=1.0), 202.0, [0x0000, 0x42C9]),  # raw 100.5
]


@pytest.mark.parametrize(("encoding", "value", "words"), SCALED)
def test_scaled_round_trip(encoding: Encoding, value: float, words: list[int]) -> None:
    assert encode(value, encoding) == words
    assert decode(words, encoding) == pytest.approx(value, abs=abs(encoding.scale) / 1000)
    assert encode(decode(words, encoding), encoding) == words


def test_scale_applies_to_decode() -> None:
    assert decode([0x04D2], enc(U16, scale=0.01)) == pytest.approx(12.34)
    assert decode([0x04D2], enc(U16, scale=1.0, offset=-1000.0)) == pytest.approx(234.0)
    assert decode([0xFFFF, 0xFFFE], enc(I32, scale=0.5)) == pytest.approx(-1.0)


def test_integer_encode_rounds_to_nearest_count() -> None:
    pct = enc(U16, scale=0.01)
    assert encode(12.344, pct) == [0x04D2]  # 1234.4 -> 1234
    assert encode(12.346, pct) == [0x04D3]  # 1234.6 -> 1235
    assert encode(0.29, pct) == [0x001D]  # 28.999999999999996 -> 29, not truncated to 28
    signed = enc(I16, scale=0.01)
    assert encode(-12.346, signed) == [0xFB2D]  # -1234.6 -> -1235
    assert encode(-12.344, signed) == [0xFB2E]  # -1234.4 -> -1234
    assert encode(7.0, enc(U16)) == [0x0007]
    assert encode(7, enc(U16)) == [0x0007]


# -- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("encoding", "value", "range_text"), [
    (enc(U16), 65536, "uint16 range 0..65535"),
    (enc(U16), -1, "uint16 range 0..65535"),
    (enc(U16, scale=0.01), 655.36, "uint16 range 0..65535"),
    (enc(U16, scale=0.01), -0.01, "uint16 range 0..65535"),
    (enc(I16), 32768, "int16 range -32768..32767"),
    (enc(I16), -32769, "int16 range -32768..32767"),
    (enc(I16, scale=0.01), 327.68, "int16 range -32768..32767"),
    (enc(U32), 4294967296, "uint32 range 0..4294967295"),
    (enc(U32, "DCBA"), -1, "uint32 range 0..4294967295"),
    (enc(I32), 2147483648, "int32 range -2147483648..2147483647"),
    (enc(I32, scale=0.001), -2147483.649, "int32 range -2147483648..2147483647"),
])
def test_out_of_range_is_refused_not_wrapped(encoding: Encoding, value: float,
                                             range_text: str) -> None:
    with pytest.raises(CodecError, match=range_text):
        encode(value, encoding)


def test_range_edges_are_accepted() -> None:
    assert encode(655.35, enc(U16, scale=0.01)) == [0xFFFF]
    assert encode(-327.68, enc(I16, scale=0.01)) == [0x8000]
    assert encode(655.354, enc(U16, scale=0.01)) == [0xFFFF]  # rounds down into range


def test_float32_overflow_is_refused() -> None:
    with pytest.raises(CodecError, match="overflows float32"):
        encode(3.5e38, enc(F32))
    with pytest.raises(CodecError, match="overflows float32"):
        encode(-1e39, enc(F32, "CDAB"))
    with pytest.raises(CodecError, match="overflows float32"):
        encode(1e38, enc(F32, scale=0.1))  # raw 1e39


@pytest.mark.parametrize("dtype", list(DataType), ids=lambda t: t.name.lower())
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_nan_and_inf_are_refused(dtype: DataType, value: float) -> None:
    with pytest.raises(CodecError, match="finite"):
        encode(value, Encoding(dtype))


@pytest.mark.parametrize("value", ["1", None, True, False, [1]], ids=repr)
def test_non_numbers_are_refused(value: object) -> None:
    with pytest.raises(CodecError, match="must be a number"):
        encode(value, enc(U16))  # type: ignore[arg-type]


def test_huge_scaled_integer_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        encode(1e308, enc(U16, scale=0.001))  # 1e308 / 0.001 overflows to inf


@pytest.mark.parametrize(("dtype", "words", "text"), [
    (U16, [], "uint16 needs 1 registers, got 0"),
    (I16, [1, 2], "int16 needs 1 registers, got 2"),
    (I32, [1], "int32 needs 2 registers, got 1"),
    (U32, [1, 2, 3], "uint32 needs 2 registers, got 3"),
    (F32, [0x3F80], "float32 needs 2 registers, got 1"),
])
def test_wrong_register_count_is_refused(dtype: DataType, words: list[int], text: str) -> None:
    with pytest.raises(CodecError, match=text):
        decode(words, Encoding(dtype))


@pytest.mark.parametrize("words", [[0x10000], [-1]], ids=["65536", "-1"])
def test_words_must_be_16_bit(words: list[int]) -> None:
    with pytest.raises(CodecError, match="not a 16-bit word"):
        decode(words, enc(U16))
    with pytest.raises(CodecError, match="not a 16-bit word"):
        decode([0, *words], enc(U32, "DCBA"))


def test_encode_always_returns_16_bit_words_of_the_right_count() -> None:
    for dtype, order, value, _ in GOLDEN:
        words = encode(value, enc(dtype, order))
        assert len(words) == dtype.count
        assert all(isinstance(w, int) and 0 <= w <= 0xFFFF for w in words)
