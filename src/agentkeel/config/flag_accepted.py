"""The accepted copy of a flag file: what the flagd provider of every replica reads.

Replicas sharing a data directory share one copy per flag file::

    <data_dir>/flags/<12 hex of sha256(the flag file's absolute path)>/
        accepted.json    the last document that passed validation (canonical JSON)
        state.json       {sha256 of accepted.json, sha256 of the source bytes, when, by whom}
        lock             flock: one writer at a time (replicas, ``keel flags set``)

Only a validated document is ever written here. ``accept`` writes it under the lock
and only when its hash differs from the copy's, so a change is accepted, and
audited (``flags.changed``, with every change from what to what), once per data
directory, by whichever process got there first. The new copy is staged beside the
old one, the audit record written, and only then is the copy replaced: no replica
can read a change that has no record (a record that cannot be written leaves the
copy as it was).

``flags_in_force`` is what commands show: the flag file, or while it is refused,
the accepted copy the replicas keep serving.

>>> copy = AcceptedFlags(data_dir=Path(".keel"), source=Path(".keel/flags.json"))
>>> copy.accept(document, actor="replica:replica-1", source_sha256=digest)
[{'flag': 'agent.model_chain', 'change': 'added', ...}]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentkeel.config.flag_changes import flag_changes
from agentkeel.config.flag_file import (
    FlagDocument,
    FlagFileError,
    flag_source_path,
    load_flag_file,
    parse_flag_bytes,
    parse_flag_document,
)
from agentkeel.config.settings import KeelSettings
from agentkeel.storage.atomic import atomic_write, staged_write
from agentkeel.storage.file_lock import exclusive_lock
from agentkeel.telemetry.audit import audit

__all__ = [
    "FLAGS_CHANGED",
    "AcceptedFlags",
    "AcceptedState",
    "FlagsInForce",
    "SourceChanged",
    "flags_in_force",
]

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
        with exclusive_lock(self.lock_file):
            yield

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
        """Audit the change and put ``document`` (validated) in the copy, under the lock;
        the changes, or ``None`` when the copy holds it already (accepted elsewhere).
        With ``still_current``, raises ``SourceChanged`` when the source changed again
        since it was read (the next check takes the newer file). Raises
        ``AuditUnavailable`` (the copy untouched) when the audit record cannot be
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
        self.directory.mkdir(parents=True, exist_ok=True)
        # Fail closed: the copy is replaced only once its change is on record.
        with staged_write(self.file, document.content):
            audit(
                FLAGS_CHANGED,
                actor=actor,
                flag_file=str(self.source),
                changes=changes,
                sha256=document.sha256,
                previous_sha256=old_sha,
            )
        self._write_state(document, source_sha256=source_sha256, actor=actor)
        return changes

    def _previous(self, old_bytes: bytes | None) -> FlagDocument:
        if old_bytes is None:
            return FlagDocument.empty()
        try:
            data = parse_flag_bytes(old_bytes, origin=str(self.file))
            return parse_flag_document(data, origin=str(self.file))
        except FlagFileError:
            return FlagDocument.empty()  # a damaged copy: everything reads as added

    def _write_state(
        self, document: FlagDocument, *, source_sha256: str | None, actor: str
    ) -> None:
        state = {
            "sha256": document.sha256,
            "source": str(self.source),
            "source_sha256": source_sha256,
            "accepted_at": time.time(),
            "actor": actor,
        }
        atomic_write(self.state_file, (json.dumps(state, indent=2) + "\n").encode())


@dataclass(frozen=True, slots=True)
class FlagsInForce:
    """The flags a command shows for a flag file (``flags_in_force``)."""

    source: Path
    document: FlagDocument
    refused: FlagFileError | None = None
    """Why the flag file is not the document shown (it is refused); ``None`` when it is."""
    from_copy: bool = False
    """With ``refused``: whether ``document`` is the accepted copy (else no flags: there
    is none)."""
    accepted: AcceptedState | None = None
    """Who accepted the copy shown, and when, where its state says."""

    @property
    def warning(self) -> str | None:
        """What to tell the operator when the file is refused: why, and what is shown."""
        if self.refused is None:
            return None
        if not self.from_copy:
            shown = "there is no accepted copy, so replicas serve no flags from it"
        else:
            shown = "showing the last good flags, the accepted copy replicas keep serving"
            if self.accepted is not None:
                when = datetime.fromtimestamp(self.accepted.accepted_at, tz=UTC).isoformat()
                shown += (
                    f" (sha256 {self.accepted.sha256[:12]}, accepted {when} by "
                    f"{self.accepted.actor})"
                )
        return f"{self.refused.message}\nThe flag file is refused; {shown}."


def flags_in_force(settings: KeelSettings) -> FlagsInForce:
    """The flags of ``settings``' flag file as replicas serve them: the file, validated
    (no flags when it does not exist); when it is refused, the accepted copy they keep
    serving, with the refusal (``FlagsInForce.warning``).

    >>> shown = flags_in_force(settings)
    >>> shown.warning is None, sorted(shown.document.flags)
    (True, ['agent.model_chain'])
    """
    source = flag_source_path(settings)
    if not source.exists():
        return FlagsInForce(source=source, document=FlagDocument.empty())
    try:
        return FlagsInForce(source=source, document=load_flag_file(source, settings=settings))
    except FlagFileError as refused:
        copy = AcceptedFlags(data_dir=settings.data_dir, source=source.absolute())
        try:
            document = copy.read()
        except (FlagFileError, OSError):
            document = None
        if document is None:
            return FlagsInForce(source=source, document=FlagDocument.empty(), refused=refused)
        return FlagsInForce(
            source=source,
            document=document,
            refused=refused,
            from_copy=True,
            accepted=copy.read_state(),
        )
