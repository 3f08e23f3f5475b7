"""``keel logs trace``, ``keel logs tail`` and ``keel logs prune`` over real log files."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeel.cli.main import app
from agentkeel.telemetry.audit_file import audit_file_path
from agentkeel.telemetry.audit_verify import read_audit_records
from agentkeel.telemetry.log_files import CategoryFileHandler
from agentkeel.telemetry.logging import JsonFormatter
from tests.ops.log_dir import log_line, write_log

NOW = datetime.now(tz=UTC)


def at(micros: int) -> datetime:
    return NOW + timedelta(microseconds=micros)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory whose logs hold one request across three services."""
    logs = tmp_path / "logs"
    write_log(logs, "access", "router.jsonl", [
        log_line(at(2500), "router", "POST /v1/sessions/{session_id}/messages 200",
                 correlation_id="cid-1", session_id="s1"),
    ])  # fmt: skip
    write_log(logs, "access", "replica-1.jsonl", [
        log_line(at(2000), "replica-1", "turn answered", correlation_id="cid-1", session_id="s1"),
        log_line(at(3000), "replica-1", "another", correlation_id="cid-2", session_id="s2"),
    ])  # fmt: skip
    write_log(logs, "tool_call", "tools.jsonl", [
        log_line(at(1000), "tools", "memory_store ok", correlation_id="cid-1"),
    ])  # fmt: skip
    write_log(logs, "error", "replica-1.jsonl", [
        log_line(at(1500), "replica-1", "slow tool", correlation_id="cid-1", level="warning",
                 session_id="s1"),
    ])  # fmt: skip
    return tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_trace_shows_one_timeline_across_services(data_dir: Path) -> None:
    """The lines of every service with the id, oldest first, with offsets from the first."""
    code, out, _ = run("--data-dir", str(data_dir), "logs", "trace", "cid-1")
    assert code == 0, out
    rows = [line for line in out.splitlines() if "│" in line and "+" in line]
    services = [row.split("│")[1].strip() for row in rows]
    assert services == ["tools", "replica-1", "replica-1", "router"]
    assert "+0.000 ms" in rows[0] and "+1.500 ms" in rows[-1]
    assert "4 line(s) from replica-1, router, tools" in out


def test_trace_json_is_the_lines_as_written(data_dir: Path) -> None:
    code, out, _ = run("--data-dir", str(data_dir), "logs", "trace", "cid-1", "--json")
    assert code == 0
    lines = json.loads(out)
    assert [line["message"] for line in lines] == [
        "memory_store ok",
        "slow tool",
        "turn answered",
        "POST /v1/sessions/{session_id}/messages 200",
    ]
    assert {line["correlation_id"] for line in lines} == {"cid-1"}


def test_trace_reads_a_week_back_unless_told_otherwise(data_dir: Path) -> None:
    """By default trace reads only files with lines of the last 7 days; --since reaches
    further back, and a --since that is no time is refused."""
    long_ago = NOW - timedelta(days=10)
    write_log(data_dir / "logs", "audit", f"router.{long_ago.date().isoformat()}.1.jsonl", [
        log_line(long_ago, "router", "old action", correlation_id="cid-old"),
    ])  # fmt: skip
    code, _, err = run("--data-dir", str(data_dir), "logs", "trace", "cid-old")
    assert code == 1 and "--since" in err and "4 file(s)" in err
    code, out, _ = run("--data-dir", str(data_dir), "logs", "trace", "cid-old", "--since", "30d",
                       "--json")  # fmt: skip
    assert code == 0 and [line["message"] for line in json.loads(out)] == ["old action"]
    code, _, err = run("--data-dir", str(data_dir), "logs", "trace", "cid-1", "--since", "soon")
    assert code != 0 and "soon" in err
    code, out, _ = run("logs", "trace", "--help")
    assert "default: 7d" in " ".join(out.split())


def test_trace_with_no_match_exits_1_saying_where_it_looked(data_dir: Path) -> None:
    code, _, err = run("logs", "trace", "nope", "--dir", str(data_dir / "logs"))
    assert code == 1
    assert "nope" in err and "4 file(s)" in err and str(data_dir / "logs") in err


def test_a_missing_log_directory_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = run("--data-dir", str(tmp_path), "logs", "tail")
    assert code == 1
    assert f"No log directory at {tmp_path / 'logs'}" in " ".join(err.split())


def test_tail_prints_the_latest_lines_filtered(data_dir: Path) -> None:
    """-n, --service, --category, --session and --level narrow the merged lines."""
    base = ["--data-dir", str(data_dir), "logs", "tail", "--json"]

    def messages(*options: str) -> list[str]:
        code, out, err = run(*base, *options)
        assert code == 0, err
        return [json.loads(line)["message"] for line in out.splitlines()]

    assert messages("-n", "2") == ["POST /v1/sessions/{session_id}/messages 200", "another"]
    assert messages("--session", "s1", "--level", "warning") == ["slow tool"]
    assert messages("--service", "replica-1", "--category", "access") == [
        "turn answered",
        "another",
    ]
    code, out, _ = run("--data-dir", str(data_dir), "logs", "tail", "-n", "1")
    assert code == 0 and "replica-1" in out and "another" in out


def test_prune_dry_run_then_prune_writes_an_audit_record(data_dir: Path) -> None:
    """--dry-run lists without deleting; the real prune deletes and is audited."""
    old_day = (NOW - timedelta(days=40)).date().isoformat()
    old = write_log(data_dir / "logs", "access", f"router.{old_day}.1.jsonl", [{"m": 1}])
    kept = write_log(data_dir / "logs", "error", f"router.{old_day}.1.jsonl", [{"m": 1}])

    code, out, _ = run("--data-dir", str(data_dir), "logs", "prune", "--dry-run")
    assert code == 0 and old.exists()
    assert "dry run" in out and "is not pruned" in out

    code, out, _ = run("--data-dir", str(data_dir), "logs", "prune", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["deleted_files"] == 1 and not old.exists() and kept.exists()
    error = next(c for c in report["categories"] if c["category"] == "error")
    assert error["oldest_kept"] == old_day
    records = read_audit_records(audit_file_path(data_dir))
    assert [(r["action"], r["details"]["deleted_files"]) for r in records] == [("logs.prune", 1)]


def test_prune_empties_the_stdout_files_past_the_error_retention(data_dir: Path) -> None:
    """The children's <service>.log files in <data dir>/logs go with the error category."""
    old = data_dir / "logs" / "memory.log"
    old.write_text("Traceback ...\n")
    stamp = (NOW - timedelta(days=91)).timestamp()
    os.utime(old, (stamp, stamp))
    code, out, _ = run("--data-dir", str(data_dir), "logs", "prune")
    assert code == 0 and "stdout" in out
    code, out, _ = run("--data-dir", str(data_dir), "logs", "prune", "--json")
    assert code == 0 and old.read_text() == ""
    stdout = json.loads(out)["stdout"]
    assert (stdout["retention_days"], stdout["kept_files"]) == (90, 1)


def test_every_logs_command_has_an_example() -> None:
    for command in ("trace", "tail", "prune"):
        code, out, _ = run("logs", command, "--help")
        assert code == 0 and "Example: keel logs" in out


@pytest.mark.slow
def test_tail_follow_prints_new_lines_across_a_rotation(tmp_path: Path) -> None:
    """keel logs tail -f as a process: lines written after it started, including those on
    both sides of a size rotation and from a service that starts later, then Ctrl-C
    ends it with exit 0."""
    logs = tmp_path / "logs"
    writer = CategoryFileHandler(directory=logs, service="replica-1", max_bytes=600)
    writer.setFormatter(JsonFormatter(service="replica-1"))

    def emit(target: CategoryFileHandler, message: str) -> None:
        target.handle(logging.makeLogRecord({"msg": message, "levelno": 20, "levelname": "INFO"}))

    later = CategoryFileHandler(directory=logs, service="memory", max_bytes=1 << 20)
    later.setFormatter(JsonFormatter(service="memory"))
    emit(writer, "history")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentkeel.cli.main", "logs", "tail", "-f", "--json",
         "--dir", str(logs)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["message"] == "history"
        sent = [f"line {index}" for index in range(6)]
        for message in sent[:3]:
            emit(writer, message)
        time.sleep(0.5)
        for message in sent[3:]:
            emit(writer, message)
        emit(later, "memory up")
        seen = [json.loads(proc.stdout.readline()) for _ in range(len(sent) + 1)]
        assert [line["message"] for line in seen if line["service"] == "replica-1"] == sent
        assert [line["message"] for line in seen if line["service"] == "memory"] == ["memory up"]
        assert len(os.listdir(logs / "access")) > 2  # it did rotate
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        writer.close()
        later.close()
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
