"""An HttpsService for a running Node from its `[https]` config (the assembler calls this)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_runtime.core.events import Severity
from edge_runtime.federation.inbound import Verifier
from edge_runtime.node import Node
from edge_runtime.security.signing import CommandVerifier, load_keys
from edge_runtime.security.tls import CertWatcher, server_context
from edge_runtime.security.tokens import Claims, KeyRing
from edge_runtime.servers.https.app import ApiParts, Guard, HttpsApi
from edge_runtime.servers.https.config import HttpsConfig
from edge_runtime.servers.https.control import Admission, ControlGate, CoordinatorAdmission
from edge_runtime.servers.https.service import HttpsService
from edge_runtime.servers.https.views import PowerHistory
from edge_runtime.site.coordinator import SiteCoordinator


def https_service(node: Node, cfg: HttpsConfig, *, verifier: Verifier | None,
                  audit: Callable[..., None] | None = None,
                  guard: Guard | None = None) -> HttpsService:
    """The node's HTTPS server: TLS 1.3 context, token check, command gate, views.

    `verifier` is the node's one CommandVerifier (shared with its MQTT link), None when the
    node holds no command keys (control POSTs are then refused)."""
    config = node.config
    if cfg.cert is None or cfg.key is None or cfg.ca is None or cfg.token_keys is None:
        raise ValueError("[https]: cert, key, ca and token_keys are needed (here or in "
                         "[security]); the loader fills them with with_security")
    ring = KeyRing(cfg.token_keys, issuer=cfg.issuer)
    tokens = ring.verifier(now=node.clock.wall)
    audience = cfg.audience or config.name

    def check(token: str) -> Claims:
        return tokens.verify(token, audience=audience)

    def admission() -> Admission | None:
        coordinator = node.services.get("coordinator")
        return CoordinatorAdmission(coordinator) if isinstance(coordinator,
                                                               SiteCoordinator) else None

    def snapshot() -> Any | None:
        coordinator = node.services.get("coordinator")
        return coordinator.snapshot() if isinstance(coordinator, SiteCoordinator) else None

    def control_status() -> dict[str, Any]:
        return {b.name: status() for b in node.role_blocks
                if callable(status := getattr(b, "get_status", None))}

    gate = ControlGate(image=node.image, manual=node.manual, commands=node.commands,
                       owner=lambda point: node.safety.owner.get(point, ""),
                       wall=node.clock.wall, verifier=verifier, max_bytes=cfg.max_body_bytes)
    api = HttpsApi(ApiParts(
        node=config.name, role=config.role, image=node.image, gate=gate,
        rights=node.manual.rights, history=PowerHistory(node.image, node.clock.wall),
        wall=node.clock.wall, monotonic=node.clock.monotonic, tokens=check,
        control_status=control_status, safety_status=node.safety.get_status,
        owner=lambda: dict(node.safety.owner), admission=admission, site_snapshot=snapshot,
        max_body_bytes=cfg.max_body_bytes, rate_per_s=cfg.rate_per_s, burst=cfg.burst,
        guard=guard, audit=audit))
    ctx = server_context(cfg.cert, cfg.key, cfg.ca, cfg.crl,
                         client_cert=cfg.client_cert)  # type: ignore[arg-type]
    # A renewed certificate or a new CRL reaches the listener without a restart; each reload
    # (or failed reload: the old chain stays) is an event the audit log keeps.
    def reloaded(what: str) -> None:
        failed = what.startswith("error")
        node.events.raise_event(node.clock.wall(), "https.certs",
                                Severity.ALARM if failed else Severity.INFO,
                                f"TLS {what}" if failed else
                                f"TLS {what} reloaded without a restart", "certificate")

    watcher = CertWatcher(ctx, cfg.cert, cfg.key, crl=cfg.crl, on_reload=reloaded)
    return HttpsService(api, host=cfg.host, port=cfg.port, ssl_context=ctx, watcher=watcher)


def command_verifier(node: Node, keys: Path | None, journal: Path) -> CommandVerifier | None:
    """The node's one verifier of signed commands (None without keys): the assembler hands
    it to every transport, so a command is taken once whichever way it arrives."""
    if keys is None:
        return None
    return CommandVerifier(load_keys(keys), node=node.config.name, site=node.config.site,
                           wall=node.clock.wall, journal=journal, rights=node.manual.rights)
