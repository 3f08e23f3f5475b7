"""The tamper-evident audit file: ``<data_dir>/audit/audit.jsonl``, one hash-chained record a line.

Every record holds ``seq``, ``ts``, ``action``, ``actor`` (a credential's name and
fingerprint, never the secret), ``outcome``, ``source`` (service, host, pid and
the caller's remote address where known), ``correlation_id``, ``details``,
``prev`` (the hash of the record before; 64 zeros for the first) and ``hash``
(SHA-256 over the canonical JSON of the record without ``hash``). Changing,
removing, inserting or reordering a record breaks the chain
(``audit_verify.verify_audit_file``).

Replicas, the router, the memory and tool servers and the CLI append to one
file: each append takes ``fcntl.flock`` on it, reads the last record's hash
under the lock, writes one line and fsyncs before releasing the lock.

Records come from :func:`agentkeel.telemetry.audit.audit` through
``AuditFileHandler`` on the ``agentkeel.audit`` logger; each process installs
it once at start (``install_audit_file``). A record that cannot be written is
logged at ERROR, counted in ``agent_audit_write_failures_total`` and, by
default (fail-closed), raised as ``AuditUnavailable`` out of ``audit()``, so the
administrative action that asked for it answers 503 instead of succeeding
unrecorded.

>>> handler = install_audit_file(Path(".keel"), service="cli")
>>> audit("rollout.abort", actor="cli:ana")   # now also a line in .keel/audit/audit.jsonl
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from agentkeel.errors import AuditUnavailable, ConfigError
from agentkeel.storage.canonical import GENESIS_HASH, canonical_json
from agentkeel.telemetry.audit import AUDIT_LOGGER, AUDIT_PAYLOAD
from agentkeel.telemetry.correlation import get_correlation_id

__all__ = [
    "AUDIT_FILE",
    "GENESIS_HASH",
    "AuditFile",
    "AuditFileHandler",
    "audit_file_path",
    "install_audit_file",
    "record_bytes",
    "record_hash",
    "remove_audit_file",
]

AUDIT_FILE = Path("audit") / "audit.jsonl"
"""Where the audit file lives, relative to the data directory."""

_TAIL_CHUNK = 64 * 1024

logger = logging.getLogger("agentkeel.telemetry.audit_file")


def audit_file_path(data_dir: Path) -> Path:
    """``<data_dir>/audit/audit.jsonl``."""
    return data_dir / AUDIT_FILE


def record_bytes(record: Mapping[str, Any]) -> bytes:
    """The one byte form a record is hashed and stored in: canonical JSON in UTF-8."""
    return canonical_json(record).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the canonical JSON of ``record`` without its ``hash`` field."""
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(record_bytes(body)).hexdigest()


def _iso(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _plain(value: Any) -> Any:
    # What json would make of it, so the hash a reader recomputes is the one written.
    return json.loads(json.dumps(value, default=str, allow_nan=False))


class AuditFile:
    """Appends hash-chained records to one JSONL file, safely across processes.

    >>> AuditFile(Path(".keel/audit/audit.jsonl")).append(action="fence.up", actor="ops")
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        # flock excludes other processes; threads of this one share the descriptor's lock.
        self._lock = threading.Lock()

    def check_writable(self) -> None:
        """Create the directory and file now; ``ConfigError`` naming the path if that fails,
        so a service that could not audit stops at start instead of at its first action."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.close(fd)
        except OSError as exc:
            raise ConfigError(
                f"The audit file '{self.path}' cannot be written ({exc.strerror or exc}). "
                "Make the data directory writable by this process, or point data_dir elsewhere."
            ) from exc

    def append(
        self,
        *,
        action: str,
        actor: str,
        outcome: str = "ok",
        source: Mapping[str, Any] | None = None,
        correlation_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write one record after the current last one; returns it (with ``seq`` and
        ``hash``). Raises ``OSError`` or ``ValueError`` when it cannot be written."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    last, cut_off = _last_record(fd, self.path)
                    record: dict[str, Any] = {
                        "seq": (last["seq"] + 1) if last else 1,
                        "ts": _iso(self._clock()),
                        "action": action,
                        "actor": actor,
                        "outcome": outcome,
                        "source": _plain(dict(source or {})),
                        "correlation_id": correlation_id,
                        "details": _plain(dict(details or {})),
                        "prev": last["hash"] if last else GENESIS_HASH,
                    }
                    record["hash"] = record_hash(record)
                    # A line cut off by a crash stays as it is (verify reports it); the
                    # new record starts on a line of its own.
                    line = (b"\n" if cut_off else b"") + record_bytes(record) + b"\n"
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        return record


def _last_record(fd: int, path: Path) -> tuple[dict[str, Any] | None, bool]:
    """The last complete record and whether the file ends in a cut-off line."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None, False
    end = size
    tail = b""
    while True:
        start = max(0, end - _TAIL_CHUNK)
        tail = os.pread(fd, end - start, start) + tail
        end = start
        complete = tail[: tail.rfind(b"\n")] if b"\n" in tail else b""
        # Enough read once the last complete line has its start (a newline, or the file's).
        if (b"\n" in complete) or start == 0:
            break
    cut_off = not tail.endswith(b"\n")
    if b"\n" not in tail:
        return None, cut_off
    lines = tail[: tail.rfind(b"\n")].split(b"\n")
    for raw in reversed(lines):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            int(record["seq"])
            str(record["hash"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"the last record of '{path}' is not a valid audit record; run "
                "'keel audit verify' and keep the damaged file for inspection before moving it"
            ) from exc
        return record, cut_off
    return None, cut_off


class AuditFileHandler(logging.Handler):
    """Writes every ``audit()`` record to an ``AuditFile``.

    ``fail_closed`` (the default): a record that cannot be written raises
    ``AuditUnavailable`` out of ``audit()`` after it is logged and counted.

    >>> logging.getLogger(AUDIT_LOGGER).addHandler(
    ...     AuditFileHandler(AuditFile(path), service="router"))
    """

    def __init__(
        self,
        file: AuditFile,
        *,
        service: str,
        registry: CollectorRegistry | None = None,
        fail_closed: bool = True,
    ) -> None:
        super().__init__(level=logging.INFO)
        self.file = file
        self.service = service
        self.fail_closed = fail_closed
        self.failures = Counter(
            "agent_audit_write_failures_total",
            "Audit records that could not be written to the audit file.",
            registry=registry if registry is not None else CollectorRegistry(),
        )
        self._where = {"service": service, "host": socket.gethostname(), "pid": os.getpid()}

    def emit(self, record: logging.LogRecord) -> None:
        payload: dict[str, Any] | None = getattr(record, AUDIT_PAYLOAD, None)
        if payload is None:
            # A line on the audit logger not written by audit(): kept as its message.
            payload = {"action": "log", "actor": "unknown", "outcome": "ok", "details": {}}
            payload["details"] = {"message": record.getMessage()}
        details = dict(payload["details"])
        source = {**self._where, "remote": details.pop("source", None)}
        # A caller outside the correlation contextvar's reach (the router) passes it.
        correlation = details.pop("correlation_id", None) or get_correlation_id()
        try:
            self.file.append(
                action=payload["action"],
                actor=payload["actor"],
                outcome=payload["outcome"],
                source=source,
                correlation_id=correlation,
                details=details,
            )
        except (OSError, ValueError, TypeError) as exc:
            self.failures.inc()
            logger.error(
                "AUDIT RECORD NOT WRITTEN: %s by %s (%s) could not be appended to %s: %s. "
                "Fix the audit file (disk space, permissions; 'keel audit verify'); until then "
                "administrative actions are refused",
                payload["action"],
                payload["actor"],
                payload["outcome"],
                self.file.path,
                exc,
                extra={"event": "audit_failure", "reason": type(exc).__name__},
            )
            if self.fail_closed:
                raise AuditUnavailable(
                    f"The audit record for '{payload['action']}' could not be written to "
                    f"'{self.file.path}' ({exc}); the action is refused or, when it already "
                    "ran, is unrecorded. Free disk space or fix the file's permissions, "
                    "then retry.",
                    retry_after=5,
                ) from exc


def install_audit_file(
    data_dir: Path,
    *,
    service: str,
    registry: CollectorRegistry | None = None,
    fail_closed: bool = True,
    clock: Callable[[], float] = time.time,
) -> AuditFileHandler:
    """Make every ``audit()`` call of this process also land in ``<data_dir>/audit/audit.jsonl``.

    Replaces a handler installed before (one per process); checks at once that the
    file can be written (``ConfigError`` otherwise). ``registry`` gets the
    ``agent_audit_write_failures_total`` counter.
    """
    file = AuditFile(audit_file_path(data_dir), clock=clock)
    file.check_writable()
    handler = AuditFileHandler(file, service=service, registry=registry, fail_closed=fail_closed)
    remove_audit_file()
    audit_logger = logging.getLogger(AUDIT_LOGGER)
    audit_logger.addHandler(handler)
    # Audit records are written whatever the service's log level.
    audit_logger.setLevel(logging.INFO)
    return handler


def remove_audit_file() -> None:
    """Detach the audit file handler (tests; a process normally keeps it to the end)."""
    audit_logger = logging.getLogger(AUDIT_LOGGER)
    for old in list(audit_logger.handlers):
        if isinstance(old, AuditFileHandler):
            audit_logger.removeHandler(old)
