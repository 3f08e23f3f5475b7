"""Run the memory server: ``run_memory_server(settings)`` (what ``keel serve memory`` calls).

``python -m agentkeel.memory.serve`` runs it with settings from ``KEEL_CONFIG``
and the ``KEEL_*`` environment.
"""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack

from agentkeel.config.layers import load_settings
from agentkeel.config.memory import MemorySettings
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import KeelError
from agentkeel.memory.app import create_app
from agentkeel.secrets.redact import SecretRedactor, redact_logs
from agentkeel.telemetry.audit_file import install_audit_file
from agentkeel.telemetry.logging import configure_logging
from agentkeel.telemetry.tracing import install_tracing
from agentkeel.web.serve import EXIT_ERROR, run_until_signal

logger = logging.getLogger("agentkeel.memory.serve")


def memory_settings_for(settings: KeelSettings) -> MemorySettings:
    """The ``memory`` section, with the data and secrets directories of the whole config
    when the section does not set its own."""
    memory = settings.memory
    updates: dict[str, object] = {"log_level": settings.log_level}
    if "data_dir" not in memory.model_fields_set:
        updates["data_dir"] = settings.data_dir / "memory"
    if "secrets_dir" not in memory.model_fields_set:
        updates["secrets_dir"] = settings.secrets_dir
    return memory.model_copy(update=updates)


def run_memory_server(settings: KeelSettings) -> int:
    """Serve the memory API until SIGTERM/Ctrl-C; blocks and returns the exit code."""
    memory = memory_settings_for(settings)
    sinks = configure_logging(service="memory", level=memory.log_level, settings=settings.logging)
    try:
        redact_logs(SecretRedactor())
        # Shut down (the last spans exported) before the log sinks close: its errors are logged.
        with ExitStack() as stack:
            try:
                stack.enter_context(install_tracing(settings.tracing, service="memory"))
                app = create_app(memory)
                # The stack's one audit file, in the top data directory (not memory's own).
                install_audit_file(settings.data_dir, service="memory", registry=app.state.registry)
            except KeelError as exc:
                logger.error("cannot start the memory server: %s", exc.message)
                return EXIT_ERROR
            return run_until_signal(app, host=memory.host, port=memory.port, service="memory")
    finally:
        sinks.close()


def main() -> int:
    """Entry point for ``python -m agentkeel.memory.serve``."""
    try:
        settings = load_settings().settings
    except KeelError as exc:
        print(f"keel: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    return run_memory_server(settings)


if __name__ == "__main__":
    sys.exit(main())
