"""Run one agent replica: ``run_agent_server(settings)`` (what ``keel serve agent`` calls).

The process handles SIGTERM and SIGINT itself instead of leaving them to
uvicorn: the first one starts a drain (``/ready`` 503, new work refused,
turns in flight finish for up to ``server.drain_timeout_s``), then the server
stops and the process exits 0. A second signal exits at once.
``POST /admin/drain`` starts the same drain.

``python -m agentkeel.runtime.serve [package.module:agent]`` runs a replica with
settings from ``KEEL_CONFIG`` and the ``KEEL_*`` environment.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack

from agentkeel.config.layers import load_settings
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import KeelError
from agentkeel.runtime.app import create_app
from agentkeel.runtime.draining import DrainState
from agentkeel.runtime.loader import load_agent
from agentkeel.secrets.redact import redact_logs
from agentkeel.telemetry.audit_file import install_audit_file
from agentkeel.telemetry.logging import configure_logging
from agentkeel.telemetry.tracing import install_tracing
from agentkeel.web.serve import EXIT_ERROR, EXIT_OK, STOP_SIGNALS, Server, loop_factory, make_server

logger = logging.getLogger("agentkeel.runtime.serve")

EXIT_FORCED = 130
"""Exit code after a second signal cut the drain short (turns may be lost)."""


def run_agent_server(
    settings: KeelSettings,
    *,
    agent_entrypoint: str | None = None,
    source_of: Callable[[str], str] | None = None,
) -> int:
    """Serve the agent until drained; blocks and returns the process exit code.
    ``source_of`` (``LoadedSettings.source_of``) names each setting's layer in
    ``GET /admin/config``."""
    # Replicas that share a log directory write files of their own: one writer per file.
    default_name = "agent" if settings.logging.dir is None else f"agent-{settings.server.port}"
    sinks = configure_logging(
        service=default_name, level=settings.log_level, settings=settings.logging
    )
    try:
        # Shut down (the last spans exported) before the log sinks close: its errors are logged.
        with ExitStack() as stack:
            return _run_agent_server(
                settings, stack, agent_entrypoint=agent_entrypoint, source_of=source_of
            )
    finally:
        sinks.close()


def _run_agent_server(
    settings: KeelSettings,
    stack: ExitStack,
    *,
    agent_entrypoint: str | None,
    source_of: Callable[[str], str] | None,
) -> int:
    try:
        stack.enter_context(
            install_tracing(
                settings.tracing, service="agent", instance_id=settings.server.replica_id
            )
        )
        agent = load_agent(agent_entrypoint) if agent_entrypoint else None
        app = create_app(settings, agent=agent, source_of=source_of)
        if app.state.redactor is not None:
            # Every value the app's resolver reads is redacted from every log line.
            redact_logs(app.state.redactor)
        install_audit_file(settings.data_dir, service="agent", registry=app.state.registry)
    except KeelError as exc:
        logger.error("cannot start the agent server: %s", exc.message)
        return EXIT_ERROR
    server = make_server(app, host=settings.server.host, port=settings.server.port)
    drain: DrainState = app.state.drain
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_serve(server, drain, settings))


async def _serve(server: Server, drain: DrainState, settings: KeelSettings) -> int:
    loop = asyncio.get_running_loop()
    forced = False

    def on_signal(signum: int) -> None:
        nonlocal forced
        name = signal.Signals(signum).name
        if not drain.start(reason=name):
            forced = True
            logger.warning(
                "second %s: exiting now with %d turn(s) still in flight",
                name,
                drain.in_flight,
                extra={"reason": name, "event": "drain"},
            )
            server.force_exit = True
            server.should_exit = True

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    drained = asyncio.create_task(_drain_then_stop(server, drain, settings))
    try:
        await server.serve()
    except SystemExit as exc:
        # uvicorn exits this way when the app's startup fails (bad store URL, ...).
        logger.error("the agent server did not start; see the errors above")
        return int(exc.code) if isinstance(exc.code, int) else EXIT_ERROR
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        if not drained.done():
            drained.cancel()
    if forced:
        return EXIT_FORCED
    if not server.started:
        return EXIT_ERROR
    return EXIT_OK


async def _drain_then_stop(server: Server, drain: DrainState, settings: KeelSettings) -> None:
    await drain.wait_requested()
    timeout = settings.server.drain_timeout_s
    try:
        async with asyncio.timeout(timeout):
            await drain.wait_idle()
        finished = True
    except TimeoutError:
        finished = False
    if finished:
        logger.info(
            "drain finished: %d turn(s) completed during the drain in %.1fs; stopping",
            drain.completed_while_draining,
            drain.elapsed(),
            extra={"event": "drain"},
        )
    else:
        logger.warning(
            "drain timed out after %.0fs (server.drain_timeout_s) with %d turn(s) still in "
            "flight; stopping anyway",
            timeout,
            drain.in_flight,
            extra={"event": "drain"},
        )
    server.should_exit = True


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m agentkeel.runtime.serve [entrypoint]``."""
    args = sys.argv[1:] if argv is None else argv
    try:
        loaded = load_settings()
    except KeelError as exc:
        print(f"keel: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    return run_agent_server(
        loaded.settings, agent_entrypoint=args[0] if args else None, source_of=loaded.source_of
    )


if __name__ == "__main__":
    sys.exit(main())
