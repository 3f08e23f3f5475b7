"""``AlertSettings`` (``alerts:``): the thresholds of the five alerts that
``keel render alerts`` writes, and where their runbook lives.

Each alert has a section of its own with a threshold, a ``for_duration`` (how long
the condition must hold before the alert fires: Prometheus' ``for``), a minimum
traffic rate below which it stays silent, a severity and, optionally, a rate window
of its own (else ``alerts.window``)::

    alerts:
      window: 5m
      error_rate: {threshold: 0.02, for_duration: 5m}
      memory_latency: {threshold_s: 0.25}

``docs/runbook.md`` explains each default.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agentkeel.config.durations import duration_seconds

_STATUS = re.compile(r"^[a-z0-9_]+$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Labels each alert sets itself: the alert's name, its severity, its grouping labels.
_OWN_LABELS = frozenset(
    {"alertname", "severity", "agent", "version", "provider", "job", "instance"}
)


def _duration(text: str) -> str:
    duration_seconds(text)
    return text


def _window(text: str) -> str:
    if duration_seconds(text) <= 0:
        raise ValueError(f"a rate window must be longer than 0, got {text!r}; e.g. 5m")
    return text


def _labels(values: dict[str, str]) -> dict[str, str]:
    bad = [name for name in values if not _LABEL.match(name) or name in _OWN_LABELS]
    if bad:
        raise ValueError(
            f"label names must be Prometheus label names other than {sorted(_OWN_LABELS)}; "
            f"not {bad}"
        )
    return values


def _ratio(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError(f"a share is above 0 and at most 1 (0.05 = 5 %), got {value!r}")
    return value


def _statuses(values: list[str]) -> list[str]:
    bad = [value for value in values if not _STATUS.match(value)]
    if bad:
        raise ValueError(f"turn statuses are error codes such as rate_limited; not {bad}")
    return values


Duration = Annotated[str, AfterValidator(_duration)]
"""A Prometheus duration (``0s`` allowed), e.g. a ``for``."""
Window = Annotated[str, AfterValidator(_window)]
"""A Prometheus duration above 0: the range of ``rate()``."""
Ratio = Annotated[float, AfterValidator(_ratio)]
"""A share in (0, 1]: 0.05 is 5 %."""
Seconds = Annotated[float, Field(gt=0)]
Rate = Annotated[float, Field(ge=0)]
Severity = Literal["critical", "warning"]

DEFAULT_RUNBOOK_URL = "https://github.com/agentkeel/agentkeel/blob/main/docs/runbook.md"
"""A placeholder that renders: set ``alerts.runbook_url`` to where your runbook is served
(``keel render alerts`` warns while it is left at this)."""

CALLER_STATUSES: tuple[str, ...] = (
    # What the caller sent: 4xx answers.
    "bad_request",
    "invalid_request",
    "input_empty",
    "input_too_large",
    "prompt_injection_blocked",
    "not_found",
    "session_not_found",
    "session_ended",
    "unauthorized",
    "caller_assertion_refused",
    "forbidden",
    "byok_rejected",
    "memory_writes_off",
    "conflict",
    "turn_in_progress",
    "turn_conflict",
    # Limits the caller ran into: 429 answers.
    "limit_exceeded",
    "turn_limit_reached",
    "token_budget_exhausted",
    "quota_exhausted",
    "rate_limited",
    "too_many_concurrent_turns",
    # A replica that drains answers 503 draining and the router sends the turn on.
    "draining",
)
"""Turn statuses (``agent_turns_total{status}``) that are not the service's fault: the
error-rate alert counts neither them nor their turns."""


class _Alert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    for_duration: Duration
    min_rps: Rate
    severity: Severity
    window: Window | None = Field(
        default=None, description="The rate window of this alert; unset = alerts.window."
    )


class ErrorRateAlert(_Alert):
    """``AgentErrorRateSpike``: failed turns (server-side) out of turns, per agent and
    version."""

    threshold: Ratio = Field(
        default=0.05, description="Share of turns that fail with a server-side status."
    )
    for_duration: Duration = "2m"
    min_rps: Rate = Field(
        default=0.1,
        description="Turns per second (of one agent and version) below which "
        "the alert stays silent.",
    )
    severity: Severity = "critical"
    ignored_statuses: Annotated[list[str], AfterValidator(_statuses)] = Field(
        default_factory=lambda: list(CALLER_STATUSES),
        description="Turn statuses that are the caller's doing, not counted (4xx answers, "
        "draining).",
    )


class ContextExhaustionAlert(_Alert):
    """``AgentContextWindowExhaustion``: the p-quantile of context window use per model
    call, per agent and version."""

    threshold: Ratio = Field(
        default=0.9, description="Share of the context window the quantile must exceed."
    )
    for_duration: Duration = "10m"
    min_rps: Rate = Field(default=0.05, description="Model calls per second, at least.")
    severity: Severity = "warning"


class MemoryLatencyAlert(_Alert):
    """``AgentMemoryLatencyDegraded``: the p-quantile of the memory operations agents wait
    on, per memory server."""

    threshold_s: Seconds = Field(default=0.5, description="Seconds the quantile must exceed.")
    for_duration: Duration = "10m"
    min_rps: Rate = Field(default=0.1, description="Memory operations per second, at least.")
    severity: Severity = "warning"


class ModelTimeoutAlert(_Alert):
    """``AgentModelTimeoutRate``: model call attempts that timed out out of all
    attempts, per provider and version."""

    threshold: Ratio = Field(default=0.05, description="Share of attempts that time out.")
    for_duration: Duration = "5m"
    min_rps: Rate = Field(default=0.05, description="Model call attempts per second, at least.")
    severity: Severity = "warning"


class SessionDurationAlert(_Alert):
    """``AgentSessionDurationAbnormal``: the p-quantile of the length of the sessions that
    ended, per agent."""

    threshold_s: Seconds = Field(
        default=3600, description="Seconds the quantile of session length must exceed."
    )
    for_duration: Duration = "15m"
    min_rps: Rate = Field(
        default=0.005, description="Session ends per second (0.005 = 18 an hour), at least."
    )
    severity: Severity = "warning"
    window: Window | None = Field(
        default="1h", description="Sessions end far less often than turns: a longer window."
    )


class AlertSettings(BaseModel):
    """Thresholds and windows of the five alerts."""

    model_config = ConfigDict(extra="forbid")

    runbook_url: str = Field(
        default=DEFAULT_RUNBOOK_URL,
        description="Where your copy of docs/runbook.md is served; each alert links to its "
        "section and its playbook there (an anchor is appended). The default is a "
        "placeholder: keel render alerts warns while it is left at it.",
    )
    window: Window = Field(
        default="5m", description="The rate window of every alert that names none of its own."
    )
    quantile: float = Field(
        default=0.95,
        gt=0,
        lt=1,
        description="The quantile the histogram alerts (context, memory latency, session "
        "length) compare with their threshold.",
    )
    labels: Annotated[dict[str, str], AfterValidator(_labels)] = Field(
        default_factory=dict,
        description="Labels added to every alert (team, service), for Alertmanager's routes.",
    )
    error_rate: ErrorRateAlert = Field(default_factory=ErrorRateAlert)
    context_exhaustion: ContextExhaustionAlert = Field(default_factory=ContextExhaustionAlert)
    memory_latency: MemoryLatencyAlert = Field(default_factory=MemoryLatencyAlert)
    model_timeouts: ModelTimeoutAlert = Field(default_factory=ModelTimeoutAlert)
    session_duration: SessionDurationAlert = Field(default_factory=SessionDurationAlert)

    def window_of(self, alert: _Alert) -> str:
        """The rate window ``alert`` uses: its own, else ``window``."""
        return alert.window or self.window
