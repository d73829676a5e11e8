"""JWT tokens (security/tokens.py): ES256 under the site key, every claim refused by name,
rotation by kid without a restart, on a virtual clock."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.core.authority import USER_ROLES
from edge_runtime.security.tokens import (
    Claims,
    KeyRing,
    TokenError,
    TokenIssuer,
    TokenVerifier,
    key_id,
    verify,
)

T0 = 1_800_000_000.0


class Clock:
    """A virtual wall clock."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.create(tmp_path / "token_keys")


def _refused(claim: str, fn: object, *args: object, **kwargs: object) -> TokenError:
    assert callable(fn)
    with pytest.raises(TokenError) as info:
        fn(*args, **kwargs)
    assert info.value.claim == claim, str(info.value)
    assert str(info.value).startswith(f"token {claim}:")
    return info.value


@pytest.mark.parametrize("role", USER_ROLES)
def test_each_role_round_trips(ring: KeyRing, role: str) -> None:
    clock = Clock()
    token = ring.issuer(now=clock).issue(sub="alice", role=role, audience="rack-01",
                                         ttl_s=600, scope=("read", "command"))
    claims = ring.verifier(now=clock).verify(token, audience="rack-01")
    assert claims == Claims(role=role, scope=("read", "command"), sub="alice", exp=T0 + 600,
                            kid=ring.active_kid(), aud=("rack-01",), iss="pswd-site", iat=T0)
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": ring.active_kid(),
                                                "typ": "JWT"}
    claims.require_scope("command")
    _refused("scope", claims.require_scope, "admin")


def test_expiry_and_clock_skew_on_the_virtual_clock(ring: KeyRing) -> None:
    clock = Clock()
    token = ring.issuer(now=clock).issue(sub="a", role="grid_operator", audience="n", ttl_s=60)
    verifier = ring.verifier(now=clock, leeway_s=30)
    clock.t = T0 + 89
    assert verifier.verify(token, audience="n").role == "grid_operator"   # within the leeway
    clock.t = T0 + 90
    err = _refused("exp", verifier.verify, token, audience="n")
    assert "expired 30 s ago" in str(err)
    clock.t = T0 - 31                                                     # issuer clock ahead
    _refused("iat", verifier.verify, token, audience="n")
    clock.t = T0 - 29
    verifier.verify(token, audience="n")


def test_nbf_is_honoured(ring: KeyRing) -> None:
    clock = Clock()
    token = ring.issuer(now=clock).issue(sub="a", role="grid_operator", audience="n", ttl_s=600,
                                         extra={"nbf": int(T0 + 100)})
    _refused("nbf", ring.verifier(now=clock).verify, token, audience="n")
    clock.t = T0 + 100
    ring.verifier(now=clock).verify(token, audience="n")


def test_audience_issuer_and_role_refused_by_name(ring: KeyRing, tmp_path: Path) -> None:
    clock = Clock()
    issuer = ring.issuer(now=clock)
    token = issuer.issue(sub="a", role="workload_operator", audience=["rack-01", "site"],
                         ttl_s=60)
    verifier = ring.verifier(now=clock)
    assert verifier.verify(token, audience="site").aud == ("rack-01", "site")
    _refused("aud", verifier.verify, token, audience="rack-02")
    other = TokenVerifier(ring.public_keys(), issuer="another-site", now=clock)
    _refused("iss", other.verify, token, audience="site")
    _refused("role", issuer.issue, sub="a", role="admin", audience="n", ttl_s=60)
    _refused("exp", issuer.issue, sub="a", role="grid_operator", audience="n", ttl_s=0)
    _refused("sub", issuer.issue, sub="", role="grid_operator", audience="n", ttl_s=60)
    _refused("scope", issuer.issue, sub="a", role="grid_operator", audience="n", ttl_s=60,
             scope=("two words",))
    # A token made with the site key but an unknown role (or a missing claim) is refused too.
    key = ring.private_key()
    for payload, claim in (({"role": "root"}, "role"), ({"role": None}, "role"),
                           ({"sub": ""}, "sub"), ({"scope": ["a"]}, "scope"),
                           ({"exp": "soon"}, "exp")):
        body = {"iss": "pswd-site", "sub": "a", "aud": "n", "role": "grid_operator",
                "iat": int(T0), "exp": int(T0) + 60, **payload}
        forged = jwt.encode(body, key, algorithm="ES256", headers={"kid": ring.active_kid()})
        _refused(claim, verifier.verify, forged, audience="n")
    for missing in ("iss", "sub", "aud", "role", "iat", "exp"):
        body = {"iss": "pswd-site", "sub": "a", "aud": "n", "role": "grid_operator",
                "iat": int(T0), "exp": int(T0) + 60}
        del body[missing]
        forged = jwt.encode(body, key, algorithm="ES256", headers={"kid": ring.active_kid()})
        err = _refused(missing, verifier.verify, forged, audience="n")
        assert "missing" in str(err)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_signature_kid_alg_and_garbage_refused(ring: KeyRing) -> None:
    clock = Clock()
    verifier = ring.verifier(now=clock)
    token = ring.issuer(now=clock).issue(sub="a", role="grid_operator", audience="n", ttl_s=60)
    head, body, sig = token.split(".")
    # The payload edited to another role: the signature no longer verifies.
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["role"] = "infrastructure_manager"
    edited = f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"
    _refused("signature", verifier.verify, edited, audience="n")
    # A key from elsewhere claiming the site's kid.
    stranger = TokenIssuer(ec.generate_private_key(ec.SECP256R1()), now=clock)
    forged = jwt.encode({"iss": "pswd-site", "sub": "a", "aud": "n", "role": "grid_operator",
                         "iat": int(T0), "exp": int(T0) + 60}, stranger.key, algorithm="ES256",
                        headers={"kid": ring.active_kid()})
    _refused("signature", verifier.verify, forged, audience="n")
    _refused("kid", verifier.verify, stranger.issue(sub="a", role="grid_operator",
                                                    audience="n", ttl_s=60), audience="n")
    no_kid = jwt.encode({"sub": "a"}, ring.private_key(), algorithm="ES256")
    _refused("kid", verifier.verify, no_kid, audience="n")
    # alg none and HS256 (the public key used as an HMAC secret) are refused before any key use.
    none = f"{_b64(json.dumps({'alg': 'none', 'kid': ring.active_kid()}).encode())}.{body}."
    _refused("alg", verifier.verify, none, audience="n")
    hs = jwt.encode({"sub": "a"}, "secret-of-at-least-32-bytes-for-hs256!!", algorithm="HS256",
                    headers={"kid": ring.active_kid()})
    _refused("alg", verifier.verify, hs, audience="n")
    for garbage in ("", "abc", "a.b.c", "..", token + "x"):
        with pytest.raises(TokenError) as info:
            verifier.verify(garbage, audience="n")
        assert info.value.claim in ("token", "signature")


def test_rotation_keeps_old_tokens_until_retired_without_a_new_verifier(ring: KeyRing) -> None:
    clock = Clock()
    verifier = ring.verifier(now=clock)          # made once, as a running server would
    old_kid = ring.active_kid()
    old = ring.issuer(now=clock).issue(sub="a", role="grid_operator", audience="n", ttl_s=600)
    new_kid = ring.rotate()
    assert new_kid != old_kid and ring.active_kid() == new_kid
    new = ring.issuer(now=clock).issue(sub="a", role="grid_operator", audience="n", ttl_s=600)
    assert verifier.verify(old, audience="n").kid == old_kid
    assert verifier.verify(new, audience="n").kid == new_kid
    with pytest.raises(ValueError, match="active key"):
        ring.retire(new_kid)
    ring.retire(old_kid)
    _refused("kid", verifier.verify, old, audience="n")
    assert verifier.verify(new, audience="n").kid == new_kid
    assert set(ring.public_keys()) == {new_kid}


def test_key_files_private_and_named_by_their_key(ring: KeyRing) -> None:
    kid = ring.active_kid()
    assert kid == key_id(ring.private_key().public_key())
    assert stat.S_IMODE((ring.directory / f"{kid}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(ring.directory.stat().st_mode) == 0o700
    again = KeyRing.create(ring.directory)        # a second start keeps the key
    assert again.active_kid() == kid
    (ring.directory / f"{kid}.pub").rename(ring.directory / "0000000000000000.pub")
    with pytest.raises(ValueError, match="not the key's id"):
        KeyRing(ring.directory).public_keys()


def test_module_verify_function(ring: KeyRing) -> None:
    clock = Clock()
    token = ring.issuer(now=clock).issue(sub="svc", role="municipal_partner", audience="site",
                                         ttl_s=60)
    claims = verify(token, audience="site", keys=ring.public_keys(), now=clock)
    assert (claims.role, claims.sub) == ("municipal_partner", "svc")
    with pytest.raises(FileNotFoundError, match="no token key directory"):
        KeyRing(ring.directory / "missing")


_FUZZ_RING: dict[str, KeyRing] = {}  # one key ring for every generated case
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                          max_size=3),
                     max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=200),
       header=st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "x"]), _json),
       payload=st.dictionaries(st.sampled_from(["iss", "sub", "aud", "role", "scope", "iat",
                                                "exp", "nbf"]), _json),
       sig=st.binary(max_size=80))
def test_any_input_is_a_token_error_never_a_crash(tmp_path_factory: pytest.TempPathFactory,
                                                   text: str, header: dict[str, object],
                                                   payload: dict[str, object],
                                                   sig: bytes) -> None:
    ring = _FUZZ_RING.get("ring")
    if ring is None:
        ring = _FUZZ_RING["ring"] = KeyRing.create(tmp_path_factory.mktemp("fuzz") / "k")
    verifier = ring.verifier(now=Clock())
    header = {**header, "alg": header.get("alg", "ES256"), "kid": header.get("kid",
                                                                           ring.active_kid())}
    forged = ".".join([_b64(json.dumps(header, default=str).encode()),
                       _b64(json.dumps(payload, default=str).encode()), _b64(sig)])
    # Signed with the site key too: the claims themselves are then what must be refused.
    body = {"iss": "pswd-site", "sub": "a", "aud": "n", "role": "grid_operator",
            "iat": int(T0), "exp": int(T0) + 60, **payload}
    try:
        signed = jwt.encode(body, ring.private_key(), algorithm="ES256",
                            headers={"kid": ring.active_kid()})
    except (TypeError, ValueError):
        signed = forged  # not JSON-encodable by PyJWT: nothing to sign
    for token in (text, forged, signed):
        try:
            claims = verifier.verify(token, audience="n")
        except TokenError as exc:
            assert exc.claim in {"token", "alg", "kid", "signature", "iss", "sub", "aud",
                                 "role", "scope", "iat", "exp", "nbf"}, exc
        else:
            assert token == signed and claims.role in USER_ROLES

