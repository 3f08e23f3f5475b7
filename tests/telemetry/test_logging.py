from __future__ import annotations

import io
import json
import logging

import httpx

from agentkeel.telemetry import configure_logging, make_async_client, set_correlation_id
from agentkeel.telemetry.logging import JsonFormatter


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
    """Each line's timestamp is its own record's UTC time, to the millisecond, also when
    consecutive records fall in different seconds."""
    formatter = JsonFormatter(service="agent")
    stamps = []
    for created in (0.5, 0.75, 61.25, 0.5):
        record = logging.makeLogRecord({"msg": "tick"})
        record.created = created
        record.msecs = (created - int(created)) * 1000
        stamps.append(json.loads(formatter.format(record))["timestamp"])

    assert stamps == [
        "1970-01-01T00:00:00.500Z",
        "1970-01-01T00:00:00.750Z",
        "1970-01-01T00:01:01.250Z",
        "1970-01-01T00:00:00.500Z",
    ]
