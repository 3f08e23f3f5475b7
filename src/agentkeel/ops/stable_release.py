"""Which version ``keel up`` starts: the one the last rollout left stable.

``keel.yaml``'s ``agent.version`` names the version a stack starts with, but a
rollout that promoted another one recorded it in ``<data_dir>/rollouts.db``.
A restart must not silently revert it, nor start while a rollout is half-way
(its router table and replicas are gone with the old stack).

>>> spec = stable_spec(data_dir, configured=settings.agent.version)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentkeel.deploy.state import ROLLOUTS_FILE, Release, RolloutStore
from agentkeel.deploy.types import ReplicaSpec
from agentkeel.errors import ConfigError

__all__ = ["stable_spec"]


def stable_spec(data_dir: Path, *, configured: str) -> ReplicaSpec | None:
    """The spec to start the stack's replicas with when a rollout made a version other than
    ``configured`` stable; None when ``configured`` is right (or no rollout ever ran).

    ``ConfigError`` when the latest release is running or paused.
    """
    path = data_dir / ROLLOUTS_FILE
    if not path.is_file():
        return None
    latest, promoted = asyncio.run(_read(path))
    if latest is None:
        return None
    if latest.active:
        raise ConfigError(
            f"release {latest.release} ({latest.previous} -> {latest.version}) is "
            f"{latest.state} in {path}; finish it before keel up starts a new stack: "
            "`keel rollout abort` rolls it back, `keel rollout resume` continues it "
            "(with the old stack still up)."
        )
    if promoted is None or promoted.version == configured:
        return None
    return promoted.replica_spec()


async def _read(path: Path) -> tuple[Release | None, Release | None]:
    async with RolloutStore(path) as store:
        latest = await store.latest()
        if latest is None or latest.active:
            return latest, None
        # Promoted: the new version is stable; rolled back, aborted or failed: the previous.
        stable = latest.version if latest.state == "promoted" else latest.previous
        return latest, await store.promoted(stable)
