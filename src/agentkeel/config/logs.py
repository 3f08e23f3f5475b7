"""``LoggingSettings`` (``logging:``): where each service writes its JSON lines, and how
long each category of line is kept.

Every line carries one of five categories (``telemetry/log_categories.py``). With a
log directory set (``keel up`` sets ``<data_dir>/logs``), each service also writes its
lines to ``<dir>/<category>/<service>.jsonl``, rotated by size and by day, and
``keel logs prune`` deletes rotated files older than their category's retention.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_RETENTION_DAYS: dict[str, int] = {
    "reasoning_trace": 7,
    "tool_call": 30,
    "error": 90,
    "audit": 365,
    "access": 30,
}
"""Days each category is kept; the guide's four, plus request lines at 30."""


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
        "own (router, memory, tools, agent-<port>). keel up names each child.",
    )
    retention_days: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_RETENTION_DAYS),
        description="Days to keep each category's files (reasoning_trace, tool_call, error, "
        "audit, access).",
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
