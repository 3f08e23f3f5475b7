"""keel logs prune: each category keeps its own days, and nothing else is touched."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from agentkeel.config.logs import Category, LoggingSettings
from agentkeel.ops import log_retention
from agentkeel.ops.log_retention import LogPruner, PruneReport, prune_logs
from agentkeel.telemetry.audit_file import audit_file_path, install_audit_file
from agentkeel.telemetry.audit_verify import read_audit_records
from agentkeel.telemetry.log_files import CategoryFileHandler, next_rotated_path
from agentkeel.telemetry.logging import JsonFormatter
from tests.ops.log_dir import write_log

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
DEFAULTS = LoggingSettings()


def aged(path: Path, days: float, *, before: datetime = NOW) -> Path:
    """``path`` as if last written ``days`` before ``before``."""
    stamp = (before - timedelta(days=days)).timestamp()
    os.utime(path, (stamp, stamp))
    return path


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
    report = prune_logs(tmp_path, DEFAULTS, now=NOW.timestamp())
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
    report = prune_logs(tmp_path, DEFAULTS, now=NOW.timestamp())
    assert files_in(tmp_path) == {f"reasoning_trace/{rotated('router', 7)}"}
    trace = report.categories[0]
    assert (trace.category, trace.deleted_files, trace.kept_files) == ("reasoning_trace", 1, 1)
    assert trace.oldest_kept == (NOW - timedelta(days=7)).date()


def test_unknown_names_links_and_other_folders_are_never_touched(tmp_path: Path) -> None:
    """Only log file names inside the five category folders are candidates; a stray file,
    a symlink and a folder outside stay, however old."""
    logs = tmp_path / "logs"
    old = aged(write_log(logs, "access", "notes.txt", [{"m": 1}]), 400)
    outside = write_log(tmp_path, "elsewhere", rotated("router", 400), [{"m": 1}])
    (logs / "access" / rotated("linked", 400)).symlink_to(outside)
    (logs / "tool_call").symlink_to(outside.parent, target_is_directory=True)
    write_log(logs, "debug", rotated("router", 400), [{"m": 1}])

    report = prune_logs(logs, DEFAULTS, now=NOW.timestamp())
    assert report.deleted_files == 0
    assert outside.exists() and old.exists()
    assert (logs / "debug" / rotated("router", 400)).exists()


def test_a_dry_run_deletes_nothing_and_says_what_would_go(tmp_path: Path) -> None:
    path = write_log(tmp_path, "access", rotated("tools", 60), [{"m": "x" * 100}])
    report = prune_logs(tmp_path, DEFAULTS, now=NOW.timestamp(), dry_run=True)
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
        tmp_path, LoggingSettings(retention_days={"audit": 1, "access": 1}),
        now=NOW.timestamp(), only=[Category.AUDIT],
    )  # fmt: skip
    assert files_in(tmp_path) == {f"access/{rotated('keel-up', 3)}"}


def test_a_missing_directory_prunes_nothing(tmp_path: Path) -> None:
    report = prune_logs(tmp_path / "absent", DEFAULTS, now=NOW.timestamp())
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
        settings=DEFAULTS,
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


def writer_for(directory: Path, service: str) -> CategoryFileHandler:
    handler = CategoryFileHandler(directory=directory, service=service, max_bytes=1 << 20)
    handler.setFormatter(JsonFormatter(service=service))
    return handler


def write(handler: CategoryFileHandler, message: str, *, at: datetime) -> None:
    record = logging.makeLogRecord({"msg": message, "levelno": 20, "levelname": "INFO"})
    record.created = at.timestamp()
    handler.handle(record)


def messages(path: Path) -> list[str]:
    return [json.loads(line)["message"] for line in path.read_text().splitlines()]


def test_an_active_file_past_retention_goes_and_its_live_writer_starts_a_new_one(
    tmp_path: Path,
) -> None:
    """A replica of a finished rollout never rotates its file again: once its last write
    is past the category's retention, prune deletes it. A writer still running puts its
    next line in a new file at the same path, where readers look; a recent active file
    and an old one of a longer-kept category stay."""
    writer = writer_for(tmp_path, "agent-v1-1")
    write(writer, "last words", at=NOW - timedelta(days=40))
    active = aged(tmp_path / "access" / "agent-v1-1.jsonl", 40)
    aged(write_log(tmp_path, "access", "router.jsonl", [{"m": 1}]), 3)
    aged(write_log(tmp_path, "audit", "router.jsonl", [{"m": 1}]), 40)

    report = prune_logs(tmp_path, DEFAULTS, now=NOW.timestamp())
    assert files_in(tmp_path) == {"access/router.jsonl", "audit/router.jsonl"}
    access = next(result for result in report.categories if result.category == "access")
    assert (access.deleted, access.kept_files) == (["access/agent-v1-1.jsonl"], 1)
    assert access.oldest_kept == (NOW - timedelta(days=3)).date()

    write(writer, "back again", at=NOW)
    writer.close()
    assert messages(active) == ["back again"]


def test_a_line_written_while_prune_moves_an_active_file_keeps_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer logs again between prune's look at the file and its rename: the file
    (its old lines and the new one) is kept, named by the day of the new line."""
    now = datetime.now(tz=UTC)
    active = write_log(tmp_path, "access", "router.jsonl", [{"message": "old"}])
    aged(active, 40, before=now)
    real_next = next_rotated_path
    wrote: list[bool] = []

    def writer_logs_first(folder: Path, service: str, day: date) -> Path:
        if not wrote:  # what the live writer does at that moment
            with active.open("a") as out:
                out.write(json.dumps({"message": "new"}) + "\n")
            wrote.append(True)
        return real_next(folder, service, day)

    monkeypatch.setattr(log_retention, "next_rotated_path", writer_logs_first)
    report = prune_logs(tmp_path, DEFAULTS, now=now.timestamp())
    assert report.deleted_files == 0
    [kept] = (tmp_path / "access").iterdir()
    assert kept.name == f"router.{now.date().isoformat()}.1.jsonl"
    assert messages(kept) == ["old", "new"]


def test_stdout_files_are_emptied_past_the_error_retention_then_deleted(tmp_path: Path) -> None:
    """<service>.log is kept as long as the error category, by its last write. One past it
    is emptied in place: the child still appending to it writes at its start. An empty one
    that old goes. A dry run and a prune of other categories leave them alone."""
    out = tmp_path / "out"
    out.mkdir()
    old = out / "memory.log"
    old.write_bytes(b"--- keel: starting memory ---\nTraceback ...\n")
    aged(old, 91)
    young = out / "router.log"
    young.write_bytes(b"warning\n")
    aged(young, 10)
    empty = out / "agent-v1-1.log"
    empty.touch()
    aged(empty, 91)
    size = old.stat().st_size

    def prune(*, dry_run: bool = False, only: list[Category] | None = None) -> PruneReport:
        return prune_logs(
            tmp_path / "logs", DEFAULTS, now=NOW.timestamp(), output_directory=out,
            dry_run=dry_run, only=only,
        )  # fmt: skip

    assert prune(only=[Category.ACCESS]).output is None
    assert prune(dry_run=True).deleted_files == 2 and old.stat().st_size == size
    child = old.open("ab")  # the running child's stdout
    try:
        report = prune()
        assert report.output is not None
        assert sorted(report.output.deleted) == ["agent-v1-1.log", "memory.log"]
        assert (report.output.deleted_bytes, report.output.kept_files) == (size, 1)
        assert old.read_bytes() == b"" and not empty.exists()
        assert young.read_bytes() == b"warning\n"
        child.write(b"crash\n")
        child.flush()
        assert old.read_bytes() == b"crash\n"
    finally:
        child.close()
    assert report.to_dict()["stdout"] == report.output.to_dict()
    assert report.output.retention_days == DEFAULTS.retention_days["error"]
