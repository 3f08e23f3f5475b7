"""The pinned GenAI names against the installed ``opentelemetry-semantic-conventions``:
an upgrade that renames or drops one of the names keel puts on spans and metrics fails
here, by name, instead of silently producing spans no backend understands."""

from __future__ import annotations

import ast
from pathlib import Path

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.semconv.schemas import Schemas

from agentkeel.telemetry import semconv

SRC = Path(__file__).resolve().parents[2] / "src" / "agentkeel"


def constants(prefix: str) -> dict[str, str]:
    return {
        name: value
        for name, value in vars(semconv).items()
        if name.startswith(prefix) and isinstance(value, str)
    }


def test_every_gen_ai_attribute_is_the_packages_name() -> None:
    """Each GEN_AI_* constant has the same name and value in the package's incubating
    GenAI attributes, and error.type is the stable one."""
    ours = constants("GEN_AI_")
    assert len(ours) >= 20
    mismatched = {
        name: (value, getattr(gen_ai_attributes, name, None))
        for name, value in ours.items()
        if getattr(gen_ai_attributes, name, None) != value
    }
    assert not mismatched, f"renamed or removed upstream: {mismatched}"
    assert semconv.ERROR_TYPE == error_attributes.ERROR_TYPE


def test_enumerated_values_are_the_packages() -> None:
    """Operation names, token types and provider names are values the package lists."""
    operations = {v.value for v in gen_ai_attributes.GenAiOperationNameValues}
    assert {semconv.OP_CHAT, semconv.OP_INVOKE_AGENT, semconv.OP_EXECUTE_TOOL} <= operations
    tokens = {v.value for v in gen_ai_attributes.GenAiTokenTypeValues}
    assert {semconv.TOKEN_TYPE_INPUT, semconv.TOKEN_TYPE_OUTPUT} <= tokens
    providers = {v.value for v in gen_ai_attributes.GenAiProviderNameValues}
    assert {semconv.PROVIDER_OPENAI, semconv.PROVIDER_ANTHROPIC} <= providers


def test_metric_names_and_schema_url_are_the_packages() -> None:
    """The two GenAI client metrics, and the schema URL of the pinned version."""
    assert semconv.METRIC_OPERATION_DURATION == gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION
    assert semconv.METRIC_TOKEN_USAGE == gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE
    assert semconv.SCHEMA_URL in {schema.value for schema in Schemas}
    assert semconv.SCHEMA_URL.endswith(semconv.SEMCONV_VERSION)


def test_the_renamed_provider_attribute_is_not_used() -> None:
    """gen_ai.system became gen_ai.provider.name in 1.37.0: the old name is nowhere."""
    assert gen_ai_attributes.GEN_AI_SYSTEM not in constants("GEN_AI_").values()
    assert semconv.GEN_AI_PROVIDER_NAME == gen_ai_attributes.GEN_AI_PROVIDER_NAME


def test_no_gen_ai_name_is_spelled_outside_semconv() -> None:
    """Every GenAI name in src/ comes from semconv.py: no other module writes a string
    that starts with gen_ai. or gen_ai_ (so a version move is one module's change)."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "semconv.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith(("gen_ai.", "gen_ai_"))
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value!r}")
    assert not offenders, offenders


def test_span_names_follow_the_operation_target_pattern() -> None:
    """``{operation} {target}``, or the operation alone without a target."""
    assert semconv.span_name(semconv.OP_CHAT, "gpt-4o") == "chat gpt-4o"
    assert semconv.span_name(semconv.OP_INVOKE_AGENT, None) == "invoke_agent"
