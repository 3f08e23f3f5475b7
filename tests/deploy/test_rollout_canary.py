"""The canary strategy driven through its doubles on a manual clock."""

from __future__ import annotations

import asyncio

import pytest

from agentkeel.deploy.controller import ReleasePlan
from tests.deploy.rollout_doubles import FedMetrics, Rig, ScriptedJudge, until
from tests.deploy.rollout_fixtures import rig, short_settings

__all__ = ["rig"]

PLAN = ReleasePlan(version="v2", strategy="canary", time_scale=60.0)


async def test_a_passing_canary_walks_its_steps_and_promotes(rig: Rig) -> None:
    """Every step's weights reach the router in order, then 100 %: v2 is stable, v1 is
    retired with the release's policy, its replicas are drained and stopped, and the
    deploy snapshot taken before anything moved is kept in the release."""
    release = await rig.controller().start(PLAN)

    assert release.state == "promoted", release.reason
    assert rig.router.weight_history == [
        {"v1": 95, "v2": 5},
        {"v1": 75, "v2": 25},
        {"v1": 0, "v2": 100},
    ]
    assert rig.router.stable == "v2"
    assert "v1" not in rig.router.table
    assert [c for c in rig.router.calls if c[0] == "retire_version"] == [
        ("retire_version", ("v1", "pinned"))
    ]
    assert rig.driver.live("v1") == []
    assert len(rig.driver.live("v2")) == 2
    assert rig.memory.snapshots == [{"id": "snap-1", "label": release.release, "kind": "deploy"}]
    assert release.snapshot_id == "snap-1"
    first_weights = next(i for i, c in enumerate(rig.router.calls) if c[0] == "set_weights")
    v2_urls = tuple(r["url"] for r in release.detail["replicas"])
    assert rig.router.calls.index(("put_version", ("v2", v2_urls, 0, "pinned"))) < first_weights
    # 300 s + 600 s of rollout time analysed every 60 s.
    assert 14 <= len(rig.judge.calls) <= 16
    assert set(rig.judge.calls) == {("v1", "v2")}
    assert rig.rollback.calls == []
    stored = await rig.store.get(release.release)
    assert stored is not None and stored.state == "promoted"
    assert stored.detail["verdict"]["metrics"][0]["name"] == "tool_success"


async def test_canary_reads_stable_and_canary_together(rig: Rig) -> None:
    """Each analysis reads both versions' windows concurrently (the double waits for the
    second read to start, so reading one after the other would time out)."""
    rig.metrics = FedMetrics(overlap_required=True)
    release = await rig.controller().start(PLAN)
    assert release.state == "promoted", release.reason
    assert rig.metrics.overlaps == len(rig.judge.calls) > 0
    assert rig.metrics.started == 1


async def test_an_inconclusive_verdict_holds_the_step(rig: Rig) -> None:
    """Inconclusive at the end of step 1 holds it: step 2's weights come only once a
    verdict passes, later than the step's 300 s."""
    rig.judge = ScriptedJudge(["inconclusive"] * 7 + ["pass"])
    held_at: list[float] = []

    def watch(name: str, args: object) -> None:
        if name == "set_weights" and args == ({"v2": 25, "v1": 75}, None):
            held_at.append(rig.clock.monotonic())

    rig.router.on_call = watch
    release = await rig.controller().start(PLAN)
    assert release.state == "promoted", release.reason
    # Seven inconclusive minutes, the eighth passes: step 2 starts after ~8 min, not 5.
    assert held_at and held_at[0] * PLAN.time_scale >= 8 * 60
    assert any("held" in e["event"] for e in release.detail["events"])


async def test_inconclusive_past_the_extension_pauses_for_an_operator(rig: Rig) -> None:
    """Too little data is never a pass: past step 1's extension the rollout pauses, and
    the canary never got more than 5 %."""
    rig.settings = short_settings(poll_interval_s=0.05)
    rig.settings.canary.max_extension = 0.5
    rig.judge = ScriptedJudge(["inconclusive"])
    controller = rig.controller()
    release = await controller.begin(PLAN)

    task = asyncio.create_task(controller.drive(release))
    await until(lambda: release.state == "paused")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert release.step == 0
    assert "extension" in release.reason
    assert all(w.get("v2", 0) <= 5 for w in rig.router.weight_history)
    assert rig.rollback.calls == []


async def test_a_failing_judge_rolls_the_code_back(rig: Rig) -> None:
    """A verdict that asks for rollback switches new sessions back to v1 first, then runs
    the rollback's code part only (code_only) and recommends the memory restore."""
    rig.judge = ScriptedJudge(["pass", "fail", "fail-rollback"])
    release = await rig.controller().start(PLAN)

    assert release.state == "rolled_back"
    assert "tool_success" in release.reason
    assert rig.rollback.calls == [(release.release, True)]
    # The switch came before the rollback ran.
    assert rig.rollback.weights_when_called == [{"v1": 100, "v2": 0}]
    assert rig.router.stable == "v1"
    assert "keel rollback" in release.detail["recommendation"]
    assert release.snapshot_id in release.detail["recommendation"]
    assert len(rig.judge.calls) == 3


async def test_auto_state_rollback_runs_the_whole_rollback(rig: Rig) -> None:
    """With rollout.auto_state_rollback the judge's failure runs the state part too."""
    rig.settings = short_settings(auto_state_rollback=True)
    rig.judge = ScriptedJudge(["fail-rollback"])
    release = await rig.controller().start(PLAN)
    assert release.state == "rolled_back"
    assert rig.rollback.calls == [(release.release, False)]
    assert "recommendation" not in release.detail


async def test_promote_waits_for_the_previous_versions_sessions(rig: Rig) -> None:
    """After 100 % the pinned sessions of v1 keep its replicas up; once they end, v1's
    replicas stop and it leaves the router."""
    rig.router.pins = {"v1": 3, "v2": 0}
    pins_at_drain: list[int] = []
    v1_urls = set(rig.router.table["v1"].replicas)

    def watch(name: str, args: object) -> None:
        if name == "drain_replica" and args in v1_urls:
            pins_at_drain.append(rig.router.pins["v1"])
        if name == "retire_version":
            rig.router.pins["v1"] = 0  # the sessions end right after the retirement

    rig.router.on_call = watch
    release = await rig.controller().start(PLAN)
    assert release.state == "promoted"
    assert pins_at_drain == [0, 0]
    assert "v1" not in rig.router.table


async def test_the_drain_deadline_moves_sessions_that_never_end(rig: Rig) -> None:
    """Pinned v1 sessions that stay past the drain deadline are moved at their next turn
    (retired again with move-at-turn); v1's replicas then stop and its pins stay."""
    rig.router.pins = {"v1": 4}
    release = await rig.controller().start(PLAN)
    assert release.state == "promoted"
    retires = [c[1] for c in rig.router.calls if c[0] == "retire_version"]
    assert retires == [("v1", "pinned"), ("v1", "move-at-turn")]
    assert rig.driver.live("v1") == []
    assert release.detail["unmoved_sessions"] == 4
    assert rig.router.table["v1"].retired


async def test_a_canary_without_a_judge_is_refused(rig: Rig) -> None:
    """Nothing is recorded or moved when a canary has no judge to read."""
    from agentkeel.deploy.controller import RolloutController
    from agentkeel.errors import InvalidRequest

    deps = rig.deps()
    deps.judge_factory = None
    controller = RolloutController(
        store=rig.store, deps=deps, settings=rig.settings, clock=rig.clock
    )
    with pytest.raises(InvalidRequest, match="judge"):
        await controller.start(PLAN)
    assert await rig.store.latest() is None
    assert rig.router.weight_history == []
