"""The floor for the overhead benchmark: a bare Starlette endpoint under the same uvicorn.

``python -m bench._bare_server PORT`` serves ``GET /ready`` and ``POST /echo``
(JSON in, JSON out) with the uvicorn settings an agent replica uses.
"""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def ready(request: Request) -> Response:
    return JSONResponse({"status": "ready"})


async def echo(request: Request) -> Response:
    body = json.loads(await request.body())
    return JSONResponse({"reply": body.get("content", ""), "turn": 1})


def main() -> None:
    port = int(sys.argv[1])
    app = Starlette(routes=[Route("/ready", ready), Route("/echo", echo, methods=["POST"])])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
