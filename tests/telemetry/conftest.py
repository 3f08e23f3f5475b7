"""The logging tests change the root logger; each gets it back as it was."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from agentkeel.telemetry.access_log import ACCESS_LOGGER
from agentkeel.telemetry.logging import FileQueueHandler


@pytest.fixture(autouse=True)
def restored_root_logger() -> Iterator[None]:
    """Root handlers and level, and the access logger's switch, as before the test; file
    handlers a test configured are drained and closed (no listener thread outlives it)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger(ACCESS_LOGGER)
    disabled = access.disabled
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            if isinstance(handler, FileQueueHandler):
                handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    access.disabled = disabled
