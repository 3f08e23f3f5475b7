"""Reading the log files back: one timeline across services, the latest lines, following."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentkeel.ops import log_reader
from agentkeel.ops.log_reader import LineFilter, LogFile, LogFollower, last_lines, read_lines
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


def test_the_latest_lines_are_read_from_the_end_of_a_large_file(tmp_path: Path) -> None:
    """tail -n reads backwards and stops at the count: the megabytes of non-JSON text at
    the start of the file are never read (none is counted as skipped)."""
    path = tmp_path / "access" / "router.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"not a log line\n" * 100_000)
    write_log(tmp_path, "access", "router.jsonl", [
        log_line(at(index * 10), "router", f"m{index}") for index in range(30)
    ])  # fmt: skip
    write_log(tmp_path, "error", "memory.jsonl", [log_line(at(255), "memory", "e", level="error")])

    scan = last_lines(tmp_path, count=6)
    assert [line.message for line in scan.lines] == ["m25", "e", "m26", "m27", "m28", "m29"]
    assert scan.skipped == 0


def test_since_leaves_older_files_unread(tmp_path: Path) -> None:
    """A rotated file whose day is before ``since`` and an active file last written
    before it are not read at all; lines before ``since`` in a file that is read are
    left out too."""
    old_day = (T0 - timedelta(days=10)).date().isoformat()
    write_log(tmp_path, "audit", f"router.{old_day}.1.jsonl", [
        log_line(T0 - timedelta(days=10), "router", "rotated long ago", correlation_id="c1"),
    ])  # fmt: skip
    quiet = write_log(tmp_path, "access", "agent-v1-1.jsonl", [
        log_line(T0 - timedelta(days=9), "agent-v1-1", "quiet since", correlation_id="c1"),
    ])  # fmt: skip
    stamp = (T0 - timedelta(days=9)).timestamp()
    os.utime(quiet, (stamp, stamp))
    write_log(tmp_path, "access", "router.jsonl", [
        log_line(T0 - timedelta(hours=30), "router", "yesterday", correlation_id="c1"),
        log_line(T0, "router", "now", correlation_id="c1"),
    ])  # fmt: skip

    scan = read_lines(tmp_path, LineFilter(correlation_id="c1", since=T0 - timedelta(hours=1)))
    assert [line.message for line in scan.lines] == ["now"]
    assert scan.files == 1
    everything = read_lines(tmp_path, LineFilter(correlation_id="c1"))
    assert len(everything.lines) == 4 and everything.files == 3


def rotating_after_listing(
    monkeypatch: pytest.MonkeyPatch, rotate: Callable[[], None]
) -> list[int]:
    """``list_log_files`` that runs ``rotate`` after its next listing, once: a rotation
    between the follower's look at the directory and its reading of the files."""
    real = log_reader.list_log_files
    calls: list[int] = []

    def listing(directory: Path, *, keep: LineFilter | None = None) -> list[LogFile]:
        files = real(directory, keep=keep)
        calls.append(len(files))
        if len(calls) == 1:
            rotate()
        return files

    monkeypatch.setattr(log_reader, "list_log_files", listing)
    return calls


def test_a_rotation_inside_a_poll_shows_no_line_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is rotated after a poll listed the directory and before it read the
    files: the old file is read to its end under the name it had, and later polls,
    which list it under its rotated name, go on from there."""
    replica = handler(tmp_path, "replica-1", max_bytes=600)
    emit(replica, "before start")
    follower = LogFollower(tmp_path)
    emit(replica, "listed")

    def rotate() -> None:
        emit(replica, "x" * 300)  # past 600 bytes: each of these rotates the file
        emit(replica, "in the new file")

    calls = rotating_after_listing(monkeypatch, rotate)
    polled = [line.message for line in follower.poll()]
    polled += [line.message for poll in range(2) for line in follower.poll()]
    emit(replica, "after")
    polled += [line.message for line in follower.poll()]
    # The first poll listed the one file there was; both lines then rotated it.
    assert calls[0] == 1 and len(os.listdir(tmp_path / "access")) == 3
    assert polled == ["listed", "x" * 300, "in the new file", "after"]
    follower.close()
    replica.close()


def test_a_rotation_while_following_starts_shows_no_line_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is rotated while the follower takes stock at its start: the history and
    the polls after it together hold every line once."""
    replica = handler(tmp_path, "replica-1", max_bytes=600)
    emit(replica, "x" * 300)

    def rotate() -> None:
        emit(replica, "y" * 300)  # rotates: this line is the new file's first
        emit(replica, "z")

    rotating_after_listing(monkeypatch, rotate)
    follower = LogFollower(tmp_path)
    history = last_lines(tmp_path, count=10, limits=follower.limits())
    emit(replica, "after")
    polled = [line.message for poll in range(2) for line in follower.poll()]
    shown = [line.message for line in history.lines] + polled
    assert sorted(shown) == sorted(["x" * 300, "y" * 300, "z", "after"])
    assert len(shown) == 4 and shown[-1] == "after"
    follower.close()
    replica.close()
