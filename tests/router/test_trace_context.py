"""The router and the W3C trace context: a client's ``traceparent`` reaches the replica
unchanged, and the router's own lines about that request carry its trace."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from tests.router.backends import RawBackend, Seen, created, drop, echo
from tests.router.conftest import StartRouter

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


async def test_traceparent_passes_to_the_replica(start_router: StartRouter) -> None:
    """The replica sees the client's traceparent as sent (its turn joins the client's
    trace)."""
    backend = await RawBackend(echo).start()
    router = await start_router([f"v1={backend.url}"])
    async with httpx.AsyncClient(base_url=router.url) as client:
        answer = await client.post("/v1/x", content=b"{}", headers={"traceparent": TRACEPARENT})
    assert answer.status_code == 200
    assert backend.v1_requests[0].headers["traceparent"] == TRACEPARENT
    await backend.stop()


async def test_the_routers_line_about_a_request_carries_its_trace(
    start_router: StartRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica that drops a turn: the router's warning names the caller's trace and
    span (and the correlation id), so it shows next to the turn's other lines."""
    make_session = created("s1")

    async def drop_turns(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.path.endswith("/messages"):
            return await drop(seen, writer)
        return await make_session(seen, writer)

    dropper = await RawBackend(drop_turns).start()
    router = await start_router([f"v1={dropper.url}"], probe_interval_s=60)
    caplog.set_level(logging.WARNING, logger="agentkeel.router")
    async with httpx.AsyncClient(base_url=router.url) as client:
        session = (await client.post("/v1/sessions", json={"user_id": "u"})).json()["session_id"]
        answer = await client.post(
            f"/v1/sessions/{session}/messages",
            json={"content": "hi"},
            headers={"traceparent": TRACEPARENT, "X-Correlation-ID": "corr-r1"},
        )
    assert answer.json()["error"]["code"] == "upstream_lost"
    (lost,) = [r for r in caplog.records if "dropped the connection" in r.getMessage()]
    assert (lost.__dict__["trace_id"], lost.__dict__["span_id"]) == (TRACE_ID, SPAN_ID)
    assert lost.__dict__["correlation_id"] == "corr-r1"
    await dropper.stop()
