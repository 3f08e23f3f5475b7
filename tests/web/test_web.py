from __future__ import annotations

import httpx
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentkeel.errors import Draining, TurnLimitReached
from agentkeel.web import MAX_BODY_BYTES, endpoint, parse_body


class Body(BaseModel):
    name: str
    count: int = 1


def _app() -> Starlette:
    async def echo(request: Request) -> Response:
        body = await parse_body(request, Body)
        return JSONResponse(body.model_dump())

    async def optional(request: Request) -> Response:
        body = await parse_body(request, Body, empty=b'{"name": "default"}')
        return JSONResponse(body.model_dump())

    async def draining(request: Request) -> Response:
        raise Draining("draining; retry on another replica")

    async def limit(request: Request) -> Response:
        raise TurnLimitReached("50 turns reached")

    async def boom(request: Request) -> Response:
        raise RuntimeError("secret internals")

    return Starlette(
        routes=[
            Route("/echo", endpoint(echo), methods=["POST"]),
            Route("/optional", endpoint(optional), methods=["POST"]),
            Route("/draining", endpoint(draining)),
            Route("/limit", endpoint(limit)),
            Route("/boom", endpoint(boom)),
        ]
    )


async def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(_app()), base_url="http://t")


async def test_bodies_are_validated_with_field_names() -> None:
    """Valid JSON parses; bad JSON is 400 invalid_json; a wrong type is 422 naming the field."""
    async with await _client() as c:
        ok = await c.post("/echo", json={"name": "a", "count": 2})
        bad_json = await c.post("/echo", content=b"{not json", headers={"content-type": "x"})
        wrong = await c.post("/echo", json={"name": "a", "count": "many"})
    assert ok.json() == {"name": "a", "count": 2}
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    assert wrong.status_code == 422
    assert wrong.json()["error"]["code"] == "invalid_request"
    assert "count" in wrong.json()["error"]["message"]


async def test_oversized_body_is_refused_before_parsing() -> None:
    """A body over the limit is 413 body_too_large."""
    async with await _client() as c:
        r = await c.post("/echo", content=b"x" * (MAX_BODY_BYTES + 1))
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


async def test_empty_body_default() -> None:
    """``empty`` stands in for a missing body; without it an empty body is invalid JSON."""
    async with await _client() as c:
        filled = await c.post("/optional")
        missing = await c.post("/echo")
    assert filled.json() == {"name": "default", "count": 1}
    assert missing.status_code == 400


async def test_errors_render_with_status_code_and_retry_after() -> None:
    """503 always carries Retry-After; a 429 that waiting cannot lift carries none."""
    async with await _client() as c:
        drain = await c.get("/draining")
        limit = await c.get("/limit")
    assert drain.status_code == 503 and drain.headers["retry-after"] == "1"
    assert drain.json() == {
        "error": {"code": "draining", "message": "draining; retry on another replica"}
    }
    assert limit.status_code == 429 and "retry-after" not in limit.headers
    assert limit.json()["error"]["code"] == "turn_limit_reached"


async def test_unexpected_errors_hide_internals() -> None:
    """Anything that is not a KeelError is a 500 internal_error without the exception text."""
    async with await _client() as c:
        r = await c.get("/boom")
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
    assert "secret internals" not in r.text
