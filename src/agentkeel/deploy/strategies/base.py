"""What every strategy works with: the running rollout (``RolloutRun``) and its collaborators.

A strategy is a resumable state machine over ``Release.phase`` and
``Release.step``: the controller calls ``advance`` once per tick, and each call
does one bounded piece of work (start replicas, move weights, look at the
clock) and returns. Everything a later call needs is in the release, which
the controller saves after every call, so a new controller on the same store
continues where the last one stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agentkeel.config.rollout import RolloutSettings
from agentkeel.deploy.live_sessions import LiveSessions
from agentkeel.deploy.rollout_types import GoldenCheck, Judge, RollbackRunner, SnapshotTaker
from agentkeel.deploy.state import Release, ReleaseState, StrategyName
from agentkeel.deploy.types import (
    MetricsSource,
    ReplicaDriver,
    ReplicaInfo,
    ReplicaSpec,
    RouterControl,
    SessionPolicy,
)
from agentkeel.errors import KeelError
from agentkeel.resilience.clock import Clock
from agentkeel.telemetry.audit import audit

__all__ = ["RolloutDeps", "RolloutRun", "Strategy"]

_log = logging.getLogger("agentkeel.deploy.rollout")

MAX_EVENTS = 30
LIVE_REPLICA_STATES = ("starting", "ready")


@dataclass(slots=True)
class RolloutDeps:
    """The collaborators a rollout drives; the CLI builds them from the stack."""

    router: RouterControl
    driver: ReplicaDriver
    rollback: RollbackRunner
    memory: SnapshotTaker | None = None
    metrics: MetricsSource | None = None
    judge_factory: Callable[[], Judge] | None = None
    golden: GoldenCheck | None = None
    sessions: LiveSessions | None = None
    """Live sessions per version from the session store; the router's pins when None."""


class Strategy(Protocol):
    name: StrategyName

    def steps(self, run: RolloutRun) -> int:
        """How many steps the view counts (canary: its weights; rolling: its batches)."""
        ...

    async def advance(self, run: RolloutRun) -> None:
        """Do the next bounded piece of work for ``run.release``."""
        ...

    async def before_rollback(self, run: RolloutRun) -> None:
        """Undo what only this strategy did (rolling restarts the replicas it stopped);
        runs before the previous version takes every new session again."""
        ...

    async def watch(self, run: RolloutRun) -> None:
        """One tick while the release is paused (canary keeps judging the traffic it has)."""
        ...


class RolloutRun:
    """One controller's view of one release: the release, its settings, its collaborators.

    Helpers here change the world *and* record it in ``release.detail``, so a
    strategy never forgets to persist what it did.
    """

    def __init__(
        self,
        *,
        release: Release,
        settings: RolloutSettings,
        deps: RolloutDeps,
        clock: Clock,
        actor: str,
        previous_spec: ReplicaSpec | None = None,
    ) -> None:
        self.release = release
        # How the previous version's replicas start (a rollback restarts them so).
        self.previous_spec = previous_spec or ReplicaSpec(version=release.previous)
        self.settings = settings
        self.deps = deps
        self.clock = clock
        self.actor = actor
        self.rollback_reason: str | None = None

    # -- time ---------------------------------------------------------------------------

    def real_seconds(self, rollout_s: float) -> float:
        """A duration of rollout time in real seconds (``--time-scale`` divides it)."""
        return rollout_s / self.release.time_scale

    def enter(self, phase: str, *, step: int | None = None) -> None:
        """Move to ``phase`` (and ``step``); the phase's elapsed time starts at zero."""
        release = self.release
        release.phase = phase
        if step is not None:
            release.step = step
        release.elapsed_s = 0.0
        release.detail.pop("next_analysis_s", None)
        self.event(f"{phase}" + (f" (step {release.step + 1})" if step is not None else ""))

    def event(self, text: str) -> None:
        """Record ``text`` in the release's event list (the view shows the last ones) and log it."""
        events = list(self.release.detail.get("events") or [])
        events.append({"at": self.clock.time(), "event": text})
        self.release.detail["events"] = events[-MAX_EVENTS:]
        _log.info("rollout %s: %s", self.release.release, text)

    @property
    def promote_requested(self) -> bool:
        """An operator asked to promote now: strategies stop waiting."""
        return bool(self.release.detail.get("promote_requested"))

    # -- the router --------------------------------------------------------------------

    async def set_weights(self, weights: Mapping[str, int], *, stable: str | None = None) -> None:
        await self.deps.router.set_weights(weights, stable=stable)
        self.release.detail["weights"] = dict(weights)
        if stable is not None:
            self.release.detail["stable"] = stable
        audit(
            "rollout.weights",
            actor=self.actor,
            release=self.release.release,
            weights=dict(weights),
            stable=stable or "",
        )
        self.event("weights " + ", ".join(f"{v}={w}" for v, w in weights.items()))

    async def refresh_sessions(self) -> dict[str, int]:
        """Live sessions per version (kept for the view): the session store's count when
        ``deps.sessions`` is given, else the router's pins (which outlive sessions that
        ended by timeout)."""
        sessions = self.deps.sessions
        live = await (sessions.by_version() if sessions else self.deps.router.pin_stats())
        self.release.detail["sessions"] = dict(live)
        return dict(live)

    async def retire_previous(self, policy: SessionPolicy) -> None:
        await self.deps.router.retire_version(self.release.previous, policy=policy)
        self.release.detail["previous_retired"] = policy
        audit(
            "rollout.retire",
            actor=self.actor,
            release=self.release.release,
            version=self.release.previous,
            policy=policy,
        )
        self.event(f"{self.release.previous} retired ({policy})")

    # -- replicas ----------------------------------------------------------------------

    def new_replicas(self) -> list[dict[str, str]]:
        """The new version's replicas this rollout started (name, url)."""
        return [dict(item) for item in self.release.detail.get("replicas") or []]

    async def start_new_replicas(self, count: int, *, weight: int = 0) -> list[dict[str, str]]:
        """Bring the new version to ``count`` replicas and register them with the router.

        Replicas of the new version the driver already runs (a controller killed
        while starting them) are adopted, not started twice.
        """
        release = self.release
        known = {item["name"]: item for item in self.new_replicas()}
        for info in await self.replicas_of(release.version):
            known.setdefault(info.name, {"name": info.name, "url": info.url})
        missing = count - len(known)
        if missing > 0:
            self.event(f"starting {missing} replica(s) of {release.version}")
            started = await self.deps.driver.start_replicas(release.replica_spec(), missing)
            for info in started:
                known[info.name] = {"name": info.name, "url": info.url}
        replicas = list(known.values())
        release.detail["replicas"] = replicas
        await self.deps.router.put_version(
            release.version,
            replicas=[item["url"] for item in replicas],
            weight=weight,
            policy=release.policy,
        )
        return replicas

    async def replicas_of(self, version: str) -> list[ReplicaInfo]:
        """The driver's live replicas of ``version``."""
        return [
            info
            for info in await self.deps.driver.list_replicas()
            if info.version == version and info.state in LIVE_REPLICA_STATES
        ]

    async def stop_replicas(self, replicas: Sequence[ReplicaInfo | Mapping[str, str]]) -> None:
        """Drain each at the router (nothing new), then stop it (turns in flight finish)."""
        for replica in replicas:
            name, url = (
                (replica.name, replica.url)
                if isinstance(replica, ReplicaInfo)
                else (replica["name"], replica["url"])
            )
            await self.deps.router.drain_replica(url)
            await self.deps.driver.stop_replica(name, drain=True)
            await self.deps.router.remove_replica(url)
            self.event(f"replica {name} stopped")

    # -- endings -----------------------------------------------------------------------

    def finish(self, state: ReleaseState, reason: str) -> None:
        self.release.state = state
        self.release.reason = reason
        self.event(f"{state}: {reason}")
        audit("rollout." + state, actor=self.actor, release=self.release.release, reason=reason)

    async def fail_before_traffic(self, reason: str, *, state: ReleaseState = "failed") -> None:
        """The new version never served a session: take it out again and end ``state``."""
        try:
            await self.stop_replicas(await self.replicas_of(self.release.version))
            await self.deps.router.remove_version(self.release.version)
        except KeelError as exc:
            reason += f" (cleaning up {self.release.version} failed too: {exc.message})"
        self.finish(state, reason)

    def remember(self, key: str, value: Any) -> None:
        self.release.detail[key] = value

    def request_rollback(self, reason: str) -> None:
        """Ask the controller to roll the code back (it runs ``RollbackRunner``) after this call."""
        self.rollback_reason = reason

    def pause(self, reason: str) -> None:
        """Hold the rollout for an operator (promote, resume or abort)."""
        self.release.state = "paused"
        self.release.reason = reason
        self.event(f"paused: {reason}")


async def retire_previous_step(run: RolloutRun, *, deadline_s: float, warm_s: float = 0.0) -> bool:
    """One look at the previous version once it gets no new sessions; True when it is gone.

    Its live sessions keep it until they end or ``deadline_s`` of the phase has
    passed; then they move to the stable version at their next turn. Its
    replicas stay up at least ``warm_s`` (blue/green's switch-back window). An
    operator's promote ends both waits at once.
    """
    release = run.release
    previous = release.previous
    left = (await run.refresh_sessions()).get(previous, 0)
    moved = release.detail.get("previous_retired") == "move-at-turn"
    hurry = run.promote_requested
    if left > 0 and not moved and (release.elapsed_s >= deadline_s or hurry):
        await run.retire_previous("move-at-turn")
        moved = True
    if release.elapsed_s < warm_s and not hurry:
        return False
    if left > 0 and not moved:
        return False
    await run.stop_replicas(await run.replicas_of(previous))
    if left == 0:
        await run.deps.router.remove_version(previous)
        run.event(f"{previous} removed from the router")
    else:
        # Its remaining pins stay: each of those sessions moves at its next turn.
        run.remember("unmoved_sessions", left)
    return True


async def start_phase(run: RolloutRun, *, then: str, step: int | None = None) -> None:
    """Phase ``start``: bring up the new version's replicas (no sessions yet), then ``then``."""
    count = int(run.release.detail.get("replica_count") or 1)
    try:
        await run.start_new_replicas(count)
    except KeelError as exc:
        # Nothing was routed to it yet: a version that cannot start fails the release.
        await run.fail_before_traffic(f"{run.release.version} did not start: {exc.message}")
        return
    if run.deps.golden is not None and (
        run.settings.require_golden_before_traffic or run.release.strategy == "bluegreen"
    ):
        run.enter("golden")
    else:
        run.enter(then, step=step)


async def golden_phase(run: RolloutRun, *, then: str, step: int | None = None) -> None:
    """Phase ``golden``: the golden checks against one new replica directly, before any session."""
    golden = run.deps.golden
    replicas = run.new_replicas()
    if golden is None or not replicas:
        run.enter(then, step=step)
        return
    target = replicas[0]["url"]
    outcome = await golden.run(target)
    run.remember("golden", {"target": target, "passed": outcome.passed, "summary": outcome.summary})
    if outcome.passed:
        run.event(f"golden checks passed against {target}: {outcome.summary}")
        run.enter(then, step=step)
        return
    await run.fail_before_traffic(f"golden checks failed against {target}: {outcome.summary}")
