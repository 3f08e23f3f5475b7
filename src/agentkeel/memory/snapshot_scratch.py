"""The scratch-restore half of snapshot verification, runnable in another process.

Verifying a snapshot restores it into a throwaway SQLite store and reads it back
unchanged. The store is built for one load and one read, not for
service: no journal, no fsync, one exclusive connection, no search index and
no namespace index (each batch is read back by rowid right after it is
inserted, while its pages are still in the cache). The file is read in large
blocks: the digest of the memory lines is one SHA-256 over their bytes as they
stand in the file (it is defined over exactly those bytes), each line is
parsed once, and the rows are inserted in large ``executemany`` batches; the
read-back compares whole batches of tuples, not one fingerprint per row.

``python -m agentkeel.memory.snapshot_scratch`` runs the same check on a JSON
object of ``scratch_restore_checks``'s arguments read from stdin and prints
the checks as JSON: ``SnapshotManager.verify`` runs it as a worker process
while the server's own process replays the log, so the two halves use two
cores instead of taking turns on one interpreter lock.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sqlite3
import sys
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agentkeel.memory import tables
from agentkeel.memory.snapshot_file import FORMAT, SnapshotDamaged

__all__ = ["ScratchCheck", "scratch_restore_checks"]

_BATCH = 20_000
_BLOCK = 4 << 20
_TRAILER = b'{"end":true'
_INSERT = f"INSERT INTO memories ({tables.MEMORY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_READ_BACK = f"SELECT {tables.MEMORY_COLUMNS} FROM memories WHERE rowid > ? ORDER BY rowid LIMIT ?"
_CACHE_KIB = 65536
_SCRATCH_TABLE = (
    "CREATE TABLE memories (id TEXT NOT NULL, namespace TEXT NOT NULL, content TEXT NOT NULL, "
    "tags TEXT NOT NULL, importance REAL NOT NULL, metadata TEXT NOT NULL, "
    "created_at REAL NOT NULL, updated_at REAL NOT NULL, version INTEGER NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class ScratchCheck:
    """One check's outcome (``VerifyCheck``'s fields, kept here so a worker process
    needs nothing from the snapshot manager)."""

    name: str
    ok: bool
    detail: str


def scratch_restore_checks(
    *, path: str, seq: int, head_hash: str, memories: int, state_digest: str
) -> list[ScratchCheck]:
    """Restore the snapshot file at ``path`` into a scratch store and read it back.

    Returns the ``structure`` check (format, log position, id order, field types,
    count and digest against the trailer and the catalog's ``memories`` and
    ``state_digest``) and, when it passes, the ``scratch_restore`` check: every
    row read back from the store equals the values loaded from the file (the
    digest covers the file's bytes, so the store holds exactly what it says).
    """
    with tempfile.TemporaryDirectory(prefix="keel-verify-") as scratch_dir:
        conn = _scratch_connection(Path(scratch_dir) / "scratch.db")
        try:
            file = _SnapshotFile(Path(path))
            try:
                file.check_header(seq=seq, head_hash=head_hash)
                loaded = _load(conn, file.memories())
                file.check_end(memories=memories, digest=state_digest)
            except SnapshotDamaged as exc:
                return [ScratchCheck("structure", False, str(exc))]
        finally:
            conn.close()
    structure = ScratchCheck("structure", True, f"{memories} memories, digest matches")
    if loaded.differing or loaded.rows != memories:
        return [
            structure,
            ScratchCheck(
                "scratch_restore",
                False,
                f"{loaded.differing} of {loaded.rows} rows read back from the scratch store "
                "differ from what was loaded: the store did not keep the snapshot's values",
            ),
        ]
    return [
        structure,
        ScratchCheck(
            "scratch_restore",
            True,
            f"{loaded.rows} memories restored into a scratch store and read back unchanged",
        ),
    ]


@dataclass(slots=True)
class _Loaded:
    rows: int = 0
    differing: int = 0


class _SnapshotFile:
    """The file's header, its memory lines parsed in order (digest and id order
    checked on the way), and its trailer, for one pass."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._hash = hashlib.sha256()
        self._count = 0
        self._trailer: dict[str, Any] | None = None
        self._header: bytes = b""
        self._rest: bytes = b""

    def check_header(self, *, seq: int, head_hash: str) -> None:
        header = _parse(self._read_header())
        if header.get("format") != FORMAT:
            raise SnapshotDamaged(f"unknown format {header.get('format')!r}")
        if header.get("seq") != seq or header.get("head_hash") != head_hash:
            raise SnapshotDamaged("the header's log position differs from the catalog")

    def _read_header(self) -> bytes:
        try:
            with gzip.open(self._path, "rb") as handle:
                return handle.readline()
        except (OSError, EOFError, zlib.error) as exc:
            raise SnapshotDamaged(f"the file cannot be read: {exc}") from exc

    def memories(self) -> Iterator[dict[str, Any]]:
        last_id: str | None = None
        for line in self._memory_lines():
            data = _parse(line)
            memory_id = data.get("id")
            if not isinstance(memory_id, str) or (last_id is not None and memory_id <= last_id):
                raise SnapshotDamaged(f"memory {memory_id!r} is out of id order")
            last_id = memory_id
            yield data

    def _memory_lines(self) -> Iterator[bytes]:
        """The memory lines; hashes their bytes (newlines included) block by block
        and keeps the trailer when it comes."""
        try:
            with gzip.open(self._path, "rb") as handle:
                handle.readline()
                pending = b""
                while block := handle.read(_BLOCK):
                    # Whole lines only; the cut-off tail goes in front of the next block.
                    block = pending + block
                    cut = block.rfind(b"\n") + 1
                    block, pending = block[:cut], block[cut:]
                    at = 0 if block.startswith(_TRAILER) else block.find(b"\n" + _TRAILER) + 1
                    body = block if at <= 0 and not block.startswith(_TRAILER) else block[:at]
                    self._hash.update(body)
                    lines = body.split(b"\n")[:-1]
                    self._count += len(lines)
                    yield from lines
                    if len(body) < len(block):
                        self._trailer = _parse(block[len(body) :].split(b"\n", 1)[0])
                        return
        except (OSError, EOFError, zlib.error) as exc:
            raise SnapshotDamaged(f"the file cannot be read: {exc}") from exc

    def check_end(self, *, memories: int, digest: str) -> None:
        if self._trailer is None:
            raise SnapshotDamaged("the file ends without its trailer line (truncated)")
        problems = []
        if self._trailer.get("memories") != self._count or self._count != memories:
            problems.append(f"{self._count} memories read, {memories} recorded")
        if self._trailer.get("state_digest") != self._hash.hexdigest():
            problems.append("the rows' digest differs from the file's trailer")
        if self._hash.hexdigest() != digest:
            problems.append("the rows' digest differs from the catalog's")
        if problems:
            raise SnapshotDamaged("; ".join(problems))


def _parse(line: bytes) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise SnapshotDamaged(f"a line is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SnapshotDamaged("a line is not a JSON object")
    return data


def _scratch_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # Throwaway: a crash loses nothing worth keeping, so no journal and no fsync.
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute(f"PRAGMA cache_size = {-_CACHE_KIB}")
    conn.execute(_SCRATCH_TABLE)
    return conn


def _load(conn: sqlite3.Connection, lines: Iterator[dict[str, Any]]) -> _Loaded:
    """Insert the memories batch by batch, reading each batch back as it lands."""
    loaded = _Loaded()
    conn.execute("BEGIN")
    batch: list[tuple[Any, ...]] = []
    for data in lines:
        batch.append(_columns(data))
        if len(batch) >= _BATCH:
            _load_batch(conn, batch, loaded)
            batch = []
    if batch:
        _load_batch(conn, batch, loaded)
    conn.execute("COMMIT")
    return loaded


def _load_batch(conn: sqlite3.Connection, batch: list[tuple[Any, ...]], loaded: _Loaded) -> None:
    conn.executemany(_INSERT, batch)
    found = conn.execute(_READ_BACK, (loaded.rows, len(batch))).fetchall()
    loaded.rows += len(found)
    if found != batch:
        # Rare (the check failing): count the rows that differ, in Python.
        loaded.differing += sum(1 for a, b in zip(found, batch, strict=False) if a != b) + abs(
            len(found) - len(batch)
        )


def _columns(data: dict[str, Any]) -> tuple[Any, ...]:
    """A memory line as the store's columns, with the types ``MemoryRecord`` enforces."""
    try:
        tags = data["tags"]
        metadata = data["metadata"]
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise SnapshotDamaged(f"memory {data['id']!r} has tags that are not strings")
        if not isinstance(metadata, dict):
            raise SnapshotDamaged(f"memory {data['id']!r} has metadata that is not an object")
        return (
            str(data["id"]),
            str(data["namespace"]),
            str(data["content"]),
            json.dumps(tags, ensure_ascii=False) if tags else "[]",
            float(data["importance"]),
            json.dumps(metadata, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            if metadata
            else "{}",
            float(data["created_at"]),
            float(data["updated_at"]),
            int(data["version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SnapshotDamaged):
            raise
        raise SnapshotDamaged(f"memory {data.get('id')!r} cannot be read: {exc!r}") from exc


def main() -> None:
    """Read the arguments as a JSON object on stdin; print the checks as JSON."""
    arguments = json.load(sys.stdin)
    checks = scratch_restore_checks(**arguments)
    json.dump([asdict(check) for check in checks], sys.stdout)


if __name__ == "__main__":
    main()
