"""Reading the JSON log files of every service: one correlation id's timeline, the last
lines, and following them as they are written (``keel logs trace`` and ``keel logs tail``).

The files are the layout of ``telemetry/log_files.py``: ``<dir>/<category>/<service>.jsonl``
and its rotated ``<service>.<day>.<n>.jsonl``. Lines of different processes are merged
by their timestamps (microseconds, UTC); lines with equal timestamps keep the order of
their files. Anything in a file that is not a JSON object with a timestamp is skipped
(and counted).

>>> scan = read_lines(Path(".keel/logs"), LineFilter(correlation_id="4f2a..."))
>>> [line.service for line in scan.lines]
['replica-1', 'memory', 'tools', 'replica-1', 'router']

Following (``LogFollower``) polls the active files, the way ``tail -F`` does: a file
renamed away by a rotation is read to its end before the new active file is opened,
and a service that starts writing later is picked up. Polling, written here, because
rotation by rename needs the reader to notice a new inode behind the same name, which
the file-watching libraries leave to their callers anyway.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO

from agentkeel.telemetry.log_categories import CATEGORIES
from agentkeel.telemetry.log_files import LogFileName, day_of, parse_log_file_name

__all__ = [
    "LEVELS",
    "LineFilter",
    "LogFile",
    "LogFollower",
    "LogLine",
    "Scan",
    "last_lines",
    "list_log_files",
    "parse_line",
    "read_lines",
]

LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

FileId = tuple[int, int]
"""A file's (device, inode): what stays the same when a rotation renames it."""


@dataclass(frozen=True, slots=True)
class LogFile:
    """One log file: its category folder and what its name says."""

    path: Path
    category: str
    name: LogFileName

    @property
    def service(self) -> str:
        return self.name.service

    def last_day(self) -> date:
        """The UTC day of its newest line at the latest: a rotated file's day, else the day
        of the active file's last write."""
        if self.name.day is not None:
            return self.name.day
        try:
            return day_of(self.path.stat().st_mtime)
        except OSError:
            return date.min


@dataclass(frozen=True, slots=True)
class LogLine:
    """One parsed line: its fields as written, and its time, service and category."""

    at: datetime
    service: str
    category: str
    data: dict[str, Any]

    @property
    def level(self) -> str:
        return str(self.data.get("level", ""))

    @property
    def message(self) -> str:
        return str(self.data.get("message", ""))


@dataclass(frozen=True, slots=True)
class LineFilter:
    """Which lines to keep; every field left ``None`` keeps all.

    ``min_level`` keeps lines at that level or above; ``session_id`` and
    ``correlation_id`` must equal the line's field."""

    services: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    session_id: str | None = None
    correlation_id: str | None = None
    min_level: str | None = None

    def wants_file(self, file: LogFile) -> bool:
        return (self.categories is None or file.category in self.categories) and (
            self.services is None or file.service in self.services
        )

    def needles(self) -> tuple[bytes, ...]:
        """Text every kept line contains as it is (ids are plain ASCII, never escaped in
        JSON), so most lines are skipped before they are parsed."""
        return tuple(value.encode() for value in (self.correlation_id, self.session_id) if value)

    def wants(self, line: LogLine) -> bool:
        data = line.data
        if self.correlation_id is not None and data.get("correlation_id") != self.correlation_id:
            return False
        if self.session_id is not None and data.get("session_id") != self.session_id:
            return False
        if self.min_level is not None:
            return LEVELS.get(line.level, 0) >= LEVELS[self.min_level]
        return True


@dataclass(slots=True)
class Scan:
    """What reading found: the kept lines in time order, how many files were read, and
    how many lines were not JSON log lines."""

    lines: list[LogLine] = field(default_factory=list)
    files: int = 0
    skipped: int = 0


def list_log_files(directory: Path, *, keep: LineFilter | None = None) -> list[LogFile]:
    """The log files under ``directory``: per category, per service, oldest first.

    Only regular files with log file names, inside the five category folders;
    symbolic links are not followed out of the directory."""
    found: list[LogFile] = []
    for category in CATEGORIES:
        folder = directory / category
        if folder.is_symlink() or not folder.is_dir():
            continue
        files = []
        with os.scandir(folder) as entries:
            for entry in entries:
                name = parse_log_file_name(entry.name)
                if name is not None and entry.is_file(follow_symlinks=False):
                    files.append(LogFile(folder / entry.name, category, name))
        files.sort(key=lambda file: (file.service, file.name.order()))
        found += [file for file in files if keep is None or keep.wants_file(file)]
    return found


def read_lines(directory: Path, keep: LineFilter | None = None) -> Scan:
    """Every kept line under ``directory``, in time order."""
    keep = keep or LineFilter()
    scan = Scan()
    for file in list_log_files(directory, keep=keep):
        _read_into(scan, file, keep, limit=None)
    scan.lines.sort(key=_time)
    return scan


def last_lines(
    directory: Path,
    keep: LineFilter | None = None,
    *,
    count: int,
    limits: Mapping[FileId, int] | None = None,
) -> Scan:
    """The newest ``count`` kept lines, in time order.

    Files are read newest day first, and reading stops once the lines in hand
    are all newer than any older file can hold. ``limits`` caps how much of a
    file is read (``LogFollower.limits``: what a follower will read next is not
    shown twice)."""
    keep = keep or LineFilter()
    scan = Scan()
    if count <= 0:
        return scan
    by_day: dict[date, list[LogFile]] = {}
    for file in list_log_files(directory, keep=keep):
        by_day.setdefault(file.last_day(), []).append(file)
    for day in sorted(by_day, reverse=True):
        for file in by_day[day]:
            _read_into(scan, file, keep, limit=_limit_of(file.path, limits))
        scan.lines.sort(key=_time)
        del scan.lines[:-count]
        day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if len(scan.lines) == count and scan.lines[0].at >= day_start:
            break
    return scan


def _limit_of(path: Path, limits: Mapping[FileId, int] | None) -> int | None:
    if not limits:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return limits.get((stat.st_dev, stat.st_ino))


def _read_into(scan: Scan, file: LogFile, keep: LineFilter, *, limit: int | None) -> None:
    try:
        with file.path.open("rb") as stream:
            data = stream.read() if limit is None else stream.read(limit)
    except OSError:
        return
    scan.files += 1
    for line in _parse_lines(data.splitlines(), file.service, file.category, keep, scan):
        scan.lines.append(line)


def _parse_lines(
    raws: Iterable[bytes], service: str, category: str, keep: LineFilter, scan: Scan
) -> Iterator[LogLine]:
    needles = keep.needles()
    for raw in raws:
        if not raw.strip() or any(needle not in raw for needle in needles):
            continue
        line = parse_line(raw, service=service, category=category)
        if line is None:
            scan.skipped += 1
        elif keep.wants(line):
            yield line


def parse_line(raw: bytes, *, service: str, category: str) -> LogLine | None:
    """One file line as a ``LogLine``; ``None`` when it is not a JSON log line."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        at = datetime.fromisoformat(str(data["timestamp"]))
    except (KeyError, ValueError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return LogLine(
        at=at,
        service=str(data.get("service") or service),
        category=str(data.get("category") or category),
        data=data,
    )


def _time(line: LogLine) -> datetime:
    return line.at


class _Followed:
    """One active file being followed: its open stream and the bytes of an unfinished line."""

    __slots__ = ("category", "file_id", "partial", "path", "service", "stream")

    def __init__(self, path: Path, category: str, service: str, *, at_end: bool) -> None:
        self.path = path
        self.category = category
        self.service = service
        self.stream: BinaryIO = path.open("rb")
        stat = os.fstat(self.stream.fileno())
        self.file_id: FileId = (stat.st_dev, stat.st_ino)
        self.partial = b""
        if at_end:
            self.stream.seek(stat.st_size)

    def read(self) -> list[bytes]:
        data = self.stream.read()
        if not data:
            return []
        *complete, self.partial = (self.partial + data).split(b"\n")
        return complete

    def close(self) -> None:
        self.stream.close()


class LogFollower:
    """New lines of the active files as they are written, across rotations.

    >>> follower = LogFollower(Path(".keel/logs"), LineFilter(categories=frozenset({"error"})))
    >>> history = last_lines(directory, keep, count=20, limits=follower.limits())
    >>> while True:
    ...     show(follower.poll()); time.sleep(0.25)
    >>> follower.close()

    Starts at the end of the files that exist now; a file that appears later is read
    from its start, also a rotated one it never saw as active (several rotations
    between two polls). ``poll`` never blocks.
    """

    def __init__(self, directory: Path, keep: LineFilter | None = None) -> None:
        self.directory = directory
        self.keep = keep or LineFilter()
        self._followed: dict[Path, _Followed] = {}
        self._retired: list[_Followed] = []
        self._scan = Scan()
        files = list_log_files(directory, keep=self.keep)
        self._seen_rotated = {file.path for file in files if not file.name.active}
        self._discover(files, at_end=True)

    def limits(self) -> dict[FileId, int]:
        """Where following starts in each file (device and inode → bytes before it)."""
        return {one.file_id: one.stream.tell() for one in self._followed.values()}

    def poll(self) -> list[LogLine]:
        """The kept lines written since the last poll, in time order."""
        files = list_log_files(self.directory, keep=self.keep)
        self._discover(files, at_end=False)
        lines: list[LogLine] = []
        # Renamed away by a rotation: what the writer added before it switched, read in
        # the same poll as the new file, so the merge keeps them in order.
        for old in self._retired:
            lines += self._parse(old, old.read())
            old.close()
        reading = {old.file_id for old in self._retired}
        reading |= {one.file_id for one in self._followed.values()}
        self._retired = []
        for file in files:
            if file.name.active or file.path in self._seen_rotated:
                continue
            self._seen_rotated.add(file.path)
            with contextlib.suppress(OSError):
                skipped = _Followed(file.path, file.category, file.service, at_end=False)
                if skipped.file_id not in reading:
                    # Filled and rotated between two polls: never seen as the active file.
                    lines += self._parse(skipped, [*skipped.read(), skipped.partial])
                skipped.close()
        for one in self._followed.values():
            lines += self._parse(one, one.read())
        lines.sort(key=_time)
        return lines

    def close(self) -> None:
        for one in [*self._followed.values(), *self._retired]:
            one.close()
        self._followed.clear()
        self._retired = []

    def _parse(self, one: _Followed, complete: list[bytes]) -> list[LogLine]:
        return list(_parse_lines(complete, one.service, one.category, self.keep, self._scan))

    def _discover(self, files: list[LogFile], *, at_end: bool) -> None:
        for file in files:
            if not file.name.active:
                continue
            current = self._followed.get(file.path)
            if current is not None:
                try:
                    stat = file.path.stat()
                except OSError:
                    continue
                if (stat.st_dev, stat.st_ino) == current.file_id:
                    if stat.st_size < current.stream.tell():
                        current.stream.seek(0)  # truncated in place: start again
                    continue
                # Rotated: finish the old file, then read the new one from its start.
                self._retired.append(current)
                del self._followed[file.path]
            with contextlib.suppress(OSError):
                self._followed[file.path] = _Followed(
                    file.path, file.category, file.service, at_end=at_end
                )
