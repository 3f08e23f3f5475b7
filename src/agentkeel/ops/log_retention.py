"""Log retention: ``keel logs prune`` and the daily prune ``keel up`` runs.

Per category, a rotated file (``<service>.<day>.<n>.jsonl``) is deleted once
every line in it is older than that category's ``logging.retention_days``:
when the end of its UTC day is at least that many days ago. Its age comes
from its name, so nothing is read. Pruning never touches another category's
folder, an active file (``<service>.jsonl``), a name it does not recognise,
a symbolic link, or anything outside the log directory. The hash-chained audit
file (``<data_dir>/audit/audit.jsonl``) is not a log file and is never pruned:
``keel audit verify`` needs all of it.

>>> report = prune_logs(Path(".keel/logs"), {"reasoning_trace": 7, ...}, now=time.time())
>>> [(c.category, c.deleted_files) for c in report.categories]
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from agentkeel.config.logs import DEFAULT_RETENTION_DAYS
from agentkeel.errors import ConfigError
from agentkeel.ops.log_reader import LineFilter, list_log_files
from agentkeel.telemetry.audit import audit
from agentkeel.telemetry.log_categories import CATEGORIES

__all__ = ["CategoryPrune", "LogPruner", "PruneReport", "prune_logs"]

logger = logging.getLogger("agentkeel.ops.log_retention")


@dataclass(slots=True)
class CategoryPrune:
    """One category's outcome: what went (or would go) and what stays."""

    category: str
    retention_days: int
    deleted_files: int = 0
    deleted_bytes: int = 0
    kept_files: int = 0
    kept_bytes: int = 0
    oldest_kept: date | None = None
    """The day of the oldest rotated file kept (``None``: only active files, or none)."""
    deleted: list[str] = field(default_factory=list)
    """The deleted files' paths, relative to the log directory."""

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


@dataclass(slots=True)
class PruneReport:
    directory: Path
    dry_run: bool
    categories: list[CategoryPrune]

    @property
    def deleted_files(self) -> int:
        return sum(category.deleted_files for category in self.categories)

    @property
    def deleted_bytes(self) -> int:
        return sum(category.deleted_bytes for category in self.categories)

    def to_dict(self) -> dict[str, object]:
        return {
            "directory": str(self.directory),
            "dry_run": self.dry_run,
            "deleted_files": self.deleted_files,
            "deleted_bytes": self.deleted_bytes,
            "categories": [category.to_dict() for category in self.categories],
        }


def prune_logs(
    directory: Path,
    retention_days: Mapping[str, int],
    *,
    now: float,
    dry_run: bool = False,
    only: Collection[str] | None = None,
) -> PruneReport:
    """Delete (or, ``dry_run``, only list) each category's rotated files older than its
    retention, as of the Unix time ``now``; ``only`` limits it to those categories. A
    missing directory prunes nothing.

    Raises ``ConfigError`` for a category key that is not one of the five."""
    unknown = sorted((set(retention_days) | set(only or ())) - set(CATEGORIES))
    if unknown:
        raise ConfigError(
            f"logging.retention_days names {', '.join(unknown)}, which is not a log category; "
            f"the categories are {', '.join(CATEGORIES)}."
        )
    today = datetime.fromtimestamp(now, UTC)
    results = {
        category: CategoryPrune(
            category, retention_days.get(category, DEFAULT_RETENTION_DAYS[category])
        )
        for category in CATEGORIES
        if only is None or category in only
    }
    for file in list_log_files(directory, keep=LineFilter(categories=frozenset(results))):
        result = results[file.category]
        try:
            size = file.path.stat().st_size
        except OSError:
            continue
        day = file.name.day
        if day is not None and _expired(day, result.retention_days, today):
            if not dry_run:
                try:
                    os.unlink(file.path)
                except FileNotFoundError:
                    continue
            result.deleted_files += 1
            result.deleted_bytes += size
            result.deleted.append(str(file.path.relative_to(directory)))
            continue
        result.kept_files += 1
        result.kept_bytes += size
        if day is not None and (result.oldest_kept is None or day < result.oldest_kept):
            result.oldest_kept = day
    return PruneReport(directory=directory, dry_run=dry_run, categories=list(results.values()))


def _expired(day: date, retention_days: int, now: datetime) -> bool:
    """Every line of ``day`` (it ends at the next midnight, UTC) is older than the
    retention."""
    day_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return now - day_end >= timedelta(days=retention_days)


Sleep = Callable[[float], Awaitable[None]]


class LogPruner:
    """The prune ``keel up`` runs at start and every ``interval_s`` while it runs.

    Each prune that deleted something writes one audit record (``logs.prune``,
    actor ``keel-up``) and one log line; a failure is logged, and the next
    interval tries again.

    >>> pruner = LogPruner(directory=logs, retention_days=settings.logging.retention_days,
    ...                    interval_s=24 * 3600)
    >>> pruner.prune()                      # at start
    >>> task = asyncio.create_task(pruner.run())
    """

    def __init__(
        self,
        *,
        directory: Path,
        retention_days: Mapping[str, int],
        interval_s: float,
        clock: Callable[[], float],
        sleep: Sleep = asyncio.sleep,
        actor: str = "keel-up",
    ) -> None:
        self.directory = directory
        self.retention_days = dict(retention_days)
        self.interval_s = interval_s
        self._clock = clock
        self._sleep = sleep
        self._actor = actor

    def prune(self) -> PruneReport:
        report = prune_logs(self.directory, self.retention_days, now=self._clock())
        if report.deleted_files:
            audit(
                "logs.prune",
                actor=self._actor,
                directory=str(self.directory),
                deleted_files=report.deleted_files,
                deleted_bytes=report.deleted_bytes,
            )
            logger.info(
                "log retention: deleted %d rotated file(s), %d bytes, in %s",
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
