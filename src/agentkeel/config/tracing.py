"""``TracingSettings`` (``tracing:``): OpenTelemetry traces over OTLP/HTTP.

Off unless an endpoint is set. Spans follow the OpenTelemetry GenAI semantic
conventions at the version pinned in ``telemetry/semconv.py``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class TracingSettings(BaseModel):
    """Where spans go and how many are kept."""

    model_config = ConfigDict(extra="forbid")

    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector base URL, e.g. http://127.0.0.1:4318 (spans go to "
        "<endpoint>/v1/traces); unset = no tracing.",
    )
    headers_file: Path | None = Field(
        default=None,
        description="A file of 'name: value' lines sent with every export (a collector's "
        "auth header); kept out of the settings file.",
    )
    sample_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of new traces recorded (parent-based: a sampled caller's trace "
        "is always continued).",
    )
    capture_content: bool = Field(
        default=False,
        description="Put prompts, replies and tool arguments on spans (off: they may hold "
        "personal data).",
    )
