"""The dual-key rotation engine over an in-memory source, services that cache what
they read, a session census and the real SQLite journal: the steps in order,
resuming after a crash at every step, no second rotation, refusal during a rollout."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from agentkeel.resilience.clock import ManualClock
from agentkeel.secrets.rotation import (
    Rotation,
    RotationFailed,
    RotationRefused,
    RotationTimings,
)
from agentkeel.secrets.rotation_journal import STEPS, RotationJournal, Step
from agentkeel.secrets.source import SecretVersion
from tests.secrets.doubles import CachingHolder, ListCensus, MemorySource

NAME = "openai_api_key"
OLD = "sk-old-0123456789abcdef"
NEW = "sk-new-fedcba9876543210"


class Crash(Exception):
    """Stands for the process being killed."""


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=100.0)


@pytest.fixture
def source(clock: ManualClock) -> MemorySource:
    source = MemorySource()
    source.write(
        NAME,
        [
            SecretVersion(
                value=SecretStr(OLD),
                generation=1,
                created_at=clock.time() - 1000,
                activated_at=clock.time() - 1000,
            )
        ],
    )
    return source


@pytest.fixture
async def journal(tmp_path: Path, clock: ManualClock) -> AsyncIterator[RotationJournal]:
    async with RotationJournal(tmp_path / "rotations.db", clock=clock) as journal:
        yield journal


async def no_rollout() -> str | None:
    return None


def make_rotation(
    source: MemorySource,
    journal: RotationJournal,
    clock: ManualClock,
    *,
    holders: list[CachingHolder] | None = None,
    census: ListCensus | None = None,
    crash_after: Step | None = None,
    rollout: str | None = None,
    deadline_s: float = 30.0,
) -> Rotation:
    async def after_step(step: Step) -> None:
        if step == crash_after:
            raise Crash(step)

    async def active_rollout() -> str | None:
        return rollout

    return Rotation(
        source=source,
        journal=journal,
        holders=holders if holders is not None else [CachingHolder("replica-1", source, (NAME,))],
        census=census if census is not None else ListCensus(),
        active_rollout=active_rollout,
        actor="admin_token:sha256:test",
        timings=RotationTimings(deadline_s=deadline_s, accept_timeout_s=5.0, poll_s=1.0),
        clock=clock,
        provider="openai",
        after_step=after_step,
    )


def generation_writes(source: MemorySource, generation: int) -> int:
    """How many writes provisioned ``generation`` (wrote it, not active, beside another)."""
    return sum(1 for path, gens in source.writes if path == NAME and gens[0] == -generation)


async def test_a_rotation_goes_through_every_step_and_ends_on_the_new_value_alone(
    source: MemorySource, journal: RotationJournal, clock: ManualClock
) -> None:
    """Provisioned, accepted, activated, drained, revoked, done: the source ends with
    generation 2 alone, active, holding the new value; every service refreshed."""
    holders = [
        CachingHolder("replica-1", source, (NAME,)),
        CachingHolder("router", source, ("admin_token",)),
    ]
    outcome = await make_rotation(source, journal, clock, holders=holders).run(
        NAME, new_value=lambda: NEW
    )
    assert outcome.status == "done"
    secret = source.read(NAME)
    assert secret is not None
    assert secret.generations == (2,)
    assert secret.current.value.get_secret_value() == NEW
    assert secret.current.active
    assert holders[0].refreshes >= 2
    record = await journal.last_finished(NAME)
    assert record is not None and record.step == "done"
    assert (record.from_generation, record.to_generation) == (1, 2)


async def test_sessions_started_before_the_activation_keep_the_old_version(
    source: MemorySource, journal: RotationJournal, clock: ManualClock
) -> None:
    """Between activation and revocation, a session that started before the activation
    resolves to generation 1 and one that starts after it to generation 2."""
    before = clock.time()
    clock.advance(1)
    seen: dict[str, int] = {}

    async def check(step: Step) -> None:
        if step == "activated":
            secret = source.read(NAME)
            assert secret is not None
            clock.advance(1)
            seen["old"] = secret.for_start(before).generation
            seen["new"] = secret.for_start(clock.time()).generation
            seen["both_accepted"] = int(bool(secret.accepts(OLD) and secret.accepts(NEW)))

    rotation = make_rotation(source, journal, clock)
    rotation.after_step = check
    await rotation.run(NAME, new_value=lambda: NEW)
    assert seen == {"old": 1, "new": 2, "both_accepted": 1}


async def test_the_drain_waits_for_older_sessions_then_revokes(
    source: MemorySource, journal: RotationJournal, clock: ManualClock
) -> None:
    """An old session keeps the old value until it ends; the old version is removed
    only after the census counts no session older than the activation."""
    census = ListCensus(started=[clock.time() - 5])
    revoked_while_open: list[bool] = []

    class EndsAfterThree(ListCensus):
        async def live_started_before(self, at: float) -> int:
            count = await census.live_started_before(at)
            if len(census.asked) == 3:
                census.started.clear()
            return count

    async def check(step: Step) -> None:
        if step == "revoked":
            revoked_while_open.append(bool(census.started))

    rotation = make_rotation(source, journal, clock, census=EndsAfterThree(), deadline_s=3600)
    rotation.after_step = check
    await rotation.run(NAME, new_value=lambda: NEW)
    assert len(census.asked) == 4
    assert revoked_while_open == [False]
    record = await journal.last_finished(NAME)
    assert record is not None
    assert record.detail["still_open"] == 0 and record.detail["deadline_passed"] is False


async def test_the_deadline_ends_the_drain_and_records_how_many_were_open(
    source: MemorySource,
    journal: RotationJournal,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A session that never ends does not hold the rotation past ``deadline_s``; the
    audit line of ``drained`` says how many were still open."""
    census = ListCensus(started=[clock.time() - 5, clock.time() - 3])
    caplog.set_level(logging.INFO, logger="agentkeel.audit")
    start = clock.time()
    await make_rotation(source, journal, clock, census=census, deadline_s=10).run(
        NAME, new_value=lambda: NEW
    )
    assert clock.time() - start >= 10
    drained = [r for r in caplog.records if getattr(r, "action", "") == "secrets.rotate.drained"]
    assert len(drained) == 1
    assert drained[0].__dict__["still_open"] == 2
    assert drained[0].__dict__["deadline_passed"] is True


async def test_every_step_writes_an_audit_line_naming_the_actor(
    source: MemorySource,
    journal: RotationJournal,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One ``secrets.rotate.<step>`` audit line per step, with the actor and no value."""
    caplog.set_level(logging.INFO, logger="agentkeel.audit")
    await make_rotation(source, journal, clock).run(NAME, new_value=lambda: NEW)
    actions = [getattr(r, "action", None) for r in caplog.records if r.name == "agentkeel.audit"]
    assert actions == [f"secrets.rotate.{step}" for step in STEPS]
    assert all(r.__dict__["actor"] == "admin_token:sha256:test" for r in caplog.records)
    assert not any(NEW in r.getMessage() or OLD in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("crash_after", STEPS[:-1])
async def test_a_rotation_killed_after_any_step_finishes_when_run_again(
    source: MemorySource, journal: RotationJournal, clock: ManualClock, crash_after: Step
) -> None:
    """Killed after each step and run again (without the new value, which a resumed
    run must not need once it is written): one new generation, the old one gone, the
    journal done."""
    with pytest.raises(Crash):
        await make_rotation(source, journal, clock, crash_after=crash_after).run(
            NAME, new_value=lambda: NEW
        )
    unfinished = await journal.unfinished(NAME)
    assert unfinished is not None and unfinished.step == crash_after

    def must_not_be_asked() -> str:
        raise AssertionError("a resumed rotation asked for a second new value")

    outcome = await make_rotation(source, journal, clock).run(NAME, new_value=must_not_be_asked)
    assert outcome.status == "done"
    secret = source.read(NAME)
    assert secret is not None
    assert secret.generations == (2,)
    assert secret.current.value.get_secret_value() == NEW
    assert generation_writes(source, 2) == 1
    assert await journal.unfinished(NAME) is None
    history = await journal.history(NAME)
    assert len(history) == 1 and history[0].step == "done"


async def test_killed_between_writing_and_recording_the_new_value_writes_it_once(
    source: MemorySource, journal: RotationJournal, clock: ManualClock
) -> None:
    """The source holds generation 2 but the journal never recorded ``provisioned``:
    the rerun sees it in the source and does not provision another value."""
    real_write = source.write
    calls = {"n": 0}

    def write_then_die(path: str, versions: object) -> None:
        real_write(path, versions)  # type: ignore[arg-type]
        calls["n"] += 1
        if calls["n"] == 1:
            raise Crash("after the write")

    source.write = write_then_die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await make_rotation(source, journal, clock).run(NAME, new_value=lambda: NEW)
    unfinished = await journal.unfinished(NAME)
    assert unfinished is not None and unfinished.step is None
    await make_rotation(source, journal, clock).run(NAME, new_value=lambda: "sk-another-value-1")
    secret = source.read(NAME)
    assert secret is not None
    assert secret.generations == (2,)
    assert secret.current.value.get_secret_value() == NEW


async def test_running_it_again_after_it_finished_does_not_rotate_until_due(
    source: MemorySource, journal: RotationJournal, clock: ManualClock
) -> None:
    """A second run says when the secret was rotated and when it is due (90 days);
    nothing is written. ``force`` rotates again, to generation 3."""
    await make_rotation(source, journal, clock).run(NAME, new_value=lambda: NEW)
    writes = len(source.writes)
    again = await make_rotation(source, journal, clock).run(
        NAME, new_value=lambda: "sk-x-123456789"
    )
    assert again.status == "not_due"
    assert "was rotated at" in again.message and "--force" in again.message
    assert again.due_at is not None and again.record is not None
    assert again.due_at - (again.record.finished_at or 0) == pytest.approx(90 * 86400)
    assert len(source.writes) == writes
    clock.advance(91 * 86400)
    due = await make_rotation(source, journal, clock).run(
        NAME, new_value=lambda: "sk-due-123456789"
    )
    assert due.status == "done"
    forced = await make_rotation(source, journal, clock).run(
        NAME, new_value=lambda: "sk-forced-123456789", force=True
    )
    assert forced.status == "done"
    secret = source.read(NAME)
    assert secret is not None and secret.generations == (4,)


async def test_a_rotation_is_refused_while_a_rollout_runs(
    source: MemorySource, journal: RotationJournal, clock: ManualClock
) -> None:
    """Refused naming the release; nothing is written or journaled."""
    writes = len(source.writes)
    with pytest.raises(RotationRefused, match="v2-20261201T1230"):
        await make_rotation(source, journal, clock, rollout="v2-20261201T1230").run(
            NAME, new_value=lambda: NEW
        )
    assert len(source.writes) == writes
    assert await journal.history(NAME) == []


async def test_a_lagging_service_fails_the_step_by_name_and_a_rerun_resumes_there(
    source: MemorySource, journal: RotationJournal, clock: ManualClock
) -> None:
    """A service that never picks up generation 2 is named in the error; the new
    value is not activated; once it catches up, the rerun finishes."""
    stuck = CachingHolder("http://10.0.0.7:8081", source, (NAME,), stuck=True)
    holders = [CachingHolder("replica-1", source, (NAME,)), stuck]
    with pytest.raises(
        RotationFailed, match=r"http://10\.0\.0\.7:8081 \(holds generation\(s\) 1\)"
    ):
        await make_rotation(source, journal, clock, holders=holders).run(
            NAME, new_value=lambda: NEW
        )
    secret = source.read(NAME)
    assert secret is not None and secret.generations == (2, 1)
    assert not secret.versions[0].active
    stuck.stuck = False
    await make_rotation(source, journal, clock, holders=holders).run(NAME)
    secret = source.read(NAME)
    assert secret is not None and secret.generations == (2,)


async def test_a_service_that_does_not_use_the_secret_is_not_waited_for(
    source: MemorySource, journal: RotationJournal, clock: ManualClock
) -> None:
    """A service reporting other secrets only does not hold the rotation."""
    holders = [CachingHolder("memory", source, ("memory_token",), stuck=True)]
    outcome = await make_rotation(source, journal, clock, holders=holders).run(
        NAME, new_value=lambda: NEW
    )
    assert outcome.status == "done"


async def test_the_new_value_must_be_given_and_differ_from_the_old(
    source: MemorySource, journal: RotationJournal, clock: ManualClock
) -> None:
    """No value: a message naming --new-value-file and --generate. The current value
    again: refused. Neither leaves a version behind."""
    with pytest.raises(RotationFailed, match="--new-value-file"):
        await make_rotation(source, journal, clock).run(NAME)
    with pytest.raises(RotationFailed, match="already holds"):
        await make_rotation(source, journal, clock).run(NAME, new_value=lambda: OLD)
    secret = source.read(NAME)
    assert secret is not None and secret.generations == (1,)


async def test_a_dry_run_changes_nothing(
    source: MemorySource, journal: RotationJournal, clock: ManualClock
) -> None:
    """The plan lists the steps; no write, no journal row."""
    outcome = await make_rotation(source, journal, clock).run(NAME, dry_run=True)
    assert outcome.status == "dry_run"
    assert outcome.plan == list(STEPS)
    assert len(source.writes) == 1
    assert await journal.history() == []
