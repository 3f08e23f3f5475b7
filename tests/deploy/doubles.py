"""Test doubles for the rollback: a router and a replica driver kept in memory that record
every call, and a wrapper that records (and can break) the memory admin calls.

They stand in for the router's admin API and keel up's control channel, so the
rollback's ordering, idempotence and resumption can be checked call by call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agentkeel.deploy.types import (
    ReplicaInfo,
    ReplicaSpec,
    RouterReplica,
    RouterVersion,
    SessionPolicy,
)
from agentkeel.errors import NotFound
from agentkeel.memory.api_client import MemoryApiClient

Hook = Callable[[], Awaitable[None]]


@dataclass
class Breaks:
    """Raise ``error`` the next ``times`` calls of ``method``."""

    method: str
    error: BaseException
    times: int = 1


class RecordingRouter:
    """A routing table in memory that records every call (mutating calls and reads).

    ``moves_per_poll``: how many pins of a retired ``move-at-turn`` version go away
    at each ``pin_stats`` read (sessions taking their next turn, or ending).
    """

    def __init__(
        self,
        versions: Sequence[RouterVersion],
        *,
        stable: str,
        pins: Mapping[str, int] | None = None,
        moves_per_poll: int = 0,
    ) -> None:
        self.table: dict[str, RouterVersion] = {entry.version: entry for entry in versions}
        self.stable: str | None = stable
        self.pins: dict[str, int] = dict(pins or {})
        self.moves_per_poll = moves_per_poll
        self.calls: list[tuple[Any, ...]] = []
        self.breaks: list[Breaks] = []
        self.before: dict[str, Hook] = {}

    @property
    def changes(self) -> list[tuple[Any, ...]]:
        """The mutating calls, in order."""
        return [call for call in self.calls if call[0] not in ("versions", "pin_stats")]

    async def _enter(self, method: str, *args: Any) -> None:
        self.calls.append((method, *args))
        hook = self.before.get(method)
        if hook is not None:
            await hook()
        for rule in self.breaks:
            if rule.method == method and rule.times > 0:
                rule.times -= 1
                raise rule.error

    async def versions(self) -> tuple[str | None, list[RouterVersion]]:
        await self._enter("versions")
        return self.stable, [
            replace(entry, pinned_sessions=self.pins.get(entry.version, 0))
            for entry in self.table.values()
        ]

    async def put_version(
        self,
        version: str,
        *,
        replicas: Sequence[str] = (),
        weight: int = 0,
        policy: SessionPolicy = "pinned",
    ) -> None:
        await self._enter("put_version", version, weight, policy)
        old = self.table.get(version)
        kept = old.replicas if old else ()
        added = tuple(
            RouterReplica(url=url, version=version, ready=True, draining=False)
            for url in replicas
            if url not in {r.url for r in kept}
        )
        self.table[version] = RouterVersion(
            version=version, weight=weight, policy=policy, retired=False, replicas=kept + added
        )

    async def set_weights(self, weights: Mapping[str, int], *, stable: str | None = None) -> None:
        await self._enter("set_weights", dict(weights), stable)
        for name in weights:
            if name not in self.table:
                raise NotFound(f"no version {name}", code="version_not_found")
        for name, weight in weights.items():
            self.table[name] = replace(self.table[name], weight=weight)
        if stable is not None:
            self.stable = stable

    async def retire_version(self, version: str, *, policy: SessionPolicy | None = None) -> None:
        await self._enter("retire_version", version, policy)
        entry = self.table[version]
        self.table[version] = replace(entry, retired=True, weight=0, policy=policy or entry.policy)

    async def remove_version(self, version: str) -> None:
        await self._enter("remove_version", version)
        if version not in self.table:
            raise NotFound(f"no version {version}", code="version_not_found")
        del self.table[version]
        self.pins.pop(version, None)

    async def add_replica(self, version: str, url: str) -> None:
        await self._enter("add_replica", version, url)

    async def remove_replica(self, url: str) -> None:
        await self._enter("remove_replica", url)

    async def drain_replica(self, url: str) -> None:
        await self._enter("drain_replica", url)
        for name, entry in self.table.items():
            self.table[name] = replace(
                entry,
                replicas=tuple(
                    replace(r, draining=True, ready=False) if r.url == url else r
                    for r in entry.replicas
                ),
            )

    async def pin_stats(self) -> dict[str, int]:
        await self._enter("pin_stats")
        stats = dict(self.pins)
        for name, entry in self.table.items():
            if entry.retired and entry.policy == "move-at-turn" and self.pins.get(name):
                moved = min(self.moves_per_poll, self.pins[name])
                self.pins[name] -= moved
                if self.stable:
                    self.pins[self.stable] = self.pins.get(self.stable, 0) + moved
        return stats


@dataclass
class RecordingDriver:
    """Replicas in memory; records every call."""

    replicas: dict[str, ReplicaInfo] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    breaks: list[Breaks] = field(default_factory=list)

    def _enter(self, method: str, *args: Any) -> None:
        self.calls.append((method, *args))
        for rule in self.breaks:
            if rule.method == method and rule.times > 0:
                rule.times -= 1
                raise rule.error

    async def start_replicas(self, spec: ReplicaSpec, count: int) -> list[ReplicaInfo]:
        self._enter("start_replicas", spec.version, count)
        raise AssertionError("a rollback never starts replicas")

    async def stop_replica(self, name: str, *, drain: bool = True) -> None:
        self._enter("stop_replica", name, drain)
        self.replicas[name] = replace(self.replicas[name], state="stopped")

    async def list_replicas(self) -> list[ReplicaInfo]:
        self._enter("list_replicas")
        return list(self.replicas.values())


class RecordingMemory:
    """The real ``MemoryApiClient``, with its admin calls recorded; ``lose_restore_answer``
    makes the next restore act on the server and then fail, as a lost response would."""

    def __init__(self, api: MemoryApiClient) -> None:
        self.api = api
        self.calls: list[str] = []
        self.lose_restore_answer = False

    async def raise_fence(self, reason: str = "operator fence") -> dict[str, Any]:
        self.calls.append("raise_fence")
        return await self.api.raise_fence(reason)

    async def lift_fence(self) -> dict[str, Any]:
        self.calls.append("lift_fence")
        return await self.api.lift_fence()

    async def restore(
        self, *, snapshot_id: str | None = None, reason: str = "point-in-time restore"
    ) -> dict[str, Any]:
        self.calls.append("restore")
        answer = await self.api.restore(snapshot_id=snapshot_id, reason=reason)
        if self.lose_restore_answer:
            self.lose_restore_answer = False
            raise ConnectionResetError("the answer to the restore was lost")
        return answer

    async def list_quarantines(self, *, events: bool = False) -> list[dict[str, Any]]:
        self.calls.append("list_quarantines")
        return await self.api.list_quarantines(events=events)


def version(
    name: str, *urls: str, weight: int = 0, retired: bool = False, ready: bool = True
) -> RouterVersion:
    return RouterVersion(
        version=name,
        weight=weight,
        policy="pinned",
        retired=retired,
        replicas=tuple(
            RouterReplica(url=url, version=name, ready=ready, draining=False) for url in urls
        ),
    )


def replica(name: str, version_name: str, url: str) -> ReplicaInfo:
    return ReplicaInfo(name=name, version=version_name, url=url, state="ready")
