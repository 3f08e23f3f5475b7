"""The gate between a flag file and the flags in force on one replica.

Every ``flags.poll_interval_s`` the gate stats the flag file (the source) and the
accepted copy (``flag_accepted.py``); only when one changed does it do more, in a
worker thread:

- a changed source is validated (``flag_file.validate_flag_document``). A file that
  passes is accepted, under the copy's lock: audited, then written to the accepted
  copy, once per data directory. A file that fails is refused: the error, with every problem,
  is logged, ``agent_flags_valid`` drops to 0, and the last good flags stay.
- a changed accepted copy (this replica's accept, another replica's, or
  ``keel flags set``) becomes the document in force: under the gate's ``lock``,
  ``before_apply`` hands it to the flagd provider (which has read it when the call
  returns), then the gate's ``document`` (the flags a turn evaluates) follows. A
  turn evaluates its flags under the same lock, so it sees the old document or the
  new one, never a mix, and never a flag the provider no longer has.

``close`` waits for a check running in its worker thread to finish and stops any
later one, so nothing is put in force after it returns.

A flag file missing at start means no flags until it appears; one that disappears
later keeps the last good flags, with a warning. With a refused file at start, the
accepted copy left by earlier runs is the last good one.

>>> gate = FlagGate(source=path, accepted=AcceptedFlags(data_dir=d, source=path),
...                 settings=settings, actor="replica:replica-1")
>>> gate.start()
>>> await gate.run(interval_s=1.0)   # until cancelled
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agentkeel.config.flag_accepted import AcceptedFlags, SourceChanged
from agentkeel.config.flag_changes import describe_changes, flag_changes
from agentkeel.config.flag_file import (
    FlagDocument,
    FlagFileError,
    is_yaml,
    parse_flag_bytes,
    validate_flag_document,
)
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import KeelError
from agentkeel.storage.file_stamp import FileStamp, file_stamp
from agentkeel.telemetry.metrics import FlagMetrics

__all__ = ["FlagGate"]

logger = logging.getLogger("agentkeel.flags")

_UNSEEN: object = object()


class FlagGate:
    """Watches one flag file and keeps the document in force for this replica."""

    def __init__(
        self,
        *,
        source: Path,
        accepted: AcceptedFlags,
        settings: KeelSettings,
        actor: str,
        metrics: FlagMetrics | None = None,
        clock: Callable[[], float] = time.time,
        before_apply: Callable[[FlagDocument], None] | None = None,
    ) -> None:
        self.source = source
        self.accepted = accepted
        self.settings = settings
        self.actor = actor
        """Who a hand edit's audit record names: the replica that accepted it."""
        self.metrics = metrics
        self.clock = clock
        self.before_apply = before_apply
        """Called with a new document before it is in force, under ``lock`` (the
        provider reads it)."""
        self.lock = threading.Lock()
        """Held while the flags in force change, and by a turn while it evaluates them."""
        self.document = FlagDocument.empty()
        """The flags in force: what each turn evaluates (read it under ``lock``)."""
        self.valid = True
        """False while the current file is refused or missing (the last good flags stay)."""
        self.error: str | None = None
        """Why the current file is not in force (``None`` when it is)."""
        self.applied_at: float | None = None
        self._source_stamp: object = _UNSEEN
        self._source_sha: str | None = None
        self._source_seen = False
        self._accepted_stamp: object = _UNSEEN
        self._follow = False
        """Whether the accepted copy is followed: not when the file was missing at start."""
        self._started = False
        self._checking = threading.Lock()
        self._closed = False

    # -- the loop -------------------------------------------------------------------

    def start(self) -> None:
        """The first check (blocking: call it off the event loop, as ``run`` does)."""
        self._started = True
        self.check()
        self._publish_validity()

    async def run(self, *, interval_s: float) -> None:
        """Check every ``interval_s`` until cancelled: a stat of both files on the loop,
        the rest in a worker thread when one of them changed. Cancelling it does not stop
        a check already in its thread: ``close`` waits for that one."""
        if not self._started:
            await asyncio.to_thread(self.start)
        while True:
            await asyncio.sleep(interval_s)
            try:
                changed = self.changed()
            except OSError as exc:
                # No permission to look, for now: the flags in force stay; try again.
                logger.warning(
                    "cannot check the flag file %s: %s",
                    self.source,
                    exc,
                    extra={"event": "flags"},
                )
                continue
            if changed:
                try:
                    await asyncio.to_thread(self.check)
                except Exception:
                    # A bug, not a bad file: say so, keep the flags in force and keep watching.
                    logger.exception(
                        "checking the flag file %s failed; the flags in force stay",
                        self.source,
                        extra={"event": "flags"},
                    )

    def changed(self) -> bool:
        """Whether the source or the followed copy changed since the last check (two stats)."""
        if file_stamp(self.source) != self._source_stamp:
            return True
        return self._follow and file_stamp(self.accepted.file) != self._accepted_stamp

    def check(self) -> None:
        """One check of the source, then of the accepted copy (blocking file work); does
        nothing once ``close`` was called."""
        with self._checking:
            if self._closed:
                return
            try:
                stamp = file_stamp(self.source)
            except OSError as exc:
                self._refuse(FlagFileError(str(self.source), [f"cannot be read: {exc}"]))
                stamp = None
            else:
                if stamp != self._source_stamp:
                    self._source_stamp = stamp
                    self._check_source(stamp)
            if self._follow:
                copy = file_stamp(self.accepted.file)
                if copy != self._accepted_stamp:
                    self._accepted_stamp = copy
                    try:
                        self._load_accepted()
                    except BaseException:
                        # Not applied: the next check tries this copy again.
                        self._accepted_stamp = _UNSEEN
                        raise
            self._publish_validity()

    def close(self) -> None:
        """No check after this one; a check running in a worker thread finishes first
        (blocking: call it off the event loop)."""
        with self._checking:
            self._closed = True

    # -- the source -----------------------------------------------------------------

    def _check_source(self, stamp: FileStamp | None) -> None:
        if stamp is None:
            self._source_missing()
            return
        self._source_seen = True
        try:
            raw = self.source.read_bytes()
        except FileNotFoundError:
            self._source_missing()
            return
        except OSError as exc:
            self._refuse(FlagFileError(str(self.source), [f"cannot be read: {exc}"]))
            return
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._source_sha:
            return  # rewritten with the same bytes
        self._source_sha = digest
        try:
            data = parse_flag_bytes(raw, origin=str(self.source), yaml_format=is_yaml(self.source))
            document = validate_flag_document(data, origin=str(self.source), settings=self.settings)
        except FlagFileError as exc:
            self._refuse(exc)
            return
        try:
            self.accepted.accept(
                document,
                actor=self.actor,
                source_sha256=digest,
                still_current=lambda: _sha256_of(self.source) == digest,
            )
        except SourceChanged:
            self._source_sha, self._source_stamp = None, _UNSEEN  # the next check reads it
            return
        except KeelError as exc:
            # AuditUnavailable: nothing changed; the next check tries again.
            self._source_sha, self._source_stamp = None, _UNSEEN
            logger.error(
                "flag file %s passed validation but was not put in force: %s",
                self.source,
                exc.message,
                extra={"event": "flags"},
            )
            return
        self._follow = True
        self.valid, self.error = True, None
        if self.metrics is not None:
            self.metrics.reloads.labels("applied").inc()

    def _refuse(self, exc: FlagFileError) -> None:
        self._follow = True  # the accepted copy is the last good flags
        self.valid, self.error = False, exc.message
        if self.metrics is not None:
            self.metrics.reloads.labels("rejected").inc()
        logger.error(
            "refused the flag file %s; the last good flags stay in force (%d flag(s), "
            "sha256 %s). %d problem(s):\n  - %s",
            exc.origin,
            len(self.document.flags),
            self.document.sha256[:12],
            len(exc.problems),
            "\n  - ".join(exc.problems),
            extra={"event": "flags", "problems": list(exc.problems)},
        )

    def _source_missing(self) -> None:
        self._source_sha = None
        if not self._source_seen:
            logger.info(
                "no flag file at %s: no feature flags until it appears",
                self.source,
                extra={"event": "flags"},
            )
            return
        self.valid = False
        self.error = f"the flag file {self.source} has disappeared"
        logger.warning(
            "the flag file %s has disappeared; the last good flags stay in force "
            "(%d flag(s), sha256 %s) until it is back",
            self.source,
            len(self.document.flags),
            self.document.sha256[:12],
            extra={"event": "flags"},
        )

    # -- the accepted copy ----------------------------------------------------------

    def _load_accepted(self) -> None:
        try:
            document = self.accepted.read()
        except (FlagFileError, OSError) as exc:
            logger.error(
                "the accepted flags copy %s cannot be read (%s); the flags in force stay",
                self.accepted.file,
                getattr(exc, "message", exc),
                extra={"event": "flags"},
            )
            return
        if document is None or document.sha256 == self.document.sha256:
            return
        changes = flag_changes(self.document, document)
        with self.lock:
            # Held only while the provider reads the new copy: turns wait that long.
            try:
                if self.before_apply is not None:
                    self.before_apply(document)
            except OSError as exc:
                # The provider's copy could not be written: neither it nor the document
                # changed. The next check tries again.
                self._accepted_stamp = _UNSEEN
                logger.error(
                    "the flags of %s (sha256 %s) could not be put in force: %s; the flags "
                    "in force stay",
                    self.accepted.file,
                    document.sha256[:12],
                    exc,
                    extra={"event": "flags"},
                )
                return
            self.document = document
        self.applied_at = self.clock()
        if self.metrics is not None:
            self.metrics.applied_at.set(self.applied_at)
        logger.info(
            "flags in force: %d flag(s), sha256 %s (%s)",
            len(document.flags),
            document.sha256[:12],
            describe_changes(changes),
            extra={"event": "flags"},
        )

    def _publish_validity(self) -> None:
        if self.metrics is not None:
            self.metrics.valid.set(1 if self.valid else 0)


def _sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
