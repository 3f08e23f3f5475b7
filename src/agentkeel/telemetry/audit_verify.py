"""Reading and checking the audit file: ``verify_audit_file`` and ``read_audit_records``.

The chain holds when every record's ``hash`` matches its content, its ``seq``
is one more than the record before and its ``prev`` is that record's hash. The
first record that breaks one of these is reported with what most likely
happened: changed, removed, inserted or reordered; a last line without its
newline is a truncated tail (a write cut off). Records removed from the end
leave a valid, shorter chain: keep the head hash ``verify`` prints somewhere
else and pass it back (``expect_head``) to catch that too.

>>> report = verify_audit_file(Path(".keel/audit/audit.jsonl"))
>>> report.ok, report.head
(True, '9f2c…')
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentkeel.telemetry.audit_file import GENESIS_HASH, record_hash

__all__ = ["ChainReport", "read_audit_records", "verify_audit_file"]

_FIELDS = ("seq", "ts", "action", "actor", "outcome", "prev", "hash")


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What ``verify_audit_file`` found."""

    path: Path
    records: int
    """Records that verified before the first problem (all of them when ``ok``)."""
    head: str | None
    """The hash of the last record that verified."""
    ok: bool
    problem: str | None = None
    first_bad_seq: int | None = None
    line: int | None = None
    truncated: bool = False


def verify_audit_file(path: Path, *, expect_head: str | None = None) -> ChainReport:
    """Walk the chain in ``path``; stop at the first bad record and say why."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ChainReport(
            path=path,
            records=0,
            head=None,
            ok=False,
            problem=f"there is no audit file at '{path}' (no administrative action recorded "
            "yet, or the wrong --data-dir / --file)",
        )
    lines = data.split(b"\n")
    parsed: list[dict[str, Any] | None] = [_parse(raw) for raw in lines]
    later_seqs = {rec["seq"] for rec in parsed if rec is not None}
    prev_hash, prev_seq, count = GENESIS_HASH, 0, 0
    seen_hashes: set[str] = set()

    def bad(problem: str, *, seq: int | None, line: int, truncated: bool = False) -> ChainReport:
        return ChainReport(
            path=path,
            records=count,
            head=prev_hash if count else None,
            ok=False,
            problem=problem,
            first_bad_seq=seq,
            line=line,
            truncated=truncated,
        )

    for index, raw in enumerate(lines):
        number = index + 1
        last = index == len(lines) - 1
        if last and raw == b"":
            break
        if last:
            return bad(
                f"the last line (line {number}) has no end: a write was cut off (truncated "
                "tail); the records before it verify",
                seq=prev_seq + 1,
                line=number,
                truncated=True,
            )
        record = parsed[index]
        if record is None:
            return bad(
                f"line {number} is not an audit record (changed or corrupted)",
                seq=prev_seq + 1,
                line=number,
            )
        seq = record["seq"]
        if record_hash(record) != record["hash"]:
            return bad(
                f"record seq {seq} was changed: its hash does not match its content",
                seq=seq,
                line=number,
            )
        if seq > prev_seq + 1:
            missing = range(prev_seq + 1, seq)
            if any(m in later_seqs for m in missing):
                return bad(
                    f"record seq {seq} comes before seq {prev_seq + 1}: records were reordered",
                    seq=prev_seq + 1,
                    line=number,
                )
            gap = f"{missing[0]}" if len(missing) == 1 else f"{missing[0]}..{missing[-1]}"
            return bad(
                f"record seq {gap} missing (removed): seq {seq} follows seq {prev_seq}",
                seq=missing[0],
                line=number,
            )
        if seq <= prev_seq:
            return bad(
                f"record seq {seq} comes after seq {prev_seq}: a record was inserted or the "
                "records were reordered",
                seq=seq,
                line=number,
            )
        if record["prev"] != prev_hash:
            return bad(
                f"record seq {seq} does not chain to the record before it (its prev is not "
                "that record's hash): a record was inserted, replaced or reordered",
                seq=seq,
                line=number,
            )
        prev_hash, prev_seq = record["hash"], seq
        seen_hashes.add(prev_hash)
        count += 1
    if expect_head is not None and expect_head not in seen_hashes:
        return ChainReport(
            path=path,
            records=count,
            head=prev_hash if count else None,
            ok=False,
            problem=f"the anchored head {expect_head} is not in the file: records at its end "
            "were removed, or the file was replaced",
            first_bad_seq=prev_seq + 1,
        )
    return ChainReport(path=path, records=count, head=prev_hash if count else None, ok=True)


def read_audit_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records in ``path`` in file order (lines that do not parse are skipped;
    ``verify_audit_file`` reports them)."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        for raw in handle:
            record = _parse(raw.rstrip(b"\n"))
            if record is not None:
                yield record


def _parse(raw: bytes) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict) or any(key not in record for key in _FIELDS):
        return None
    if not isinstance(record["seq"], int) or not isinstance(record["hash"], str):
        return None
    return record
