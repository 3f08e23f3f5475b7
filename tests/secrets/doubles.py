"""Test doubles for rotation: an in-memory writable source, services that hold
secrets through it, and a session census."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from agentkeel.errors import Unavailable
from agentkeel.secrets.rotation import HeldSecret
from agentkeel.secrets.source import Secret, SecretVersion


class MemorySource:
    """A ``WritableSecretSource`` in a dict; counts writes so tests see double writes."""

    kind = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.secrets: dict[str, tuple[SecretVersion, ...]] = {}
        self.writes: list[tuple[str, tuple[int, ...]]] = []
        """(path, generations) of every write; an inactive generation is negative."""

    def where(self, path: str) -> str:
        return f"memory:{path}"

    def read(self, path: str) -> Secret | None:
        with self._lock:
            versions = self.secrets.get(path)
        return None if versions is None else Secret(path=path, versions=versions)

    def write(self, path: str, versions: Sequence[SecretVersion]) -> None:
        ordered = tuple(sorted(versions, key=lambda v: v.generation, reverse=True))
        with self._lock:
            self.secrets[path] = ordered
            self.writes.append(
                (path, tuple(v.generation if v.active else -v.generation for v in ordered))
            )

    def delete(self, path: str) -> None:
        with self._lock:
            self.secrets.pop(path, None)


@dataclass
class CachingHolder:
    """A service holding what it last read of some paths; refresh rereads them."""

    name: str
    source: MemorySource
    paths: tuple[str, ...]
    refreshes: int = 0
    stuck: bool = False
    down: bool = False
    cache: dict[str, Secret | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._load()

    def _load(self) -> None:
        self.cache = {path: self.source.read(path) for path in self.paths}

    async def held(self, path: str) -> HeldSecret | None:
        if self.down:
            raise Unavailable(f"cannot reach {self.name}")
        if path not in self.paths:
            return None
        secret = self.cache.get(path)
        if secret is None:
            return None
        return HeldSecret(
            path=path, generations=secret.generations, current=secret.current.generation
        )

    async def refresh(self) -> None:
        if self.down:
            raise Unavailable(f"cannot reach {self.name}")
        self.refreshes += 1
        if not self.stuck:
            self._load()


@dataclass
class ListCensus:
    """Live sessions as start times; a test ends them by editing the list."""

    started: list[float] = field(default_factory=list)
    asked: list[float] = field(default_factory=list)

    async def live_started_before(self, at: float) -> int:
        self.asked.append(at)
        return sum(1 for started in self.started if started < at)
