"""Dual-key rotation of one secret, as recorded steps (``keel secrets rotate NAME``).

    provisioned  the new value written as generation N+1, not activated: services
                 accept it, nobody sends it yet
    accepted     every service that uses the secret reports that it holds N+1
    activated    N+1 gets ``activated_at``: new sessions use it, older ones keep N
    drained      no live session started before the activation (or the deadline passed)
    revoked      N removed from the source; every service reports that it dropped it
    done

Each step is recorded in the journal (``rotation_journal.py``) after it acted,
and each one checks the source before it writes, so running the command again
after a crash continues where it stopped and never provisions a second new
value. A finished rotation is not repeated before it is due (``due_days``)
unless forced. The engine knows no HTTP and no rollouts: services, the session
census and the rollout check are passed in (``ops/rotation_services.py`` has
the HTTP ones).

>>> rotation = Rotation(source=source, journal=journal, holders=holders,
...     census=census, active_rollout=no_rollout, actor="admin_token:sha256:…")
>>> outcome = await rotation.run("openai_api_key", new_value=lambda: value)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import SecretStr

from agentkeel.errors import Conflict, KeelError, SecretError
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.secrets.rotation_journal import STEPS, RotationJournal, RotationRecord, Step
from agentkeel.secrets.source import Secret, SecretVersion, WritableSecretSource, require
from agentkeel.telemetry.audit import audit

__all__ = [
    "DAY_S",
    "HeldSecret",
    "Rotation",
    "RotationFailed",
    "RotationOutcome",
    "RotationProgress",
    "RotationRefused",
    "RotationTimings",
    "SecretHolder",
    "SessionCensus",
    "due_at",
    "refused_by_rollout",
]

logger = logging.getLogger("agentkeel.secrets.rotation")

DAY_S = 86_400.0


class RotationRefused(Conflict):
    """The rotation may not start now (a rollout is running); nothing was changed."""

    code = "rotation_refused"


class RotationFailed(KeelError):
    """A step could not finish; the journal keeps the steps before it for the next run."""

    code = "rotation_failed"
    status = 503


@dataclass(frozen=True, slots=True)
class HeldSecret:
    """What one service reports holding of one secret (never the values)."""

    path: str
    generations: tuple[int, ...]
    current: int


class SecretHolder(Protocol):
    """A service that uses secrets: ``GET /admin/secrets`` and ``POST …/refresh``."""

    @property
    def name(self) -> str:
        """How messages name the service (its URL)."""
        ...

    async def held(self, path: str) -> HeldSecret | None:
        """What it holds of ``path``; ``None`` when it does not use that secret."""
        ...

    async def refresh(self) -> None:
        """Ask it to reread its secrets now rather than at its cache's next expiry."""
        ...


class SessionCensus(Protocol):
    """Counts live sessions in the session store."""

    async def live_started_before(self, at: float) -> int:
        """Sessions neither ended nor expired that started before ``at``."""
        ...


class RotationProgress(Protocol):
    """Where the rotation says what it does (Rich in the CLI, the log by default)."""

    def step(self, step: Step, text: str) -> None: ...

    def note(self, text: str) -> None: ...


class _LogProgress:
    def step(self, step: Step, text: str) -> None:
        logger.info("rotation %s: %s", step, text)

    def note(self, text: str) -> None:
        logger.info("rotation: %s", text)


@dataclass(frozen=True, slots=True)
class RotationTimings:
    """How long the waiting steps wait: ``due_days`` and ``deadline_s`` come from
    ``secrets.rotation``; ``accept_timeout_s`` bounds waiting for services."""

    due_days: float = 90.0
    deadline_s: float = DAY_S
    accept_timeout_s: float = 120.0
    poll_s: float = 1.0


@dataclass(frozen=True, slots=True)
class RotationOutcome:
    """What ``Rotation.run`` did: ``done`` (rotated now), ``not_due`` (rotated recently,
    nothing done) or ``dry_run`` (the plan, nothing done)."""

    status: Literal["done", "not_due", "dry_run"]
    name: str
    message: str
    record: RotationRecord | None = None
    due_at: float | None = None
    plan: list[str] = field(default_factory=list)


def refused_by_rollout(name: str, release: str) -> RotationRefused:
    """The refusal to rotate ``name`` while the rollout of ``release`` is active."""
    return RotationRefused(
        f"Not rotating '{name}': the rollout of release {release} is running or "
        "paused. Finish it (keel rollout promote/abort) and run the command again."
    )


def due_at(finished_at: float, *, due_days: float) -> float:
    """When a secret rotated at ``finished_at`` is due again."""
    return finished_at + due_days * DAY_S


class Rotation:
    """Runs (or resumes) the rotation of one secret through its steps.

    ``holders`` are the services to wait for; ``census`` counts old sessions
    (``None``: nothing to drain, e.g. no replica uses the secret);
    ``active_rollout()`` names a running or paused rollout, which refuses the
    rotation; ``after_step(step)`` runs after each recorded step (the tests
    crash there); ``provider`` names the provider whose key this is, for the
    reminder to revoke the old key there.
    """

    def __init__(
        self,
        *,
        source: WritableSecretSource,
        journal: RotationJournal,
        holders: Sequence[SecretHolder],
        census: SessionCensus | None,
        active_rollout: Callable[[], Awaitable[str | None]],
        actor: str,
        timings: RotationTimings | None = None,
        clock: Clock | None = None,
        progress: RotationProgress | None = None,
        provider: str | None = None,
        after_step: Callable[[Step], Awaitable[None]] | None = None,
    ) -> None:
        self.source = source
        self.journal = journal
        self.holders = list(holders)
        self.census = census
        self.active_rollout = active_rollout
        self.actor = actor
        self.timings = timings or RotationTimings()
        self.clock = clock or SystemClock()
        self.progress = progress or _LogProgress()
        self.provider = provider
        self.after_step = after_step

    async def run(
        self,
        name: str,
        *,
        new_value: Callable[[], str] | None = None,
        force: bool = False,
        dry_run: bool = False,
    ) -> RotationOutcome:
        """Rotate ``name``, or finish its unfinished rotation. ``new_value()`` gives the
        new value (called once, only when the source does not hold it yet)."""
        release = await self.active_rollout()
        if release is not None:
            raise refused_by_rollout(name, release)
        record = await self.journal.unfinished(name)
        if record is None:
            last = await self.journal.last_finished(name)
            if last is not None and last.finished_at is not None and not force:
                due = due_at(last.finished_at, due_days=self.timings.due_days)
                if self.clock.time() < due:
                    return RotationOutcome(
                        status="not_due",
                        name=name,
                        record=last,
                        due_at=due,
                        message=f"'{name}' was rotated at {_stamp(last.finished_at)} "
                        f"(generation {last.to_generation}); it is due on {_stamp(due)}. "
                        "Pass --force to rotate it now.",
                    )
            secret = require(self.source, name)
            if dry_run:
                return self._plan(name, secret, None)
            record = await self._begin(name, secret)
        elif dry_run:
            return self._plan(name, require(self.source, name), record)
        else:
            self.progress.note(
                f"resuming the rotation of '{name}' to generation {record.to_generation} "
                f"after step {record.step or '(none)'}"
            )
        while (step := record.next_step) is not None:
            detail = await self._act(step, record, new_value)
            record = await self.journal.record(record.id, step, detail)
            audit(
                f"secrets.rotate.{step}",
                actor=self.actor,
                secret=name,
                from_generation=record.from_generation,
                to_generation=record.to_generation,
                **detail,
            )
            if self.after_step is not None:
                await self.after_step(step)
        return RotationOutcome(
            status="done",
            name=name,
            record=record,
            due_at=due_at(record.finished_at or self.clock.time(), due_days=self.timings.due_days),
            message=f"'{name}' rotated to generation {record.to_generation}.",
        )

    async def _begin(self, name: str, secret: Secret) -> RotationRecord:
        current = secret.current
        pending = [v for v in secret.versions if v.generation > current.generation]
        # A newer version nobody activated (a journal lost with its data dir, or a
        # rotation from another tool): finish rotating to it rather than add a third.
        target = pending[0].generation if pending else max(secret.generations) + 1
        return await self.journal.begin(
            name, from_generation=current.generation, to_generation=target, actor=self.actor
        )

    def _plan(self, name: str, secret: Secret, record: RotationRecord | None) -> RotationOutcome:
        start = record.next_step if record is not None else STEPS[0]
        target = record.to_generation if record is not None else max(secret.generations) + 1
        steps: list[str] = list(STEPS[STEPS.index(start) :]) if start is not None else []
        resumes = f" (resuming at {start})" if record is not None else ""
        return RotationOutcome(
            status="dry_run",
            name=name,
            record=record,
            plan=steps,
            message=f"would rotate '{name}' from generation {secret.current.generation} to "
            f"{target} through {', '.join(steps)}{resumes}; "
            f"{len(self.holders)} service(s) to wait for. Nothing was changed.",
        )

    async def _act(
        self, step: Step, record: RotationRecord, new_value: Callable[[], str] | None
    ) -> dict[str, Any]:
        match step:
            case "provisioned":
                return self._provision(record, new_value)
            case "accepted":
                return await self._accept(record)
            case "activated":
                return await self._activate(record)
            case "drained":
                return await self._drain(record)
            case "revoked":
                return await self._revoke(record)
            case "done":
                self.progress.step(step, f"'{record.name}' is at generation {record.to_generation}")
                return {}

    # -- the steps ------------------------------------------------------------------------

    def _provision(
        self, record: RotationRecord, new_value: Callable[[], str] | None
    ) -> dict[str, Any]:
        secret = require(self.source, record.name)
        if record.to_generation in secret.generations:
            self.progress.step(
                "provisioned", f"generation {record.to_generation} is already in the source"
            )
            return {"written": False}
        if new_value is None:
            raise RotationFailed(
                f"'{record.name}' needs its new value for generation {record.to_generation}: "
                "pass --new-value-file FILE, or --generate for a token agentkeel owns.",
                code="new_value_missing",
            )
        value = new_value().strip()
        if not value:
            raise RotationFailed(
                f"The new value for '{record.name}' is empty; put the new key in the file.",
                code="new_value_missing",
            )
        if secret.accepts(value) is not None:
            raise RotationFailed(
                f"The new value for '{record.name}' is the one it already holds; create a new "
                "key first (at the provider, or with --generate).",
                code="new_value_unchanged",
            )
        old = _version(secret, record.from_generation, name=record.name)
        fresh = SecretVersion(
            value=SecretStr(value),
            generation=record.to_generation,
            created_at=self.clock.time(),
            activated_at=None,
        )
        self.source.write(record.name, [fresh, old])
        self.progress.step(
            "provisioned",
            f"generation {record.to_generation} written to {self.source.where(record.name)}, "
            "not active yet",
        )
        return {"written": True}

    async def _accept(self, record: RotationRecord) -> dict[str, Any]:
        holders = await self._wait_for(
            record,
            lambda held: record.to_generation in held.generations,
            what=f"hold generation {record.to_generation}",
        )
        self.progress.step("accepted", f"{holders} service(s) hold both generations")
        return {"services": holders}

    async def _activate(self, record: RotationRecord) -> dict[str, Any]:
        secret = require(self.source, record.name)
        new = _version(secret, record.to_generation, name=record.name)
        activated_at = new.activated_at
        if activated_at is None:
            activated_at = self.clock.time()
            versions = [
                _activated(v, activated_at) if v.generation == record.to_generation else v
                for v in secret.versions
            ]
            self.source.write(record.name, versions)
        await self._refresh_all()
        self.progress.step(
            "activated",
            f"generation {record.to_generation} is active since {_stamp(activated_at)}; "
            "new sessions use it",
        )
        return {"activated_at": activated_at}

    async def _drain(self, record: RotationRecord) -> dict[str, Any]:
        activated_at = float(record.detail.get("activated_at", self.clock.time()))
        if self.census is None:
            self.progress.step("drained", "no replica to ask for live sessions")
            return {"still_open": 0, "deadline_passed": False}
        # From the activation, so a resumed rotation does not wait a whole deadline again.
        deadline = activated_at + self.timings.deadline_s
        count: int | None = None
        while True:
            try:
                count = await self.census.live_started_before(activated_at)
            except KeelError as exc:
                self.progress.note(f"live sessions not counted: {exc.message}")
            if count == 0:
                self.progress.step("drained", "no live session started before the activation")
                return {"still_open": 0, "deadline_passed": False}
            if self.clock.time() >= deadline:
                open_now = -1 if count is None else count
                logger.warning(
                    "rotation of %s: deadline passed with %s session(s) started before the "
                    "activation still open; they move to the new key",
                    record.name,
                    "an unknown number of" if count is None else count,
                )
                self.progress.step(
                    "drained",
                    f"deadline passed; {'?' if count is None else count} older session(s) "
                    "still open move to the new key",
                )
                return {"still_open": open_now, "deadline_passed": True}
            self.progress.note(
                f"waiting for {'?' if count is None else count} session(s) started before the "
                f"activation (deadline {_stamp(deadline)})"
            )
            await self.clock.sleep(self.timings.poll_s)

    async def _revoke(self, record: RotationRecord) -> dict[str, Any]:
        secret = require(self.source, record.name)
        if record.from_generation in secret.generations:
            new = _version(secret, record.to_generation, name=record.name)
            self.source.write(record.name, [new])
        holders = await self._wait_for(
            record,
            lambda held: record.from_generation not in held.generations,
            what=f"drop generation {record.from_generation}",
        )
        self.progress.step(
            "revoked",
            f"generation {record.from_generation} removed; {holders} service(s) dropped it",
        )
        if self.provider is not None:
            self.progress.note(
                f"Now revoke the old key of '{record.name}' at {self.provider}: agentkeel no "
                "longer uses it."
            )
        return {"services_dropped": holders}

    # -- services --------------------------------------------------------------------------

    async def _refresh_all(self) -> None:
        for holder in self.holders:
            try:
                await holder.refresh()
            except KeelError as exc:
                # Not fatal: the service rereads at its cache's expiry anyway.
                self.progress.note(f"{holder.name} did not refresh: {exc.message}")

    async def _wait_for(
        self, record: RotationRecord, ready: Callable[[HeldSecret], bool], *, what: str
    ) -> int:
        """Refresh every service, then poll until each one that uses the secret passes
        ``ready``; the number that do. ``RotationFailed`` names the laggards on timeout."""
        await self._refresh_all()
        deadline = self.clock.monotonic() + self.timings.accept_timeout_s
        while True:
            lagging: dict[str, str] = {}
            using = 0
            for holder in self.holders:
                try:
                    held = await holder.held(record.name)
                except KeelError as exc:
                    lagging[holder.name] = f"unreachable: {exc.message}"
                    continue
                if held is None:
                    continue
                using += 1
                if not ready(held):
                    generations = ", ".join(str(g) for g in held.generations)
                    lagging[holder.name] = f"holds generation(s) {generations}"
            if not lagging:
                if using == 0 and self.holders:
                    self.progress.note(f"no service reports using '{record.name}'")
                return using
            if self.clock.monotonic() >= deadline:
                names = "; ".join(f"{name} ({why})" for name, why in lagging.items())
                raise RotationFailed(
                    f"Services did not {what} of '{record.name}' within "
                    f"{self.timings.accept_timeout_s:g} s: {names}. Check that they read "
                    "the secret from the same source, then run the command again; it resumes "
                    "at this step."
                )
            self.progress.note(f"waiting for {len(lagging)} service(s) to {what}")
            await self.clock.sleep(self.timings.poll_s)
            await self._refresh_all()


def _version(secret: Secret, generation: int, *, name: str) -> SecretVersion:
    for version in secret.versions:
        if version.generation == generation:
            return version
    raise SecretError(
        f"The secret '{name}' has no generation {generation} (it has "
        f"{', '.join(str(g) for g in secret.generations)}); it was changed outside this "
        "rotation. Look at `keel secrets status` before going on."
    )


def _activated(version: SecretVersion, at: float) -> SecretVersion:
    return SecretVersion(
        value=version.value,
        generation=version.generation,
        created_at=version.created_at,
        activated_at=at,
    )


def _stamp(at: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
