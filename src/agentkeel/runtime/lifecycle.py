"""The session lifecycle: ends, live counts, retention and forgetting a user.

A session ends when it is deleted, idle for ``sessions.idle_timeout_s`` or
``sessions.max_duration_s`` after it started. Whoever notices first records
the end with a conditional update, so of several replicas sharing a store
exactly one records it and only that one observes the per-session histograms:

- a turn (or a rewind, or a DELETE) on a session past its end ends it lazily
  and is refused with 410 ``session_ended``;
- every replica's sweeper ends such sessions in bounded batches every
  ``sessions.sweep_interval_s``, leaving ``sessions.sweep_grace_s`` to a turn
  still in flight on another replica.

The live-session gauges count from the shared store (not ended, not expired),
by version and for this replica, on every sweep and when a scrape finds them
older than ``sessions.live_refresh_s``. Transcripts of sessions that ended more
than ``sessions.retention_days`` ago are purged ``purge_batch`` sessions per
transaction with a pause between batches, and so, in batches too, are the store's
quota rows of day and month windows that ended more than ``WINDOW_ROW_MARGINS_S``
ago (Redis expires its own keys); ``forget`` removes one user's sessions, turns,
feedback and budget rows, and their memory namespaces.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from agentkeel.config.sessions import SessionSettings
from agentkeel.config.settings import ServerSettings
from agentkeel.errors import InvalidRequest, KeelError, SessionEnded
from agentkeel.memory.namespaces import user_namespace
from agentkeel.resilience.clock import Clock
from agentkeel.resilience.windows import Period, utc_window
from agentkeel.runtime.store import (
    QuotaWindowPurger,
    RemovedCounts,
    SessionExpiry,
    SessionRecord,
    SessionStore,
    sorted_owners,
)
from agentkeel.telemetry.audit import audit
from agentkeel.telemetry.metrics import AgentMetrics

__all__ = [
    "WINDOW_ROW_MARGINS_S",
    "ForgetReport",
    "LiveReport",
    "NamespaceEraser",
    "SessionLifecycle",
    "replica_id_for",
    "user_namespace",
]

logger = logging.getLogger("agentkeel.runtime.lifecycle")

WINDOW_ROW_MARGINS_S: Mapping[Period, float] = {"day": 2 * 86_400.0, "month": 35 * 86_400.0}
"""How long after its window ends a quota row stays in the store: long past any clock
skew between replicas, and a month row outlives the month it counted by a month."""


@runtime_checkable
class NamespaceEraser(Protocol):
    """What ``forget`` needs from the memory handle: remove every memory in a namespace
    (``MemoryClient.delete_namespace``); returns how many were deleted."""

    async def delete_namespace(self, namespace: str) -> int: ...


@runtime_checkable
class LedgerEraser(Protocol):
    """What ``forget`` needs from a budget ledger outside the store (Redis): remove the
    user's quota keys (or count them, ``dry_run``); returns how many."""

    async def forget_user(
        self, user_id: str, *, organization: str | None = None, dry_run: bool = False
    ) -> int: ...


def replica_id_for(server: ServerSettings) -> str:
    """This replica's name in the store and in ``/admin/sessions/live``:
    ``server.replica_id`` (``keel up`` sets replica-N), else ``<hostname>:<port>``
    (a pod's name on Kubernetes)."""
    return server.replica_id or f"{socket.gethostname()}:{server.port}"


@dataclass(frozen=True, slots=True)
class LiveReport:
    """Live sessions in the shared store at ``counted_at``."""

    replica: str
    version: str
    by_version: Mapping[str, int]
    by_replica: Mapping[str, int]
    counted_at: float
    started_before: float | None = None
    """The time asked about, if any; ``older`` live sessions started before it."""
    older: int = 0

    @property
    def this_replica(self) -> int:
        return self.by_replica.get(self.replica, 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "version": self.version,
            "live": self.this_replica,
            "by_version": dict(self.by_version),
            "by_replica": dict(self.by_replica),
            "total": sum(self.by_version.values()),
            "counted_at": _iso(self.counted_at),
            **(
                {"started_before": {"at": self.started_before, "count": self.older}}
                if self.started_before is not None
                else {}
            ),
        }


@dataclass(frozen=True, slots=True)
class ForgetReport:
    """What ``forget`` removed (or, in a dry run, would remove)."""

    user_id: str
    dry_run: bool
    removed: RemovedCounts
    memory_configured: bool
    namespaces: Mapping[str, int | None] = field(default_factory=dict)
    """Memory namespaces and the memories deleted in each (None in a dry run)."""
    organization: str | None = None
    """The organization it was limited to; ``None``: the user id in every organization."""

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "organization": self.organization,
            "dry_run": self.dry_run,
            **self.removed.to_json(),
            "memory": {
                "configured": self.memory_configured,
                "namespaces": dict(self.namespaces),
            },
        }


class SessionLifecycle:
    """Ends, live counts, purges and forgets over one shared store, for one replica.

    >>> lifecycle = SessionLifecycle(store=store, settings=SessionSettings(),
    ...     metrics=metrics, clock=SystemClock(), replica="replica-1", version="v1")
    >>> await lifecycle.sweep()       # what the background task does every interval

    ``sleep`` waits out the background task's intervals (tests pass a fake).
    ``ledger``: a budget ledger outside the store, forgotten along with it.
    """

    def __init__(
        self,
        *,
        store: SessionStore,
        settings: SessionSettings,
        metrics: AgentMetrics,
        clock: Clock,
        replica: str,
        version: str,
        memory: Any | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        ledger: LedgerEraser | None = None,
    ) -> None:
        self.store = store
        self.ledger = ledger
        """A budget ledger apart from the store (``quotas.ledger: redis``), whose quota keys
        of a user ``forget`` removes too."""
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.replica = replica
        self.version = version
        self.memory = memory
        self._sleep = sleep
        self.expiry = SessionExpiry(
            idle_timeout_s=settings.idle_timeout_s, max_duration_s=settings.max_duration_s
        )
        self._versions_seen: set[str] = set()
        self._live_at: float | None = None

    # -- ends -------------------------------------------------------------------

    def ended_error(self, session: SessionRecord) -> SessionEnded:
        """The 410 for a change to an ended session: when it ended, why, what to do."""
        when = _iso(session.ended_at) if session.ended_at is not None else "an unknown time"
        if session.end_reason == "idle_timeout":
            why = (
                f"it was idle for more than {self.settings.idle_timeout_s:g} s "
                "(sessions.idle_timeout_s)"
            )
        elif session.end_reason == "max_duration":
            why = (
                f"it reached its maximum duration of {self.settings.max_duration_s:g} s "
                "(sessions.max_duration_s)"
            )
        else:
            why = "it was deleted"
        return SessionEnded(
            f"Session '{session.session_id}' ended at {when} because {why}; start a new "
            "session with POST /v1/sessions."
        )

    def record_end(self, session: SessionRecord) -> None:
        """Observe an end this replica recorded: the per-session histograms, once."""
        reason = session.end_reason or "deleted"
        # An idle session's last minutes were silence: its length runs to its last turn.
        until = session.active_at if reason == "idle_timeout" else session.ended_at
        duration = max(0.0, (until or session.created_at) - session.created_at)
        self.metrics.session_duration.labels(session.agent_id).observe(duration)
        self.metrics.turns_per_session.labels(session.agent_id).observe(session.turn_count)
        self.metrics.sessions_ended.labels(session.agent_id, reason).inc()
        logger.info(
            "session ended (%s) after %d turn(s)",
            reason,
            session.turn_count,
            extra={
                "session_id": session.session_id,
                "agent_id": session.agent_id,
                "reason": reason,
                "event": "session",
            },
        )

    async def end_if_expired(self, session: SessionRecord, *, grace: bool = False) -> SessionRecord:
        """The session as it stands: ended now if it had expired (recorded here if this
        replica is first), else unchanged.

        ``grace`` waits ``sessions.sweep_grace_s`` past the end first, as the sweeper
        does: a read must not end a session under a long turn still running elsewhere.
        """
        now = self.clock.time() - (self.settings.sweep_grace_s if grace else 0.0)
        if self.expiry.expired(session, now) is None:
            return session
        ended = await self.store.end_expired_session(session.session_id, self.expiry, now=now)
        if ended is not None:
            self.record_end(ended)
            return ended
        # Someone else recorded it first, or a turn made it live again meanwhile.
        return await self.store.get_session(session.session_id) or session

    async def end_deleted(self, session_id: str) -> SessionRecord | None:
        """Record a DELETE; the ended session, or None if someone else ended it first."""
        ended = await self.store.end_session(session_id, self.clock.time(), "deleted")
        if ended is not None:
            self.record_end(ended)
        return ended

    async def sweep(self) -> int:
        """End every session past its end (less the grace) in batches; returns how many
        this replica recorded. Refreshes the gauges."""
        ended = 0
        if not self.expiry.never:
            now = self.clock.time() - self.settings.sweep_grace_s
            limit = self.settings.sweep_batch
            while True:
                batch = await self.store.end_expired_sessions(self.expiry, now=now, limit=limit)
                for session in batch:
                    self.record_end(session)
                ended += len(batch)
                if len(batch) < limit:
                    break
                await asyncio.sleep(0)  # let turns in
        await self.refresh_gauges()
        return ended

    # -- live counts ----------------------------------------------------------------

    async def live(self, *, started_before: float | None = None) -> LiveReport:
        """Count the live sessions in the store now; with ``started_before`` (a unix
        time), also those that started before it (a rotation's drain waits on them)."""
        now = self.clock.time()
        rows = await self.store.count_live_sessions(
            self.expiry, now=now, started_before=started_before
        )
        by_version: dict[str, int] = {}
        by_replica: dict[str, int] = {}
        for row in rows:
            by_version[row.version] = by_version.get(row.version, 0) + row.count
            name = row.replica or "unknown"
            by_replica[name] = by_replica.get(name, 0) + row.count
        return LiveReport(
            replica=self.replica,
            version=self.version,
            by_version=by_version,
            by_replica=by_replica,
            counted_at=now,
            started_before=started_before,
            older=sum(row.started_before for row in rows),
        )

    async def refresh_gauges(self) -> LiveReport:
        """Set ``agent_active_sessions`` and the live-session gauges from the store."""
        self.metrics.active_sessions.set(await self.store.count_active_sessions())
        report = await self.live()
        # A version whose last live session ended reads 0 rather than its last count.
        for version in self._versions_seen - set(report.by_version):
            self.metrics.live_sessions.labels(version).set(0)
        for version, count in report.by_version.items():
            self.metrics.live_sessions.labels(version).set(count)
        self._versions_seen |= set(report.by_version)
        self.metrics.replica_live_sessions.set(report.this_replica)
        self._live_at = self.clock.monotonic()
        return report

    async def refresh_if_stale(self) -> None:
        """Refresh the gauges when older than ``sessions.live_refresh_s`` (for a scrape)."""
        if (
            self._live_at is not None
            and self.clock.monotonic() - self._live_at < self.settings.live_refresh_s
        ):
            return
        await self.refresh_gauges()

    # -- retention ------------------------------------------------------------------

    async def purge(self, *, dry_run: bool = False) -> RemovedCounts:
        """Remove the transcripts of sessions that ended more than ``retention_days`` ago,
        ``purge_batch`` sessions per transaction, pausing ``purge_pause_s`` between
        batches; then the store's quota rows of windows that ended more than
        ``WINDOW_ROW_MARGINS_S`` ago, ``purge_batch`` rows at a time (counted in
        ``budget_rows``). A dry run counts what would go and removes nothing."""
        ended_before = self.clock.time() - self.settings.retention_s
        windows = self._ended_windows()
        purger = self.store if isinstance(self.store, QuotaWindowPurger) else None
        if dry_run:
            counts = await self.store.count_purgeable(ended_before=ended_before)
            if purger is not None:
                rows = await purger.count_quota_windows(**windows)
                counts = dataclasses.replace(counts, budget_rows=counts.budget_rows + rows)
            return counts
        total = RemovedCounts()
        limit = self.settings.purge_batch
        while True:
            batch = await self.store.purge_ended_sessions(ended_before=ended_before, limit=limit)
            total += batch
            self.metrics.sessions_purged.inc(batch.sessions)
            if batch.sessions < limit:
                break
            await self.clock.sleep(self.settings.purge_pause_s)
        if total.sessions:
            logger.info(
                "purged %d ended session(s) and %d turn(s) older than %g day(s)",
                total.sessions,
                total.turns,
                self.settings.retention_days,
                extra={"event": "retention"},
            )
        if purger is not None:
            rows = await self._purge_windows(purger, windows)
            total = dataclasses.replace(total, budget_rows=total.budget_rows + rows)
        return total

    def _ended_windows(self) -> dict[str, str]:
        """The labels before which a window ended more than its margin ago: a day (or
        month) whose label is below ``day_before`` (``month_before``)."""
        now = self.clock.time()
        day, month = (utc_window(p, now - WINDOW_ROW_MARGINS_S[p]) for p in ("day", "month"))
        return {"day_before": day.label, "month_before": month.label}

    async def _purge_windows(self, purger: QuotaWindowPurger, windows: dict[str, str]) -> int:
        limit = self.settings.purge_batch
        removed, after = 0, ""
        while True:
            count, last = await purger.purge_quota_windows(**windows, after=after, limit=limit)
            removed += count
            if count < limit or last is None:
                break
            after = last
            await self.clock.sleep(self.settings.purge_pause_s)
        if removed:
            logger.info(
                "purged %d quota row(s) of day windows before %s and month windows before %s",
                removed,
                windows["day_before"],
                windows["month_before"],
                extra={"event": "retention"},
            )
        return removed

    async def forget(
        self,
        user_id: str,
        *,
        actor: str,
        dry_run: bool = False,
        agent_id: str,
        organization: str | None = None,
        source: str | None = None,
    ) -> ForgetReport:
        """Remove everything about ``user_id``: their memory namespaces first (through the
        memory server, when configured), then their sessions with every turn, feedback,
        rewind and budget row. Writes one audit line naming ``actor``.

        With ``organization``, only that organization's user of that id; without, the
        user id in every organization (and without one): the memory namespaces are then
        those of every (agent, organization) the store has sessions of.

        Memory goes first: if the memory server fails, the session store is untouched
        and the forget can simply be run again.
        """
        if not user_id or len(user_id) > 256:
            raise InvalidRequest(
                f"user_id {user_id!r} is not a user id: give the 1 to 256 characters the "
                "sessions were created with."
            )
        organization = organization or None
        counts = await self.store.count_user_data(user_id, organization=organization)
        if dry_run and self.ledger is not None:
            keys = await self.ledger.forget_user(user_id, organization=organization, dry_run=True)
            counts = dataclasses.replace(counts, budget_rows=counts.budget_rows + keys)
        eraser = self.memory if isinstance(self.memory, NamespaceEraser) else None
        namespaces: dict[str, int | None] = {}
        if eraser is not None:
            # This agent's namespace even without sessions left (memories outlive
            # purged transcripts), and one per (agent, organization) the sessions name.
            owners = {(agent_id, organization), *counts.owners}
            for agent, org in sorted_owners(owners):
                namespace = user_namespace(agent, user_id, org)
                if dry_run:
                    namespaces[namespace] = None
                    continue
                try:
                    namespaces[namespace] = await eraser.delete_namespace(namespace)
                except KeelError as exc:
                    audit(
                        "sessions.forget",
                        actor=actor,
                        outcome="failed",
                        user_id=user_id,
                        organization=organization,
                        namespace=namespace,
                        error=exc.code,
                        source=source,
                    )
                    raise type(exc)(
                        f"Forgetting user '{user_id}' stopped: the memory server could not "
                        f"delete namespace '{namespace}' ({exc.message}). That namespace may "
                        "be partly emptied; the user's sessions are all still in the store. "
                        "Fix the memory server, then run the forget again (it is safe to "
                        "repeat).",
                        code=exc.code,
                    ) from exc
        removed = counts
        if not dry_run:
            removed = RemovedCounts()
            while True:
                try:
                    batch = await self.store.forget_user(
                        user_id, limit=self.settings.purge_batch, organization=organization
                    )
                except KeelError as exc:
                    audit(
                        "sessions.forget",
                        actor=actor,
                        outcome="failed",
                        user_id=user_id,
                        organization=organization,
                        sessions=removed.sessions,
                        error=exc.code,
                        source=source,
                    )
                    raise
                removed += batch
                if batch.sessions < self.settings.purge_batch:
                    break
                await asyncio.sleep(0)
            if self.ledger is not None:
                keys = await self.ledger.forget_user(user_id, organization=organization)
                removed = dataclasses.replace(removed, budget_rows=removed.budget_rows + keys)
            await self.refresh_gauges()
        report = ForgetReport(
            user_id=user_id,
            dry_run=dry_run,
            removed=removed,
            memory_configured=eraser is not None,
            namespaces=namespaces,
            organization=organization,
        )
        audit(
            "sessions.forget",
            actor=actor,
            user_id=user_id,
            organization=organization,
            dry_run=dry_run,
            sessions=removed.sessions,
            turns=removed.turns,
            feedback=removed.feedback,
            budget_rows=removed.budget_rows,
            usage_rows=removed.usage_rows,
            memories=sum(n or 0 for n in namespaces.values()),
            namespaces=sorted(namespaces),
            source=source,
        )
        return report

    # -- the background task --------------------------------------------------------

    @property
    def tick_s(self) -> float:
        """How often the background task wakes: the shorter positive interval (0 = no task)."""
        intervals = [
            value
            for value in (self.settings.sweep_interval_s, self.settings.purge_interval_s)
            if value > 0
        ]
        return min(intervals) if intervals else 0.0

    async def run(self) -> None:
        """Sweep every ``sweep_interval_s`` and purge every ``purge_interval_s`` until
        cancelled; a failure is logged and retried at the next interval.

        The intervals are waited out with ``sleep`` (real time: a manual clock that
        jumps on every sleep would race ahead); what ends and what is purged is
        decided on the injected clock."""
        tick = self.tick_s
        if tick <= 0:
            return
        sweep_every = self.settings.sweep_interval_s
        purge_every = self.settings.purge_interval_s
        since_sweep = since_purge = 0.0
        while True:
            await self._sleep(tick)
            since_sweep += tick
            since_purge += tick
            if sweep_every > 0 and since_sweep >= sweep_every:
                since_sweep = 0.0
                await self._guarded("sweep", self.sweep())
            if purge_every > 0 and since_purge >= purge_every:
                since_purge = 0.0
                await self._guarded("purge", self.purge())

    async def _guarded(self, what: str, work: Any) -> None:
        try:
            await work
        except KeelError as exc:
            logger.warning(
                "session %s failed: %s; trying again at the next interval",
                what,
                exc.message,
                extra={"event": "session"},
            )
        except Exception:
            # A bug or an unwrapped driver error must not end the loop for good.
            logger.exception(
                "session %s failed unexpectedly; trying again at the next interval",
                what,
                extra={"event": "session"},
            )


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")
