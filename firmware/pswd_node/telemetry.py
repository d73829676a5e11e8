"""CBOR births and batches in edge_runtime/messages/telemetry.py's format, byte for byte.

  batch  {0: "1.0", 1: 0, 2: session, 3: seq, 4: time_ms, 5: false, 6: [frame, ...]}
  frame  [offset_ms, alias, value, alias, value, ...]
  value  a float for a GOOD sample, else [float or null, quality]
  birth  {0: "1.0", 1: 1, 2: session, 4: time_ms, 7: [[alias, name, unit, type], ...]}

Frames are encoded as the scan takes them (appended to one bytearray), so a batch costs no
object per sample; flush() prepends the map head. Every value is a float, as the runtime's
encode_samples writes it, so the bytes equal the runtime's for the same samples
(tests/firmware/test_cbor_vectors.py). Two frames with the same offset stay two frames here
(the runtime would merge them; both decode to the same samples); with a 100 ms scan they
do not occur.
"""

from . import PSWD_VERSION, cbor

GOOD = 0
BAD = 1
UNCERTAIN = 2
FLOAT, INT, BOOL = 0, 1, 2
TYPE_NAMES = ("float", "int", "bool")


def encode_birth(points, session, time_ms):
    """CBOR birth declaring `points` [(alias, name, unit, type code), ...] for the session."""
    buf = bytearray(b"\xa5\x00")
    cbor.put_text(buf, PSWD_VERSION)
    buf.extend(b"\x01\x01\x02")
    cbor.head(buf, 0, session)
    buf.append(0x04)
    cbor.head(buf, 0, time_ms)
    buf.append(0x07)
    cbor.head(buf, 4, len(points))
    for alias, name, unit, code in points:
        buf.append(0x84)
        cbor.head(buf, 0, alias)
        cbor.put_text(buf, name)
        cbor.put_text(buf, unit)
        cbor.head(buf, 0, code)
    return bytes(buf)


class BatchBuilder:
    """Frames of one batch, encoded as they come; flush() returns the batch bytes."""

    def __init__(self, max_bytes=4096):
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.frames = 0
        self.base_ms = 0
        self.base_ticks = 0
        self.pending = 0  # pairs still to come in the open frame

    def frame(self, offset_ms, pairs):
        """Open a frame at offset_ms (from the batch's first frame) holding `pairs` samples."""
        cbor.head(self.buf, 4, 1 + 2 * pairs)
        cbor.head(self.buf, 0, offset_ms)
        self.frames += 1
        self.pending = pairs

    def sample(self, alias, value, quality):
        """One sample of the open frame: value a number or None, quality a runtime code."""
        buf = self.buf
        cbor.head(buf, 0, alias)
        if quality == GOOD and value is not None:
            cbor.put_float(buf, float(value))
        else:
            buf.append(0x82)
            if value is None:
                buf.append(0xF6)
            else:
                cbor.put_float(buf, float(value))
            cbor.head(buf, 0, quality)
        self.pending -= 1

    def full(self):
        return len(self.buf) >= self.max_bytes

    def flush(self, session, seq):
        """The batch's CBOR bytes (None if it has no frame); the builder starts empty again."""
        if not self.frames:
            return None
        out = bytearray(b"\xa7\x00")
        cbor.put_text(out, PSWD_VERSION)
        out.extend(b"\x01\x00\x02")
        cbor.head(out, 0, session)
        out.append(0x03)
        cbor.head(out, 0, seq)
        out.append(0x04)
        cbor.head(out, 0, self.base_ms)
        out.extend(b"\x05\xf4\x06")
        cbor.head(out, 4, self.frames)
        out.extend(self.buf)
        self.clear()
        return bytes(out)

    def clear(self):
        self.buf = bytearray()
        self.frames = 0
