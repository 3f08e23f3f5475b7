"""A controller killed mid-rollback, a resumed canary's judge, the previous version's spec, env."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentkeel.deploy.controller import ReleasePlan
from agentkeel.deploy.state import Release
from agentkeel.deploy.types import ReplicaSpec
from agentkeel.errors import InvalidRequest
from tests.deploy.rollout_doubles import RecordingRollback, Rig, ScriptedJudge, until
from tests.deploy.rollout_fixtures import rig, short_settings

__all__ = ["rig"]

PLAN = ReleasePlan(version="v2", strategy="canary", time_scale=60.0)


async def kill(task: asyncio.Task[Release]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class StuckRollback(RecordingRollback):
    """A rollback runner that hangs (the controller is killed while it runs)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entered = asyncio.Event()

    async def run(self, release: Release, **kwargs: Any) -> dict[str, Any]:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def stale(rig: Rig, release: Release) -> None:
    """As after SIGKILL: the lease stays with a dead owner until its heartbeat is stale."""
    assert await rig.store.claim(release.release, owner="killed", pid=1, stale_after_s=5) is None
    rig.clock.advance(10)


def canary_weights_after(rig: Rig, start: int) -> list[int]:
    return [
        args[0].get("v2", 0) for name, args in rig.router.calls[start:] if name == "set_weights"
    ]


async def test_a_kill_during_an_abort_then_resume_never_sends_traffic_back_to_the_canary(
    rig: Rig,
) -> None:
    """Killed while the abort's rollback runs, the release stays in phase rolling_back; a
    resumed controller finishes the rollback (state aborted) and never re-applies the
    step's weights."""
    stuck = StuckRollback(router=rig.router)
    rig.rollback = stuck
    first = rig.controller(owner="first")
    release = await first.begin(PLAN)
    task = asyncio.create_task(first.drive(release))
    await until(lambda: release.phase == "traffic" and release.step == 1)
    await rig.store.request(release.release, "abort", requested_by="ops")
    await asyncio.wait_for(stuck.entered.wait(), 5)
    await kill(task)
    kept = await rig.store.get(release.release)
    assert kept is not None and kept.phase == "rolling_back" and kept.state == "running"
    assert kept.detail["rolling_back"]["state"] == "aborted"
    await stale(rig, release)

    rig.rollback = RecordingRollback(router=rig.router)
    mark = len(rig.router.calls)
    done = await rig.controller(owner="second").resume()
    assert done.state == "aborted" and "ops" in done.reason
    assert all(weight == 0 for weight in canary_weights_after(rig, mark))
    assert rig.router.weights()["v1"] == 100
    assert rig.rollback.calls == [(release.release, True)]


async def test_a_kill_between_the_rollback_decision_and_the_switch_still_rolls_back(
    rig: Rig,
) -> None:
    """The judge fails; the controller dies after recording rolling_back but before any
    weights call: the next one switches back and rolls back (state rolled_back)."""
    rig.judge = ScriptedJudge(["fail-rollback"])
    first = rig.controller(owner="first")
    release = await first.begin(PLAN)
    task = asyncio.create_task(first.drive(release))

    await until(lambda: release.phase == "traffic")

    # Killed at the switch-back weights call: it reaches the router, no checkpoint follows.
    def die_at_switch(name: str, args: Any) -> None:
        if name == "set_weights" and args[0].get("v1") == 100:
            task.cancel()

    rig.router.on_call = die_at_switch
    with pytest.raises(asyncio.CancelledError):
        await task
    rig.router.on_call = None
    kept = await rig.store.get(release.release)
    assert kept is not None and kept.phase == "rolling_back"
    await stale(rig, release)
    done = await rig.controller(owner="second").resume()
    assert done.state == "rolled_back", done.reason
    assert rig.router.weights() == {"v1": 100, "v2": 0}


async def test_an_abort_taken_by_a_controller_that_died_is_offered_again(rig: Rig) -> None:
    """A request marked taken but never finished goes back to the queue for the next
    controller that claims the release, so the abort is carried out."""
    first = rig.controller(owner="first")
    release = await first.begin(PLAN)
    task = asyncio.create_task(first.drive(release))
    await until(lambda: release.phase == "traffic" and release.step == 1)
    await kill(task)
    request = await rig.store.request(release.release, "abort", requested_by="ops")
    taken = await rig.store.take_requests(release.release)  # the dead one took it
    assert [r.id for r in taken] == [request]
    await stale(rig, release)
    done = await rig.controller(owner="second").resume()
    assert done.state == "aborted"
    answer = await rig.store.get_request(request)
    assert answer is not None and answer.outcome is not None


async def test_a_verdict_saved_before_a_kill_does_not_end_a_step_after_resume(rig: Rig) -> None:
    """Killed near the end of step 1 with a pass saved, the resumed controller must judge
    afresh: with its judge saying inconclusive, step 1 holds instead of moving on."""
    # Analyses at 90, 180, 270, 360 s: the 300 s step ends between two of them.
    rig.settings = short_settings(analysis_interval_s=90.0)
    first = rig.controller(owner="first")
    release = await first.begin(PLAN)
    task = asyncio.create_task(first.drive(release))
    await until(
        lambda: (
            release.step == 0
            and release.phase == "traffic"
            and release.elapsed_s >= 275
            and (release.detail.get("verdict") or {}).get("outcome") == "pass"
        )
    )
    await kill(task)
    await stale(rig, release)
    rig.judge = ScriptedJudge(["inconclusive"])
    second = rig.controller(owner="second")
    kept = await rig.store.get(release.release)
    assert kept is not None and kept.step == 0 and kept.elapsed_s < 300
    resumed = asyncio.create_task(second.drive(kept))
    await until(lambda: kept.detail.get("held") is True or kept.step > 0)
    assert kept.step == 0, "the step ended on the old controller's verdict"
    await kill(resumed)


async def test_a_paused_canary_is_still_judged_and_rolled_back_on_a_failure(rig: Rig) -> None:
    """Paused with 5 % on the canary, the judge keeps analysing; a failing verdict rolls
    the code back instead of leaving the canary unwatched."""
    controller = rig.controller()
    release = await controller.begin(PLAN)
    task = asyncio.create_task(controller.drive(release))
    await until(lambda: release.phase == "traffic" and len(rig.judge.calls) >= 1)
    await rig.store.request(release.release, "pause", requested_by="ops")
    await until(lambda: release.state == "paused")
    analyses = int(release.detail.get("analyses") or 0)
    rig.judge.script = ["fail-rollback"]
    done = await asyncio.wait_for(task, 10)
    assert int(done.detail["analyses"]) > analyses
    assert done.state == "rolled_back" and "paused" in done.reason
    assert rig.router.weights()["v2"] == 0


async def test_a_failed_rolling_release_restarts_the_previous_version_as_it_was_deployed(
    rig: Rig,
) -> None:
    """v1 was deployed by a rollout with its own entrypoint and env: a failed rolling
    release of v2 restarts v1 with that spec, and before v1 takes every new session."""
    previous = Release(
        release="v1-old",
        version="v1",
        previous="v0",
        strategy="bluegreen",
        started_at=-10.0,
        updated_at=-10.0,
        state="promoted",
        spec=ReplicaSpec(version="v1", entrypoint="pkg.v1:agent", env={"KEEL_AGENT__X": "1"}),
    )
    await rig.store.save(previous)
    rig.settings = short_settings(rolling={"batch": 1})
    controller = rig.controller()
    release = await controller.begin(
        ReleasePlan(version="v2", strategy="rolling", entrypoint="pkg.v2:agent")
    )
    order: list[str] = []
    rig.router.on_call = lambda name, args: (
        order.append("switch") if name == "set_weights" and args[0].get("v1") == 100 else None
    )
    start_replicas, stop_replica = rig.driver.start_replicas, rig.driver.stop_replica

    async def start(spec: ReplicaSpec, count: int) -> Any:
        order.append(f"start {spec.version}")
        return await start_replicas(spec, count)

    async def stop(name: str, *, drain: bool = True) -> None:
        # The first v1 replica stops: abort, so it must be started again.
        await stop_replica(name, drain=drain)
        await rig.store.request(release.release, "abort", requested_by="ops")

    rig.driver.start_replicas = start  # type: ignore[method-assign]
    rig.driver.stop_replica = stop  # type: ignore[method-assign]
    task = asyncio.create_task(controller.drive(release))
    done = await task
    assert done.state == "aborted"
    restarts = [args[0] for name, args in rig.driver.calls if name == "start"][1:]
    assert restarts and all(spec == previous.spec for spec in restarts)
    assert order.index("start v1") < order.index("switch")


async def test_a_secret_in_the_env_is_refused_and_env_values_are_never_shown(rig: Rig) -> None:
    controller = rig.controller()
    with pytest.raises(InvalidRequest, match="KEEL_LLM__API_KEY"):
        await controller.begin(
            ReleasePlan(version="v2", env={"KEEL_LLM__API_KEY": "sk-live-0123456789"})
        )
    assert await rig.store.latest() is None
    release = await controller.begin(
        ReleasePlan(version="v2", env={"KEEL_AGENT__SYSTEM_PROMPT": "be brief"})
    )
    shown = release.to_json()
    assert shown["spec"]["env"] == ["KEEL_AGENT__SYSTEM_PROMPT"]
    assert "be brief" not in str(shown)
    stored = await rig.store.get(release.release)
    assert stored is not None and stored.replica_spec().env["KEEL_AGENT__SYSTEM_PROMPT"]
