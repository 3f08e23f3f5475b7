"""Metric families, each built on a registry that the app passes in.

No metric is created at import time and the global default registry is never
used, so two apps in one process (tests, benchmarks) never collide. Label
values are bounded: providers, models, tools, routes, statuses. Never a session
or a user id.

Behavioural families of a replica carry a ``version`` label (the replica's
``agent.version``, one value per deployed version), so the canary judge can
compare versions from ``/metrics`` or Prometheus. The version is fixed per
process: it is passed to the metrics object once and bound into its
``Children`` helpers, so a hot path never passes it.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agentkeel.telemetry import semconv

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MODEL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
TURN_TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
RATIO_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
FEEDBACK_BUCKETS = (0, 0.25, 0.5, 0.75, 1, 2, 3, 4, 5)

DEFAULT_VERSION = "v1"
"""The label value when a caller names no version (``agent.version``'s default)."""

BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}

_Family = TypeVar("_Family", Counter, Gauge, Histogram)


class Children(Generic[_Family]):
    """The children of one labelled metric family, each built once.

    ``family.labels(...)`` validates the values, builds a key and takes the
    family's lock on every call; code that records on every request or turn
    calls this instead. Label values are bounded (see above), so this is too.

    >>> turns = Children(metrics.turns)
    >>> turns("agent-1", "ok", "v1").inc()

    ``bound`` holds values fixed for the process (the replica's version),
    appended after the caller's: ``Children(metrics.turns, bound=("v2",))("agent-1", "ok")``
    is the child ``agent="agent-1", status="ok", version="v2"``.
    """

    __slots__ = ("_bound", "_children", "_family")

    def __init__(self, family: _Family, *, bound: tuple[str, ...] = ()) -> None:
        self._family: _Family = family
        self._bound = bound
        self._children: dict[tuple[str, ...], _Family] = {}

    def __call__(self, *values: str) -> _Family:
        """The child for these label values, in the family's label order (bound ones last)."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._family.labels(*values, *self._bound)
        return child


class HttpMetrics:
    """Request rate, errors and duration per route (the route template, not the raw path)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "agent_http_requests_total",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "agent_http_request_duration_seconds",
            "HTTP request duration by route and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "agent_http_requests_in_flight", "HTTP requests being served.", registry=registry
        )
        # Per-request lookups: (route, method, status) and (route, method).
        self.requests_for = Children(self.requests)
        self.duration_for = Children(self.duration)


class ModelMetrics:
    """Model gateway: latency, errors, retries, fallbacks and breaker state per provider.

    ``version`` labels the request duration (its count is the successful calls) and
    the errors, so a version's model error rate is errors / (errors + successes).
    """

    def __init__(self, registry: CollectorRegistry, *, version: str = DEFAULT_VERSION) -> None:
        self.version = version
        self.duration = Histogram(
            "agent_model_request_duration_seconds",
            "Model request duration per provider (successful calls).",
            ["provider", "model", "version"],
            buckets=MODEL_BUCKETS,
            registry=registry,
        )
        genai = [
            semconv.prom_label(semconv.GEN_AI_OPERATION_NAME),
            semconv.prom_label(semconv.GEN_AI_PROVIDER_NAME),
            semconv.prom_label(semconv.GEN_AI_REQUEST_MODEL),
        ]
        self.operation_duration = Histogram(
            semconv.PROM_OPERATION_DURATION,
            f"OpenTelemetry GenAI {semconv.SEMCONV_VERSION}: duration of a client operation.",
            genai,
            buckets=MODEL_BUCKETS,
            registry=registry,
        )
        self.token_usage = Histogram(
            semconv.PROM_TOKEN_USAGE,
            f"OpenTelemetry GenAI {semconv.SEMCONV_VERSION}: tokens used per operation, by "
            "type (input/output).",
            [*genai, semconv.prom_label(semconv.GEN_AI_TOKEN_TYPE)],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "agent_model_errors_total",
            "Model request failures (each attempt) per provider and kind (timeout, "
            "rate_limited, server, ...).",
            ["provider", "model", "kind", "version"],
            registry=registry,
        )
        self.retries = Counter(
            "agent_model_retries_total",
            "Retries of a model request on the same provider.",
            ["provider"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "agent_model_fallbacks_total",
            "Requests passed on to the next provider in the chain.",
            ["from_provider", "to_provider"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            "agent_model_breaker_state",
            "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.",
            ["provider"],
            registry=registry,
        )
        self.breaker_transitions = Counter(
            "agent_model_breaker_transitions_total",
            "Breaker state changes per provider and target state.",
            ["provider", "state"],
            registry=registry,
        )
        self.key_links = Counter(
            "agent_model_key_link",
            "Model calls per provider by the key chain link that served them "
            "(byok, org, platform).",
            ["provider", "link"],
            registry=registry,
        )
        # Per-call lookups on the gateway's paths.
        bound = (version,)
        self.duration_for = Children(self.duration, bound=bound)
        self.errors_for = Children(self.errors, bound=bound)
        self.operation_duration_for = Children(self.operation_duration)
        self.token_usage_for = Children(self.token_usage)

    def key_link_served(self, provider: str, link: str) -> None:
        """Count one model call served with the ``link`` key (the key chain calls this)."""
        self.key_links.labels(provider=provider, link=link).inc()


def _tool_call_families(
    registry: CollectorRegistry, extra: tuple[str, ...] = ()
) -> tuple[Counter, Histogram]:
    """``agent_tool_calls_total`` and its duration histogram: a replica counts the calls
    its agents make (``extra=("version",)``), a tool server the calls it serves (from
    every version, so without one), under the same names."""
    calls = Counter(
        "agent_tool_calls_total",
        "Tool calls by tool and status (success, failure, timeout, rejected).",
        ["tool", "status", *extra],
        registry=registry,
    )
    duration = Histogram(
        "agent_tool_call_duration_seconds",
        "Tool call duration by tool.",
        ["tool", *extra],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    return calls, duration


class AgentMetrics:
    """The agent runtime: tokens, tools, context, sessions, turns and guardrails.

    ``version`` (the replica's ``agent.version``) labels the behavioural families:
    tokens, tool calls, context utilization, turns, turn duration and tokens,
    guardrail interventions and feedback. Record them through the ``*_for``
    helpers, which bind it.
    """

    def __init__(self, registry: CollectorRegistry, *, version: str = DEFAULT_VERSION) -> None:
        self.version = version
        self.tokens = Counter(
            "agent_tokens_consumed_total",
            "Tokens consumed, by model, type (input/output) and agent.",
            ["model", "type", "agent", "version"],
            registry=registry,
        )
        self.tool_calls, self.tool_duration = _tool_call_families(registry, ("version",))
        self.context_utilization = Gauge(
            "agent_context_utilization_ratio",
            "Tokens in context divided by the model's context window, at the latest model call.",
            ["agent", "version"],
            registry=registry,
        )
        self.context_utilization_calls = Histogram(
            "agent_model_context_utilization_ratio",
            "Tokens in context divided by the model's context window, at each model call.",
            ["agent", "version"],
            buckets=RATIO_BUCKETS,
            registry=registry,
        )
        self.session_duration = Histogram(
            "agent_session_duration_seconds",
            "Session length from creation to end.",
            ["agent"],
            buckets=(1, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400),
            registry=registry,
        )
        self.turns_per_session = Histogram(
            "agent_turns_per_session",
            "Turns in a session when it ends.",
            ["agent"],
            buckets=(1, 2, 3, 5, 8, 13, 21, 34, 50, 100),
            registry=registry,
        )
        self.output_redactions = Counter(
            "agent_output_redactions_total",
            "Secrets replaced in output before it was returned or logged, by kind "
            "(known_secret, openai_key, jwt, ...) and where (reply, tool_result, log).",
            ["kind", "where"],
            registry=registry,
        )
        self.active_sessions = Gauge(
            "agent_active_sessions",
            "Sessions in the shared store whose end is not recorded yet (idle ones the "
            "sweeper has not ended yet included).",
            registry=registry,
        )
        self.live_sessions = Gauge(
            "agent_live_sessions",
            "Live sessions (not ended, not idle, not past their maximum duration) in the "
            "shared store, by the version that started them; every replica reports the same "
            "figure, so aggregate with max, not sum.",
            ["version"],
            registry=registry,
        )
        self.replica_live_sessions = Gauge(
            "agent_replica_live_sessions",
            "Live sessions whose latest turn (or creation) this replica served (sessions "
            "last served by a replica that is gone count for none of the live ones).",
            registry=registry,
        )
        self.sessions_ended = Counter(
            "agent_sessions_ended_total",
            "Session ends this replica recorded, by reason (deleted, idle_timeout, max_duration).",
            ["agent", "reason"],
            registry=registry,
        )
        self.sessions_purged = Counter(
            "agent_sessions_purged_total",
            "Ended sessions whose transcripts this replica purged after the retention period.",
            registry=registry,
        )
        self.turns = Counter(
            "agent_turns_total",
            "Turns by agent and outcome (ok, or the error code).",
            ["agent", "status", "version"],
            registry=registry,
        )
        self.turn_duration = Histogram(
            "agent_turn_duration_seconds",
            "Turn duration from request to commit.",
            ["agent", "version"],
            buckets=MODEL_BUCKETS,
            registry=registry,
        )
        self.turn_tokens = Histogram(
            "agent_turn_tokens",
            "Tokens (input and output, every model call) of one committed turn.",
            ["agent", "version"],
            buckets=TURN_TOKEN_BUCKETS,
            registry=registry,
        )
        self.turns_in_flight = Gauge(
            "agent_turns_in_flight", "Turns running on this replica.", registry=registry
        )
        self.guardrail_events = Counter(
            "agent_guardrail_events_total",
            "Guardrail interventions (turn_limit, step_limit, token_budget, tool_storm, "
            "tool_rate_limit, prompt_injection, context_trimmed, input_too_large, input_empty, "
            "memory_write_off).",
            ["guardrail", "agent", "version"],
            registry=registry,
        )
        self.feedback = Histogram(
            "agent_feedback_score",
            "User-satisfaction scores recorded through the feedback endpoint.",
            ["agent", "version"],
            buckets=FEEDBACK_BUCKETS,
            registry=registry,
        )
        self.draining = Gauge(
            "agent_draining", "1 while this replica drains, else 0.", registry=registry
        )
        # Per-turn lookups; the version is bound in.
        bound = (version,)
        self.turns_for = Children(self.turns, bound=bound)
        self.turn_duration_for = Children(self.turn_duration, bound=bound)
        self.turn_tokens_for = Children(self.turn_tokens, bound=bound)
        self.tokens_for = Children(self.tokens, bound=bound)
        self.tool_calls_for = Children(self.tool_calls, bound=bound)
        self.tool_duration_for = Children(self.tool_duration, bound=bound)
        self.context_utilization_for = Children(self.context_utilization, bound=bound)
        self.context_utilization_calls_for = Children(self.context_utilization_calls, bound=bound)
        self.guardrails_for = Children(self.guardrail_events, bound=bound)
        self.feedback_for = Children(self.feedback, bound=bound)


class ToolMetrics:
    """The guarded tools client: breakers per MCP server and tool, discovery, limits.

    ``agent_tool_calls_total`` and the call duration histogram live on
    ``AgentMetrics`` (every call passes the turn's guarded handle); these are
    the client's own figures.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.breaker_state = Gauge(
            "agent_tool_breaker_state",
            "Circuit breaker state per MCP server and tool: 0 closed, 1 half-open, 2 open.",
            ["server", "tool"],
            registry=registry,
        )
        self.breaker_transitions = Counter(
            "agent_tool_breaker_transitions_total",
            "Tool breaker state changes per MCP server and target state.",
            ["server", "state"],
            registry=registry,
        )
        self.server_calls = Counter(
            "agent_tool_server_calls_total",
            "Tool calls per MCP server (or 'local') and status, as the client saw them.",
            ["server", "status"],
            registry=registry,
        )
        self.server_duration = Histogram(
            "agent_tool_server_call_duration_seconds",
            "Tool call duration per MCP server and tool, measured by the client.",
            ["server", "tool"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.discovery_errors = Counter(
            "agent_tool_discovery_errors_total",
            "Failed tool discoveries (tools/list) per MCP server.",
            ["server"],
            registry=registry,
        )
        self.tools_discovered = Gauge(
            "agent_tool_server_tools",
            "Tools offered by each MCP server at the latest discovery.",
            ["server"],
            registry=registry,
        )
        self.refusals = Counter(
            "agent_tool_refusals_total",
            "Calls the client refused before reaching a tool, by reason (breaker_open, "
            "rate_limited, session_budget).",
            ["tool", "reason"],
            registry=registry,
        )
        self.truncated = Counter(
            "agent_tool_results_truncated_total",
            "Tool results cut to tools.max_result_chars.",
            ["tool"],
            registry=registry,
        )


class ToolServerMetrics:
    """The tool server: calls it served, by tool and status, and their duration."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.tool_calls, self.tool_duration = _tool_call_families(registry)


class SecretMetrics:
    """Each configured secret's age and when it is due for rotation, on every service.

    ``secret`` is a configured name (``openai_api_key``, ``admin_token``), never a
    per-user or per-organization path, so the label stays bounded. Values are read
    at scrape time (``web/secrets_admin.HeldSecrets`` sets the functions).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.age = Gauge(
            "agent_secret_age_seconds",
            "Seconds since the secret's current version was created.",
            ["secret"],
            registry=registry,
        )
        self.due = Gauge(
            "agent_secret_rotation_due_timestamp_seconds",
            "Unix time at which the secret's current version is due for rotation.",
            ["secret"],
            registry=registry,
        )


class FlagMetrics:
    """Feature flags: evaluations per flag and variant, and the flag file's reloads.

    ``flag`` is a live setting's key (``KeelSettings.LIVE``) and ``variant`` a variant
    the accepted document declares, or ``default`` (no variant: the settings below),
    ``disabled``, ``error`` or ``other`` (a variant the document does not declare), so
    both labels stay bounded.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.evaluations = Counter(
            "agent_flag_evaluations_total",
            "Feature flag evaluations at the start of a turn, by flag and variant served.",
            ["flag", "variant"],
            registry=registry,
        )
        self.valid = Gauge(
            "agent_flags_valid",
            "1 when the flag file in force is the current file; 0 when the current file was "
            "refused or has disappeared and the last good flags stay in force.",
            registry=registry,
        )
        self.reloads = Counter(
            "agent_flags_reloads_total",
            "Changed flag files checked, by outcome (applied, rejected).",
            ["outcome"],
            registry=registry,
        )
        self.applied_at = Gauge(
            "agent_flags_applied_timestamp_seconds",
            "Unix time at which the flags in force were put in force on this replica.",
            registry=registry,
        )
        self.evaluations_for = Children(self.evaluations)


class OverridesMetrics:
    """The per-user and per-organization overrides file of one replica.

    ``agent_overrides_valid`` is 1 while the file in force is the file on disk, 0 after
    a change was refused (or the file disappeared) and the last good overrides stay.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.valid = Gauge(
            "agent_overrides_valid",
            "1 when the overrides file on disk is the one in force; 0 when its latest "
            "content was refused and the last good overrides stay.",
            registry=registry,
        )
        self.reloads = Counter(
            "agent_overrides_reloads_total",
            "Changes of the overrides file read, by outcome (applied, rejected).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("applied", "rejected"):
            self.reloads.labels(outcome)


HEADROOM_BUCKETS = (0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CONSUMPTION_BUCKETS = (
    1_000,
    10_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    300_000_000,
)
"""Tokens in a quota window: around the default quotas (2M a user's day, 20M a user's
month, organizations' months in the hundreds of millions)."""


class QuotaMetrics:
    """Quotas and cost on a replica: spend, tokens on the caller's own keys, quota
    headroom and refusals, calls without a price.

    Headroom is a distribution over reservations, never per user:
    ``(limit - used - reserved) / limit`` of each user or organization quota a
    reservation touched, right after it (``TokenBudget`` observes it). Consumption is
    the same reservations' ``used + reserved`` in tokens: the distribution of what
    users (and organizations) have taken of their current day or month, without a user
    id; a user who calls more often is counted more often. Spend is the
    platform's only: calls served with a user's (``byok``) or an organization's
    (``org``) own key count in ``agent_byok_tokens_total`` instead.
    """

    def __init__(self, registry: CollectorRegistry, *, version: str = DEFAULT_VERSION) -> None:
        self.version = version
        self.spend = Counter(
            "agent_spend_dollars_total",
            "Platform spend in dollars (calls served with the platform's key), by model and "
            "agent, from the price table.",
            ["model", "agent", "version"],
            registry=registry,
        )
        self.byok_tokens = Counter(
            "agent_byok_tokens_total",
            "Tokens of calls served with the caller's own key (link byok: the user's, org: "
            "the organization's): usage that is no platform spend.",
            ["model", "type", "link", "agent", "version"],
            registry=registry,
        )
        self.unpriced = Counter(
            "agent_unpriced_calls_total",
            "Platform calls of a model the price table has no price for (counted as 0 spend).",
            ["model"],
            registry=registry,
        )
        self.headroom = Histogram(
            "agent_quota_headroom_ratio",
            "Share of a user or organization quota left after a reservation, by scope "
            "(user, organization) and period (day, month).",
            ["scope", "period"],
            buckets=HEADROOM_BUCKETS,
            registry=registry,
        )
        self.exhausted = Counter(
            "agent_quota_exhausted_total",
            "Model calls refused with 429 quota_exhausted, by scope (user, organization) and "
            "period (day, month).",
            ["scope", "period"],
            registry=registry,
        )
        self.consumed = Histogram(
            "agent_quota_consumed_tokens",
            "Tokens a user's or organization's current quota window holds (used + reserved) "
            "right after a reservation, by scope (user, organization) and period (day, "
            "month): the distribution of per-user consumption, without user ids.",
            ["scope", "period"],
            buckets=CONSUMPTION_BUCKETS,
            registry=registry,
        )
        bound = (version,)
        self.spend_for = Children(self.spend, bound=bound)
        self.byok_tokens_for = Children(self.byok_tokens, bound=bound)
        self.unpriced_for = Children(self.unpriced)
        self.headroom_for = Children(self.headroom)
        self.exhausted_for = Children(self.exhausted)
        self.consumed_for = Children(self.consumed)

    def observe_headroom(self, scope: str, period: str, ratio: float) -> None:
        """One reservation's headroom in one quota (``TokenBudget``'s observer)."""
        self.headroom_for(scope, period).observe(ratio)

    def observe_consumption(self, scope: str, period: str, tokens: int) -> None:
        """The tokens one quota window holds after a reservation (``TokenBudget``'s
        observer)."""
        self.consumed_for(scope, period).observe(tokens)

    def quota_exhausted(self, scope: str, period: str) -> None:
        """One call refused by a quota (``TokenBudget``'s observer)."""
        self.exhausted_for(scope, period).inc()
