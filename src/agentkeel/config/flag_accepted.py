"""The accepted copy of a flag file: what the flagd provider of every replica reads.

Replicas sharing a data directory share one copy per flag file::

    <data_dir>/flags/<12 hex of sha256(the flag file's absolute path)>/
        accepted.json    the last document that passed validation (canonical JSON)
        state.json       {sha256 of accepted.json, sha256 of the source bytes, when, by whom}
        lock             flock: one writer at a time (replicas, ``keel flags set``)

Only a validated document is ever written here. ``accept`` writes it under the lock
and only when its hash differs from the copy's, so a change is accepted, and
audited (``flags.changed``, with every change from what to what), once per data
directory, by whichever process got there first.

>>> copy = AcceptedFlags(data_dir=Path(".keel"), source=Path(".keel/flags.json"))
>>> copy.accept(document, actor="replica:replica-1", source_sha256=digest)
[{'flag': 'agent.model_chain', 'change': 'added', ...}]
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentkeel.config.flag_changes import flag_changes
from agentkeel.config.flag_file import (
    FlagDocument,
    FlagFileError,
    parse_flag_bytes,
    parse_flag_document,
)
from agentkeel.storage.atomic import atomic_write
from agentkeel.telemetry.audit import audit

__all__ = ["FLAGS_CHANGED", "AcceptedFlags", "AcceptedState", "SourceChanged"]

FLAGS_CHANGED = "flags.changed"
"""The audit action of an accepted change of the flags."""


class SourceChanged(Exception):
    """The flag file changed again between its validation and its acceptance."""


@dataclass(frozen=True, slots=True)
class AcceptedState:
    """``state.json``: who accepted the copy, when, and from which source bytes."""

    sha256: str
    source_sha256: str | None
    accepted_at: float
    actor: str


class AcceptedFlags:
    """The accepted copy, its state and its lock for the flag file ``source``."""

    def __init__(self, *, data_dir: Path, source: Path) -> None:
        self.source = source.resolve()
        digest = hashlib.sha256(str(self.source).encode()).hexdigest()[:12]
        self.directory = data_dir / "flags" / digest
        self.file = self.directory / "accepted.json"
        self.state_file = self.directory / "state.json"
        self.lock_file = self.directory / "lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the copy's lock (other processes and threads wait) for the block."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def read(self) -> FlagDocument | None:
        """The accepted document (flagd's syntax checked, as it was validated when
        accepted); ``None`` when there is no copy yet."""
        try:
            raw = self.file.read_bytes()
        except FileNotFoundError:
            return None
        return parse_flag_document(
            parse_flag_bytes(raw, origin=str(self.file)), origin=str(self.file)
        )

    def read_state(self) -> AcceptedState | None:
        try:
            data = json.loads(self.state_file.read_text())
            return AcceptedState(
                sha256=str(data["sha256"]),
                source_sha256=data.get("source_sha256"),
                accepted_at=float(data["accepted_at"]),
                actor=str(data["actor"]),
            )
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def accept(
        self,
        document: FlagDocument,
        *,
        actor: str,
        source_sha256: str,
        still_current: Callable[[], bool] | None = None,
    ) -> list[dict[str, Any]] | None:
        """Put ``document`` (validated) in the copy under the lock and audit the change;
        the changes, or ``None`` when the copy holds it already (accepted elsewhere).
        With ``still_current``, raises ``SourceChanged`` when the source changed again
        since it was read (the next check takes the newer file). Raises
        ``AuditUnavailable`` (the copy is restored) when the audit record cannot be
        written."""
        with self.locked():
            if still_current is not None and not still_current():
                raise SourceChanged(str(self.source))
            return self.accept_locked(document, actor=actor, source_sha256=source_sha256)

    def accept_locked(
        self, document: FlagDocument, *, actor: str, source_sha256: str
    ) -> list[dict[str, Any]] | None:
        """``accept`` for a caller that holds ``locked()`` already (``keel flags set``)."""
        try:
            old_bytes: bytes | None = self.file.read_bytes()
        except FileNotFoundError:
            old_bytes = None
        old_sha = hashlib.sha256(old_bytes).hexdigest() if old_bytes is not None else None
        if old_sha == document.sha256:
            return None
        previous = self._previous(old_bytes)
        changes = flag_changes(previous, document)
        old_state = self.state_file.read_bytes() if self.state_file.exists() else None
        self._write(document, source_sha256=source_sha256, actor=actor)
        try:
            audit(
                FLAGS_CHANGED,
                actor=actor,
                flag_file=str(self.source),
                changes=changes,
                sha256=document.sha256,
                previous_sha256=old_sha,
            )
        except BaseException:
            # Fail closed: a change nobody can audit is not put in force.
            if old_bytes is not None:
                self._replace(self.file, old_bytes)
            else:
                self.file.unlink(missing_ok=True)
            if old_state is not None:
                atomic_write(self.state_file, old_state)
            raise
        return changes

    def _previous(self, old_bytes: bytes | None) -> FlagDocument:
        if old_bytes is None:
            return FlagDocument.empty()
        try:
            data = parse_flag_bytes(old_bytes, origin=str(self.file))
            return parse_flag_document(data, origin=str(self.file))
        except FlagFileError:
            return FlagDocument.empty()  # a damaged copy: everything reads as added

    def _write(self, document: FlagDocument, *, source_sha256: str | None, actor: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._replace(self.file, document.content)
        state = {
            "sha256": document.sha256,
            "source": str(self.source),
            "source_sha256": source_sha256,
            "accepted_at": time.time(),
            "actor": actor,
        }
        atomic_write(self.state_file, (json.dumps(state, indent=2) + "\n").encode())

    @staticmethod
    def _replace(target: Path, data: bytes) -> None:
        """``atomic_write``, then a modification time later than the old one: the flagd
        provider reloads a file only when its mtime grows, and two writes within one
        clock tick of the file system would otherwise share one."""
        try:
            before = target.stat().st_mtime_ns
        except FileNotFoundError:
            before = None
        atomic_write(target, data)
        if before is not None and target.stat().st_mtime_ns <= before:
            later = before + 1_000_000
            os.utime(target, ns=(later, later))
