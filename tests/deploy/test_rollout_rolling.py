"""Rolling: one replica at a time, weights by replica count, skew visible, abort restores."""

from __future__ import annotations

import asyncio

from agentkeel.deploy.controller import ReleasePlan
from agentkeel.deploy.state import Release
from tests.deploy.rollout_doubles import RecordingDriver, RecordingRollback, Rig, TableRouter
from tests.deploy.rollout_fixtures import rig

__all__ = ["rig"]

PLAN = ReleasePlan(version="v2", strategy="rolling", time_scale=60.0)
FOUR = tuple(f"http://127.0.0.1:{8081 + i}" for i in range(4))


def four_replicas(rig: Rig) -> None:
    rig.router = TableRouter(stable="v1", replicas=FOUR)
    rig.rollback = RecordingRollback(router=rig.router)
    rig.driver = RecordingDriver(existing=[("v1", url) for url in FOUR])


async def test_replicas_are_replaced_one_at_a_time(rig: Rig) -> None:
    """Each step starts one new replica before it stops one old one; weights follow the
    replica counts; the last old replica goes after v2 is stable and v1 retired."""
    four_replicas(rig)
    seen: list[tuple[dict[str, int], int, int]] = []

    def watch(name: str, args: object) -> None:
        if name == "set_weights":
            weights = dict(args[0])  # type: ignore[index]
            seen.append((weights, len(rig.driver.live("v1")), len(rig.driver.live("v2"))))

    rig.router.on_call = watch
    release = await rig.controller().start(PLAN)

    assert release.state == "promoted", release.reason
    assert seen == [
        ({"v2": 1, "v1": 3}, 4, 1),
        ({"v2": 2, "v1": 2}, 3, 2),
        ({"v2": 3, "v1": 1}, 2, 3),
        ({"v2": 100, "v1": 0}, 1, 4),
    ]
    assert rig.router.stable == "v2"
    assert rig.driver.live("v1") == [] and len(rig.driver.live("v2")) == 4
    starts = [c[1][1] for c in rig.driver.calls if c[0] == "start"]
    assert starts == [1, 1, 1, 1]
    stops = [c[1] for c in rig.driver.calls if c[0] == "stop"]
    assert all(drain for _, drain in stops) and len(stops) == 4
    # Every old replica was drained at the router before it was stopped.
    drained = [c[1] for c in rig.router.calls if c[0] == "drain_replica"]
    assert drained == list(FOUR)


async def test_sessions_per_version_are_kept_for_the_status(rig: Rig) -> None:
    """While replicas are replaced the release records the router's live sessions per
    version at every step (the skew `keel rollout status` shows)."""
    four_replicas(rig)
    rig.router.pins = {"v1": 40, "v2": 0}

    def move(name: str, args: object) -> None:
        if name == "set_weights":
            rig.router.pins["v1"] -= 10
            rig.router.pins["v2"] += 10

    rig.router.on_call = move
    skews: list[dict[str, int]] = []
    controller = rig.controller()
    original = controller._on_update

    def record(release: Release) -> None:
        assert original is not None
        original(release)
        sessions = release.detail.get("sessions")
        if sessions and (not skews or skews[-1] != sessions):
            skews.append(dict(sessions))

    controller._on_update = record
    release = await controller.start(PLAN)
    assert release.state == "promoted"
    assert skews[:3] == [{"v1": 30, "v2": 10}, {"v1": 20, "v2": 20}, {"v1": 10, "v2": 30}]
    assert skews[-1]["v1"] == 0 and skews[-1]["v2"] == 40


async def test_abort_mid_rolling_restarts_the_old_replicas(rig: Rig) -> None:
    """Aborted after two steps: new sessions go back to v1, as many v1 replicas as were
    stopped start again and join the router, then the rollback runs."""
    four_replicas(rig)
    controller = rig.controller()
    release = await controller.begin(PLAN)

    def abort_after_two(name: str, args: object) -> None:
        if name == "set_weights" and args == ({"v2": 2, "v1": 2}, None):
            rig.router.on_call = None
            asyncio.get_running_loop().create_task(
                rig.store.request(release.release, "abort", requested_by="ops")
            )

    rig.router.on_call = abort_after_two
    done = await controller.drive(release)
    assert done.state == "aborted"
    assert rig.router.stable == "v1" and rig.router.weights()["v1"] == 100
    assert len(rig.driver.live("v1")) == 4
    assert len(rig.router.table["v1"].replicas) == 4
    assert rig.rollback.calls == [(release.release, True)]


async def test_nothing_to_replace_fails_the_release(rig: Rig) -> None:
    rig.driver = RecordingDriver()
    release = await rig.controller().start(PLAN)
    assert release.state == "failed"
    assert "no replica of v1" in release.reason
    assert rig.router.weight_history == []
