"""Snapshots, restore and quarantine over HTTP; retention and the scheduler."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import httpx
from starlette.applications import Starlette

from agentkeel.config.memory import RetentionSettings
from agentkeel.memory.backends import MemoryBackend
from agentkeel.memory.snapshot_scratch import scratch_restore_checks
from agentkeel.memory.snapshots import SnapshotManager, plan_retention
from agentkeel.memory.store import CreateMemory, SnapshotKind, SnapshotRecord
from agentkeel.resilience.clock import ManualClock
from tests.memory.apphelpers import ADMIN, TOKEN_A, auth
from tests.memory.helpers import raw_sql

A = auth(TOKEN_A)
ADM = auth(ADMIN)
NS = "agent:a"
DAY = 86_400.0


async def put(client: httpx.AsyncClient, content: str) -> str:
    response = await client.post(
        "/v1/memories", json={"namespace": NS, "content": content}, headers=A
    )
    assert response.status_code == 201, response.text
    memory_id: str = response.json()["memory"]["id"]
    return memory_id


async def contents(client: httpx.AsyncClient) -> set[str]:
    listing = await client.get("/v1/memories", params={"namespace": NS, "limit": 100}, headers=A)
    return {r["memory"]["content"] for r in listing.json()["results"]}


async def snapshot(client: httpx.AsyncClient, kind: str = "manual") -> dict[str, object]:
    response = await client.post("/v1/snapshots", json={"label": "t", "kind": kind}, headers=ADM)
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()
    return data


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def forge(path: Path, old: str, new: str) -> str:
    """Rewrite the snapshot's text and return the new file's SHA-256."""
    text = gzip.decompress(path.read_bytes()).decode().replace(old, new)
    path.write_bytes(gzip.compress(text.encode()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def exists(path: str) -> bool:
    return Path(path).exists()


async def test_snapshot_create_list_verify(client: httpx.AsyncClient) -> None:
    """A snapshot records its log position and checksum, and verifies."""
    await put(client, "one")
    await put(client, "two")
    snap = await snapshot(client, "deploy")
    assert snap["seq"] == 2 and snap["memories"] == 2 and snap["kind"] == "deploy"
    listed = (await client.get("/v1/snapshots", headers=ADM)).json()["snapshots"]
    assert [s["id"] for s in listed] == [snap["id"]]
    verified = await client.post(f"/v1/snapshots/{snap['id']}/verify", headers=ADM)
    body = verified.json()
    assert body["ok"] is True, body
    assert [c["name"] for c in body["checks"]] == [
        "checksum",
        "structure",
        "scratch_restore",
        "log",
    ]
    listed = (await client.get("/v1/snapshots", headers=ADM)).json()["snapshots"]
    assert listed[0]["verified_ok"] is True
    assert (await client.post("/v1/snapshots", json={}, headers=A)).status_code == 403


async def test_verify_catches_a_corrupted_file(client: httpx.AsyncClient) -> None:
    """One flipped byte fails the checksum check, and the catalog records the failure."""
    await put(client, "one")
    snap = await snapshot(client)
    flip_a_byte(Path(str(snap["path"])))
    body = (await client.post(f"/v1/snapshots/{snap['id']}/verify", headers=ADM)).json()
    assert body["ok"] is False
    assert body["checks"][0]["name"] == "checksum" and body["checks"][0]["ok"] is False
    listed = (await client.get("/v1/snapshots", headers=ADM)).json()["snapshots"]
    assert listed[0]["verified_ok"] is False
    restore = await client.post("/v1/restore", json={"snapshot_id": snap["id"]}, headers=ADM)
    assert restore.status_code == 409 and restore.json()["error"]["code"] == "snapshot_invalid"


async def test_verify_catches_forged_content_with_matching_checksum(
    client: httpx.AsyncClient, memory_store_url: str
) -> None:
    """A rewritten file whose new checksum was put in the catalog still fails: its rows
    no longer match the recorded digest nor a replay of the log."""
    await put(client, "the truth")
    snap = await snapshot(client)
    sha = forge(Path(str(snap["path"])), "the truth", "a lie")
    raw_sql(memory_store_url, f"UPDATE memory_snapshots SET sha256 = '{sha}'")
    body = (await client.post(f"/v1/snapshots/{snap['id']}/verify", headers=ADM)).json()
    assert body["ok"] is False
    assert {c["name"]: c["ok"] for c in body["checks"]}["structure"] is False


async def test_restore_from_forged_content_changes_nothing(
    client: httpx.AsyncClient, memory_store_url: str
) -> None:
    """Rows stream from the file into the restore; a digest that fails at the end of the
    file rolls the whole restore back (409 snapshot_invalid, state and log as before)."""
    await put(client, "the truth")
    snap = await snapshot(client)
    await put(client, "written later")
    sha = forge(Path(str(snap["path"])), "the truth", "a lie")
    raw_sql(memory_store_url, f"UPDATE memory_snapshots SET sha256 = '{sha}'")
    restore = await client.post("/v1/restore", json={"snapshot_id": snap["id"]}, headers=ADM)
    assert restore.status_code == 409, restore.text
    assert restore.json()["error"]["code"] == "snapshot_invalid"
    assert "digest" in restore.json()["error"]["message"]
    assert await contents(client) == {"the truth", "written later"}
    assert (await client.get("/v1/quarantine", headers=ADM)).json()["quarantines"] == []
    assert (await client.get("/v1/integrity", headers=ADM)).json()["ok"] is True


async def test_restore_to_snapshot_with_quarantine_and_replay(client: httpx.AsyncClient) -> None:
    """Restoring a snapshot brings its state back; later writes wait in the quarantine
    and a replay applies them again."""
    await put(client, "kept")
    snap = await snapshot(client)
    await put(client, "after the snapshot")
    restored = await client.post("/v1/restore", json={"snapshot_id": snap["id"]}, headers=ADM)
    assert restored.status_code == 200, restored.text
    assert restored.json()["quarantined_events"] == 1
    assert await contents(client) == {"kept"}
    quarantine = (await client.get("/v1/quarantine?events=1", headers=ADM)).json()["quarantines"]
    assert len(quarantine) == 1 and quarantine[0]["events"][0]["op"] == "create"
    replay = await client.post(f"/v1/quarantine/{quarantine[0]['id']}/replay", headers=ADM)
    assert replay.json()["applied"] == 1
    assert await contents(client) == {"kept", "after the snapshot"}
    assert (await client.get("/v1/integrity", headers=ADM)).json()["ok"] is True


async def test_restore_to_sequence_and_to_time(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    """``seq`` and ``at`` (ISO 8601) pick the restore point; each quarantines what follows."""
    await put(client, "first")
    clock.advance(3600)
    await put(client, "second")
    at_time = await client.post(
        "/v1/restore", json={"at": "2023-11-14T22:30:00Z", "reason": "test"}, headers=ADM
    )
    assert at_time.status_code == 200, at_time.text
    assert at_time.json()["target_seq"] == 1
    assert await contents(client) == {"first"}
    by_seq = await client.post("/v1/restore", json={"seq": 0}, headers=ADM)
    assert by_seq.json()["quarantined_events"] == 2  # "first" and the first restore's marker
    assert await contents(client) == set()
    assert len((await client.get("/v1/quarantine", headers=ADM)).json()["quarantines"]) == 2
    both = await client.post("/v1/restore", json={"seq": 1, "at": 5}, headers=ADM)
    assert both.status_code == 422


def snap(snapshot_id: str, kind: SnapshotKind, created_at: float) -> SnapshotRecord:
    return SnapshotRecord(
        id=snapshot_id,
        label="",
        kind=kind,
        seq=0,
        head_hash="",
        created_at=created_at,
        path="",
        sha256="",
        size_bytes=0,
        memories=0,
        state_digest="",
    )


def test_retention_over_a_simulated_month() -> None:
    """Daily snapshots (weekly every 7th day), a deploy every 5 days, pruned each day:
    after 30 days exactly the newest deploy, the newest of the last day and one weekly
    snapshot per each of the last 4 weeks remain."""
    policy = RetentionSettings()
    start = 1_700_000_000.0
    kept: list[SnapshotRecord] = []
    for day in range(30):
        now = start + day * DAY
        kind: SnapshotKind = "weekly" if day % 7 == 0 else "daily"
        kept.append(snap(f"d{day}", kind, now))
        if day % 5 == 0:
            kept.append(snap(f"deploy{day}", "deploy", now + 60))
        decision = plan_retention(kept, now=now + 120, policy=policy)
        kept = [s for s in kept if s.id not in decision.remove]
    assert {s.id for s in kept} == {"deploy25", "d29", "d28", "d21", "d14", "d7"}
    reasons = plan_retention(kept, now=start + 29 * DAY + 120, policy=policy).keep
    assert reasons["deploy25"] == ["newest deploy"]
    assert reasons["d29"] == ["newest in the last day"]


async def test_prune_removes_files_by_policy(
    memory_store: MemoryBackend, clock: ManualClock, tmp_path: Path
) -> None:
    """Pruning through the manager deletes the files and catalog rows of dropped snapshots."""
    manager = SnapshotManager(store=memory_store, directory=tmp_path / "snaps", clock=clock)
    old = await manager.create(kind="daily")
    clock.advance(2 * DAY)
    new = await manager.create(kind="daily")
    decision = await manager.prune(RetentionSettings())
    assert decision.remove == (old.id,)
    assert not exists(old.path) and exists(new.path)
    assert [s.id for s in await memory_store.list_snapshots()] == [new.id]


async def test_scheduler_runs_due_duties(
    served: tuple[Starlette, httpx.AsyncClient], clock: ManualClock, memory_store_url: str
) -> None:
    """After a day the scheduler checks integrity, takes a (weekly) snapshot and verifies
    it; a failed scheduled check makes the store read-only."""
    app, client = served
    await put(client, "x")
    scheduler = app.state.scheduler
    assert await scheduler.run_due() == []
    clock.advance(DAY)
    assert await scheduler.run_due() == ["integrity", "snapshot", "verify"]
    snaps = (await client.get("/v1/snapshots", headers=ADM)).json()["snapshots"]
    assert [s["kind"] for s in snaps] == ["weekly"] and snaps[0]["verified_ok"] is True
    metrics = (await client.get("/metrics")).text
    assert "agent_memory_last_verification_status 1.0" in metrics
    raw_sql(memory_store_url, "UPDATE memories SET content = 'forged'")
    clock.advance(3600)
    assert await scheduler.run_due() == ["integrity"]
    assert (await client.get("/ready")).json()["read_only"] is True


async def test_plain_verify_checks_the_position_and_deep_verify_replays_the_log(
    memory_store: MemoryBackend, memory_store_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    """An event altered after the snapshot was taken leaves a plain verify passing (it
    checks the file, the scratch restore and the log position only) and fails a deep
    verify, which walks the chain and replays the log up to the snapshot."""
    manager = SnapshotManager(store=memory_store, directory=tmp_path / "snaps", clock=clock)
    await memory_store.write([CreateMemory(namespace=NS, content=f"m{i}") for i in range(3)])
    snap = await manager.create(label="t")
    raw_sql(memory_store_url, "UPDATE memory_events SET payload = 'x' WHERE seq = 2")
    plain = await manager.verify(snap.id)
    assert plain.ok, plain.summary()
    assert "position" in {c.name: c.detail for c in plain.checks}["log"]
    deep = await manager.verify(snap.id, deep=True)
    assert not deep.ok
    assert [c.name for c in deep.checks if not c.ok] == ["log"]
    assert (await memory_store.get_snapshot(snap.id)).verified_ok is False  # type: ignore[union-attr]


async def test_deep_verify_of_an_intact_snapshot_passes(
    memory_store: MemoryBackend, clock: ManualClock, tmp_path: Path
) -> None:
    """A deep verify of a snapshot equal to its log reports the replay as matching."""
    manager = SnapshotManager(store=memory_store, directory=tmp_path / "snaps", clock=clock)
    await memory_store.write([CreateMemory(namespace=NS, content=f"m{i}") for i in range(3)])
    snap = await manager.create(label="t")
    outcome = await manager.verify(snap.id, deep=True)
    assert outcome.ok, outcome.summary()
    assert "replay" in {c.name: c.detail for c in outcome.checks}["log"]


async def test_verify_in_a_worker_process_finds_what_the_thread_finds(
    memory_store: MemoryBackend, memory_store_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    """With the worker-process threshold at zero, the scratch restore runs in its own
    process: an intact snapshot passes, and forged content with a matching checksum
    fails the structure check there too."""
    manager = SnapshotManager(
        store=memory_store, directory=tmp_path / "snaps", clock=clock, verify_process_from=0
    )
    await memory_store.write(
        [CreateMemory(namespace=NS, content="the truth", tags=["t"], metadata={"k": 1})]
    )
    snap = await manager.create(label="t")
    intact = await manager.verify(snap.id)
    assert intact.ok, intact.summary()
    assert "read back unchanged" in {c.name: c.detail for c in intact.checks}["scratch_restore"]
    sha = forge(Path(snap.path), "the truth", "a lie")
    raw_sql(memory_store_url, f"UPDATE memory_snapshots SET sha256 = '{sha}'")
    forged = await manager.verify(snap.id)
    assert {c.name: c.ok for c in forged.checks}["structure"] is False


def test_scratch_checks_catch_truncation_and_disorder(tmp_path: Path) -> None:
    """A file cut before its trailer, or with memories out of id order, fails the
    structure check with a message naming the problem."""
    header = '{"format":"agentkeel-memory-snapshot/1","head_hash":"h","seq":1}\n'
    line = (
        '{{"content":"c","created_at":1.0,"id":"{id}","importance":0.5,"metadata":{{}},'
        '"namespace":"n","tags":[],"updated_at":1.0,"version":1}}\n'
    )
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress((header + line.format(id="a")).encode()))
    checks = scratch_restore_checks(
        path=str(truncated), seq=1, head_hash="h", memories=1, state_digest="d"
    )
    assert [(c.name, c.ok) for c in checks] == [("structure", False)]
    assert "truncated" in checks[0].detail
    disordered = tmp_path / "order.jsonl.gz"
    body = line.format(id="b") + line.format(id="a")
    trailer = '{"end":true,"memories":2,"state_digest":"d"}\n'
    disordered.write_bytes(gzip.compress((header + body + trailer).encode()))
    checks = scratch_restore_checks(
        path=str(disordered), seq=1, head_hash="h", memories=2, state_digest="d"
    )
    assert "out of id order" in checks[0].detail
