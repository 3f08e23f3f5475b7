from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agentkeel.config.settings import (
    BreakerSettings,
    KeelSettings,
    ProviderSettings,
    RetrySettings,
)
from agentkeel.errors import ConfigError, ModelUnavailable, SecretError
from agentkeel.models.anthropic_provider import AnthropicProvider
from agentkeel.models.factory import build_gateway
from agentkeel.models.openai_provider import OpenAIProvider
from agentkeel.models.scripted import ScriptedProvider
from agentkeel.models.types import ChatMessage, ModelRequest
from agentkeel.resilience.clock import ManualClock
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.telemetry.metrics import ModelMetrics


def settings_with(*models: ProviderSettings, **extra: object) -> KeelSettings:
    return KeelSettings(models=list(models), secrets_dir=None, **extra)  # type: ignore[arg-type]


def test_builds_each_provider_kind_in_order(tmp_path: Path) -> None:
    """openai, anthropic and scripted entries become their providers, in chain order."""
    key_file = tmp_path / "anthropic_key"
    key_file.write_text("sk-ant-secret\n", encoding="utf-8")
    script = tmp_path / "script.yaml"
    script.write_text("- hello\n", encoding="utf-8")
    settings = settings_with(
        ProviderSettings(
            name="local",
            kind="openai",
            model="smollm2",
            base_url="http://127.0.0.1:8090/v1",
            context_window=2048,
            supports_tools=False,
        ),
        ProviderSettings(name="claude", kind="anthropic", model="c", api_key_file=key_file),
        ProviderSettings(name="canned", kind="scripted", script=script, latency_s=0.5),
    )
    gateway = build_gateway(
        settings,
        metrics=ModelMetrics(CollectorRegistry()),
        clock=ManualClock(),
        secrets=SecretResolver(),
    )
    local, claude, canned = gateway.providers
    assert isinstance(local, OpenAIProvider) and not local.supports_tools
    assert local.base_url == "http://127.0.0.1:8090/v1"
    assert isinstance(claude, AnthropicProvider)
    assert isinstance(canned, ScriptedProvider) and canned.latency_s == 0.5
    assert gateway.context_window == 2048
    assert gateway.breaker_states() == {"local": "closed", "claude": "closed", "canned": "closed"}


def test_api_key_comes_from_the_secrets_dir_and_is_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A key named by api_key_secret is read from secrets_dir and sent as the bearer token."""
    (tmp_path / "openai_api_key").write_text("sk-very-secret", encoding="utf-8")
    settings = settings_with(
        ProviderSettings(name="openai", kind="openai", model="gpt", api_key_secret="openai_api_key")
    )
    caplog.set_level(logging.DEBUG)
    gateway = build_gateway(
        settings,
        metrics=ModelMetrics(CollectorRegistry()),
        clock=ManualClock(),
        secrets=SecretResolver(secrets_dir=tmp_path),
    )
    provider = gateway.providers[0]
    assert isinstance(provider, OpenAIProvider)
    assert provider._client.api_key == "sk-very-secret"
    assert "sk-very-secret" not in repr(provider)
    assert "sk-very-secret" not in caplog.text


def test_missing_key_file_is_a_secret_error(tmp_path: Path) -> None:
    """An api_key_file that does not exist fails the build with a SecretError."""
    settings = settings_with(
        ProviderSettings(name="openai", kind="openai", api_key_file=tmp_path / "absent")
    )
    with pytest.raises(SecretError, match="does not exist"):
        build_gateway(
            settings,
            metrics=ModelMetrics(CollectorRegistry()),
            clock=ManualClock(),
            secrets=SecretResolver(),
        )


def test_anthropic_without_a_key_is_a_config_error() -> None:
    """The hosted Anthropic API without a key fails at build time, naming the setting."""
    settings = settings_with(ProviderSettings(name="claude", kind="anthropic"))
    with pytest.raises(ConfigError, match="api_key_file"):
        build_gateway(
            settings,
            metrics=ModelMetrics(CollectorRegistry()),
            clock=ManualClock(),
            secrets=SecretResolver(),
        )


async def test_breakers_and_retries_follow_the_settings(tmp_path: Path) -> None:
    """Each provider gets a breaker from settings.breaker and retries from settings.retry:
    one failure opens it for open_s, which ModelUnavailable reports as retry_after."""
    script = tmp_path / "failing.yaml"
    script.write_text("on_end: repeat\nsteps:\n  - error: server_error\n", encoding="utf-8")
    settings = settings_with(
        ProviderSettings(name="canned", kind="scripted", script=script),
        breaker=BreakerSettings(failure_threshold=1, open_s=7),
        retry=RetrySettings(max_attempts=1),
    )
    clock = ManualClock()
    gateway = build_gateway(
        settings, metrics=ModelMetrics(CollectorRegistry()), clock=clock, secrets=SecretResolver()
    )
    with pytest.raises(ModelUnavailable) as info:
        await gateway.complete(ModelRequest(messages=[ChatMessage("user", "ping")]))
    assert gateway.breaker_states() == {"canned": "open"}
    assert info.value.retry_after == pytest.approx(7.0)
    assert clock.slept == []


def test_tokenizer_choice_builds_the_matching_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    """bytes means the byte bound (no counter); auto is tiktoken for api.openai.com
    when tiktoken is installed and the bound elsewhere; the llama.cpp flavours ask
    the provider's server."""
    from agentkeel.models.factory import build_counter
    from agentkeel.models.server_counter import ServerTokenCounter
    from agentkeel.models.tiktoken_counter import TiktokenCounter

    local = "http://127.0.0.1:8090/v1"
    assert build_counter(ProviderSettings(name="a", kind="openai", base_url=local)) is None
    assert build_counter(ProviderSettings(name="a", kind="anthropic")) is None
    assert build_counter(ProviderSettings(name="a", kind="scripted", tokenizer="auto")) is None
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    openai_api = build_counter(ProviderSettings(name="a", kind="openai", model="gpt-4o"))
    assert isinstance(openai_api, TiktokenCounter) and openai_api.model == "gpt-4o"
    assert build_counter(ProviderSettings(name="a", kind="openai", tokenizer="bytes")) is None
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert build_counter(ProviderSettings(name="a", kind="openai", model="gpt-4o")) is None
    server = build_counter(
        ProviderSettings(name="a", kind="openai", base_url=local, tokenizer="llama.cpp")
    )
    assert isinstance(server, ServerTokenCounter)
    assert (server.root, server.flavour) == ("http://127.0.0.1:8090", "llama.cpp")


def test_a_server_tokenizer_without_base_url_is_a_config_error() -> None:
    """A llama.cpp tokenizer needs a server to ask; the error names the key and the fix."""
    from agentkeel.models.factory import build_counter

    with pytest.raises(ConfigError) as info:
        build_counter(ProviderSettings(name="claude", kind="anthropic", tokenizer="llama.cpp"))
    assert "claude" in str(info.value) and "models[].base_url" in str(info.value)


async def test_the_built_gateway_reserves_with_each_providers_counter() -> None:
    """build_gateway wires models[].tokenizer: a llama-cpp-python tokenizer that cannot
    be reached still gives the byte bound."""
    import socket

    # Bound but not listening: connections to it are refused.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    settings = settings_with(
        ProviderSettings(
            name="local",
            kind="openai",
            base_url=f"http://127.0.0.1:{port}/v1",
            tokenizer="llama-cpp-python",
            tokenizer_timeout_s=0.5,
        )
    )
    gateway = build_gateway(
        settings,
        metrics=ModelMetrics(CollectorRegistry()),
        clock=ManualClock(),
        secrets=SecretResolver(secrets_dir=None),
    )
    from agentkeel.models.counting import bound_tokens

    request = ModelRequest(messages=[ChatMessage("user", "你好")])
    try:
        assert await gateway.prompt_tokens(request) == bound_tokens(request.messages)
    finally:
        await gateway.aclose()
        closed.close()
