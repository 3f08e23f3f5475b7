"""Run the tool server: ``run_tool_server(settings)`` (what ``keel serve tools`` calls).

``python -m agentkeel.tools.serve [package.module ...]`` runs it with settings
from ``KEEL_CONFIG`` and the ``KEEL_*`` environment, serving the given tool
modules too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from contextlib import ExitStack

from agentkeel.config.layers import load_settings
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import KeelError
from agentkeel.secrets.redact import SecretRedactor, redact_logs
from agentkeel.telemetry.audit_file import install_audit_file
from agentkeel.telemetry.logging import configure_logging
from agentkeel.telemetry.tracing import install_tracing
from agentkeel.tools.server import create_app
from agentkeel.web.serve import EXIT_ERROR, run_until_signal

logger = logging.getLogger("agentkeel.tools.serve")


def run_tool_server(settings: KeelSettings, *, tools_modules: Sequence[str] = ()) -> int:
    """Serve MCP tools on ``tools.server.host:port`` until SIGTERM or Ctrl-C.

    ``tools_modules`` (from ``--tools``) are served in addition to
    ``tools.server.tools_modules``. Blocks; returns the process exit code.
    """
    sinks = configure_logging(service="tools", level=settings.log_level, settings=settings.logging)
    try:
        # Shut down (the last spans exported) before the log sinks close: its errors are logged.
        with ExitStack() as stack:
            return _run_tool_server(settings, tools_modules, stack)
    finally:
        sinks.close()


def _run_tool_server(settings: KeelSettings, tools_modules: Sequence[str], stack: ExitStack) -> int:
    redact_logs(SecretRedactor())
    if tools_modules:
        server = settings.tools.server
        merged = [
            *server.tools_modules,
            *(m for m in tools_modules if m not in server.tools_modules),
        ]
        settings = settings.model_copy(
            update={
                "tools": settings.tools.model_copy(
                    update={"server": server.model_copy(update={"tools_modules": merged})}
                )
            }
        )
    try:
        stack.enter_context(install_tracing(settings.tracing, service="tools"))
        app = create_app(settings)
        # The app's redactor also knows the secret values the server read.
        redact_logs(app.state.redactor)
        install_audit_file(settings.data_dir, service="tools", registry=app.state.registry)
    except KeelError as exc:
        logger.error("cannot start the tool server: %s", exc.message)
        return EXIT_ERROR
    server = settings.tools.server
    return run_until_signal(app, host=server.host, port=server.port, service="tool")


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m agentkeel.tools.serve [package.module ...]``."""
    args = sys.argv[1:] if argv is None else argv
    try:
        settings = load_settings().settings
    except KeelError as exc:
        print(f"keel: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    return run_tool_server(settings, tools_modules=args)


if __name__ == "__main__":
    sys.exit(main())
