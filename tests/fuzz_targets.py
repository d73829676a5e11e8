"""Fuzz targets: one per class of external input, each feeding one input to the REAL parser a
transport uses and classifying what happened (tests/test_fuzz.py, bench/fuzz.py).

    outcome     meaning
    accepted    the parser took it (a typed message, a request, claims, a config)
    refused     the parser refused it with its documented error: the reason names the class
                (MessageError, Invalid(category), TokenError(claim), TelemetryError,
                ConfigError, HTTP 4xx, exit 1)
    crash       anything else: another exception, an HTTP 500, a hang beyond HANG_S

Every target has `generate(rng)`: one input, drawn from a seeded random.Random (valid inputs
from the shipped vectors and encoders, those mutated structurally and byte-wise, re-signed
mutations so the checks behind a signature are reached, random bytes, deep nesting, huge
lengths and numbers). The hypothesis tests draw through `st.randoms()` and hypothesis's own
strategies (`raw_strategy`); the benchmark calls generate() 100,000 times.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import io
import json
import math
import secrets
import shutil
import string
import time
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from edge_runtime.config.iomap import load_io_map
from edge_runtime.config.reader import ConfigError, ErrorLog
from edge_runtime.core.points import Quality, Sample
from edge_runtime.federation.inbound import Invalid, parse_command
from edge_runtime.federation.sensor_state import SensorNodeState
from edge_runtime.federation.state import Identity, birth_json, death_json
from edge_runtime.messages.annex_a import (
    InfrastructureResponse,
    MessageError,
    WorkloadAnnouncement,
    decode_json,
    parse_as,
    parse_message,
)
from edge_runtime.messages.telemetry import (
    Birth,
    PointType,
    TelemetryError,
    declare_points,
    decode_batch,
    decode_birth,
    encode_birth,
    encode_samples,
)
from edge_runtime.messages.validate_cli import validate_main
from edge_runtime.security.signing import ALLOWED_ROLES, ROLES, CommandVerifier, sign, site_target
from edge_runtime.security.tokens import TokenError, TokenIssuer, TokenVerifier, key_id
from tests.fakes import shipped_image

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors"
EXAMPLES = ROOT / "examples"
HANG_S = 2.0  # one input taking longer than this to parse is a crash (a hang)
NODE, SITE = "rack-01", "demo"
ACCEPTED, REFUSED, CRASH = "accepted", "refused", "crash"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one input did: accepted, refused (reason: the error class), or crash."""

    kind: str
    reason: str = ""
    detail: str = ""


def accepted(reason: str = "") -> Outcome:
    """The parser took the input."""
    return Outcome(ACCEPTED, reason)


def refused(reason: str) -> Outcome:
    """The parser refused the input with its documented error `reason`."""
    return Outcome(REFUSED, reason)


def crashed(exc: BaseException) -> Outcome:
    """Any other exception: a crash, with the last frames for the report."""
    frames = "".join(traceback.format_exception(exc)[-4:])
    return Outcome(CRASH, type(exc).__name__, f"{exc!r}"[:300] + "\n" + frames[-1500:])


def timed(feed: Callable[[Any], Outcome], case: Any) -> Outcome:
    """`feed(case)`, any unexpected exception a crash, and a parse spending more than HANG_S
    of CPU a hang (CPU, not wall time: on a shared machine a parse may wait for a core)."""
    start = time.thread_time()
    try:
        out = feed(case)
    except Exception as exc:  # the whole point: anything not classified is a crash
        return crashed(exc)
    took = time.thread_time() - start
    if took > HANG_S:
        return Outcome(CRASH, "hang", f"{took:.1f} s of CPU for one input")
    return out


# --- generic generators ----------------------------------------------------------------------

_EDGE_NUMBERS: tuple[Any, ...] = (0, -1, 1, 2**31, 2**53 + 1, 2**63, 2**64, -(2**63), 10**30,
                                  0.5, -0.0, 1e308, -1e308, 5e-324, 1e-300, 123456789.123)
_EDGE_TEXT = ("", " ", "\x00", "\u202e", "\ud800", "😀" * 3, "a" * 300, "../../etc/passwd",
              "${jndi:x}", "%s%n", "null", "1.0", "2024-02-30T25:61:61Z",
              "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "2026-12-06T04:00:00+14:00")


def random_text(rng: Random, n: int | None = None) -> str:
    """Text of printable ASCII, with sometimes any code point (lone surrogates too)."""
    n = rng.randint(0, 40) if n is None else n
    if rng.random() < 0.7:
        return "".join(rng.choice(string.printable) for _ in range(n))
    return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(n))


def random_bytes(rng: Random, n: int | None = None) -> bytes:
    """Random bytes, mostly short."""
    n = rng.choice((0, 1, 2, 8, 32, 200, 1000)) if n is None else n
    return rng.randbytes(n)


def random_json(rng: Random, depth: int = 0) -> Any:
    """A random JSON-able value (NaN and infinities included: json.dumps writes them)."""
    pick = rng.randint(0, 9 if depth < 3 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.choice(_EDGE_NUMBERS) if rng.random() < 0.5 else rng.randint(-1000, 1000)
    if pick == 3:
        return rng.choice((math.nan, math.inf, -math.inf, rng.uniform(-1e6, 1e6)))
    if pick in (4, 5):
        return rng.choice(_EDGE_TEXT) if rng.random() < 0.3 else random_text(rng)
    if pick == 6:
        return rng.uniform(-200, 200)
    if pick in (7, 8):
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {random_text(rng, rng.randint(0, 8)): random_json(rng, depth + 1)
            for _ in range(rng.randint(0, 4))}


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def mutate_doc(rng: Random, doc: Any, rounds: int | None = None) -> Any:
    """`doc` (a deep copy) with 1-3 structural mutations at random places."""
    doc = json.loads(json.dumps(doc))
    for _ in range(rng.randint(1, 3) if rounds is None else rounds):
        paths = _paths(doc)
        path = rng.choice(paths)
        if not path:
            doc = rng.choice((random_json(rng), [doc], {"x": doc}, doc))
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        op = rng.randint(0, 7)
        if op == 0 and isinstance(parent, dict):
            del parent[key]
        elif op == 0 and isinstance(parent, list):
            parent.pop(key)
        elif op == 1:
            parent[key] = random_json(rng)
        elif op == 2:
            parent[key] = rng.choice((*_EDGE_NUMBERS, math.nan, math.inf, True, None))
        elif op == 3:
            parent[key] = rng.choice(_EDGE_TEXT)
        elif op == 4 and isinstance(parent, dict):
            parent[random_text(rng, rng.randint(1, 10))] = random_json(rng)
        elif op == 5:
            parent[key] = [parent[key]] if rng.random() < 0.5 else {"v": parent[key]}
        elif op == 6:
            value = parent[key]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                parent[key] = rng.choice((-value, value * 1e6, value + 1e-9, str(value)))
            elif isinstance(value, str):
                parent[key] = rng.choice((value[::-1], value * 50, value.upper(), value[:1]))
        else:
            parent[key] = rng.choice((0, "", [], {}, False))
    return doc


def dumps(rng: Random, doc: Any) -> bytes:
    """JSON bytes of `doc`, spaced or not, NaN as Python writes it."""
    try:
        text = json.dumps(doc, separators=rng.choice(((",", ":"), (", ", ": "))),
                          ensure_ascii=rng.random() < 0.5)
    except (ValueError, TypeError):
        text = json.dumps(str(doc))
    return text.encode("utf-8", "surrogatepass")


def mutate_bytes(rng: Random, data: bytes) -> bytes:
    """Byte-level damage: flips, cuts, inserts, splices of nesting and long numbers."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randint(0, 7)
        at = rng.randint(0, len(b)) if b else 0
        if op == 0 and b:
            b[min(at, len(b) - 1)] ^= 1 << rng.randint(0, 7)
        elif op == 1:
            del b[at:at + rng.randint(1, 16)]
        elif op == 2:
            b[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 3:
            b = b[:at]
        elif op == 4:
            b[at:at] = rng.choice((b"[" * 5000, b"{\"a\":" * 3000, b"1" * 5000, b"1e999",
                                   b"-0.0e-99999", b"NaN", b"Infinity", b"\"\\ud800\"",
                                   b"\xef\xbb\xbf", b"\xff\xfe", b"\x00"))
        elif op == 5 and b:
            b[min(at, len(b) - 1)] = rng.choice(b"{}[]\",:0-.eE\\ \x00")
        elif op == 6 and len(b) > 2:
            i, j = sorted((rng.randrange(len(b)), rng.randrange(len(b))))
            b[at:at] = b[i:j]
        else:
            b += rng.randbytes(rng.randint(0, 4))
    return bytes(b)


def deep_json(rng: Random) -> bytes:
    """Deeply nested JSON (arrays or objects), closed or not."""
    n = rng.choice((100, 1000, 20_000, 200_000))
    text = b"[" * n + b"1" + b"]" * n if rng.random() < 0.5 else b'{"a":' * n + b"1" + b"}" * n
    return text if rng.random() < 0.8 else text[: len(text) // 2]


def json_case(rng: Random, seeds: list[Any]) -> bytes:
    """One JSON-ish body: a seed (valid or not), mutated structurally and/or byte-wise, or
    random bytes, or deep nesting, or a huge body."""
    r = rng.random()
    if r < 0.05:
        return random_bytes(rng)
    if r < 0.08:
        return deep_json(rng)
    if r < 0.10:
        return b'{"a":"' + b"x" * rng.choice((65_000, 70_000, 300_000)) + b'"}'
    if r < 0.15:
        return dumps(rng, random_json(rng))
    doc = rng.choice(seeds)
    if r < 0.25:
        return dumps(rng, doc)
    if r < 0.80:
        return dumps(rng, mutate_doc(rng, doc))
    return mutate_bytes(rng, dumps(rng, doc if r < 0.9 else mutate_doc(rng, doc)))


# --- Annex A ---------------------------------------------------------------------------------

def annex_seeds() -> list[Any]:
    """The shipped Annex A vectors (valid and invalid)."""
    return [json.loads(p.read_text()) for p in sorted((VECTORS / "annex_a").glob("*.json"))]


class AnnexA:
    """Annex A messages: parse_message, parse_as(A.1 / A.2) after decode_json."""

    name = "annex_a"

    def __init__(self) -> None:
        self.seeds = annex_seeds()

    def generate(self, rng: Random) -> tuple[str, bytes]:
        """(entry point, body)."""
        return rng.choice(("parse_message", "parse_message", "as_a1", "as_a2")), \
            json_case(rng, self.seeds)

    def feed(self, case: tuple[str, bytes]) -> Outcome:
        """Parse one body through the chosen entry point."""
        entry, raw = case
        try:
            if entry == "parse_message":
                parse_message(raw)
            else:
                kind = WorkloadAnnouncement if entry == "as_a1" else InfrastructureResponse
                parse_as(kind, decode_json(raw))
        except MessageError:
            return refused("MessageError")
        return accepted()


class ValidateCli:
    """`pswd-edge validate -` on a body from standard input: exit 0, 1 (invalid) or 2."""

    name = "validate_cli"

    def __init__(self) -> None:
        self.seeds = annex_seeds()

    def generate(self, rng: Random) -> bytes:
        """A body for standard input."""
        return json_case(rng, self.seeds)

    def feed(self, raw: bytes) -> Outcome:
        """Run validate_main(["-"]) with `raw` on stdin; stdout and stderr captured."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = validate_main(["-"], stdin=io.BytesIO(raw))
        if code == 0 and out.getvalue().startswith("valid "):
            return accepted()
        if code in (1, 2) and err.getvalue():
            return refused(f"exit {code}")
        return Outcome(CRASH, f"exit {code}", f"stdout {out.getvalue()[:200]!r} "
                       f"stderr {err.getvalue()[:200]!r}")


# --- command envelopes -----------------------------------------------------------------------

COMMAND_DEVICES = {"battery": "battery_inverter", "pump1": "cdu_pump_vfd",
                   "valve1": "control_valve"}
CONTROL = ("thermal_control", "battery_control", "grid_signal")


class Commands:
    """`cmd/{kind}` envelopes through inbound.parse_command with a real CommandVerifier (its
    own keys per role) and a ProcessImage over the shipped io_maps."""

    name = "command"

    def __init__(self, max_bytes: int = 64 * 1024) -> None:
        self.keys = {role: secrets.token_bytes(32) for role in ROLES}
        self.verifier = CommandVerifier(self.keys, node=NODE, site=SITE, wall=time.time)
        self.image, _ = shipped_image(COMMAND_DEVICES)
        self.outputs = sorted(self.image.outputs_info)
        self.max_bytes = max_bytes
        self.announcements = [d for d in annex_seeds()
                              if d.get("message_type") == "workload_announcement"]

    def _body(self, rng: Random, kind: str) -> dict[str, Any]:
        if kind in ("workload", "prepare"):
            doc = dict(rng.choice(self.announcements))
            if rng.random() < 0.5:
                doc["site_decision"] = {"approval_status": "approved",
                                        "roles": rng.choice((["rack"], ["cdu", "rack"], None))}
            return doc
        point = rng.choice(self.outputs) if rng.random() < 0.9 else random_text(rng, 12)
        doc: dict[str, Any] = {"PSWD_version": "1.0", "action": rng.choice(
            ("set_output", "set_output", "release_output")), "point": point}
        info = self.image.outputs_info.get(point)
        spec = info.spec if info is not None else None
        lo = spec.minimum if spec is not None and spec.minimum is not None else 0.0
        hi = spec.maximum if spec is not None and spec.maximum is not None else 100.0
        doc["value"] = float(round(rng.uniform(lo, hi)))
        if rng.random() < 0.5:
            doc["command_id"] = random_text(rng, 10)
        return doc

    def signed(self, rng: Random, kind: str, doc: Any) -> Any:
        """`doc` signed for `kind` by a role (usually one allowed to send it)."""
        if not isinstance(doc, dict):
            return doc
        allowed = sorted(ALLOWED_ROLES.get(kind, {"workload_operator", "infrastructure_manager"}))
        if kind == "prepare":
            allowed = ["infrastructure_manager"]
        role = rng.choice(allowed) if rng.random() < 0.9 else rng.choice(ROLES)
        target = site_target(SITE) if kind == "prepare" else NODE
        now = time.time() + rng.choice((0.0, 0.0, 0.0, -40.0, 40.0, -1e9, 1e9))
        try:
            return sign(self.keys[role], target, kind, doc, role=role, now=now)
        except (ValueError, OverflowError, OSError):  # a mutation JSON cannot sign (NaN)
            return doc

    def generate(self, rng: Random) -> tuple[str, bytes, bool]:
        """(kind, payload, retain)."""
        kind = rng.choice((*CONTROL, *CONTROL, "workload", "prepare", "rebirth")) \
            if rng.random() < 0.97 else random_text(rng, 10)
        retain = rng.random() < 0.02
        r = rng.random()
        if kind == "rebirth" or kind not in (*CONTROL, "workload", "prepare"):
            return kind, json_case(rng, [{}]) if r < 0.8 else b"", retain
        doc = self._body(rng, kind)
        if r < 0.15:  # genuine
            payload = dumps(rng, self.signed(rng, kind, doc))
        elif r < 0.55:  # mutated, then signed: the checks behind the signature are reached
            payload = dumps(rng, self.signed(rng, kind, mutate_doc(rng, doc)))
        elif r < 0.80:  # signed, then altered in transit
            payload = dumps(rng, mutate_doc(rng, self.signed(rng, kind, doc)))
        else:
            payload = json_case(rng, [doc, self.signed(rng, kind, doc)])
        return kind, payload, retain

    def feed(self, case: tuple[str, bytes, bool]) -> Outcome:
        """parse_command of one message, as the MQTT link calls it."""
        kind, payload, retain = case
        try:
            request = parse_command(kind, payload, retain=retain, max_bytes=self.max_bytes,
                                    image=self.image, verify=self.verifier, transport="mqtt")
        except Invalid as exc:
            return refused(f"Invalid({exc.category})")
        return accepted(type(request).__name__)


# --- JWT -------------------------------------------------------------------------------------

def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Tokens:
    """Bearer tokens through TokenVerifier.verify with real ES256 keys (two, as in a rotation)."""

    name = "jwt"
    AUDIENCE = NODE

    def __init__(self) -> None:
        self.keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
        self.stranger = ec.generate_private_key(ec.SECP256R1())  # not this site's
        self.pubs = {key_id(k.public_key()): k.public_key() for k in self.keys}
        self.verifier = TokenVerifier(self.pubs, now=time.time)
        self.es256 = ECAlgorithm(ECAlgorithm.SHA256)

    def issue(self, rng: Random, key: ec.EllipticCurvePrivateKey | None = None, *,
              audience: str = AUDIENCE, ttl: float = 600.0, age: float = 0.0) -> str:
        """A genuine token (of `key`, by default one of the site's)."""
        key = key or rng.choice(self.keys)
        issuer = TokenIssuer(key, now=lambda: time.time() - age)
        return issuer.issue(sub=rng.choice(("alice", "svc-1", "x")), role=rng.choice(ROLES),
                            audience=audience, ttl_s=ttl, scope=rng.choice(((), ("read",))))

    def jws(self, header: bytes, payload: bytes, key: ec.EllipticCurvePrivateKey | None) -> str:
        """A compact JWS of raw header and payload bytes, ES256-signed (or unsigned)."""
        head = f"{b64url(header)}.{b64url(payload)}"
        sig = self.es256.sign(head.encode(), key) if key is not None else b""
        return f"{head}.{b64url(sig)}"

    def claims(self, rng: Random) -> dict[str, Any]:
        """A claims set as the site issues it."""
        now = int(time.time())
        return {"iss": "pswd-site", "sub": "alice", "aud": self.AUDIENCE,
                "role": rng.choice(ROLES), "scope": "read", "iat": now, "exp": now + 600}

    def generate(self, rng: Random) -> str:
        """One token: genuine, refused for one reason, forged, mutated or garbage."""
        r = rng.random()
        kid = rng.choice(list(self.pubs))
        key = rng.choice(self.keys)
        if r < 0.10:
            return self.issue(rng)
        if r < 0.15:
            return self.issue(rng, audience=rng.choice(("rack-02", "site", "")) or "x")
        if r < 0.20:
            return self.issue(rng, age=rng.choice((700.0, 1e6, -3600.0)))
        if r < 0.25:
            return self.issue(rng, self.stranger)  # unknown kid
        if r < 0.30:  # alg none
            header = json.dumps({"alg": rng.choice(("none", "None", "NONE")), "kid": kid})
            return self.jws(header.encode(), json.dumps(self.claims(rng)).encode(), None)
        if r < 0.35:  # HS256 under the public key (alg confusion)
            pem = self.pubs[kid].public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
            head = (f"{b64url(json.dumps({'alg': 'HS256', 'kid': kid}).encode())}."
                    f"{b64url(json.dumps(self.claims(rng)).encode())}")
            sig = hmac.new(pem, head.encode(), "sha256").digest()
            return f"{head}.{b64url(sig)}"
        if r < 0.50:  # the site's genuine signature over a mutated claims set
            claims = mutate_doc(rng, self.claims(rng))
            try:
                payload = json.dumps(claims).encode("utf-8", "surrogatepass")
            except (ValueError, TypeError):
                payload = b"{}"
            return self.jws(json.dumps({"alg": "ES256", "kid": kid, "typ": "JWT"}).encode(),
                            payload, key if rng.random() < 0.9 else self.stranger)
        if r < 0.60:  # genuine signature over a mutated header or raw payload bytes
            header = mutate_doc(rng, {"alg": "ES256", "kid": kid, "typ": "JWT"})
            hb = dumps(rng, header) if rng.random() < 0.7 else random_bytes(rng, 20)
            pb = dumps(rng, self.claims(rng)) if rng.random() < 0.5 else \
                mutate_bytes(rng, dumps(rng, self.claims(rng)))
            return self.jws(hb, pb, key)
        if r < 0.85:  # a genuine token damaged in transit
            token = self.issue(rng)
            op = rng.randint(0, 4)
            if op == 0:
                i = rng.randrange(len(token))
                return token[:i] + rng.choice(string.printable) + token[i + 1:]
            if op == 1:
                return ".".join(rng.sample(token.split("."), 3))
            if op == 2:
                return token + "." + token
            if op == 3:
                return token[: rng.randrange(len(token))]
            parts = token.split(".")
            parts[rng.randrange(3)] = b64url(random_bytes(rng))
            return ".".join(parts)
        if r < 0.90:
            return "a" * rng.choice((1_000, 8_000)) + ".b.c"  # 8 KiB: aiohttp's header limit
        return random_text(rng, rng.randint(0, 200))

    def feed(self, token: str) -> Outcome:
        """verify(token, audience) as the HTTPS server calls it."""
        try:
            self.verifier.verify(token, audience=self.AUDIENCE)
        except TokenError as exc:
            return refused(f"TokenError({exc.claim})")
        return accepted()


# --- CBOR telemetry --------------------------------------------------------------------------

TELEMETRY_POINTS = declare_points((f"p{i}", "kW", PointType.FLOAT) for i in range(8))


def _samples(rng: Random) -> list[tuple[int, Sample]]:
    wall = time.time()
    out = []
    for _ in range(rng.randint(0, 12)):
        q = rng.choice((Quality.GOOD,) * 4 + tuple(Quality))
        v = rng.choice((rng.uniform(-1e3, 1e3), 1.0, None if q is not Quality.GOOD else 2.0))
        out.append((rng.randrange(8), Sample(v, q, wall + rng.randint(0, 900) / 1000)))
    return out


_CBOR_ODD: tuple[bytes, ...] = (
    b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff",  # array of 2^64-1 items
    b"\xbb\x7f\xff\xff\xff\xff\xff\xff\xff",  # map of 2^63-1 pairs
    b"\x5b\x7f\xff\xff\xff\xff\xff\xff\xff",  # byte string of 2^63-1 bytes
    b"\x7b\x7f\xff\xff\xff\xff\xff\xff\xff",  # text string of 2^63-1 bytes
    b"\x9f\x9f\x9f\x9f\x9f\x9f",  # open indefinite arrays
    b"\xc2\x5a\x00\x10\x00\x00",  # bignum tag, 1 MiB promised
    b"\xc3\x58\xff" + b"\xff" * 255,  # a 2040-bit negative bignum
    b"\xc4\x82\x3b\x7f\xff\xff\xff\xff\xff\xff\xff\x01",  # decimal 1e-(2^63)
    b"\xc5\x82\x1b\x7f\xff\xff\xff\xff\xff\xff\xff\x01",  # bigfloat 2^(2^63)
    b"\xc0\x74" + b"2024-99-99T99:99:99Z",  # datetime tag, invalid
    b"\xc1\xfb\x7f\xf0\x00\x00\x00\x00\x00\x00",  # epoch datetime inf
    b"\xd8\x1c\x81\xd8\x1d\x00",  # shareable referencing itself
    b"\xd9\x01\x02\x81\x80",  # a set of an unhashable array
    b"\xd8\x1e\x82\x01\x00",  # rational with denominator 0
    b"\xd8\x23\x61(",  # regexp "("
    b"\xd8\x24\x61\xff",  # MIME text
    b"\xd8\x25\x41\x00",  # UUID of 1 byte
    b"\xd8\x20\x61\x00",  # URI
    b"\xd9\xd9\xf7\xa0",  # self-described empty map
    b"\xf8\x00", b"\xff", b"\x1f", b"\xfc",  # reserved / break / simple values
)


class Telemetry:
    """CBOR batches and births through decode_batch (with and without the birth) and
    decode_birth."""

    name = "cbor"

    def __init__(self) -> None:
        self.birth_bytes = encode_birth(TELEMETRY_POINTS, session=7, time_ms=1)
        self.birth = Birth(7, 1, TELEMETRY_POINTS)
        self.vectors = [bytes.fromhex(p.read_text().strip())
                        for p in sorted((VECTORS / "telemetry").glob("*.hex"))]

    def valid(self, rng: Random) -> bytes:
        """A genuine batch or birth."""
        if rng.random() < 0.3:
            return rng.choice([*self.vectors, self.birth_bytes])
        return encode_samples(_samples(rng), session=7, seq=rng.randrange(100),
                              historical=rng.random() < 0.1)

    def structural(self, rng: Random) -> bytes:
        """A decoded valid message with its values replaced by odd CBOR ones."""
        obj = cbor2.loads(self.valid(rng))
        def odd() -> Any:  # a new object each time: one list inserted twice could nest itself
            return rng.choice((
                lambda: None, lambda: True, lambda: -1, lambda: 2**64, lambda: -(2**64) - 1,
                lambda: 2**70, lambda: 1.5, lambda: math.nan, lambda: math.inf, lambda: "x",
                lambda: b"\x00", list, dict, lambda: [[[[]]]], lambda: {1.0: 1},
                lambda: {"k": 0},
                lambda: cbor2.CBORTag(rng.randint(0, 300), rng.choice((0, "x", [1])))))()
        for _ in range(rng.randint(1, 3)):
            paths = _cbor_paths(obj)
            path = rng.choice(paths)
            if not path:
                obj = odd()
                continue
            parent = _get(obj, path[:-1])
            if isinstance(parent, dict) and rng.random() < 0.2:
                parent[rng.choice((8, 99, -1, "0", 0.0))] = odd()
            elif isinstance(parent, list) and rng.random() < 0.2:
                parent.append(odd())
            else:
                parent[path[-1]] = odd()
        try:
            return bytes(cbor2.dumps(obj))
        except (ValueError, TypeError, cbor2.CBOREncodeError):
            return self.valid(rng)

    def generate(self, rng: Random) -> tuple[str, bytes]:
        """(entry point, bytes)."""
        entry = rng.choice(("batch", "batch_birth", "birth"))
        r = rng.random()
        if r < 0.10:
            data = self.valid(rng) if entry != "birth" else self.birth_bytes
        elif r < 0.40:
            data = self.structural(rng)
        elif r < 0.65:
            data = mutate_bytes(rng, self.valid(rng))
        elif r < 0.75:
            n = rng.choice((3, 5, 50, 1000, 100_000))
            data = rng.choice((b"\x81", b"\xa1\x00", b"\x9f", b"\xd8\x1c")) * n + b"\x00"
        elif r < 0.85:
            data = rng.choice(_CBOR_ODD)
            if rng.random() < 0.5:  # inside a valid message
                v = self.valid(rng)
                at = rng.randint(0, len(v))
                data = v[:at] + data + v[at:]
        elif r < 0.90:
            data = b"\x40" * rng.choice((1024 * 1024 + 1, 200_000))
        else:
            data = random_bytes(rng)
        return entry, data

    def feed(self, case: tuple[str, bytes]) -> Outcome:
        """Decode as a batch (with or without the session's birth) or as a birth."""
        entry, data = case
        try:
            if entry == "batch":
                decode_batch(data)
            elif entry == "batch_birth":
                decode_batch(data, birth=self.birth)
            else:
                decode_birth(data)
        except TelemetryError:
            return refused("TelemetryError")
        return accepted()


def _cbor_paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _cbor_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _cbor_paths(v, (*prefix, i))
    return out


# --- sensor node telemetry -------------------------------------------------------------------

SENSOR = "rs-01"
SENSOR_POINTS = declare_points((n, u, PointType.FLOAT) for n, u in (
    ("inlet_temp_c", "degC"), ("outlet_temp_c", "degC"), ("leak", ""),
    ("leak_cable_fault", ""), ("valve", ""), ("overruns", "")))


class SensorNode:
    """A sensor node's state (JSON birth / death) and CBOR telemetry through SensorNodeState,
    the sans-IO half of the sensor-node driver, for the rack of examples/rack_sensors.toml.
    The driver catches ValueError (TelemetryError is one) and counts it: those are refusals."""

    name = "sensor_node"

    def __init__(self) -> None:
        from edge_runtime.assembly import load_node_config

        rack = load_node_config(EXAMPLES / "rack_sensors.toml")
        self.state = SensorNodeState(rack.device("sensors"), SENSOR, stale_s=3.5)
        self.who = Identity(SITE, SENSOR, "sensor", "fuzz-0")
        self.session = 1

    def _state_doc(self, rng: Random) -> bytes:
        wall = time.time()
        if rng.random() < 0.7:
            return birth_json(self.who, session=self.session, wall_s=wall,
                              points=SENSOR_POINTS, period_ms=50)
        return death_json(self.who, session=self.session, wall_s=wall, reason="fuzz")

    def _telemetry(self, rng: Random) -> bytes:
        if rng.random() < 0.2:
            return encode_birth(SENSOR_POINTS, session=self.session, time_ms=0)
        wall = time.time()
        samples = [(rng.randrange(7), Sample(rng.choice((rng.uniform(-50, 150), 0.0, 1.0,
                                                         0.5, 1e30)), Quality.GOOD, wall))
                   for _ in range(rng.randint(0, 8))]
        return encode_samples(samples, session=self.session, seq=rng.randrange(1000))

    def generate(self, rng: Random) -> tuple[str, bytes]:
        """(topic, payload): state or telemetry, genuine, mutated or random."""
        if rng.random() < 0.01:
            self.session += 1
        topic = "state" if rng.random() < 0.35 else "telemetry"
        genuine = self._state_doc(rng) if topic == "state" else self._telemetry(rng)
        r = rng.random()
        if r < 0.3:
            return topic, genuine
        if topic == "state" and r < 0.8:
            return topic, dumps(rng, mutate_doc(rng, json.loads(genuine)))
        if r < 0.9:
            return topic, mutate_bytes(rng, genuine)
        return topic, deep_json(rng) if topic == "state" else random_bytes(rng)

    def feed(self, case: tuple[str, bytes]) -> Outcome:
        """What the driver's _on_message does with one message."""
        topic, payload = case
        now, wall = time.monotonic(), time.time()
        try:
            if topic == "state":
                self.state.state(payload, now, wall)
            else:
                self.state.telemetry(payload, now, wall)
        except ValueError as exc:  # the driver's except: counted, logged, scan unaffected
            return refused(type(exc).__name__)
        return accepted()


# --- config: node configs and io_maps --------------------------------------------------------

NODE_EXAMPLES = ("cdu.toml", "cdu_heat.toml", "rack.toml", "rack_opcua_bess.toml",
                 "rack_sensors.toml", "site.toml")


def toml_value(v: Any) -> str:
    """`v` as an inline TOML value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == math.inf else "-inf" if v == -math.inf
                                     else repr(v))
    if isinstance(v, str):
        return json.dumps(v)  # TOML basic strings take JSON's escapes
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}"
                               for k, x in v.items()) + "}"
    return json.dumps(str(v))


def toml_dumps(doc: dict[str, Any], prefix: str = "") -> str:
    """A dict as TOML: scalars and arrays first, then one [table] per nested dict."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for k, v in doc.items():
        key = json.dumps(str(k))
        if isinstance(v, dict):
            tables.append((f"{prefix}.{key}" if prefix else key, v))
        else:
            lines.append(f"{key} = {toml_value(v)}")
    out = "\n".join(lines) + "\n"
    for name, body in tables:
        out += f"\n[{name}]\n" + toml_dumps(body, name)
    return out


def _toml_json(v: Any) -> Any:
    """TOML values JSON can copy (dates as text)."""
    if isinstance(v, dict):
        return {k: _toml_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_toml_json(x) for x in v]
    if isinstance(v, bool | int | float | str):
        return v
    return str(v)


def toml_mutate(rng: Random, doc: dict[str, Any]) -> Any:
    """Structural mutation, keeping to values TOML can write (no null)."""
    out = _no_null(mutate_doc(rng, doc))
    return out if isinstance(out, dict) else {"node": out}  # a TOML document is a table


def _no_null(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _no_null(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_no_null(x) for x in v if x is not None]
    return v


class Config:
    """Node configs (load_node_config) and io_maps (load_io_map) from mutated TOML: the
    examples and shipped io_maps with keys and values mutated, text damaged, random bytes.
    Files are written to a copy of examples/ so relative paths resolve as in the tree."""

    name = "config"

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "examples"
        if not self.dir.exists():
            shutil.copytree(EXAMPLES, self.dir)
        self.maps_dir = workdir / "io_maps"
        self.maps_dir.mkdir(exist_ok=True)
        self.node_docs = {n: _toml_json(tomllib.loads((EXAMPLES / n).read_text()))
                          for n in NODE_EXAMPLES}
        self.node_text = {n: (EXAMPLES / n).read_bytes() for n in NODE_EXAMPLES}
        maps = sorted((ROOT / "io_maps").glob("*.toml"))
        self.map_docs = {p.stem: _toml_json(tomllib.loads(p.read_text())) for p in maps}
        self.map_text = {p.stem: p.read_bytes() for p in maps}

    def generate(self, rng: Random) -> tuple[str, str, bytes]:
        """("node", example name, text) or ("io_map", model, text)."""
        if rng.random() < 0.7:
            name = rng.choice(NODE_EXAMPLES)
            doc, text = self.node_docs[name], self.node_text[name]
            what = "node"
        else:
            name = rng.choice(sorted(self.map_docs))
            doc, text = self.map_docs[name], self.map_text[name]
            what = "io_map"
        r = rng.random()
        if r < 0.05:
            data = text
        elif r < 0.70:
            data = toml_dumps(toml_mutate(rng, doc)).encode("utf-8", "surrogatepass")
        elif r < 0.95:
            data = mutate_bytes(rng, text)
        else:
            data = random_bytes(rng)
        return what, name, data

    def feed(self, case: tuple[str, str, bytes]) -> Outcome:
        """Write the text where the loader expects it and load it."""
        what, name, data = case
        if what == "node":
            path = self.dir / f"fuzz_{name}"
            path.write_bytes(data)
            from edge_runtime.assembly import load_node_config

            try:
                load_node_config(path)
            except ConfigError:
                return refused("ConfigError")
            return accepted()
        path = self.maps_dir / f"{name}.toml"
        path.write_bytes(data)
        errors = ErrorLog()
        io_map = load_io_map(path, errors)
        if errors.lines:
            return refused("ConfigError")
        if io_map is None:
            return Outcome(CRASH, "None without an error", "load_io_map returned None silently")
        return accepted()


# --- HTTP bodies -----------------------------------------------------------------------------

HTTP_PATHS = {"/PSWD/power/realtime": "GET", "/PSWD/workload/announce": "POST",
              "/PSWD/thermal/status": "GET", "/PSWD/grid/status": "GET",
              "/PSWD/thermal/control": "POST", "/PSWD/grid/signal": "POST",
              "/PSWD/battery/control": "POST"}
HTTP_KINDS = {"/PSWD/thermal/control": "thermal_control", "/PSWD/grid/signal": "grid_signal",
              "/PSWD/battery/control": "battery_control"}
HTTP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class HttpCase:
    """One request: over the node's real TLS 1.3 port or the in-process server."""

    tls: bool
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None


class Http:
    """Requests to the HTTPS server's aiohttp application of a running node (tests/https_env
    builds it): most through aiohttp's in-process test server on the same app object, a
    tenth over the node's real TLS 1.3 listener (one kept-alive connection). An HTTP 500, a
    dropped connection or no answer within HTTP_TIMEOUT_S is a crash; 4xx are refusals.

    The node's intrusion detection keeps counting, but the fuzzing source is unblocked after
    each request (else it would be answered 429 unparsed after five bad tokens), and the rate
    limit is raised by the caller's [https] rate_per_s / burst."""

    name = "http"

    def __init__(self, running: Any) -> None:
        self.r = running  # tests.https_env.Running
        self.node_name = running.node.config.name
        self.image = running.node.image
        self.outputs = sorted(self.image.outputs_info)
        self.server: Any = None
        self.client: Any = None
        self.announcements = [d for d in annex_seeds()
                              if d.get("message_type") == "workload_announcement"]

    async def start(self) -> None:
        """The in-process server and client over the node's HTTPS app."""
        import aiohttp
        from aiohttp.test_utils import TestServer

        api = self.r.https.api
        self.server = TestServer(api.application(), host="127.0.0.1")
        await self.server.start_server()
        # A plain session: aiohttp's TestClient keeps every response until it closes.
        self.client = aiohttp.ClientSession()

    async def close(self) -> None:
        """Stop the in-process server and its client."""
        if self.client is not None:
            await self.client.close()
        if self.server is not None:
            await self.server.close()

    def _token(self, rng: Random, role: str) -> str | None:
        env, r = self.r.env, rng.random()
        if r < 0.70:
            return str(env.token(role, self.node_name))
        if r < 0.75:
            return None
        if r < 0.80:
            return str(env.token(role, "rack-02"))
        if r < 0.85:
            return str(env.token(role, self.node_name, now=time.time() - 3600))
        token = str(env.token(role, self.node_name))
        if r < 0.95:
            i = rng.randrange(len(token))
            return token[:i] + rng.choice(string.ascii_letters) + token[i + 1:]
        return random_text(rng, rng.randint(0, 60)).replace("\n", "").replace("\r", "")

    def _command(self, rng: Random, kind: str, role: str) -> bytes:
        point = rng.choice(self.outputs) if rng.random() < 0.9 else random_text(rng, 12)
        info = self.image.outputs_info.get(point)
        lo = info.spec.minimum if info is not None and info.spec.minimum is not None else 0.0
        hi = info.spec.maximum if info is not None and info.spec.maximum is not None else 100.0
        doc: dict[str, Any] = {"action": rng.choice(("set_output", "set_output",
                                                     "release_output")),
                               "point": point, "value": float(round(rng.uniform(lo, hi))),
                               "command_id": f"fuzz-{rng.randrange(10**6)}"}
        signer = role if rng.random() < 0.9 else rng.choice(ROLES)
        r = rng.random()
        if r < 0.35:
            return dumps(rng, self.r.env.signed(signer, self.node_name, kind, doc))
        if r < 0.65:
            bad = mutate_doc(rng, {"PSWD_version": "1.0", **doc})
            if isinstance(bad, dict):
                with contextlib.suppress(ValueError, TypeError):
                    bad = sign(self.r.env.keys[signer], self.node_name, kind, bad, role=signer,
                               now=time.time())
            return dumps(rng, bad)
        if r < 0.85:
            return dumps(rng, mutate_doc(rng, self.r.env.signed(signer, self.node_name, kind,
                                                                doc)))
        return json_case(rng, [doc])

    def generate(self, rng: Random) -> HttpCase:
        """A request: path, method, bearer token, body (mostly as the endpoint wants them)."""
        path = rng.choice(list(HTTP_PATHS)) if rng.random() < 0.93 else rng.choice((
            "/", "/PSWD/", "/PSWD/power/realtime/x", "/PSWD/../etc/passwd", "/%00",
            "/PSWD/grid/signal?x=" + "a" * 3000, "/" + "a" * 5000))
        method = HTTP_PATHS.get(path.split("?")[0], "GET")
        if rng.random() < 0.05:
            method = rng.choice(("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"))
        if path == "/PSWD/power/realtime" and rng.random() < 0.6:
            path += "?window_s=" + rng.choice(("0", "10", "10.0001", "-1", "nan", "inf",
                                               "1e309", "abc", "", "%00", "1" * 400))
        role = rng.choice(ROLES)
        headers: dict[str, str] = {}
        token = self._token(rng, role)
        if token is not None:
            scheme = "Bearer" if rng.random() < 0.95 else rng.choice(("Basic", "bearer", ""))
            # only what an HTTP client can send at all (no control characters, latin-1)
            value = "".join(c for c in f"{scheme} {token}" if " " <= c <= "~")
            headers["Authorization"] = value
        body: bytes | None = None
        if method == "POST":
            kind = HTTP_KINDS.get(path)
            if kind is not None:
                body = self._command(rng, kind, role)
            else:
                body = json_case(rng, self.announcements)
            headers["Content-Type"] = rng.choice(("application/json",) * 4 + (
                "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"))
        return HttpCase(rng.random() < 0.1, method, path, headers, body)

    async def feed(self, case: HttpCase) -> Outcome:
        """Send the request; classify the answer by status."""
        import asyncio

        import aiohttp

        try:
            if case.tls:
                url = self.r.base + case.path
                ctx = self.r.session.request(case.method, url, data=case.body,
                                             headers=case.headers)
            else:
                ctx = self.client.request(case.method, self.server.make_url(case.path),
                                          data=case.body, headers=case.headers)
            async with asyncio.timeout(HTTP_TIMEOUT_S):
                async with ctx as resp:
                    await resp.read()
                    status = resp.status
        except TimeoutError:
            return Outcome(CRASH, "hang", f"no answer within {HTTP_TIMEOUT_S} s")
        except (aiohttp.ClientError, Exception) as exc:  # a dropped connection, or worse
            return crashed(exc)
        finally:
            ids = self.r.node.services.get("ids")
            if ids is not None:
                ids.unblock("https:127.0.0.1")
        if status >= 500:
            return Outcome(CRASH, f"HTTP {status}", f"{case.method} {case.path}")
        if status < 300:
            return accepted(f"HTTP {status}")
        return refused(f"HTTP {status}")


# --- OPC UA writes and method calls ----------------------------------------------------------

# The controller's methods and their argument types (S String, D Double), as in methods.py.
OPCUA_SIGNATURES: dict[str, tuple[str, ...]] = {
    "ResetTrip": ("S",), "Force": ("S", "D", "D", "S"), "Release": ("S",),
    "SetMode": ("S", "S", "D"), "SetSetpoint": ("S", "D")}


@dataclass(frozen=True, slots=True)
class OpcUaCase:
    """A method call (name, argument variants) or a write (node id, attribute, variant), by a
    session user of some role."""

    role: str | None  # None: no session user (anonymous)
    method: str  # "" for a write
    args: tuple[Any, ...] = ()
    node: Any = None
    attribute: int = 13  # AttributeIds.Value
    value: Any = None


class OpcUa:
    """The OPC UA server's request path (servers/opcua: MethodHandlers, GatedWrites and their
    CommandGate, as OpcUaServer.build wires them) on a running node, driven with random
    arguments: wrong types and counts, NaN, huge strings, unknown points and interlocks, every
    role. The scan tap is the node's scan observer, as in the server; the handlers run in the
    node's loop here (the server runs them in its own thread's loop). Accepted commands wait
    for the scan that applies them. A Bad status code is a refusal; an exception a crash."""

    name = "opcua"

    def __init__(self, node: Any) -> None:
        import asyncio

        from asyncua import ua
        from asyncua.server.address_space import AddressSpace, AttributeService

        from edge_runtime.servers.opcua.binding import ScanTap
        from edge_runtime.servers.opcua.methods import CommandGate, MethodHandlers
        from edge_runtime.servers.opcua.server import GatedWrites

        self.ua = ua
        self.node = node
        self.tap = ScanTap(node.clock.wall)
        node.engine.observers.append(self.tap)
        self.tap.attach(asyncio.get_running_loop())
        self.gate = CommandGate(node, self.tap, timeout_s=1.0)
        self.methods = MethodHandlers(self.gate).table()
        self.points = sorted(node.image.outputs_info)
        self.outputs = {ua.NodeId(i + 1, 2): p for i, p in enumerate(self.points)}
        self.writes = GatedWrites(AttributeService(AddressSpace()), self.gate, self.outputs)
        self.interlocks = sorted(node.safety.states)
        loops = getattr(node.manual.controls, "loops", None)
        self.loops = sorted(loops) if isinstance(loops, dict) else []

    def close(self) -> None:
        """Take the scan tap off the node."""
        if self.tap in self.node.engine.observers:
            self.node.engine.observers.remove(self.tap)

    def _text(self, rng: Random) -> str:
        r = rng.random()
        if r < 0.35:
            return rng.choice(self.points or ["x"])
        if r < 0.45:
            return rng.choice([*self.interlocks, "watchdog", ""])
        if r < 0.55 and self.loops:
            return rng.choice(self.loops)
        if r < 0.65:
            return rng.choice(("Automatic", "Override", "Manual", "Disabled", "manual"))
        if r < 0.70:
            return "x" * rng.choice((5_000, 100_000))
        return rng.choice(_EDGE_TEXT) if r < 0.85 else random_text(rng)

    def _number(self, rng: Random) -> float:
        return rng.choice((math.nan, math.inf, -math.inf, 1e308, -1e308, -0.0, 0.0, 5e-324,
                           rng.uniform(-10, 110), rng.uniform(-1e6, 1e6), 3600.0, 86_401.0))

    def _variant(self, rng: Random, want: Any | None = None) -> Any:
        ua = self.ua
        vt = ua.VariantType
        if want is not None and rng.random() < 0.8:
            return ua.Variant(self._text(rng) if want is vt.String else self._number(rng), want)
        pick = rng.randint(0, 9)
        if pick == 0:
            return ua.Variant(rng.randint(-(2**31), 2**31 - 1), vt.Int32)
        if pick == 1:
            return ua.Variant(rng.random() < 0.5, vt.Boolean)
        if pick == 2:
            return ua.Variant(random_bytes(rng), vt.ByteString)
        if pick == 3:
            return ua.Variant(None)
        if pick == 4:
            return ua.Variant([self._number(rng) for _ in range(3)], vt.Double)
        if pick == 5:
            return ua.Variant(rng.randint(0, 2**64 - 1), vt.UInt64)
        if pick == 6:
            return ua.Variant(float(rng.choice((math.nan, 1e38, -1.5))), vt.Float)
        if pick == 7:
            return ua.Variant(self._text(rng), vt.String)
        if pick == 8:
            return ua.Variant(rng.randint(-128, 127), vt.SByte)
        return ua.Variant(self._number(rng), vt.Double)

    def generate(self, rng: Random) -> OpcUaCase:
        """A call or a write with random arguments by a random role."""
        role = rng.choice((*ROLES, *ROLES, "viewer", "nobody", None))
        vt = self.ua.VariantType
        if rng.random() < 0.75:
            method = rng.choice(sorted(OPCUA_SIGNATURES))
            sig = [vt.String if c == "S" else vt.Double for c in OPCUA_SIGNATURES[method]]
            if rng.random() < 0.1:  # wrong count
                sig = sig[: rng.randrange(len(sig))] if rng.random() < 0.5 else \
                    [*sig, vt.Double]
            return OpcUaCase(role, method, tuple(self._variant(rng, w) for w in sig))
        node = rng.choice(list(self.outputs)) if rng.random() < 0.85 else \
            self.ua.NodeId(rng.randint(1, 10**6), rng.randint(0, 5))
        attribute = 13 if rng.random() < 0.9 else rng.randint(0, 30)
        want = vt.Double if rng.random() < 0.6 else None
        value = self._variant(rng, want) if rng.random() < 0.95 else None
        return OpcUaCase(role, "", node=node, attribute=attribute, value=value)

    def user(self, role: str | None) -> Any:
        """The session user asyncua would hand the service (RoleUser for a known login)."""
        from asyncua.crypto.permission_rules import UserRole

        from edge_runtime.servers.opcua.users import RoleUser

        if role is None:
            return None
        return RoleUser(role=UserRole.User, name=f"fuzz-{role}", pswd_role=role)

    async def feed(self, case: OpcUaCase) -> Outcome:
        """Call the handler / write as the server would; classify the status code."""
        import asyncio

        from asyncua.crypto.permission_rules import User, UserRole
        from asyncua.ua import status_codes

        from edge_runtime.servers.opcua.methods import CURRENT_USER

        ua = self.ua
        user = self.user(case.role)
        try:
            async with asyncio.timeout(HTTP_TIMEOUT_S):
                if case.method:
                    CURRENT_USER.set(user)
                    result = await self.methods[case.method](ua.NodeId(1, 2), *case.args)
                    codes = [result] if isinstance(result, ua.StatusCode) else []
                else:
                    data = ua.DataValue(case.value) if case.value is not None else None
                    wv = ua.WriteValue(NodeId=case.node, AttributeId=case.attribute,
                                       Value=data)
                    codes = await self.writes.write(ua.WriteParameters(NodesToWrite=[wv]),
                                                    user or User(role=UserRole.Anonymous))
        except TimeoutError:
            return Outcome(CRASH, "hang", f"no answer within {HTTP_TIMEOUT_S} s")
        except Exception as exc:  # asyncua would answer BadInternalError: a crash here
            return crashed(exc)
        bad = [c for c in codes if not c.is_good()]
        if not bad:
            return accepted()
        name = status_codes.get_name_and_doc(bad[0].value)[0]
        return refused(name)
