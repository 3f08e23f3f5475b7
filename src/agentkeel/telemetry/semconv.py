"""The OpenTelemetry GenAI semantic conventions, at the one version keel follows.

The GenAI conventions are still marked Development and have renamed attributes
between releases (``gen_ai.system`` became ``gen_ai.provider.name`` in 1.37.0), so
every GenAI name keel puts on a span or a metric comes from here and nowhere else.
Moving to a newer version is a change to this module, its test and the README's
"Traces" section, nothing more.

Prometheus names are the OTLP-to-Prometheus translation of the OpenTelemetry ones
(dots become underscores, a unit of seconds becomes ``_seconds``).

Span names follow the conventions' ``{gen_ai.operation.name} {target}`` pattern
(``span_name``): ``invoke_agent support``, ``chat gpt-4o-mini``, ``execute_tool
calculator``. Where the conventions have no name (memory operations, the turn number,
the configured provider), keel's own attributes start with ``keel.``.

``gen_ai.provider.name`` is the provider's API kind: ``openai`` for any
OpenAI-compatible endpoint (llama.cpp's server included), ``anthropic``, and for a
provider the conventions have no value for (the scripted model) its own kind
(``scripted``); the configured provider name (``models[].name``) is ``keel.provider``.
"""

from __future__ import annotations

from typing import Final

SEMCONV_VERSION: Final = "1.37.0"
SCHEMA_URL: Final = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

# Operation names (gen_ai.operation.name).
OP_CHAT: Final = "chat"
OP_INVOKE_AGENT: Final = "invoke_agent"
OP_EXECUTE_TOOL: Final = "execute_tool"

# Provider names (gen_ai.provider.name) keel's providers report.
PROVIDER_OPENAI: Final = "openai"
PROVIDER_ANTHROPIC: Final = "anthropic"

# Tool types (gen_ai.tool.type): every keel tool is a function the model calls by name.
TOOL_TYPE_FUNCTION: Final = "function"

# Attributes.
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
GEN_AI_AGENT_ID: Final = "gen_ai.agent.id"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE: Final = "gen_ai.tool.type"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"
ERROR_TYPE: Final = "error.type"

CONTENT_ATTRIBUTES: Final = frozenset(
    {
        GEN_AI_INPUT_MESSAGES,
        GEN_AI_OUTPUT_MESSAGES,
        GEN_AI_TOOL_CALL_ARGUMENTS,
        GEN_AI_TOOL_CALL_RESULT,
    }
)
"""The attributes that hold what was said or passed (only with ``tracing.capture_content``,
always through ``Tracing.set_content``, which redacts them)."""
JSON_CONTENT: Final = frozenset(
    {GEN_AI_INPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES, GEN_AI_TOOL_CALL_ARGUMENTS}
)
"""The content attributes whose value is JSON (a tool's result is the tool's own text)."""

TOKEN_TYPE_INPUT: Final = "input"
TOKEN_TYPE_OUTPUT: Final = "output"

# keel's own span attributes (not GenAI conventions).
KEEL_CORRELATION_ID: Final = "keel.correlation_id"
KEEL_AGENT_VERSION: Final = "keel.agent.version"
KEEL_TURN: Final = "keel.turn"
KEEL_MEMORY_OPERATION: Final = "keel.memory.operation"
KEEL_MEMORY_OUTCOME: Final = "keel.memory.outcome"
"""``ok`` (a read), ``stored`` or ``queued`` (a write), or the error code."""
KEEL_PROVIDER: Final = "keel.provider"
"""The configured provider name (``models[].name``) an attempt went to."""
KEEL_TOOL_STATUS: Final = "keel.tool.status"
"""``success``, ``failure``, ``timeout`` or ``rejected`` (``agent_tool_calls_total``'s status)."""
KEEL_TURN_STEPS: Final = "keel.turn.steps"
KEEL_TURN_TOOL_CALLS: Final = "keel.turn.tool_calls"

# Metrics: the OpenTelemetry name, and its Prometheus translation.
METRIC_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
PROM_OPERATION_DURATION: Final = "gen_ai_client_operation_duration_seconds"
PROM_TOKEN_USAGE: Final = "gen_ai_client_token_usage"


def span_name(operation: str, target: str | None) -> str:
    """``{operation} {target}``, or the operation alone when the target is unknown."""
    return f"{operation} {target}" if target else operation


def prom_label(attribute: str) -> str:
    """The Prometheus label of an attribute (``gen_ai.provider.name``: ``gen_ai_provider_name``)."""
    return attribute.replace(".", "_")
