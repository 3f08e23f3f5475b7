"""Running a service's ASGI app under uvicorn, the same way for every service.

Each service process handles SIGTERM and SIGINT itself instead of leaving
them to uvicorn, whose handler re-raises the signal after shutdown (the
process would then die "killed by SIGTERM" instead of exiting 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

logger = logging.getLogger("agentkeel.serve")

EXIT_OK = 0
EXIT_ERROR = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_server(app: ASGIApp, *, host: str, port: int, graceful_s: float = 5.0) -> Server:
    """A uvicorn server with agentkeel's defaults: our JSON logging, no access log."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(graceful_s),
    )
    return Server(config)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it): its transports cost far
    less CPU per request than the default selector loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a plain install without uvicorn[standard]
        return None
    return uvloop.new_event_loop


def run_until_signal(app: ASGIApp, *, host: str, port: int, service: str) -> int:
    """Serve ``app`` until SIGTERM or Ctrl-C, then stop cleanly; returns the exit code
    (0 after a clean stop, 1 when the app could not start)."""
    server = make_server(app, host=host, port=port)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_serve(server, service))


async def _serve(server: Server, service: str) -> int:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True
        logger.info("%s: stopping the %s server", signal.Signals(signum).name, service)

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await server.serve()
    except SystemExit as exc:
        # uvicorn exits this way when the app's startup fails (bad store URL, ...).
        logger.error("the %s server did not start; see the errors above", service)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_ERROR
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    return EXIT_OK if server.started else EXIT_ERROR
