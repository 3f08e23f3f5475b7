"""``AlertSettings`` (``alerts:``): the thresholds of the five alerts that
``keel render alerts`` writes, and where their runbook lives.

``docs/runbook.md`` explains each default.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AlertSettings(BaseModel):
    """Thresholds and windows of the five alerts."""

    model_config = ConfigDict(extra="forbid")

    runbook_url: str = Field(
        default="https://github.com/agentkeel/agentkeel/blob/main/docs/runbook.md",
        description="The runbook each alert links to (a section anchor is appended).",
    )
