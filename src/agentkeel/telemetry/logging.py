"""JSON logs with the fields that every agentkeel service shares: on stdout, and in
per-category files when ``logging.dir`` is set.

Fields: timestamp (UTC, to the microsecond, so the lines of several processes
merge in order), level, service, logger, message, correlation_id, and where
known agent_id, session_id, turn, tool, duration_ms (pass them in ``extra=``),
the line's ``category`` (``log_categories.py``) and, inside a span, its
``trace_id`` and ``span_id``. One JSON object per line, ready for Loki or any
log shipper.

With a log directory, every line also goes to
``<dir>/<category>/<service>.jsonl`` (``log_files.py``) through a
``QueueHandler``: the line is formatted (and redacted) in the thread that
logged it, where its correlation id and span are known, and written by one
``QueueListener`` thread, so a slow disk never stalls the event loop. The queue
is drained when the handler closes: ``LogSinks.close``, or ``logging.shutdown``
at interpreter exit; a line another thread queues while it closes is written too.
``file_sink`` is that handler on its own, for a process that keeps its own stdout
(``keel up``).

>>> sinks = configure_logging(service="memory", settings=LoggingSettings(dir=Path("logs")))
>>> sinks.close()   # at shutdown: every queued line is written
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import time
from dataclasses import dataclass
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from typing import IO, Any

from opentelemetry import trace

from agentkeel.config.logs import LoggingSettings
from agentkeel.telemetry.access_log import ACCESS_LOGGER
from agentkeel.telemetry.correlation import get_correlation_id
from agentkeel.telemetry.log_categories import category_of
from agentkeel.telemetry.log_files import CategoryFileHandler

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
    "route",
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
        self._second: tuple[int, str] = (-1, "")
        """The last second formatted and its text: one tuple, read and replaced whole,
        so a thread never pairs one second with another's text."""

    def _timestamp(self, record: logging.LogRecord) -> str:
        # Formatting the date is most of a timestamp's cost; it changes once a second.
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        micros = min(int((record.created - second) * 1_000_000 + 0.5), 999_999)
        return f"{cached[1]}.{micros:06d}Z"

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


class _AlreadyFormatted(logging.Formatter):
    """The line a ``QueueHandler`` formatted in the logging thread, as it is."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


class FileQueueHandler(QueueHandler):
    """Formats each record into its JSON line where it was logged and queues it for the
    ``CategoryFileHandler``, which one listener thread feeds; ``close`` drains the
    queue into the files and closes them."""

    def __init__(self, target: CategoryFileHandler, *, formatter: logging.Formatter) -> None:
        lines: queue.SimpleQueue[Any] = queue.SimpleQueue()
        super().__init__(lines)
        self.setFormatter(formatter)
        self.target = target
        target.setFormatter(_AlreadyFormatted())
        self._listener: QueueListener | None = QueueListener(lines, target)
        self._listener.start()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
            # stop() queues its sentinel and waits for the thread to reach it; what
            # another thread queued after the sentinel is still there.
            while True:
                try:
                    record: logging.LogRecord | None = listener.dequeue(False)
                except queue.Empty:
                    break
                if record is not None:  # None: the sentinel
                    listener.handle(record)
            self.target.close()
        super().close()


def file_sink(
    directory: Path, *, service: str, max_bytes: int, formatter: logging.Formatter | None = None
) -> FileQueueHandler:
    """The per-category files of ``service`` under ``directory``, written from a queue
    (``formatter``: a ``JsonFormatter`` for ``service`` unless given)."""
    target = CategoryFileHandler(directory=directory, service=service, max_bytes=max_bytes)
    return FileQueueHandler(target, formatter=formatter or JsonFormatter(service=service))


@dataclass(frozen=True, slots=True)
class LogSinks:
    """Where ``configure_logging`` sends the lines: the service name they carry and the
    log directory (``None``: stdout only)."""

    service: str
    directory: Path | None
    files: FileQueueHandler | None = None

    def close(self) -> None:
        """Write every queued line and close the files (stdout is left open)."""
        if self.files is not None:
            logging.getLogger().removeHandler(self.files)
            self.files.close()


def configure_logging(
    *,
    service: str,
    level: str = "info",
    stream: IO[str] | None = None,
    settings: LoggingSettings | None = None,
) -> LogSinks:
    """Route the root logger to JSON lines: on ``stream`` (stdout by default) and, with
    ``settings.dir``, into the per-category files. ``service`` is the name lines carry
    unless ``settings.service_name`` says otherwise. Replaces what an earlier call set up
    (its files are drained and closed)."""
    options = settings or LoggingSettings()
    name = options.name_for(service)
    formatter = JsonFormatter(service=name)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    handler.setLevel(options.stdout_threshold(level).upper())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, FileQueueHandler):
            old.close()
    root.addHandler(handler)
    files: FileQueueHandler | None = None
    if options.dir is not None:
        files = file_sink(
            options.dir, service=name, max_bytes=options.max_file_bytes, formatter=formatter
        )
        root.addHandler(files)
    root.setLevel(level.upper())
    logging.getLogger(ACCESS_LOGGER).disabled = not options.access_lines
    # The JSON lines carry none of these, and finding the caller walks the stack on
    # every record (the logging docs' own advice for a hot path).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # uvicorn's access log duplicates our request log line; keep its errors.
    logging.getLogger("uvicorn.access").disabled = True
    for server_logger in ("uvicorn", "uvicorn.error"):
        logging.getLogger(server_logger).handlers.clear()
        logging.getLogger(server_logger).propagate = True
    # httpx2 is the MCP SDK's HTTP client: one INFO line per tool call otherwise.
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "openai", "anthropic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The MCP SDK logs every message it sends at DEBUG, caller assertions included.
    logging.getLogger("mcp").setLevel(logging.INFO)
    return LogSinks(service=name, directory=options.dir, files=files)
