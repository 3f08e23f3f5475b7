"""RolloutStore: releases, one active at a time, requests, the controller's lease."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeel.deploy.state import Release, RolloutStore
from agentkeel.deploy.types import ReplicaSpec
from agentkeel.errors import Conflict
from agentkeel.resilience.clock import ManualClock


def make_release(name: str = "v2-1", *, started_at: float = 1.0) -> Release:
    return Release(
        release=name,
        version="v2",
        previous="v1",
        strategy="canary",
        started_at=started_at,
        updated_at=started_at,
        spec=ReplicaSpec(version="v2", entrypoint="pkg.mod:agent", env={"KEEL_X": "1"}),
        detail={"weights": {"v1": 95, "v2": 5}},
    )


async def test_a_release_round_trips_through_the_file(tmp_path: Path) -> None:
    """Every field written is read back, by another store on the same file too."""
    path = tmp_path / "rollouts.db"
    async with RolloutStore(path) as store:
        release = make_release()
        release.step, release.phase, release.elapsed_s = 1, "traffic", 123.5
        release.snapshot_id = "snap-1"
        await store.create(release)
    async with RolloutStore(path) as other:
        loaded = await other.get("v2-1")
    assert loaded is not None
    assert loaded.to_json() == release.to_json()
    assert loaded.replica_spec().env == {"KEEL_X": "1"}


async def test_latest_active_and_unknown(tmp_path: Path) -> None:
    async with RolloutStore(tmp_path / "rollouts.db") as store:
        assert await store.latest() is None
        assert await store.active() is None
        assert await store.get("nope") is None
        first = make_release("v2-1", started_at=1.0)
        first.state = "promoted"
        await store.create(first)
        await store.create(make_release("v3-1", started_at=2.0))
        latest = await store.latest()
        active = await store.active()
        assert latest is not None and latest.release == "v3-1"
        assert active is not None and active.release == "v3-1"
        assert [r.release for r in await store.history()] == ["v3-1", "v2-1"]


async def test_one_active_release_at_a_time(tmp_path: Path) -> None:
    """A second release is refused while one is running or paused, from any store."""
    path = tmp_path / "rollouts.db"
    async with RolloutStore(path) as store, RolloutStore(path) as other:
        await store.create(make_release("v2-1"))
        with pytest.raises(Conflict, match="one rollout at a time"):
            await other.create(make_release("v3-1"))
        paused = await store.get("v2-1")
        assert paused is not None
        paused.state = "paused"
        await store.save(paused)
        with pytest.raises(Conflict):
            await other.create(make_release("v3-1"))
        paused.state = "aborted"
        await store.save(paused)
        third = await other.create(make_release("v3-1"))
        third.state = "promoted"
        await other.save(third)
        with pytest.raises(Conflict, match="exists"):
            await other.create(make_release("v3-1"))


async def test_requests_are_taken_once_in_order(tmp_path: Path) -> None:
    path = tmp_path / "rollouts.db"
    async with RolloutStore(path) as store, RolloutStore(path) as cli:
        first = await cli.request("v2-1", "pause", requested_by="ana")
        await cli.request("v2-1", "abort", requested_by="ana")
        await cli.request("v9-1", "promote", requested_by="ana")
        taken = await store.take_requests("v2-1")
        assert [r.command for r in taken] == ["pause", "abort"]
        assert await store.take_requests("v2-1") == []
        await store.finish_request(first, "paused")
        done = await cli.get_request(first)
        assert done is not None and done.outcome == "paused" and done.taken_at is not None
        with pytest.raises(ValueError, match="unknown rollout command"):
            await cli.request("v2-1", "explode", requested_by="ana")  # type: ignore[arg-type]


async def test_a_live_controller_keeps_its_release_a_stale_one_loses_it(tmp_path: Path) -> None:
    """Claiming a release held by a live heartbeat names the holder; once the heartbeat is
    stale another owner takes it, and the old owner's next checkpoint writes nothing."""
    clock = ManualClock(start=0.0)
    path = tmp_path / "rollouts.db"
    async with RolloutStore(path, clock=clock) as store:
        release = make_release()
        await store.create(release)
        assert await store.claim("v2-1", owner="a", pid=1, stale_after_s=5) is None
        holder = await store.claim("v2-1", owner="b", pid=2, stale_after_s=5)
        assert holder is not None and holder.owner == "a" and holder.pid == 1
        clock.advance(3)
        assert await store.heartbeat("v2-1", owner="a")
        clock.advance(3)
        assert await store.claim("v2-1", owner="b", pid=2, stale_after_s=5) is not None
        clock.advance(6)
        assert await store.claim("v2-1", owner="b", pid=2, stale_after_s=5) is None
        release.step = 7
        assert not await store.checkpoint(release, owner="a")
        assert not await store.heartbeat("v2-1", owner="a")
        stored = await store.get("v2-1")
        assert stored is not None and stored.step == 0
        controller = await store.controller("v2-1")
        assert controller is not None and controller.owner == "b"
        await store.release_claim("v2-1", owner="b")
        assert await store.controller("v2-1") is None


async def test_a_file_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from agentkeel.errors import ConfigError

    path = tmp_path / "rollouts.db"
    async with RolloutStore(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99 WHERE component = 'rollouts'")
    with pytest.raises(ConfigError, match="schema version 99"):
        async with RolloutStore(path):
            pass


async def test_a_file_that_is_not_a_database_names_itself(tmp_path: Path) -> None:
    from agentkeel.errors import Unavailable

    path = tmp_path / "rollouts.db"
    path.write_text("not sqlite at all, just text " * 100)
    with pytest.raises(Unavailable, match="rollout state"):
        async with RolloutStore(path):
            pass
