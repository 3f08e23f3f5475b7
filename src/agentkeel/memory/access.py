"""Who may read and write which namespaces: bearer tokens from a secrets file.

The tokens file (YAML or JSON; never an environment value) maps each token to
the namespaces it may read and write, as exact names or shell-style patterns::

    tokens:
      "3f9c…":
        name: support-agent
        read: ["agent:support/*"]
        write: ["agent:support/*"]

A top-level mapping without the ``tokens`` key works too. The file is read
again when it changes, so rotating a token needs no restart. Tokens are
compared by their SHA-256, so a lookup takes the same time whatever the
token. The admin token (its own file) may call the admin endpoints and read
and write every namespace.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentkeel.config.memory import MemorySettings
from agentkeel.errors import ConfigError, Forbidden, SecretError, Unauthorized
from agentkeel.secrets.resolver import SecretResolver


class _Grant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    read: list[str] = Field(default_factory=list)
    write: list[str] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a token. ``key`` is a stable, non-secret id for scoping
    idempotency keys; ``name`` is for logs."""

    key: str
    name: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    admin: bool = False

    def can_read(self, namespace: str) -> bool:
        return self.admin or _matches(namespace, self.read) or _matches(namespace, self.write)

    def can_write(self, namespace: str) -> bool:
        return self.admin or _matches(namespace, self.write)

    def require_read(self, namespace: str) -> None:
        if not self.can_read(namespace):
            raise Forbidden(
                f"token '{self.name}' may not read namespace '{namespace}'. Ask an operator to "
                "add it (or a pattern matching it) to the token's read list.",
                code="namespace_forbidden",
            )

    def require_write(self, namespace: str) -> None:
        if not self.can_write(namespace):
            raise Forbidden(
                f"token '{self.name}' may not write namespace '{namespace}'. Ask an operator to "
                "add it (or a pattern matching it) to the token's write list.",
                code="namespace_forbidden",
            )

    def require_admin(self) -> None:
        if not self.admin:
            raise Forbidden(
                "this endpoint needs the memory admin token; a namespace token is not enough.",
                code="admin_required",
            )


def _matches(namespace: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in patterns)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_tokens(text: str, *, source: str) -> dict[str, Principal]:
    """Principals by SHA-256 of their token, from the tokens file's text."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"memory tokens file {source} is not valid YAML/JSON: {exc}. Fix its syntax."
        ) from exc
    if isinstance(data, Mapping) and set(data) == {"tokens"}:
        data = data["tokens"]
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(
            f"memory tokens file {source} must map each token to {{read: [...], write: [...]}}."
        )
    out: dict[str, Principal] = {}
    for index, (token, grant_data) in enumerate(data.items()):
        if not isinstance(token, str) or len(token) < 16:
            raise ConfigError(
                f"memory tokens file {source}: entry {index} has a token shorter than 16 "
                "characters; use long random tokens (e.g. `openssl rand -hex 24`)."
            )
        try:
            grant = _Grant.model_validate(grant_data or {})
        except ValidationError as exc:
            raise ConfigError(
                f"memory tokens file {source}: the grant of token "
                f"'{grant_data.get('name') if isinstance(grant_data, Mapping) else index}' is "
                f"invalid: {exc.errors(include_url=False)[0]['msg']}. Use name, read and write."
            ) from exc
        key = _digest(token)
        out[key] = Principal(
            key=key[:16],
            name=grant.name or f"token-{key[:8]}",
            read=tuple(grant.read),
            write=tuple(grant.write),
        )
    return out


@dataclass(slots=True)
class AccessControl:
    """Turns an ``Authorization`` header into a ``Principal``; rereads changed files."""

    settings: MemorySettings
    _tokens: dict[str, Principal] = field(default_factory=dict)
    _tokens_stamp: tuple[int, int, int] | None = None
    _admin: str | None = None
    _admin_stamp: tuple[int, int, int] | None = None

    def _tokens_path(self) -> Path | None:
        if self.settings.tokens_file is not None:
            return self.settings.tokens_file
        if self.settings.secrets_dir is not None:
            return self.settings.secrets_dir / self.settings.tokens_secret
        return None

    def _admin_path(self) -> Path | None:
        if self.settings.admin_token_file is not None:
            return self.settings.admin_token_file
        if self.settings.secrets_dir is not None:
            return self.settings.secrets_dir / self.settings.admin_token_secret
        return None

    def _load_tokens(self) -> dict[str, Principal]:
        path = self._tokens_path()
        stamp = _stamp(path)
        if stamp is None or path is None:
            self._tokens, self._tokens_stamp = {}, None
            return self._tokens
        if stamp != self._tokens_stamp:
            text = SecretResolver().resolve(None, file=path)
            assert text is not None
            self._tokens = parse_tokens(text.get_secret_value(), source=str(path))
            self._tokens_stamp = stamp
        return self._tokens

    def _load_admin(self) -> str | None:
        path = self._admin_path()
        stamp = _stamp(path)
        if stamp is None or path is None:
            self._admin, self._admin_stamp = None, None
            return None
        if stamp != self._admin_stamp:
            try:
                secret = SecretResolver().resolve(None, file=path)
            except SecretError:
                secret = None
            self._admin = None if secret is None else secret.get_secret_value()
            self._admin_stamp = stamp
        return self._admin

    def check_configured(self) -> None:
        """Fail at startup, not at the first request, when the tokens file is broken."""
        self._load_tokens()
        self._load_admin()

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal for ``Authorization: Bearer <token>``; 401 when missing or unknown."""
        scheme, _, value = (authorization or "").partition(" ")
        token = value.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "the memory server needs 'Authorization: Bearer <token>'; the tokens are in "
                "the memory tokens file (memory.tokens_file).",
                code="token_missing",
            )
        admin = self._load_admin()
        if admin is not None and hmac.compare_digest(token.encode(), admin.encode()):
            return Principal(key="admin", name="admin", admin=True)
        principal = self._load_tokens().get(_digest(token))
        if principal is None:
            raise Unauthorized(
                "this bearer token is not in the memory tokens file; check the token, or ask an "
                "operator whether it was rotated.",
                code="token_invalid",
            )
        return principal


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretError(f"cannot read the memory tokens file {path}: {exc}") from exc
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)
