"""An ASGI app under uvicorn on a free loopback port, in a background thread, for tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import uvicorn
from starlette.types import ASGIApp


@contextmanager
def serve_in_thread(
    app: ASGIApp,
    *,
    what: str,
    http: Literal["auto", "h11", "httptools"] = "auto",
    start_timeout_s: float = 20.0,
) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 until the block ends; yields ``http://127.0.0.1:<port>``."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="off",
            access_log=False,
            http=http,
        )
    )
    thread = threading.Thread(target=server.run, name=what, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the {what} did not start on 127.0.0.1:{port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
