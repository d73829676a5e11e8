"""JWT access tokens (RFC 7519), ES256 under a site key: role, scope, audience, expiry, key id.

A token is what an HTTPS client (and any other transport that wants one) presents to say which
of the four spec 10.2.2 roles it acts as (core/authority.py USER_ROLES). What that role may then
do is the rights table's; a token only says who is asking, for which audience, until when.

Claims of a token issued here (all required on verification):

    iss    the site ("pswd-site" unless the site names itself)
    sub    who the token was issued to (a person, a service, a node)
    aud    the service it is for: a node name, "site", or an endpoint group ("https://rack-01")
    role   one of USER_ROLES
    scope  space-separated scopes (RFC 8693 style); may be empty
    iat    issued at, exp expires at (seconds since the epoch); nbf is honoured when present
    header kid: the key id of the signing key

Keys rotate without a restart: a `TokenVerifier` holds several public keys by kid, so tokens
signed by the previous key stay valid until they expire while new tokens use the new key.
On disk (`KeyRing`, a directory, mode 0700): `<kid>.key` (private, 0600, only where tokens are
issued), `<kid>.pub` (public, what verifiers need) and `active` (the kid new tokens use).
The kid is the first 16 hex digits of the SHA-256 of the public key, so it names the key itself.

Every refusal is a `TokenError` whose `claim` names what failed ("signature", "kid", "alg",
"exp", "nbf", "iat", "aud", "iss", "role", "scope", "sub", "token" for something that is not a
JWT at all), so a 401/403 body can say why and intrusion detection can count it.

    ring = KeyRing.create(Path("/var/lib/pswd/token_keys"))      # or KeyRing(path) if it exists
    token = ring.issuer().issue(sub="alice", role="grid_operator", audience="rack-01",
                                ttl_s=3600, scope=("grid",))
    claims = ring.verifier().verify(token, audience="rack-01")   # Claims, or TokenError
    verify(token, audience="rack-01", keys=ring.public_keys())   # the same as a function

Times come from an injectable `now()` (seconds since the epoch) so tests run on a virtual clock.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge_runtime.core.authority import USER_ROLES

ALGORITHM = "ES256"
DEFAULT_ISSUER = "pswd-site"
DEFAULT_LEEWAY_S = 30.0   # clock skew accepted on exp/nbf/iat between issuer and verifier
MAX_TTL_S = 7 * 24 * 3600.0  # a week: longer-lived credentials are certificates, not tokens
PublicKeys = Mapping[str, ec.EllipticCurvePublicKey]
KeySource = PublicKeys | Callable[[], PublicKeys]
REQUIRED = ("iss", "sub", "aud", "role", "iat", "exp")


class TokenError(ValueError):
    """A token was refused; `claim` names what failed, the message says how."""

    def __init__(self, claim: str, message: str) -> None:
        super().__init__(f"token {claim}: {message}")
        self.claim = claim


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says."""

    role: str
    scope: tuple[str, ...]
    sub: str
    exp: float
    kid: str
    aud: tuple[str, ...]
    iss: str
    iat: float

    def require_scope(self, scope: str) -> None:
        """Raise TokenError("scope") unless the token carries `scope`."""
        if scope not in self.scope:
            raise TokenError("scope", f"{scope!r} is not granted (token has "
                             f"{' '.join(self.scope) or 'no scope'})")


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The kid of a key: 16 hex digits of the SHA-256 of its SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def _check_role(role: str) -> None:
    if role not in USER_ROLES:
        raise TokenError("role", f"unknown role {role!r} (one of {', '.join(USER_ROLES)})")


class TokenIssuer:
    """Issues tokens signed by one private key (the site's active token key)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, *, issuer: str = DEFAULT_ISSUER,
                 now: Callable[[], float] = time.time, max_ttl_s: float = MAX_TTL_S) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("ES256 needs a P-256 key")
        self.key = key
        self.kid = key_id(key.public_key())
        self.issuer = issuer
        self.now = now
        self.max_ttl_s = max_ttl_s

    def issue(self, *, sub: str, role: str, audience: str | Iterable[str], ttl_s: float,
              scope: Iterable[str] = (), extra: Mapping[str, Any] | None = None) -> str:
        """A signed compact JWT for `sub` acting as `role` for `audience`, valid `ttl_s` seconds."""
        _check_role(role)
        if not sub:
            raise TokenError("sub", "empty subject")
        if not 0 < ttl_s <= self.max_ttl_s:
            raise TokenError("exp", f"ttl {ttl_s:g} s is outside (0, {self.max_ttl_s:g}] s")
        scopes = tuple(scope)
        if any(not s or " " in s for s in scopes):
            raise TokenError("scope", f"scopes must be non-empty words: {scopes!r}")
        auds = [audience] if isinstance(audience, str) else list(audience)
        if not auds or not all(auds):
            raise TokenError("aud", "no audience")
        now = int(self.now())
        payload: dict[str, Any] = dict(extra or {})
        payload.update({"iss": self.issuer, "sub": sub, "aud": auds[0] if len(auds) == 1 else auds,
                        "role": role, "scope": " ".join(scopes), "iat": now,
                        "exp": now + int(ttl_s)})
        return jwt.encode(payload, self.key, algorithm=ALGORITHM, headers={"kid": self.kid})


class TokenVerifier:
    """Verifies tokens against the site's public keys by kid (several during a rotation)."""

    def __init__(self, keys: KeySource, *,
                 issuer: str = DEFAULT_ISSUER, leeway_s: float = DEFAULT_LEEWAY_S,
                 now: Callable[[], float] = time.time) -> None:
        """`keys`: kid -> public key, or a function returning that (called per token)."""
        self.keys = keys
        self.issuer = issuer
        self.leeway_s = leeway_s
        self.now = now

    def verify(self, token: str, *, audience: str) -> Claims:
        """The claims of `token` if it is valid for `audience` now; TokenError naming the claim."""
        if not isinstance(token, str) or not token.isascii():  # PyJWT would raise on surrogates
            raise TokenError("token", "not a JWT (a compact JWT is ASCII text)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError("token", f"not a JWT ({exc})") from None
        if header.get("alg") != ALGORITHM:
            raise TokenError("alg", f"{header.get('alg')!r} is not accepted (only {ALGORITHM})")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("kid", "the header names no key id")
        keys = self.keys() if callable(self.keys) else self.keys
        key = keys.get(kid)
        if key is None:
            raise TokenError("kid", f"unknown key id {kid!r} (retired, or not this site's)")
        try:
            # Times are checked below against self.now (a node's clock, virtual in tests).
            payload = jwt.decode(token, key, algorithms=[ALGORITHM], audience=audience,
                                 issuer=self.issuer,
                                 options={"require": list(REQUIRED), "verify_exp": False,
                                          "verify_nbf": False, "verify_iat": False})
        except jwt.InvalidSignatureError:
            raise TokenError("signature", f"does not verify under key {kid}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(exc.claim, "missing") from None
        except jwt.InvalidAudienceError as exc:
            raise TokenError("aud", f"not for {audience!r} ({exc})") from None
        except jwt.InvalidIssuerError:
            raise TokenError("iss", f"not issued by {self.issuer!r}") from None
        except jwt.DecodeError as exc:
            raise TokenError("token", f"malformed ({exc})") from None
        except jwt.PyJWTError as exc:  # anything else PyJWT refuses
            raise TokenError("token", str(exc)) from None
        return self._claims(payload, kid)

    def _claims(self, payload: dict[str, Any], kid: str) -> Claims:
        now = self.now()
        times: dict[str, float] = {}
        for name in ("iat", "exp", "nbf"):
            if name not in payload:
                continue
            value = payload[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TokenError(name, f"not a number: {value!r}")
            times[name] = float(value)
        if times["exp"] + self.leeway_s <= now:
            raise TokenError("exp", f"expired {now - times['exp']:.0f} s ago")
        if "nbf" in times and times["nbf"] - self.leeway_s > now:
            raise TokenError("nbf", f"not valid for another {times['nbf'] - now:.0f} s")
        if times["iat"] - self.leeway_s > now:
            raise TokenError("iat", f"issued {times['iat'] - now:.0f} s in the future "
                             "(a clock is wrong)")
        role, sub, scope = payload["role"], payload["sub"], payload.get("scope", "")
        if not isinstance(role, str):
            raise TokenError("role", f"not a string: {role!r}")
        _check_role(role)
        if not isinstance(sub, str) or not sub:
            raise TokenError("sub", f"not a non-empty string: {sub!r}")
        if not isinstance(scope, str):
            raise TokenError("scope", f"not a space-separated string: {scope!r}")
        aud = payload["aud"]
        auds = (aud,) if isinstance(aud, str) else tuple(str(a) for a in aud)
        return Claims(role=role, scope=tuple(scope.split()), sub=sub, exp=times["exp"], kid=kid,
                      aud=auds, iss=str(payload["iss"]), iat=times["iat"])


def verify(token: str, *, audience: str, keys: Mapping[str, ec.EllipticCurvePublicKey],
           issuer: str = DEFAULT_ISSUER, leeway_s: float = DEFAULT_LEEWAY_S,
           now: Callable[[], float] = time.time) -> Claims:
    """Verify `token` for `audience` against `keys` (kid -> public key); TokenError if refused."""
    return TokenVerifier(keys, issuer=issuer, leeway_s=leeway_s, now=now).verify(
        token, audience=audience)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class KeyRing:
    """The site's token keys in a directory: `<kid>.key`, `<kid>.pub` and `active`."""

    def __init__(self, directory: Path, *, issuer: str = DEFAULT_ISSUER) -> None:
        self.directory = Path(directory)
        self.iss = issuer
        self._cache: tuple[int, dict[str, ec.EllipticCurvePublicKey]] | None = None
        if not self.directory.is_dir():
            raise FileNotFoundError(f"{self.directory}: no token key directory "
                                    "(pswd-edge token init, or KeyRing.create)")

    @classmethod
    def create(cls, directory: Path, *, issuer: str = DEFAULT_ISSUER) -> KeyRing:
        """The key ring in `directory`, with a first key made if it has none (first start)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        ring = cls(directory, issuer=issuer)
        if not (directory / "active").exists():
            ring.rotate()
        return ring

    def rotate(self) -> str:
        """Make a new key and make it the active one; older public keys stay accepted."""
        key = ec.generate_private_key(ec.SECP256R1())
        kid = key_id(key.public_key())
        _write(self.directory / f"{kid}.key",
               key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()), 0o600)
        _write(self.directory / f"{kid}.pub",
               key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo),
               0o644)
        _write(self.directory / "active", kid.encode() + b"\n", 0o644)
        return kid

    def retire(self, kid: str) -> None:
        """Stop accepting tokens signed by `kid` (not the active key)."""
        if kid == self.active_kid():
            raise ValueError(f"{kid} is the active key: rotate first")
        for suffix in (".key", ".pub"):
            (self.directory / f"{kid}{suffix}").unlink(missing_ok=True)

    def active_kid(self) -> str:
        """The kid new tokens are signed with."""
        return (self.directory / "active").read_text().strip()

    def public_keys(self) -> dict[str, ec.EllipticCurvePublicKey]:
        """Every accepted key by kid; re-read when the directory changes (no restart needed)."""
        stamp = self.directory.stat().st_mtime_ns
        if self._cache is not None and self._cache[0] == stamp:
            return dict(self._cache[1])
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for path in sorted(self.directory.glob("*.pub")):
            key = serialization.load_pem_public_key(path.read_bytes())
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ValueError(f"{path}: not an EC public key")
            if key_id(key) != path.stem:
                raise ValueError(f"{path}: the file name is not the key's id {key_id(key)}")
            keys[path.stem] = key
        self._cache = (stamp, keys)
        return dict(keys)

    def private_key(self, kid: str | None = None) -> ec.EllipticCurvePrivateKey:
        """The private key `kid` (the active one by default)."""
        path = self.directory / f"{kid or self.active_kid()}.key"
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path}: not an EC private key")
        return key

    def issuer(self, *, now: Callable[[], float] = time.time) -> TokenIssuer:
        """An issuer with the active key."""
        return TokenIssuer(self.private_key(), issuer=self.iss, now=now)

    def verifier(self, *, leeway_s: float = DEFAULT_LEEWAY_S,
                 now: Callable[[], float] = time.time) -> TokenVerifier:
        """A verifier accepting the keys in the ring, re-read when the directory changes."""
        return TokenVerifier(self.public_keys, issuer=self.iss, leeway_s=leeway_s, now=now)
