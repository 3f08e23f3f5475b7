"""Reading a snapshot file back, checked line by line as it streams.

The format (written by ``SnapshotManager.create``) is gzip JSONL: a header
line, one line per memory in id order, a trailer with the count and the state
digest. Both readers here check the file against the catalog's record as the
lines pass and raise ``SnapshotDamaged`` on the first problem, so whatever
consumes them (a restore transaction, a scratch load) stops and rolls back.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentkeel.memory.hashchain import StateDigest
from agentkeel.memory.store import MemoryRecord, SnapshotRecord

__all__ = ["FORMAT", "SnapshotDamaged", "snapshot_lines", "snapshot_rows"]

FORMAT = "agentkeel-memory-snapshot/1"


class SnapshotDamaged(ValueError):
    """A snapshot file whose content is not what its header, trailer and catalog say."""


def snapshot_lines(
    path: Path, *, seq: int, head_hash: str, memories: int, digest: str
) -> Iterator[dict[str, Any]]:
    """The memory lines of the file at ``path``, parsed, in file order.

    Checked as they pass: the format and log position (``seq``, ``head_hash``) in
    the header, strict id order, and at the end the count and the digest against
    the trailer and the catalog (``memories``, ``digest``). The digest covers the
    lines as written, so a line is hashed before it is parsed.
    """
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            header: dict[str, Any] = json.loads(handle.readline())
            if header.get("format") != FORMAT:
                raise SnapshotDamaged(f"unknown format {header.get('format')!r}")
            if header.get("seq") != seq or header.get("head_hash") != head_hash:
                raise SnapshotDamaged("the header's log position differs from the catalog")
            running = StateDigest()
            last_id = ""
            trailer: dict[str, Any] | None = None
            for raw in handle:
                line = raw.rstrip("\n")
                data = json.loads(line)
                if data.get("end") is True:
                    trailer = data
                    break
                memory_id = data["id"]
                if not isinstance(memory_id, str) or (running.count and memory_id <= last_id):
                    raise SnapshotDamaged(f"memory {memory_id!r} is out of id order")
                last_id = memory_id
                running.add_fingerprint(line)
                yield data
    except (OSError, EOFError, ValueError, KeyError, TypeError, gzip.BadGzipFile) as exc:
        if isinstance(exc, SnapshotDamaged):
            raise
        raise SnapshotDamaged(f"the file cannot be read: {exc}") from exc
    if trailer is None:
        raise SnapshotDamaged("the file ends without its trailer line (truncated)")
    problems = []
    if trailer.get("memories") != running.count or running.count != memories:
        problems.append(f"{running.count} memories read, {memories} recorded")
    if trailer.get("state_digest") != running.hexdigest():
        problems.append("the rows' digest differs from the file's trailer")
    if running.hexdigest() != digest:
        problems.append("the rows' digest differs from the catalog's")
    if problems:
        raise SnapshotDamaged("; ".join(problems))


def snapshot_rows(snapshot: SnapshotRecord) -> Iterator[MemoryRecord]:
    """The memories in a snapshot's file as records, checked as ``snapshot_lines``
    checks them. Raises ``SnapshotDamaged`` on the first problem, so a restore
    consuming the rows rolls back."""
    lines = snapshot_lines(
        Path(snapshot.path),
        seq=snapshot.seq,
        head_hash=snapshot.head_hash,
        memories=snapshot.memories,
        digest=snapshot.state_digest,
    )
    for data in lines:
        try:
            yield MemoryRecord.from_json(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotDamaged(f"memory {data.get('id')!r} cannot be read: {exc}") from exc
