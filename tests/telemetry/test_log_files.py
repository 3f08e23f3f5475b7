from __future__ import annotations

import json
import logging
import os
from datetime import date
from pathlib import Path

from agentkeel.telemetry.log_files import (
    CategoryFileHandler,
    LogFileName,
    active_log_path,
    parse_log_file_name,
)
from agentkeel.telemetry.logging import JsonFormatter

DAY = 86_400
# 2026-12-01T10:00:00Z
MORNING = 1_796_119_200.0


def record(
    message: str,
    *,
    created: float,
    level: int = logging.INFO,
    name: str = "agentkeel.test",
    **extra: object,
) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"msg": message, "levelno": level, "levelname": logging.getLevelName(level), "name": name}
    )
    made.created = created
    made.__dict__.update(extra)
    return made


def handler_for(
    directory: Path, *, service: str = "memory", max_bytes: int = 1 << 20
) -> CategoryFileHandler:
    handler = CategoryFileHandler(directory=directory, service=service, max_bytes=max_bytes)
    handler.setFormatter(JsonFormatter(service=service))
    return handler


def messages(path: Path) -> list[str]:
    return [json.loads(line)["message"] for line in path.read_text().splitlines()]


def test_each_line_goes_to_its_categorys_folder(tmp_path: Path) -> None:
    """A line lands in <dir>/<category>/<service>.jsonl by its category, one JSON object a
    line; other categories get no file until they have a line."""
    handler = handler_for(tmp_path)
    handler.handle(record("request", created=MORNING))
    handler.handle(record("model call", created=MORNING, event="model_call"))
    handler.handle(record("it broke", created=MORNING, level=logging.ERROR))
    handler.handle(record("drain", created=MORNING, category="audit"))
    handler.close()

    assert messages(active_log_path(tmp_path, "access", "memory")) == ["request"]
    assert messages(active_log_path(tmp_path, "reasoning_trace", "memory")) == ["model call"]
    assert messages(active_log_path(tmp_path, "error", "memory")) == ["it broke"]
    assert messages(active_log_path(tmp_path, "audit", "memory")) == ["drain"]
    assert not (tmp_path / "tool_call").exists()


def test_a_file_is_rotated_when_the_next_line_would_pass_the_size(tmp_path: Path) -> None:
    """Past max_bytes the active file is renamed <service>.<day>.<n>.jsonl (n counting that
    day's rotations) and a new one started; no line is split or lost."""
    line_bytes = len(JsonFormatter(service="memory").format(record("x" * 10, created=MORNING)))
    handler = handler_for(tmp_path, max_bytes=(line_bytes + 1) * 2)
    for index in range(5):
        handler.handle(record(f"{index:x}" * 10, created=MORNING + index))
    handler.close()

    folder = tmp_path / "access"
    assert sorted(os.listdir(folder)) == [
        "memory.2026-12-01.1.jsonl",
        "memory.2026-12-01.2.jsonl",
        "memory.jsonl",
    ]
    read = [
        m
        for name in sorted(os.listdir(folder))
        if name != "memory.jsonl"
        for m in messages(folder / name)
    ] + messages(folder / "memory.jsonl")
    assert read == [f"{index:x}" * 10 for index in range(5)]


def test_a_file_is_rotated_when_the_utc_day_changes(tmp_path: Path) -> None:
    """The first line of a new UTC day moves the file, named with the day of its lines."""
    handler = handler_for(tmp_path)
    handler.handle(record("late", created=MORNING + 13 * 3600 + 59 * 60))  # 23:59 UTC
    handler.handle(record("early", created=MORNING + 14 * 3600 + 60))  # 00:01 the next day
    handler.close()

    folder = tmp_path / "access"
    assert messages(folder / "memory.2026-12-01.1.jsonl") == ["late"]
    assert messages(folder / "memory.jsonl") == ["early"]


def test_a_file_left_by_an_earlier_run_is_rotated_by_its_last_day(tmp_path: Path) -> None:
    """A restarted service appends to today's file, but moves one whose last line is from
    an earlier day (the day of its last write) before writing."""
    folder = tmp_path / "access"
    folder.mkdir()
    old = folder / "memory.jsonl"
    old.write_text('{"message": "yesterday"}\n')
    os.utime(old, (MORNING - DAY, MORNING - DAY))
    handler = handler_for(tmp_path)
    handler.handle(record("today", created=MORNING))
    handler.close()
    assert messages(folder / "memory.2026-11-30.1.jsonl") == ["yesterday"]
    assert messages(folder / "memory.jsonl") == ["today"]

    again = handler_for(tmp_path)
    again.handle(record("later today", created=MORNING + 60))
    again.close()
    assert messages(folder / "memory.jsonl") == ["today", "later today"]


def test_rotation_counts_on_after_files_of_that_day(tmp_path: Path) -> None:
    """A rotation takes the next free counter of its day, also after a restart."""
    folder = tmp_path / "access"
    folder.mkdir()
    (folder / "memory.2026-12-01.1.jsonl").write_text("{}\n")
    (folder / "memory.2026-12-01.7.jsonl").write_text("{}\n")
    (folder / "other.2026-12-01.9.jsonl").write_text("{}\n")
    handler = handler_for(tmp_path, max_bytes=10)
    handler.handle(record("one", created=MORNING))
    handler.handle(record("two", created=MORNING))
    handler.close()
    assert messages(folder / "memory.2026-12-01.8.jsonl") == ["one"]


def test_file_names_say_service_day_and_counter() -> None:
    """Names parse back into what they say, dotted service names included; anything else
    is not a log file."""
    rotated = LogFileName("agent-v2.1-1", date(2026, 12, 1), 3)
    assert rotated.name == "agent-v2.1-1.2026-12-01.3.jsonl"
    assert parse_log_file_name(rotated.name) == rotated
    assert parse_log_file_name("agent-v2.1-1.jsonl") == LogFileName("agent-v2.1-1")
    assert parse_log_file_name("router.log") is None
    assert parse_log_file_name(".hidden.jsonl") is None
    assert parse_log_file_name("memory.2026-13-01.1.jsonl") is None
    assert rotated.order() < LogFileName("agent-v2.1-1").order()


def test_a_writer_whose_file_was_moved_or_deleted_starts_a_new_one(tmp_path: Path) -> None:
    """Prune renames an old active file away, an operator may delete one: the writer's
    next line goes to a new file at the path, not into the one nobody can find."""
    handler = handler_for(tmp_path)
    handler.handle(record("first", created=MORNING))
    active = active_log_path(tmp_path, "access", "memory")
    moved = active.rename(tmp_path / "access" / "moved.txt")
    handler.handle(record("second", created=MORNING + 1))
    assert messages(active) == ["second"] and messages(moved) == ["first"]
    active.unlink()
    handler.handle(record("third", created=MORNING + 2))
    handler.close()
    assert messages(active) == ["third"]
