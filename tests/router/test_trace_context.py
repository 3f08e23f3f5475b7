"""The router and the W3C trace context: by default a client's ``traceparent``,
``tracestate`` and ``baggage`` stop at the router (the replica starts the trace); with
``tracing.trust_incoming`` the trace context reaches the replica unchanged and the
router's own lines about that request carry its trace; baggage never passes."""

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
CLIENT_CONTEXT = {
    "traceparent": TRACEPARENT,
    "tracestate": "vendor=forced",
    "baggage": "tenant=someone-else",
}


async def forwarded_headers(start_router: StartRouter, *, trusted: bool) -> dict[str, str]:
    """The headers the replica received for one request sent with CLIENT_CONTEXT."""
    backend = await RawBackend(echo).start()
    try:
        router = await start_router([f"v1={backend.url}"], trust_trace_context=trusted)
        async with httpx.AsyncClient(base_url=router.url) as client:
            answer = await client.post("/v1/x", content=b"{}", headers=CLIENT_CONTEXT)
        assert answer.status_code == 200
        return dict(backend.v1_requests[0].headers)
    finally:
        await backend.stop()


async def test_an_untrusted_clients_trace_context_stops_at_the_router(
    start_router: StartRouter,
) -> None:
    """By default (tracing.trust_incoming off) the replica gets none of the client's
    traceparent, tracestate or baggage: a forged sampled traceparent cannot pick the
    trace or force sampling."""
    seen = await forwarded_headers(start_router, trusted=False)
    assert not {"traceparent", "tracestate", "baggage"} & set(seen)
    assert seen["x-correlation-id"]  # the request itself went through


async def test_a_trusted_clients_trace_context_passes_but_never_its_baggage(
    start_router: StartRouter,
) -> None:
    """With trust: the replica sees traceparent and tracestate as sent (its turn joins
    the client's trace); the client's baggage is still dropped."""
    seen = await forwarded_headers(start_router, trusted=True)
    assert seen["traceparent"] == TRACEPARENT
    assert seen["tracestate"] == "vendor=forced"
    assert "baggage" not in seen


async def lost_turn_line(
    start_router: StartRouter, caplog: pytest.LogCaptureFixture, *, trusted: bool
) -> logging.LogRecord:
    """The router's warning about a replica that dropped a turn sent with traceparent."""
    make_session = created("s1")

    async def drop_turns(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.path.endswith("/messages"):
            return await drop(seen, writer)
        return await make_session(seen, writer)

    dropper = await RawBackend(drop_turns).start()
    try:
        router = await start_router(
            [f"v1={dropper.url}"], probe_interval_s=60, trust_trace_context=trusted
        )
        caplog.set_level(logging.WARNING, logger="agentkeel.router")
        async with httpx.AsyncClient(base_url=router.url) as client:
            created_session = await client.post("/v1/sessions", json={"user_id": "u"})
            session = created_session.json()["session_id"]
            answer = await client.post(
                f"/v1/sessions/{session}/messages",
                json={"content": "hi"},
                headers={"traceparent": TRACEPARENT, "X-Correlation-ID": "corr-r1"},
            )
        assert answer.json()["error"]["code"] == "upstream_lost"
    finally:
        await dropper.stop()
    (lost,) = [r for r in caplog.records if "dropped the connection" in r.getMessage()]
    return lost


async def test_the_routers_line_about_a_trusted_request_carries_its_trace(
    start_router: StartRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica that drops a turn: the router's warning names the trusted caller's trace
    and span (and the correlation id), so it shows next to the turn's other lines."""
    lost = await lost_turn_line(start_router, caplog, trusted=True)
    assert (lost.__dict__["trace_id"], lost.__dict__["span_id"]) == (TRACE_ID, SPAN_ID)
    assert lost.__dict__["correlation_id"] == "corr-r1"


async def test_the_routers_line_about_an_untrusted_request_names_no_client_trace(
    start_router: StartRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """Without trust the client's trace ids go nowhere, the router's own lines included;
    the correlation id still ties them together."""
    lost = await lost_turn_line(start_router, caplog, trusted=False)
    assert "trace_id" not in lost.__dict__ and "span_id" not in lost.__dict__
    assert lost.__dict__["correlation_id"] == "corr-r1"
