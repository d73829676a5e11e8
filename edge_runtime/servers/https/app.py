"""The aiohttp application of the HTTPS server: middleware, then the seven routes of Table 3.

Every request goes through, in this order:
1. the source's block (intrusion detection) and its rate limit: 429 with Retry-After;
2. the bearer token (JWT, security/tokens.py) for this node's audience: 401 naming the claim
   (an authentication failure is audited and counted against the source);
3. whether this node serves the function (a CDU has no battery to control): 404;
4. the body limit (413) for POSTs; then the route, whose refusals are ApiErrors.
Every error, aiohttp's own 404 and 405 included, is a JSON body {"error", "field"}.

Who may do what is the rights table's (core/authority.py): the GETs are open to each of the
four roles, an announcement needs the announce right, a control command the rights of its
action and channel on the class of the output it moves (checked by the command path).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from edge_runtime.core.authority import Rights
from edge_runtime.servers.https.control import CONTROL_KINDS, Admission, ControlGate, announce
from edge_runtime.servers.https.errors import ApiError, error_response, json_response
from edge_runtime.servers.https.limits import RateLimiter
from edge_runtime.servers.https.views import (
    GRID_CLASSES,
    THERMAL_CLASSES,
    THERMAL_UNITS,
    PowerHistory,
    envelope,
    grid_doc,
    realtime_doc,
    thermal_doc,
)

log = logging.getLogger(__name__)

MAX_WINDOW_S = 10.0


class Claims(Protocol):
    """What the app reads of a verified token (security/tokens.py Claims)."""

    @property
    def role(self) -> str: ...
    @property
    def sub(self) -> str: ...


CLAIMS_KEY = web.RequestKey("pswd_claims", Claims)  # the verified token of a request
TokenCheck = Callable[[str], Claims]  # token -> claims, or raises TokenError (has .claim)


class Guard(Protocol):
    """Intrusion detection (security/ids.py IntrusionDetector): offences per source."""

    def record(self, source: str, kind: str, detail: str = "") -> bool:
        """Count an offence."""
        ...

    def blocked(self, source: str) -> float:
        """Seconds the source stays blocked (0: not blocked)."""
        ...


@dataclass(slots=True)
class ApiParts:
    """What the server needs of its node, each a narrow piece (the assembler wires them)."""

    node: str
    role: str
    image: Any  # core.image.ProcessImage
    gate: ControlGate
    rights: Rights
    history: PowerHistory
    wall: Callable[[], float]
    monotonic: Callable[[], float]
    tokens: TokenCheck
    control_status: Callable[[], dict[str, Any]]
    safety_status: Callable[[], dict[str, Any]]
    owner: Callable[[], dict[str, str]]  # output -> what drives it after the last scan
    admission: Callable[[], Admission | None] = lambda: None
    site_snapshot: Callable[[], Any | None] = lambda: None
    max_body_bytes: int = 64 * 1024
    rate_per_s: float = 20.0
    burst: int = 40
    guard: Guard | None = None
    audit: Callable[..., None] | None = None
    counts: dict[str, int] = field(default_factory=dict)


class HttpsApi:
    """The routes and their middleware over one node (see the module docstring)."""

    def __init__(self, parts: ApiParts) -> None:
        self.p = parts
        self.limiter = RateLimiter(parts.rate_per_s, parts.burst, clock=parts.monotonic)
        self.served = self._served()
        self.counts: dict[str, int] = parts.counts

    def _served(self) -> dict[str, str]:
        """Route -> "" when this node serves it, else why not (answered 404)."""
        image, role = self.p.image, self.p.role
        classes = {i.spec.output_class for i in image.outputs_info.values()}
        thermal = bool(classes & THERMAL_CLASSES) or any(
            i.unit in THERMAL_UNITS for i in image.inputs_info.values())
        battery = bool(classes & GRID_CLASSES)
        why = f"is not served by this {role} node ({self.p.node}): "
        return {
            "/PSWD/power/realtime": "",
            "/PSWD/workload/announce": "" if role == "site" else
                why + "announcements go to the site coordinator",
            "/PSWD/thermal/status": "" if thermal else why + "it has no thermal points",
            "/PSWD/thermal/control": "" if classes & THERMAL_CLASSES else
                why + "it drives no thermal output",
            "/PSWD/grid/status": "" if battery or role == "site" or self.p.history.points
                else why + "it has no grid or battery points",
            "/PSWD/grid/signal": "" if battery else why + "it drives no battery",
            "/PSWD/battery/control": "" if battery else why + "it drives no battery",
        }

    def application(self) -> web.Application:
        """The aiohttp application (client_max_size above the limit: we answer 413 ourselves)."""
        app = web.Application(middlewares=[self._middleware],
                              client_max_size=self.p.max_body_bytes + 1)
        app.router.add_get("/PSWD/power/realtime", self.realtime)
        app.router.add_post("/PSWD/workload/announce", self.announce)
        app.router.add_get("/PSWD/thermal/status", self.thermal_status)
        app.router.add_get("/PSWD/grid/status", self.grid_status)
        for path in CONTROL_KINDS:
            app.router.add_post(path, self.control)
        return app

    # -- middleware -----------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        source = request.remote or "?"
        try:
            self._admit(source)
            try:
                if (unrouted := request.match_info.http_exception) is not None:
                    raise unrouted  # no such path (404) or method (405)
                request[CLAIMS_KEY] = self._authenticate(request, source)
                why = self.served.get(request.path, "")
                if why:
                    raise ApiError(404, f"{request.path} {why}", "$")
                response = await handler(request)
            except web.HTTPException as exc:  # aiohttp's 404 / 405 / 413, as JSON
                raise ApiError(exc.status, exc.reason, "$",
                               {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers
                               else None) from None
        except ApiError as err:
            self._count(err.status)
            self._report(source, request, err)
            return error_response(err)
        self._count(response.status)
        return response

    def _admit(self, source: str) -> None:
        guard = self.p.guard
        if guard is not None and (left := guard.blocked(f"https:{source}")) > 0:
            raise ApiError(429, f"source {source} is blocked for {left:.0f} s more (intrusion "
                           "detection)", "$", {"Retry-After": str(max(1, round(left)))})
        wait = self.limiter.take(source)
        if wait > 0:
            raise ApiError(429, f"more than {self.limiter.rate:g} requests/s from {source}",
                           "$", {"Retry-After": str(max(1, round(wait + 0.5)))})

    def _authenticate(self, request: web.Request, source: str) -> Claims:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="pswd", error="invalid_token"'}
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "a bearer token is required (Authorization: Bearer <JWT>)",
                           "Authorization", {"WWW-Authenticate": 'Bearer realm="pswd"'})
        try:
            return self.p.tokens(token.strip())
        except ValueError as exc:  # TokenError names the claim that failed
            raise ApiError(401, str(exc), "Authorization", challenge) from None

    def _count(self, status: int) -> None:
        self.counts[str(status)] = self.counts.get(str(status), 0) + 1

    def _report(self, source: str, request: web.Request, err: ApiError) -> None:
        """Audit authentication and rights failures; count offences for intrusion detection
        (the words of security/ids.py offence_of: a mistyped value is no offence)."""
        kind: str | None = None
        if err.status in (400, 413) or (err.status == 422 and err.field != "value"):
            kind = "malformed"
        elif err.status == 401:
            kind = "replay" if err.field in ("nonce", "timestamp", "signed_at") \
                else "auth_failure"
        elif err.status == 403:
            kind = "auth_failure"
        if kind is None:
            return
        log.warning("https %s %s from %s: %d %s", request.method, request.path, source,
                    err.status, err.error)
        if self.p.guard is not None:
            self.p.guard.record(f"https:{source}", kind, err.error[:120])
        if self.p.audit is not None and err.status in (401, 403):
            self.p.audit("auth_failure", source=f"https:{source}", status=err.status,
                         request=f"{request.method} {request.path}", reason=err.error[:300])

    # -- routes ---------------------------------------------------------------------------
    def _head(self) -> dict[str, Any]:
        return envelope(self.p.node, self.p.role, self.p.wall())

    async def realtime(self, request: web.Request) -> web.Response:
        """GET /PSWD/power/realtime[?window_s=S]: latest power points and 100 ms samples."""
        raw = request.query.get("window_s", "1")
        try:
            window = float(raw)
        except ValueError:
            window = -1.0
        if not 0.0 <= window <= MAX_WINDOW_S:
            raise ApiError(422, f"window_s: a number of seconds from 0 to {MAX_WINDOW_S:g}, "
                           f"got {raw!r}"[:200], "window_s")
        return json_response(realtime_doc(self._head(), self.p.image, self.p.history, window))

    async def thermal_status(self, request: web.Request) -> web.Response:
        """GET /PSWD/thermal/status."""
        return json_response(thermal_doc(self._head(), self.p.image, self.p.owner(),
                                          self.p.control_status(), self.p.safety_status()))

    async def grid_status(self, request: web.Request) -> web.Response:
        """GET /PSWD/grid/status."""
        return json_response(grid_doc(self._head(), self.p.image, self.p.owner(),
                                      self.p.control_status(), self.p.site_snapshot()))

    async def _body(self, request: web.Request) -> bytes:
        limit = self.p.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, f"body of {request.content_length} bytes, larger than the "
                           f"{limit}-byte limit", "$")
        body = await request.content.read(limit + 1)
        if len(body) > limit:
            raise ApiError(413, f"body larger than the {limit}-byte limit", "$")
        return body

    async def announce(self, request: web.Request) -> web.Response:
        """POST /PSWD/workload/announce: an A.1 in, the site's A.2 out."""
        body = await self._body(request)
        claims = request[CLAIMS_KEY]
        answer = announce(body, claims.role, self.p.rights, self.p.admission(), self.p.wall())
        return web.Response(status=200, body=answer, content_type="application/json")

    async def control(self, request: web.Request) -> web.Response:
        """POST a signed control command (thermal_control, grid_signal, battery_control)."""
        body = await self._body(request)
        claims = request[CLAIMS_KEY]
        doc = self.p.gate.submit(CONTROL_KINDS[request.path], body, claims.role)
        return json_response(doc, 202)

    def get_status(self) -> dict[str, Any]:
        """Answers by status, rate limiter, commands accepted."""
        return {"answers": dict(self.counts), "rate": self.limiter.get_status(),
                "commands_accepted": self.p.gate.accepted,
                "served": sorted(p for p, why in self.served.items() if not why)}
