"""Snapshots: checkpoints of the current state at a log position, with a checksum.

A snapshot is one gzip JSONL file under ``<data_dir>/snapshots/``::

    {"format": "agentkeel-memory-snapshot/1", "id", "seq", "head_hash", "created_at", ...}
    {"id": "...", "namespace": "...", "content": "...", ...}      one line per memory, id order
    {"end": true, "memories": N, "state_digest": "<sha256>"}

plus ``<id>.sha256`` beside it (``sha256sum`` format) and a row in the store's
snapshot catalog. Everything in it is read from one consistent view of the
store, so it is the state exactly at ``seq``.

``verify`` is what makes a snapshot worth keeping: the file's checksum, its
structure and digest, and a restore into a scratch store read back unchanged;
and that the live log still holds the snapshot's position (``seq`` with its
hash). An untested snapshot is not a snapshot. ``deep`` verification also
walks the hash chain up to ``seq`` and compares a replay of the log up to it
with the snapshot's digest. That replay takes about 20 s of a core at a
million memories (beside the scratch restore, which runs in a worker process
for large snapshots, it turns a 13 s verify into 17 s) and the scheduled
integrity check already holds the live log and table to each other, so it is
asked for rather than done by default.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from agentkeel.config.memory import RetentionSettings
from agentkeel.errors import Conflict, InvalidRequest, NotFound
from agentkeel.memory.hashchain import ChainVerifier, StateDigest, canonical_json
from agentkeel.memory.integrity import replayed_state_digest
from agentkeel.memory.metrics import MemoryMetrics
from agentkeel.memory.snapshot_file import FORMAT, SnapshotDamaged, snapshot_rows
from agentkeel.memory.snapshot_scratch import ScratchCheck, scratch_restore_checks
from agentkeel.memory.store import (
    SNAPSHOT_KINDS,
    MemoryStore,
    RestoreResult,
    SnapshotKind,
    SnapshotRecord,
)
from agentkeel.resilience.clock import Clock

logger = logging.getLogger("agentkeel.memory.snapshots")

__all__ = [
    "FORMAT",
    "PruneDecision",
    "SnapshotDamaged",
    "SnapshotManager",
    "VerifyCheck",
    "VerifyOutcome",
    "plan_retention",
    "snapshot_rows",
]

_CHUNK = 1 << 20
VERIFY_PROCESS_FROM = 50_000
"""Snapshots with this many memories or more are restored into the scratch store by
a worker process (``python -m agentkeel.memory.snapshot_scratch``); below it,
starting a process costs more than it saves."""


@dataclass(frozen=True, slots=True)
class VerifyCheck:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    """Every check a verification ran; ``ok`` only when all passed."""

    snapshot_id: str
    ok: bool
    checks: tuple[VerifyCheck, ...]
    verified_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "ok": self.ok,
            "verified_at": self.verified_at,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }

    def summary(self) -> str:
        failed = [c for c in self.checks if not c.ok]
        if not failed:
            return f"snapshot {self.snapshot_id} verified ({len(self.checks)} checks passed)"
        return f"snapshot {self.snapshot_id} FAILED verification: " + "; ".join(
            f"{c.name}: {c.detail}" for c in failed
        )


@dataclass(frozen=True, slots=True)
class PruneDecision:
    """Which snapshots a retention pass keeps (and why) and which it removes."""

    keep: dict[str, list[str]] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"keep": self.keep, "remove": list(self.remove), "dry_run": self.dry_run}


def plan_retention(
    snapshots: Sequence[SnapshotRecord], *, now: float, policy: RetentionSettings
) -> PruneDecision:
    """Decide what to keep: the newest ``keep_deploy`` deploy snapshots, the newest
    snapshot from the last ``keep_daily_s``, and the newest weekly snapshot in each
    of the last ``weekly_weeks`` weeks (counted back from ``now``). The rest go."""
    newest_first = sorted(snapshots, key=lambda s: (s.created_at, s.id), reverse=True)
    keep: dict[str, list[str]] = {}

    def mark(snapshot: SnapshotRecord, why: str) -> None:
        keep.setdefault(snapshot.id, []).append(why)

    for snapshot in [s for s in newest_first if s.kind == "deploy"][: policy.keep_deploy]:
        mark(snapshot, "newest deploy")
    recent = [s for s in newest_first if now - s.created_at <= policy.keep_daily_s]
    if recent:
        mark(recent[0], "newest in the last day")
    for week in range(policy.weekly_weeks):
        start, end = now - (week + 1) * policy.keep_weekly_s, now - week * policy.keep_weekly_s
        in_week = [s for s in newest_first if s.kind == "weekly" and start < s.created_at <= end]
        if in_week:
            mark(in_week[0], f"weekly, week {week + 1} back")
    remove = tuple(s.id for s in newest_first if s.id not in keep)
    return PruneDecision(keep=keep, remove=remove)


class SnapshotManager:
    """Creates, verifies, restores from and prunes snapshots of one store.

    ``verify_process_from``: from how many memories ``verify`` restores the scratch
    copy in a worker process instead of a thread.
    """

    def __init__(
        self,
        *,
        store: MemoryStore,
        directory: Path,
        clock: Clock,
        metrics: MemoryMetrics | None = None,
        verify_process_from: int = VERIFY_PROCESS_FROM,
    ) -> None:
        self._store = store
        self._directory = Path(directory)
        self._clock = clock
        self._metrics = metrics
        self._verify_process_from = verify_process_from
        self._lock = asyncio.Lock()

    # --- create -------------------------------------------------------------

    async def create(self, *, label: str = "", kind: SnapshotKind = "manual") -> SnapshotRecord:
        """Write a snapshot of the state as of now and record it in the catalog."""
        if kind not in SNAPSHOT_KINDS:
            raise InvalidRequest(f"snapshot kind {kind!r} is not one of {list(SNAPSHOT_KINDS)}.")
        created_at = self._clock.time()
        snapshot_id = _snapshot_id(created_at)
        self._directory.mkdir(parents=True, exist_ok=True)
        final = self._directory / f"{snapshot_id}.jsonl.gz"
        partial = final.with_suffix(".partial")
        digest = StateDigest()
        async with self._lock, self._store.reader() as reader:
            head = await reader.head()
            raw = await asyncio.to_thread(partial.open, "wb")
            hashing = _HashingWriter(raw)
            out = gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=3, mtime=0)
            try:
                header = {
                    "format": FORMAT,
                    "id": snapshot_id,
                    "label": label,
                    "kind": kind,
                    "seq": head.seq,
                    "head_hash": head.hash,
                    "created_at": created_at,
                }
                await asyncio.to_thread(out.write, (canonical_json(header) + "\n").encode())
                async for lines in reader.fingerprints_by_id():
                    for line in lines:
                        digest.add_fingerprint(line)
                    await asyncio.to_thread(out.write, ("\n".join(lines) + "\n").encode())
                trailer = {
                    "end": True,
                    "memories": digest.count,
                    "state_digest": digest.hexdigest(),
                }
                await asyncio.to_thread(out.write, (canonical_json(trailer) + "\n").encode())
                await asyncio.to_thread(out.close)
                await asyncio.to_thread(_fsync_close, raw)
            except BaseException:
                raw.close()
                partial.unlink(missing_ok=True)
                raise
        partial.replace(final)
        sha = hashing.hexdigest()
        final.with_name(f"{snapshot_id}.sha256").write_text(f"{sha}  {final.name}\n")
        snapshot = SnapshotRecord(
            id=snapshot_id,
            label=label,
            kind=kind,
            seq=head.seq,
            head_hash=head.hash,
            created_at=created_at,
            path=str(final),
            sha256=sha,
            size_bytes=hashing.size,
            memories=digest.count,
            state_digest=digest.hexdigest(),
        )
        await self._store.add_snapshot(snapshot)
        logger.info(
            "snapshot %s (%s) taken at seq %d: %d memories, %d bytes",
            snapshot_id,
            kind,
            head.seq,
            digest.count,
            hashing.size,
            extra={"event": "snapshot"},
        )
        await self.refresh_metrics()
        return snapshot

    # --- verify -------------------------------------------------------------

    async def verify(self, snapshot_id: str, *, deep: bool = False) -> VerifyOutcome:
        """Run every check on one snapshot and record the outcome in the catalog.

        After the file's checksum (``checksum``), the file streams into a
        throwaway SQLite store while its structure and digest are checked, and
        every row is read back (``structure``, ``scratch_restore``); the live log
        must still hold the snapshot's position (``log``). With ``deep``, the
        ``log`` check instead walks the hash chain up to that position and
        replays the log to the snapshot's digest, at the same time as the
        scratch restore (which runs in a worker process from
        ``verify_process_from`` memories, so the two use two cores).
        """
        snapshot = await self._get(snapshot_id)
        checks: list[VerifyCheck] = []
        if await self._file_intact(snapshot, checks):
            log_check = self._against_log(snapshot) if deep else self._log_position(snapshot)
            loaded, log = await asyncio.gather(self._scratch_restore(snapshot), log_check)
            checks.extend(loaded)
            checks.append(log)
        ok = all(check.ok for check in checks)
        outcome = VerifyOutcome(
            snapshot_id=snapshot_id, ok=ok, checks=tuple(checks), verified_at=self._clock.time()
        )
        await self._store.record_verification(
            snapshot_id, at=outcome.verified_at, ok=ok, message=outcome.summary()
        )
        (logger.info if ok else logger.error)(outcome.summary(), extra={"event": "snapshot"})
        if self._metrics is not None:
            self._metrics.last_verification_ok.set(1 if ok else 0)
        await self.refresh_metrics()
        return outcome

    async def _file_intact(self, snapshot: SnapshotRecord, checks: list[VerifyCheck]) -> bool:
        """The file is there and its SHA-256 is the catalog's."""
        path = Path(snapshot.path)
        if not await asyncio.to_thread(path.is_file):
            checks.append(VerifyCheck("file", False, f"{path} is missing"))
            return False
        sha = await asyncio.to_thread(_sha256_file, path)
        if sha != snapshot.sha256:
            checks.append(
                VerifyCheck(
                    "checksum",
                    False,
                    f"the file's SHA-256 is {sha[:16]}…, the catalog says "
                    f"{snapshot.sha256[:16]}…: the file was changed or damaged",
                )
            )
            return False
        checks.append(VerifyCheck("checksum", True, f"sha256 {sha[:16]}… matches"))
        return True

    async def _scratch_restore(self, snapshot: SnapshotRecord) -> list[VerifyCheck]:
        arguments: dict[str, Any] = {
            "path": snapshot.path,
            "seq": snapshot.seq,
            "head_hash": snapshot.head_hash,
            "memories": snapshot.memories,
            "state_digest": snapshot.state_digest,
        }
        found: list[ScratchCheck] | None = None
        if snapshot.memories >= self._verify_process_from:
            found = await _in_worker_process(arguments)
        if found is None:
            found = await asyncio.to_thread(lambda: scratch_restore_checks(**arguments))
        return [VerifyCheck(check.name, check.ok, check.detail) for check in found]

    async def _off_log(self, snapshot: SnapshotRecord) -> VerifyCheck | None:
        """The ``log`` check's outcome when the live log no longer holds the snapshot's
        position (a restore moved it), else None."""
        event = await self._store.event_at(snapshot.seq) if snapshot.seq else None
        if snapshot.seq and (event is None or event.hash != snapshot.head_hash):
            return VerifyCheck(
                "log",
                True,
                f"skipped: the live log no longer holds event {snapshot.seq} (a restore moved "
                "it); checksum and digest checks stand alone",
            )
        return None

    async def _log_position(self, snapshot: SnapshotRecord) -> VerifyCheck:
        off_log = await self._off_log(snapshot)
        if off_log is not None:
            return off_log
        return VerifyCheck(
            "log",
            True,
            f"the live log holds the snapshot's position (event {snapshot.seq}, hash "
            f"{snapshot.head_hash[:12]}…); a deep verify also replays the log up to it",
        )

    async def _against_log(self, snapshot: SnapshotRecord) -> VerifyCheck:
        off_log = await self._off_log(snapshot)
        if off_log is not None:
            return off_log
        async with self._store.reader() as reader:
            verifier = ChainVerifier()
            async for page in reader.events_by_seq():
                verifier.feed([e for e in page if e.seq <= snapshot.seq])
                if page[-1].seq >= snapshot.seq:
                    break
            if verifier.problem is not None:
                # An altered event may not even parse: no replay of a broken chain.
                return VerifyCheck("log", False, f"the log up to the snapshot: {verifier.problem}")
            digest, count = await replayed_state_digest(reader, up_to_seq=snapshot.seq)
        if digest != snapshot.state_digest:
            return VerifyCheck(
                "log",
                False,
                f"a replay of the log up to seq {snapshot.seq} gives {count} memories with a "
                "different digest: the snapshot does not hold the state it claims",
            )
        return VerifyCheck("log", True, f"equals a replay of the log up to seq {snapshot.seq}")

    # --- restore and prune --------------------------------------------------

    async def restore(self, snapshot_id: str, *, reason: str) -> RestoreResult:
        """Restore the store to the snapshot; events after it go to a quarantine.

        The rows stream from the file into the store's restore transaction; the
        file's structure and digest are checked as they pass, and a problem rolls
        the restore back.
        """
        snapshot = await self._get(snapshot_id)
        checks: list[VerifyCheck] = []
        if not await self._file_intact(snapshot, checks):
            raise _not_restorable(snapshot_id, checks)
        event = await self._store.event_at(snapshot.seq) if snapshot.seq else None
        if snapshot.seq and (event is None or event.hash != snapshot.head_hash):
            raise Conflict(
                f"snapshot {snapshot_id} was taken at seq {snapshot.seq}, which is no longer in "
                "the live log (a later restore quarantined it). Replay that quarantine first or "
                "pick a newer snapshot.",
                code="snapshot_off_log",
            )
        try:
            return await self._store.restore(
                target_seq=snapshot.seq,
                reason=f"{reason} (snapshot {snapshot_id})",
                rows=snapshot_rows(snapshot),
            )
        except SnapshotDamaged as exc:
            raise _not_restorable(snapshot_id, [VerifyCheck("structure", False, str(exc))]) from exc

    async def prune(self, policy: RetentionSettings, *, dry_run: bool = False) -> PruneDecision:
        """Apply the retention policy: delete the files and catalog rows it does not keep."""
        snapshots = await self._store.list_snapshots()
        decision = plan_retention(snapshots, now=self._clock.time(), policy=policy)
        if dry_run:
            return PruneDecision(keep=decision.keep, remove=decision.remove, dry_run=True)
        by_id = {s.id: s for s in snapshots}
        for snapshot_id in decision.remove:
            await asyncio.to_thread(_remove_files, Path(by_id[snapshot_id].path), snapshot_id)
            await self._store.delete_snapshot(snapshot_id)
        if decision.remove:
            logger.info("pruned %d snapshot(s)", len(decision.remove), extra={"event": "snapshot"})
        await self.refresh_metrics()
        return decision

    async def refresh_metrics(self) -> None:
        if self._metrics is None:
            return
        snapshots = await self._store.list_snapshots()
        self._metrics.last_snapshot.set(max((s.created_at for s in snapshots), default=0))
        verified = [s.created_at for s in snapshots if s.verified_ok]
        self._metrics.last_verified_snapshot.set(max(verified, default=0))

    async def _get(self, snapshot_id: str) -> SnapshotRecord:
        snapshot = await self._store.get_snapshot(snapshot_id)
        if snapshot is None:
            raise NotFound(
                f"snapshot {snapshot_id!r} does not exist; GET /v1/snapshots lists them.",
                code="snapshot_not_found",
            )
        return snapshot


# -- helpers ---------------------------------------------------------------------------


async def _in_worker_process(arguments: dict[str, Any]) -> list[ScratchCheck] | None:
    """The scratch checks run by a worker process; None when it could not run (the
    caller then runs them on a thread: slower, same result)."""
    # A fresh interpreter (not a fork: the server has threads a fork would copy
    # mid-flight, nor multiprocessing's spawn, which re-imports the main module).
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentkeel.memory.snapshot_scratch",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        _worker_failed(str(exc))
        return None
    try:
        out, err = await process.communicate(json.dumps(arguments).encode())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        _worker_failed(f"exit status {process.returncode}: {err.decode(errors='replace')[-500:]}")
        return None
    return [ScratchCheck(**check) for check in json.loads(out)]


def _worker_failed(why: str) -> None:
    logger.warning(
        "snapshot verify: the scratch-restore worker process failed (%s); running it on a "
        "thread instead",
        why,
        extra={"event": "snapshot"},
    )


def _snapshot_id(created_at: float) -> str:
    stamp = datetime.fromtimestamp(created_at, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"snap-{stamp}-{uuid.uuid4().hex[:8]}"


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _remove_files(path: Path, snapshot_id: str) -> None:
    path.unlink(missing_ok=True)
    path.with_name(f"{snapshot_id}.sha256").unlink(missing_ok=True)


def _fsync_close(raw: IO[bytes]) -> None:
    raw.flush()
    os.fsync(raw.fileno())
    raw.close()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _not_restorable(snapshot_id: str, checks: list[VerifyCheck]) -> Conflict:
    return Conflict(
        f"snapshot {snapshot_id} cannot be restored: "
        + "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok)
        + ". Nothing was changed. Pick another snapshot, or restore to a sequence number "
        "instead.",
        code="snapshot_invalid",
    )
