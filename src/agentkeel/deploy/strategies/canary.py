"""Canary: the new version takes a growing share of new sessions, judged at every interval.

    start → [golden] → traffic step 0 … step n-1 → retiring → promoted

Each analysis interval the judge compares the canary's and the stable
version's cumulative windows, read together (``asyncio.gather``), so both
cover the same moment. At the end of a step a ``pass`` moves on; anything
else holds the step (at most ``canary.max_extension`` of its duration, then
the rollout pauses for an operator: too little data is never a pass). A
verdict that asks for rollback ends the rollout at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

from agentkeel.deploy.rollout_types import Judge, Verdict
from agentkeel.deploy.state import StrategyName
from agentkeel.deploy.strategies.base import (
    RolloutRun,
    golden_phase,
    retire_previous_step,
    start_phase,
)
from agentkeel.errors import ConfigError

__all__ = ["CanaryStrategy", "verdict_json"]

FULL = 100


class CanaryStrategy:
    name: StrategyName = "canary"

    def __init__(self) -> None:
        self._judge: Judge | None = None
        self._weights_for: int | None = None
        # The step this controller last analysed: a verdict saved by an earlier
        # controller (killed, then resumed) never ends a step.
        self._analysed_step: int | None = None
        self._watch_due: float | None = None

    def steps(self, run: RolloutRun) -> int:
        return len(run.settings.canary.steps) + 1

    async def advance(self, run: RolloutRun) -> None:
        phase = run.release.phase
        if phase == "start":
            await start_phase(run, then="traffic", step=0)
        elif phase == "golden":
            await golden_phase(run, then="traffic", step=0)
        elif phase == "traffic":
            await self._traffic(run)
        elif phase == "retiring" and await retire_previous_step(
            run, deadline_s=run.settings.canary.drain_deadline_s
        ):
            run.finish("promoted", f"{run.release.version} is stable")

    async def before_rollback(self, run: RolloutRun) -> None:
        return None

    async def watch(self, run: RolloutRun) -> None:
        """Paused with traffic on the canary: analyse each interval, roll back on a failure.

        The step's clock stands still while paused, so the interval is counted in
        real time here (times ``--time-scale``).
        """
        release = run.release
        if release.phase != "traffic":
            return
        await self._baseline(run)
        now = run.clock.monotonic()
        interval = run.real_seconds(run.settings.analysis_interval_s)
        if self._watch_due is None:
            self._watch_due = now + interval
            return
        if now < self._watch_due:
            return
        self._watch_due = now + interval
        verdict = await self._analyse(run)
        await run.refresh_sessions()
        if verdict.rollback:
            run.request_rollback(_failure(verdict) + " while the rollout was paused")

    async def _traffic(self, run: RolloutRun) -> None:
        release = run.release
        steps = run.settings.canary.steps
        step = steps[min(release.step, len(steps) - 1)]
        if self._weights_for != release.step:
            # Entering the step, or a new controller resuming it: the router gets its weights.
            await run.set_weights(
                {release.version: step.weight, release.previous: FULL - step.weight}
            )
            self._weights_for = release.step
            await self._baseline(run)
            await run.refresh_sessions()
        self._watch_due = None
        interval = run.settings.analysis_interval_s
        due = float(release.detail.get("next_analysis_s", interval))
        if release.elapsed_s >= due:
            while due <= release.elapsed_s:
                due += interval
            release.detail["next_analysis_s"] = due
            verdict = await self._analyse(run)
            await run.refresh_sessions()
            if verdict.rollback:
                run.request_rollback(_failure(verdict))
                return
        if run.promote_requested:
            await self._promote(run)
            return
        if release.elapsed_s < step.duration_s:
            return
        last = (
            (release.detail.get("verdict") or {}).get("outcome")
            if self._analysed_step == release.step
            else None
        )
        if last == "pass":
            release.detail.pop("held", None)
            if release.step + 1 < len(steps):
                run.enter("traffic", step=release.step + 1)
            else:
                await self._promote(run)
            return
        limit = step.duration_s * (1 + run.settings.canary.max_extension)
        if release.elapsed_s >= limit:
            # A resume grants another extension of the same length.
            release.elapsed_s = step.duration_s
            run.pause(
                f"step {release.step + 1} ({step.weight} %) still {last or 'not analysed'} "
                f"after its extension; promote, resume (hold again) or abort"
            )
        elif not release.detail.get("held"):
            release.detail["held"] = True
            run.event(f"step {release.step + 1} held: verdict {last or 'not analysed yet'}")

    async def _baseline(self, run: RolloutRun) -> None:
        if self._judge is not None:
            return
        factory, source = run.deps.judge_factory, run.deps.metrics
        if factory is None or source is None:
            raise ConfigError(
                "a canary rollout needs a judge and a metrics source (rollout.judge); "
                "use --strategy bluegreen or rolling to deploy without a judge"
            )
        self._judge = factory()
        start = getattr(source, "start", None)
        if callable(start):
            # The windows are cumulative from here (a resumed controller starts afresh).
            await start()
            # The windows start empty now: the first verdict is one interval away.
            release = run.release
            release.detail["next_analysis_s"] = release.elapsed_s + run.settings.analysis_interval_s

    async def _analyse(self, run: RolloutRun) -> Verdict:
        release, source, judge = run.release, run.deps.metrics, self._judge
        assert source is not None and judge is not None
        stable, canary = await asyncio.gather(
            source.read(release.previous), source.read(release.version)
        )
        verdict = judge.evaluate(stable, canary)
        release.detail["verdict"] = verdict_json(verdict)
        release.detail["analyses"] = int(release.detail.get("analyses") or 0) + 1
        self._analysed_step = release.step
        if verdict.outcome != "pass":
            run.event(f"verdict {verdict.outcome}" + (" (rollback)" if verdict.rollback else ""))
        return verdict

    async def _promote(self, run: RolloutRun) -> None:
        release = run.release
        await run.set_weights({release.version: FULL, release.previous: 0}, stable=release.version)
        await run.retire_previous(release.policy)
        run.enter("retiring", step=len(run.settings.canary.steps))


def _failure(verdict: Verdict) -> str:
    failing = [
        str(_field(metric, "name"))
        for metric in verdict.metrics
        if _field(metric, "outcome") == "fail"
    ]
    return "the judge failed the canary" + (f" on {', '.join(failing)}" if failing else "")


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    """The verdict as the view and ``--json`` show it (each metric's fields, JSON-safe)."""
    return {
        "outcome": verdict.outcome,
        "rollback": verdict.rollback,
        "metrics": [_metric_json(metric) for metric in verdict.metrics],
    }


def _metric_json(metric: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(metric) and not isinstance(metric, type):
        fields = dataclasses.asdict(metric)
    elif isinstance(metric, Mapping):
        fields = dict(metric)
    else:
        fields = {key: value for key, value in vars(metric).items() if not key.startswith("_")}
    return {key: _jsonable(value) for key, value in fields.items()}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, Mapping):
        return {str(key): _jsonable(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(inner) for inner in value]
    return str(value)


def _field(metric: Any, name: str) -> Any:
    if isinstance(metric, Mapping):
        return metric.get(name)
    return getattr(metric, name, None)
