"""Admissions exchanged between coordinator instances, and who may send them (issue 8, 10).

Each instance books what the others admitted, so instances behind one shared subscription do
not hand out the same headroom. They used to learn it from the public A.2 on
`workload/response/+`, which anyone on the broker could publish: one forged 1,000 MW approval
dated 2099 blocked every admission until restart. Now an instance publishes each admission
it makes on its own `pswd/v1/{site}/coordinator/{instance}/decision` while another instance
is online (their liveness states say so; QoS 0: a lost peer booking costs precision, not
safety), and the others book only what passes two fences:

- the broker: only the coordinators' identities may write under pswd/v1/{site}/coordinator/
  (Mosquitto ACL in the README), so nobody else can publish there at all;
- the signature, when `[site] coordinator_keys` is set (every instance holds the same
  infrastructure_manager.key): the body is the HMAC-SHA256 envelope of
  security/signing.py (timestamp, nonce, role, signature) over node = the site and kind =
  KIND, so it cannot be replayed as a command, to another site, or altered. Unsigned or
  badly signed bodies are refused. Without keys, the ACL alone fences them (warned at start).

Whatever the fences, the body must make sense: its timestamp within max_clock_skew_s of
this instance's clock, its start no further ahead than max_start_ahead_s, its power finite
and within the site's limit, a nonce not seen before. Refusals are counted by reason and
logged at most once every LOG_EVERY_S (a flood must not flood the log).

Body (JSON): PSWD_version, workload_id, approval_status, approved_power_kw, heat_kw,
start_time (RFC 3339), ramp_kw_per_s, instance, then timestamp / nonce / role / signature.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import secrets
from collections import Counter, OrderedDict
from datetime import UTC, datetime
from typing import Any

from edge_runtime import PSWD_VERSION
from edge_runtime.messages.models import ApprovalStatus, format_datetime, parse_datetime
from edge_runtime.security.signing import mac, sign
from edge_runtime.site.admission import Decision
from edge_runtime.site.config import PEER_ROLE, SiteConfig

log = logging.getLogger(__name__)
KIND = "coordinator_decision"
LOG_EVERY_S = 10.0
MAX_NONCES = 100_000
_ADMITTED = {s.value: s for s in ApprovalStatus if s is not ApprovalStatus.REJECTED}


def _iso(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def decision_body(site: str, instance: str, workload_id: str, d: Decision, now: float,
                  key: bytes | None) -> bytes:
    """What an instance publishes about one admission (signed when it holds the key)."""
    doc: dict[str, Any] = {
        "PSWD_version": PSWD_VERSION, "workload_id": workload_id, "approval_status": d.status.value,
        "approved_power_kw": d.approved_kw, "heat_kw": d.heat_kw, "start_time": _iso(d.start),
        "ramp_kw_per_s": d.ramp_kw_per_s, "instance": instance}
    if key is not None:
        doc = sign(key, site, KIND, doc, role=PEER_ROLE, now=now, nonce=secrets.token_hex(12))
    else:
        doc["timestamp"] = _iso(now)
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


class PeerRefused(ValueError):
    """A peer decision not booked; the message names the field at fault."""


class PeerDecisions:
    """Checks what other instances say they admitted (see the module docstring)."""

    def __init__(self, site: str, config: SiteConfig) -> None:
        self.site = site
        self.config = config
        self.key = config.peer_key
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self.refused: Counter[str] = Counter()  # by field at fault
        self._logged_at = -math.inf
        self._unlogged = 0

    def check(self, instance: str, payload: bytes, now: float) -> tuple[str, Decision]:
        """(workload_id, decision to book); PeerRefused naming the field otherwise."""
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            raise PeerRefused("(root): not JSON") from None
        if not isinstance(doc, dict):
            raise PeerRefused("(root): not a JSON object")
        if self.key is not None:
            signature = doc.get("signature")
            if not isinstance(signature, str) or doc.get("role") != PEER_ROLE:
                raise PeerRefused(f"signature: required (role {PEER_ROLE}, HMAC-SHA256)")
            if not hmac.compare_digest(signature, mac(self.key, self.site, KIND, doc)):
                raise PeerRefused("signature: does not match (wrong key, site or altered)")
        if doc.get("instance") != instance:
            raise PeerRefused(f"instance: {doc.get('instance')!r} published on {instance!r}'s "
                              "topic")
        issued = self._time(doc, "timestamp")
        skew = self.config.max_clock_skew_s
        if abs(issued - now) > skew:
            raise PeerRefused(f"timestamp: {issued - now:+.0f} s from this coordinator's "
                              f"clock, beyond max_clock_skew_s {skew:g}")
        start = self._time(doc, "start_time")
        if start - now > self.config.max_start_ahead_s or now - start > skew:
            raise PeerRefused(f"start_time: {start - now:+.0f} s from now, outside "
                              f"-{skew:g} .. +{self.config.max_start_ahead_s:g} s")
        wid, status = doc.get("workload_id"), _ADMITTED.get(str(doc.get("approval_status")))
        if not isinstance(wid, str) or not wid:
            raise PeerRefused("workload_id: required")
        if status is None:
            raise PeerRefused("approval_status: must be approved or approved_with_conditions")
        kw = self._number(doc, "approved_power_kw", self.config.power_limit_kw)
        heat = self._number(doc, "heat_kw", math.inf)
        ramp = self._number(doc, "ramp_kw_per_s", self.config.ramp_limit_kw_per_s)
        if self.key is not None:  # a replay of a genuine one would restore a superseded booking
            nonce = str(doc.get("nonce"))
            self._forget(now)
            if nonce in self._nonces:
                raise PeerRefused("nonce: already used (a replay)")
            if len(self._nonces) >= MAX_NONCES:
                raise PeerRefused("nonce: too many decisions inside the replay window")
            self._nonces[nonce] = issued
        return wid, Decision(status, kw, heat, start, ramp, ())

    def refuse(self, instance: str, why: PeerRefused, now: float) -> None:
        """Count a refusal; log it, at most once every LOG_EVERY_S with the count since."""
        self.refused[str(why).partition(":")[0]] += 1
        if now - self._logged_at < LOG_EVERY_S:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more refused since the last report)" if self._unlogged else ""
        log.warning("peer decision from coordinator/%s refused: %s%s", instance, why, more)
        self._logged_at, self._unlogged = now, 0

    @staticmethod
    def _time(doc: dict[str, Any], key: str) -> float:
        try:
            return parse_datetime(str(doc.get(key))).timestamp()
        except ValueError as exc:
            raise PeerRefused(f"{key}: {exc}") from None

    @staticmethod
    def _number(doc: dict[str, Any], key: str, most: float) -> float:
        v = doc.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= most:
            raise PeerRefused(f"{key}: must be a number from 0 to {most:g}, got {v!r}"[:200])
        return float(v)  # NaN fails the range check above

    def _forget(self, now: float) -> None:
        horizon = now - 2.0 * self.config.max_clock_skew_s
        while self._nonces and next(iter(self._nonces.values())) < horizon:
            self._nonces.popitem(last=False)
