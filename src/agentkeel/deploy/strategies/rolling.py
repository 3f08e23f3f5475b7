"""Rolling: replace the previous version's replicas a batch at a time.

    start → replace step 0 … step k-1 → retiring → promoted

Each step starts one batch of new replicas (``start_replicas`` returns once
they answer ``/ready``), registers them with the router, sets the weights in
proportion to the replicas each version has, then drains and stops one
batch of old replicas: the router sends them nothing new, their turns in
flight finish, and their sessions' next turns go to another replica of the
same version. With the last batch the new version becomes stable and the old
one is retired; its sessions keep it until they end or the drain deadline
passes, then they move at their next turn. The view shows the live sessions
per version all along (the version skew).
"""

from __future__ import annotations

import math

from agentkeel.deploy.state import StrategyName
from agentkeel.deploy.strategies.base import RolloutRun, retire_previous_step

__all__ = ["RollingStrategy"]

FULL = 100


class RollingStrategy:
    name: StrategyName = "rolling"

    def steps(self, run: RolloutRun) -> int:
        old = run.release.detail.get("old") or []
        return max(1, math.ceil(len(old) / run.settings.rolling.batch))

    async def advance(self, run: RolloutRun) -> None:
        release = run.release
        if release.phase == "start":
            old = [{"name": r.name, "url": r.url} for r in await run.replicas_of(release.previous)]
            if not old:
                await run.fail_before_traffic(
                    f"the driver runs no replica of {release.previous}; nothing to replace"
                )
                return
            run.remember("old", old)
            run.enter("replace", step=0)
        elif release.phase == "replace":
            await self._replace(run)
        elif release.phase == "retiring":
            deadline = run.settings.rolling.drain_deadline_s
            if await retire_previous_step(run, deadline_s=deadline):
                run.finish("promoted", f"every replica runs {release.version}")

    async def _replace(self, run: RolloutRun) -> None:
        release = run.release
        old = list(release.detail.get("old") or [])
        total = len(old)
        done = min(total, (release.step + 1) * run.settings.rolling.batch)
        remaining = total - done
        weights = {release.version: done, release.previous: remaining}
        await run.start_new_replicas(done, weight=done if remaining else FULL)
        if remaining == 0:
            await run.set_weights(
                {release.version: FULL, release.previous: 0}, stable=release.version
            )
            await run.retire_previous(release.policy)
            run.enter("retiring", step=release.step + 1)
            await run.refresh_sessions()
            return
        await run.set_weights(weights)
        live = {info.name for info in await run.replicas_of(release.previous)}
        batch = old[release.step * run.settings.rolling.batch : done]
        await run.stop_replicas([item for item in batch if item["name"] in live])
        await run.refresh_sessions()
        run.enter("replace", step=release.step + 1)

    async def before_rollback(self, run: RolloutRun) -> None:
        """Start again as many previous-version replicas as the rollout stopped."""
        release = run.release
        old = release.detail.get("old") or []
        missing = len(old) - len(await run.replicas_of(release.previous))
        if missing <= 0:
            return
        run.event(f"starting {missing} replica(s) of {release.previous} again")
        started = await run.deps.driver.start_replicas(run.previous_spec, missing)
        for info in started:
            await run.deps.router.add_replica(release.previous, info.url)

    async def watch(self, run: RolloutRun) -> None:
        return None
