"""Builds the model gateway from settings: one provider and one breaker per ``models`` entry."""

from __future__ import annotations

import importlib.util

from agentkeel.config.settings import KeelSettings, ProviderSettings
from agentkeel.errors import ConfigError
from agentkeel.models.counting import TokenCounter
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.scripted import ScriptedProvider
from agentkeel.models.types import ModelProvider
from agentkeel.resilience.breaker import CircuitBreaker
from agentkeel.resilience.clock import Clock
from agentkeel.secrets.cache import CachedSecretSource
from agentkeel.secrets.factory import process_secret_source
from agentkeel.secrets.files import FileSecretSource
from agentkeel.secrets.keychain import KeyChain, PlatformKey
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.telemetry.metrics import ModelMetrics
from agentkeel.telemetry.tracing import Tracing


def build_provider(
    settings: ProviderSettings,
    *,
    clock: Clock,
    secrets: SecretResolver,
    key_chain: KeyChain | None = None,
) -> ModelProvider:
    """One provider from its settings entry; its API key read through ``secrets``, and with
    ``key_chain`` each call's key picked by the chain (user's own, organization's, platform's).
    """
    if settings.kind == "scripted":
        return ScriptedProvider(
            name=settings.name,
            model=settings.model,
            script=settings.script if settings.script is not None else (),
            latency_s=settings.latency_s,
            clock=clock,
            context_window=settings.context_window,
            supports_tools=settings.supports_tools,
        )
    # Never logged or put in a message: only whether a key was found matters here.
    api_key = secrets.resolve(settings.api_key_secret, file=settings.api_key_file, required=False)
    keys = (
        None
        if key_chain is None
        else key_chain.for_provider(
            settings.name, platform_key(settings, key_chain, secrets, clock)
        )
    )
    # Each SDK is imported only when a provider of its kind is configured.
    if settings.kind == "openai":
        from agentkeel.models.openai_provider import OpenAIProvider

        return OpenAIProvider(
            name=settings.name,
            model=settings.model,
            base_url=settings.base_url,
            api_key=api_key,
            context_window=settings.context_window,
            timeout_s=settings.timeout_s,
            supports_tools=settings.supports_tools,
            keys=keys,
        )
    if settings.kind == "anthropic":
        if api_key is None and settings.base_url is None:
            raise ConfigError(
                f"Model provider '{settings.name}' (anthropic) has no API key. Put the key in "
                "a file and set models[].api_key_file, or models[].api_key_secret to its name "
                "in secrets_dir."
            )
        from agentkeel.models.anthropic_provider import AnthropicProvider

        return AnthropicProvider(
            name=settings.name,
            model=settings.model,
            api_key=api_key,
            base_url=settings.base_url,
            context_window=settings.context_window,
            timeout_s=settings.timeout_s,
            supports_tools=settings.supports_tools,
            keys=keys,
        )
    raise ConfigError(  # pragma: no cover - settings validation admits only the kinds above
        f"Model provider '{settings.name}' has unknown kind '{settings.kind}'; "
        "use openai, anthropic or scripted."
    )


def platform_key(
    settings: ProviderSettings, key_chain: KeyChain, secrets: SecretResolver, clock: Clock
) -> PlatformKey:
    """Where the provider's own key is read on each call: ``api_key_file`` as a file
    source of its own (rotation versions next to it), else ``api_key_secret`` in the
    process's secret source; neither = a keyless endpoint."""
    source = key_chain.source
    if settings.api_key_file is not None:
        file = settings.api_key_file
        files = FileSecretSource(root=file.parent, known=secrets.known)
        ttl = source.ttl_s if source is not None else DEFAULT_CACHE_TTL_S
        cached = CachedSecretSource(inner=files, ttl_s=ttl, clock=clock, known=secrets.known)
        return PlatformKey(source=cached, path=file.name)
    if settings.api_key_secret is not None and source is not None:
        return PlatformKey(source=source, path=settings.api_key_secret)
    return PlatformKey(source=None, path=None)


DEFAULT_CACHE_TTL_S = 30.0

OPENAI_HOST = "api.openai.com"


def build_counter(settings: ProviderSettings) -> TokenCounter | None:
    """The provider's prompt counter per ``models[].tokenizer``; None means the byte bound.

    ``auto`` picks tiktoken for OpenAI's own API when tiktoken is installed, and the
    byte bound for everything else (Anthropic's tokenizer is not public; a counting
    round trip per model call is not worth its latency for a budget bound).
    """
    choice = settings.tokenizer
    if choice == "auto":
        openai_api = settings.kind == "openai" and (
            settings.base_url is None or OPENAI_HOST in settings.base_url
        )
        choice = "tiktoken" if openai_api and importlib.util.find_spec("tiktoken") else "bytes"
    if choice == "bytes":
        return None
    if choice == "tiktoken":
        from agentkeel.models.tiktoken_counter import TiktokenCounter

        return TiktokenCounter(model=settings.model, encoding=settings.tokenizer_encoding)
    if settings.base_url is None:
        raise ConfigError(
            f"Model provider '{settings.name}' has tokenizer '{choice}' but no base_url to "
            "ask; set models[].base_url to the server (e.g. http://127.0.0.1:8090/v1) or "
            "models[].tokenizer: bytes."
        )
    from agentkeel.models.server_counter import ServerTokenCounter

    return ServerTokenCounter(
        base_url=settings.base_url,
        flavour=choice,
        model=settings.model,
        timeout_s=settings.tokenizer_timeout_s,
    )


def build_gateway(
    settings: KeelSettings,
    *,
    metrics: ModelMetrics,
    clock: Clock,
    secrets: SecretResolver,
    source: CachedSecretSource | None = None,
    tracing: Tracing | None = None,
) -> ModelGateway:
    """The gateway over ``settings.models`` in order, each with a ``settings.breaker`` breaker,
    and a key chain over ``source`` (default: ``process_secret_source`` of the settings; none
    when the files source has no ``secrets_dir``); ``tracing`` gets a span per attempt.

    >>> gateway = build_gateway(settings, metrics=ModelMetrics(registry),
    ...     clock=SystemClock(), secrets=SecretResolver(secrets_dir=settings.secrets_dir))
    """
    if source is None:
        source = process_secret_source(settings, secrets.known)
    key_chain = KeyChain(source=source, settings=settings.secrets.key_chain, counter=metrics)
    providers = [
        build_provider(p, clock=clock, secrets=secrets, key_chain=key_chain)
        for p in settings.models
    ]
    counters = {
        p.name: counter for p in settings.models if (counter := build_counter(p)) is not None
    }
    breakers = {
        p.name: CircuitBreaker.from_settings(p.name, settings.breaker, clock) for p in providers
    }
    return ModelGateway(
        providers=providers,
        breakers=breakers,
        retry=settings.retry,
        metrics=metrics,
        clock=clock,
        counters=counters,
        tracing=tracing,
    )
