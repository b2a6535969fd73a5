"""Who is asking: an `Identity` (user and groups) from a bearer token checked against the users
file, from the headers of an authenticating proxy on a trusted network, or, on Databricks Model
Serving, from the caller's own credentials. Tokens are stored as SHA-256 digests only, and a
presented token is compared with every stored digest in constant time."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from lakerag.access.permissions import EVERYONE
from lakerag.settings import AccessSettings

LOOPBACK_NAMES = ("localhost",)
TRACE_USER = "mlflow.trace.user"  # MLflow's standard trace metadata key for who asked


@dataclass(frozen=True)
class Identity:
    """A caller: a user name and the groups they read as (always including EVERYONE)."""

    user: str
    groups: tuple[str, ...]

    @classmethod
    def of(cls, user: str, groups: Iterable[str] = ()) -> "Identity":
        """An identity whose groups are `groups` plus EVERYONE, sorted."""
        return cls(user, tuple(sorted(set(groups) | {EVERYONE})))

    def record(self) -> dict[str, Any]:
        """As sent in a request's custom_inputs.identity."""
        return {"user": self.user, "groups": list(self.groups)}

    @classmethod
    def from_record(cls, record: Any) -> "Identity":
        """custom_inputs.identity -> Identity; ValueError when it is malformed."""
        if not isinstance(record, dict) or not isinstance(record.get("user"), str) or not record["user"]:
            raise ValueError('custom_inputs.identity must be {"user": NAME, "groups": [...]}')
        groups = record.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise ValueError("custom_inputs.identity.groups must be a list of group names")
        return cls.of(record["user"], groups)


ANONYMOUS = Identity.of("anonymous")  # a caller on loopback when no authentication is configured


def token_digest(token: str) -> bytes:
    """The SHA-256 digest a token is stored and compared as."""
    return hashlib.sha256(token.encode("utf-8")).digest()


class UserDirectory:
    """The users file: each user's groups and the digest of their bearer token."""

    def __init__(self, users: Mapping[str, Identity], digests: Mapping[str, bytes]):
        self.users, self._digests = dict(users), list(digests.items())

    @classmethod
    def load(cls, path: str | Path) -> "UserDirectory":
        """Read {users: {NAME: {groups: [...], token_sha256: HEX}}} (YAML or JSON)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"users file {path} not found: create it with `lakerag add-user --users-file {path}`")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        users, digests = {}, {}
        for name, entry in (data.get("users") or {}).items():
            if not isinstance(entry, dict) or not isinstance(entry.get("groups", []), list):
                raise ValueError(f"users file {path}: {name!r} must have groups: [...] (and token_sha256)")
            users[name] = Identity.of(str(name), entry.get("groups", []))
            if entry.get("token_sha256"):
                digest = bytes.fromhex(entry["token_sha256"])
                if len(digest) != 32:
                    raise ValueError(f"users file {path}: token_sha256 of {name!r} is not a SHA-256 hex digest")
                digests[name] = digest
        return cls(users, digests)

    @classmethod
    def from_settings(cls, access: AccessSettings) -> "UserDirectory | None":
        """The users file access.users_file names, else the one $<access.users_env> names; None
        when neither is set."""
        path = access.users_file or os.environ.get(access.users_env, "")
        return cls.load(path) if path else None

    def authenticate(self, token: str) -> Identity | None:
        """The user whose token this is, or None. Every stored digest is compared, each with
        hmac.compare_digest, so the time taken does not tell how much of a token matched."""
        presented, found = token_digest(token), None
        for name, digest in self._digests:
            if hmac.compare_digest(presented, digest):
                found = name
        return self.users[found] if found else None

    def identity(self, user: str) -> Identity:
        """The named user's identity; LookupError when the file has no such user."""
        if user not in self.users:
            raise LookupError(f"unknown user {user!r}: add them to the users file (`lakerag add-user`)")
        return self.users[user]


def add_user(path: str | Path, user: str, groups: Iterable[str]) -> str:
    """Add (or replace) `user` in the users file with a new random token; returns the token,
    which is stored only as its digest (the file is created readable by its owner only)."""
    path = Path(path)
    data = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}
    token = secrets.token_urlsafe(32)
    data.setdefault("users", {})[user] = {"groups": sorted(set(groups)), "token_sha256": token_digest(token).hex()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    return token


@dataclass(frozen=True)
class ProxyTrust:
    """An authenticating proxy: its identity headers are believed from these networks only."""

    user_header: str
    groups_header: str
    networks: tuple

    @classmethod
    def from_settings(cls, access: AccessSettings) -> "ProxyTrust | None":
        if not access.proxy_user_header:
            return None
        return cls(access.proxy_user_header, access.proxy_groups_header,
                   tuple(ipaddress.ip_network(cidr, strict=False) for cidr in access.trusted_proxies))

    def identity(self, client_host: str | None, headers: Mapping[str, str]) -> Identity | None:
        """The identity the proxy asserts, when the request came from a trusted address."""
        user = headers.get(self.user_header)
        if not user or not client_host or not self.trusts(client_host):
            return None
        groups = headers.get(self.groups_header, "") if self.groups_header else ""
        return Identity.of(user, [g.strip() for g in groups.split(",") if g.strip()])

    def trusts(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class UnsafeBind(ValueError):
    """`serve` asked to listen beyond loopback with no way to authenticate."""


class Authenticator:
    """Resolves a request's identity: the trusted proxy's headers, else a bearer token."""

    def __init__(self, directory: UserDirectory | None, proxy: ProxyTrust | None):
        self.directory, self.proxy = directory, proxy

    @classmethod
    def from_settings(cls, access: AccessSettings) -> "Authenticator":
        return cls(UserDirectory.from_settings(access), ProxyTrust.from_settings(access))

    @property
    def enabled(self) -> bool:
        """False when neither tokens nor a proxy are configured: every caller is ANONYMOUS."""
        return self.directory is not None or self.proxy is not None

    def identify(self, client_host: str | None, headers: Mapping[str, str], token: str | None) -> Identity | None:
        """The caller, or None when authentication is on and the request proves no identity."""
        if not self.enabled:
            return ANONYMOUS
        if self.proxy is not None and (asserted := self.proxy.identity(client_host, headers)):
            return asserted
        if token and self.directory is not None:
            return self.directory.authenticate(token)
        return None

    def check_bind(self, host: str) -> None:
        """Refuse (UnsafeBind saying what to set) to listen beyond loopback without authentication."""
        if self.enabled or is_loopback(host):
            return
        raise UnsafeBind(
            f"refusing to serve on {host} without authentication: anyone who reaches the port could read every "
            "document. Set access.users_file (or $LAKERAG_USERS_FILE; `lakerag add-user` makes one), or "
            "access.proxy_user_header with access.trusted_proxies behind an authenticating proxy, or listen "
            "on --host 127.0.0.1")


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def databricks_caller() -> Identity:
    """The caller of a Databricks Model Serving endpoint, read with their own downscoped
    credentials (on-behalf-of-user authentication; elsewhere the SDK's default credentials)."""
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.credentials_provider import ModelServingUserCredentials

    me = WorkspaceClient(credentials_strategy=ModelServingUserCredentials()).current_user.me()
    return Identity.of(me.user_name, [group.display for group in me.groups or [] if group.display])


def in_model_serving() -> bool:
    """True inside a Databricks Model Serving container that holds the caller's credentials."""
    from databricks.sdk.credentials_provider import ModelServingAuthProvider

    return ModelServingAuthProvider.should_fetch_model_serving_environment_oauth()


def request_identity(custom_inputs: Mapping[str, Any] | None, access: AccessSettings) -> Identity:
    """Who asks a served chain. With access.identity databricks: inside Model Serving, the
    caller (whatever the request claims); in a job, the identity the job put in
    custom_inputs, else the job's own. With request: custom_inputs.identity, which `lakerag
    serve` and `serve-batch` set after authenticating, else ANONYMOUS."""
    if access.identity == "databricks" and in_model_serving():
        return databricks_caller()
    record = (custom_inputs or {}).get("identity")
    if record is None:
        return databricks_caller() if access.identity == "databricks" else ANONYMOUS
    return Identity.from_record(record)
