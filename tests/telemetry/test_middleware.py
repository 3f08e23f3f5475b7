from __future__ import annotations

import io
import json
import logging

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from agentkeel.telemetry import (
    CorrelationMiddleware,
    HttpMetrics,
    HttpMetricsMiddleware,
    get_correlation_id,
)
from agentkeel.telemetry.access_log import ACCESS_LOGGER
from agentkeel.telemetry.log_categories import category_of
from agentkeel.telemetry.logging import configure_logging


def _app(registry: CollectorRegistry) -> Starlette:
    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"cid": get_correlation_id(), "id": request.path_params["id"]})

    async def turn(request: Request) -> JSONResponse:
        return JSONResponse({"session": request.path_params["session_id"]})

    async def broken(request: Request) -> JSONResponse:
        return JSONResponse({"error": "boom"}, status_code=500)

    async def probe(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/items/{id}", item),
            Route("/v1/sessions/{session_id}/messages", turn, methods=["POST"]),
            Route("/broken", broken),
            Route("/health", probe),
            Route("/ready", probe),
            Route("/metrics", probe),
        ]
    )
    app.add_middleware(HttpMetricsMiddleware, metrics=HttpMetrics(registry))
    app.add_middleware(CorrelationMiddleware)
    return app


async def test_correlation_id_taken_from_request_and_echoed() -> None:
    """A well-formed incoming id is kept in the context and echoed on the response."""
    app = _app(CollectorRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        r = await c.get("/items/1", headers={"X-Correlation-ID": "abc-123"})
    assert r.headers["x-correlation-id"] == "abc-123"
    assert r.json()["cid"] == "abc-123"


async def test_correlation_id_minted_when_absent_or_malformed() -> None:
    """No id or a hostile one yields a fresh id, never the raw header."""
    app = _app(CollectorRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        r1 = await c.get("/items/1")
        r2 = await c.get("/items/1", headers={"X-Correlation-ID": "bad id\twith spaces"})
    assert len(r1.headers["x-correlation-id"]) == 32
    assert r2.headers["x-correlation-id"] != "bad id\twith spaces"
    assert r1.json()["cid"] == r1.headers["x-correlation-id"]


async def test_http_metrics_use_route_template_not_raw_path() -> None:
    """Request metrics are labelled by route template, so ids never become labels."""
    registry = CollectorRegistry()
    app = _app(registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        await c.get("/items/1")
        await c.get("/items/2")
        await c.get("/nowhere")
    labels = {"route": "/items/{id}", "method": "GET", "status": "200"}
    assert registry.get_sample_value("agent_http_requests_total", labels) == 2
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert registry.get_sample_value("agent_http_requests_total", unmatched) == 1


async def test_one_access_line_per_request_with_route_template_and_session() -> None:
    """Each request gets one INFO line in the access category: method, route name, path
    template, status, duration and the session id the path names, under the request's
    correlation id; probes and scrapes get none."""
    stream = io.StringIO()
    configure_logging(service="agent", stream=stream)
    app = _app(CollectorRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        await c.post("/v1/sessions/s-42/messages", headers={"X-Correlation-ID": "cid-9"})
        for probe in ("/health", "/ready", "/metrics"):
            await c.get(probe)
    lines = [json.loads(raw) for raw in stream.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == ACCESS_LOGGER]
    assert len(access) == 1, lines
    line = access[0]
    assert {key: line[key] for key in ("method", "route", "path", "status")} == {
        "method": "POST",
        "route": "turn",
        "path": "/v1/sessions/{session_id}/messages",
        "status": 200,
    }
    assert (line["level"], line["category"]) == ("info", "access")
    assert (line["session_id"], line["correlation_id"]) == ("s-42", "cid-9")
    assert line["duration_ms"] >= 0


async def test_an_unexpected_5xx_is_a_warning_in_the_error_category(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 500 is logged once, as a WARNING (category error, kept longer), not as an access
    line."""
    caplog.set_level(logging.INFO)
    app = _app(CollectorRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        await c.get("/broken")
    lines = [r for r in caplog.records if r.name in (ACCESS_LOGGER, "agentkeel.http")]
    assert [(r.levelno, category_of(r).value) for r in lines] == [(logging.WARNING, "error")]


async def test_no_access_lines_when_they_are_turned_off(caplog: pytest.LogCaptureFixture) -> None:
    """With the access logger off (logging.access_lines: false) requests log nothing."""
    caplog.set_level(logging.INFO)
    logging.getLogger(ACCESS_LOGGER).disabled = True
    app = _app(CollectorRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        await c.get("/items/1")
    assert not [r for r in caplog.records if r.name == ACCESS_LOGGER]
