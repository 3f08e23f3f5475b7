"""The JSON log files: one folder per category, one active file per service, rotated by
size and by UTC day into names that carry the day.

    <dir>/<category>/<service>.jsonl                 the active file (one writer: the service)
    <dir>/<category>/<service>.<YYYY-MM-DD>.<n>.jsonl rotated: every line is from that UTC day

A file is rotated when the UTC day of the next line differs from its own, and
when the next line would take it past ``max_bytes``; ``n`` counts the files
rotated that day (1, 2, ...). So ``keel logs prune`` tells a rotated file's age
from its name without reading it (an active file's from its last write), and
readers order a service's files by (day, n), the active file last.

``CategoryFileHandler`` does the writing. It runs behind a ``QueueHandler``
(``telemetry/logging.py``), so a slow disk never stalls a service's event loop;
each line is one unbuffered ``write`` of a whole line, so a reader following
the file never sees half a line from a live writer.

Before each line the writer checks that its path still names the file it has
open (a ``stat`` against the inode it opened, as the standard library's
``WatchedFileHandler`` does). ``keel logs prune`` moves away an active file
whose last write is past its retention, and an operator may delete one; the
writer then starts a new file at the path instead of writing into one nobody
can find.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import BinaryIO

from agentkeel.telemetry.log_categories import CATEGORIES, category_of

__all__ = [
    "LOG_SUFFIX",
    "CategoryFileHandler",
    "LogFileName",
    "active_log_path",
    "day_of",
    "next_rotated_path",
    "parse_log_file_name",
]

LOG_SUFFIX = ".jsonl"
_SECONDS_PER_DAY = 86_400
_ROTATED = re.compile(r"^(?P<service>.+)\.(?P<day>\d{4}-\d{2}-\d{2})\.(?P<index>\d+)\.jsonl$")
_FILE_MODE = 0o640
_DIR_MODE = 0o750
_EPOCH = date(1970, 1, 1)


def day_of(timestamp: float) -> date:
    """The UTC day of a Unix time."""
    return datetime.fromtimestamp(timestamp, UTC).date()


@dataclass(frozen=True, slots=True)
class LogFileName:
    """What a log file's name says: its service and, for a rotated file, its day and
    counter (``day`` is ``None`` for the active file)."""

    service: str
    day: date | None = None
    index: int = 0

    @property
    def active(self) -> bool:
        return self.day is None

    @property
    def name(self) -> str:
        if self.day is None:
            return f"{self.service}{LOG_SUFFIX}"
        return f"{self.service}.{self.day.isoformat()}.{self.index}{LOG_SUFFIX}"

    def order(self) -> tuple[date, int]:
        """Oldest first: rotated files by day and counter, then the active file."""
        return (self.day, self.index) if self.day is not None else (date.max, 0)


def parse_log_file_name(name: str) -> LogFileName | None:
    """The service, day and counter of a log file's name; ``None`` for anything else."""
    if not name.endswith(LOG_SUFFIX) or name.startswith("."):
        return None
    rotated = _ROTATED.match(name)
    if rotated is not None:
        try:
            day = date.fromisoformat(rotated["day"])
        except ValueError:
            return None
        return LogFileName(rotated["service"], day, int(rotated["index"]))
    service = name[: -len(LOG_SUFFIX)]
    return LogFileName(service) if service else None


def active_log_path(directory: Path, category: str, service: str) -> Path:
    return directory / category / LogFileName(service).name


def next_rotated_path(folder: Path, service: str, day: date) -> Path:
    """The name a file of ``service`` with lines of ``day`` is rotated to: the next
    counter after the files of that day already in ``folder``."""
    taken = 0
    for name in os.listdir(folder):
        parsed = parse_log_file_name(name)
        if parsed is not None and parsed.service == service and parsed.day == day:
            taken = max(taken, parsed.index)
    return folder / LogFileName(service, day, taken + 1).name


class _ActiveFile:
    """One category's active file of this service, and the day its lines are from."""

    __slots__ = ("day", "file_id", "folder", "path", "service", "size", "stream")

    def __init__(self, folder: Path, service: str) -> None:
        self.folder = folder
        self.service = service
        self.path = folder / LogFileName(service).name
        self.stream: BinaryIO | None = None
        self.file_id = (0, 0)
        """(device, inode) of the open file."""
        self.size = 0
        self.day = -1
        """Days since 1970-01-01 (UTC) of the lines in the file; -1 while it is empty."""

    def write(self, data: bytes, day: int, max_bytes: int) -> None:
        if self.stream is None or not self._still_at_path():
            self._open()
        if self.size and (day != self.day or self.size + len(data) > max_bytes):
            self._rotate()
        assert self.stream is not None
        self.stream.write(data)
        self.size += len(data)
        self.day = day

    def _still_at_path(self) -> bool:
        """Whether the path still names the open file (prune renames an old one away)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (stat.st_dev, stat.st_ino) == self.file_id

    def _open(self) -> None:
        self.close()
        self.folder.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, _FILE_MODE)
        self.stream = os.fdopen(fd, "ab", buffering=0)
        stat = os.fstat(fd)
        self.file_id = (stat.st_dev, stat.st_ino)
        self.size = stat.st_size
        # A file left by an earlier run holds lines up to its last write's day.
        self.day = int(stat.st_mtime // _SECONDS_PER_DAY) if self.size else -1

    def _rotate(self) -> None:
        self.close()
        day = date.fromordinal(_EPOCH.toordinal() + self.day)
        # Gone already when prune moved it away since the check in ``write``.
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.path, next_rotated_path(self.folder, self.service, day))
        self._open()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


class CategoryFileHandler(logging.Handler):
    """Writes each record to ``<directory>/<category>/<service>.jsonl`` by its category,
    rotating by size (``max_bytes``) and by the UTC day of the record.

    The formatted record is the line (a ``JsonFormatter``, or the text a
    ``QueueHandler`` already formatted). One writer per file: every service name
    writing into one directory must be distinct.

    >>> handler = CategoryFileHandler(directory=Path(".keel/logs"), service="memory",
    ...                               max_bytes=64 * 2**20)
    """

    def __init__(self, *, directory: Path, service: str, max_bytes: int) -> None:
        super().__init__()
        self.directory = directory
        self.service = service
        self.max_bytes = max_bytes
        self._files = {
            category: _ActiveFile(directory / category, service) for category in CATEGORIES
        }

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            day = int(record.created // _SECONDS_PER_DAY)
            self._files[category_of(record).value].write(data, day, self.max_bytes)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.acquire()
        try:
            for file in self._files.values():
                file.close()
        finally:
            self.release()
        super().close()
