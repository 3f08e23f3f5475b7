"""The rollout controller: drives one release to promoted, rolled back, aborted or failed.

    start(plan) ─ checks the router, records the release, takes the memory
                  snapshot (kind ``deploy``, labelled with the release), then drive()
    drive(release) ─ once per tick (``rollout.poll_interval_s``):
        1. take the requests other processes wrote (promote, pause, resume, abort)
        2. the strategy's ``advance`` (when running)
        3. a code rollback if the strategy asked for one (the judge failed)
        4. save the release and beat the heartbeat in one transaction

The controller holds its release through a lease in the store with a
heartbeat (a background task beats it even while a strategy waits for
replicas to start). Killed, it leaves the release ``running`` with a stale
heartbeat; ``resume`` on a new controller continues at the same phase, step
and elapsed time. With no live controller, ``settle`` applies a request itself:
a pause is recorded, an abort rolls the code back from that process.

>>> controller = RolloutController(store=store, deps=deps, settings=settings.rollout)
>>> release = await controller.start(ReleasePlan(version="v2", strategy="canary"))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from agentkeel.config.rollout import RolloutSettings
from agentkeel.deploy.state import Release, RolloutRequest, RolloutStore, StrategyName
from agentkeel.deploy.strategies import RolloutDeps, RolloutRun, Strategy, make_strategy
from agentkeel.deploy.types import ReplicaSpec, SessionPolicy
from agentkeel.errors import Conflict, InvalidRequest, KeelError, NotFound
from agentkeel.ops.replicas import check_extra_env
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.telemetry.audit import audit

__all__ = ["ROLLING_BACK", "ReleasePlan", "RolloutController"]

_log = logging.getLogger("agentkeel.deploy.rollout")

ROLLING_BACK = "rolling_back"
"""The phase of a release whose rollback was decided; ``detail["rolling_back"]`` says how."""

BEFORE_TRAFFIC = frozenset({"snapshot", "start", "golden"})
"""Phases in which the new version has had no session yet (as far as the release knows)."""

MAX_CONSECUTIVE_ERRORS = 20
"""Ticks in a row whose work failed (router or driver unreachable) before the rollout pauses."""


@dataclass(frozen=True, slots=True)
class ReleasePlan:
    """What ``keel rollout start`` asks for."""

    version: str
    strategy: StrategyName = "canary"
    entrypoint: str | None = None
    config: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    policy: SessionPolicy = "pinned"
    replicas: int | None = None
    time_scale: float = 1.0
    name: str | None = None

    def spec(self) -> ReplicaSpec:
        return ReplicaSpec(
            version=self.version, entrypoint=self.entrypoint, config=self.config, env=self.env
        )


class RolloutController:
    """Drives releases over the store, the router, the driver and the judge.

    ``on_update`` is called with the release after every tick (the live view).
    ``owner`` names this controller in the store (default: a fresh id).
    """

    def __init__(
        self,
        *,
        store: RolloutStore,
        deps: RolloutDeps,
        settings: RolloutSettings,
        clock: Clock | None = None,
        owner: str | None = None,
        on_update: Callable[[Release], None] | None = None,
    ) -> None:
        self.store = store
        self.deps = deps
        self.settings = settings
        self.clock = clock or SystemClock()
        self.owner = owner or f"controller-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._on_update = on_update

    @property
    def actor(self) -> str:
        return f"rollout-controller:{self.owner}"

    # -- starting --------------------------------------------------------------------------

    async def start(self, plan: ReleasePlan) -> Release:
        """Record a new release and drive it; ``Conflict`` while another one is active."""
        release = await self.begin(plan)
        return await self.drive(release)

    async def begin(self, plan: ReleasePlan) -> Release:
        """Check the plan against the router and record the release (nothing moves yet)."""
        if not plan.version.strip():
            raise InvalidRequest("the release needs a version name (--version v2)")
        # The same check keel up makes, before the env is written anywhere.
        check_extra_env(plan.env)
        if plan.strategy == "canary" and (
            self.deps.metrics is None or self.deps.judge_factory is None
        ):
            raise InvalidRequest(
                "a canary rollout needs a judge and a metrics source; configure rollout.judge "
                "or use --strategy bluegreen or rolling"
            )
        if self.settings.snapshot and self.deps.memory is None:
            raise InvalidRequest(
                "rollout.snapshot is on but there is no memory server to snapshot; start "
                "keel up with its memory server, or set rollout.snapshot: false"
            )
        active = await self.store.active()
        if active is not None:
            raise Conflict(
                f"release {active.release} is {active.state}; one rollout at a time. Finish it "
                "first (keel rollout status, then promote, resume or abort).",
                code="rollout_active",
            )
        stable, versions = await self.deps.router.versions()
        if stable is None:
            raise InvalidRequest(
                "the router has no stable version to compare with or fall back to; start "
                "keel up (or keel serve router with --backend) first"
            )
        if plan.version == stable:
            raise InvalidRequest(f"{plan.version} is already the stable version")
        if any(v.version == plan.version for v in versions):
            raise InvalidRequest(
                f"the router already has a version named {plan.version}; pick a new name, or "
                f"remove it from the router first"
            )
        previous = next((v for v in versions if v.version == stable), None)
        count = (
            plan.replicas
            or self.settings.replicas
            or (len(previous.replicas) if previous is not None and previous.replicas else 1)
        )
        now = self.clock.time()
        stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%dT%H%M%S")
        release = Release(
            release=plan.name or f"{plan.version}-{stamp}",
            version=plan.version,
            previous=stable,
            strategy=plan.strategy,
            started_at=now,
            updated_at=now,
            time_scale=plan.time_scale,
            policy=plan.policy,
            spec=plan.spec(),
            detail={"replica_count": count, "stable": stable},
        )
        await self.store.create(release)
        audit(
            "rollout.start",
            actor=self.actor,
            release=release.release,
            version=release.version,
            previous=stable,
            strategy=release.strategy,
            time_scale=release.time_scale,
        )
        return release

    async def resume(self, release_id: str | None = None) -> Release:
        """Drive an active release that has no live controller (the latest one by default)."""
        release = await self._find(release_id)
        if not release.active:
            raise InvalidRequest(
                f"release {release.release} is {release.state}; only a running or paused "
                "release can be resumed"
            )
        return await self.drive(release)

    async def _find(self, release_id: str | None) -> Release:
        release = await (self.store.get(release_id) if release_id else self.store.latest())
        if release is None:
            raise NotFound(
                f"no release {release_id} in {self.store.path}"
                if release_id
                else f"no rollout recorded in {self.store.path}; start one: keel rollout start"
            )
        return release

    # -- driving ---------------------------------------------------------------------------

    async def drive(self, release: Release) -> Release:
        """Run ``release`` until it is promoted, rolled back, aborted or failed."""
        await self._claim(release)
        strategy = make_strategy(release.strategy)
        run = await self._run(release)
        run.event(f"controller {self.owner} drives the release")
        beat = asyncio.create_task(self._beat(release.release))
        errors = 0
        try:
            last = self.clock.monotonic()
            while True:
                now = self.clock.monotonic()
                if release.state == "running":
                    release.elapsed_s += (now - last) * release.time_scale
                last = now
                await self._take_requests(run, strategy)
                if release.phase == ROLLING_BACK and release.active:
                    # A rollback under way is finished, never advanced: the strategy
                    # would put the new version's weights back.
                    try:
                        await self._carry_out_rollback(run, strategy)
                    except KeelError as exc:
                        release.detail["last_error"] = exc.message
                        _log.warning("rollout %s: rollback: %s", release.release, exc.message)
                elif release.state == "running":
                    try:
                        await self._advance(run, strategy)
                        errors = 0
                    except KeelError as exc:
                        errors += 1
                        release.detail["last_error"] = exc.message
                        _log.warning("rollout %s: %s", release.release, exc.message)
                        if errors >= MAX_CONSECUTIVE_ERRORS:
                            run.pause(f"{errors} ticks failed in a row, last: {exc.message}")
                elif release.state == "paused":
                    try:
                        # Traffic still flows while paused: keep it watched.
                        await strategy.watch(run)
                    except KeelError as exc:
                        release.detail["last_error"] = exc.message
                if run.rollback_reason is not None and release.active:
                    await self._roll_back(
                        run, strategy, state="rolled_back", reason=run.rollback_reason
                    )
                await self._checkpoint(release)
                if not release.active:
                    return release
                await self.clock.sleep(self.settings.poll_interval_s)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            with contextlib.suppress(KeelError):
                await self.store.release_claim(release.release, owner=self.owner)

    async def settle(self, release: Release) -> Release:
        """Apply the pending requests of a release nobody drives, here and now.

        Pause and resume are recorded, promote is remembered for the next
        controller, and abort rolls the code back from this process.
        """
        await self._claim(release)
        try:
            run = await self._run(release)
            strategy = make_strategy(release.strategy)
            await self._take_requests(run, strategy)
            if release.phase == ROLLING_BACK and release.active:
                # A controller died half-way through a rollback: finish it here.
                await self._carry_out_rollback(run, strategy)
            await self._checkpoint(release)
            return release
        finally:
            await self.store.release_claim(release.release, owner=self.owner)

    async def _run(self, release: Release) -> RolloutRun:
        return RolloutRun(
            release=release,
            settings=self.settings,
            deps=self.deps,
            clock=self.clock,
            actor=self.actor,
            previous_spec=await self._spec_of(release.previous),
        )

    async def _spec_of(self, version: str) -> ReplicaSpec:
        """How ``version``'s replicas start: as the rollout that made it stable started
        them, else as the stack starts its own (the driver fills in the defaults)."""
        promoted = await self.store.promoted(version)
        if promoted is not None and promoted.spec is not None:
            return promoted.spec
        return ReplicaSpec(version=version)

    async def _claim(self, release: Release) -> None:
        holder = await self.store.claim(
            release.release,
            owner=self.owner,
            pid=os.getpid(),
            stale_after_s=self.settings.heartbeat_timeout_s,
        )
        if holder is not None:
            age = self.store.now() - holder.heartbeat_at
            raise Conflict(
                f"release {release.release} has a live controller (pid {holder.pid}, heartbeat "
                f"{age:.1f}s ago); send it promote, pause, resume or abort instead",
                code="rollout_controlled",
            )

    async def _beat(self, release_id: str) -> None:
        # Real time, not the controller's clock: liveness is about this process, and a
        # test's manual clock must not race ahead on its own.
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            with contextlib.suppress(KeelError):
                await self.store.heartbeat(release_id, owner=self.owner)

    async def _checkpoint(self, release: Release) -> None:
        if not await self.store.checkpoint(release, owner=self.owner):
            raise Conflict(
                f"another process took release {release.release} over (this controller "
                "stalled past rollout.heartbeat_timeout_s); this one stops",
                code="rollout_taken_over",
            )
        if self._on_update is not None:
            self._on_update(release)

    async def _advance(self, run: RolloutRun, strategy: Strategy) -> None:
        release = run.release
        if release.phase == "snapshot":
            await self._snapshot(run)
            run.enter("start")
            return
        await strategy.advance(run)

    async def _snapshot(self, run: RolloutRun) -> None:
        release = run.release
        if release.snapshot_id or not self.settings.snapshot:
            return
        memory = self.deps.memory
        if memory is None:
            raise InvalidRequest("rollout.snapshot is on but no memory client was given")
        snapshot = await memory.create_snapshot(kind="deploy", label=release.release)
        release.snapshot_id = str(snapshot["id"])
        run.event(f"memory snapshot {release.snapshot_id} (kind deploy)")

    # -- requests from other processes -------------------------------------------------------

    async def _take_requests(self, run: RolloutRun, strategy: Strategy) -> None:
        for request in await self.store.take_requests(run.release.release):
            try:
                outcome = await self._apply(run, strategy, request)
            except KeelError as exc:
                outcome = f"failed: {exc.message}"
            await self.store.finish_request(request.id, outcome)

    async def _apply(self, run: RolloutRun, strategy: Strategy, request: RolloutRequest) -> str:
        release = run.release
        if not release.active:
            return f"release {release.release} is {release.state} already"
        if release.phase == ROLLING_BACK:
            marker = release.detail.get("rolling_back") or {}
            return f"rolling back already ({marker.get('reason', 'no reason recorded')})"
        who = request.requested_by
        audit(f"rollout.{request.command}", actor=who, release=release.release)
        if request.command == "pause":
            if release.state == "paused":
                return "paused already"
            run.pause(f"paused by {who}")
            return "paused"
        if request.command == "resume":
            if release.state == "running":
                return "running already"
            release.state, release.reason = "running", ""
            run.event(f"resumed by {who}")
            return "resumed"
        if request.command == "promote":
            release.detail["promote_requested"] = True
            release.state, release.reason = "running", ""
            run.event(f"promote requested by {who}")
            return "promoting: the remaining waits are skipped"

        async def switched(seconds: float) -> None:
            # The caller hears of the switch at once, not after the drain that follows.
            await self.store.finish_request(
                request.id,
                f"switched: new sessions go to {release.previous} ({seconds:.3f}s to switch); "
                "the rollback continues",
            )

        await self._roll_back(
            run,
            strategy,
            state="aborted",
            reason=f"aborted by {who}",
            requested_at=request.requested_at,
            on_switched=switched,
        )
        took = release.detail.get("switch_back_s")
        if took is None:
            return f"aborted; {release.version} never had a session"
        return f"aborted; new sessions go to {release.previous} ({took:.3f}s to switch)"

    # -- rolling back ------------------------------------------------------------------------

    async def _roll_back(
        self,
        run: RolloutRun,
        strategy: Strategy,
        *,
        state: Literal["aborted", "rolled_back"],
        reason: str,
        requested_at: float | None = None,
        on_switched: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        """Record the rollback, then carry it out (``_carry_out_rollback``).

        The phase ``rolling_back`` with the end state and reason is saved before
        anything moves, so a controller killed half-way leaves a release that
        the next one (``resume``, or ``abort`` with no live controller) finishes
        instead of advancing the strategy again.
        """
        release = run.release
        run.rollback_reason = None
        release.detail["rolling_back"] = {
            "state": state,
            "reason": reason,
            "from_phase": release.phase,
            "requested_at": requested_at,
            "switched": False,
        }
        release.phase = ROLLING_BACK
        run.event(f"rolling back: {reason}")
        await self._checkpoint(release)
        await self._carry_out_rollback(run, strategy, on_switched=on_switched)

    async def _carry_out_rollback(
        self,
        run: RolloutRun,
        strategy: Strategy,
        *,
        on_switched: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        """New sessions back on the previous version, then the rollback's code part.

        The previous version's replicas are checked (rolling restarts those it
        stopped) before it takes every new session. The switch itself is one
        atomic weights call, so blue/green's switch-back is as fast as the router
        answers. The rollback runner then retires the new version (its sessions
        move at their next turn) and stops it; it restores the memory state too
        only when the judge failed and ``rollout.auto_state_rollback`` is on,
        else the state part is recommended. Every part is safe to run again.
        """
        release = run.release
        marker = release.detail["rolling_back"]
        state: Literal["aborted", "rolled_back"] = marker["state"]
        reason: str = marker["reason"]
        if not marker.get("switched"):
            if marker.get("from_phase") in BEFORE_TRAFFIC and not await self._had_sessions(release):
                await run.fail_before_traffic(
                    reason, state="aborted" if state == "aborted" else "failed"
                )
                return
            await self._ready_previous(run, strategy)
            started = self.clock.monotonic()
            # A weight above 0 brings a retired previous version back (the router's rule).
            release.detail.pop("previous_retired", None)
            await run.set_weights(
                {release.previous: 100, release.version: 0}, stable=release.previous
            )
            release.detail["switch_back_s"] = self.clock.monotonic() - started
            requested_at = marker.get("requested_at")
            if requested_at is not None:
                release.detail["switch_back_since_request_s"] = max(
                    0.0, self.store.now() - float(requested_at)
                )
            marker["switched"] = True
            await self._checkpoint(release)
            if on_switched is not None:
                await on_switched(release.detail["switch_back_s"])
        code_only = not (state == "rolled_back" and self.settings.auto_state_rollback)

        def on_step(*args: Any, **kwargs: Any) -> None:
            run.event("rollback: " + " ".join(str(arg) for arg in args))

        try:
            report = await self.deps.rollback.run(release, code_only=code_only, on_step=on_step)
        except KeelError as exc:
            release.detail["rollback_error"] = exc.message
            reason += f"; the rollback stopped: {exc.message} (run keel rollback to finish it)"
        else:
            release.detail["rollback"] = {"code_only": code_only, "report": _summary(report)}
        if code_only and state == "rolled_back":
            release.detail["recommendation"] = (
                f"the memory state was not restored; to restore the pre-deploy snapshot "
                f"{release.snapshot_id or '(none taken)'}: keel rollback"
            )
        run.finish(state, reason)

    async def _ready_previous(self, run: RolloutRun, strategy: Strategy) -> None:
        """Before the previous version takes every new session, it must have replicas."""
        release = run.release
        try:
            await strategy.before_rollback(run)
        except KeelError as exc:
            if not await run.replicas_of(release.previous):
                raise KeelError(
                    f"no replica of {release.previous} runs and none could be started "
                    f"({exc.message}); new sessions stay where they are until one does",
                    code="rollback_previous_not_ready",
                ) from exc
            run.event(f"starting replicas of {release.previous} failed: {exc.message}")

    async def _had_sessions(self, release: Release) -> bool:
        """Whether the new version may have sessions, as the router (not the release) says:
        a controller killed between a weights call and its checkpoint left no trace here."""
        stable, versions = await self.deps.router.versions()
        new = next((v for v in versions if v.version == release.version), None)
        if new is None:
            return False
        return stable == release.version or new.weight > 0 or new.pinned_sessions > 0


def _summary(report: Any) -> Any:
    """A rollback report as JSON-safe data for the release's detail."""
    to_json = getattr(report, "to_json", None)
    if callable(to_json):
        return to_json()
    if report is None or isinstance(report, str | int | float | bool | dict | list):
        return report
    return str(report)
