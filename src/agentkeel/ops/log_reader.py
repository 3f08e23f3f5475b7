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

The latest lines (``last_lines``) are read backwards from the end of each file, so
``keel logs tail`` costs the lines it prints, not the size of the files.

Following (``LogFollower``) polls the files, the way ``tail -F`` does, and knows each
by its inode and the bytes of it already read: a file renamed away by a rotation goes
on from there under its new name, whenever the rename falls, and a service that
starts writing later is picked up. Polling, written here, because rotation by rename
needs the reader to notice a new inode behind the same name, which the file-watching
libraries leave to their callers anyway.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import os
from collections.abc import Generator, Iterable, Iterator, Mapping
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

_BLOCK_BYTES = 64 * 1024
"""How much of a file ``last_lines`` reads at a time, from its end."""
_LISTINGS = 4
"""How often ``LogFollower`` lists the files, at most, at its start and in one poll:
again while a rotation renamed a file it had listed."""


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
    ``correlation_id`` must equal the line's field; ``since`` keeps lines from
    that time on, and files whose newest line is from an earlier UTC day are not
    read at all (a rotated file's day is in its name, an active file's is its
    last write's)."""

    services: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    session_id: str | None = None
    correlation_id: str | None = None
    min_level: str | None = None
    since: datetime | None = None

    def wants_file(self, file: LogFile) -> bool:
        return (
            (self.categories is None or file.category in self.categories)
            and (self.services is None or file.service in self.services)
            and (self.since is None or file.last_day() >= self.since.astimezone(UTC).date())
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
        if self.since is not None and line.at < self.since:
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
    """Every kept line under ``directory``, in time order (``keep.since`` leaves older
    files unread)."""
    keep = keep or LineFilter()
    scan = Scan()
    for file in list_log_files(directory, keep=keep):
        try:
            data = file.path.read_bytes()
        except OSError:
            continue
        scan.files += 1
        scan.lines += _parse_lines(data.splitlines(), file.service, file.category, keep, scan)
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

    Each service's files in each category are read backwards, newest file first,
    in blocks, and merged by time; reading stops at the ``count``-th line, so a
    large file costs only its last blocks. ``limits`` (``LogFollower.limits``)
    says how many bytes of each file (device and inode) to read: what a follower
    reads next is not shown twice, and a file it does not know is left to it."""
    keep = keep or LineFilter()
    scan = Scan()
    if count <= 0:
        return scan
    files = list_log_files(directory, keep=keep)
    streams = [
        _newest_first(list(group)[::-1], keep, scan, limits)
        for _, group in itertools.groupby(files, key=lambda file: (file.category, file.service))
    ]
    try:
        newest = list(itertools.islice(heapq.merge(*streams, key=_time, reverse=True), count))
    finally:
        for stream in streams:
            stream.close()
    # Reversed first, so lines of one file with equal timestamps keep their order.
    scan.lines = sorted(reversed(newest), key=_time)
    return scan


def _newest_first(
    files: list[LogFile], keep: LineFilter, scan: Scan, limits: Mapping[FileId, int] | None
) -> Generator[LogLine, None, None]:
    """The kept lines of one service's files (given newest first), newest first."""
    for file in files:
        try:
            stream = file.path.open("rb")
        except OSError:
            continue
        with stream:
            stat = os.fstat(stream.fileno())
            end = stat.st_size
            if limits is not None:
                limit = limits.get((stat.st_dev, stat.st_ino))
                if limit is None:
                    continue
                end = min(end, limit)
            scan.files += 1
            raws = _lines_backwards(stream, end)
            yield from _parse_lines(raws, file.service, file.category, keep, scan)


def _lines_backwards(stream: BinaryIO, end: int) -> Iterator[bytes]:
    """The lines in the first ``end`` bytes of ``stream``, the last first.

    Written here: file-read-backwards, the library for this, reads text from a
    file's very end, and this needs bytes up to an offset."""
    position, head = end, b""
    while position > 0:
        start = max(0, position - _BLOCK_BYTES)
        stream.seek(start)
        block = stream.read(position - start)
        position = start
        # The first piece may be the end of a line that starts in an earlier block.
        head, *complete = (block + head).split(b"\n")
        yield from reversed(complete)
    yield head


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
    """One file being read as it grows: its stream and the bytes of an unfinished line."""

    __slots__ = ("category", "partial", "service", "stream")

    def __init__(self, stream: BinaryIO, category: str, service: str) -> None:
        self.stream = stream
        self.category = category
        self.service = service
        self.partial = b""

    @property
    def consumed(self) -> int:
        """Bytes read as whole lines: where reading this file again would go on."""
        return self.stream.tell() - len(self.partial)

    def read(self, *, final: bool) -> list[bytes]:
        """The lines completed since the last read; ``final``: the file is done growing,
        so an unfinished last line counts too."""
        *complete, self.partial = (self.partial + self.stream.read()).split(b"\n")
        if final and self.partial:
            complete.append(self.partial)
            self.partial = b""
        return complete

    def restart(self) -> None:
        self.stream.seek(0)
        self.partial = b""

    def close(self) -> None:
        self.stream.close()


class LogFollower:
    """New lines of the log files as they are written, across rotations.

    >>> follower = LogFollower(Path(".keel/logs"), LineFilter(categories=frozenset({"error"})))
    >>> history = last_lines(directory, keep, count=20, limits=follower.limits())
    >>> while True:
    ...     show(follower.poll()); time.sleep(0.25)
    >>> follower.close()

    Every file is known by its device and inode, with the bytes of it already
    consumed: those that exist when it starts, at their end; a file that turns
    up later, at its start. A rotation renames a file, so under its rotated name
    it goes on from where it was, however the rename falls between two looks at
    the directory; a rotated file is read to its end once and not again (its
    writer has moved on). ``poll`` never blocks.
    """

    def __init__(self, directory: Path, keep: LineFilter | None = None) -> None:
        self.directory = directory
        self.keep = keep or LineFilter()
        self._scan = Scan()
        self._consumed: dict[FileId, int] = {}
        """Every file met (device, inode): the bytes of it already read, or there at the
        start."""
        self._open: dict[FileId, _Followed] = {}
        """The files being read as they grow: the active files, by inode."""
        self._finished: set[Path] = set()
        """Rotated files read to their end."""
        self._note_start()

    def _note_start(self) -> None:
        # Listed again until no new name turns up: a file renamed by a rotation while
        # this looks is noted under its new name too, so none is read from its start.
        noted: set[Path] = set()
        for _ in range(_LISTINGS):
            new = [f for f in list_log_files(self.directory, keep=self.keep) if f.path not in noted]
            if not new:
                return
            for file in new:
                with contextlib.suppress(OSError):
                    if file.name.active:
                        self._open_file(file, None)
                    else:
                        stat = file.path.stat()
                        self._consumed.setdefault((stat.st_dev, stat.st_ino), stat.st_size)
                    noted.add(file.path)

    def limits(self) -> dict[FileId, int]:
        """Where following starts in each file it knows (device and inode → bytes before
        it); a file not in it is read from its start by ``poll``."""
        return dict(self._consumed)

    def poll(self) -> list[LogLine]:
        """The kept lines written since the last poll, in time order."""
        lines: list[LogLine] = []
        for _ in range(_LISTINGS):
            listed: set[FileId] = set()
            for file in list_log_files(self.directory, keep=self.keep):
                if file.path not in self._finished:
                    lines += self._read(file, listed)
            # An open file under no listed name was renamed by a rotation since the
            # listing, or deleted: its whole lines now, then a new listing finds what
            # else the rotation made, so this poll's lines are in order.
            moved = [file_id for file_id in self._open if file_id not in listed]
            for file_id in moved:
                one = self._open.pop(file_id)
                lines += self._parse(one, one.read(final=False))
                self._consumed[file_id] = one.consumed
                one.close()
            if not moved:
                break
        lines.sort(key=_time)
        return lines

    def close(self) -> None:
        for one in self._open.values():
            one.close()
        self._open.clear()

    def _read(self, file: LogFile, listed: set[FileId]) -> list[LogLine]:
        final = not file.name.active  # a rotated file no longer grows
        try:
            stat = file.path.stat()
        except OSError:
            return []
        file_id = (stat.st_dev, stat.st_ino)
        listed.add(file_id)
        one = self._open.get(file_id)
        if one is None:
            if final and stat.st_size <= self._consumed.get(file_id, 0):
                self._finished.add(file.path)
                return []
            try:
                one = self._open_file(file, file_id)
            except OSError:
                return []
            if one is None:
                return []
        elif stat.st_size < one.consumed:
            one.restart()  # truncated in place: start again
        complete = one.read(final=final)
        self._consumed[file_id] = one.consumed
        if final:
            del self._open[file_id]
            one.close()
            self._finished.add(file.path)
        return self._parse(one, complete)

    def _open_file(self, file: LogFile, expected: FileId | None) -> _Followed | None:
        """Open ``file`` where reading it goes on (from its start when it is new, at its
        end at the start); ``None`` when its name no longer names the ``expected`` file."""
        stream = file.path.open("rb")
        stat = os.fstat(stream.fileno())
        file_id = (stat.st_dev, stat.st_ino)
        if (expected is not None and file_id != expected) or file_id in self._open:
            stream.close()  # replaced since its stat: the next listing has it
            return None
        # At the start what a file holds is history; a file met later is read whole.
        offset = self._consumed.setdefault(file_id, 0 if expected else stat.st_size)
        stream.seek(offset)
        self._open[file_id] = one = _Followed(stream, file.category, file.service)
        return one

    def _parse(self, one: _Followed, complete: list[bytes]) -> list[LogLine]:
        return list(_parse_lines(complete, one.service, one.category, self.keep, self._scan))
