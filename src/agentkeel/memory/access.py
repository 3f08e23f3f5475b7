"""Who may read and write which namespaces: bearer tokens from a secrets file.

The tokens file (YAML or JSON; never an environment value) maps each token to
the namespaces it may read and write, as exact names or shell-style patterns::

    tokens:
      "3f9c…":
        name: support-agent
        read: ["agent:support/*"]
        write: ["agent:support/*"]

A top-level mapping without the ``tokens`` key works too. The file is read
again when it changes, so rotating a token needs no restart; parsing, the
bearer header and the admin token are ``agentkeel.web.auth``'s, as in every
service. The admin token (its own file) may call the admin endpoints and
read and write every namespace.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from agentkeel.config.memory import MemorySettings
from agentkeel.errors import Forbidden, Unauthorized
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.web.auth import AdminToken, TokensFile, bearer_token, parse_token_grants


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


def parse_tokens(text: str, *, source: str) -> dict[str, Principal]:
    """Principals by SHA-256 of their token, from the tokens file's text."""
    grants = parse_token_grants(
        text,
        source=source,
        what="memory tokens file",
        grant=_Grant,
        shape="{read: [...], write: [...]}",
    )
    return {
        digest: Principal(
            key=digest[:16],
            name=grant.name or f"token-{digest[:8]}",
            read=tuple(grant.read),
            write=tuple(grant.write),
        )
        for digest, grant in grants.items()
    }


@dataclass(slots=True)
class AccessControl:
    """Turns an ``Authorization`` header into a ``Principal``; rereads changed files."""

    settings: MemorySettings
    _tokens: TokensFile[Principal] = field(init=False)
    _admin: AdminToken = field(init=False)

    def __post_init__(self) -> None:
        resolver = SecretResolver(secrets_dir=self.settings.secrets_dir)
        self._tokens = TokensFile(
            resolver=resolver,
            name=self.settings.tokens_secret,
            file=self.settings.tokens_file,
            parse=lambda text, source: parse_tokens(text, source=source),
        )
        self._admin = AdminToken(
            resolver=resolver,
            name=self.settings.admin_token_secret,
            file=self.settings.admin_token_file,
            setting="memory.admin_token_file",
            service="memory server",
        )

    def check_configured(self) -> None:
        """Fail at startup, not at the first request, when the tokens file is broken."""
        self._tokens.entries()
        self._admin.configured()

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal for ``Authorization: Bearer <token>``; 401 when missing or unknown."""
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized(
                "the memory server needs 'Authorization: Bearer <token>'; the tokens are in "
                "the memory tokens file (memory.tokens_file).",
                code="token_missing",
            )
        if self._admin.matches(token):
            return Principal(key="admin", name="admin", admin=True)
        principal = self._tokens.lookup(token)
        if principal is None:
            raise Unauthorized(
                "this bearer token is not in the memory tokens file; check the token, or ask an "
                "operator whether it was rotated.",
                code="token_invalid",
            )
        return principal
