"""Run the router: ``run_router_server(settings)`` (what ``keel serve router`` calls).

On uvloop when installed. SIGTERM or Ctrl-C stops listening and gives the
requests in flight up to ``router.drain_timeout_s``; a second signal stops at
once. ``python -m agentkeel.router.serve`` runs it with settings from
``KEEL_CONFIG`` and the ``KEEL_*`` environment.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from agentkeel.config.layers import load_settings
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import KeelError
from agentkeel.router.app import create_router
from agentkeel.router.frontdoor import build_router_front_door
from agentkeel.secrets.redact import SecretRedactor, redact_logs
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.telemetry.audit_file import install_audit_file
from agentkeel.telemetry.logging import configure_logging
from agentkeel.telemetry.tracing import install_tracing
from agentkeel.web.serve import EXIT_ERROR, EXIT_OK, STOP_SIGNALS, loop_factory

__all__ = ["run_router_server"]

logger = logging.getLogger("agentkeel.router.serve")


def run_router_server(settings: KeelSettings) -> int:
    """Serve until SIGTERM/Ctrl-C; blocks and returns the exit code."""
    sinks = configure_logging(service="router", level=settings.log_level, settings=settings.logging)
    try:
        redact_logs(SecretRedactor())
        try:
            tracing = install_tracing(settings.tracing, service="router")
        except KeelError as exc:
            logger.error("cannot start the router: %s", exc.message)
            return EXIT_ERROR
        # Shut down (the last spans exported) while the log sinks still write its errors.
        with tracing, asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(_serve(settings))
    finally:
        sinks.close()


async def _serve(settings: KeelSettings) -> int:
    try:
        router = create_router(
            settings.router,
            data_dir=settings.data_dir,
            secrets_dir=settings.secrets_dir,
            front_door=build_router_front_door(
                settings, secrets=SecretResolver(secrets_dir=settings.secrets_dir)
            ),
            allow_request_keys=settings.secrets.key_chain.allow_request_keys,
            trust_trace_context=settings.tracing.trust_incoming,
        )
        install_audit_file(settings.data_dir, service="router", registry=router.registry)
        await router.start()
    except KeelError as exc:
        logger.error("cannot start the router: %s", exc.message)
        return EXIT_ERROR
    except OSError as exc:
        logger.error(
            "cannot start the router on %s:%d: %s (router.port; is another process using it?)",
            settings.router.host,
            settings.router.port,
            exc.strerror or exc,
        )
        return EXIT_ERROR
    if router.front_door is None:
        logger.warning(
            "auth is off: the router forwards /v1 requests from anyone (set auth.enabled: "
            "true, with API keys from keel keys create, to authenticate callers)"
        )
    _settle_garbage_collector()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    closing: asyncio.Task[None] | None = None

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            logger.warning("second %s: stopping now", name)
            if closing is not None:
                closing.cancel()
            return
        logger.info(
            "%s: the router stops taking connections; requests in flight get %g s",
            name,
            settings.router.drain_timeout_s,
        )
        stop.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await stop.wait()
        closing = asyncio.create_task(router.aclose())
        try:
            await closing
        except asyncio.CancelledError:
            await router.aclose(drain_timeout_s=0)
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    logger.info("router stopped")
    return EXIT_OK


# Young objects allowed before a collection: a request leaves few cycles behind, so
# collecting every 700 allocations (the default) is mostly wasted work.
_GC_GEN0_THRESHOLD = 20_000


def _settle_garbage_collector() -> None:
    """After start-up: what exists now (modules, settings, the table) lives as long as
    the process, so the collector stops walking it; young collections come less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(_GC_GEN0_THRESHOLD, gen1, gen2)


def main() -> int:
    """Entry point for ``python -m agentkeel.router.serve``."""
    try:
        settings = load_settings().settings
    except KeelError as exc:
        print(f"keel: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    return run_router_server(settings)


if __name__ == "__main__":
    sys.exit(main())
