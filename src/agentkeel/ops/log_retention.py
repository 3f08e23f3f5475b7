"""Log retention: ``keel logs prune`` and the daily prune ``keel up`` runs.

Per category, a file goes once every line in it is older than that category's
``logging.retention_days``: when the end of the UTC day of its newest line is at
least that many days ago.

- A rotated file (``<service>.<day>.<n>.jsonl``) has that day in its name, so
  nothing is read.
- An active file (``<service>.jsonl``) has it in its last write (mtime). A writer
  rotates its file only when it logs again, so without this the files of a replica
  that is gone (``agent-v1-1``) and of a quiet category would stay for ever. Such
  a file is renamed into its rotated form first and deleted by that name; a writer
  still running notices its path names another file (or none) before its next line
  and starts a new one (``telemetry/log_files.py``). If a line lands in the renamed
  file between the check and the rename, the file is kept, named by its new last day.
- Each service's stdout and stderr file (``<service>.log`` in the output directory,
  ``LoggingSettings.output_directory``; the supervisor's and ``keel up``'s own) holds
  its warnings, errors and crashes, so it is kept as long as the ``error`` category,
  by its last write. A child still running holds it open for appending, so a file
  past retention is emptied in place (the child's next line lands at its start), and
  deleted once it has stayed empty that long.

Pruning never touches another category's folder, a name it does not recognise, a
symbolic link, or anything outside the log directory. The hash-chained audit
file (``<data_dir>/audit/audit.jsonl``) is not a log file and is never pruned:
``keel audit verify`` needs all of it.

>>> report = prune_logs(Path(".keel/logs"), settings.logging, now=time.time())
>>> [(c.category, c.deleted_files) for c in report.categories]
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from agentkeel.config.logs import Category, LoggingSettings
from agentkeel.ops.log_reader import LineFilter, LogFile, list_log_files
from agentkeel.telemetry.audit import audit
from agentkeel.telemetry.log_files import day_of, next_rotated_path

__all__ = ["OUTPUT_SUFFIX", "CategoryPrune", "LogPruner", "PruneReport", "prune_logs"]

logger = logging.getLogger("agentkeel.ops.log_retention")

OUTPUT_SUFFIX = ".log"
"""A service's stdout and stderr file: ``<output directory>/<service>.log``."""
OUTPUT = "stdout"
"""The name the stdout files go by in a report."""


@dataclass(slots=True)
class CategoryPrune:
    """One category's outcome (or the stdout files'): what went (or would go) and what
    stays."""

    category: str
    retention_days: int
    deleted_files: int = 0
    deleted_bytes: int = 0
    kept_files: int = 0
    kept_bytes: int = 0
    oldest_kept: date | None = None
    """The day of the oldest file kept (``None``: none)."""
    deleted: list[str] = field(default_factory=list)
    """The deleted (for a stdout file: emptied or deleted) files' paths, relative to the
    directory they are in."""

    def to_dict(self) -> dict[str, object]:
        return {
            "category": self.category,
            "retention_days": self.retention_days,
            "deleted_files": self.deleted_files,
            "deleted_bytes": self.deleted_bytes,
            "kept_files": self.kept_files,
            "kept_bytes": self.kept_bytes,
            "oldest_kept": self.oldest_kept.isoformat() if self.oldest_kept else None,
            "deleted": self.deleted,
        }

    def count_deleted(self, path: Path, size: int, under: Path) -> None:
        self.deleted_files += 1
        self.deleted_bytes += size
        self.deleted.append(str(path.relative_to(under)))

    def count_kept(self, size: int, day: date) -> None:
        self.kept_files += 1
        self.kept_bytes += size
        if self.oldest_kept is None or day < self.oldest_kept:
            self.oldest_kept = day


@dataclass(slots=True)
class PruneReport:
    directory: Path
    dry_run: bool
    categories: list[CategoryPrune]
    output: CategoryPrune | None = None
    """The stdout files (``<service>.log``); ``None`` when the error category was left out."""

    @property
    def deleted_files(self) -> int:
        return sum(result.deleted_files for result in self.results())

    @property
    def deleted_bytes(self) -> int:
        return sum(result.deleted_bytes for result in self.results())

    def results(self) -> list[CategoryPrune]:
        """The categories' outcomes, then the stdout files'."""
        return [*self.categories, *([self.output] if self.output else [])]

    def to_dict(self) -> dict[str, object]:
        return {
            "directory": str(self.directory),
            "dry_run": self.dry_run,
            "deleted_files": self.deleted_files,
            "deleted_bytes": self.deleted_bytes,
            "categories": [category.to_dict() for category in self.categories],
            OUTPUT: self.output.to_dict() if self.output else None,
        }


def prune_logs(
    directory: Path,
    settings: LoggingSettings,
    *,
    now: float,
    dry_run: bool = False,
    only: Collection[Category] | None = None,
    output_directory: Path | None = None,
) -> PruneReport:
    """Delete (or, ``dry_run``, only list) each category's files older than its
    ``settings.retention_days``, as of the Unix time ``now``; ``only`` limits it to those
    categories. The stdout files in ``output_directory`` (default: ``directory``) go
    with the error category. A missing directory prunes nothing."""
    today = datetime.fromtimestamp(now, UTC)
    wanted = [category for category in Category if only is None or category in only]
    results = {
        category.value: CategoryPrune(category.value, settings.retention_days[category.value])
        for category in wanted
    }
    for file in list_log_files(directory, keep=LineFilter(categories=frozenset(results))):
        result = results[file.category]
        try:
            stat = file.path.stat()
        except OSError:
            continue
        day = file.name.day or day_of(stat.st_mtime)
        if not _expired(day, result.retention_days, today):
            result.count_kept(stat.st_size, day)
            continue
        if not dry_run:
            if file.name.active:
                kept = _retire_active(file, stat, result.retention_days, today)
                if kept is not None:
                    result.count_kept(*kept)
                    continue
            elif not _unlink(file.path):
                continue
        result.count_deleted(file.path, stat.st_size, directory)
    output = None
    if Category.ERROR in wanted:
        output = CategoryPrune(OUTPUT, settings.retention_days[Category.ERROR.value])
        _prune_output(output_directory or directory, output, today, dry_run=dry_run)
    return PruneReport(
        directory=directory, dry_run=dry_run, categories=list(results.values()), output=output
    )


def _expired(day: date, retention_days: int, now: datetime) -> bool:
    """Every line of ``day`` (it ends at the next midnight, UTC) is older than the
    retention."""
    day_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return now - day_end >= timedelta(days=retention_days)


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _retire_active(
    file: LogFile, before: os.stat_result, retention_days: int, now: datetime
) -> tuple[int, date] | None:
    """Move an active file past retention out of its writer's way and delete it;
    ``None`` when it went, else the size and day of what is kept (a line came in)."""
    folder = file.path.parent
    moved = next_rotated_path(folder, file.service, day_of(before.st_mtime))
    try:
        os.rename(file.path, moved)
        after = moved.stat()
    except FileNotFoundError:  # its writer rotated it first: the next prune judges that
        return None
    day = day_of(after.st_mtime)
    unchanged = (after.st_dev, after.st_ino, after.st_mtime_ns) == (
        before.st_dev,
        before.st_ino,
        before.st_mtime_ns,
    )
    if unchanged or _expired(day, retention_days, now):
        _unlink(moved)
        return None
    # Written to since the first look: keep it, named by the day of its newest line.
    os.rename(moved, next_rotated_path(folder, file.service, day))
    return after.st_size, day


def _prune_output(directory: Path, result: CategoryPrune, now: datetime, *, dry_run: bool) -> None:
    """Empty (then, once empty that long, delete) the stdout files past retention."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        if not entry.name.endswith(OUTPUT_SUFFIX) or not entry.is_file(follow_symlinks=False):
            continue
        path = directory / entry.name
        try:
            stat = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        day = day_of(stat.st_mtime)
        if not _expired(day, result.retention_days, now):
            result.count_kept(stat.st_size, day)
            continue
        if not dry_run:
            try:
                # A child still running appends to it (O_APPEND): its next line
                # starts the emptied file; a file left empty that long goes.
                if stat.st_size:
                    os.truncate(path, 0)
                else:
                    os.unlink(path)
            except FileNotFoundError:
                continue
        result.count_deleted(path, stat.st_size, directory)


Sleep = Callable[[float], Awaitable[None]]


class LogPruner:
    """The prune ``keel up`` runs at start and every ``interval_s`` while it runs.

    Each prune that deleted something writes one audit record (``logs.prune``,
    actor ``keel-up``) and one log line; a prune that found nothing to delete
    writes neither. A failure is logged, and the next interval tries again.

    >>> pruner = LogPruner(directory=logs, settings=settings.logging, interval_s=24 * 3600,
    ...                    clock=time.time, output_directory=data / "logs")
    >>> pruner.prune()                      # at start
    >>> task = asyncio.create_task(pruner.run())
    """

    def __init__(
        self,
        *,
        directory: Path,
        settings: LoggingSettings,
        interval_s: float,
        clock: Callable[[], float],
        sleep: Sleep = asyncio.sleep,
        actor: str = "keel-up",
        output_directory: Path | None = None,
    ) -> None:
        self.directory = directory
        self.settings = settings
        self.interval_s = interval_s
        self.output_directory = output_directory
        self._clock = clock
        self._sleep = sleep
        self._actor = actor

    def prune(self) -> PruneReport:
        report = prune_logs(
            self.directory,
            self.settings,
            now=self._clock(),
            output_directory=self.output_directory,
        )
        if report.deleted_files:
            audit(
                "logs.prune",
                actor=self._actor,
                directory=str(self.directory),
                deleted_files=report.deleted_files,
                deleted_bytes=report.deleted_bytes,
            )
            logger.info(
                "log retention: deleted %d file(s), %d bytes, in %s",
                report.deleted_files,
                report.deleted_bytes,
                self.directory,
                extra={"event": "log_retention"},
            )
        return report

    async def run(self) -> None:
        """Prune every ``interval_s`` until cancelled (the first one after one interval)."""
        while True:
            await self._sleep(self.interval_s)
            try:
                await asyncio.to_thread(self.prune)
            except Exception:
                logger.exception("log retention: the prune of %s failed", self.directory)
