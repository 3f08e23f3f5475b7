"""keel logs prune: each category keeps its own days, and nothing else is touched."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentkeel.config.logs import DEFAULT_RETENTION_DAYS
from agentkeel.errors import ConfigError
from agentkeel.ops.log_retention import LogPruner, prune_logs
from agentkeel.telemetry.audit_file import audit_file_path, install_audit_file
from agentkeel.telemetry.audit_verify import read_audit_records
from tests.ops.log_dir import write_log

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def rotated(service: str, days_ago: int, index: int = 1) -> str:
    day = (NOW - timedelta(days=days_ago)).date()
    return f"{service}.{day.isoformat()}.{index}.jsonl"


def files_in(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file()}


def test_pruning_a_young_category_keeps_older_categories_files(tmp_path: Path) -> None:
    """reasoning_trace at 7 days deletes its month-old file; the month-old audit and error
    files stay (365 and 90 days), the tool_call and access ones (30 days) go."""
    for category in ("reasoning_trace", "audit", "error", "tool_call", "access"):
        write_log(tmp_path, category, rotated("replica-1", 31), [{"m": 1}])
    report = prune_logs(tmp_path, DEFAULT_RETENTION_DAYS, now=NOW.timestamp())
    assert files_in(tmp_path) == {
        f"audit/{rotated('replica-1', 31)}",
        f"error/{rotated('replica-1', 31)}",
    }
    deleted = {result.category: result.deleted_files for result in report.categories}
    assert deleted == {"reasoning_trace": 1, "tool_call": 1, "error": 0, "audit": 0, "access": 1}


def test_a_file_goes_once_every_line_in_it_is_past_retention(tmp_path: Path) -> None:
    """At 7 days, the file of 8 days ago goes (its last line is over 7 days old), the file
    of exactly 7 days ago stays until its day has fully passed."""
    write_log(tmp_path, "reasoning_trace", rotated("router", 8), [{"m": 1}])
    write_log(tmp_path, "reasoning_trace", rotated("router", 7), [{"m": 1}])
    report = prune_logs(tmp_path, DEFAULT_RETENTION_DAYS, now=NOW.timestamp())
    assert files_in(tmp_path) == {f"reasoning_trace/{rotated('router', 7)}"}
    trace = report.categories[0]
    assert (trace.category, trace.deleted_files, trace.kept_files) == ("reasoning_trace", 1, 1)
    assert trace.oldest_kept == (NOW - timedelta(days=7)).date()


def test_active_files_unknown_names_links_and_other_folders_are_never_touched(
    tmp_path: Path,
) -> None:
    """Only rotated log file names inside the five category folders are candidates; an
    active file, however old, a stray file, a symlink and a folder outside stay."""
    logs = tmp_path / "logs"
    old = write_log(logs, "access", "router.jsonl", [{"m": 1}])
    stamp = (NOW - timedelta(days=400)).timestamp()
    os.utime(old, (stamp, stamp))
    write_log(logs, "access", "notes.txt", [{"m": 1}])
    outside = write_log(tmp_path, "elsewhere", rotated("router", 400), [{"m": 1}])
    (logs / "access" / rotated("linked", 400)).symlink_to(outside)
    (logs / "tool_call").symlink_to(outside.parent, target_is_directory=True)
    write_log(logs, "debug", rotated("router", 400), [{"m": 1}])

    report = prune_logs(logs, DEFAULT_RETENTION_DAYS, now=NOW.timestamp())
    assert report.deleted_files == 0
    assert outside.exists() and old.exists()
    assert (logs / "debug" / rotated("router", 400)).exists()


def test_a_dry_run_deletes_nothing_and_says_what_would_go(tmp_path: Path) -> None:
    path = write_log(tmp_path, "access", rotated("tools", 60), [{"m": "x" * 100}])
    report = prune_logs(tmp_path, DEFAULT_RETENTION_DAYS, now=NOW.timestamp(), dry_run=True)
    assert path.exists()
    access = next(result for result in report.categories if result.category == "access")
    assert access.deleted == [f"access/{rotated('tools', 60)}"]
    assert access.deleted_bytes == path.stat().st_size
    assert report.to_dict()["dry_run"] is True


def test_only_some_categories_and_configured_days(tmp_path: Path) -> None:
    """``only`` prunes those categories; shorter configured days take more."""
    write_log(tmp_path, "audit", rotated("keel-up", 3), [{"m": 1}])
    write_log(tmp_path, "access", rotated("keel-up", 3), [{"m": 1}])
    prune_logs(
        tmp_path, {**DEFAULT_RETENTION_DAYS, "audit": 1, "access": 1},
        now=NOW.timestamp(), only=["audit"],
    )  # fmt: skip
    assert files_in(tmp_path) == {f"access/{rotated('keel-up', 3)}"}


def test_an_unknown_category_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="verbose"):
        prune_logs(tmp_path, {"verbose": 3}, now=NOW.timestamp())


def test_a_missing_directory_prunes_nothing(tmp_path: Path) -> None:
    report = prune_logs(tmp_path / "absent", DEFAULT_RETENTION_DAYS, now=NOW.timestamp())
    assert report.deleted_files == 0 and len(report.categories) == 5


async def test_keel_ups_pruner_runs_every_interval_and_audits_what_it_deleted(
    tmp_path: Path,
) -> None:
    """The pruner prunes once per interval (a passed-in sleep), and each prune that
    deleted files writes one logs.prune audit record."""
    logs = tmp_path / "logs"
    install_audit_file(tmp_path, service="keel-up")
    now = [NOW.timestamp()]
    sleeps: list[float] = []
    ticks: asyncio.Queue[None] = asyncio.Queue()
    second_sleep = asyncio.Event()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            second_sleep.set()
        await ticks.get()

    pruner = LogPruner(
        directory=logs,
        retention_days=DEFAULT_RETENTION_DAYS,
        interval_s=3600.0,
        clock=lambda: now[0],
        sleep=sleep,
    )
    write_log(logs, "reasoning_trace", rotated("replica-1", 6), [{"m": 1}])
    assert pruner.prune().deleted_files == 0
    task = asyncio.create_task(pruner.run())
    now[0] += 2 * 86_400  # two days later the 6-day-old file is past 7 days
    await ticks.put(None)
    await second_sleep.wait()  # the first interval's prune has run
    task.cancel()
    assert list((logs / "reasoning_trace").iterdir()) == []
    records = [
        r for r in read_audit_records(audit_file_path(tmp_path)) if r["action"] == "logs.prune"
    ]
    assert [(r["actor"], r["details"]["deleted_files"]) for r in records] == [("keel-up", 1)]
    assert sleeps[:2] == [3600.0, 3600.0]
