"""The router writes one access line per /v1 request it answers, on the task path and on
the fast path alike, and none for its probes and scrapes."""

from __future__ import annotations

import logging

import httpx
import pytest

from agentkeel.telemetry.access_log import ACCESS_LOGGER
from agentkeel.telemetry.log_categories import category_of
from tests.router.conftest import StartRouter
from tests.router.test_fast_path import session_backend


async def test_each_proxied_request_gets_one_access_line(
    start_router: StartRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """Create (task path), then turns on a pooled connection (fast path): each answered
    request is one INFO access line with the route's name, the path with the session id
    as a placeholder, the status, the version that served it and the caller's
    correlation id; /health, /ready and /metrics get none."""
    caplog.set_level(logging.INFO)
    backend = await session_backend("s-7", turns="ok").start()
    router = await start_router([f"v1={backend.url}"])
    async with httpx.AsyncClient(base_url=router.url) as client:
        created = await client.post("/v1/sessions", json={}, headers={"X-Correlation-ID": "c-1"})
        assert created.status_code == 201
        for number in (2, 3):
            turn = await client.post(
                "/v1/sessions/s-7/messages",
                json={"content": "hi"},
                headers={"X-Correlation-ID": f"c-{number}"},
            )
            assert turn.status_code == 200
        for probe in ("/health", "/ready", "/metrics"):
            await client.get(probe)
    await backend.stop()

    lines = [record for record in caplog.records if record.name == ACCESS_LOGGER]
    keys = ("method", "route", "path", "status", "version", "correlation_id")
    seen = [tuple(vars(r)[key] for key in keys) for r in lines]
    assert seen == [
        ("POST", "create_session", "/v1/sessions", 201, "v1", "c-1"),
        ("POST", "turn", "/v1/sessions/{session_id}/messages", 200, "v1", "c-2"),
        ("POST", "turn", "/v1/sessions/{session_id}/messages", 200, "v1", "c-3"),
    ]
    assert [vars(r).get("session_id") for r in lines] == [None, "s-7", "s-7"]
    assert {category_of(r).value for r in lines} == {"access"}
    assert all(vars(r)["duration_ms"] >= 0 for r in lines)


async def test_no_access_lines_when_they_are_off(
    start_router: StartRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    access = logging.getLogger(ACCESS_LOGGER)
    backend = await session_backend("s-8", turns="ok").start()
    router = await start_router([f"v1={backend.url}"])
    access.disabled = True
    try:
        async with httpx.AsyncClient(base_url=router.url) as client:
            assert (await client.post("/v1/sessions", json={})).status_code == 201
    finally:
        access.disabled = False
    await backend.stop()
    assert not [record for record in caplog.records if record.name == ACCESS_LOGGER]
