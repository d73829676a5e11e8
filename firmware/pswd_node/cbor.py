"""Deterministic CBOR (RFC 8949 section 4.2), the subset PSWD telemetry uses.

No MicroPython CBOR library is published, so the firmware carries this one. The encoder
writes what cbor2.dumps(obj, canonical=True) writes (the runtime's encoder): shortest
integer heads, floats in the shortest of half/single/double that holds the value exactly,
map keys sorted by their encoded bytes (shorter first). tests/firmware/test_cbor_vectors.py
checks it against cbor2 and edge_runtime.messages.telemetry both ways.

Encoding appends to a bytearray (no intermediate objects on the hot path). Decoding covers
what the encoder writes plus indefinite-length-free CBOR in general: unsigned and negative
integers, byte and text strings, arrays, maps, false/true/null, half/single/double floats.
Tags and indefinite lengths are refused (ValueError), as is nesting past `max_depth`.
"""

import math
import struct

_U64 = 1 << 64


def head(buf, major, n):
    """Append a CBOR head (major type, argument) in its shortest form."""
    mt = major << 5
    if n < 24:
        buf.append(mt | n)
    elif n < 0x100:
        buf.append(mt | 24)
        buf.append(n)
    elif n < 0x10000:
        buf.append(mt | 25)
        buf.extend(struct.pack(">H", n))
    elif n < 0x100000000:
        buf.append(mt | 26)
        buf.extend(struct.pack(">I", n))
    elif n < _U64:
        buf.append(mt | 27)
        buf.extend(struct.pack(">II", n >> 32, n & 0xFFFFFFFF))
    else:
        raise ValueError("integer too large for CBOR without a bignum tag")


def put_int(buf, n):
    """Append an integer (major 0 or 1)."""
    if n >= 0:
        head(buf, 0, n)
    else:
        head(buf, 1, -1 - n)


def _half_bits(x):
    """The float16 bits holding x exactly, or -1."""
    a = -x if x < 0 else x
    sign = 0x8000 if x < 0 else 0
    e = math.frexp(a)[1]  # a = m * 2**e, 0.5 <= m < 1
    exp = e - 1
    if exp > 15:
        return -1
    if exp >= -14:
        s = math.ldexp(a, 10 - exp)  # 1.f * 2**10: an integer 1024..2047 if exact
        i = int(s)
        if i != s:
            return -1
        return sign | ((exp + 15) << 10) | (i - 1024)
    s = math.ldexp(a, 24)  # subnormal: a multiple of 2**-24
    i = int(s)
    if i != s or i == 0:
        return -1
    return sign | i


def put_float(buf, x):
    """Append a float in its shortest exact form (NaN and infinities as float16)."""
    if x != x:
        buf.extend(b"\xf9\x7e\x00")
        return
    if x == 0.0:
        buf.extend(b"\xf9\x80\x00" if math.copysign(1.0, x) < 0 else b"\xf9\x00\x00")
        return
    if x in (math.inf, -math.inf):
        buf.extend(b"\xf9\x7c\x00" if x > 0 else b"\xf9\xfc\x00")
        return
    bits = _half_bits(x)
    if bits >= 0:
        buf.append(0xF9)
        buf.extend(struct.pack(">H", bits))
        return
    try:
        single = struct.pack(">f", x)
    except OverflowError:  # CPython: out of float32 range
        single = None
    if single is not None and struct.unpack(">f", single)[0] == x:
        buf.append(0xFA)
        buf.extend(single)
        return
    buf.append(0xFB)
    buf.extend(struct.pack(">d", x))


def put_text(buf, s):
    """Append a text string."""
    data = s.encode()
    head(buf, 3, len(data))
    buf.extend(data)


def encode(obj, buf=None):
    """Append obj (None, bool, int, float, str, bytes, list, tuple, dict) to buf; return buf."""
    if buf is None:
        buf = bytearray()
    if obj is None:
        buf.append(0xF6)
    elif obj is True:
        buf.append(0xF5)
    elif obj is False:
        buf.append(0xF4)
    elif isinstance(obj, int):
        put_int(buf, obj)
    elif isinstance(obj, float):
        put_float(buf, obj)
    elif isinstance(obj, str):
        put_text(buf, obj)
    elif isinstance(obj, (bytes, bytearray)):
        head(buf, 2, len(obj))
        buf.extend(obj)
    elif isinstance(obj, (list, tuple)):
        head(buf, 4, len(obj))
        for item in obj:
            encode(item, buf)
    elif isinstance(obj, dict):
        items = []
        for k in obj:
            items.append((bytes(encode(k)), obj[k]))
        items.sort(key=_key_order)
        head(buf, 5, len(items))
        for k, v in items:
            buf.extend(k)
            encode(v, buf)
    else:
        raise ValueError("cannot encode " + type(obj).__name__)
    return buf


def _key_order(item):
    return (len(item[0]), item[0])


def dumps(obj):
    """The CBOR bytes of obj."""
    return bytes(encode(obj))


def _half_value(bits):
    exp = (bits >> 10) & 0x1F
    frac = bits & 0x3FF
    if exp == 0:
        val = math.ldexp(frac, -24)
    elif exp == 31:
        val = math.inf if frac == 0 else math.nan
    else:
        val = math.ldexp(frac + 1024, exp - 25)
    return -val if bits & 0x8000 else val


class _Reader:
    def __init__(self, data, max_depth):
        self.data = data
        self.pos = 0
        self.max_depth = max_depth

    def take(self, n):
        end = self.pos + n
        if end > len(self.data):
            raise ValueError("truncated CBOR at byte %d" % self.pos)
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def arg(self, info):
        if info < 24:
            return info
        if info == 24:
            return self.take(1)[0]
        if info == 25:
            return struct.unpack(">H", self.take(2))[0]
        if info == 26:
            return struct.unpack(">I", self.take(4))[0]
        if info == 27:
            hi, lo = struct.unpack(">II", self.take(8))
            return (hi << 32) | lo
        raise ValueError("indefinite length or reserved head at byte %d" % (self.pos - 1))

    def item(self, depth):
        if depth > self.max_depth:
            raise ValueError("CBOR nested deeper than %d" % self.max_depth)
        ib = self.take(1)[0]
        major = ib >> 5
        info = ib & 0x1F
        if major == 7:
            if info == 20:
                return False
            if info == 21:
                return True
            if info in (22, 23):
                return None
            if info == 25:
                return _half_value(struct.unpack(">H", self.take(2))[0])
            if info == 26:
                return struct.unpack(">f", self.take(4))[0]
            if info == 27:
                return struct.unpack(">d", self.take(8))[0]
            raise ValueError("unsupported simple value %d" % info)
        n = self.arg(info)
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2:
            return bytes(self.take(n))
        if major == 3:
            return str(self.take(n), "utf-8")
        if major == 4:
            return [self.item(depth + 1) for _ in range(n)]
        if major == 5:
            out = {}
            for _ in range(n):
                k = self.item(depth + 1)
                if k in out:
                    raise ValueError("duplicate map key %r" % (k,))
                out[k] = self.item(depth + 1)
            return out
        raise ValueError("CBOR tags are not supported (byte %d)" % (self.pos - 1))


def loads(data, max_depth=8):
    """Decode one CBOR item that fills all of data; ValueError if it does not."""
    r = _Reader(bytes(data), max_depth)
    obj = r.item(0)
    if r.pos != len(r.data):
        raise ValueError("%d bytes after the CBOR item" % (len(r.data) - r.pos))
    return obj
