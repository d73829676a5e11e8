"""The signed command check: edge_runtime/security/signing.py's envelope, on the board.

MAC: hex HMAC-SHA256 under the board's key of "{node}/{kind}\\n" + the canonical JSON of
every field but "signature" (jsonc.dumps). The issued-at ("timestamp") must lie within
max_age_ms of the board's clock either way and after the board booted (nonces are kept in
RAM only, so one captured before a reset must not be accepted after it); a nonce is
remembered until its command could no longer pass the time check (max_age_ms after its
issued-at), at most max_nonces of them; when the memory is full of live nonces the command is
refused rather than forget one early (a replay would then pass).

check() returns None when the envelope holds, else (category, field, reason): the error
record the app publishes on .../error. Only a genuine message gets past the MAC, so the
later, more detailed reasons are given to key holders only.
"""

import hashlib
from binascii import hexlify

from . import jsonc

_HEX = "0123456789abcdef"
_NONCE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"


def pads(key):
    """The HMAC key pads (inner, outer) for `key`: computed once per key, not per message."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    return bytes([b ^ 0x36 for b in key]), bytes([b ^ 0x5C for b in key])


def hmac_sha256(key, msg, key_pads=None):
    """HMAC-SHA256 (RFC 2104) on hashlib.sha256: MicroPython has no hmac module."""
    ipad, opad = key_pads if key_pads is not None else pads(key)
    inner = hashlib.sha256(ipad)
    inner.update(msg)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def mac_hex(key, node, kind, doc, key_pads=None):
    """Hex MAC of a command document, as signing.mac computes it."""
    body = {}
    for k in doc:
        if k != "signature":
            body[k] = doc[k]
    text = node + "/" + kind + "\n" + jsonc.dumps(body)
    return hexlify(hmac_sha256(key, text.encode(), key_pads)).decode()


def _same(a, b):
    """Equal, without a timing signal: the hashes of both are compared, so how long the
    comparison takes says nothing about how much of `a` matched (double-hash compare)."""
    return hashlib.sha256(a.encode()).digest() == hashlib.sha256(b.encode()).digest()


def _is_hex64(s):
    # strip() with a set of characters removes them all only if nothing else is there:
    # a whole-string check at C speed
    return isinstance(s, str) and len(s) == 64 and not s.strip(_HEX)


def _is_nonce(s):
    return isinstance(s, str) and 8 <= len(s) <= 64 and not s.strip(_NONCE_CHARS)


class Verifier:
    """Checks envelopes for one node and kind; remembers accepted nonces (bounded)."""

    def __init__(self, key, node, kind, role, max_age_ms=30000, max_nonces=64,
                 not_before_ms=0):
        self.key = key
        self.pads = None if key is None else pads(key)
        self.node = node
        self.kind = kind
        self.role = role
        self.max_age_ms = max_age_ms
        self.max_nonces = max_nonces
        self.not_before_ms = not_before_ms
        # (issued, nonce) in accepted order; issued in s from `epoch_s`, a small int (a full
        # epoch-ms timestamp would be a heap-allocated big int on a 32-bit board)
        self.epoch_s = not_before_ms // 1000
        self.nonces = []

    def check(self, doc, now_ms):
        """None if `doc` is a genuine, fresh, first-seen envelope, else (category, field, why)."""
        sig = doc.get("signature")
        if not _is_hex64(sig):
            return ("refused", "signature",
                    "signature: required, 64 lower-case hex digits of HMAC-SHA256")
        role = doc.get("role")
        if role != self.role:
            return ("refused", "role", "role: expected %s, got %s" % (self.role,
                                                                      _show(role)))
        if self.key is None:
            return ("refused", "signature", "signature: no key provisioned on this board")
        try:
            want = mac_hex(self.key, self.node, self.kind, doc, self.pads)
        except ValueError as exc:  # a value canonical JSON cannot hold (NaN)
            return ("malformed", "$", "cannot canonicalise: %s" % exc)
        if not _same(sig, want):
            return ("refused", "signature",
                    "signature: does not match (wrong key, node, kind or altered fields)")
        nonce = doc.get("nonce")
        if not _is_nonce(nonce):
            return ("refused", "nonce",
                    "nonce: required, 8-64 characters of letters, digits, _ . : -")
        try:
            issued = jsonc.parse_ms(doc.get("timestamp"))
        except ValueError as exc:
            return ("refused", "timestamp", "timestamp: %s" % exc)
        age = now_ms - issued
        if age > self.max_age_ms:
            return ("refused", "timestamp",
                    "timestamp: issued %.1f s ago by this board's clock, more than %d s "
                    "(expired, or a clock is wrong)" % (age / 1000, self.max_age_ms // 1000))
        if -age > self.max_age_ms:
            return ("refused", "timestamp",
                    "timestamp: issued %.1f s in the future by this board's clock, more "
                    "than %d s (a clock is wrong)" % (-age / 1000, self.max_age_ms // 1000))
        if issued < self.not_before_ms:
            return ("refused", "timestamp",
                    "timestamp: issued before this board started; refused for safety "
                    "(nonces are not kept over a reset)")
        self._forget(now_ms)
        for entry in self.nonces:
            if entry[1] == nonce:
                return ("refused", "nonce", "nonce: already used (a replay)")
        if len(self.nonces) >= self.max_nonces:
            return ("refused", "nonce",
                    "nonce: too many commands inside the replay window; refused for safety")
        self.nonces.append((issued // 1000 - self.epoch_s, nonce))
        return None

    def _forget(self, now_ms):
        # A command issued at T passes the time check only while now <= T + max_age, so its
        # nonce is needed that long (+1 s for the whole-second storage); the runtime keeps
        # twice that, but this memory is small (64) and the board's clock only ever steps
        # once, at the NTP set, before which nothing was accepted (not_before).
        horizon = (now_ms - self.max_age_ms) // 1000 - self.epoch_s - 1
        if (self.nonces and self.nonces[0][0] < horizon) or len(self.nonces) >= self.max_nonces:
            self.nonces = [e for e in self.nonces if e[0] >= horizon]


def _show(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
