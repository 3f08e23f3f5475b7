"""The routing table as one router uses it: replicas with their live state, weighted choice.

``RoutingTable.build(doc, replicas)`` turns a stored ``TableDoc`` into objects
the hot path reads without locks or copies. ``Replica`` objects (and their
connection pools, readiness and requests in flight) outlive a rebuild: a
table change never drops what this router knows about a replica.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from urllib.parse import urlsplit

from agentkeel.deploy.types import RouterReplica, RouterVersion, SessionPolicy
from agentkeel.router.table import TableDoc
from agentkeel.router.upstream import UpstreamPool

__all__ = ["Replica", "RoutingTable", "VersionRoute"]


class Replica:
    """One backend: where it is, whether it takes new work, what it is doing now."""

    __slots__ = ("draining", "host", "in_flight", "pool", "port", "ready", "url", "version")

    def __init__(self, *, url: str, version: str, pool: UpstreamPool) -> None:
        self.url = url
        self.version = version
        self.pool = pool
        self.host = pool.host
        self.port = pool.port
        self.ready = False
        self.draining = False
        self.in_flight = 0

    @property
    def available(self) -> bool:
        """Ready (its last probe said so) and not drained through the admin API."""
        return self.ready and not self.draining

    def describe(self) -> RouterReplica:
        return RouterReplica(
            url=self.url,
            version=self.version,
            ready=self.ready,
            draining=self.draining,
            in_flight=self.in_flight,
        )


def address_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


class VersionRoute:
    """One version's replicas and the choice among them (fewest requests in flight,
    round robin between equals)."""

    __slots__ = ("_turn", "name", "policy", "replicas", "retired", "weight")

    def __init__(
        self,
        *,
        name: str,
        weight: int,
        policy: SessionPolicy,
        retired: bool,
        replicas: tuple[Replica, ...],
    ) -> None:
        self.name = name
        self.weight = weight
        self.policy = policy
        self.retired = retired
        self.replicas = replicas
        self._turn = 0

    @property
    def moves_at_turn(self) -> bool:
        return self.retired and self.policy == "move-at-turn"

    def pick(self, tried: set[Replica] | None = None) -> Replica | None:
        """An available replica not in ``tried``, or ``None``."""
        replicas = self.replicas
        count = len(replicas)
        if count == 1:
            only = replicas[0]
            return only if only.ready and not only.draining and not tried else None
        best: Replica | None = None
        start = self._turn
        self._turn = start + 1
        for offset in range(count):
            replica = replicas[(start + offset) % count]
            if not replica.ready or replica.draining or (tried and replica in tried):
                continue
            if best is None or replica.in_flight < best.in_flight:
                best = replica
        return best

    def unpick(self) -> None:
        """Give back the turn of a ``pick`` whose replica went unused (the next ``pick``
        chooses as if it had not happened)."""
        if len(self.replicas) > 1:
            self._turn -= 1

    def has_available(self) -> bool:
        return any(replica.ready and not replica.draining for replica in self.replicas)

    def describe(self, pinned_sessions: int) -> RouterVersion:
        return RouterVersion(
            version=self.name,
            weight=self.weight,
            policy=self.policy,
            retired=self.retired,
            replicas=tuple(replica.describe() for replica in self.replicas),
            pinned_sessions=pinned_sessions,
        )


class RoutingTable:
    """Versions by name, the stable one, and the weighted choice for new sessions."""

    __slots__ = ("doc", "stable", "versions")

    def __init__(self, doc: TableDoc, versions: dict[str, VersionRoute]) -> None:
        self.doc = doc
        self.versions = versions
        self.stable = versions.get(doc.stable) if doc.stable is not None else None

    @classmethod
    def build(
        cls,
        doc: TableDoc,
        replicas: Mapping[str, Replica],
    ) -> RoutingTable:
        """The table for ``doc``; ``replicas`` (by URL) must hold every replica it names."""
        versions: dict[str, VersionRoute] = {}
        for name, spec in doc.versions.items():
            members = tuple(replicas[url] for url in spec.replicas)
            for replica in members:
                replica.draining = replica.url in doc.draining
            versions[name] = VersionRoute(
                name=name,
                weight=spec.weight,
                policy=spec.policy,
                retired=spec.retired,
                replicas=members,
            )
        return cls(doc, versions)

    def choose_new(self, rng: random.Random) -> VersionRoute | None:
        """The version of a new session: by weight among the versions that are not
        retired, have a weight above 0 and an available replica."""
        candidates: list[VersionRoute] = []
        total = 0
        for route in self.versions.values():
            if route.weight > 0 and not route.retired and route.has_available():
                candidates.append(route)
                total += route.weight
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        point = rng.random() * total
        for route in candidates:
            point -= route.weight
            if point < 0:
                return route
        return candidates[-1]

    def ready_replicas(self) -> dict[str, int]:
        """Available replicas per version."""
        return {
            name: sum(1 for replica in route.replicas if replica.available)
            for name, route in self.versions.items()
        }
