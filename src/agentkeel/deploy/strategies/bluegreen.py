"""Blue/green: green comes up beside blue, passes its checks, then takes every new session.

    start → golden (when a suite is configured) → switched → promoted

At the switch blue's weight drops to 0 but it is not retired: its live
sessions stay on it, and switching back (``keel rollout abort``) is one
atomic weights call. Past ``bluegreen.drain_deadline_s`` blue's remaining
sessions move to green at their next turn; blue's replicas keep running
until ``bluegreen.switch_back_window_s`` has passed, then they stop.
"""

from __future__ import annotations

from agentkeel.deploy.state import StrategyName
from agentkeel.deploy.strategies.base import (
    RolloutRun,
    golden_phase,
    retire_previous_step,
    start_phase,
)

__all__ = ["BlueGreenStrategy"]

FULL = 100


class BlueGreenStrategy:
    name: StrategyName = "bluegreen"

    def steps(self, run: RolloutRun) -> int:
        return 2

    async def advance(self, run: RolloutRun) -> None:
        release = run.release
        if release.phase == "start":
            await start_phase(run, then="switch")
        elif release.phase == "golden":
            await golden_phase(run, then="switch")
        elif release.phase == "switch":
            await run.set_weights(
                {release.version: FULL, release.previous: 0}, stable=release.version
            )
            run.remember("switched_at", run.clock.time())
            run.enter("switched", step=1)
            await run.refresh_sessions()
        elif release.phase == "switched":
            settings = run.settings.bluegreen
            if await retire_previous_step(
                run, deadline_s=settings.drain_deadline_s, warm_s=settings.switch_back_window_s
            ):
                run.finish(
                    "promoted", f"{release.version} is stable; the switch-back window closed"
                )

    async def before_rollback(self, run: RolloutRun) -> None:
        return None

    async def watch(self, run: RolloutRun) -> None:
        return None
