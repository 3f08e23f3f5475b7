"""JSON logs on stdout with the fields that every agentkeel service shares.

Fields: timestamp, level, service, logger, message, correlation_id, and where
known agent_id, session_id, turn, tool, duration_ms (pass them in ``extra=``),
the line's ``category`` (``log_categories.py``) and, inside a span, its
``trace_id`` and ``span_id``. One JSON object per line, ready for Loki or any log shipper.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

from opentelemetry import trace

from agentkeel.telemetry.correlation import get_correlation_id
from agentkeel.telemetry.log_categories import category_of

KNOWN_FIELDS = (
    "agent_id",
    "session_id",
    "user_id",
    "turn",
    "tool",
    "provider",
    "model",
    "duration_ms",
    "category",
    "event",
    "status",
    "method",
    "path",
    "version",
    "replica",
    "reason",
)

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
_SET_HERE = frozenset({"correlation_id", "category"})


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; unknown ``extra`` keys are kept too."""

    def __init__(self, *, service: str) -> None:
        super().__init__()
        self.service = service
        # One encoder for every line: json.dumps with options builds a new one per call.
        self._encoder = json.JSONEncoder(default=str, ensure_ascii=False)
        self._second = -1
        self._second_text = ""

    def _timestamp(self, record: logging.LogRecord) -> str:
        # Formatting the date is most of a timestamp's cost; it changes once a second.
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": self._timestamp(record),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", None) or get_correlation_id(),
            "category": category_of(record).value,
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            out["trace_id"] = format(span.trace_id, "032x")
            out["span_id"] = format(span.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in _SET_HERE and not key.startswith("_"):
                out[key] = value
        if record.exc_text:
            # Set by a filter (secrets redaction) that cleaned it.
            out["exception"] = record.exc_text
        elif record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return self._encoder.encode(out)


def configure_logging(*, service: str, level: str = "info", stream: IO[str] | None = None) -> None:
    """Route the root logger to one JSON handler on ``stream`` (stdout by default)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(service=service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The JSON lines carry none of these, and finding the caller walks the stack on
    # every record (the logging docs' own advice for a hot path).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # uvicorn's access log duplicates our request log line; keep its errors.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # httpx2 is the MCP SDK's HTTP client: one INFO line per tool call otherwise.
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "openai", "anthropic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The MCP SDK logs every message it sends at DEBUG, caller assertions included.
    logging.getLogger("mcp").setLevel(logging.INFO)
