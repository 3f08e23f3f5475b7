"""The controller: resume after a kill, requests from other processes, no live controller."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentkeel.deploy.controller import ReleasePlan, RolloutController
from agentkeel.deploy.state import Release, RolloutStore
from agentkeel.errors import Conflict, InvalidRequest, NotFound
from tests.deploy.rollout_doubles import Rig, until
from tests.deploy.rollout_fixtures import rig

__all__ = ["rig"]

PLAN = ReleasePlan(version="v2", strategy="canary", time_scale=60.0)


async def kill(task: asyncio.Task[Release]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_new_controller_resumes_a_killed_one_at_the_same_step(rig: Rig) -> None:
    """Killed 120+ s into step 2, the release resumes on a new controller instance at step
    2 with its elapsed time kept: step 2's weights are set again (not step 1's), the
    step ends after the time that was left, and nothing is started or snapshotted twice."""
    first = rig.controller(owner="first")
    release = await first.begin(PLAN)
    task = asyncio.create_task(first.drive(release))
    await until(lambda: release.step == 1 and release.elapsed_s >= 150)
    await kill(task)
    # As after SIGKILL: the lease is still held, by a process whose heartbeat stopped.
    assert await rig.store.claim(release.release, owner="killed", pid=1, stale_after_s=5) is None
    kept = await rig.store.get(release.release)
    assert kept is not None and kept.step == 1 and kept.elapsed_s >= 120

    refused = rig.controller(owner="too-early")
    with pytest.raises(Conflict, match="live controller"):
        await refused.resume()
    rig.clock.advance(10)  # the dead owner's heartbeat goes stale

    calls_before = len(rig.router.calls)
    resumed_at = rig.clock.monotonic()
    promoted_at: list[float] = []

    def watch(name: str, args: object) -> None:
        if name == "set_weights" and args == ({"v2": 100, "v1": 0}, "v2"):
            promoted_at.append(rig.clock.monotonic())

    rig.router.on_call = watch
    done = await rig.controller(owner="second").resume()

    assert done.state == "promoted", done.reason
    weights = [c[1] for c in rig.router.calls[calls_before:] if c[0] == "set_weights"]
    assert weights[0] == ({"v2": 25, "v1": 75}, None)
    left = 600 - kept.elapsed_s
    took = (promoted_at[0] - resumed_at) * PLAN.time_scale
    assert left - 10 <= took <= left + 70, (left, took)
    assert len(rig.memory.snapshots) == 1
    assert [c for c in rig.driver.calls if c[0] == "start"] == [
        ("start", (release.replica_spec(), 2))
    ]
    assert rig.metrics.started == 2  # a fresh baseline for the fresh judge


async def test_requests_from_another_process_are_taken_within_a_tick(rig: Rig) -> None:
    """Pause, resume, then promote, each written through another store on the same file:
    the next tick applies it; paused time does not count; promote skips the waits."""
    controller = rig.controller()
    release = await controller.begin(PLAN)
    task = asyncio.create_task(controller.drive(release))
    async with RolloutStore(rig.store.path, clock=rig.clock) as cli:

        async def send(command: str) -> tuple[int, int]:
            rig.clock.hold()
            await rig.clock.sleeping.wait()
            request = await cli.request(release.release, command, requested_by="ops")  # type: ignore[arg-type]
            mark = len(rig.updates)
            rig.clock.release()
            await until(lambda: len(rig.updates) > mark)
            return request, mark

        await until(lambda: release.phase == "traffic" and release.elapsed_s > 30)
        request, mark = await send("pause")
        assert rig.updates[mark][0] == "paused"
        await until(lambda: len(rig.updates) > mark + 20)
        paused = [u for u in rig.updates[mark:] if u[0] == "paused"]
        assert len(paused) > 20 and len({u[3] for u in paused}) == 1
        taken = await cli.get_request(request)
        assert taken is not None and taken.outcome == "paused"

        _, mark = await send("resume")
        assert rig.updates[mark][0] == "running"
        await send("promote")
        done = await task
    assert done.state == "promoted"
    # Promoted from step 1: the 25 % step never ran.
    assert [w.get("v2") for w in rig.router.weight_history] == [5, 100]


async def test_abort_from_another_process_rolls_the_code_back(rig: Rig) -> None:
    controller = rig.controller()
    release = await controller.begin(PLAN)
    task = asyncio.create_task(controller.drive(release))
    await until(lambda: release.phase == "traffic" and release.step == 1)
    async with RolloutStore(rig.store.path, clock=rig.clock) as cli:
        request = await cli.request(release.release, "abort", requested_by="ops")
        done = await task
        answer = await cli.get_request(request)
    assert done.state == "aborted" and "ops" in done.reason
    assert rig.rollback.calls == [(release.release, True)]
    assert rig.rollback.weights_when_called == [{"v1": 100, "v2": 0}]
    assert answer is not None and answer.outcome is not None
    assert "new sessions go to v1" in answer.outcome
    assert "recommendation" not in done.detail


async def test_with_no_live_controller_pause_and_abort_act_from_the_caller(rig: Rig) -> None:
    """A release whose controller is gone: settle records a pause, then an abort rolls the
    code back from the calling process; an unknown release is NotFound."""
    controller = rig.controller()
    release = await controller.begin(PLAN)
    task = asyncio.create_task(controller.drive(release))
    await until(lambda: "weights" in release.detail)
    await kill(task)
    stored = await rig.store.get(release.release)
    assert stored is not None and stored.state == "running"

    await rig.store.request(release.release, "pause", requested_by="ops")
    settled = await rig.controller().settle(stored)
    assert settled.state == "paused"
    again = await rig.store.get(release.release)
    assert again is not None and again.state == "paused"

    await rig.store.request(release.release, "abort", requested_by="ops")
    aborted = await rig.controller().settle(again)
    assert aborted.state == "aborted"
    assert rig.router.weights() == {"v1": 100, "v2": 0} and rig.router.stable == "v1"
    assert rig.rollback.calls == [(release.release, True)]
    with pytest.raises(InvalidRequest, match="aborted"):
        await rig.controller().resume()
    with pytest.raises(NotFound):
        await rig.controller().resume("nope")


async def test_a_plan_the_router_cannot_take_is_refused_before_anything_moves(
    rig: Rig, tmp_path: Path
) -> None:
    controller = rig.controller()
    with pytest.raises(InvalidRequest, match="already the stable"):
        await controller.begin(ReleasePlan(version="v1", strategy="bluegreen"))
    with pytest.raises(InvalidRequest, match="version name"):
        await controller.begin(ReleasePlan(version=" ", strategy="bluegreen"))
    await rig.router.put_version("v3", weight=0)
    with pytest.raises(InvalidRequest, match="already has a version named v3"):
        await controller.begin(ReleasePlan(version="v3", strategy="bluegreen"))
    await controller.begin(ReleasePlan(version="v2", strategy="bluegreen"))
    with pytest.raises(Conflict, match="one rollout at a time"):
        await controller.begin(ReleasePlan(version="v4", strategy="bluegreen"))
    assert rig.router.weight_history == []
    assert rig.memory.snapshots == []

    deps = rig.deps()
    deps.memory = None
    async with RolloutStore(tmp_path / "other.db") as store:
        bare = RolloutController(store=store, deps=deps, settings=rig.settings, clock=rig.clock)
        with pytest.raises(InvalidRequest, match="memory server"):
            await bare.begin(ReleasePlan(version="v5", strategy="bluegreen"))


async def test_a_router_that_stays_down_pauses_the_rollout(rig: Rig) -> None:
    """Errors from the router are retried each tick; after many in a row the rollout
    pauses with the error named, with traffic left where it was."""
    controller = rig.controller()
    release = await controller.begin(PLAN)
    task = asyncio.create_task(controller.drive(release))
    await until(lambda: release.phase == "traffic" and release.elapsed_s > 70)
    rig.router.down = True
    await until(lambda: release.state == "paused")
    await kill(task)
    assert "router admin API down" in release.reason
    assert release.detail["last_error"].startswith("router admin API down")


async def test_abort_before_any_session_takes_the_new_version_out(rig: Rig) -> None:
    """Aborted while its replicas start (the router never gave it a weight), the new
    version leaves the router and its replicas stop; nothing needs rolling back."""
    controller = rig.controller()
    release = await controller.begin(PLAN)
    task = asyncio.create_task(controller.drive(release))
    await until(lambda: release.phase == "start")
    rig.clock.hold()
    await rig.clock.sleeping.wait()
    await rig.store.request(release.release, "abort", requested_by="ops")
    rig.clock.release()
    done = await task
    assert done.state == "aborted"
    assert rig.rollback.calls == []
    assert "v2" not in rig.router.table
    assert rig.driver.live("v2") == []
