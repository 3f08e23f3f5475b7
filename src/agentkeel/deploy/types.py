"""What the rollout controller, the judge and the rollback talk to: the plug-in points.

- ``RouterControl``: the router's admin API (versions, weights, replicas, pins);
  ``agentkeel.router.admin_client.RouterAdminClient`` speaks it over HTTP.
- ``ReplicaDriver``: starts and stops replicas of a version; the local driver
  asks ``keel up`` through its control channel, a Kubernetes driver comes later.
- ``MetricsSource``: per-version cumulative figures the judge compares, read
  from the replicas' ``/metrics`` or from Prometheus' HTTP API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "Distribution",
    "MetricsSource",
    "Proportion",
    "ReplicaDriver",
    "ReplicaInfo",
    "ReplicaSpec",
    "RouterControl",
    "RouterReplica",
    "RouterVersion",
    "SessionPolicy",
    "VersionWindow",
]

SessionPolicy = Literal["pinned", "move-at-turn"]


# --- the router -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouterReplica:
    """One backend as the router sees it."""

    url: str
    version: str
    ready: bool
    draining: bool
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class RouterVersion:
    """One version in the routing table.

    ``weight`` is the share of *new* sessions (weights of all versions are
    relative, need not sum to 100). ``retired``: no new sessions; with policy
    ``move-at-turn`` its sessions' next turns go to the stable version.
    ``pinned_sessions``: live pins in the pin table for this version.
    """

    version: str
    weight: int
    policy: SessionPolicy
    retired: bool
    replicas: tuple[RouterReplica, ...]
    pinned_sessions: int = 0


class RouterControl(Protocol):
    """The router's admin API (``/admin/*`` on the router port, admin token)."""

    async def versions(self) -> tuple[str | None, list[RouterVersion]]:
        """The stable version's name and every version in the table."""
        ...

    async def put_version(
        self,
        version: str,
        *,
        replicas: Sequence[str] = (),
        weight: int = 0,
        policy: SessionPolicy = "pinned",
    ) -> None:
        """Create or update a version (replicas are added, never removed, by this)."""
        ...

    async def set_weights(self, weights: Mapping[str, int], *, stable: str | None = None) -> None:
        """Set several weights at once (atomically) and, optionally, the stable version."""
        ...

    async def retire_version(self, version: str, *, policy: SessionPolicy | None = None) -> None:
        """No new sessions for ``version``; ``policy`` overrides its session policy."""
        ...

    async def remove_version(self, version: str) -> None:
        """Drop a version from the table (its pins go with it)."""
        ...

    async def add_replica(self, version: str, url: str) -> None: ...

    async def remove_replica(self, url: str) -> None: ...

    async def drain_replica(self, url: str) -> None:
        """The router sends nothing new to ``url``; requests in flight finish."""
        ...

    async def pin_stats(self) -> dict[str, int]:
        """Live pins per version."""
        ...


# --- replicas ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """How to start a replica of one version.

    ``entrypoint``: ``package.module:agent`` (unset = the stack's agent);
    ``config``: a ``keel.yaml`` for that version's replicas (unset = the
    stack's); ``env``: extra non-secret ``KEEL_…`` values.
    """

    version: str
    entrypoint: str | None = None
    config: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """One replica a driver manages."""

    name: str
    version: str
    url: str
    state: Literal["starting", "ready", "draining", "stopped", "failed"]


class ReplicaDriver(Protocol):
    """Starts and stops replicas; the controller registers them with the router."""

    async def start_replicas(self, spec: ReplicaSpec, count: int) -> list[ReplicaInfo]:
        """Start ``count`` replicas and return once each answers ``/ready`` (or raise)."""
        ...

    async def stop_replica(self, name: str, *, drain: bool = True) -> None:
        """Drain (SIGTERM: turns in flight finish) and stop one replica."""
        ...

    async def list_replicas(self) -> list[ReplicaInfo]: ...


# --- what the judge reads -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proportion:
    """A rate as counts: ``events`` (harmful ones, e.g. failed tool calls) of ``trials``."""

    events: int
    trials: int


@dataclass(frozen=True, slots=True)
class Distribution:
    """A continuous metric as a cumulative histogram: upper bounds and cumulative counts
    (Prometheus ``_bucket`` semantics, the last bound ``inf``)."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class VersionWindow:
    """Cumulative figures of one version since the rollout started."""

    version: str
    rates: Mapping[str, Proportion]
    distributions: Mapping[str, Distribution]


class MetricsSource(Protocol):
    """Reads the figures of one version; cumulative since ``baseline`` was taken."""

    async def read(self, version: str) -> VersionWindow: ...
