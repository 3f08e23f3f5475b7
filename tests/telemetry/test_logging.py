from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from logging.handlers import QueueListener
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentkeel.config.logs import LoggingSettings
from agentkeel.secrets.redact import SecretRedactor, redact_logs
from agentkeel.telemetry import configure_logging, make_async_client, set_correlation_id
from agentkeel.telemetry.access_log import log_access
from agentkeel.telemetry.audit import audit
from agentkeel.telemetry.logging import JsonFormatter, file_sink


def test_json_lines_carry_the_shared_fields() -> None:
    """Each record is one JSON object with service, level, logger, correlation id and extras."""
    stream = io.StringIO()
    configure_logging(service="agent", level="info", stream=stream)
    set_correlation_id("cid-1")
    try:
        logging.getLogger("agentkeel.test").info(
            "turn done", extra={"session_id": "s1", "turn": 3, "duration_ms": 1.5}
        )
    finally:
        set_correlation_id(None)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["service"] == "agent"
    assert line["level"] == "info"
    assert line["logger"] == "agentkeel.test"
    assert line["message"] == "turn done"
    assert line["correlation_id"] == "cid-1"
    assert line["session_id"] == "s1" and line["turn"] == 3 and line["duration_ms"] == 1.5
    assert line["timestamp"].endswith("Z")


async def test_outgoing_requests_carry_the_correlation_id() -> None:
    """Clients from make_async_client add X-Correlation-ID from the context."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("x-correlation-id"))
        return httpx.Response(200)

    set_correlation_id("downstream-7")
    try:
        async with make_async_client(transport=httpx.MockTransport(handler)) as client:
            await client.get("http://peer/health")
    finally:
        set_correlation_id(None)
    assert seen == ["downstream-7"]


def test_timestamps_follow_each_record_across_seconds() -> None:
    """Each line's timestamp is its own record's UTC time, to the microsecond, also when
    consecutive records fall in different seconds or the same millisecond."""
    formatter = JsonFormatter(service="agent")
    stamps = []
    for created in (0.5, 0.75, 61.25, 0.5, 1_796_119_200.000123, 1_796_119_200.000456):
        record = logging.makeLogRecord({"msg": "tick"})
        record.created = created
        record.msecs = (created - int(created)) * 1000
        stamps.append(json.loads(formatter.format(record))["timestamp"])

    assert stamps == [
        "1970-01-01T00:00:00.500000Z",
        "1970-01-01T00:00:00.750000Z",
        "1970-01-01T00:01:01.250000Z",
        "1970-01-01T00:00:00.500000Z",
        "2026-12-01T10:00:00.000123Z",
        "2026-12-01T10:00:00.000456Z",
    ]


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Threads switch as often as the interpreter allows, so races show."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_threads_sharing_a_formatter_each_get_their_own_records_second() -> None:
    """One formatter serves every thread of a service; records of different seconds
    formatted at once never carry another record's second."""
    formatter = JsonFormatter(service="agent")
    wrong: list[str] = []

    def format_many(base: float) -> None:
        record = logging.makeLogRecord({"msg": "tick"})
        for index in range(15000):
            record.created = base + index % 2 + 0.25
            expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(record.created)))
            stamp = json.loads(formatter.format(record))["timestamp"]
            if not stamp.startswith(expected):
                wrong.append(f"{stamp} for {expected}")
                return

    threads = [threading.Thread(target=format_many, args=(1000.0 + 7 * k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_a_line_queued_while_the_files_close_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread logs just after close() queued the listener's sentinel: that line
    is still written before the files close."""
    sink = file_sink(tmp_path, service="memory", max_bytes=1 << 20)
    enqueue_sentinel = QueueListener.enqueue_sentinel

    def sentinel_then_a_line(listener: QueueListener) -> None:
        enqueue_sentinel(listener)
        sink.handle(logging.makeLogRecord({"msg": "just after", "levelno": 20}))

    monkeypatch.setattr(QueueListener, "enqueue_sentinel", sentinel_then_a_line)
    sink.handle(logging.makeLogRecord({"msg": "before", "levelno": 20}))
    sink.close()
    written = [line["message"] for line in _lines(tmp_path / "access" / "memory.jsonl")]
    assert written == ["before", "just after"]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_with_a_log_directory_every_line_also_goes_to_its_category_file(tmp_path: Path) -> None:
    """With logging.dir, lines are written to <dir>/<category>/<service>.jsonl under the
    configured service name, with the correlation id of the thread that logged them;
    stdout then carries warnings and above only. Closing drains the queue."""
    stream = io.StringIO()
    sinks = configure_logging(
        service="memory",
        stream=stream,
        settings=LoggingSettings(dir=tmp_path, service_name="memory-2"),
    )
    set_correlation_id("cid-files")
    try:
        log = logging.getLogger("agentkeel.test")
        log.info("stored", extra={"event": "memory"})
        log.warning("slow disk")
        audit("memory.fence.up", actor="cli:ana")
    finally:
        set_correlation_id(None)
    sinks.close()

    trace = _lines(tmp_path / "reasoning_trace" / "memory-2.jsonl")
    assert [(line["message"], line["service"], line["correlation_id"]) for line in trace] == [
        ("stored", "memory-2", "cid-files")
    ]
    assert [line["message"] for line in _lines(tmp_path / "error" / "memory-2.jsonl")] == [
        "slow disk"
    ]
    assert _lines(tmp_path / "audit" / "memory-2.jsonl")[0]["action"] == "memory.fence.up"
    printed = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert printed == ["slow disk"]


def test_stdout_level_can_be_set_beside_the_files(tmp_path: Path) -> None:
    """logging.stdout_level prints more (or less) on stdout; the files still get all."""
    stream = io.StringIO()
    sinks = configure_logging(
        service="tools",
        stream=stream,
        settings=LoggingSettings(dir=tmp_path, stdout_level="info"),
    )
    logging.getLogger("agentkeel.test").info("hello")
    sinks.close()
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["hello"]
    assert [line["message"] for line in _lines(tmp_path / "access" / "tools.jsonl")] == ["hello"]


def test_secrets_are_redacted_in_the_files_too(tmp_path: Path) -> None:
    """The redaction filter installed after configure_logging cleans file lines as well."""
    secret = "sk-" + "a1B2" * 12
    sinks = configure_logging(
        service="agent", stream=io.StringIO(), settings=LoggingSettings(dir=tmp_path)
    )
    redact_logs(SecretRedactor())
    logging.getLogger("agentkeel.test").info("key is %s", secret)
    sinks.close()
    text = (tmp_path / "access" / "agent.jsonl").read_text()
    assert secret not in text
    assert "[REDACTED:" in text


def test_configuring_again_drains_and_closes_the_earlier_files(tmp_path: Path) -> None:
    """A second configure_logging writes every line the first one queued, then closes it:
    no listener thread is left behind."""
    configure_logging(service="a", stream=io.StringIO(), settings=LoggingSettings(dir=tmp_path))
    logging.getLogger("agentkeel.test").info("first")
    threads = threading.active_count()
    second = configure_logging(service="b", stream=io.StringIO(), settings=LoggingSettings())
    assert second.directory is None
    assert threading.active_count() == threads - 1
    assert [line["message"] for line in _lines(tmp_path / "access" / "a.jsonl")] == ["first"]


def test_access_lines_can_be_turned_off() -> None:
    """logging.access_lines: false silences the access logger, nothing else."""
    stream = io.StringIO()
    configure_logging(service="agent", stream=stream, settings=LoggingSettings(access_lines=False))
    log_access("GET", "get_session", "/v1/sessions/{session_id}", 200, 0.001)
    logging.getLogger("agentkeel.test").info("still here")
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == [
        "still here"
    ]
