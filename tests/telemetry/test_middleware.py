from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentkeel.telemetry import (
    CorrelationMiddleware,
    HttpMetrics,
    HttpMetricsMiddleware,
    get_correlation_id,
)


def _app(registry: CollectorRegistry) -> Starlette:
    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"cid": get_correlation_id(), "id": request.path_params["id"]})

    app = Starlette(routes=[Route("/items/{id}", item)])
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
