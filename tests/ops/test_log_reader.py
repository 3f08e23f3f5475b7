"""Reading the log files back: one timeline across services, the latest lines, following."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agentkeel.ops.log_reader import LineFilter, LogFollower, last_lines, read_lines
from agentkeel.telemetry.log_files import CategoryFileHandler
from agentkeel.telemetry.logging import JsonFormatter
from tests.ops.log_dir import log_line, write_log

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def at(micros: int) -> datetime:
    return T0 + timedelta(microseconds=micros)


def test_one_correlation_id_merges_every_service_and_category_in_time_order(
    tmp_path: Path,
) -> None:
    """Lines with the id, from every service, category and rotated file, ordered by their
    microsecond timestamps; other ids and non-JSON lines are left out (the latter counted)."""
    write_log(tmp_path, "access", "router.jsonl", [
        log_line(at(900), "router", "POST turn 200", correlation_id="c1"),
        log_line(at(950), "router", "other request", correlation_id="c2"),
    ])  # fmt: skip
    write_log(tmp_path, "reasoning_trace", "replica-1.jsonl", [
        log_line(at(100), "replica-1", "model call", correlation_id="c1"),
        log_line(at(700), "replica-1", "turn committed", correlation_id="c1"),
    ])  # fmt: skip
    write_log(tmp_path, "tool_call", "tools.2026-12-01.1.jsonl", [
        log_line(at(300), "tools", "tool memory_store", correlation_id="c1"),
    ])  # fmt: skip
    write_log(tmp_path, "access", "memory.jsonl", [
        log_line(at(299), "memory", "POST /v1/memories 201", correlation_id="c1"),
    ])  # fmt: skip
    with (tmp_path / "access" / "memory.jsonl").open("a") as out:
        out.write('Traceback (most recent call last): c1\n{"no": "timestamp c1"}\n')

    scan = read_lines(tmp_path, LineFilter(correlation_id="c1"))
    assert [(line.service, line.message) for line in scan.lines] == [
        ("replica-1", "model call"),
        ("memory", "POST /v1/memories 201"),
        ("tools", "tool memory_store"),
        ("replica-1", "turn committed"),
        ("router", "POST turn 200"),
    ]
    assert scan.files == 4 and scan.skipped == 2


def test_filters_by_service_category_session_and_level(tmp_path: Path) -> None:
    write_log(tmp_path, "access", "replica-1.jsonl", [
        log_line(at(1), "replica-1", "a", session_id="s1"),
        log_line(at(2), "replica-1", "b", session_id="s2"),
    ])  # fmt: skip
    write_log(tmp_path, "error", "replica-1.jsonl", [
        log_line(at(3), "replica-1", "c", session_id="s1", level="warning"),
        log_line(at(4), "replica-1", "d", session_id="s1", level="error"),
    ])  # fmt: skip
    write_log(tmp_path, "error", "router.jsonl", [log_line(at(5), "router", "e", level="error")])

    def messages(keep: LineFilter) -> list[str]:
        return [line.message for line in read_lines(tmp_path, keep).lines]

    assert messages(LineFilter(session_id="s1")) == ["a", "c", "d"]
    assert messages(LineFilter(min_level="error")) == ["d", "e"]
    assert messages(LineFilter(services=frozenset({"router"}))) == ["e"]
    assert messages(LineFilter(categories=frozenset({"access"}))) == ["a", "b"]
    assert messages(LineFilter(session_id="s1", min_level="warning")) == ["c", "d"]


def test_the_latest_lines_span_rotated_files_and_days(tmp_path: Path) -> None:
    """The newest N of all files, in time order, older days read only when needed."""
    yesterday = T0 - timedelta(days=1)
    write_log(tmp_path, "access", "memory.2026-11-30.1.jsonl", [
        log_line(yesterday, "memory", "y1"),
        log_line(yesterday + timedelta(seconds=1), "memory", "y2"),
    ])  # fmt: skip
    write_log(tmp_path, "access", "memory.2026-12-01.1.jsonl", [log_line(at(1), "memory", "t1")])
    active = write_log(tmp_path, "access", "memory.jsonl", [log_line(at(3), "memory", "t3")])
    os.utime(active, (T0.timestamp() + 5, T0.timestamp() + 5))
    write_log(tmp_path, "error", "router.jsonl", [log_line(at(2), "router", "t2", level="error")])

    def newest(count: int) -> list[str]:
        return [line.message for line in last_lines(tmp_path, count=count).lines]

    assert newest(2) == ["t2", "t3"]
    assert newest(4) == ["y2", "t1", "t2", "t3"]
    assert newest(10) == ["y1", "y2", "t1", "t2", "t3"]
    assert newest(0) == []


def handler(directory: Path, service: str, max_bytes: int = 1 << 20) -> CategoryFileHandler:
    made = CategoryFileHandler(directory=directory, service=service, max_bytes=max_bytes)
    made.setFormatter(JsonFormatter(service=service))
    return made


def emit(target: CategoryFileHandler, message: str, *, level: int = logging.INFO) -> None:
    target.handle(
        logging.makeLogRecord(
            {"msg": message, "levelno": level, "levelname": logging.getLevelName(level)}
        )
    )


def test_following_picks_up_new_lines_rotations_and_new_services(tmp_path: Path) -> None:
    """After the history, poll returns what was written since, in order: lines written
    just before a size rotation come before the new file's, and a service that starts
    writing later is read from its first line. Nothing is shown twice."""
    replica = handler(tmp_path, "replica-1", max_bytes=400)
    emit(replica, "before start")
    follower = LogFollower(tmp_path)
    history = last_lines(tmp_path, count=10, limits=follower.limits())
    emit(replica, "after start")
    assert [line.message for line in history.lines] == ["before start"]
    assert [line.message for line in follower.poll()] == ["after start"]
    assert follower.poll() == []

    for index in range(4):  # past 400 bytes: at least one rotation between two polls
        emit(replica, f"burst {index}")
    memory = handler(tmp_path, "memory")
    emit(memory, "memory starts", level=logging.WARNING)
    polled = [line.message for line in follower.poll()]
    assert len(os.listdir(tmp_path / "access")) >= 3  # two rotations, and the active file
    assert polled == ["burst 0", "burst 1", "burst 2", "burst 3", "memory starts"]
    follower.close()
    replica.close()
    memory.close()


def test_following_keeps_to_the_filter(tmp_path: Path) -> None:
    writer = handler(tmp_path, "tools")
    follower = LogFollower(tmp_path, LineFilter(min_level="warning"))
    emit(writer, "fine")
    emit(writer, "bad", level=logging.ERROR)
    assert [line.message for line in follower.poll()] == ["bad"]
    follower.close()
    writer.close()
