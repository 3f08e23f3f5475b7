"""Where secrets live, behind one Protocol: ``SecretSource``.

A secret is addressed by a slash-separated ``path`` (``openai_api_key``,
``byok/<user>/<provider>``, ``orgs/<org>/<provider>``) and has one or two
*versions*: during a dual-key rotation the old and the new one are both there.

- A version with ``activated_at`` set is in use: a session that started at
  ``t`` uses the newest version activated at or before ``t``
  (``Secret.for_start``), so sessions that began under the old key keep it and
  new sessions get the new one.
- A version with ``activated_at`` unset has been provisioned but is not used yet;
  services already *accept* it (``Secret.accepts``), which is how a rotation
  makes every service take both keys before anyone sends the new one.

Sources: mounted files and secret directories (``FileSecretSource``), HashiCorp
Vault KV v2 (``VaultSecretSource``), each behind a ``CachedSecretSource``.
Values are ``SecretStr``: they never print by accident.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import SecretStr

from agentkeel.errors import SecretError


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """One value of a secret; ``generation`` counts up from 1 with each rotation."""

    value: SecretStr
    generation: int
    created_at: float
    activated_at: float | None = None

    @property
    def active(self) -> bool:
        return self.activated_at is not None


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret's versions, newest generation first (one, or two during a rotation)."""

    path: str
    versions: tuple[SecretVersion, ...]

    def __post_init__(self) -> None:
        if not self.versions:
            raise SecretError(f"The secret '{self.path}' has no versions.")

    @property
    def current(self) -> SecretVersion:
        """The version new work uses: the newest active one (the oldest if none is)."""
        for version in self.versions:
            if version.active:
                return version
        return self.versions[-1]

    def for_start(self, started_at: float) -> SecretVersion:
        """The version a session that started at ``started_at`` uses: the newest one
        activated at or before then; the current one when none was (its own is gone)."""
        for version in self.versions:
            if version.activated_at is not None and version.activated_at <= started_at:
                return version
        return self.current

    @property
    def generations(self) -> tuple[int, ...]:
        return tuple(version.generation for version in self.versions)

    def accepts(self, value: str) -> SecretVersion | None:
        """The version whose value is ``value`` (any version, active or provisioned)."""
        import hmac

        found = None
        for version in self.versions:
            # Every version is compared, so the time taken does not say which matched.
            if hmac.compare_digest(version.value.get_secret_value().encode(), value.encode()):
                found = version
        return found

    def age_s(self, now: float) -> float:
        """Seconds since the current version was created."""
        return max(0.0, now - self.current.created_at)


@runtime_checkable
class SecretSource(Protocol):
    """Reads secrets by path."""

    @property
    def kind(self) -> str:
        """``files`` or ``vault``: named in errors and metrics."""
        ...

    def where(self, path: str) -> str:
        """Where ``path`` is looked for, for error messages (a file, a Vault path)."""
        ...

    def read(self, path: str) -> Secret | None:
        """The secret at ``path``; ``None`` when there is none. ``SecretError`` when it
        exists but cannot be read (permissions, Vault down, malformed)."""
        ...


@runtime_checkable
class WritableSecretSource(SecretSource, Protocol):
    """A source that rotation and ``keel keys`` can write to."""

    def write(self, path: str, versions: Sequence[SecretVersion]) -> None:
        """Replace the versions of ``path`` (newest first) atomically."""
        ...

    def delete(self, path: str) -> None:
        """Remove ``path`` and every version of it; nothing when it does not exist."""
        ...


def require(source: SecretSource, path: str) -> Secret:
    """The secret at ``path``, or a ``SecretError`` that names where it was looked for."""
    secret = source.read(path)
    if secret is None:
        raise SecretError(
            f"The secret '{path}' was not found in {source.where(path)} ({source.kind})."
        )
    return secret
