"""The coordinated rollback: its order, the memory state it restores on a real memory
server, idempotence, resumption after a kill half-way, dry runs and code-only runs.

The router and the replica driver are test doubles that record calls
(``tests/deploy/doubles.py``); the memory server is the real app over SQLite,
reached through the real ``MemoryApiClient``; the journal is the real SQLite one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentkeel.deploy.rollback import (
    STEPS,
    Rollback,
    RollbackFailed,
)
from agentkeel.deploy.rollback_journal import RollbackJournal
from agentkeel.errors import ConfigError
from agentkeel.memory.api_client import MemoryApiClient
from agentkeel.memory.sqlite_store import SqliteMemoryStore
from agentkeel.ops.golden import GoldenChecks, GoldenSuite
from agentkeel.resilience.clock import ManualClock
from tests.deploy.doubles import (
    Breaks,
    RecordingDriver,
    RecordingMemory,
    RecordingRouter,
    replica,
    version,
)
from tests.memory.apphelpers import TOKEN_A, auth, running_app, write_tokens
from tests.ops.golden.agents import agent_app
from tests.tools.servers import live_server

NS = "agent:a"
V1_URLS = ("http://v1-a", "http://v1-b")
V2_URLS = ("http://v2-a",)


@dataclass
class ReleaseRecord:
    """A release as the rollout state records it (the fields a rollback reads)."""

    release: str = "v2-20261201T1230"
    version: str = "v2"
    previous: str = "v1"
    snapshot_id: str | None = None


@dataclass
class Rig:
    memory_http: httpx.AsyncClient
    memory: RecordingMemory
    router: RecordingRouter
    driver: RecordingDriver
    journal: RollbackJournal
    clock: ManualClock
    release: ReleaseRecord

    def rollback(self, **kwargs: Any) -> Rollback:
        kwargs.setdefault("drain_timeout_s", 60.0)
        kwargs.setdefault("poll_interval_s", 1.0)
        return Rollback(
            self.router, self.driver, self.memory, self.journal, clock=self.clock, **kwargs
        )

    async def write(self, content: str) -> httpx.Response:
        return await self.memory_http.post(
            "/v1/memories", json={"namespace": NS, "content": content}, headers=auth(TOKEN_A)
        )

    async def contents(self) -> list[str]:
        response = await self.memory_http.get(
            "/v1/memories", params={"namespace": NS, "limit": 100}, headers=auth(TOKEN_A)
        )
        return sorted(item["memory"]["content"] for item in response.json()["results"])

    async def fenced(self) -> bool:
        response = await self.write("probe")
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "memory_fenced"
            return True
        assert response.status_code == 201, response.text
        return False


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """A memory server holding one memory from before the deploy snapshot and one written
    after it (by the bad version); a router with v1 (stable before) and v2 (bad) and
    3 sessions pinned to v2; v2's replica in the driver."""
    clock = ManualClock(start=0.0)
    store = SqliteMemoryStore(path=tmp_path / "memory.db", clock=clock)
    await store.open()
    try:
        async with running_app(write_tokens(tmp_path), store, clock) as (app, http):
            api = MemoryApiClient(
                base_url="http://memory",
                token_file=tmp_path / "admin_token",
                transport=httpx.ASGITransport(app=app),
            )
            assert (
                await http.post(
                    "/v1/memories",
                    json={"namespace": NS, "content": "before the deploy"},
                    headers=auth(TOKEN_A),
                )
            ).status_code == 201
            snapshot = await api.create_snapshot(label="v2-20261201T1230", kind="deploy")
            assert (
                await http.post(
                    "/v1/memories",
                    json={"namespace": NS, "content": "written by v2"},
                    headers=auth(TOKEN_A),
                )
            ).status_code == 201
            router = RecordingRouter(
                [version("v1", *V1_URLS, weight=95), version("v2", *V2_URLS, weight=5)],
                stable="v1",
                pins={"v1": 10, "v2": 3},
                moves_per_poll=1,
            )
            driver = RecordingDriver(
                {
                    "replica-1": replica("replica-1", "v1", V1_URLS[0]),
                    "replica-2": replica("replica-2", "v1", V1_URLS[1]),
                    "replica-3": replica("replica-3", "v2", V2_URLS[0]),
                }
            )
            async with RollbackJournal(tmp_path / "rollouts.db", clock=clock) as journal:
                yield Rig(
                    memory_http=http,
                    memory=RecordingMemory(api),
                    router=router,
                    driver=driver,
                    journal=journal,
                    clock=clock,
                    release=ReleaseRecord(snapshot_id=snapshot["id"]),
                )
            await api.aclose()
    finally:
        await store.aclose()


def assert_final_state(rig: Rig) -> None:
    """v1 is the only version, stable, taking every new session; v2's replica is stopped."""
    assert rig.router.stable == "v1"
    assert set(rig.router.table) == {"v1"}
    assert rig.router.table["v1"].weight == 100
    assert rig.driver.replicas["replica-3"].state == "stopped"
    assert {rig.driver.replicas[name].state for name in ("replica-1", "replica-2")} == {"ready"}


async def test_a_full_rollback_runs_every_step_in_order(rig: Rig) -> None:
    """Routing first, then the fence, the restore, the drain and stop, the fence lifted;
    each step reported as started then done."""
    events: list[tuple[str, str]] = []
    report = await rig.rollback().run(
        rig.release, on_step=lambda step, status, detail: events.append((step, status))
    )
    assert report.passed and report.changed
    assert [step.name for step in report.steps] == list(STEPS)
    assert [step.status for step in report.steps] == ["done"] * 5 + ["skipped"]
    assert events == [
        pair for step in STEPS[:-1] for pair in ((step, "started"), (step, "done"))
    ] + [("golden", "skipped")]
    assert rig.router.changes == [
        ("set_weights", {"v1": 100, "v2": 0}, "v1"),
        ("retire_version", "v2", "move-at-turn"),
        ("drain_replica", V2_URLS[0]),
        ("remove_version", "v2"),
    ]
    assert rig.memory.calls == ["raise_fence", "list_quarantines", "restore", "lift_fence"]
    assert [call for call in rig.driver.calls if call[0] == "stop_replica"] == [
        ("stop_replica", "replica-3", True)
    ]
    assert_final_state(rig)


async def test_memory_is_restored_with_later_writes_in_quarantine(rig: Rig) -> None:
    """After the rollback the view is the snapshot's; the bad version's write is in a
    quarantine, not deleted; the log verifies; writes work again."""
    report = await rig.rollback().run(rig.release)
    assert await rig.contents() == ["before the deploy"]
    quarantines = await rig.memory.api.list_quarantines(events=True)
    assert len(quarantines) == 1
    [quarantine] = quarantines
    assert quarantine["reason"].startswith("rollback of release v2-20261201T1230 (")
    assert [(e["op"], json.loads(e["payload"]).get("content")) for e in quarantine["events"]] == [
        ("create", "written by v2")
    ]
    integrity = await rig.memory.api.integrity()
    assert integrity["ok"], integrity
    restore = next(step for step in report.steps if step.name == "restore_snapshot")
    assert restore.data["quarantined_events"] == 1
    assert "nothing deleted" in restore.detail
    assert not await rig.fenced()


async def test_writes_are_fenced_while_the_bad_version_drains(rig: Rig) -> None:
    """While the bad version drains (after the restore), a memory write is refused with
    memory_fenced; before the rollback and after it, writes go through."""
    seen: list[bool] = []

    async def probe() -> None:
        seen.append(await rig.fenced())

    rig.router.before["retire_version"] = probe
    assert not await rig.fenced()
    await rig.rollback().run(rig.release)
    assert seen == [True]
    assert not await rig.fenced()


async def test_every_step_is_audit_logged(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """One audit record per step that ran, with the release and the outcome."""
    caplog.set_level(logging.INFO, logger="agentkeel.audit")
    await rig.rollback(actor="admin_token:sha256:abc").run(rig.release)
    # The memory server in the rig audits its own fence and restore too.
    records = [
        r
        for r in caplog.records
        if getattr(r, "category", None) == "audit" and r.action.startswith("rollback.")  # type: ignore[attr-defined]
    ]
    assert [r.action for r in records] == [f"rollback.{step}" for step in STEPS[:-1]]  # type: ignore[attr-defined]
    assert {r.actor for r in records} == {"admin_token:sha256:abc"}  # type: ignore[attr-defined]
    assert {r.release for r in records} == {"v2-20261201T1230"}  # type: ignore[attr-defined]
    assert {r.outcome for r in records} == {"ok"}  # type: ignore[attr-defined]


async def test_the_drain_waits_for_pinned_sessions_to_move(rig: Rig) -> None:
    """Pins of the retired version fall as sessions take turns; the drain waits for 0, not
    for the deadline, before stopping the replica."""
    report = await rig.rollback(drain_timeout_s=600.0).run(rig.release, code_only=True)
    drain = next(step for step in report.steps if step.name == "drain_and_stop_bad_version")
    assert drain.data["pinned_at_start"] == 3
    assert drain.data["pinned_at_end"] == 0
    assert drain.data["waited_s"] == pytest.approx(3.0)
    assert "3 of 3 live session(s) moved or ended" in drain.detail


async def test_the_drain_gives_up_waiting_at_the_deadline(rig: Rig) -> None:
    """Sessions that never take a turn keep their pins: at the deadline the replica is
    stopped anyway and the detail says how many were left."""
    rig.router.moves_per_poll = 0
    report = await rig.rollback(drain_timeout_s=10.0).run(rig.release, code_only=True)
    drain = next(step for step in report.steps if step.name == "drain_and_stop_bad_version")
    assert drain.data["waited_s"] == pytest.approx(10.0)
    assert drain.data["pinned_at_end"] == 3
    assert "3 left at the drain deadline" in drain.detail
    assert_final_state(rig)


class StoreCount:
    """The session store's live count, as a replica's admin API reports it."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.reads = 0

    async def by_version(self) -> dict[str, int]:
        self.reads += 1
        return dict(self.counts)


async def test_by_default_the_rollback_stops_the_bad_version_without_waiting(rig: Rig) -> None:
    """Its sessions move at their next turn, so the replicas drain and stop at once (the
    memory fence stays up only that long), however many sessions are live."""
    rig.router.moves_per_poll = 0
    report = await Rollback(rig.router, rig.driver, rig.memory, rig.journal, clock=rig.clock).run(
        rig.release, code_only=True
    )
    drain = next(step for step in report.steps if step.name == "drain_and_stop_bad_version")
    assert drain.data["waited_s"] == 0
    assert drain.data["pinned_at_start"] == 3
    assert "move to v1 at their next turn" in drain.detail
    assert_final_state(rig)


async def test_a_drain_wait_reads_the_session_store_not_the_pins(rig: Rig) -> None:
    """Pins of sessions that ended by timeout linger; the store says 0 live, so even a
    long drain wait ends at once."""
    rig.router.moves_per_poll = 0
    store = StoreCount({"v1": 10, "v2": 0})
    report = await rig.rollback(drain_timeout_s=600.0, sessions=store).run(
        rig.release, code_only=True
    )
    drain = next(step for step in report.steps if step.name == "drain_and_stop_bad_version")
    assert store.reads >= 1
    assert drain.data["waited_s"] == 0 and drain.data["pinned_at_start"] == 0
    assert_final_state(rig)


async def test_a_rollback_killed_half_way_continues_where_it_stopped(rig: Rig) -> None:
    """The replica stop fails once: the run stops at the drain step (named) with the fence
    up; run again, it does the drain and the rest, and each earlier step only once."""
    rig.driver.breaks.append(Breaks("stop_replica", RuntimeError("keel up went away")))
    with pytest.raises(RollbackFailed) as caught:
        await rig.rollback().run(rig.release)
    failed = caught.value.report
    assert failed.failed_step == "drain_and_stop_bad_version"
    assert "failed at step drain_and_stop_bad_version" in caught.value.message
    assert "keel up went away" in caught.value.message
    assert [s.status for s in failed.steps] == ["done", "done", "done", "failed"]
    assert await rig.fenced()
    entries = await rig.journal.entries(rig.release.release)
    assert entries["drain_and_stop_bad_version"].state == "started"

    report = await rig.rollback().run(rig.release)
    assert [s.status for s in report.steps] == [
        "already_done",
        "already_done",
        "already_done",
        "done",
        "done",
        "skipped",
    ]
    assert [c[0] for c in rig.router.changes].count("set_weights") == 1
    assert rig.memory.calls.count("restore") == 1
    assert rig.memory.calls.count("raise_fence") == 1
    assert (await rig.journal.entries(rig.release.release))[
        "drain_and_stop_bad_version"
    ].attempts == 2
    assert await rig.contents() == ["before the deploy"]
    assert len(await rig.memory.api.list_quarantines()) == 1
    assert not await rig.fenced()
    assert_final_state(rig)


async def test_a_restore_whose_answer_was_lost_is_not_repeated(rig: Rig) -> None:
    """The restore happened but its answer never came back: the rerun finds the
    quarantine it made and restores nothing a second time."""
    rig.memory.lose_restore_answer = True
    with pytest.raises(RollbackFailed) as caught:
        await rig.rollback().run(rig.release)
    assert caught.value.report.failed_step == "restore_snapshot"
    report = await rig.rollback().run(rig.release)
    restore = next(step for step in report.steps if step.name == "restore_snapshot")
    assert restore.status == "done" and restore.data["repeated"] is True
    assert rig.memory.calls.count("restore") == 1
    assert len(await rig.memory.api.list_quarantines()) == 1
    assert await rig.contents() == ["before the deploy"]


async def test_a_completed_rollback_run_again_changes_nothing(rig: Rig) -> None:
    """The second run reports every step as done before and calls nothing that changes
    the router, the replicas or memory."""
    await rig.rollback().run(rig.release)
    router_calls, driver_calls, memory_calls = (
        len(rig.router.calls),
        len(rig.driver.calls),
        len(rig.memory.calls),
    )
    again = await rig.rollback().run(rig.release)
    assert not again.changed
    assert [s.status for s in again.steps] == ["already_done"] * 5 + ["skipped"]
    assert "nothing changed" in again.summary
    assert (len(rig.router.calls), len(rig.driver.calls), len(rig.memory.calls)) == (
        router_calls,
        driver_calls,
        memory_calls,
    )


async def test_a_dry_run_changes_nothing(rig: Rig) -> None:
    """--dry-run plans every step (naming the snapshot and the replicas to stop) and
    calls nothing that changes anything; the journal stays empty."""
    report = await rig.rollback().run(rig.release, dry_run=True)
    assert report.dry_run and not report.changed
    assert [s.status for s in report.steps] == ["planned"] * 5 + ["skipped"]
    details = {s.name: s.detail for s in report.steps}
    assert rig.release.snapshot_id is not None
    assert rig.release.snapshot_id in details["restore_snapshot"]
    assert "replica-3" in details["drain_and_stop_bad_version"]
    assert "(now 3)" in details["drain_and_stop_bad_version"]
    assert rig.router.changes == []
    assert [c for c in rig.driver.calls if c[0] != "list_replicas"] == []
    assert rig.memory.calls == []
    assert await rig.journal.entries(rig.release.release) == {}
    assert sorted(await rig.contents()) == ["before the deploy", "written by v2"]


async def test_code_only_leaves_memory_alone_and_the_state_part_can_follow(rig: Rig) -> None:
    """--code-only skips the fence, the restore and the lift (memory keeps v2's write);
    a full rollback afterwards runs only those three."""
    report = await rig.rollback().run(rig.release, code_only=True)
    assert [s.status for s in report.steps] == [
        "done",
        "skipped",
        "skipped",
        "done",
        "skipped",
        "skipped",
    ]
    assert rig.memory.calls == []
    assert sorted(await rig.contents()) == ["before the deploy", "written by v2"]
    assert_final_state(rig)

    full = await rig.rollback().run(rig.release)
    assert [s.status for s in full.steps] == [
        "already_done",
        "done",
        "done",
        "already_done",
        "done",
        "skipped",
    ]
    assert await rig.contents() == ["before the deploy"]


async def test_no_snapshot_refuses_the_state_part_before_doing_anything(rig: Rig) -> None:
    """A release without a pre-deploy snapshot cannot restore memory: ConfigError that
    points at --code-only, and nothing was called; code-only still works."""
    rig.release.snapshot_id = None
    with pytest.raises(ConfigError) as caught:
        await rig.rollback().run(rig.release)
    assert "--code-only" in caught.value.message
    assert rig.router.calls == [] and rig.memory.calls == []
    assert (await rig.rollback().run(rig.release, code_only=True)).passed


async def test_a_missing_or_unready_previous_version_fails_the_first_step(rig: Rig) -> None:
    """The previous version gone from the router, or without a ready replica: the first
    step fails saying so, and nothing was changed."""
    rig.router.table["v1"] = version("v1", *V1_URLS, weight=95, ready=False)
    with pytest.raises(RollbackFailed) as unready:
        await rig.rollback().run(rig.release)
    assert unready.value.report.failed_step == "route_new_sessions_to_previous"
    assert "no replica of v1 is ready" in unready.value.message
    del rig.router.table["v1"]
    with pytest.raises(RollbackFailed) as missing:
        await rig.rollback().run(rig.release)
    assert "the router has no version v1" in missing.value.message
    assert rig.router.changes == [] and rig.memory.calls == []


async def test_a_retired_previous_version_is_opened_again(rig: Rig) -> None:
    """After a promotion the previous version may be retired: it is put back with weight
    100 before the weights are set."""
    rig.router.table["v1"] = version("v1", *V1_URLS, retired=True)
    await rig.rollback().run(rig.release, code_only=True)
    assert rig.router.changes[:2] == [
        ("put_version", "v1", 100, "pinned"),
        ("set_weights", {"v1": 100, "v2": 0}, "v1"),
    ]
    assert not rig.router.table["v1"].retired


def golden_suite(word: str) -> GoldenSuite:
    return GoldenSuite.model_validate(
        {
            "name": "after",
            "cases": [{"name": "echo", "turns": [{"user": "hello", "expect": {"contains": word}}]}],
        }
    )


async def test_golden_checks_run_last_against_the_previous_version(
    rig: Rig, tmp_path: Path
) -> None:
    """With a suite, the last step runs it against a ready replica of v1 (a real agent
    server here); a failing suite fails that step alone, and the rerun repeats only it."""
    async with live_server(agent_app(tmp_path / "v1")) as v1:
        rig.router.table["v1"] = version("v1", v1.url, weight=95)
        with pytest.raises(RollbackFailed) as caught:
            await rig.rollback(golden=GoldenChecks(golden_suite("goodbye"))).run(
                rig.release, code_only=True
            )
        assert caught.value.report.failed_step == "golden"
        assert f"golden checks failed against v1 at {v1.url}" in caught.value.message
        changes = len(rig.router.changes)

        report = await rig.rollback(golden=GoldenChecks(golden_suite("hello"))).run(
            rig.release, code_only=True
        )
    assert [s.status for s in report.steps][-1] == "done"
    assert "1/1 cases passed" in report.steps[-1].detail
    assert len(rig.router.changes) == changes
