"""One logger's lines as the services write them (JSON), captured for a test."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agentkeel.telemetry.logging import JsonFormatter


@contextmanager
def json_lines(service: str, logger_name: str = "agentkeel") -> Iterator[io.StringIO]:
    """Every line of ``logger_name`` (and the loggers under it) at INFO and above,
    formatted as ``service`` formats them, while the block runs; the logger's handlers
    and level are put back after it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service=service))
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    """The lines captured so far, each parsed."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]
