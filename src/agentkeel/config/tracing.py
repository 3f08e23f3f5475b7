"""``TracingSettings`` (``tracing:``): OpenTelemetry traces over OTLP/HTTP.

Off unless an endpoint is set. A client's trace context is not adopted unless
``trust_incoming``: a caller that picks the trace id and the sampled flag would decide
what the collector keeps. Spans follow the OpenTelemetry GenAI semantic
conventions at the version pinned in ``telemetry/semconv.py``; the provider is
built by ``telemetry/tracing.py``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

TRACES_PATH = "/v1/traces"
"""Where an OTLP/HTTP receiver takes spans, under its base URL."""


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
        description="Share of new traces recorded (parent-based: a sampled trace from a "
        "trusted caller, or from a hop inside the stack, is always continued).",
    )
    capture_content: bool = Field(
        default=False,
        description="Put prompts, replies and tool arguments on spans, with secrets redacted "
        "(off: they may hold personal data).",
    )
    trust_incoming: bool = Field(
        default=False,
        description="Continue the trace a client's traceparent names (off: the front door, "
        "router or a replica a client reaches directly, drops a client's traceparent, "
        "tracestate and baggage and starts a trace of its own).",
    )

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"tracing.otlp_endpoint {value!r} is not an http(s) URL; give the collector's "
                "OTLP/HTTP base URL, e.g. http://127.0.0.1:4318 (spans go to its /v1/traces)"
            )
        return value

    @property
    def traces_url(self) -> str | None:
        """The URL spans are posted to: ``<otlp_endpoint>/v1/traces`` (an endpoint that
        already ends in ``/v1/traces`` is taken as it is)."""
        if self.otlp_endpoint is None:
            return None
        base = self.otlp_endpoint.rstrip("/")
        return base if base.endswith(TRACES_PATH) else base + TRACES_PATH
