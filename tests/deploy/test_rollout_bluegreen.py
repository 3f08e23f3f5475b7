"""Blue/green: golden against green, one switch, blue warm for the window, switch-back."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentkeel.config.rollout import BlueGreenSettings
from agentkeel.deploy.controller import ReleasePlan
from agentkeel.deploy.state import RolloutStore
from agentkeel.resilience.clock import SystemClock
from tests.deploy.rollout_doubles import FixedGolden, Rig, until
from tests.deploy.rollout_fixtures import rig, short_settings

__all__ = ["rig"]

PLAN = ReleasePlan(version="v2", strategy="bluegreen", time_scale=60.0)


def bluegreen(**overrides: object) -> object:
    return short_settings(
        bluegreen=BlueGreenSettings(drain_deadline_s=600, switch_back_window_s=1200),
        **overrides,
    )


async def test_green_is_checked_switched_to_and_blue_stops_after_the_window(rig: Rig) -> None:
    """The golden checks run against a green replica directly before any session; then
    one atomic switch sends every new session to green; blue is not retired, so its
    sessions stay, and its replicas keep running until the switch-back window closes."""
    rig.settings = bluegreen()
    rig.golden = FixedGolden(passed=True)
    blue_stopped_at: list[float] = []

    def watch(name: str, args: object) -> None:
        if name == "drain_replica" and args in set(rig.router.table["v1"].replicas):
            blue_stopped_at.append(rig.clock.monotonic())

    rig.router.on_call = watch
    release = await rig.controller().start(PLAN)

    assert release.state == "promoted", release.reason
    green = [r["url"] for r in release.detail["replicas"]]
    assert rig.golden.targets == [green[0]]
    assert rig.router.weight_history == [{"v1": 0, "v2": 100}]
    assert rig.router.stable == "v2"
    assert [c for c in rig.router.calls if c[0] == "retire_version"] == []
    switch = next(i for i, c in enumerate(rig.router.calls) if c[0] == "set_weights")
    assert switch > next(i for i, c in enumerate(rig.router.calls) if c[0] == "put_version")
    # Blue stayed up for the 1200 s window (20 s at time scale 60).
    assert blue_stopped_at and min(blue_stopped_at) * PLAN.time_scale >= 1200
    assert rig.driver.live("v1") == [] and "v1" not in rig.router.table


async def test_blue_sessions_move_at_the_drain_deadline(rig: Rig) -> None:
    """Blue sessions still live at the drain deadline are retired to move-at-turn."""
    rig.settings = bluegreen()
    rig.router.pins = {"v1": 7}
    retired_at: list[float] = []
    switched_at: list[float] = []

    def watch(name: str, args: object) -> None:
        if name == "retire_version":
            retired_at.append(rig.clock.monotonic() * PLAN.time_scale)
        if name == "set_weights":
            switched_at.append(rig.clock.monotonic() * PLAN.time_scale)

    rig.router.on_call = watch
    release = await rig.controller().start(PLAN)
    assert release.state == "promoted"
    assert [c[1] for c in rig.router.calls if c[0] == "retire_version"] == [("v1", "move-at-turn")]
    assert 600 <= retired_at[0] - switched_at[0] <= 600 + 2 * 12
    assert release.detail["unmoved_sessions"] == 7


async def test_failing_golden_checks_keep_green_away_from_every_session(rig: Rig) -> None:
    rig.settings = bluegreen()
    rig.golden = FixedGolden(passed=False)
    release = await rig.controller().start(PLAN)
    assert release.state == "failed"
    assert "golden checks failed" in release.reason
    assert rig.router.weight_history == []
    assert "v2" not in rig.router.table
    assert rig.driver.live("v2") == []
    assert rig.rollback.calls == []


async def test_a_replica_that_does_not_start_fails_the_release(rig: Rig) -> None:
    rig.settings = bluegreen()
    rig.driver.fail_start = "replica v2-1 exited with code 1 before /ready"
    release = await rig.controller().start(PLAN)
    assert release.state == "failed"
    assert "exited with code 1" in release.reason
    assert rig.router.weight_history == []


@pytest.mark.parametrize("controller_alive", [True, False])
async def test_abort_in_the_window_puts_new_sessions_back_on_blue(
    rig: Rig, controller_alive: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Within the switch-back window `abort` switches new sessions back to blue in one
    weights call, with a live controller (it takes the request within a tick) or without
    one (the caller does it). The time from the request to the switch is printed."""
    rig.settings = bluegreen(poll_interval_s=0.2)
    rig.settings.bluegreen.switch_back_window_s = 3600
    rig.clock = SystemClock()  # type: ignore[assignment]
    switched: list[float] = []

    def watch(name: str, args: object) -> None:
        if name == "set_weights" and args == ({"v1": 100, "v2": 0}, "v1"):
            switched.append(time.monotonic())

    rig.router.on_call = watch
    plan = ReleasePlan(version="v2", strategy="bluegreen", time_scale=1.0)
    async with RolloutStore(rig.store.path) as store:
        rig.store = store
        controller = rig.controller()
        release = await controller.begin(plan)
        task = asyncio.create_task(controller.drive(release))
        await until(lambda: release.phase == "switched", ticks=1000, pause_s=0.01)
        if not controller_alive:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        async with RolloutStore(rig.store.path) as cli:
            asked = time.monotonic()
            await cli.request(release.release, "abort", requested_by="ops")
            if controller_alive:
                done = await task
            else:
                stored = await cli.get(release.release)
                assert stored is not None
                done = await rig.controller().settle(stored)
    assert done.state == "aborted"
    assert rig.router.stable == "v1" and rig.router.weights() == {"v1": 100, "v2": 0}
    assert rig.rollback.calls == [(release.release, True)]
    took_ms = (switched[0] - asked) * 1000
    who = "live controller" if controller_alive else "no controller, the caller"
    own_ms = done.detail["switch_back_since_request_s"] * 1000
    with capsys.disabled():
        print(
            f"\nblue/green switch-back ({who}): {took_ms:.1f} ms from abort request to new "
            f"sessions on blue (controller's own measure: {own_ms:.1f} ms)"
        )


async def test_switch_back_after_the_drain_deadline_reopens_blue(rig: Rig) -> None:
    """Past the drain deadline blue is retired (its sessions move at turn); an abort still
    inside the window gives blue its weight back, which re-opens it for new sessions."""
    rig.settings = bluegreen()
    rig.router.pins = {"v1": 2}
    controller = rig.controller()
    release = await controller.begin(PLAN)

    def abort_once_retired(name: str, args: object) -> None:
        if name == "retire_version":
            rig.router.on_call = None
            asyncio.get_running_loop().create_task(
                rig.store.request(release.release, "abort", requested_by="ops")
            )

    rig.router.on_call = abort_once_retired
    done = await controller.drive(release)
    assert done.state == "aborted"
    assert not rig.router.table["v1"].retired
    assert rig.router.weights()["v1"] == 100 and rig.router.stable == "v1"
    assert len(rig.driver.live("v1")) == 2
