"""``LoggingSettings`` (``logging:``): where each service writes its JSON lines, and how
long each category of line is kept.

Every line carries one of five categories, declared here (``Category``) with the days
each is kept by default; ``telemetry/log_categories.py`` says which line gets which. With
a log directory set (``keel up`` sets ``<data_dir>/logs``), each service also writes its
lines to ``<dir>/<category>/<service>.jsonl``, rotated by size and by day, and
``keel logs prune`` deletes what is older than its category's retention.

>>> LoggingSettings(retention_days={"reasoning_trace": 3}).retention_days["audit"]
365
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Category(enum.StrEnum):
    """The five categories of log line; each is a retention class."""

    REASONING_TRACE = "reasoning_trace"
    """What the agent did in a turn: model calls, steps, guardrail stops, memory use."""
    TOOL_CALL = "tool_call"
    """One line per tool call, on the replica that made it and the server that ran it."""
    ERROR = "error"
    """Warnings and errors of any kind (audit lines excepted)."""
    AUDIT = "audit"
    """Administrative actions (``telemetry/audit.py``)."""
    ACCESS = "access"
    """Requests at the edge of a service, and the service's own lifecycle."""


CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category)

DEFAULT_RETENTION_DAYS: dict[str, int] = {
    Category.REASONING_TRACE.value: 7,
    Category.TOOL_CALL.value: 30,
    Category.ERROR.value: 90,
    Category.AUDIT.value: 365,
    Category.ACCESS.value: 30,
}
"""Days each category is kept; the guide's four, plus request lines at 30."""

LogLevel = Literal["debug", "info", "warning", "error"]

# A service name is part of a file name: plain characters, and never the day-and-counter
# tail of a rotated file (``<service>.<YYYY-MM-DD>.<n>``), so prune cannot mistake an
# active file for a rotated one.
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ROTATED_TAIL = re.compile(r"\.\d{4}-\d{2}-\d{2}\.\d+$")


class LoggingSettings(BaseModel):
    """JSON log files per service and category, their rotation and their retention."""

    model_config = ConfigDict(extra="forbid")

    dir: Path | None = Field(
        default=None,
        description="Directory of the JSON log files (one folder per category); unset = "
        "stdout only. keel up sets <data_dir>/logs.",
    )
    service_name: str | None = Field(
        default=None,
        description="The service name in log lines and file names; unset = the service's "
        "own (router, memory, tools, agent; agent-<port> when writing files). keel up names "
        "each child.",
    )
    retention_days: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_RETENTION_DAYS),
        description="Days to keep each category's files ("
        + ", ".join(f"{category} {days}" for category, days in DEFAULT_RETENTION_DAYS.items())
        + "); a category left out keeps its default. Each service's stdout file "
        "(<service>.log) is kept as long as error.",
    )
    max_file_mb: float = Field(
        default=64, gt=0, description="A log file is rotated when it reaches this size."
    )
    access_lines: bool = Field(
        default=True,
        description="One access line per request (not for /metrics, /health, /ready).",
    )
    prune_interval_h: float = Field(
        default=24, gt=0, description="How often keel up runs keel logs prune."
    )
    stdout_level: LogLevel | None = Field(
        default=None,
        description="The lowest level also printed on stdout; unset = log_level without a "
        "log directory, warning with one (the files hold every line).",
    )

    @field_validator("service_name")
    @classmethod
    def _plain_service_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _SERVICE_NAME.match(value) or _ROTATED_TAIL.search(value):
            raise ValueError(
                f"logging.service_name {value!r} is not a usable file name: 1 to 100 letters, "
                "digits, '.', '_' or '-', starting with a letter or digit, and not ending "
                "like a rotated file (.YYYY-MM-DD.N)"
            )
        return value

    @field_validator("retention_days", mode="before")
    @classmethod
    def _known_categories(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        unknown = sorted(str(key) for key in value if key not in CATEGORIES)
        if unknown:
            raise ValueError(
                f"logging.retention_days names {', '.join(unknown)}, which is not a log "
                f"category; the categories are {', '.join(CATEGORIES)}"
            )
        # A category left out keeps its default, so setting one never drops the others.
        return {**DEFAULT_RETENTION_DAYS, **value}

    @field_validator("retention_days")
    @classmethod
    def _at_least_a_day(cls, value: dict[str, int]) -> dict[str, int]:
        short = {key: days for key, days in value.items() if days < 1}
        if short:
            key, days = next(iter(short.items()))
            raise ValueError(
                f"logging.retention_days.{key} is {days}; keep each category at least 1 day "
                "(files are pruned by whole UTC days, so 0 would delete today's lines)"
            )
        return value

    @property
    def max_file_bytes(self) -> int:
        return max(1, int(self.max_file_mb * 1024 * 1024))

    def directory(self, data_dir: Path) -> Path:
        """Where the log files are: ``dir`` when set, else ``<data_dir>/logs`` (what the
        ``keel logs`` commands read and ``keel up`` gives its children)."""
        return self.dir if self.dir is not None else self.output_directory(data_dir)

    def output_directory(self, data_dir: Path) -> Path:
        """Where ``keel up`` puts each child's stdout and stderr (``<service>.log``):
        ``<data_dir>/logs``, also when ``dir`` is elsewhere."""
        return data_dir / "logs"

    def name_for(self, default: str) -> str:
        """The service name: ``service_name`` when set, else ``default``."""
        return self.service_name or default

    def stdout_threshold(self, log_level: str) -> str:
        """The lowest level printed on stdout (see ``stdout_level``)."""
        if self.stdout_level is not None:
            return self.stdout_level
        return log_level if self.dir is None else "warning"
