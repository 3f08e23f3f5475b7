"""Log directories as the services leave them, for the reader, prune and CLI tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def log_line(at: datetime, service: str, message: str, **fields: Any) -> dict[str, Any]:
    """A line as ``JsonFormatter`` writes it (timestamp to the microsecond, UTC)."""
    return {
        "timestamp": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "level": fields.pop("level", "info"),
        "service": service,
        "logger": "agentkeel.test",
        "message": message,
        "correlation_id": fields.pop("correlation_id", None),
        "category": fields.pop("category", "access"),
        **fields,
    }


def write_log(directory: Path, category: str, name: str, lines: list[dict[str, Any]]) -> Path:
    """``<directory>/<category>/<name>`` holding ``lines`` (appended when it exists)."""
    path = directory / category / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps({**line, "category": category}) + "\n")
    return path
