"""OPC UA users: username/password (scrypt hashes) and client certificates, each with one role.

The roles are spec 10.2.2's four (core/authority.py USER_ROLES) plus `viewer`, which may
browse, read and subscribe only (the rights table knows no viewer, so every command it sends
is refused by the same check as any other). Nothing is provisioned by default: no user, no
password, no trusted certificate until `pswd-edge opcua add-user` / `opcua trust` adds one.
The store is one JSON file (mode 0600) beside the trust list in the server's state dir:

    state_dir/users.json       {"users": {name: {role, salt, hash, n, r, p}},
                                "certificates": {name: {role, sha256}}}
    state_dir/trusted/NAME.der  the trust list the certificate validator reads
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edge_runtime.core.authority import USER_ROLES
from edge_runtime.security.ids import IntrusionDetector

VIEWER = "viewer"
ROLES = (*USER_ROLES, VIEWER)
USERS_FILE = "users.json"
TRUSTED_DIR = "trusted"
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.@-]{0,63}$")
# scrypt cost: ~16 MiB and some tens of ms per hash here. A login runs on the node's event
# loop (asyncua asks the user manager synchronously), so a verified password is remembered
# as an HMAC under a per-process key and later logins of that user cost microseconds.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 12


@dataclass
class RoleUser(User):
    """An authenticated OPC UA user with its PSWD role (asyncua's role stays User: no
    session may change the address space)."""

    pswd_role: str = VIEWER


def _hash(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024,
                          dklen=32)


def thumbprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, hex."""
    return hashlib.sha256(der).hexdigest()


def cert_der(data: bytes) -> bytes:
    """A certificate as DER, from PEM or DER bytes (ValueError if neither)."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    x509.load_der_x509_certificate(data)  # raises ValueError when it is not one
    return data


class UserStore:
    """The users and trusted certificates of one OPC UA server (a JSON file, 0600)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / USERS_FILE
        self.trusted_dir = state_dir / TRUSTED_DIR
        self._users: dict[str, dict[str, Any]] = {}
        self._certs: dict[str, dict[str, Any]] = {}
        self._verified: dict[str, bytes] = {}  # name -> HMAC of the password last verified
        self._key = secrets.token_bytes(32)
        self.reload()

    def reload(self) -> None:
        """Read the file again (a user added by the CLI while the node runs)."""
        if not self.path.exists():
            self._users, self._certs = {}, {}
            return
        data = json.loads(self.path.read_text())
        self._users = dict(data.get("users", {}))
        self._certs = dict(data.get("certificates", {}))
        self._verified.clear()

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"users": self._users, "certificates": self._certs}, fh, indent=1)
        os.replace(tmp, self.path)

    @staticmethod
    def _check(name: str, role: str) -> None:
        if not NAME.match(name):
            raise ValueError(f"name {name!r}: letters, digits, '_', '.', '@', '-' only, "
                             "starting with a letter, at most 64")
        if role not in ROLES:
            raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")

    def add_user(self, name: str, role: str, password: str) -> None:
        """Add or replace a username/password user."""
        self._check(name, role)
        if len(password) < MIN_PASSWORD:
            raise ValueError(f"password: at least {MIN_PASSWORD} characters")
        salt = secrets.token_bytes(16)
        digest = _hash(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        self._users[name] = {"role": role, "salt": salt.hex(), "hash": digest.hex(),
                             "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
        self._verified.pop(name, None)
        self._save()

    def trust(self, name: str, role: str, cert: bytes) -> Path:
        """Trust a client certificate (PEM or DER) and map it to `role`; its DER copy goes
        into the trust list. Returns that file."""
        self._check(name, role)
        der = cert_der(cert)
        self.trusted_dir.mkdir(parents=True, exist_ok=True)
        path = self.trusted_dir / f"{name}.der"
        path.write_bytes(der)
        self._certs[name] = {"role": role, "sha256": thumbprint(der)}
        self._save()
        return path

    def users(self) -> dict[str, str]:
        """Username -> role."""
        return {n: str(u["role"]) for n, u in self._users.items()}

    def certificates(self) -> dict[str, str]:
        """Certificate name -> role."""
        return {n: str(c["role"]) for n, c in self._certs.items()}

    def check_password(self, name: str, password: str) -> str | None:
        """The role of `name` if `password` is right, else None (constant-time compare)."""
        user = self._users.get(name)
        if user is None or not isinstance(password, str):
            return None
        mac = hmac.new(self._key, password.encode(), "sha256").digest()
        seen = self._verified.get(name)
        if seen is not None and hmac.compare_digest(seen, mac):
            return str(user["role"])
        digest = _hash(password, bytes.fromhex(user["salt"]), int(user["n"]), int(user["r"]),
                       int(user["p"]))
        if not hmac.compare_digest(digest, bytes.fromhex(user["hash"])):
            return None
        self._verified[name] = mac
        return str(user["role"])

    def cert_user(self, der: bytes) -> tuple[str, str] | None:
        """(name, role) of a trusted certificate, or None."""
        tp = thumbprint(der)
        for name, c in self._certs.items():
            if hmac.compare_digest(str(c["sha256"]), tp):
                return name, str(c["role"])
        return None


class RoleUserManager(UserManager):
    """asyncua's user manager: a session's user and role from its identity token."""

    def __init__(self, store: UserStore, *, allow_anonymous: bool = False,
                 guard: IntrusionDetector | None = None) -> None:
        """`guard`: the node's intrusion detector. asyncua does not tell the user manager the
        peer's address, so a source here is the account ("opcua:user:<name>") or the user
        certificate ("opcua:cert:<thumbprint>"): password guessing on one account blocks
        that account for a while, as the detector blocks an HTTPS peer."""
        self.store = store
        self.allow_anonymous = allow_anonymous
        self.guard = guard

    def _refused(self, source: str, why: str) -> None:
        if self.guard is not None:
            self.guard.record(source, "auth_failure", why)

    def _blocked(self, source: str) -> bool:
        return self.guard is not None and self.guard.blocked(source) > 0

    def get_user(self, iserver: Any, username: str | None = None,
                 password: str | None = None, certificate: Any = None) -> User | None:
        """The user for a token; None refuses the session (BadUserAccessDenied)."""
        if username is not None:
            source = f"opcua:user:{username[:64]}"
            if self._blocked(source):
                return None  # refused without checking the password: guessing is paused
            role = self.store.check_password(username, password or "")
            if role is None:
                self._refused(source, "wrong password or unknown user")
                return None
            return RoleUser(UserRole.User, username, role)
        if certificate is not None:
            der = certificate if isinstance(certificate, bytes) else certificate.public_bytes(
                serialization.Encoding.DER)
            source = f"opcua:cert:{thumbprint(der)[:16]}"
            if self._blocked(source):
                return None
            found = self.store.cert_user(der)
            if found is None:
                self._refused(source, "user certificate not trusted for any role")
                return None
            return RoleUser(UserRole.User, found[0], found[1])
        if self.allow_anonymous:
            return RoleUser(UserRole.User, "anonymous", VIEWER)
        return None


def role_of(user: Any) -> str:
    """The PSWD role of an asyncua session user (viewer for anything unknown)."""
    return user.pswd_role if isinstance(user, RoleUser) else VIEWER
