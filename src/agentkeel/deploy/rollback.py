"""Coordinated rollback of code and state: ``await Rollback(...).run(release)``.

The steps, in this order (see ``docs/architecture.md``, "rollback order"):

1. ``route_new_sessions_to_previous``: every new session goes to the previous
   version (one atomic weights call: previous 100, every other version 0,
   stable = previous);
2. ``fence_memory``: memory writes are refused (replicas queue them in their
   outboxes) while the state is put back;
3. ``restore_snapshot``: memory goes back to the release's pre-deploy snapshot;
   later events move to a quarantine, nothing is deleted;
4. ``drain_and_stop_bad_version``: the bad version is retired with policy
   ``move-at-turn`` (its sessions move to the previous version at their next
   turn, so nothing waits for them to end), then its replicas are drained and
   stopped at once (SIGTERM: turns in flight finish) and it leaves the routing
   table; the memory fence is up only that long;
5. ``lift_fence``: memory writes go ahead again (the outboxes deliver);
6. ``golden``: the golden checks against a replica of the previous version,
   when a suite is configured.

``code_only`` skips steps 2, 3 and 5; ``dry_run`` returns the plan and changes
nothing. Each step is logged and audit-logged, and journaled (``started``
before it acts, ``done`` after): a rollback killed half-way and run again
continues with the interrupted step (every step's actions are idempotent),
and one run after it completed changes nothing. A step that fails raises
``RollbackFailed`` naming it, with the report so far.

>>> rollback = Rollback(router, driver, memory, journal, golden=GoldenChecks(suite))
>>> report = await rollback.run(release, on_step=lambda step, status, detail: print(step))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agentkeel.deploy.live_sessions import LiveSessions
from agentkeel.deploy.rollback_journal import JournalEntry, StepJournal
from agentkeel.deploy.types import ReplicaDriver, RouterControl, RouterVersion
from agentkeel.errors import ConfigError, KeelError, Unavailable
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.telemetry.audit import audit

__all__ = [
    "CODE_STEPS",
    "STATE_STEPS",
    "STEPS",
    "GoldenCheck",
    "GoldenResult",
    "MemoryControl",
    "OnStep",
    "ReleaseLike",
    "Rollback",
    "RollbackFailed",
    "RollbackReport",
    "StepResult",
    "StepStatus",
]

logger = logging.getLogger("agentkeel.deploy.rollback")

ROUTE = "route_new_sessions_to_previous"
FENCE = "fence_memory"
RESTORE = "restore_snapshot"
DRAIN = "drain_and_stop_bad_version"
LIFT = "lift_fence"
GOLDEN = "golden"

STEPS: tuple[str, ...] = (ROUTE, FENCE, RESTORE, DRAIN, LIFT, GOLDEN)
STATE_STEPS: frozenset[str] = frozenset({FENCE, RESTORE, LIFT})
CODE_STEPS: tuple[str, ...] = tuple(step for step in STEPS if step not in STATE_STEPS)

StepStatus = Literal["planned", "done", "already_done", "skipped", "failed"]
OnStep = Callable[[str, str, str], object]
"""``on_step(step, status, detail)``; status is ``started`` or a ``StepStatus``."""


class ReleaseLike(Protocol):
    """What a rollback reads of a release (``deploy.state.Release`` has it all)."""

    @property
    def release(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def previous(self) -> str: ...

    @property
    def snapshot_id(self) -> str | None: ...


class MemoryControl(Protocol):
    """The memory server's admin calls a rollback makes (``MemoryApiClient`` has them)."""

    async def raise_fence(self, reason: str = ...) -> dict[str, Any]: ...

    async def lift_fence(self) -> dict[str, Any]: ...

    async def restore(
        self, *, snapshot_id: str | None = None, reason: str = ...
    ) -> dict[str, Any]: ...

    async def list_quarantines(self, *, events: bool = False) -> list[dict[str, Any]]: ...


class GoldenResult(Protocol):
    @property
    def passed(self) -> bool: ...

    @property
    def summary(self) -> str: ...


class GoldenCheck(Protocol):
    """Golden checks against one agent server (``ops.golden.GoldenChecks``)."""

    async def run(self, target: str) -> GoldenResult: ...


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step as this run saw it: done now, done by an earlier run, skipped, planned
    (dry run) or failed; ``detail`` says what it did or would do."""

    name: str
    status: StepStatus
    detail: str
    data: Mapping[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "status": self.status,
            "detail": self.detail,
            "data": dict(self.data),
            "duration_s": round(self.duration_s, 3),
        }


@dataclass(frozen=True, slots=True)
class RollbackReport:
    """Every step of the rollback of ``release``, in order."""

    release: str
    version: str
    previous: str
    code_only: bool
    dry_run: bool
    steps: tuple[StepResult, ...]

    @property
    def failed_step(self) -> str | None:
        return next((step.name for step in self.steps if step.status == "failed"), None)

    @property
    def passed(self) -> bool:
        """No step failed (a dry run passes when it could plan every step)."""
        return self.failed_step is None

    @property
    def changed(self) -> bool:
        """Whether this run did anything (False for a dry run and for a repeated run)."""
        return any(step.status == "done" for step in self.steps)

    @property
    def summary(self) -> str:
        what = "code" if self.code_only else "code and state"
        if self.dry_run:
            return f"rollback of {self.release} ({what}, {self.version} -> {self.previous}): plan"
        if self.failed_step is not None:
            return f"rollback of {self.release} ({what}) stopped at {self.failed_step}"
        if not self.changed:
            return f"rollback of {self.release} ({what}) was already complete; nothing changed"
        return f"rollback of {self.release} ({what}): {self.previous} serves, {self.version} gone"

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "version": self.version,
            "previous": self.previous,
            "code_only": self.code_only,
            "dry_run": self.dry_run,
            "passed": self.passed,
            "failed_step": self.failed_step,
            "summary": self.summary,
            "steps": [step.to_json() for step in self.steps],
        }


class RollbackFailed(KeelError):
    """A step of the rollback failed; ``report`` has every step up to it. Running the
    rollback again continues at that step."""

    code = "rollback_failed"
    status = 500

    def __init__(self, message: str, *, report: RollbackReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True, slots=True)
class _Outcome:
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


class Rollback:
    """Puts the previous version back, and (unless ``code_only``) the memory state.

    ``router``, ``driver`` and ``memory`` are the router's admin API, the replica
    driver and the memory server's admin client (``memory`` may be None for a
    code-only rollback); ``journal`` remembers the steps done per release;
    ``golden`` runs after the rest against the previous version, when given.
    ``sessions`` counts live sessions per version from the session store (the
    router's pins when None). ``drain_timeout_s`` (default 0: no wait) lets the
    drain wait that long for the bad version's live sessions before it stops
    its replicas; they move at their next turn anyway.
    """

    def __init__(
        self,
        router: RouterControl,
        driver: ReplicaDriver,
        memory: MemoryControl | None,
        journal: StepJournal,
        *,
        golden: GoldenCheck | None = None,
        clock: Clock | None = None,
        sessions: LiveSessions | None = None,
        drain_timeout_s: float = 0.0,
        poll_interval_s: float = 1.0,
        actor: str = "keel rollback",
    ) -> None:
        self.router = router
        self.driver = driver
        self.memory = memory
        self.journal = journal
        self.golden = golden
        self.clock = clock or SystemClock()
        self.sessions = sessions
        self.drain_timeout_s = drain_timeout_s
        self.poll_interval_s = poll_interval_s
        self.actor = actor

    async def run(
        self,
        release: ReleaseLike,
        *,
        code_only: bool = False,
        dry_run: bool = False,
        on_step: OnStep | None = None,
    ) -> RollbackReport:
        """Run (or, with ``dry_run``, plan) the rollback of ``release``.

        Raises ``ConfigError`` before doing anything when the release cannot be
        rolled back as asked (no previous version, no snapshot or memory server for
        the state part), and ``RollbackFailed`` when a step fails.
        """
        self._check(release, code_only=code_only)
        done = await self.journal.entries(release.release)
        results: list[StepResult] = []

        def report() -> RollbackReport:
            return RollbackReport(
                release=release.release,
                version=release.version,
                previous=release.previous,
                code_only=code_only,
                dry_run=dry_run,
                steps=tuple(results),
            )

        def tell(result: StepResult) -> None:
            results.append(result)
            if on_step is not None:
                on_step(result.name, result.status, result.detail)

        for step in STEPS:
            entry = done.get(step)
            if entry is not None and entry.state == "done":
                tell(StepResult(step, "already_done", _done_detail(entry), entry.detail))
                continue
            skip = self._skip_reason(step, code_only=code_only)
            if skip is not None:
                tell(StepResult(step, "skipped", skip))
                continue
            if dry_run:
                tell(StepResult(step, "planned", await self._plan(step, release)))
                continue
            if on_step is not None:
                on_step(step, "started", await self._plan(step, release))
            started = time.monotonic()
            await self.journal.start(release.release, step)
            try:
                outcome = await self._act(step, release)
            except Exception as exc:
                message = (
                    exc.message if isinstance(exc, KeelError) else f"{type(exc).__name__}: {exc}"
                )
                if not isinstance(exc, KeelError):
                    logger.exception("rollback %s: %s raised", release.release, step)
                self._audit(step, release, outcome="failed", error=message)
                tell(StepResult(step, "failed", message, duration_s=time.monotonic() - started))
                raise RollbackFailed(
                    f"rollback of release {release.release} failed at step {step}: {message}. "
                    "Fix the cause and run `keel rollback` again: it continues at this step.",
                    report=report(),
                ) from exc
            await self.journal.finish(release.release, step, outcome.data)
            self._audit(step, release, outcome="ok", detail=outcome.detail)
            logger.info(
                "rollback %s: %s done: %s",
                release.release,
                step,
                outcome.detail,
                extra={"event": "rollback", "release": release.release, "step": step},
            )
            tell(StepResult(step, "done", outcome.detail, outcome.data, time.monotonic() - started))
        return report()

    # -- what runs ----------------------------------------------------------------------

    def _check(self, release: ReleaseLike, *, code_only: bool) -> None:
        if not release.previous:
            raise ConfigError(f"release {release.release} names no previous version to go back to.")
        if release.previous == release.version:
            raise ConfigError(
                f"release {release.release} is {release.version} over itself; there is no "
                "other version to roll back to."
            )
        if code_only:
            return
        if self.memory is None:
            raise ConfigError(
                "no memory server to restore: pass its URL (--memory-url) or run with "
                "--code-only to roll back the code alone."
            )
        if not release.snapshot_id:
            raise ConfigError(
                f"release {release.release} has no pre-deploy memory snapshot, so its memory "
                "state cannot be restored; run with --code-only, or restore by hand "
                "(keel snapshot restore --at TIME)."
            )

    def _skip_reason(self, step: str, *, code_only: bool) -> str | None:
        if code_only and step in STATE_STEPS:
            return "code only: the memory state is left as it is"
        if step == GOLDEN and self.golden is None:
            return "no golden suite configured"
        return None

    async def _act(self, step: str, release: ReleaseLike) -> _Outcome:
        actions: dict[str, Callable[[ReleaseLike], Awaitable[_Outcome]]] = {
            ROUTE: self._route,
            FENCE: self._fence,
            RESTORE: self._restore,
            DRAIN: self._drain,
            LIFT: self._lift,
            GOLDEN: self._golden,
        }
        return await actions[step](release)

    async def _route(self, release: ReleaseLike) -> _Outcome:
        _, versions = await self.router.versions()
        previous = next((entry for entry in versions if entry.version == release.previous), None)
        if previous is None:
            raise Unavailable(
                f"the router has no version {release.previous} to send sessions to; put it "
                "back with its replicas first (the router's PUT /admin/versions/"
                f"{release.previous}).",
                code="rollback_previous_missing",
            )
        if not _ready_urls(previous):
            raise Unavailable(
                f"no replica of {release.previous} is ready in the router, so it cannot take "
                "the sessions; start one (or wait for its /ready) and run the rollback again.",
                code="rollback_previous_not_ready",
            )
        if previous.retired:
            # A retired version takes no new sessions; putting it back re-opens it.
            await self.router.put_version(release.previous, weight=100, policy=previous.policy)
        weights = {entry.version: 0 for entry in versions if entry.version != release.previous}
        weights[release.previous] = 100
        await self.router.set_weights(weights, stable=release.previous)
        shown = ", ".join(f"{name}={weight}" for name, weight in sorted(weights.items()))
        return _Outcome(
            f"weights {shown}; stable {release.previous}",
            {"weights": weights, "stable": release.previous},
        )

    async def _fence(self, release: ReleaseLike) -> _Outcome:
        answer = await self._memory().raise_fence(f"rollback of release {release.release}")
        already = bool(answer.get("already_fenced"))
        return _Outcome("memory writes fenced" + (" (it was up already)" if already else ""))

    async def _restore(self, release: ReleaseLike) -> _Outcome:
        memory = self._memory()
        reason = _restore_reason(release)
        # A restore acknowledged before a crash left no journal entry: its quarantine says so.
        for quarantine in await memory.list_quarantines():
            if str(quarantine.get("reason", "")).startswith(f"{reason} ("):
                return _Outcome(
                    f"memory was restored to snapshot {release.snapshot_id} already "
                    f"(quarantine {quarantine.get('id')})",
                    {"quarantine_id": quarantine.get("id"), "repeated": True},
                )
        result = await memory.restore(snapshot_id=release.snapshot_id, reason=reason)
        moved = int(result.get("quarantined_events") or 0)
        quarantine_id = result.get("quarantine_id")
        where = f" in quarantine {quarantine_id}" if quarantine_id else ""
        return _Outcome(
            f"memory restored to snapshot {release.snapshot_id} (seq {result.get('target_seq')}); "
            f"{moved} later event(s) set aside{where}, nothing deleted",
            {
                "snapshot_id": release.snapshot_id,
                "target_seq": result.get("target_seq"),
                "quarantine_id": quarantine_id,
                "quarantined_events": moved,
            },
        )

    async def _drain(self, release: ReleaseLike) -> _Outcome:
        bad = await self._version(release.version)
        data: dict[str, Any] = {"in_router": bad is not None}
        parts: list[str] = []
        if bad is not None:
            if not bad.retired or bad.policy != "move-at-turn":
                await self.router.retire_version(release.version, policy="move-at-turn")
            pinned, remaining, waited = await self._wait_for_pins(release.version)
            data |= {"pinned_at_start": pinned, "pinned_at_end": remaining, "waited_s": waited}
            if self.drain_timeout_s > 0:
                parts.append(
                    f"retired {release.version} (move-at-turn): {pinned - remaining} of "
                    f"{pinned} live session(s) moved or ended in {waited:.1f}s"
                    + (f", {remaining} left at the drain deadline" if remaining else "")
                )
            else:
                parts.append(
                    f"retired {release.version} (move-at-turn): its {pinned} live session(s) "
                    f"move to {release.previous} at their next turn"
                )
            for replica in bad.replicas:
                if not replica.draining:
                    await self.router.drain_replica(replica.url)
        stopped: list[str] = []
        for info in await self.driver.list_replicas():
            if info.version == release.version and info.state != "stopped":
                await self.driver.stop_replica(info.name, drain=True)
                stopped.append(info.name)
        data["stopped"] = stopped
        parts.append(f"stopped {', '.join(stopped)}" if stopped else "no replica left to stop")
        if bad is not None:
            await self.router.remove_version(release.version)
            parts.append(f"{release.version} removed from the router")
        else:
            parts.append(f"{release.version} was not in the router")
        return _Outcome("; ".join(parts), data)

    async def _wait_for_pins(self, version: str) -> tuple[int, int, float]:
        """(live sessions at the start, at the end, seconds waited) for ``version``."""
        start = self.clock.monotonic()
        pinned = remaining = await self._live(version)
        while remaining > 0:
            waited = self.clock.monotonic() - start
            if waited >= self.drain_timeout_s:
                break
            await self.clock.sleep(min(self.poll_interval_s, self.drain_timeout_s - waited))
            remaining = await self._live(version)
        return pinned, remaining, self.clock.monotonic() - start

    async def _live(self, version: str) -> int:
        counts = await (self.sessions.by_version() if self.sessions else self.router.pin_stats())
        return counts.get(version, 0)

    async def _lift(self, release: ReleaseLike) -> _Outcome:
        answer = await self._memory().lift_fence()
        was_up = answer.get("was_fenced", True)
        return _Outcome("memory writes open again" + ("" if was_up else " (no fence was up)"))

    async def _golden(self, release: ReleaseLike) -> _Outcome:
        assert self.golden is not None
        previous = await self._version(release.previous)
        urls = _ready_urls(previous) if previous is not None else []
        if not urls:
            raise Unavailable(
                f"no ready replica of {release.previous} to run the golden checks against.",
                code="rollback_previous_not_ready",
            )
        result = await self.golden.run(urls[0])
        if not result.passed:
            raise KeelError(
                f"the golden checks failed against {release.previous} at {urls[0]}: "
                f"{result.summary}",
                code="golden_failed",
            )
        return _Outcome(f"golden checks passed against {urls[0]}: {result.summary}")

    # -- plans (dry run, and what a step is about to do) -----------------------------------

    async def _plan(self, step: str, release: ReleaseLike) -> str:
        if step == ROUTE:
            return (
                f"send every new session to {release.previous}: weights {release.previous}=100, "
                f"every other version 0, stable {release.previous}"
            )
        if step == FENCE:
            return "raise the memory write fence (replicas queue their writes meanwhile)"
        if step == RESTORE:
            return (
                f"restore memory to the pre-deploy snapshot {release.snapshot_id}; later events "
                "move to a quarantine, nothing is deleted"
            )
        if step == DRAIN:
            return await self._plan_drain(release)
        if step == LIFT:
            return "lift the memory write fence"
        return f"run the golden checks against a ready replica of {release.previous}"

    async def _plan_drain(self, release: ReleaseLike) -> str:
        plan = (
            f"retire {release.version} (its sessions move to {release.previous} at their next turn)"
        )
        if self.drain_timeout_s > 0:
            plan += f", wait up to {self.drain_timeout_s:g}s for its live sessions"
        try:
            pins = await self._live(release.version)
            names = [
                info.name
                for info in await self.driver.list_replicas()
                if info.version == release.version and info.state != "stopped"
            ]
        except KeelError as exc:
            return f"{plan} (could not read the current state: {exc.message}), stop its replicas"
        return (
            f"{plan} (now {pins}), stop its replicas ({', '.join(names) or 'none running'}), "
            "remove it from the router"
        )

    # -- helpers ----------------------------------------------------------------------------

    async def _version(self, name: str) -> RouterVersion | None:
        _, versions = await self.router.versions()
        return next((entry for entry in versions if entry.version == name), None)

    def _memory(self) -> MemoryControl:
        assert self.memory is not None  # _check refused the state part without one
        return self.memory

    def _audit(self, step: str, release: ReleaseLike, *, outcome: str, **details: Any) -> None:
        audit(
            f"rollback.{step}",
            actor=self.actor,
            outcome=outcome,
            release=release.release,
            version=release.version,
            previous=release.previous,
            **details,
        )


def _ready_urls(version: RouterVersion) -> list[str]:
    return [replica.url for replica in version.replicas if replica.ready and not replica.draining]


def _restore_reason(release: ReleaseLike) -> str:
    # The memory server appends "(snapshot <id>)" to the reason of the quarantine it makes.
    return f"rollback of release {release.release}"


def _done_detail(entry: JournalEntry) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.finished_at or 0))
    return f"done by an earlier run at {when}"
