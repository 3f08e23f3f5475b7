"""Reads of a secret source, reused for a while: ``CachedSecretSource``.

Every process reads through one: a model call must not wait on Vault, and a
Vault outage must not fail calls whose key was read a moment ago. A value is
reused for ``ttl_s``; "not found" for a shorter time (``missing_ttl_s``), so a
key put in place is seen soon. ``refresh(path)`` rereads one path now (rotation
does, after it writes), ``invalidate()`` forgets everything.

On the event loop, use ``aread``/``arequire``: a miss runs the (blocking) source
read in a worker thread. Every value read is added to ``KnownSecrets``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from agentkeel.errors import SecretError
from agentkeel.resilience.clock import Clock
from agentkeel.secrets.known import KnownSecrets
from agentkeel.secrets.source import Secret, SecretSource, SecretVersion, WritableSecretSource


@dataclass(frozen=True, slots=True)
class _Entry:
    secret: Secret | None
    expires: float


class CachedSecretSource:
    """A ``SecretSource`` in front of another, caching reads (see the module doc).

    >>> cached = CachedSecretSource(inner=FileSecretSource(root=Path("/run/secrets")),
    ...     ttl_s=30, clock=SystemClock(), known=known)
    >>> cached.require("openai_api_key").current.value
    SecretStr('**********')
    """

    def __init__(
        self,
        *,
        inner: SecretSource,
        ttl_s: float,
        clock: Clock,
        known: KnownSecrets | None = None,
        missing_ttl_s: float | None = None,
    ) -> None:
        self.inner = inner
        self.ttl_s = ttl_s
        self.missing_ttl_s = min(ttl_s, 5.0) if missing_ttl_s is None else missing_ttl_s
        self._clock = clock
        self._known = known
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    @property
    def kind(self) -> str:
        return self.inner.kind

    def where(self, path: str) -> str:
        return self.inner.where(path)

    def read(self, path: str) -> Secret | None:
        cached = self._cached(path)
        if cached is not None:
            return cached.secret
        return self.refresh(path)

    def require(self, path: str) -> Secret:
        """The secret at ``path``; a ``SecretError`` naming the path and the source if absent."""
        return self._found(path, self.read(path))

    async def aread(self, path: str) -> Secret | None:
        """``read`` for code on the event loop: a miss reads in a worker thread."""
        cached = self._cached(path)
        if cached is not None:
            return cached.secret
        return await asyncio.to_thread(self.refresh, path)

    async def arequire(self, path: str) -> Secret:
        return self._found(path, await self.aread(path))

    def refresh(self, path: str) -> Secret | None:
        """Read ``path`` from the source now and cache the answer."""
        secret = self.inner.read(path)
        if secret is not None and self._known is not None:
            for version in secret.versions:
                self._known.add(version.value.get_secret_value())
        ttl = self.ttl_s if secret is not None else self.missing_ttl_s
        with self._lock:
            self._entries[path] = _Entry(secret, self._clock.monotonic() + ttl)
        return secret

    def invalidate(self, path: str | None = None) -> None:
        """Forget ``path`` (every path when ``None``): the next read goes to the source."""
        with self._lock:
            if path is None:
                self._entries.clear()
            else:
                self._entries.pop(path, None)

    def write(self, path: str, versions: Sequence[SecretVersion]) -> None:
        """Write through to the source (which must be writable) and forget the old read."""
        self._writable().write(path, versions)
        self.invalidate(path)

    def delete(self, path: str) -> None:
        self._writable().delete(path)
        self.invalidate(path)

    def paths(self, prefix: str = "") -> list[str]:
        """The source's paths under ``prefix`` (never cached)."""
        listing = getattr(self.inner, "paths", None)
        if listing is None:
            raise SecretError(f"The {self.kind} secret source cannot list its secrets.")
        return list(listing(prefix))

    def _writable(self) -> WritableSecretSource:
        if not isinstance(self.inner, WritableSecretSource):
            raise SecretError(
                f"The {self.kind} secret source is read-only; use secrets.source: files or "
                "vault to write secrets."
            )
        return self.inner

    def _cached(self, path: str) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(path)
        if entry is None or entry.expires <= self._clock.monotonic():
            return None
        return entry

    def _found(self, path: str, secret: Secret | None) -> Secret:
        if secret is None:
            raise SecretError(
                f"The secret '{path}' was not found in {self.where(path)} ({self.kind}). "
                f"Put it there (keel secrets put {path} --value-file FILE)."
            )
        return secret
